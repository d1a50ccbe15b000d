//! The files a node gets: its config (master.toml or agent.toml) and its systemd unit. Pure:
//! the same inventory gives the same bytes, so a rerun can tell by hash what changed.

use crate::facts::{CONFIG_DIR, UNIT_DIR};
use crate::inventory::{Inventory, Node, Role};
use crate::preflight::unit_name;

pub const MASTER_UNIT: &str = include_str!("../../systemd/dcos-rs-master.service");
pub const AGENT_UNIT: &str = include_str!("../../systemd/dcos-rs-agent.service");

/// A file to put on a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFile {
    pub path: String,
    pub content: Vec<u8>,
    pub mode: u32,
}

impl NodeFile {
    pub fn new(path: impl Into<String>, content: impl Into<Vec<u8>>, mode: u32) -> NodeFile {
        NodeFile {
            path: path.into(),
            content: content.into(),
            mode,
        }
    }

    pub fn sha256(&self) -> String {
        crate::sha256_hex(&self.content)
    }
}

/// The node's config file path.
pub fn config_path(role: Role) -> String {
    format!("{CONFIG_DIR}/{}.toml", role.as_str())
}

pub fn unit_path(role: Role) -> String {
    format!("{UNIT_DIR}/{}.service", unit_name(role))
}

/// The unit file of a role.
pub fn unit(role: Role) -> NodeFile {
    let text = match role {
        Role::Master => MASTER_UNIT,
        Role::Agent => AGENT_UNIT,
    };
    NodeFile::new(unit_path(role), text, 0o644)
}

/// A TOML basic string: quotes, backslashes and control characters escaped (also
/// `cluster setup`'s cli.toml).
pub fn toml_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn header(inventory: &Inventory, node: &Node) -> String {
    format!(
        "# Written by `dcos-rs install` for {} {} of cluster {}: a rerun of the installer\n\
         # replaces it. Change cluster.yaml and rerun instead of editing this file.\n\
         # Every key is documented in the repository's config/{}.toml.\n",
        node.role, node.name, inventory.name, node.role
    )
}

/// master.toml of a master.
pub fn master_config(inventory: &Inventory, node: &Node) -> NodeFile {
    let mut text = header(inventory, node);
    text.push_str(&format!(
        "node_id = {}\nlisten = {}\nadvertise_url = {}\ndata_dir = {}\n",
        node.master_id.unwrap_or(0),
        toml_string(&format!(
            "{}:{}",
            listen_host(&node.address),
            inventory.ports.master
        )),
        toml_string(&node.url(inventory)),
        toml_string(&inventory.data_dirs.master.to_string_lossy()),
    ));
    if node.added {
        // It joins the running cluster: `node add` makes it a learner, then a voter.
        text.push_str("# Joined a running cluster (`dcos-rs node add`): no initial_masters.\n");
    } else {
        // The founding voters: cluster.yaml's masters, the same list on each of them.
        text.push_str("initial_masters = [\n");
        for master in inventory.masters().filter(|m| !m.added) {
            text.push_str(&format!(
                "  {{ id = {}, url = {} }},\n",
                master.master_id.unwrap_or(0),
                toml_string(&master.url(inventory))
            ));
        }
        text.push_str("]\n");
    }
    text.push_str("\n[tls]\nca = \"ca.crt\"\ncert = \"node.crt\"\nkey = \"node.key\"\n\n[auth]\ntokens_file = \"tokens\"\n");
    NodeFile::new(config_path(Role::Master), text, 0o644)
}

