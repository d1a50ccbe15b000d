//! `cluster.yaml`: the cluster an admin wants, parsed and checked. Every key is documented in
//! config/cluster.yaml. A mistake is reported with the line and the key (`line 12:
//! masters[1].address: ...`); unknown keys are refused, so a typo never passes silently.

use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The default API port of masters.
pub const MASTER_PORT: u16 = 5050;
/// The default API port of agents.
pub const AGENT_PORT: u16 = 5051;
/// Masters a cluster may have: Raft needs an odd count to be worth it.
pub const MASTER_COUNTS: [usize; 3] = [1, 3, 5];

/// A mistake in cluster.yaml: where, which key, why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}{}: {key}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct InventoryError {
    pub file: String,
    pub line: Option<u64>,
    pub key: String,
    pub reason: String,
}

/// What a node is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Agent,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the installer logs in to a node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SshTarget {
    pub user: String,
    pub port: u16,
    /// A private key file; `None`: the keys of the ssh-agent at $SSH_AUTH_SOCK.
    pub key: Option<PathBuf>,
}

/// Resources an agent offers instead of the detected ones.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    pub cpus: Option<f64>,
    pub mem_mib: Option<u64>,
    pub disk_mib: Option<u64>,
}

/// One node of the cluster, with every default applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Node {
    /// Unique in the cluster: `m1`, `a2`, or the name given. Its certificate says
    /// `<role>:<name>`.
    pub name: String,
    pub role: Role,
    /// The address others reach it at (IP or DNS name), also the SSH host.
    pub address: String,
    pub ssh: SshTarget,
    /// Masters only: the Raft node id (1, 2, ... in the file's order).
    pub master_id: Option<u64>,
    pub attributes: BTreeMap<String, String>,
    pub resources: Resources,
    pub host_paths: Vec<PathBuf>,
    /// The line of this node in its file, for messages.
    pub line: u64,
    /// The name was given in the file (else it is a default, which `pin` may replace by
    /// the name the node had before).
    pub named: bool,
    /// Added to the running cluster by `dcos-rs node add` (kept in the state dir's
    /// `added-nodes.yaml`, not in cluster.yaml). An added master joins the cluster instead of
    /// founding it.
    pub added: bool,
}

impl Node {
    /// The node's API port.
    pub fn port(&self, inventory: &Inventory) -> u16 {
        match self.role {
            Role::Master => inventory.ports.master,
            Role::Agent => inventory.ports.agent,
        }
    }

    /// The node's API URL, as written in configs and certificates.
    pub fn url(&self, inventory: &Inventory) -> String {
        format!(
            "https://{}:{}",
            url_host(&self.address),
            self.port(inventory)
        )
    }

    /// `user@address:port`, for messages.
    pub fn ssh_label(&self) -> String {
        format!("{}@{}:{}", self.ssh.user, self.address, self.ssh.port)
    }
}

/// What a node was called (and, for a master, its id) when the cluster was installed,
/// keyed by `pin_key`: kept in the state dir so that a node keeps its name, and so its
/// certificate, when nodes before it leave cluster.yaml.
pub type Pins = BTreeMap<String, Pin>;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct Pin {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
}

pub fn pin_key(node: &Node) -> String {
    format!("{} {}", node.role, node.address)
}

