//! The one integration-test binary: in-process `dcos-rs up` clusters on loopback driven
//! through the real HTTP API, real shims and containers (as root), and the real binary
//! for the restart and signal tests.

mod api;
mod auth;
mod cli;
mod clients;
mod common;
mod containers;
mod dashboard;
mod fake_runtime;
mod fetch;
mod health_checks;
mod hostile;
mod jobs;
mod lifecycle;
mod logs;
mod masters;
mod network;
mod process;
mod readiness;
mod registry;
mod remote_agents;
mod task_detail;
mod tls;
