//! Hosts with systemd and sshd for the installer's tests: each network namespace of e2e/net.rs
//! boots a Debian 12 root with `systemd-nspawn --boot` (e2e/testbed/nspawn-host.sh), so the
//! installer meets real sshd, real systemd units and real `systemctl`. The root is built once
//! per machine (e2e/testbed/nsbase.sh, mmdebstrap) under `CACHE`, with the harness's SSH key.
//!
//! nspawn mounts the cgroup v1 controllers read-only inside its containers; a real host has
//! them writable, and the agent needs them to limit its tasks. Agent hosts get them writable
//! once booted (`mount -o remount,bind,rw` in the container's mount namespace). Tasks' cgroups
//! are then made in the machine's own hierarchies, as on a real host.

use crate::net::{self, Net};
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The root and the SSH key, kept between runs on this machine.
const CACHE: &str = "/var/cache/dcos-rs-e2e";
const CONTROLLERS: [&str; 8] = [
    "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "freezer", "devices",
];

pub struct Testbed {
    hosts: BTreeMap<u32, Child>,
    pub dir: TempDir,
    /// The private key root logs in with on every host.
    pub key: PathBuf,
    net: Option<Net>,
    _one_at_a_time: std::fs::File,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("e2e/testbed")
        .join(name)
}

fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Testbed {
    /// Hosts 1..=count booted, sshd answering on each; `agents` get writable cgroups.
    pub fn up(count: u32, agents: &[u32]) -> Testbed {
        let guard = crate::cluster::one_at_a_time();
        std::fs::create_dir_all(CACHE).unwrap();
        let key = Path::new(CACHE).join("id_ed25519");
        if !key.exists() {
            run(
                "ssh-keygen",
                &[
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "dcos-rs-e2e",
                    "-f",
                    key.to_str().unwrap(),
                ],
            );
        }
        let base = Path::new(CACHE).join("nsbase");
        let started = Instant::now();
        run(
            script("nsbase.sh").to_str().unwrap(),
            &[base.to_str().unwrap(), &format!("{}.pub", key.display())],
        );
        eprintln!(
            "testbed: Debian root ready ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        let net = Net::up(count);
        let dir = tempfile::Builder::new()
            .prefix("dcos-e2e-testbed")
            .tempdir()
            .unwrap();
        let mut testbed = Testbed {
            hosts: BTreeMap::new(),
            dir,
            key,
            net: Some(net),
            _one_at_a_time: guard,
        };
        for host in 1..=count {
            let work = testbed.dir.path().join(format!("h{host}"));
            std::fs::create_dir_all(&work).unwrap();
            let log =
                std::fs::File::create(testbed.dir.path().join(format!("h{host}.log"))).unwrap();
            let child = Command::new(script("nspawn-host.sh"))
                .args([
                    &host.to_string(),
                    &net::namespace(host),
                    base.to_str().unwrap(),
                    work.to_str().unwrap(),
                ])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap();
            testbed.hosts.insert(host, child);
        }
        for host in 1..=count {
            testbed.wait_for_sshd(host);
        }
        for &host in agents {
            let init = testbed.init_pid(host);
            for controller in CONTROLLERS {
                let path = format!("/sys/fs/cgroup/{controller}");
                if Path::new(&path).is_dir() {
                    run(
                        "nsenter",
                        &[
                            "-t",
                            &init.to_string(),
                            "-m",
                            "mount",
                            "-o",
                            "remount,bind,rw",
                            &path,
                        ],
                    );
                }
            }
        }
        eprintln!(
            "testbed: {count} hosts booted with sshd ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
        testbed
    }

    fn wait_for_sshd(&self, host: u32) {
        let address: std::net::SocketAddr = format!("{}:22", net::address(host)).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            // The banner, not just the port: sshd answers once its host key exists.
            if let Ok(mut stream) =
                std::net::TcpStream::connect_timeout(&address, Duration::from_millis(500))
            {
                use std::io::Read;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut banner = [0u8; 4];
                if stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-" {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "host {host}: no sshd within 60 s; console:\n{}",
                self.console(host)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The console output of `host` (systemd's boot messages).
    pub fn console(&self, host: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("h{host}.log"))).unwrap_or_default()
    }

    /// The pid (in this namespace) of systemd, pid 1 of `host`'s container.
    fn init_pid(&self, host: u32) -> u32 {
        let root = self.hosts[&host].id();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(pid) = descendants(root)
                .into_iter()
                .find(|p| comm(*p) == "systemd")
            {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "host {host}: no systemd in its container"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `command` with sh inside `host` (every namespace of its container), as root,
    /// without SSH: to break and mend what the installer must cope with.
    pub fn exec(&self, host: u32, command: &str) -> Output {
        let init = self.init_pid(host).to_string();
        Command::new("nsenter")
            .args([
                "-t", &init, "-m", "-u", "-i", "-n", "-p", "--", "sh", "-c", command,
            ])
            .output()
            .unwrap()
    }

    /// `exec`, which must succeed; its stdout.
    pub fn sh(&self, host: u32, command: &str) -> String {
        let output = self.exec(host, command);
        assert!(
            output.status.success(),
            "h{host}: {command}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // SIGTERM to systemd-nspawn powers its container off cleanly (every process in it
        // ends); the wrapper then exits.
        for child in self.hosts.values() {
            if let Some(nspawn) = descendants(child.id())
                .into_iter()
                .find(|p| comm(*p) == "systemd-nspawn")
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(nspawn as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        for (host, child) in &mut self.hosts {
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if child.try_wait().ok().flatten().is_none() {
                eprintln!("testbed: h{host} did not power off within 20 s: killed");
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
            }
            for hierarchy in ["systemd", "unified"] {
                remove_empty_tree(Path::new(&format!(
                    "/sys/fs/cgroup/{hierarchy}/dcos-e2e-h{host}"
                )));
            }
        }
        // The installed agents' task cgroups, made in the machine's own v1 hierarchies
        // (`dcos-rs`, agent.toml's default cgroup_parent): empty once the hosts are off. Only
        // empty groups go, so nothing another test runs is touched.
        for controller in CONTROLLERS {
            let parent = format!("/sys/fs/cgroup/{controller}/dcos-rs");
            if let Ok(entries) = std::fs::read_dir(&parent) {
                for entry in entries
                    .flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                {
                    remove_empty_tree(&entry.path());
                }
            }
        }
        self.net.take();
    }
}

/// Every process below `root`, parents before children.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let Some(ppid) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        else {
            continue;
        };
        parents.entry(ppid).or_default().push(pid);
    }
    let mut found = Vec::new();
    let mut queue = std::collections::VecDeque::from([root]);
    while let Some(pid) = queue.pop_front() {
        for child in parents.get(&pid).cloned().unwrap_or_default() {
            found.push(child);
            queue.push_back(child);
        }
    }
    found
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// rmdir of a cgroup tree, deepest first (only empty groups go).
fn remove_empty_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_empty_tree(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}