/// Gives each node without a name of its own the name (and master id) it had before, and
/// nodes new to the pins a default name no other node holds; returns the pins of every node
/// now. Refuses when two nodes would share a name or a master id.
pub fn pin(inventory: &mut Inventory, pins: &Pins) -> Result<Pins, String> {
    for node in inventory.nodes.iter_mut() {
        if let Some(pin) = pins.get(&pin_key(node)) {
            if !node.named {
                node.name = pin.name.clone();
            }
            if node.role == Role::Master {
                node.master_id = pin.id.or(node.master_id);
            }
        }
    }
    // A default name taken by a pinned node goes to the first free one.
    let pinned: BTreeSet<String> = inventory
        .nodes
        .iter()
        .filter(|n| n.named || pins.contains_key(&pin_key(n)))
        .map(|n| n.name.clone())
        .collect();
    // Every name and id ever given stays taken: a removed node's certificate names it, and
    // a Raft id is never given to a second master.
    let mut taken = pinned.clone();
    taken.extend(pins.values().map(|p| p.name.clone()));
    let mut ids_taken: BTreeSet<u64> = pins.values().filter_map(|p| p.id).collect();
    for i in 0..inventory.nodes.len() {
        let node = &inventory.nodes[i];
        if pins.contains_key(&pin_key(node)) {
            continue;
        }
        if !node.named && taken.contains(&node.name) {
            let prefix = if node.role == Role::Master { "m" } else { "a" };
            let free = (1..)
                .map(|n| format!("{prefix}{n}"))
                .find(|n| !taken.contains(n))
                .expect("a free name");
            inventory.nodes[i].name = free;
        }
        taken.insert(inventory.nodes[i].name.clone());
        if let Some(id) = inventory.nodes[i].master_id {
            let id = if ids_taken.contains(&id) {
                (1..).find(|n| !ids_taken.contains(n)).expect("a free id")
            } else {
                id
            };
            inventory.nodes[i].master_id = Some(id);
            ids_taken.insert(id);
        }
    }
    let mut names = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for node in &inventory.nodes {
        if !names.insert(node.name.clone()) {
            return Err(format!(
                "two nodes would be called {:?}: give one of them another `name`",
                node.name
            ));
        }
        if let Some(id) = node.master_id {
            if !ids.insert(id) {
                return Err(format!(
                    "two masters would have id {id}: give one of them another `id`"
                ));
            }
        }
    }
    Ok(inventory
        .nodes
        .iter()
        .map(|n| {
            (
                pin_key(n),
                Pin {
                    name: n.name.clone(),
                    id: n.master_id,
                },
            )
        })
        .collect())
}

/// An IPv6 address in brackets, anything else as it is.
pub fn url_host(address: &str) -> String {
    match address.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => address.to_string(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Ports {
    pub master: u16,
    pub agent: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DataDirs {
    pub master: PathBuf,
    pub agent: PathBuf,
}

/// Limits of the installer's waits, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Timeouts {
    pub connect_s: u64,
    pub command_s: u64,
    pub quorum_s: u64,
    pub agents_s: u64,
}

/// Thresholds of the preflight checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PreflightLimits {
    pub min_free_disk_mib_master: u64,
    pub min_free_disk_mib_agent: u64,
    pub max_clock_skew_ms: u64,
}

/// The whole of cluster.yaml, checked, with defaults applied and paths made absolute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Inventory {
    pub name: String,
    pub ports: Ports,
    pub data_dirs: DataDirs,
    pub timeouts: Timeouts,
    pub preflight: PreflightLimits,
    /// Where the CA, node certificates, tokens and cli.toml are kept on the installer's
    /// machine.
    pub state_dir: PathBuf,
    /// Masters first (in the file's order), then agents.
    pub nodes: Vec<Node>,
}

impl Inventory {
    pub fn masters(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Master)
    }

    pub fn agents(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Agent)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The masters' URLs, in id order.
    pub fn master_urls(&self) -> Vec<String> {
        self.masters().map(|m| m.url(self)).collect()
    }
}

