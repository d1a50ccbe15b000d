//! `dcos-rs up`: one master and one agent in one process, state under one data dir.
//!
//! `start` takes its listeners from the caller (tests bind port 0) and returns a handle;
//! stopping it kills the tasks (SIGTERM, then SIGKILL after their grace period) unless
//! `keep_tasks` is set, in which case they keep running and the next start adopts them.
//! Both APIs always ask for a token: the admin token `up` makes at its first start
//! (`<data-dir>/admin.token`, mode 0600) and, when given, those of a tokens file (required
//! to listen beyond loopback). Every local process, each task included, can reach a
//! loopback port: without the token, any of them could start a task as root on this host.
//! `insecure_no_auth` (loopback only) opens them anyway, for those who accept that.
//! Requests also pass `RequestGuard` (Host, Origin, Content-Type) against browsers.

use crate::agent::runtime::ShimRuntime;
use crate::agent::{Agent, AgentConfig};
use crate::auth::ApiAuth;
use crate::http_guard::{RequestGuard, UPLOAD_TYPES};
use crate::link::LINK_QUEUE_MAX;
use crate::master::Master;
use anyhow::Context;
use dcos_raft::{RaftOptions, ReplicatedState};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub data_dir: PathBuf,
    pub keep_tasks: bool,
    /// Print "ready" lines for humans (off in tests).
    pub announce: bool,
    /// Tokens file (`sha256:<hex> <name>` lines): when given, both APIs require a bearer
    /// token from it. Required when either listener is not on a loopback address.
    pub tokens_file: Option<PathBuf>,
    /// No authentication at all (`--insecure-no-auth`): only with loopback listeners and no
    /// tokens file.
    pub insecure_no_auth: bool,
    /// The agent's settings: the same type `dcos-rs agent` starts from (its agent.toml),
    /// except that `up` sets the work dir (`<data_dir>/agent`) and the URL (its agent
    /// listener's) itself.
    pub agent: AgentConfig,
}

/// The token `up` requires, kept in `file` (`<data-dir>/admin.token`, absolute).
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub token: String,
    pub file: PathBuf,
}

