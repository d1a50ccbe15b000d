//! Bridge networking for container tasks: one bridge per agent with an address from the
//! agent's subnet, a network namespace and veth pair per task, NAT for egress, and port
//! mappings (host port → task address and container port) as elements of two nftables maps.
//!
//! Everything is done with iproute2's `ip` and nftables' `nft`, run as child processes:
//! the shim attaches a task before its container starts and detaches it when the task is
//! gone; the agent prepares the host once and sweeps what crashed shims left behind. The
//! names and the ruleset are pure functions of the configuration and the task id, tested
//! without a kernel.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Where bridged tasks live on one agent. Two agents on one host need different names and
/// subnets: every name below is derived from `bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeConfig {
    /// Bridge device name (at most 15 bytes), e.g. `dcos0`.
    pub bridge: String,
    /// The subnet's network address; the bridge takes the first host address.
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
}

/// Default bridge of an agent.
pub const DEFAULT_BRIDGE: &str = "dcos0";
/// Default task subnet: 172.30.0.0/16 (Docker uses 172.17/16; AWS's default VPC 172.31/16).
pub const DEFAULT_SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 30, 0, 0), 16);

impl BridgeConfig {
    /// Parses `bridge` and `a.b.c.d/n`, refusing what cannot work (names the value).
    pub fn new(bridge: &str, cidr: &str) -> Result<BridgeConfig, String> {
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "bridge name '{bridge}' must be 1-15 letters, digits, '-' or '_'"
            ));
        }
        let (address, prefix) = cidr
            .split_once('/')
            .ok_or_else(|| format!("subnet '{cidr}' must look like 172.30.0.0/16"))?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("subnet '{cidr}': '{address}' is not an IPv4 address"))?;
        let prefix_len: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=28).contains(p))
            .ok_or_else(|| format!("subnet '{cidr}': the prefix length must be 8 to 28"))?;
        let subnet = Ipv4Addr::from(u32::from(address) & mask(prefix_len));
        if subnet != address {
            return Err(format!(
                "subnet '{cidr}' has host bits set (the network is {subnet}/{prefix_len})"
            ));
        }
        Ok(BridgeConfig {
            bridge: bridge.to_string(),
            subnet,
            prefix_len,
        })
    }

    pub fn default_config() -> BridgeConfig {
        BridgeConfig {
            bridge: DEFAULT_BRIDGE.to_string(),
            subnet: DEFAULT_SUBNET.0,
            prefix_len: DEFAULT_SUBNET.1,
        }
    }

    /// The bridge's own address: the tasks' default gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }

    /// The nftables table holding this bridge's NAT rules and port maps.
    pub fn table(&self) -> String {
        format!("dcos-rs-{}", self.bridge)
    }

    /// Prefix of the network namespaces of this bridge's tasks (files in /run/netns).
    pub fn netns_prefix(&self) -> String {
        format!("{}-", self.bridge)
    }

    /// Network namespace, host-side veth name and address for a task.
    pub fn task_network(
        &self,
        task_id: &str,
        address: Ipv4Addr,
        port_mappings: Vec<PortForward>,
    ) -> TaskNetwork {
        let hash = Sha256::digest(task_id.as_bytes());
        let short: String = hash[..6].iter().map(|b| format!("{b:02x}")).collect();
        TaskNetwork {
            bridge: self.bridge.clone(),
            table: self.table(),
            netns: format!("{}{short}", self.netns_prefix()),
            veth: format!("dv{short}"),
            address,
            prefix_len: self.prefix_len,
            gateway: self.gateway(),
            port_mappings,
        }
    }

    /// The lowest address of the subnet that is neither the network, the gateway, the
    /// broadcast address nor in `used`.
    pub fn allocate(&self, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        let first = u32::from(self.subnet) + 2;
        let broadcast = u32::from(self.subnet) | !mask(self.prefix_len);
        (first..broadcast)
            .map(Ipv4Addr::from)
            .find(|a| !used.contains(a))
    }

    /// The nftables ruleset of this bridge (created once per host): DNAT of the mapped host
    /// ports for traffic from outside (prerouting) and from the host itself (output, loopback
    /// included), masquerading of the tasks' egress, and the loopback guard
    /// (`loopback_guard`).
    pub fn ruleset(&self) -> String {
        let table = self.table();
        let bridge = &self.bridge;
        let subnet = format!("{}/{}", self.subnet, self.prefix_len);
        let maps = "\
  map ports_tcp { type inet_service : ipv4_addr . inet_service; }
  map ports_udp { type inet_service : ipv4_addr . inet_service; }";
        let dnat = "\
    fib daddr type local dnat ip to tcp dport map @ports_tcp
    fib daddr type local dnat ip to udp dport map @ports_udp";
        format!(
            "table ip {table} {{
{maps}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
{dnat}
  }}
  chain output {{ type nat hook output priority -100; policy accept;
{dnat}
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    ip saddr {subnet} oifname != \"{bridge}\" masquerade
    ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade
  }}
{guard}
}}
",
            guard = self.loopback_guard()
        )
    }

    /// The chain that keeps tasks away from the host's loopback services: `route_localnet`
    /// (on the bridge, for the loopback DNAT of mapped ports) would also let a packet from
    /// the bridge to 127.0.0.0/8 reach whatever listens on the host's loopback
    /// (CVE-2020-8558). Only replies of connections the host made (through a port mapping)
    /// come in; a new connection from the bridge to a loopback address is dropped.
    pub fn loopback_guard(&self) -> String {
        format!(
            "  chain {LOOPBACK_GUARD_CHAIN} {{ type filter hook input priority filter; policy accept;
    iifname \"{bridge}\" ip daddr 127.0.0.0/8 ct state != {{ established, related }} drop
  }}",
            bridge = self.bridge
        )
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    fn map(self) -> &'static str {
        match self {
            Protocol::Tcp => "ports_tcp",
            Protocol::Udp => "ports_udp",
        }
    }
}