/// agent.toml of an agent.
pub fn agent_config(inventory: &Inventory, node: &Node) -> NodeFile {
    let mut text = header(inventory, node);
    text.push_str(&format!(
        "listen = {}\nadvertise_url = {}\nwork_dir = {}\nmasters = [{}]\n",
        toml_string(&format!(
            "{}:{}",
            listen_host(&node.address),
            inventory.ports.agent
        )),
        toml_string(&node.url(inventory)),
        toml_string(&inventory.data_dirs.agent.to_string_lossy()),
        inventory
            .master_urls()
            .iter()
            .map(|u| toml_string(u))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    if let Some(cpus) = node.resources.cpus {
        text.push_str(&format!("cpus = {cpus:?}\n"));
    }
    if let Some(mem) = node.resources.mem_mib {
        text.push_str(&format!("mem_mib = {mem}\n"));
    }
    if let Some(disk) = node.resources.disk_mib {
        text.push_str(&format!("disk_mib = {disk}\n"));
    }
    if !node.host_paths.is_empty() {
        let paths: Vec<_> = node
            .host_paths
            .iter()
            .map(|p| toml_string(&p.to_string_lossy()))
            .collect();
        text.push_str(&format!("host_paths = [{}]\n", paths.join(", ")));
    }
    text.push_str("\n[attributes]\n");
    for (name, value) in &node.attributes {
        text.push_str(&format!("{} = {}\n", toml_string(name), toml_string(value)));
    }
    text.push_str("\n[tls]\nca = \"ca.crt\"\ncert = \"node.crt\"\nkey = \"node.key\"\n\n[auth]\ntokens_file = \"tokens\"\n");
    NodeFile::new(config_path(Role::Agent), text, 0o644)
}

/// The node's config.
pub fn config(inventory: &Inventory, node: &Node) -> NodeFile {
    match node.role {
        Role::Master => master_config(inventory, node),
        Role::Agent => agent_config(inventory, node),
    }
}

/// Listen on the node's own address when it is an IP (only the cluster network), else on
/// every address (a DNS name may resolve to any of them).
fn listen_host(address: &str) -> String {
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => format!("[{v6}]"),
        Ok(ip) => ip.to_string(),
        Err(_) => "0.0.0.0".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{parse, Env};
    use std::path::Path;

    fn inventory() -> Inventory {
        let text = include_str!("../../config/cluster.yaml");
        parse(
            text,
            "cluster.yaml",
            Path::new("/x"),
            &Env {
                home: Some(Path::new("/root")),
            },
        )
        .unwrap()
    }

    #[test]
    fn a_master_config_names_every_master() {
        let inventory = inventory();
        let file = master_config(&inventory, inventory.node("m2").unwrap());
        let text = String::from_utf8(file.content).unwrap();
        let parsed: toml_check::Table = toml_check::parse(&text);
        assert_eq!(parsed.get("node_id"), Some("2"));
        assert_eq!(parsed.get("listen"), Some("\"10.77.0.12:5050\""));
        assert_eq!(
            parsed.get("advertise_url"),
            Some("\"https://10.77.0.12:5050\"")
        );
        assert!(
            text.contains("{ id = 3, url = \"https://10.77.0.13:5050\" }"),
            "{text}"
        );
        assert_eq!(file.path, "/etc/dcos-rs/master.toml");
    }

    #[test]
    fn an_agent_config_carries_its_overrides() {
        let inventory = inventory();
        let text =
            String::from_utf8(agent_config(&inventory, inventory.node("big-1").unwrap()).content)
                .unwrap();
        for line in [
            "cpus = 8.0",
            "mem_mib = 16384",
            "host_paths = [\"/srv/data\"]",
            "\"rack\" = \"r2\"",
            "work_dir = \"/var/lib/dcos-rs/agent\"",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(text.contains("masters = [\"https://10.77.0.11:5050\", \"https://10.77.0.12:5050\", \"https://10.77.0.13:5050\"]"));
        // Same inventory, same bytes: reruns compare hashes.
        assert_eq!(
            agent_config(&inventory, inventory.node("big-1").unwrap()),
            agent_config(&inventory, inventory.node("big-1").unwrap())
        );
    }

    #[test]
    fn the_agent_unit_leaves_tasks_running_when_it_stops() {
        let unit = String::from_utf8(unit(Role::Agent).content).unwrap();
        assert!(unit.contains("\nKillMode=process\n") && unit.contains("\nDelegate=yes\n"));
        assert!(unit
            .contains("ExecStart=/usr/local/bin/dcos-rs agent --config /etc/dcos-rs/agent.toml"));
    }

    /// Just enough TOML reading for the assertions (the installer crate has no TOML parser;
    /// the binary's config tests parse these files for real).
    mod toml_check {
        pub struct Table(Vec<(String, String)>);
        pub fn parse(text: &str) -> Table {
            Table(
                text.lines()
                    .filter(|l| !l.starts_with('#'))
                    .filter_map(|l| l.split_once(" = "))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            )
        }
        impl Table {
            pub fn get(&self, key: &str) -> Option<&str> {
                self.0
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
            }
        }
    }
}
