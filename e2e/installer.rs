//! The installer against real sshd and systemd (nspawn hosts, e2e/testbed.rs): a whole
//! cluster from one command, reruns, drift, and the failures it must name precisely.

use crate::cluster::{wait_for, BIN};
use crate::net;
use crate::testbed::Testbed;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// The installer's working directory: cluster.yaml, the binary it installs, its state.
struct Admin {
    dir: PathBuf,
    binary: PathBuf,
}

impl Admin {
    /// A copy of the binary without its debug sections (the installer uploads itself: 70 MB
    /// instead of 180), in the testbed's directory.
    fn new(testbed: &Testbed) -> Admin {
        let dir = testbed.dir.path().join("admin");
        std::fs::create_dir_all(&dir).unwrap();
        let binary = dir.join("dcos-rs");
        let stripped = Command::new("objcopy")
            .args(["--strip-debug", BIN, binary.to_str().unwrap()])
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            std::fs::copy(BIN, &binary).unwrap();
        }
        Admin { dir, binary }
    }

    fn write_inventory(&self, text: &str) {
        std::fs::write(self.dir.join("cluster.yaml"), text).unwrap();
    }

    fn dcos(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args(args)
            .current_dir(&self.dir)
            .env("HOME", &self.dir)
            .env("DCOS_CONFIG", self.dir.join("state/cli.toml"))
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .unwrap()
    }

    fn install(&self) -> Output {
        let output = self.dcos(&["install", "--config", "cluster.yaml"]);
        eprintln!(
            "--- install: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let output = self.dcos(&all);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn inventory(key: &Path, masters: &[u32], agents: &[(u32, &str)], extra: &str) -> String {
    let mut text = format!(
        "name: e2e\nssh:\n  key: {}\nstate_dir: ./state\n{extra}masters:\n",
        key.display()
    );
    for host in masters {
        text.push_str(&format!("  - address: {}\n", net::address(*host)));
    }
    text.push_str("agents:\n");
    for (host, node_extra) in agents {
        text.push_str(&format!(
            "  - address: {}\n{node_extra}",
            net::address(*host)
        ));
    }
    text
}

/// Tasks of `app` running, as `task list --json` shows them.
fn running(admin: &Admin, app: &str) -> Vec<Value> {
    running_via(admin, &[], app)
}

/// `running`, with `args` before the command (e.g. `--url` of a master).
fn running_via(admin: &Admin, args: &[&str], app: &str) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["task", "list"]);
    let tasks = admin.json(&all);
    let list = tasks
        .as_array()
        .cloned()
        .or_else(|| tasks["tasks"].as_array().cloned())
        .unwrap_or_default();
    list.into_iter()
        .filter(|t| t["appId"] == app && t["state"] == "TASK_RUNNING")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_command_installs_a_cluster_that_grows_drains_shrinks_and_uninstalls() {
    let testbed = Testbed::up(6, &[4, 5, 6]);
    let admin = Admin::new(&testbed);
    admin.write_inventory(&inventory(
        &testbed.key,
        &[1, 2, 3],
        &[(4, ""), (5, "    attributes:\n      rack: r2\n")],
        "",
    ));

    let first = admin.install();
    assert!(first.status.success());
    let (out, err) = (text(&first.stdout), text(&first.stderr));
    assert!(out.contains("cluster e2e is up"), "{out}");
    assert!(
        out.contains("dashboard   https://10.77.0.11:5050/"),
        "{out}"
    );
    for node in ["m1", "m2", "m3", "a1", "a2"] {
        assert!(
            err.contains(&format!("[{node:<8}] upload the binary")),
            "{node}: {err}"
        );
    }
    assert!(
        err.contains("masters: a leader elected by 3 masters"),
        "{err}"
    );
    assert!(err.contains("agents: 2 registered and active"), "{err}");
    // The preflight table came first, one row per node.
    assert!(out.contains("NODE  ROLE    ADDRESS"), "{out}");

    // The admin's cli.toml works; the cluster is what cluster.yaml says.
    let nodes = admin.json(&["node", "list"]);
    assert_eq!(nodes["masters"].as_array().unwrap().len(), 3);
    assert_eq!(
        nodes["masters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "leader")
            .count(),
        1
    );
    let agents = nodes["agents"].as_array().unwrap();
    assert_eq!(
        agents.iter().filter(|a| a["state"] == "active").count(),
        2,
        "{nodes}"
    );

    // Real systemd units, enabled; the CA key never left this machine.
    for host in 1..=5 {
        let unit = if host <= 3 {
            "dcos-rs-master"
        } else {
            "dcos-rs-agent"
        };
        assert_eq!(
            testbed.sh(
                host,
                &format!("systemctl is-enabled {unit}; systemctl is-active {unit}")
            ),
            "enabled\nactive\n"
        );
        let config = if host <= 3 {
            "master.toml"
        } else {
            "agent.toml"
        };
        let mut expected = vec![
            "ca.crt",
            "installed",
            config,
            "node.crt",
            "node.key",
            "tokens",
        ];
        expected.sort();
        let listed = testbed.sh(host, "ls /etc/dcos-rs");
        assert_eq!(listed.lines().collect::<Vec<_>>(), expected, "h{host}");
        assert_eq!(
            testbed.sh(host, "stat -c %a /etc/dcos-rs/node.key"),
            "600\n"
        );
    }
    assert!(admin.dir.join("state/ca/ca.key").exists());

    // An app deployed through the installed cluster runs on the installed agents.
    std::fs::write(admin.dir.join("web.json"), r#"{"id": "/web", "cmd": "sleep 100000", "cpus": 0.1, "mem": 32, "instances": 2, "constraints": [["hostname", "UNIQUE"]]}"#).unwrap();
    let deployed = admin.dcos(&["app", "deploy", "web.json"]);
    assert!(deployed.status.success(), "{}", text(&deployed.stderr));
    let web = wait_for(
        "2 tasks of /web running",
        Duration::from_secs(60),
        async || {
            let tasks = running(&admin, "/web");
            (tasks.len() == 2).then_some(tasks)
        },
    )
    .await;

    // A rerun changes nothing.
    let again = admin.install();
    assert!(again.status.success());
    let err = text(&again.stderr);
    assert_eq!(
        err.matches("everything in place ... skipped").count(),
        5,
        "{err}"
    );

    // Drift: a hand edit on a1 is put back, and only a1's agent restarts; its task lives on.
    let task_pid = |host| testbed.sh(host, "pgrep -f 'sleep 10000[0]'");
    let pid_before = task_pid(4);
    assert!(!pid_before.trim().is_empty());
    testbed.sh(4, "echo '# edited by hand' >> /etc/dcos-rs/agent.toml");
    let mended = admin.install();
    assert!(mended.status.success());
    let err = text(&mended.stderr);
    assert!(
        err.contains("[a1      ] write /etc/dcos-rs/agent.toml ... done"),
        "{err}"
    );
    assert!(
        err.contains("[a1      ] restart dcos-rs-agent ... done"),
        "{err}"
    );
    assert_eq!(
        err.matches("everything in place ... skipped").count(),
        4,
        "{err}"
    );
    assert!(!testbed
        .sh(4, "cat /etc/dcos-rs/agent.toml")
        .contains("edited by hand"));
    let ids = |tasks: &[Value]| {
        tasks
            .iter()
            .map(|t| t["id"].to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let after = wait_for(
        "both /web tasks still running",
        Duration::from_secs(30),
        async || {
            let tasks = running(&admin, "/web");
            (tasks.len() == 2).then_some(tasks)
        },
    )
    .await;
    assert_eq!(
        ids(&after),
        ids(&web),
        "the agent's restart must not replace its task"
    );
    // The very process: the restarted agent (registered again) adopted it.
    assert_eq!(task_pid(4), pid_before);
    wait_for("a1 registered again", Duration::from_secs(30), async || {
        let nodes = admin.json(&["node", "list"]);
        let a1 = nodes["agents"]
            .as_array()?
            .iter()
            .find(|a| a["url"] == "https://10.77.0.14:5051")?
            .clone();
        (a1["state"] == "active" && a1["tasks"] == 1).then_some(())
    })
    .await;
    // node add: a third agent over SSH, nothing copied by hand.
    let added = admin.dcos(&[
        "node",
        "add",
        "root@10.77.0.16",
        "--role",
        "agent",
        "--attr",
        "rack=r3",
        "--config",
        "cluster.yaml",
    ]);
    let (out, err) = (text(&added.stdout), text(&added.stderr));
    assert!(added.status.success(), "{out}{err}");
    assert!(
        out.contains("a3 (10.77.0.16) joined as an agent, active"),
        "{out}"
    );
    assert!(
        err.contains("[a3      ] start dcos-rs-agent ... done"),
        "{err}"
    );
    let nodes = admin.json(&["node", "list"]);
    assert_eq!(
        nodes["agents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["state"] == "active")
            .count(),
        3,
        "{nodes}"
    );
    // It is part of the cluster now: a rerun of the install knows it.
    let again = admin.install();
    assert!(again.status.success());
    assert!(text(&again.stderr).contains("[a3      ] everything in place ... skipped"));

    // Drain a1: its task moves (to a3: a2 holds the other one, UNIQUE hostname); remove it,
    // which uninstalls it over SSH.
    let drained = admin.dcos(&["node", "drain", "10.77.0.14", "--deadline", "1m"]);
    assert!(drained.status.success(), "{}", text(&drained.stderr));
    let moved = wait_for("/web on a2 and a3", Duration::from_secs(60), async || {
        let tasks = running(&admin, "/web");
        let hosts: std::collections::BTreeSet<String> = tasks
            .iter()
            .map(|t| t["host"].as_str().unwrap_or_default().to_string())
            .collect();
        (tasks.len() == 2 && !hosts.contains("h4") && !hosts.contains("10.77.0.14"))
            .then_some(hosts)
    })
    .await;
    eprintln!("/web now on {moved:?}");
    let removed = admin.dcos(&["node", "remove", "10.77.0.14", "--config", "cluster.yaml"]);
    assert!(
        removed.status.success(),
        "{}{}",
        text(&removed.stdout),
        text(&removed.stderr)
    );
    assert_eq!(testbed.exec(4, "test -e /etc/dcos-rs || test -e /usr/local/bin/dcos-rs || test -e /etc/systemd/system/dcos-rs-agent.service").status.code(), Some(1));
    let nodes = admin.json(&["node", "list"]);
    assert!(
        !nodes["agents"].to_string().contains("10.77.0.14"),
        "{nodes}"
    );

    // cluster.yaml forgets h4 (a1); the others keep their names (pinned in the state dir).
    admin.write_inventory(&inventory(
        &testbed.key,
        &[1, 2, 3],
        &[(5, "    attributes:\n      rack: r2\n")],
        "",
    ));
    let rerun = admin.install();
    assert!(rerun.status.success());
    let err = text(&rerun.stderr);
    assert!(
        err.contains("[a2      ] everything in place ... skipped"),
        "{err}"
    );
    assert!(
        err.contains("[a3      ] everything in place ... skipped"),
        "{err}"
    );

    // node add of a master: h4, uninstalled by its removal, joins as m4 (learner, then voter).
    let master = admin.dcos(&[
        "node",
        "add",
        "root@10.77.0.14",
        "--role",
        "master",
        "--config",
        "cluster.yaml",
    ]);
    let (out, err) = (text(&master.stdout), text(&master.stderr));
    assert!(master.status.success(), "{out}{err}");
    assert!(
        out.contains("m4 (10.77.0.14) joined as master 4, a voter"),
        "{out}"
    );
    let nodes = admin.json(&["node", "list"]);
    let masters = nodes["masters"].as_array().unwrap();
    assert_eq!(masters.len(), 4, "{nodes}");
    assert!(
        masters
            .iter()
            .all(|m| m["role"] == "leader" || m["role"] == "follower"),
        "{nodes}"
    );
    // node remove of that master: out of the membership, its certificate revoked, uninstalled.
    let removed = admin.dcos(&[
        "node",
        "remove",
        "m4",
        "--master",
        "--config",
        "cluster.yaml",
    ]);
    let (out, err) = (text(&removed.stdout), text(&removed.stderr));
    assert!(removed.status.success(), "{out}{err}");
    assert!(err.contains("revoked m4's certificate"), "{err}");
    assert_eq!(
        admin.json(&["node", "list"])["masters"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let backup = admin.dcos(&["cluster", "backup", "after-m4.json"]);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(admin.dir.join("after-m4.json")).unwrap()).unwrap();
    let revoked = saved["state"]["revoked_certificates"]
        .as_array()
        .map(|a| a.len());
    assert_eq!(revoked, Some(2), "a1's and m4's: {}", saved["state"]);
    assert_eq!(
        testbed.exec(4, "test -e /etc/dcos-rs").status.code(),
        Some(1)
    );

    // Uninstall: every node back to before, tasks killed, the state dir kept.
    let refused = admin.dcos(&["uninstall", "--config", "cluster.yaml"]);
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("give --yes"));
    let uninstalled = admin.dcos(&["uninstall", "--config", "cluster.yaml", "--yes"]);
    assert!(
        uninstalled.status.success(),
        "{}",
        text(&uninstalled.stderr)
    );
    for host in 1..=6 {
        let leftovers = testbed.sh(host, "ls /etc/dcos-rs /usr/local/bin/dcos-rs /etc/systemd/system/dcos-rs-* /var/lib/dcos-rs/* 2>/dev/null; pgrep -f 'sleep 10000[0]' || true");
        assert_eq!(leftovers, "", "h{host}");
    }
    assert!(admin.dir.join("state/ca/ca.key").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_names_node_and_cause_of_each_failure_and_a_rerun_completes_once_fixed() {
    let testbed = Testbed::up(5, &[2, 3, 4, 5]);
    let admin = Admin::new(&testbed);
    let wrong_key = admin.dir.join("wrong_key");
    let made = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            wrong_key.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(made.success());
    let broken = |key: &Path| {
        inventory(
            &testbed.key,
            &[1],
            &[
                (2, ""),
                (3, ""),
                (4, &format!("    ssh:\n      key: {}\n", key.display())),
                (5, ""),
            ],
            "timeouts:\n  connect_s: 5\n",
        )
    };

    // h2: port 5051 taken; h3: a 1 MiB data disk; h4: a key it does not accept; h5: no sshd.
    testbed.sh(2, "systemd-run --unit=squat perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(LocalAddr => \"10.77.0.12:5051\", Listen => 1, ReuseAddr => 1) or die; sleep 100000'");
    testbed.sh(
        3,
        "mkdir -p /var/lib/dcos-rs && mount -t tmpfs -o size=1m tmpfs /var/lib/dcos-rs",
    );
    testbed.sh(
        5,
        "systemctl stop ssh.service ssh.socket 2>/dev/null; systemctl stop ssh.service",
    );
    admin.write_inventory(&broken(&wrong_key));
    wait_for(
        "the squatter listening on h2",
        Duration::from_secs(10),
        async || {
            testbed
                .sh(2, "cat /proc/net/tcp")
                .contains(":13BB 00000000:0000 0A")
                .then_some(())
        },
    )
    .await;

    let failed = admin.install();
    assert!(!failed.status.success());
    let err = text(&failed.stderr);
    let out = text(&failed.stdout);
    assert!(
        err.contains("preflight failed (4 problems); nothing was changed on any node"),
        "{err}"
    );
    assert!(
        err.contains("a1 (10.77.0.12) ports: port 5051 is in use by another program"),
        "{err}"
    );
    assert!(
        err.contains("a2 (10.77.0.13) disk: 1 MiB free at /var/lib/dcos-rs"),
        "{err}"
    );
    assert!(
        err.contains("a3 (root@10.77.0.14:22) ssh: root@10.77.0.14 refused the key"),
        "{err}"
    );
    assert!(
        err.contains(
            "a4 (root@10.77.0.15:22) ssh: cannot connect to 10.77.0.15:22: Connection refused"
        ),
        "{err}"
    );
    assert!(out.contains("ssh failed"), "{out}");
    // Nothing was touched on the reachable nodes.
    for host in [1, 2, 3] {
        assert_eq!(
            testbed.exec(host, "test -e /etc/dcos-rs").status.code(),
            Some(1),
            "h{host}"
        );
    }

    // Each cause fixed: the same command completes.
    testbed.sh(2, "systemctl stop squat");
    testbed.sh(3, "umount /var/lib/dcos-rs");
    testbed.sh(5, "systemctl start ssh.service");
    admin.write_inventory(&broken(&testbed.key));
    let fixed = admin.install();
    assert!(fixed.status.success(), "{}", text(&fixed.stderr));
    assert!(text(&fixed.stderr).contains("agents: 4 registered and active"));
}

/// A task answering HTTP on its first port, with what the nspawn root has (perl-base).
const PERL_HTTP: &str = r#"perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => $ENV{PORT0}, Listen => 64, ReuseAddr => 1) or die "listen: $!"; while ($c = $s->accept) { <$c>; print $c "HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n"; close $c }'"#;

/// One GET to `address`: true if it answered 200.
async fn http_ok(address: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        answer.starts_with(b"HTTP/1.0 200").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_upgrade_keeps_a_service_answering_then_backup_wipe_restore_and_quorum_loss_recovery(
) {
    let testbed = Testbed::up(5, &[4, 5]);
    let admin = Admin::new(&testbed);
    admin.write_inventory(&inventory(
        &testbed.key,
        &[1, 2, 3],
        &[(4, ""), (5, "")],
        "timeouts:\n  quorum_s: 15\n",
    ));
    assert!(admin.install().status.success());
    let app = serde_json::json!({
        "id": "/echo", "cmd": PERL_HTTP, "cpus": 0.1, "mem": 32, "instances": 2,
        "portDefinitions": [{"port": 0}], "constraints": [["hostname", "UNIQUE"]]
    });
    std::fs::write(admin.dir.join("echo.json"), app.to_string()).unwrap();
    assert!(admin.dcos(&["app", "deploy", "echo.json"]).status.success());
    let tasks = wait_for(
        "2 /echo tasks answering",
        Duration::from_secs(60),
        async || {
            let tasks = running(&admin, "/echo");
            let mut endpoints = Vec::new();
            for task in &tasks {
                let host = task["host"].as_str()?;
                let address = if host.starts_with("10.") {
                    host.to_string()
                } else {
                    net::address(host.trim_start_matches('h').parse().ok()?)
                };
                let endpoint = format!("{address}:{}", task["ports"][0].as_u64()?);
                if !http_ok(&endpoint).await {
                    return None;
                }
                endpoints.push(endpoint);
            }
            (endpoints.len() == 2).then_some((tasks, endpoints))
        },
    )
    .await;
    let (before, endpoints) = tasks;

    // The new build: the same program with other bytes, so another sha256 and version.
    let new_binary = admin.dir.join("dcos-rs-new");
    let mut bytes = std::fs::read(&admin.binary).unwrap();
    bytes.extend_from_slice(b"\0e2e: a rebuilt dcos-rs\0");
    std::fs::write(&new_binary, &bytes).unwrap();
    std::fs::set_permissions(
        &new_binary,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let new_version = text(
        &Command::new(&new_binary)
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .trim_start_matches("dcos-rs ")
    .to_string();
    let old_version = text(&admin.dcos(&["--version"]).stdout)
        .trim()
        .trim_start_matches("dcos-rs ")
        .to_string();
    assert_ne!(new_version, old_version);

    // A build that does not start: the upgrade stops at its first master, naming it, and the
    // cluster goes on with the other two.
    let broken = admin.dir.join("dcos-rs-broken");
    std::fs::write(
        &broken,
        "#!/bin/sh\n[ \"$1\" = --version ] && { echo 'dcos-rs 0.1.0+broken'; exit 0; }\necho 'this build is broken' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let failed = admin.dcos(&[
        "cluster",
        "upgrade",
        "--binary",
        broken.to_str().unwrap(),
        "--config",
        "cluster.yaml",
    ]);
    let err = text(&failed.stderr);
    assert!(!failed.status.success(), "{err}");
    assert!(err.contains("step \"health gate\" failed"), "{err}");
    assert!(
        err.contains("this build is broken"),
        "the node's log: {err}"
    );
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(
        err.matches("upload the binary ... done").count(),
        1,
        "one node touched: {err}"
    );
    // The CLI's master may be the broken one: ask one the upgrade did not touch.
    let healthy = (1..=3)
        .map(net::address)
        .find(|a| !err.contains(&format!("({a})")))
        .unwrap();
    let url = format!("https://{healthy}:5050");
    assert_eq!(running_via(&admin, &["--url", &url], "/echo").len(), 2);
    for endpoint in &endpoints {
        assert!(http_ok(endpoint).await);
    }

    // Sample the service all along: every request must be answered.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for endpoint in &endpoints {
                    sent += 1;
                    if !http_ok(endpoint).await {
                        failed.push(endpoint.clone());
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (sent, failed)
        })
    };
    let upgraded = admin.dcos(&[
        "cluster",
        "upgrade",
        "--binary",
        new_binary.to_str().unwrap(),
        "--config",
        "cluster.yaml",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failed) = sampler.await.unwrap();
    let (out, err) = (text(&upgraded.stdout), text(&upgraded.stderr));
    eprintln!(
        "--- upgrade:\n{out}{err}\nservice: {sent} requests, {} failed",
        failed.len()
    );
    assert!(upgraded.status.success(), "{out}{err}");
    assert!(
        out.contains(&format!("runs {new_version}: 5 node(s) upgraded")),
        "{out}"
    );
    assert!(err.contains("leadership handed to"), "{err}");
    assert!(sent > 20, "{sent}");
    assert_eq!(
        failed,
        Vec::<String>::new(),
        "the service must answer all along"
    );

    // Every node on the new build, the same tasks (agents' restarts kept them).
    let nodes = admin.json(&["node", "list"]);
    for agent in nodes["agents"].as_array().unwrap() {
        assert_eq!(agent["version"], new_version.as_str(), "{agent}");
    }
    for host in 1..=3 {
        let client = dcos_rs::cli::client::Client::with_auth(
            &format!("https://{}:5050", net::address(host)),
            Some(&toml_token(&admin)),
            Some(&admin.dir.join("state/ca/ca.crt")),
        )
        .unwrap();
        let view: Value = client.get("/cluster/v1/nodes").await.unwrap();
        let me = view["masters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["version"].is_string())
            .cloned()
            .unwrap();
        assert_eq!(
            me["version"],
            new_version.as_str(),
            "master on h{host}: {view}"
        );
    }
    // Every master recorded its new build in the cluster state (protocol gate).
    wait_for(
        "every master's new build recorded",
        Duration::from_secs(30),
        async || {
            let nodes = admin.json(&["node", "list"]);
            let masters = nodes["masters"].as_array()?.clone();
            (masters.len() == 3 && masters.iter().all(|m| m["version"] == new_version.as_str()))
                .then_some(())
        },
    )
    .await;
    let after = running(&admin, "/echo");
    let ids = |tasks: &[Value]| {
        tasks
            .iter()
            .map(|t| t["id"].to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(ids(&after), ids(&before));

    // A second run has nothing left to do.
    let again = admin.dcos(&[
        "cluster",
        "upgrade",
        "--binary",
        new_binary.to_str().unwrap(),
        "--config",
        "cluster.yaml",
    ]);
    assert!(again.status.success());
    assert!(text(&again.stdout).contains("runs ") && text(&again.stdout).contains("already"));
    // Backup, wipe (uninstall with the data, install afresh), restore: /echo comes back.
    let backup = admin.dcos(&[
        "cluster",
        "backup",
        "backup.json",
        "--config",
        "cluster.yaml",
    ]);
    assert!(backup.status.success(), "{}", text(&backup.stderr));
    let saved: Value =
        serde_json::from_slice(&std::fs::read(admin.dir.join("backup.json")).unwrap()).unwrap();
    assert!(saved["caCertificate"]
        .as_str()
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    assert!(saved["tokens"].as_str().unwrap().contains("sha256:"));
    assert!(
        !saved.to_string().contains("PRIVATE KEY"),
        "never a key in a backup"
    );
    assert!(
        saved["state"]["services"]["apps"]["/echo"].is_object(),
        "{}",
        saved["state"]
    );
    assert!(
        text(&backup.stdout).contains("1 apps"),
        "{}",
        text(&backup.stdout)
    );
    wipe_and_restore(&admin, "backup.json").await;

    // Quorum lost for good: two of three masters gone with their data. The survivor still
    // answers reads: its backup restores into a new cluster.
    for host in [2, 3] {
        testbed.sh(
            host,
            "systemctl stop dcos-rs-master && rm -rf /var/lib/dcos-rs/master",
        );
    }
    let survivor = admin.dcos(&[
        "--url",
        "https://10.77.0.11:5050",
        "cluster",
        "backup",
        "survivor.json",
    ]);
    assert!(survivor.status.success(), "{}", text(&survivor.stderr));
    assert!(
        text(&survivor.stdout).contains("1 apps"),
        "{}",
        text(&survivor.stdout)
    );
    wipe_and_restore(&admin, "survivor.json").await;
}

/// Uninstalls the cluster with its data, installs it afresh, restores `file` and waits for
/// /echo's two instances.
async fn wipe_and_restore(admin: &Admin, file: &str) {
    let wiped = admin.dcos(&["uninstall", "--config", "cluster.yaml", "--yes"]);
    assert!(wiped.status.success(), "{}", text(&wiped.stderr));
    assert!(admin.install().status.success());
    // Nothing of the old cluster is left: no app at all.
    let apps = admin.json(&["app", "list"]);
    assert!(
        apps.as_array()
            .map(|a| a.is_empty())
            .unwrap_or_else(|| apps["apps"].as_array().is_some_and(|a| a.is_empty())),
        "{apps}"
    );
    let restored = admin.dcos(&["cluster", "restore", file]);
    assert!(restored.status.success(), "{}", text(&restored.stderr));
    assert!(
        text(&restored.stdout).contains("1 apps"),
        "{}",
        text(&restored.stdout)
    );
    wait_for(
        "/echo restored and running",
        Duration::from_secs(60),
        async || (running(admin, "/echo").len() == 2).then_some(()),
    )
    .await;
    // A second restore over it must be asked to replace.
    let again = admin.dcos(&["cluster", "restore", file]);
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("replace"),
        "{}",
        text(&again.stderr)
    );
}

fn toml_token(admin: &Admin) -> String {
    let text = std::fs::read_to_string(admin.dir.join("state/cli.toml")).unwrap();
    let table: toml::Table = toml::from_str(&text).unwrap();
    table["token"].as_str().unwrap().to_string()
}
