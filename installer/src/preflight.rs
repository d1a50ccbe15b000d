//! Preflight: what a node must have before the installer touches it, judged from its facts.
//! Each check has a name, a verdict and a reason a person can act on.

use crate::facts::Facts;
use crate::inventory::{Inventory, Node, Role};

/// Namespaces the agent's containers use.
pub const AGENT_NAMESPACES: [&str; 7] = ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup"];
/// cgroup controllers the agent limits tasks with.
pub const AGENT_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// The oldest kernel an agent runs on: openat2 (5.6) guards the sandbox file API.
pub const AGENT_MIN_KERNEL: (u32, u32) = (5, 6);
pub const MASTER_MIN_KERNEL: (u32, u32) = (4, 18);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    /// Worth knowing; the install goes on.
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    fn new(name: &'static str, ok: bool, pass: String, fail: String) -> Check {
        if ok {
            Check {
                name,
                verdict: Verdict::Pass,
                detail: pass,
            }
        } else {
            Check {
                name,
                verdict: Verdict::Fail,
                detail: fail,
            }
        }
    }
}

/// What the installer machine knows when it judges a node.
pub struct Context<'a> {
    pub inventory: &'a Inventory,
    /// The architecture of the binary to install (`uname -m` spelling).
    pub arch: &'a str,
    /// The installer's clock halfway through the probe's round trip (seconds since the epoch),
    /// and half that round trip (the uncertainty of the comparison).
    pub local_time: f64,
    pub half_round_trip: f64,
    /// `--force`: a node installed for another cluster (or by hand) may be taken over.
    pub force: bool,
}

