//! `master.toml`: what one master of a multi-master cluster needs to start.
//!
//! Every key is documented in `config/master.toml`. Unknown keys are refused (a typo must not
//! silently fall back to a default), and every check names the key it is about.

use crate::node_config::{check_url, AuthSection, TlsSection};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Largest config file read (a config is a few hundred bytes; this only stops mistakes).
const CONFIG_MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// This master's Raft id: unique in the cluster, never reused, never changed.
    pub node_id: u64,
    /// Address the API (and Raft between masters) listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// URL the other masters, agents and clients use to reach this master.
    pub advertise_url: String,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The voters of a brand-new cluster, the same list on each of them. Leave it out on a
    /// master that joins a running cluster (`dcos-rs node add --role master`).
    #[serde(default)]
    pub initial_masters: Vec<Peer>,
    pub tls: TlsSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub agents: AgentsSection,
    /// Required: API callers need a bearer token from the tokens file.
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub mesos: MesosSection,
}

/// Mesos frameworks that cannot speak TLS (pymesos, most Mesos scheduler libraries).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MesosSection {
    /// Also serve Mesos's scheduler API (`POST /api/v1/scheduler`, and `GET /version`) over
    /// plain HTTP on this address. Off unless set: frameworks' credentials (an API token in
    /// HTTP Basic) and their tasks travel unencrypted. Use the same port on every master:
    /// a follower redirects schedulers to the leader's address at this port.
    pub scheduler_http_listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub id: u64,
    pub url: String,
}

/// Largest `raft.min_free_mib` (1 TiB): more is a typo, not a policy.
const MIN_FREE_MIB_MAX: u64 = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    /// Free space (MiB) the data dir's disk must keep for writes to be accepted.
    pub min_free_mib: u64,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            heartbeat_ms: dcos_raft::DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: dcos_raft::DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: dcos_raft::DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            snapshot_logs_since_last: dcos_raft::DEFAULT_SNAPSHOT_LOGS_SINCE_LAST,
            max_in_snapshot_log_to_keep: dcos_raft::DEFAULT_MAX_IN_SNAPSHOT_LOG_TO_KEEP,
            min_free_mib: dcos_raft::DEFAULT_MIN_FREE_BYTES >> 20,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsSection {
    /// An agent silent for this long is marked unreachable and its tasks TASK_UNREACHABLE.
    pub unreachable_timeout_ms: u64,
}

/// Default of `agents.unreachable_timeout_ms`: 8 of the agents' 500 ms heartbeats, each on
/// its own (so one stalled in TCP retransmission holds back none of the others): at 10 %
/// packet loss no live agent went 4 s unheard in `make bench-detection`'s 10 minutes, and a
/// dead one is marked within 4.25 s (the silence, plus the 250 ms check).
pub const DEFAULT_AGENT_UNREACHABLE_TIMEOUT_MS: u64 = 4_000;

impl Default for AgentsSection {
    fn default() -> Self {
        AgentsSection {
            unreachable_timeout_ms: DEFAULT_AGENT_UNREACHABLE_TIMEOUT_MS,
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 5050))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/dcos-rs/master")
}

/// A config error: the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {message}")]
pub struct ConfigError {
    pub file: String,
    pub message: String,
}

