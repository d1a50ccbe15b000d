//! Hosts on one machine: a network namespace per host, a veth into one private bridge, and
//! partitions as nftables drop rules on that bridge (recipes in ../shared/testbed/).
//!
//! Host `i` is the namespace `dcos-e2e-h<i>` with `eth0` = 10.77.0.(10+i)/24; the bridge
//! `dcos-e2e-br` holds 10.77.0.1 in the root namespace, so the test process reaches every
//! host while partitions (bridge forwarding rules) only cut hosts from each other. Nothing
//! is ever sent beyond 10.77.0.0/24. Only names this harness made are touched, also when a
//! crashed earlier run left them behind.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

const BRIDGE: &str = "dcos-e2e-br";
const BRIDGE_ADDR: &str = "10.77.0.1/24";
/// nftables table (family bridge) holding partition and packet-loss rules.
const TABLE: &str = "dcos_e2e";
const CHAIN: &str = "forward";
/// Highest host number: addresses stay inside 10.77.0.11-10.77.0.(10+MAX_HOSTS).
pub const MAX_HOSTS: u32 = 9;

pub fn namespace(host: u32) -> String {
    format!("dcos-e2e-h{host}")
}

fn veth(host: u32) -> String {
    format!("dcos-e2e-v{host}")
}

pub fn address(host: u32) -> String {
    format!("10.77.0.{}", 10 + host)
}

/// The hosts of one test; dropping it removes them (and kills whatever still runs in them).
pub struct Net {
    hosts: Vec<u32>,
}

impl Net {
    /// Hosts 1..=count on a fresh bridge (0.1 s for 5 on this kind of machine).
    pub fn up(count: u32) -> Net {
        assert!(
            (1..=MAX_HOSTS).contains(&count),
            "at most {MAX_HOSTS} hosts"
        );
        teardown(1..=MAX_HOSTS);
        run("ip", &["link", "add", BRIDGE, "type", "bridge"]);
        run("ip", &["addr", "add", BRIDGE_ADDR, "dev", BRIDGE]);
        run("ip", &["link", "set", BRIDGE, "up"]);
        let hosts: Vec<u32> = (1..=count).collect();
        for &host in &hosts {
            let (ns, veth) = (namespace(host), veth(host));
            run("ip", &["netns", "add", &ns]);
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            );
            run("ip", &["link", "set", &veth, "master", BRIDGE, "up"]);
            let cidr = format!("{}/24", address(host));
            run("ip", &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
            run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        }
        nft(&format!(
            "add table bridge {TABLE}\n\
             add chain bridge {TABLE} {CHAIN} {{ type filter hook forward priority 0; policy accept; }}\n"
        ));
        Net { hosts }
    }

    /// Drops every frame between group `a` and group `b`, both ways.
    pub fn partition(&self, a: &[u32], b: &[u32]) {
        let set = |hosts: &[u32]| {
            hosts
                .iter()
                .map(|h| format!("\"{}\"", veth(*h)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (a, b) = (set(a), set(b));
        nft(&format!(
            "add rule bridge {TABLE} {CHAIN} iifname {{ {a} }} oifname {{ {b} }} drop\n\
             add rule bridge {TABLE} {CHAIN} iifname {{ {b} }} oifname {{ {a} }} drop\n"
        ));
    }

    /// Cuts `host` from every other host (the test process still reaches it).
    pub fn isolate(&self, host: u32) {
        let others: Vec<u32> = self.hosts.iter().copied().filter(|h| *h != host).collect();
        self.partition(&[host], &others);
    }

    /// Drops `percent` % of the frames `host` sends or receives through the bridge, at random
    /// (there is no netem here: nftables `numgen random`).
    #[allow(dead_code)] // for `make bench-detection`
    pub fn packet_loss(&self, host: u32, percent: u32) {
        let v = veth(host);
        nft(&format!(
            "add rule bridge {TABLE} {CHAIN} iifname \"{v}\" numgen random mod 100 < {percent} drop\n\
             add rule bridge {TABLE} {CHAIN} oifname \"{v}\" numgen random mod 100 < {percent} drop\n"
        ));
    }

    /// Removes every partition and loss rule.
    pub fn heal(&self) {
        nft(&format!("flush chain bridge {TABLE} {CHAIN}\n"));
    }

    /// The namespace of `host`, to enter with setns(2) before exec.
    pub fn namespace_file(&self, host: u32) -> File {
        assert!(self.hosts.contains(&host), "host {host} does not exist");
        File::open(format!("/run/netns/{}", namespace(host)))
            .unwrap_or_else(|e| panic!("opening the namespace of host {host}: {e}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        teardown(self.hosts.iter().copied());
    }
}

/// Configures `command` to start inside `namespace` (a file from `Net::namespace_file`).
pub fn enter_before_exec(command: &mut Command, namespace: &File) {
    use std::os::unix::process::CommandExt;
    let fd = namespace.as_raw_fd();
    // SAFETY: setns is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Kills what runs in our namespaces, then removes them, the bridge and the nft table.
fn teardown(hosts: impl Iterator<Item = u32>) {
    for host in hosts {
        let ns = namespace(host);
        if !std::path::Path::new("/run/netns").join(&ns).exists() {
            continue;
        }
        use nix::sys::signal::{kill, Signal};
        for signal in [Signal::SIGTERM, Signal::SIGKILL] {
            let pids: Vec<i32> = output("ip", &["netns", "pids", &ns])
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                let _ = kill(nix::unistd::Pid::from_raw(pid), signal);
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    }
    // A namespace outlives `ip netns del` while a process still holds it, and its veth with
    // it: delete our veths from the bridge side (that removes both ends).
    for host in 1..=MAX_HOSTS {
        let _ = Command::new("ip")
            .args(["link", "del", &veth(host)])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let _ = Command::new("ip")
        .args(["link", "del", BRIDGE])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = Command::new("nft")
        .args(["delete", "table", "bridge", TABLE])
        .stderr(std::process::Stdio::null())
        .status();
    // `ip netns add` leaves a bind mount on /run/netns; drop it once no namespace is left.
    let netns = std::path::Path::new("/run/netns");
    if std::fs::read_dir(netns).is_ok_and(|mut entries| entries.next().is_none()) {
        let _ = nix::mount::umount2(netns, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(netns);
    }
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (apt-get install iproute2 nftables)"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn nft(script: &str) {
    use std::io::Write;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nft (apt-get install nftables)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