/// Traffic to the agent's `host_port` goes to the task's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// One task's place on the bridge, decided by the agent and recorded in its spec, so the
/// shim, a later agent and the sweep all know what to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetwork {
    pub bridge: String,
    pub table: String,
    /// Named network namespace (`/run/netns/<netns>`) the container joins.
    pub netns: String,
    /// Host end of the veth pair; the task's end is `eth0`.
    pub veth: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub port_mappings: Vec<PortForward>,
}

impl TaskNetwork {
    pub fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    fn elements(&self, protocol: Protocol, with_values: bool) -> Option<String> {
        let entries: Vec<String> = self
            .port_mappings
            .iter()
            .filter(|m| m.protocol == protocol)
            .map(|m| match with_values {
                true => format!("{} : {} . {}", m.host_port, self.address, m.container_port),
                false => m.host_port.to_string(),
            })
            .collect();
        (!entries.is_empty()).then(|| entries.join(", "))
    }

    /// `nft` commands adding (or deleting) this task's port mappings.
    fn map_commands(&self, add: bool) -> String {
        let mut script = String::new();
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            if let Some(elements) = self.elements(protocol, add) {
                let verb = if add { "add" } else { "delete" };
                script.push_str(&format!(
                    "{verb} element ip {} {} {{ {elements} }}\n",
                    self.table,
                    protocol.map()
                ));
            }
        }
        script
    }
}

/// Runs a command, returning its stdout or an error with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "bridge networking needs the `{program}` command ({})",
                match program {
                    "nft" => "apt-get install nftables",
                    _ => "apt-get install iproute2",
                }
            ),
            _ => format!("running {program}: {e}"),
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| format!("writing to {program}: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("setting {path} to {value}: {e}"))
}

/// The input chain of `BridgeConfig::loopback_guard`.
pub const LOOPBACK_GUARD_CHAIN: &str = "loopback_guard";

/// Prepares the host for `config`'s tasks: the bridge with the gateway address, IPv4
/// forwarding, loopback DNAT to the bridge (`route_localnet`, bridge only), and the nftables
/// table. Idempotent: what exists is kept (port maps of running tasks survive).
pub fn setup_host(config: &BridgeConfig) -> Result<(), String> {
    let bridge = config.bridge.as_str();
    if !std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists() {
        if let Err(e) = run("ip", &["link", "add", bridge, "type", "bridge"], None) {
            // Another shim or agent may have created it meanwhile.
            if !std::path::Path::new(&format!("/sys/class/net/{bridge}")).exists() {
                return Err(e);
            }
        }
    }
    let gateway = format!("{}/{}", config.gateway(), config.prefix_len);
    let addresses = run("ip", &["-o", "-4", "addr", "show", "dev", bridge], None)?;
    if !addresses.contains(&format!(" {gateway} ")) {
        run("ip", &["addr", "add", &gateway, "dev", bridge], None)?;
    }
    run("ip", &["link", "set", bridge, "up"], None)?;
    write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
    write_sysctl(
        &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
        "1",
    )?;
    let table = config.table();
    if run("nft", &["list", "table", "ip", &table], None).is_err() {
        run("nft", &["-f", "-"], Some(&config.ruleset()))?;
    } else if run(
        "nft",
        &["list", "chain", "ip", &table, LOOPBACK_GUARD_CHAIN],
        None,
    )
    .is_err()
    {
        // A table made before the guard existed.
        let guard = format!("table ip {table} {{\n{}\n}}\n", config.loopback_guard());
        run("nft", &["-f", "-"], Some(&guard))?;
    }
    Ok(())
}

