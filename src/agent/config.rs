//! `dcos-rs agent --config agent.toml`: an agent on its own host, reaching the masters over
//! HTTPS with its cluster certificate, serving its own API (logs, images) over HTTPS.
//!
//! Every key is documented in `config/agent.toml`; unknown keys are refused and every check
//! names its key.

use super::remote::{Outbox, RemoteLink, DEFAULT_HEARTBEAT_MS};
use super::runtime::ShimRuntime;
use super::{Agent, AgentConfig};
use crate::auth::ApiAuth;
use crate::link::LINK_QUEUE_MAX;
use crate::node_config::check_url;
use crate::tls::{self, NodeClient, TlsFiles};
use anyhow::Context;
use dcos_runtime::network::BridgeConfig;
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
    #[serde(default)]
    pub disk_mib: Option<u64>,
    /// Cgroup parent of tasks (`<parent>/<task-id>` in every hierarchy).
    #[serde(default = "default_cgroup_parent")]
    pub cgroup_parent: String,
    /// Host ports tasks may be given: `a-b,c-d`.
    #[serde(default = "default_ports")]
    pub ports: String,
    /// A task's stdout/stderr file is rotated at this size (MiB).
    #[serde(default = "default_task_log_max_mib")]
    pub task_log_max_mib: u64,
    /// Rotated files kept per task stream.
    #[serde(default = "default_task_log_files")]
    pub task_log_files: u32,
    /// Bridge of `container/bridge` tasks, and its subnet.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default = "default_bridge_subnet")]
    pub bridge_subnet: String,
    /// PEM file of CAs trusted for registry pulls besides the system's.
    #[serde(default)]
    pub registry_ca: Option<PathBuf>,
    /// Directories under which tasks' host-path volumes may be (none by default).
    #[serde(default)]
    pub host_paths: Vec<PathBuf>,
    /// The user of tasks without an image that name none.
    #[serde(default = "default_task_user")]
    pub task_user: String,
    /// Tasks without an image may run as root (uid 0) on this host.
    #[serde(default)]
    pub allow_root_tasks: bool,
    /// Tasks' artifacts (`fetch`) may come from this host's loopback or link-local
    /// addresses (refused by default: the agent would fetch for a task what the task itself
    /// could not reach).
    #[serde(default)]
    pub allow_local_fetch: bool,
    /// Labels of this agent for placement constraints (`[attributes] rack = "r1"`).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
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
fn default_ports() -> String {
    "31000-32000".to_string()
}
fn default_task_log_max_mib() -> u64 {
    dcos_runtime::logs::LOG_MAX_BYTES_DEFAULT >> 20
}
fn default_task_log_files() -> u32 {
    dcos_runtime::logs::LOG_FILES_MAX_DEFAULT
}
fn default_task_user() -> String {
    super::policy::DEFAULT_TASK_USER.to_string()
}
fn default_bridge() -> String {
    dcos_runtime::network::DEFAULT_BRIDGE.to_string()
}
fn default_bridge_subnet() -> String {
    "172.30.0.0/16".to_string()
}