impl MasterConfig {
    pub fn load(path: &Path) -> Result<MasterConfig, ConfigError> {
        let error = |message: String| ConfigError {
            file: path.display().to_string(),
            message,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| error(format!("cannot read: {e}")))?
            .len();
        if size > CONFIG_MAX_BYTES {
            return Err(error(format!(
                "{size} bytes is over the {CONFIG_MAX_BYTES}-byte limit for a config file"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        let config = Self::parse(&text).map_err(error)?;
        let config = config.relative_to(path.parent().unwrap_or(Path::new(".")));
        // Read now, so a bad tokens file stops the start with the config's name on it.
        config.auth.load_tokens().map_err(error)?;
        Ok(config)
    }

    /// Parses and checks a config text; the error names the key.
    pub fn parse(text: &str) -> Result<MasterConfig, String> {
        let config: MasterConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    /// Relative paths in a config file are relative to the file, not to the working dir.
    fn relative_to(mut self, base: &Path) -> Self {
        for path in [
            &mut self.data_dir,
            &mut self.tls.ca,
            &mut self.tls.cert,
            &mut self.tls.key,
        ] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        self.auth.relative_to(base);
        self
    }

    fn validate(&self) -> Result<(), String> {
        if self.node_id == 0 {
            return Err("node_id: must be at least 1".to_string());
        }
        self.auth.tokens_file()?;
        check_url("advertise_url", &self.advertise_url)?;
        let mut ids = BTreeSet::new();
        let mut urls = BTreeSet::new();
        for (i, peer) in self.initial_masters.iter().enumerate() {
            if peer.id == 0 {
                return Err(format!("initial_masters[{i}].id: must be at least 1"));
            }
            check_url(&format!("initial_masters[{i}].url"), &peer.url)?;
            if !ids.insert(peer.id) {
                return Err(format!(
                    "initial_masters[{i}].id: {} is listed twice",
                    peer.id
                ));
            }
            if !urls.insert(peer.url.trim_end_matches('/')) {
                return Err(format!(
                    "initial_masters[{i}].url: {} is listed twice",
                    peer.url
                ));
            }
        }
        if !self.initial_masters.is_empty() {
            match self.initial_masters.iter().find(|p| p.id == self.node_id) {
                None => {
                    return Err(format!(
                        "initial_masters: must include this master (node_id {})",
                        self.node_id
                    ))
                }
                Some(me) if me.url.trim_end_matches('/') != self.advertise_url() => {
                    return Err(format!(
                        "initial_masters: node {} has url {} but advertise_url is {}",
                        self.node_id, me.url, self.advertise_url
                    ))
                }
                Some(_) => {}
            }
        }
        let raft = &self.raft;
        if raft.heartbeat_ms == 0 || raft.election_timeout_min_ms <= raft.heartbeat_ms {
            return Err(format!(
                "raft.election_timeout_min_ms: {} must be larger than raft.heartbeat_ms ({}, at least 1)",
                raft.election_timeout_min_ms, raft.heartbeat_ms
            ));
        }
        if raft.election_timeout_max_ms <= raft.election_timeout_min_ms {
            return Err(format!(
                "raft.election_timeout_max_ms: {} must be larger than raft.election_timeout_min_ms ({})",
                raft.election_timeout_max_ms, raft.election_timeout_min_ms
            ));
        }
        if raft.min_free_mib > MIN_FREE_MIB_MAX {
            return Err(format!(
                "raft.min_free_mib: {} is more than the {MIN_FREE_MIB_MAX} MiB (1 TiB) allowed",
                raft.min_free_mib
            ));
        }
        if raft.snapshot_logs_since_last == 0 {
            return Err("raft.snapshot_logs_since_last: must be at least 1".to_string());
        }
        if let Some(plain) = self.mesos.scheduler_http_listen {
            if plain == self.listen {
                return Err(format!(
                    "mesos.scheduler_http_listen: {plain} is the address of the TLS API (listen); choose another port"
                ));
            }
        }
        if self.agents.unreachable_timeout_ms < 1_000 {
            return Err(format!(
                "agents.unreachable_timeout_ms: {} is under the 1000 ms minimum",
                self.agents.unreachable_timeout_ms
            ));
        }
        Ok(())
    }

    /// The advertised URL without a trailing slash (as recorded in the membership).
    pub fn advertise_url(&self) -> &str {
        self.advertise_url.trim_end_matches('/')
    }

    pub fn raft_options(&self) -> dcos_raft::RaftOptions {
        dcos_raft::RaftOptions {
            node_id: self.node_id,
            data_dir: self.data_dir.clone(),
            advertise_addr: self.advertise_url().to_string(),
            snapshot_logs_since_last: self.raft.snapshot_logs_since_last,
            max_in_snapshot_log_to_keep: self.raft.max_in_snapshot_log_to_keep,
            initial_members: self
                .initial_masters
                .iter()
                .map(|p| (p.id, p.url.trim_end_matches('/').to_string()))
                .collect(),
            heartbeat_ms: self.raft.heartbeat_ms,
            election_timeout_min_ms: self.raft.election_timeout_min_ms,
            election_timeout_max_ms: self.raft.election_timeout_max_ms,
            min_free_bytes: self.raft.min_free_mib << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
node_id = 2
listen = "10.77.0.12:5050"
advertise_url = "https://10.77.0.12:5050"
data_dir = "/var/lib/dcos-rs/master"
initial_masters = [
  { id = 1, url = "https://10.77.0.11:5050" },
  { id = 2, url = "https://10.77.0.12:5050" },
  { id = 3, url = "https://10.77.0.13:5050" },
]
[tls]
ca = "ca.crt"
cert = "/etc/dcos-rs/m2.crt"
key = "/etc/dcos-rs/m2.key"
[raft]
heartbeat_ms = 100
[auth]
tokens_file = "tokens"
"#;

    #[test]
    fn a_full_config_parses_with_defaults_filled_in() {
        let config = MasterConfig::parse(GOOD).unwrap();
        assert_eq!(config.node_id, 2);
        assert_eq!(config.raft.heartbeat_ms, 100);
        assert_eq!(
            config.raft.election_timeout_min_ms,
            dcos_raft::DEFAULT_ELECTION_TIMEOUT_MIN_MS
        );
        assert_eq!(config.agents.unreachable_timeout_ms, 4_000);
        assert_eq!(config.mesos.scheduler_http_listen, None, "off by default");
        let options = config.raft_options();
        assert_eq!(options.initial_members.len(), 3);
        assert_eq!(options.initial_members[&1], "https://10.77.0.11:5050");
        let config = config.relative_to(Path::new("/etc/dcos-rs"));
        assert_eq!(config.tls.ca, PathBuf::from("/etc/dcos-rs/ca.crt"));
        assert_eq!(config.tls.cert, PathBuf::from("/etc/dcos-rs/m2.crt"));
        assert_eq!(
            config.auth.tokens_file().unwrap(),
            Path::new("/etc/dcos-rs/tokens")
        );
    }

    fn error_of(text: &str) -> String {
        MasterConfig::parse(text).unwrap_err()
    }

    #[test]
    fn every_refusal_names_its_key() {
        let cases = [
            (GOOD.replace("node_id = 2", "node_id = 0"), "node_id"),
            (
                GOOD.replace("node_id = 2", "node_id = 4"),
                "initial_masters",
            ),
            (
                GOOD.replace(
                    "advertise_url = \"https://10.77.0.12:5050\"",
                    "advertise_url = \"http://10.77.0.12:5050\"",
                ),
                "advertise_url",
            ),
            (
                GOOD.replace("{ id = 3, url", "{ id = 2, url"),
                "initial_masters[2].id",
            ),
            (
                GOOD.replace("https://10.77.0.13:5050", "https://10.77.0.11:5050"),
                "initial_masters[2].url",
            ),
            (
                GOOD.replace("heartbeat_ms = 100", "heartbeat_ms = 700"),
                "raft.election_timeout_min_ms",
            ),
            (
                GOOD.replace(
                    "heartbeat_ms = 100",
                    "heartbeat_ms = 100\nelection_timeout_max_ms = 300",
                ),
                "raft.election_timeout_max_ms",
            ),
            (GOOD.replace("[raft]", "[raft]\nheartbeat = 1"), "heartbeat"),
            (GOOD.replace("node_id = 2", "node_id = \"two\""), "node_id"),
            (
                format!("{GOOD}[agents]\nunreachable_timeout_ms = 10\n"),
                "agents.unreachable_timeout_ms",
            ),
            (
                GOOD.replace("[auth]\ntokens_file = \"tokens\"\n", ""),
                "auth.tokens_file",
            ),
            (
                GOOD.replace("tokens_file = \"tokens\"", ""),
                "auth.tokens_file",
            ),
            (
                GOOD.replace("tokens_file = \"tokens\"", "tokens = \"x\""),
                "tokens",
            ),
            (
                format!("{GOOD}[mesos]\nscheduler_http_listen = \"10.77.0.12:5050\"\n"),
                "mesos.scheduler_http_listen",
            ),
            (
                format!("{GOOD}[mesos]\nscheduler_http_listen = \"10.77.0.12\"\n"),
                "scheduler_http_listen",
            ),
        ];
        for (text, key) in cases {
            let error = error_of(&text);
            assert!(error.contains(key), "expected {key:?} in: {error}");
        }
    }

    #[test]
    fn the_documented_example_parses() {
        let config = MasterConfig::parse(include_str!("../../config/master.toml")).unwrap();
        assert_eq!(config.initial_masters.len(), 3);
    }

    #[test]
    fn a_bad_tokens_file_is_a_config_error_naming_the_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("master.toml");
        std::fs::write(&config, GOOD).unwrap();
        let error = MasterConfig::load(&config).unwrap_err().to_string();
        assert!(
            error.contains("auth.tokens_file")
                && error.contains("tokens")
                && error.contains("cannot read"),
            "{error}"
        );
        std::fs::write(dir.path().join("tokens"), "# ok\nnot a line\n").unwrap();
        let error = MasterConfig::load(&config).unwrap_err().to_string();
        assert!(
            error.contains("auth.tokens_file") && error.contains("tokens:2: "),
            "{error}"
        );
        let line = crate::auth::token_line(&crate::auth::generate_token().unwrap(), "admin");
        std::fs::write(dir.path().join("tokens"), line).unwrap();
        MasterConfig::load(&config).unwrap();
    }

    #[test]
    fn a_joining_master_needs_no_initial_members() {
        let text = GOOD.split("initial_masters").next().unwrap().to_string()
            + "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[auth]\ntokens_file = \"t\"\n";
        let config = MasterConfig::parse(&text).unwrap();
        assert!(config.raft_options().initial_members.is_empty());
    }
}
