//! `dcos-rs agent --config agent.toml`: an agent on its own host, reaching the masters over
//! HTTPS with its cluster certificate, serving its own API (logs, images) over HTTPS.
//!
//! Every key is documented in `config/agent.toml`; unknown keys are refused and every check
//! names its key.

use super::remote::{Outbox, RemoteLink, DEFAULT_HEARTBEAT_MS};
use super::{Agent, AgentConfig};
use crate::auth::ApiAuth;
use crate::link::LINK_QUEUE_MAX;
use crate::node_config::check_url;
use crate::tls::{self, NodeClient, TlsFiles};
use anyhow::Context;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

const CONFIG_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFileConfig {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL masters and clients use to reach this agent's API.
    pub advertise_url: String,
    #[serde(default = "default_work_dir")]
    pub work_dir: PathBuf,
    /// Every master's URL; the agent finds the leader among them. `--masters` replaces it.
    #[serde(default)]
    pub masters: Vec<String>,
    pub tls: crate::node_config::TlsSection,
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// Overrides of detected resources.
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub mem_mib: Option<u64>,
    /// Cgroup parent of tasks (`<parent>/<task-id>` in every hierarchy).
    #[serde(default = "default_cgroup_parent")]
    pub cgroup_parent: String,
    /// Required: callers of the agent's API need a bearer token from this file (masters may
    /// use their certificate instead).
    #[serde(default)]
    pub auth: crate::node_config::AuthSection,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5051))
}
fn default_work_dir() -> PathBuf {
    PathBuf::from("/var/lib/dcos-rs/agent")
}
fn default_heartbeat_ms() -> u64 {
    DEFAULT_HEARTBEAT_MS
}
fn default_cgroup_parent() -> String {
    "dcos-rs".to_string()
}

impl AgentFileConfig {
    pub fn load(path: &Path) -> anyhow::Result<AgentFileConfig> {
        Self::load_with_masters(path, None)
    }

    /// `load`, with the masters given on the command line (comma-separated URLs) instead of
    /// the file's `masters`.
    pub fn load_with_masters(
        path: &Path,
        masters: Option<&str>,
    ) -> anyhow::Result<AgentFileConfig> {
        let size = std::fs::metadata(path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .len();
        anyhow::ensure!(
            size <= CONFIG_MAX_BYTES,
            "{}: {size} bytes is over the {CONFIG_MAX_BYTES}-byte limit for a config file",
            path.display()
        );
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        let mut config = Self::parse_with_masters(&text, masters)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for path in [
            &mut config.work_dir,
            &mut config.tls.ca,
            &mut config.tls.cert,
            &mut config.tls.key,
        ] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        config.auth.relative_to(base);
        // Read now, so a bad tokens file stops the start with the config's name on it.
        config
            .auth
            .load_tokens()
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<AgentFileConfig, String> {
        Self::parse_with_masters(text, None)
    }

    fn parse_with_masters(text: &str, masters: Option<&str>) -> Result<AgentFileConfig, String> {
        let mut config: AgentFileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        check_url("advertise_url", &config.advertise_url)?;
        config.auth.tokens_file()?;
        if let Some(list) = masters {
            config.masters = list
                .split(',')
                .map(|url| url.trim().to_string())
                .filter(|url| !url.is_empty())
                .collect();
            if config.masters.is_empty() {
                return Err("--masters: give at least one master URL".to_string());
            }
            for url in &config.masters {
                check_url("--masters", url)?;
            }
        }
        if config.masters.is_empty() {
            return Err(
                "masters: give at least one master URL (or --masters on the command line)"
                    .to_string(),
            );
        }
        for (i, url) in config.masters.iter().enumerate() {
            check_url(&format!("masters[{i}]"), url)?;
        }
        if !(100..=60_000).contains(&config.heartbeat_ms) {
            return Err(format!(
                "heartbeat_ms: {} is outside 100..=60000",
                config.heartbeat_ms
            ));
        }
        if let Some(cpus) = config.cpus {
            if !(cpus > 0.0 && cpus.is_finite()) {
                return Err(format!("cpus: {cpus} must be a positive number"));
            }
        }
        Ok(config)
    }
}

pub struct AgentProcess {
    pub agent: Arc<Agent>,
    pub outbox: Arc<Outbox>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts an agent that registers with the masters over HTTPS; its tasks keep running when
/// it stops (the next start adopts them).
pub async fn start(
    config: AgentFileConfig,
    listener: TcpListener,
    shim_exe: PathBuf,
) -> anyhow::Result<AgentProcess> {
    let files = TlsFiles {
        ca: config.tls.ca.clone(),
        cert: config.tls.cert.clone(),
        key: config.tls.key.clone(),
    };
    let server_config = tls::server_config(&files).context("loading the agent's TLS files")?;
    let auth = ApiAuth {
        tokens: Arc::new(config.auth.load_tokens().map_err(anyhow::Error::msg)?),
        // The masters call the agent with their certificates, not with tokens.
        certificate_role: Some(tls::Role::Master),
    };
    let client =
        NodeClient::new(tls::client_config(&files).context("loading the agent's TLS files")?);
    let mut agent_config = AgentConfig::new(
        config.work_dir.clone(),
        config.advertise_url.trim_end_matches('/').to_string(),
    );
    agent_config.shim_exe = shim_exe;
    agent_config.cpus = config.cpus;
    agent_config.mem_mib = config.mem_mib;
    agent_config.cgroup_parent = config.cgroup_parent.clone();
    let (to_master, from_agent) = mpsc::channel(LINK_QUEUE_MAX);
    let agent = Agent::open(agent_config, to_master).context("starting the agent")?;
    let registry = Arc::new(
        crate::agent::registry::RegistryClient::new(None).context("setting up registry pulls")?,
    );
    let recovered = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || agent.recover()).await?
    };
    let link = Arc::new(RemoteLink::new(
        agent.clone(),
        client,
        config
            .masters
            .iter()
            .map(|m| m.trim_end_matches('/').to_string())
            .collect(),
        Duration::from_millis(config.heartbeat_ms),
    )?);
    let outbox = link.outbox();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let tasks = vec![
        tokio::spawn(link.run(from_agent, shutdown_rx.clone())),
        tokio::spawn(agent.clone().run(recovered, shutdown_rx.clone())),
        tokio::spawn(tls::serve_tls(
            listener,
            server_config,
            super::http::router(agent.clone(), registry, Some(auth)),
            shutdown_rx,
        )),
    ];
    Ok(AgentProcess {
        agent,
        outbox,
        shutdown,
        tasks,
    })
}

impl AgentProcess {
    /// Stops the agent; its tasks keep running.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let agent = AgentFileConfig::parse(include_str!("../../config/agent.toml")).unwrap();
        assert_eq!(agent.masters.len(), 3);
    }
}
