//! dcos-rs: wiring and I/O shells around the pure core. The binary's `main` is thin; this
//! library holds the master, the agent, `dcos-rs up`, the CLI and the HTTP client so the
//! integration tests drive the same code.

pub mod agent;
pub mod auth;
pub mod cli;
pub mod frameworks;
pub mod http_guard;
pub mod http_util;
pub mod install;
pub mod link;
pub mod master;
pub mod node_config;
pub mod tls;
pub mod up;
