//! `make bench-install`: `dcos-rs install` of 3 masters and 2 agents from scratch, then a
//! rolling `cluster upgrade` of the same 5 nodes (output format: ARCHITECTURE.md, Benchmarks).
//!
//! The nodes are the e2e's nspawn hosts (systemd and sshd in network namespaces,
//! e2e/testbed.rs); booting them is not measured. The binary installed is `DCOS_RS_BIN` (the
//! static release build `make bench-install` makes), uploaded to each node over SSH as a real
//! install does. The upgrade's "new build" is that binary with bytes appended (another
//! sha256, so another version; a rebuild would take minutes here), and it waits, node by
//! node, for each to be healthy on it.
//!
//! Needs root (namespaces, nspawn), systemd-container, mmdebstrap and Debian's mirror the
//! first time (the root is cached in /var/cache/dcos-rs-e2e).

#[path = "../e2e/net.rs"]
#[allow(dead_code)]
mod net;

#[path = "../e2e/cluster.rs"]
#[allow(dead_code)]
mod cluster;

#[path = "../e2e/testbed.rs"]
#[allow(dead_code)]
mod testbed;

use std::process::Command;
use std::time::Instant;

fn run(binary: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> f64 {
    let started = Instant::now();
    let output = Command::new(binary)
        .args(args)
        .current_dir(dir)
        .env("HOME", dir)
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .unwrap();
    let seconds = started.elapsed().as_secs_f64();
    assert!(
        output.status.success(),
        "{args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    seconds
}

fn main() {
    let source = std::env::var("DCOS_RS_BIN").unwrap_or_else(|_| cluster::BIN.to_string());
    let testbed = testbed::Testbed::up(5, &[4, 5]);
    let dir = testbed.dir.path().join("admin");
    std::fs::create_dir_all(&dir).unwrap();
    let binary = dir.join("dcos-rs");
    std::fs::copy(&source, &binary).unwrap();
    let size_mb = std::fs::metadata(&binary).unwrap().len() as f64 / 1e6;
    let mut yaml = format!(
        "name: bench\nssh:\n  key: {}\nstate_dir: ./state\nmasters:\n",
        testbed.key.display()
    );
    for host in 1..=3 {
        yaml.push_str(&format!("  - address: {}\n", net::address(host)));
    }
    yaml.push_str("agents:\n");
    for host in 4..=5 {
        yaml.push_str(&format!("  - address: {}\n", net::address(host)));
    }
    std::fs::write(dir.join("cluster.yaml"), yaml).unwrap();

    let install = run(&binary, &dir, &["install", "--config", "cluster.yaml"]);
    println!("BENCH install_5_nodes {install:.1} s binary={size_mb:.1}MB");

    let new = dir.join("dcos-rs-new");
    let mut bytes = std::fs::read(&binary).unwrap();
    bytes.extend_from_slice(b"\0bench: a rebuilt dcos-rs\0");
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let upgrade = run(
        &binary,
        &dir,
        &[
            "cluster",
            "upgrade",
            "--binary",
            new.to_str().unwrap(),
            "--config",
            "cluster.yaml",
        ],
    );
    println!("BENCH upgrade_5_nodes {upgrade:.1} s");
}