// ---- the file as written ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Spanned<String>,
    #[serde(default)]
    ssh: Option<Spanned<SshFile>>,
    #[serde(default)]
    ports: Option<PortsFile>,
    #[serde(default)]
    data_dirs: Option<DataDirsFile>,
    #[serde(default)]
    timeouts: Option<TimeoutsFile>,
    #[serde(default)]
    preflight: Option<PreflightFile>,
    #[serde(default)]
    state_dir: Option<Spanned<String>>,
    masters: Spanned<Vec<Spanned<NodeFile>>>,
    #[serde(default)]
    agents: Vec<Spanned<NodeFile>>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SshFile {
    user: Option<String>,
    port: Option<u16>,
    /// A key file, or `agent` for the ssh-agent.
    key: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PortsFile {
    master: Option<Spanned<u16>>,
    agent: Option<Spanned<u16>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DataDirsFile {
    master: Option<Spanned<String>>,
    agent: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeoutsFile {
    connect_s: Option<Spanned<u64>>,
    command_s: Option<Spanned<u64>>,
    quorum_s: Option<Spanned<u64>>,
    agents_s: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PreflightFile {
    min_free_disk_mib_master: Option<u64>,
    min_free_disk_mib_agent: Option<u64>,
    max_clock_skew_ms: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeFile {
    address: Spanned<String>,
    /// Masters: the Raft node id (default: the position, 1, 2, ...). `node add` writes it.
    #[serde(default)]
    id: Option<Spanned<u64>>,
    #[serde(default)]
    name: Option<Spanned<String>>,
    #[serde(default)]
    ssh: Option<Spanned<SshFile>>,
    #[serde(default)]
    attributes: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    resources: Option<Spanned<Resources>>,
    #[serde(default)]
    host_paths: Option<Spanned<Vec<String>>>,
}

/// Where `~` leads, for key paths.
pub struct Env<'a> {
    pub home: Option<&'a Path>,
}

/// Nodes added to a running cluster (`dcos-rs node add`), kept beside the CA in the state
/// dir: the same node entries as cluster.yaml's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddedFile {
    #[serde(default)]
    masters: Vec<Spanned<NodeFile>>,
    #[serde(default)]
    agents: Vec<Spanned<NodeFile>>,
}

/// The file in the state dir that lists the nodes `node add` added.
pub const ADDED_FILE: &str = "added-nodes.yaml";

/// Parses and checks cluster.yaml's `text`; `file` names it in errors, `base` is its
/// directory (relative paths are relative to it).
pub fn parse(text: &str, file: &str, base: &Path, env: &Env) -> Result<Inventory, InventoryError> {
    parse_with_added(text, file, base, env, None)
}

/// `parse`, with the nodes of `added` (the state dir's added-nodes.yaml: its text and path)
/// after cluster.yaml's own.
pub fn parse_with_added(
    text: &str,
    file: &str,
    base: &Path,
    env: &Env,
    added: Option<(&str, &str)>,
) -> Result<Inventory, InventoryError> {
    let raw: File = from_yaml(text, file)?;
    let added_raw = match added {
        Some((text, name)) => Some((from_yaml::<AddedFile>(text, name)?, name)),
        None => None,
    };
    Checker { file, base, env }.inventory(raw, added_raw)
}

fn from_yaml<'a, T: Deserialize<'a>>(text: &'a str, file: &str) -> Result<T, InventoryError> {
    serde_saphyr::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        let message = e.without_snippet().to_string();
        InventoryError {
            file: file.to_string(),
            line,
            key: key_of_message(&message),
            reason: first_line(&message),
        }
    })
}

/// serde's messages name the field in backquotes (`unknown field `foo``); the key of a parse
/// error is that, or the document.
fn key_of_message(message: &str) -> String {
    message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field"))
        .unwrap_or("(document)")
        .to_string()
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_string()
}

struct Checker<'a> {
    file: &'a str,
    base: &'a Path,
    env: &'a Env<'a>,
}