/// Every check of `node`, in a fixed order.
pub fn checks(context: &Context, node: &Node, facts: &Facts) -> Vec<Check> {
    let inventory = context.inventory;
    let agent = node.role == Role::Agent;
    let mut checks = Vec::new();

    checks.push(Check::new(
        "login",
        facts.uid == 0 || facts.sudo,
        if facts.sudo { "passwordless sudo".into() } else { "root".into() },
        format!("{} is not root and `sudo -n` asks for a password: log in as root or allow passwordless sudo", node.ssh.user),
    ));
    checks.push(Check::new(
        "arch",
        facts.arch == context.arch,
        format!("{} ({})", facts.arch, facts.os),
        format!(
            "the node is {} but this binary is built for {}",
            facts.arch, context.arch
        ),
    ));
    let minimum = if agent {
        AGENT_MIN_KERNEL
    } else {
        MASTER_MIN_KERNEL
    };
    let kernel_ok = facts.kernel_version().is_some_and(|v| v >= minimum);
    checks.push(Check::new(
        "kernel",
        kernel_ok,
        facts.kernel.clone(),
        format!(
            "kernel {} is older than {}.{}, the oldest a{} {} runs on",
            facts.kernel,
            minimum.0,
            minimum.1,
            if agent { "n" } else { "" },
            node.role
        ),
    ));
    if agent {
        let missing: Vec<_> = AGENT_NAMESPACES
            .iter()
            .filter(|ns| !facts.namespaces.contains(**ns))
            .collect();
        checks.push(Check::new(
            "namespaces",
            missing.is_empty(),
            AGENT_NAMESPACES.join(" "),
            format!("the kernel lacks namespaces the containers need: {missing:?}"),
        ));
        let v2 = facts.cgroup_fs == "cgroup2fs";
        let (have, mode): (Vec<&str>, &str) = if v2 {
            (
                AGENT_CONTROLLERS
                    .iter()
                    .copied()
                    .filter(|c| facts.cgroup_v2_controllers.contains(*c))
                    .collect(),
                "v2",
            )
        } else {
            (
                AGENT_CONTROLLERS
                    .iter()
                    .copied()
                    .filter(|c| facts.cgroup_v1.contains(*c))
                    .collect(),
                "v1",
            )
        };
        let missing: Vec<_> = AGENT_CONTROLLERS
            .iter()
            .filter(|c| !have.contains(c))
            .collect();
        checks.push(Check::new(
            "cgroups",
            missing.is_empty(),
            format!("{mode} ({})", have.join(" ")),
            format!("cgroup {mode} without the controllers {missing:?} that limit tasks"),
        ));
        checks.push(Check::new(
            "overlayfs",
            facts.overlayfs,
            "available".into(),
            "the kernel has no overlay filesystem (images are mounted as overlays): load the `overlay` module".into(),
        ));
    }
    checks.push(Check::new(
        "systemd",
        facts.systemd && facts.systemctl,
        "running".into(),
        if facts.systemctl {
            "systemctl is there but systemd is not the init system (/run/systemd/system is missing)"
                .into()
        } else {
            "no systemd: the installer runs the node's service as a systemd unit".into()
        },
    ));

    let ours = facts.installed_cluster() == Some(inventory.name.as_str());
    let unit = unit_name(node.role);
    let port = node.port(inventory);
    let port_is_ours = ours && facts.unit_active(unit);
    checks.push(Check::new(
        "ports",
        !facts.listening.contains(&port) || port_is_ours,
        if port_is_ours { format!("{port} (ours, {unit} running)") } else { format!("{port} free") },
        format!("port {port} is in use by another program: stop it, or choose another port under `ports:` in cluster.yaml"),
    ));

    let needed_mib = if agent {
        inventory.preflight.min_free_disk_mib_agent
    } else {
        inventory.preflight.min_free_disk_mib_master
    };
    let free_mib = facts.disk_free_kib / 1024;
    let data_dir = match node.role {
        Role::Master => &inventory.data_dirs.master,
        Role::Agent => &inventory.data_dirs.agent,
    };
    checks.push(Check::new(
        "disk",
        free_mib >= needed_mib,
        format!("{free_mib} MiB free at {}", facts.disk_path),
        format!(
            "{free_mib} MiB free at {} (for {}), {needed_mib} MiB needed: free some space or lower preflight.min_free_disk_mib_{}",
            facts.disk_path,
            data_dir.display(),
            node.role
        ),
    ));

    let skew_ms =
        ((facts.time - context.local_time).abs() - context.half_round_trip).max(0.0) * 1000.0;
    let limit = inventory.preflight.max_clock_skew_ms as f64;
    checks.push(Check::new(
        "clock",
        skew_ms <= limit,
        format!("{skew_ms:.0} ms off"),
        format!("the node's clock is {skew_ms:.0} ms off this machine's (at most {limit:.0} ms): run NTP (systemd-timesyncd or chrony) on both"),
    ));

    let conflict = match (facts.installed_cluster(), facts.marker.get("role")) {
        (Some(name), _) if name != inventory.name => {
            Some(format!("installed for cluster {name:?}"))
        }
        (Some(_), Some(role)) if role != node.role.as_str() => Some(format!(
            "installed as a {role} of this cluster, listed as a {}",
            node.role
        )),
        (None, _) if facts.files.keys().any(|f| f.ends_with(".toml")) => {
            Some("a dcos-rs config is there that no installer wrote (/etc/dcos-rs)".to_string())
        }
        _ => None,
    };
    checks.push(match conflict {
        None => Check {
            name: "existing",
            verdict: Verdict::Pass,
            detail: if ours {
                "this cluster's (rerun)".into()
            } else {
                "none".into()
            },
        },
        Some(what) if context.force => Check {
            name: "existing",
            verdict: Verdict::Warn,
            detail: format!("{what}: taken over (--force)"),
        },
        Some(what) => Check {
            name: "existing",
            verdict: Verdict::Fail,
            detail: format!("{what}: give --force to replace it, or uninstall it first"),
        },
    });
    checks
}