/// Inclusive port ranges from `a-b,c-d` (a single port is `a`), as `--ports` and the
/// `ports` key give them.
pub fn parse_port_ranges(text: &str) -> Result<Vec<dcos_core::PortRange>, String> {
    let mut ranges = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (begin, end) = part.split_once('-').unwrap_or((part, part));
        let parse = |p: &str| {
            p.trim()
                .parse::<u16>()
                .map_err(|_| format!("'{p}' is not a port (1-65535)"))
        };
        let (begin, end) = (parse(begin)?, parse(end)?);
        if begin == 0 || begin > end {
            return Err(format!(
                "'{part}': a range is low-high with 1 <= low <= high"
            ));
        }
        ranges.push(dcos_core::PortRange { begin, end });
    }
    if ranges.is_empty() {
        return Err("give at least one range, e.g. 31000-32000".into());
    }
    Ok(ranges)
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
        ]
        .into_iter()
        .chain(config.registry_ca.as_mut())
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        config.auth.relative_to(base);
        // Resolved now: a missing or never-allowed directory stops the start.
        config.host_paths = super::policy::TaskPolicy::default()
            .with_host_paths(&config.host_paths, "host_paths")
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            .host_paths;
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
        parse_port_ranges(&config.ports).map_err(|e| format!("ports: {e}"))?;
        if !(1..=1024).contains(&config.task_log_max_mib) {
            return Err(format!(
                "task_log_max_mib: {} is outside 1..=1024",
                config.task_log_max_mib
            ));
        }
        if !(1..=100).contains(&config.task_log_files) {
            return Err(format!(
                "task_log_files: {} is outside 1..=100",
                config.task_log_files
            ));
        }
        BridgeConfig::new(&config.bridge, &config.bridge_subnet)
            .map_err(|e| format!("bridge/bridge_subnet: {e}"))?;
        if config.task_user.is_empty() {
            return Err("task_user: empty (the default is nobody)".to_string());
        }
        super::check_attributes(&config.attributes).map_err(|e| format!("attributes: {e}"))?;
        Ok(config)
    }

    /// The agent's settings from this file (checked by `parse`); tasks' shims run `shim_exe`.
    pub fn agent_config(&self, shim_exe: PathBuf) -> AgentConfig {
        let mut agent = AgentConfig::new(
            self.work_dir.clone(),
            self.advertise_url.trim_end_matches('/').to_string(),
        );
        agent.shim_exe = shim_exe;
        agent.cpus = self.cpus;
        agent.mem_mib = self.mem_mib;
        agent.disk_mib = self.disk_mib;
        agent.cgroup_parent = self.cgroup_parent.clone();
        agent.ports = parse_port_ranges(&self.ports).expect("checked by parse");
        agent.task_log_max_bytes = self.task_log_max_mib << 20;
        agent.task_log_files_max = self.task_log_files;
        agent.bridge =
            BridgeConfig::new(&self.bridge, &self.bridge_subnet).expect("checked by parse");
        agent.registry_ca = self.registry_ca.clone();
        agent.attributes = self.attributes.clone();
        agent.policy = super::policy::TaskPolicy {
            host_paths: self.host_paths.clone(),
            task_user: self.task_user.clone(),
            allow_root_tasks: self.allow_root_tasks,
            allow_local_fetch: self.allow_local_fetch,
        };
        agent
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
    let (to_master, from_agent) = mpsc::channel(LINK_QUEUE_MAX);
    let (shutdown, shutdown_rx) = watch::channel(false);
    let started = super::start(
        config.agent_config(shim_exe),
        to_master,
        Arc::new(ShimRuntime::default()),
        super::AgentApi {
            listener,
            tls: Some(server_config),
            auth: Some(auth),
            guard: crate::http_guard::RequestGuard::new()
                .with_body_types(crate::http_guard::UPLOAD_TYPES),
        },
        shutdown_rx.clone(),
    )
    .await?;
    let agent = started.agent;
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
    let mut tasks = started.handles;
    tasks.push(tokio::spawn(link.run(from_agent, shutdown_rx)));
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

    const EXAMPLE: &str = include_str!("../../config/agent.toml");

    #[test]
    fn the_documented_example_parses_into_the_agents_settings() {
        let file = AgentFileConfig::parse(EXAMPLE).unwrap();
        assert_eq!(file.masters.len(), 3);
        let agent = file.agent_config(PathBuf::from("/bin/dcos-rs"));
        assert_eq!(
            agent.ports,
            vec![dcos_core::PortRange {
                begin: 31000,
                end: 32000
            }]
        );
        assert_eq!(agent.task_log_max_bytes, 10 << 20);
        assert_eq!(agent.task_log_files_max, 5);
        assert_eq!(agent.bridge, BridgeConfig::default_config());
        assert_eq!(agent.registry_ca, None);
    }

    #[test]
    fn every_setting_of_up_is_a_checked_key_of_agent_toml() {
        let cases = [
            ("ports = \"31000-32000\"", "ports = \"9-x\"", "ports"),
            (
                "task_log_max_mib = 10",
                "task_log_max_mib = 0",
                "task_log_max_mib",
            ),
            (
                "task_log_files = 5",
                "task_log_files = 1000",
                "task_log_files",
            ),
            (
                "bridge_subnet = \"172.30.0.0/16\"",
                "bridge_subnet = \"172.30.0.1/16\"",
                "bridge",
            ),
        ];
        for (good, bad, key) in cases {
            assert!(EXAMPLE.contains(good), "{good}");
            let error = AgentFileConfig::parse(&EXAMPLE.replace(good, bad)).unwrap_err();
            assert!(error.starts_with(key), "{key}: {error}");
        }
        let with_ca = EXAMPLE.replace("# registry_ca = ", "registry_ca = ");
        let file = AgentFileConfig::parse(&with_ca).unwrap();
        assert_eq!(
            file.agent_config(PathBuf::from("x")).registry_ca,
            Some(PathBuf::from("registry-ca.crt"))
        );
    }
}