pub struct UpHandle {
    pub master_url: String,
    pub agent_url: String,
    /// The admin token (`None` with `insecure_no_auth`).
    pub admin_token: Option<AdminToken>,
    pub master: Arc<Master>,
    pub agent: Arc<Agent>,
    keep_tasks: bool,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

fn say(announce: bool, line: &str) {
    if announce {
        println!("{line}");
    }
}

pub async fn start(
    opts: UpOptions,
    master_listener: TcpListener,
    agent_listener: TcpListener,
) -> anyhow::Result<UpHandle> {
    let master_addr = master_listener.local_addr()?;
    let agent_addr = agent_listener.local_addr()?;
    let master_url = format!("http://{master_addr}");
    let agent_url = format!("http://{agent_addr}");
    // Before the data dir exists: a refused configuration leaves nothing behind.
    let fresh = !opts.data_dir.exists();
    let (auth, admin_token) = api_auth(&opts, master_addr, agent_addr)?;
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    // Others may only traverse it, to the sandbox of a task running as its own user. Only a
    // directory that is ours (made now, or holding our token): `--data-dir /tmp` must not
    // change /tmp.
    let ours = fresh
        || opts.data_dir.join(crate::auth::ADMIN_TOKEN_FILE).exists()
        || opts.data_dir.join("master").exists();
    if ours {
        dcos_runtime::task_dir::set_mode(&opts.data_dir, 0o711)
            .with_context(|| format!("chmod 711 {}", opts.data_dir.display()))?;
    }
    let master_guard = guard_for(master_addr);
    let agent_guard = guard_for(agent_addr).with_body_types(UPLOAD_TYPES);

    let raft = ReplicatedState::open_single(RaftOptions::single(
        opts.data_dir.join("master"),
        master_url.clone(),
    ))
    .await
    .context("starting the replicated state (Raft)")?;
    let status = raft.status();
    let (apps, tasks) = raft.read(|s| (s.services.apps.len(), s.tasks.len()));
    say(
        opts.announce,
        &format!(
            "master: ready (Raft leader, term {}, log index {}; {apps} apps, {tasks} tasks recovered)",
            status.term, status.last_log_index
        ),
    );
    let builtin = crate::frameworks::builtin();
    let master = Master::new(raft, master_url.clone(), builtin.frameworks, None);
    // The agent's API is plain HTTP (its URL is `up`'s own): the dashboard's task logs,
    // usage and files are asked there with the caller's token. No https URL is trusted.
    master.reach_agents_with(crate::tls::NodeClient::allowing_http(
        crate::tls::client_config_trusting_none(),
    ));

    let (to_master, from_agents) = mpsc::channel(LINK_QUEUE_MAX);
    let agent_config = AgentConfig {
        work_dir: opts.data_dir.join("agent"),
        url: agent_url.clone(),
        ..opts.agent.clone()
    };

    let (shutdown, shutdown_rx) = watch::channel(false);
    // The same starts as `dcos-rs master` and `dcos-rs agent`, over plain HTTP on loopback
    // and with the agent's reports on an in-process channel instead of HTTPS.
    let mut handles = crate::master::start(
        master.clone(),
        from_agents,
        master_listener,
        None,
        crate::master::http::router(master.clone(), auth.clone(), master_guard, builtin.routes),
        shutdown_rx.clone(),
    );
    let started = crate::agent::start(
        agent_config,
        to_master,
        Arc::new(ShimRuntime::default()),
        crate::agent::AgentApi {
            listener: agent_listener,
            tls: None,
            auth,
            guard: agent_guard,
        },
        shutdown_rx,
    )
    .await?;
    let agent = started.agent;
    handles.extend(started.handles);

    // Ready once the agent has registered with the master (and reported what it recovered).
    let agent_id = agent.id.clone();
    for _ in 0..200 {
        if master.is_connected(&agent_id) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    say(
        opts.announce,
        &format!(
            "agent:  ready (id {}, {:.1} cpus, {} MiB, API {agent_url}, cgroups {}; {} task(s) recovered in {:.1} ms)",
            agent.id,
            agent.resources.cpus(),
            agent.resources.mem_mib,
            dcos_runtime::cgroups::setup_name(),
            agent.last_recovery().0,
            agent.last_recovery().1 as f64 / 1000.0
        ),
    );
    match &admin_token {
        Some(AdminToken { token, file }) => {
            say(
                opts.announce,
                &format!(
                    "API token: {} (mode 0600); the dcos-rs CLI on this machine finds it, other clients send `Authorization: Bearer <token>`",
                    file.display()
                ),
            );
            say(
                opts.announce,
                &format!(
                    "dcos-rs is up: dashboard at {master_url}/?token={token}  (Ctrl-C to stop)"
                ),
            );
        }
        None => say(
            opts.announce,
            &format!("dcos-rs is up: dashboard and API at {master_url}/  (Ctrl-C to stop)"),
        ),
    }
    Ok(UpHandle {
        master_url,
        agent_url,
        admin_token,
        master,
        agent,
        keep_tasks: opts.keep_tasks,
        shutdown,
        tasks: handles,
    })
}

/// What `up`'s APIs ask of callers: the admin token (made at the first start) or one of
/// the tokens file's; nothing with `insecure_no_auth`, which only loopback listeners may
/// have. Listening beyond loopback needs a tokens file (the operator's tokens for other
/// hosts' clients). Returns the auth and the admin token with its file.
fn api_auth(
    opts: &UpOptions,
    master_addr: SocketAddr,
    agent_addr: SocketAddr,
) -> anyhow::Result<(Option<ApiAuth>, Option<AdminToken>)> {
    let listeners = [("--listen", master_addr), ("--agent-listen", agent_addr)];
    let beyond_loopback = listeners.iter().find(|(_, a)| !a.ip().is_loopback());
    if opts.insecure_no_auth {
        if let Some((flag, address)) = beyond_loopback {
            anyhow::bail!(
                "--insecure-no-auth is for loopback listeners only, and {flag} is {address}: drop --insecure-no-auth (the APIs then ask for a token)"
            );
        }
        anyhow::ensure!(
            opts.tokens_file.is_none(),
            "--insecure-no-auth and --tokens-file contradict each other: give one of them"
        );
        eprintln!(
            "WARNING: --insecure-no-auth: the APIs on {master_addr} and {agent_addr} accept every request without a token. Every local user and process, each task included, can reach them and start a task as root on this host. Use it only on a machine nobody else uses, with tasks you trust."
        );
        return Ok((None, None));
    }
    let extra = match &opts.tokens_file {
        Some(file) => Some(crate::auth::TokenSet::load(file).context("--tokens-file")?),
        None => {
            if let Some((flag, address)) = beyond_loopback {
                anyhow::bail!(
                    "{flag} {address} is not a loopback address: clients on other hosts need tokens of their own; give --tokens-file FILE (lines `sha256:<hex> <name>`, made by `dcos-rs cluster setup`), or listen on 127.0.0.1"
                );
            }
            None
        }
    };
    std::fs::create_dir_all(&opts.data_dir)
        .with_context(|| format!("creating data dir {}", opts.data_dir.display()))?;
    let file = std::path::absolute(opts.data_dir.join(crate::auth::ADMIN_TOKEN_FILE))
        .context("resolving the data dir")?;
    let (token, _made) = crate::auth::load_or_create_token(&file)?;
    let mut tokens = crate::auth::TokenSet::of_token(&token, "admin");
    if let Some(extra) = extra {
        tokens = tokens.union(extra);
    }
    Ok((
        Some(ApiAuth::tokens(Arc::new(tokens))),
        Some(AdminToken { token, file }),
    ))
}

/// The request guard of a listener at `addr`: on loopback the server knows its names (DNS
/// rebinding is the threat there); beyond it, clients use names only the operator knows.
fn guard_for(addr: SocketAddr) -> RequestGuard {
    match addr.ip().is_loopback() {
        true => RequestGuard::loopback(addr),
        false => RequestGuard::new(),
    }
}

impl UpHandle {
    /// Stops everything. Without `keep_tasks`, tasks are killed first and their ends recorded.
    pub async fn stop(self, announce: bool) -> anyhow::Result<()> {
        self.master.stop_scheduling();
        if !self.keep_tasks {
            let n = self.agent.running_task_count();
            if n > 0 {
                say(
                    announce,
                    &format!(
                        "stopping {n} task(s) (SIGTERM, then SIGKILL after their grace period)…"
                    ),
                );
            }
            self.agent.kill_all_and_wait().await;
            // Let the master record the final statuses before it stops (bounded).
            let agent_id = self.agent.id.clone();
            for _ in 0..100 {
                let live = self.master.read(|s| {
                    s.tasks
                        .values()
                        .any(|t| t.agent_id == agent_id && !t.state.is_terminal())
                });
                if !live {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        } else {
            say(
                announce,
                "leaving tasks running (--keep-tasks); the next start adopts them",
            );
        }
        let _ = self.shutdown.send(true);
        for handle in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
        }
        self.master.raft.shutdown().await.context("stopping Raft")?;
        say(announce, "stopped");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_loopback_listener_insists_on_its_own_names() {
        let request = |host: &str| {
            axum::extract::Request::builder()
                .uri("/v2/apps")
                .header("host", host)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let beyond = guard_for("0.0.0.0:5050".parse().unwrap());
        assert!(beyond.check(&request("10.1.2.3:5050")).is_ok());
        assert!(beyond.check(&request("m1.example:5050")).is_ok());
        let local = guard_for("127.0.0.1:5050".parse().unwrap());
        assert!(local.check(&request("127.0.0.1:5050")).is_ok());
        assert_eq!(
            local.check(&request("10.1.2.3:5050")).unwrap_err().status,
            403
        );
    }
}