/// Removes the bridge and its nftables table (tests; an operator turning bridging off).
pub fn teardown_host(config: &BridgeConfig) {
    let _ = run("nft", &["delete", "table", "ip", &config.table()], None);
    let _ = run("ip", &["link", "del", &config.bridge], None);
}

/// Puts a task on the bridge: its network namespace, a veth pair into it with the task's
/// address and default route, and its port mappings. On failure nothing stays behind.
pub fn attach(network: &TaskNetwork) -> Result<(), String> {
    let result = attach_steps(network);
    if result.is_err() {
        detach(network);
    }
    result
}

fn attach_steps(network: &TaskNetwork) -> Result<(), String> {
    let netns = network.netns.as_str();
    run("ip", &["netns", "add", netns], None)?;
    let host_side = format!(
        "link add {veth} type veth peer name eth0 netns {netns}\n\
         link set {veth} master {bridge} up\n",
        veth = network.veth,
        bridge = network.bridge,
    );
    run("ip", &["-batch", "-"], Some(&host_side))?;
    let task_side = format!(
        "addr add {address}/{prefix} dev eth0\n\
         link set eth0 up\n\
         link set lo up\n\
         route add default via {gateway}\n",
        address = network.address,
        prefix = network.prefix_len,
        gateway = network.gateway,
    );
    run("ip", &["-n", netns, "-batch", "-"], Some(&task_side))?;
    let maps = network.map_commands(true);
    if !maps.is_empty() {
        run("nft", &["-f", "-"], Some(&maps))?;
    }
    Ok(())
}

/// Takes a task off the bridge: its port mappings, then its namespace (the veth pair goes
/// with it). Best effort and idempotent.
pub fn detach(network: &TaskNetwork) {
    for line in network.map_commands(false).lines() {
        // One command per element: an already-deleted one must not keep the others.
        let _ = run("nft", &["-f", "-"], Some(line));
    }
    // The veth pair before the namespace: a namespace is freed asynchronously, and its end
    // of the pair with it, so once the namespace is gone nothing of the task's network is.
    if std::path::Path::new(&format!("/sys/class/net/{}", network.veth)).exists() {
        let _ = run("ip", &["link", "del", &network.veth], None);
    }
    let _ = run("ip", &["netns", "del", &network.netns], None);
}

/// Removes what dead tasks left of `config`'s networking: namespaces of this bridge and
/// port-map elements that belong to no task in `live`. Returns how many were removed.
pub fn sweep(config: &BridgeConfig, live: &[TaskNetwork]) -> usize {
    let mut removed = 0;
    let prefix = config.netns_prefix();
    let live_netns: BTreeSet<&str> = live.iter().map(|n| n.netns.as_str()).collect();
    if let Ok(entries) = std::fs::read_dir("/run/netns") {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && !live_netns.contains(name.as_str()) {
                let _ = run("ip", &["netns", "del", &name], None);
                removed += 1;
            }
        }
    }
    let live_ports: BTreeSet<(Protocol, u16)> = live
        .iter()
        .flat_map(|n| n.port_mappings.iter().map(|m| (m.protocol, m.host_port)))
        .collect();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let Ok(listing) = run(
            "nft",
            &["-j", "list", "map", "ip", &config.table(), protocol.map()],
            None,
        ) else {
            continue;
        };
        for port in map_keys(&listing) {
            if !live_ports.contains(&(protocol, port)) {
                let command = format!(
                    "delete element ip {} {} {{ {port} }}\n",
                    config.table(),
                    protocol.map()
                );
                let _ = run("nft", &["-f", "-"], Some(&command));
                removed += 1;
            }
        }
    }
    removed
}