impl Checker<'_> {
    fn error<T>(
        &self,
        line: u64,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Result<T, InventoryError> {
        Err(InventoryError {
            file: self.file.to_string(),
            line: (line > 0).then_some(line),
            key: key.into(),
            reason: reason.into(),
        })
    }

    fn inventory(
        &self,
        raw: File,
        added: Option<(AddedFile, &str)>,
    ) -> Result<Inventory, InventoryError> {
        let name = &raw.name;
        if !valid_name(&name.value, 40) {
            return self.error(name.referenced.line(), "name", format!("{:?} is not a cluster name: 1 to 40 letters, digits or '-', starting with a letter", name.value));
        }
        let ssh_defaults = raw
            .ssh
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let ports = self.ports(raw.ports.unwrap_or_default())?;
        let data_dirs = self.data_dirs(raw.data_dirs.unwrap_or_default())?;
        let timeouts = self.timeouts(raw.timeouts.unwrap_or_default())?;
        let preflight = self.preflight(raw.preflight.unwrap_or_default())?;
        let state_dir = match &raw.state_dir {
            Some(dir) if dir.value.trim().is_empty() => {
                return self.error(dir.referenced.line(), "state_dir", "must not be empty");
            }
            Some(dir) => self.path(&dir.value),
            None => self.base.join(format!("dcos-rs-{}", name.value)),
        };

        let masters = &raw.masters;
        if !MASTER_COUNTS.contains(&masters.value.len()) {
            return self.error(
                masters.referenced.line(),
                "masters",
                format!(
                    "{} masters listed; a cluster has 1, 3 or 5 (Raft keeps working while a majority is up: 3 survive the loss of 1, 5 of 2)",
                    masters.value.len()
                ),
            );
        }
        let mut nodes = Vec::new();
        for (i, node) in masters.value.iter().enumerate() {
            nodes.push(self.node(node, Role::Master, i, &ssh_defaults)?);
        }
        for (i, node) in raw.agents.iter().enumerate() {
            nodes.push(self.node(node, Role::Agent, i, &ssh_defaults)?);
        }
        if let Some((added, file)) = added {
            let checker = Checker {
                file,
                base: self.base,
                env: self.env,
            };
            let (masters, agents) = (masters.value.len(), raw.agents.len());
            for (i, node) in added.masters.iter().enumerate() {
                let mut node = checker.node(node, Role::Master, masters + i, &ssh_defaults)?;
                node.added = true;
                nodes.push(node);
            }
            for (i, node) in added.agents.iter().enumerate() {
                let mut node = checker.node(node, Role::Agent, agents + i, &ssh_defaults)?;
                node.added = true;
                nodes.push(node);
            }
            // Masters first, in id order.
            nodes.sort_by_key(|n| (n.role, n.master_id));
        }

        let mut names = BTreeSet::new();
        let mut endpoints = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for node in &nodes {
            let key = format!("{}s[{}]", node.role, index_of(&nodes, node));
            if !names.insert(node.name.clone()) {
                return self.error(
                    node.line,
                    format!("{key}.name"),
                    format!("{:?} names two nodes; names must be unique", node.name),
                );
            }
            let port = match node.role {
                Role::Master => ports.master,
                Role::Agent => ports.agent,
            };
            if let Some(id) = node.master_id {
                if !ids.insert(id) {
                    return self.error(
                        node.line,
                        format!("{key}.id"),
                        format!("master id {id} is used twice"),
                    );
                }
            }
            if node.role == Role::Agent {
                if let Some(master) = nodes
                    .iter()
                    .find(|n| n.address == node.address && n.role == Role::Master)
                {
                    return self.error(
                        node.line,
                        format!("{key}.address"),
                        format!("{} is also {} (a master): a host is a master or an agent, not both (they would share /etc/dcos-rs)", node.address, master.name),
                    );
                }
            }
            if !endpoints.insert((node.address.clone(), port)) {
                return self.error(
                    node.line,
                    format!("{key}.address"),
                    format!("{}:{port} is listed twice", node.address),
                );
            }
        }
        Ok(Inventory {
            name: name.value.clone(),
            ports,
            data_dirs,
            timeouts,
            preflight,
            state_dir,
            nodes,
        })
    }

    fn ports(&self, raw: PortsFile) -> Result<Ports, InventoryError> {
        let mut ports = Ports {
            master: MASTER_PORT,
            agent: AGENT_PORT,
        };
        for (key, value, slot) in [
            ("ports.master", raw.master, &mut ports.master),
            ("ports.agent", raw.agent, &mut ports.agent),
        ] {
            if let Some(value) = value {
                if value.value == 0 {
                    return self.error(value.referenced.line(), key, "0 is not a port");
                }
                *slot = value.value;
            }
        }
        Ok(ports)
    }

    fn data_dirs(&self, raw: DataDirsFile) -> Result<DataDirs, InventoryError> {
        let mut dirs = DataDirs {
            master: PathBuf::from("/var/lib/dcos-rs/master"),
            agent: PathBuf::from("/var/lib/dcos-rs/agent"),
        };
        for (key, value, slot) in [
            ("data_dirs.master", raw.master, &mut dirs.master),
            ("data_dirs.agent", raw.agent, &mut dirs.agent),
        ] {
            if let Some(value) = value {
                let path = Path::new(&value.value);
                let normal = value.value.trim_end_matches('/');
                if SYSTEM_DIRS.contains(&normal) {
                    return self.error(value.referenced.line(), key, format!("{:?} is a system directory: the installer makes the data dir private (chmod 700) and uninstall deletes it; give a directory of its own, e.g. /var/lib/dcos-rs/{}", value.value, key.trim_start_matches("data_dirs.")));
                }
                if !path.is_absolute() || !safe_remote_path(&value.value) {
                    return self.error(value.referenced.line(), key, format!("{:?} must be an absolute path on the nodes, without '..', quotes, spaces or '$'", value.value));
                }
                *slot = path.to_path_buf();
            }
        }
        Ok(dirs)
    }

    fn timeouts(&self, raw: TimeoutsFile) -> Result<Timeouts, InventoryError> {
        let mut timeouts = Timeouts {
            connect_s: 10,
            command_s: 300,
            quorum_s: 120,
            agents_s: 120,
        };
        for (key, value, slot, max) in [
            (
                "timeouts.connect_s",
                raw.connect_s,
                &mut timeouts.connect_s,
                300,
            ),
            (
                "timeouts.command_s",
                raw.command_s,
                &mut timeouts.command_s,
                3600,
            ),
            (
                "timeouts.quorum_s",
                raw.quorum_s,
                &mut timeouts.quorum_s,
                3600,
            ),
            (
                "timeouts.agents_s",
                raw.agents_s,
                &mut timeouts.agents_s,
                3600,
            ),
        ] {
            if let Some(value) = value {
                if !(1..=max).contains(&value.value) {
                    return self.error(
                        value.referenced.line(),
                        key,
                        format!("{} is out of range: 1 to {max} seconds", value.value),
                    );
                }
                *slot = value.value;
            }
        }
        Ok(timeouts)
    }

    fn preflight(&self, raw: PreflightFile) -> Result<PreflightLimits, InventoryError> {
        let mut limits = PreflightLimits {
            min_free_disk_mib_master: 512,
            min_free_disk_mib_agent: 1024,
            max_clock_skew_ms: 2_000,
        };
        if let Some(v) = raw.min_free_disk_mib_master {
            limits.min_free_disk_mib_master = v;
        }
        if let Some(v) = raw.min_free_disk_mib_agent {
            limits.min_free_disk_mib_agent = v;
        }
        if let Some(v) = raw.max_clock_skew_ms {
            if !(1..=60_000).contains(&v.value) {
                return self.error(v.referenced.line(), "preflight.max_clock_skew_ms", format!("{} is out of range: 1 to 60000 ms (leases and certificates need clocks that agree)", v.value));
            }
            limits.max_clock_skew_ms = v.value;
        }
        Ok(limits)
    }

    fn node(
        &self,
        spanned: &Spanned<NodeFile>,
        role: Role,
        index: usize,
        defaults: &SshFile,
    ) -> Result<Node, InventoryError> {
        let raw = &spanned.value;
        let line = spanned.referenced.line();
        let key = |field: &str| format!("{role}s[{index}].{field}");
        let address = raw.address.value.trim();
        if !valid_address(address) {
            return self.error(
                raw.address.referenced.line(),
                key("address"),
                format!("{address:?} is neither an IP address nor a host name"),
            );
        }
        let name = match &raw.name {
            Some(name) if !valid_name(&name.value, 63) => {
                return self.error(name.referenced.line(), key("name"), format!("{:?} is not a node name: 1 to 63 letters, digits or '-', starting with a letter", name.value));
            }
            Some(name) => name.value.clone(),
            None => format!(
                "{}{}",
                if role == Role::Master { "m" } else { "a" },
                index + 1
            ),
        };
        let own = raw
            .ssh
            .as_ref()
            .map(|s| s.value.clone())
            .unwrap_or_default();
        let ssh_line = raw
            .ssh
            .as_ref()
            .map(|s| s.referenced.line())
            .unwrap_or(line);
        let user = own
            .user
            .or_else(|| defaults.user.clone())
            .unwrap_or_else(|| "root".to_string());
        if !valid_user(&user) {
            return self.error(
                ssh_line,
                key("ssh.user"),
                format!("{user:?} is not a user name"),
            );
        }
        let port = own.port.or(defaults.port).unwrap_or(22);
        if port == 0 {
            return self.error(ssh_line, key("ssh.port"), "0 is not a port");
        }
        let key_path = match own.key.or_else(|| defaults.key.clone()) {
            None => None,
            Some(k) if k == "agent" => None,
            Some(k) if k.trim().is_empty() => {
                return self.error(
                    ssh_line,
                    key("ssh.key"),
                    "empty: give a private key file, or `agent` for the ssh-agent",
                );
            }
            Some(k) => Some(self.key_path(&k).ok_or_else(|| InventoryError {
                file: self.file.to_string(),
                line: Some(ssh_line),
                key: key("ssh.key"),
                reason: format!("{k:?} starts with ~ but HOME is not set"),
            })?),
        };

        let attributes = raw
            .attributes
            .as_ref()
            .map(|a| (a.value.clone(), a.referenced.line()))
            .unwrap_or_default();
        if role == Role::Master && !attributes.0.is_empty() {
            return self.error(
                attributes.1,
                key("attributes"),
                "masters run no tasks: attributes belong to agents",
            );
        }
        for (name, value) in &attributes.0 {
            if !valid_attribute(name) || name == "hostname" {
                return self.error(attributes.1, key(&format!("attributes.{name}")), "attribute names are 1 to 63 letters, digits, '-', '_' or '.' (and `hostname` is always set by the agent)");
            }
            if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
                return self.error(
                    attributes.1,
                    key(&format!("attributes.{name}")),
                    "the value must be 1 to 255 characters, without control characters",
                );
            }
        }
        let resources = raw
            .resources
            .as_ref()
            .map(|r| (r.value.clone(), r.referenced.line()))
            .unwrap_or_default();
        if role == Role::Master && resources.0 != Resources::default() {
            return self.error(
                resources.1,
                key("resources"),
                "masters run no tasks: resources belong to agents",
            );
        }
        if let Some(cpus) = resources.0.cpus {
            if !(cpus > 0.0 && cpus <= 4096.0) {
                return self.error(
                    resources.1,
                    key("resources.cpus"),
                    format!("{cpus} is out of range: more than 0, at most 4096"),
                );
            }
        }
        for (field, value) in [
            ("mem_mib", resources.0.mem_mib),
            ("disk_mib", resources.0.disk_mib),
        ] {
            if value == Some(0) {
                return self.error(
                    resources.1,
                    key(&format!("resources.{field}")),
                    "must be more than 0",
                );
            }
        }
        let host_paths = raw
            .host_paths
            .as_ref()
            .map(|h| (h.value.clone(), h.referenced.line()))
            .unwrap_or_default();
        if role == Role::Master && !host_paths.0.is_empty() {
            return self.error(
                host_paths.1,
                key("host_paths"),
                "masters run no tasks: host_paths belong to agents",
            );
        }
        for path in &host_paths.0 {
            if !Path::new(path).is_absolute() || !safe_remote_path(path) || path == "/" {
                return self.error(host_paths.1, key("host_paths"), format!("{path:?} must be an absolute path other than /, without '..', quotes, spaces or '$'"));
            }
        }
        Ok(Node {
            name,
            role,
            address: address.to_string(),
            ssh: SshTarget {
                user,
                port,
                key: key_path,
            },
            master_id: match (&raw.id, role) {
                (Some(id), Role::Master) if id.value >= 1 => Some(id.value),
                (Some(id), Role::Master) => {
                    return self.error(id.referenced.line(), key("id"), "master ids start at 1");
                }
                (Some(id), Role::Agent) => {
                    return self.error(id.referenced.line(), key("id"), "only masters have an id");
                }
                (None, Role::Master) => Some(index as u64 + 1),
                (None, Role::Agent) => None,
            },
            attributes: attributes.0,
            resources: resources.0,
            host_paths: host_paths.0.into_iter().map(PathBuf::from).collect(),
            line,
            named: raw.name.is_some(),
            added: false,
        })
    }

    fn path(&self, text: &str) -> PathBuf {
        // `./x` reads as `x`: paths are printed in messages and written to cli.toml.
        let path: PathBuf = Path::new(text)
            .components()
            .filter(|c| *c != std::path::Component::CurDir)
            .collect();
        if path.is_absolute() {
            path
        } else {
            self.base.join(path)
        }
    }

    fn key_path(&self, text: &str) -> Option<PathBuf> {
        match text.strip_prefix("~/") {
            Some(rest) => self.env.home.map(|home| home.join(rest)),
            None => Some(self.path(text)),
        }
    }
}

fn index_of(nodes: &[Node], node: &Node) -> usize {
    nodes
        .iter()
        .filter(|n| n.role == node.role)
        .position(|n| std::ptr::eq(n, node))
        .unwrap_or(0)
}

/// Letters, digits and '-', starting with a letter, at most `max` long.
fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

fn valid_attribute(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 32
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// An IP address or a DNS host name.
pub fn valid_address(address: &str) -> bool {
    if address.parse::<IpAddr>().is_ok() {
        return true;
    }
    !address.is_empty()
        && address.len() <= 253
        && address.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Directories a data dir may not be (`/` is ""): the installer makes the data dir private
/// and uninstall deletes it.
const SYSTEM_DIRS: [&str; 24] = [
    "",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/local",
    "/var",
    "/var/lib",
    "/var/log",
    "/var/tmp",
];

/// A path the installer can put in shell commands and TOML without quoting surprises.
fn safe_remote_path(path: &str) -> bool {
    !path.split('/').any(|part| part == "..")
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.+@".contains(c))
}

#[cfg(test)]
mod tests;