/// The systemd unit of a role.
pub fn unit_name(role: Role) -> &'static str {
    match role {
        Role::Master => "dcos-rs-master",
        Role::Agent => "dcos-rs-agent",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{parse, Env};
    use std::path::Path;

    fn inventory() -> Inventory {
        let text = "name: prod\nmasters:\n  - address: 10.0.0.1\nagents:\n  - address: 10.0.0.2\n";
        parse(text, "cluster.yaml", Path::new("/"), &Env { home: None }).unwrap()
    }

    fn good_facts() -> Facts {
        crate::facts::parse(
            "time=1000.0\nuid=0\narch=x86_64\nkernel=6.1.0-27-amd64\nos=debian 12\nnamespaces=cgroup ipc mnt net pid user uts\n\
             cgroup_fs=tmpfs\ncgroup_v1=memory\ncgroup_v1=cpu\ncgroup_v1=pids\noverlayfs=yes\nsystemd=running\nsystemctl=/bin/systemctl\n\
             listen=00000000:0016\ndisk_path=/var/lib\ndisk_free_kib=4194304\nend=1\n",
        )
        .unwrap()
    }

    fn judge(facts: &Facts, node: usize, force: bool) -> Vec<Check> {
        let inventory = inventory();
        let context = Context {
            inventory: &inventory,
            arch: "x86_64",
            local_time: 1000.5,
            half_round_trip: 0.1,
            force,
        };
        checks(&context, &inventory.nodes[node], facts)
    }

    fn failed(checks: &[Check]) -> Vec<(&'static str, String)> {
        checks
            .iter()
            .filter(|c| c.verdict == Verdict::Fail)
            .map(|c| (c.name, c.detail.clone()))
            .collect()
    }

    #[test]
    fn a_good_node_passes_everything() {
        let checks = judge(&good_facts(), 1, false);
        assert_eq!(failed(&checks), []);
        let names: Vec<_> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "login",
                "arch",
                "kernel",
                "namespaces",
                "cgroups",
                "overlayfs",
                "systemd",
                "ports",
                "disk",
                "clock",
                "existing"
            ]
        );
        // Masters skip what only containers need.
        assert_eq!(judge(&good_facts(), 0, false).len(), 8);
    }

    #[test]
    fn each_problem_fails_its_check_with_a_reason() {
        type Breaker = Box<dyn Fn(&mut Facts)>;
        let cases: Vec<(&str, Breaker, &str)> = vec![
            ("login", Box::new(|f| f.uid = 1000), "passwordless sudo"),
            (
                "arch",
                Box::new(|f| f.arch = "aarch64".into()),
                "built for x86_64",
            ),
            (
                "kernel",
                Box::new(|f| f.kernel = "5.4.0".into()),
                "older than 5.6",
            ),
            (
                "namespaces",
                Box::new(|f| {
                    f.namespaces.remove("user");
                }),
                "\"user\"",
            ),
            (
                "cgroups",
                Box::new(|f| {
                    f.cgroup_v1.remove("memory");
                }),
                "\"memory\"",
            ),
            ("overlayfs", Box::new(|f| f.overlayfs = false), "overlay"),
            (
                "systemd",
                Box::new(|f| f.systemd = false),
                "not the init system",
            ),
            (
                "ports",
                Box::new(|f| {
                    f.listening.insert(5051);
                }),
                "port 5051 is in use",
            ),
            (
                "disk",
                Box::new(|f| f.disk_free_kib = 1024),
                "1 MiB free at /var/lib",
            ),
            ("clock", Box::new(|f| f.time = 1010.0), "9400 ms off"),
            (
                "existing",
                Box::new(|f| {
                    f.marker.insert("cluster".into(), "other".into());
                }),
                "cluster \"other\"",
            ),
        ];
        for (name, break_it, reason) in cases {
            let mut facts = good_facts();
            break_it(&mut facts);
            let failed = failed(&judge(&facts, 1, false));
            assert_eq!(failed.len(), 1, "{name}: {failed:?}");
            assert_eq!(failed[0].0, name);
            assert!(failed[0].1.contains(reason), "{name}: {}", failed[0].1);
        }
    }

    #[test]
    fn a_rerun_owns_its_port_and_force_takes_over_another_install() {
        let mut facts = good_facts();
        facts.listening.insert(5051);
        facts.units.insert("dcos-rs-agent".into(), "active".into());
        facts.marker.insert("cluster".into(), "prod".into());
        facts.marker.insert("role".into(), "agent".into());
        assert_eq!(failed(&judge(&facts, 1, false)), []);

        facts.marker.insert("role".into(), "master".into());
        assert_eq!(failed(&judge(&facts, 1, false))[0].0, "existing");
        let forced = judge(&facts, 1, true);
        assert_eq!(forced.last().unwrap().verdict, Verdict::Warn);

        let mut by_hand = good_facts();
        by_hand
            .files
            .insert("/etc/dcos-rs/agent.toml".into(), "ab".into());
        assert!(failed(&judge(&by_hand, 1, false))[0]
            .1
            .contains("no installer wrote"));
    }

    #[test]
    fn cgroup_v2_hosts_are_judged_by_their_controllers() {
        let mut facts = good_facts();
        facts.cgroup_fs = "cgroup2fs".into();
        facts.cgroup_v1.clear();
        facts.cgroup_v2_controllers = ["cpu", "memory", "pids", "io"].map(String::from).into();
        assert_eq!(failed(&judge(&facts, 1, false)), []);
        facts.cgroup_v2_controllers.remove("pids");
        assert_eq!(failed(&judge(&facts, 1, false))[0].0, "cgroups");
    }
}