/// Host ports in an `nft -j list map` answer: `"elem": [[31000, {"concat": [...]}], ...]`.
fn map_keys(listing: &str) -> Vec<u16> {
    let Ok(json) = serde_json::from_str::<serde_json::Value>(listing) else {
        return Vec::new();
    };
    json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["map"]["elem"].as_array())
        .flatten()
        .filter_map(|pair| pair.get(0).and_then(|k| k.as_u64()))
        .filter_map(|k| u16::try_from(k).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BridgeConfig {
        BridgeConfig::new("dcos0", "172.30.0.0/16").unwrap()
    }

    #[test]
    fn configuration_is_checked_and_names_the_value() {
        assert_eq!(config().gateway(), Ipv4Addr::new(172, 30, 0, 1));
        assert!(BridgeConfig::new("dcos0", "172.30.0.1/16")
            .unwrap_err()
            .contains("host bits"));
        assert!(BridgeConfig::new("dcos0", "172.30.0.0").is_err());
        assert!(BridgeConfig::new("dcos0", "172.30.0.0/30")
            .unwrap_err()
            .contains("prefix length"));
        assert!(BridgeConfig::new("a-name-far-too-long", "10.0.0.0/8").is_err());
        assert!(BridgeConfig::new("bad name", "10.0.0.0/8").is_err());
        assert!(BridgeConfig::new("dcos0", "300.0.0.0/8").is_err());
    }

    #[test]
    fn addresses_skip_network_gateway_broadcast_and_used_ones() {
        let small = BridgeConfig::new("b", "10.9.0.0/28").unwrap();
        let mut used = BTreeSet::new();
        let mut handed = Vec::new();
        while let Some(address) = small.allocate(&used) {
            used.insert(address);
            handed.push(address);
        }
        // .0 network, .1 gateway, .15 broadcast: 13 task addresses.
        assert_eq!(handed.len(), 13);
        assert_eq!(handed[0], Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(handed[12], Ipv4Addr::new(10, 9, 0, 14));
        used.remove(&Ipv4Addr::new(10, 9, 0, 7));
        assert_eq!(small.allocate(&used), Some(Ipv4Addr::new(10, 9, 0, 7)));
    }

    #[test]
    fn task_names_are_stable_short_and_distinct() {
        let a = config().task_network("web.1", Ipv4Addr::new(172, 30, 0, 2), vec![]);
        let again = config().task_network("web.1", Ipv4Addr::new(172, 30, 0, 2), vec![]);
        let b = config().task_network("web.2", Ipv4Addr::new(172, 30, 0, 3), vec![]);
        assert_eq!(a, again);
        assert_ne!(a.netns, b.netns);
        assert_ne!(a.veth, b.veth);
        assert!(a.veth.len() <= 15, "{}", a.veth);
        assert!(a.netns.starts_with("dcos0-"));
        assert_eq!(a.netns_path(), format!("/run/netns/{}", a.netns));
    }

    #[test]
    fn port_mappings_become_map_elements_per_protocol() {
        let network = config().task_network(
            "web.1",
            Ipv4Addr::new(172, 30, 0, 9),
            vec![
                PortForward {
                    host_port: 31000,
                    container_port: 80,
                    protocol: Protocol::Tcp,
                },
                PortForward {
                    host_port: 31001,
                    container_port: 53,
                    protocol: Protocol::Udp,
                },
                PortForward {
                    host_port: 31002,
                    container_port: 443,
                    protocol: Protocol::Tcp,
                },
            ],
        );
        assert_eq!(
            network.map_commands(true),
            "add element ip dcos-rs-dcos0 ports_tcp { 31000 : 172.30.0.9 . 80, 31002 : 172.30.0.9 . 443 }\n\
             add element ip dcos-rs-dcos0 ports_udp { 31001 : 172.30.0.9 . 53 }\n"
        );
        assert_eq!(
            network.map_commands(false),
            "delete element ip dcos-rs-dcos0 ports_tcp { 31000, 31002 }\n\
             delete element ip dcos-rs-dcos0 ports_udp { 31001 }\n"
        );
        let none = config().task_network("x", Ipv4Addr::new(172, 30, 0, 3), vec![]);
        assert_eq!(none.map_commands(true), "");
    }

    #[test]
    fn ruleset_names_the_table_bridge_and_subnet() {
        let rules = config().ruleset();
        assert!(rules.starts_with("table ip dcos-rs-dcos0 {"));
        assert!(rules.contains("ip saddr 172.30.0.0/16 oifname != \"dcos0\" masquerade"));
        assert!(rules.contains("fib daddr type local dnat ip to tcp dport map @ports_tcp"));
        // New connections from the bridge to the host's loopback are dropped.
        assert!(rules.contains(
            "iifname \"dcos0\" ip daddr 127.0.0.0/8 ct state != { established, related } drop"
        ));
        assert!(rules.contains("type filter hook input"));
    }

    #[test]
    fn map_keys_are_read_from_nft_json() {
        let listing = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
            {"map": {"family": "ip", "name": "ports_tcp", "table": "dcos-rs-dcos0",
             "type": "inet_service", "map": ["ipv4_addr", "inet_service"],
             "elem": [[31000, {"concat": ["172.30.0.2", 80]}],
                      [31005, {"concat": ["172.30.0.3", 8080]}]]}}]}"#;
        assert_eq!(map_keys(listing), vec![31000, 31005]);
        assert_eq!(map_keys("not json"), Vec::<u16>::new());
        let empty = r#"{"nftables": [{"map": {"name": "ports_tcp"}}]}"#;
        assert_eq!(map_keys(empty), Vec::<u16>::new());
    }
}
