//! A cluster of real `dcos-rs master` and `dcos-rs agent` processes, one per host of a `Net`,
//! set up the way an admin would: `dcos-rs cluster init-ca` / `issue-cert`, a config file
//! per node, HTTPS with mutual TLS between them. The test process talks to the masters' API
//! as an admin over the bridge, and can kill (-9), pause (SIGSTOP), resume, restart and
//! partition hosts.
//!
//! Masters use the Raft defaults (the failover claim is about them); agents go unreachable
//! after `UNREACHABLE_TIMEOUT_MS` instead of the default 15 s so the tests stay short
//! (`Cluster::with_default_timeouts` keeps the defaults).

use crate::net::{self, Net};
use dcos_rs::tls::{self, NodeClient, TlsFiles};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_dcos-rs");
pub const UNREACHABLE_TIMEOUT_MS: u64 = 3_000;
pub const AGENT_HEARTBEAT_MS: u64 = 500;
const PORT: u16 = 5050;
const AGENT_PORT: u16 = 5051;
/// Every master's plain-HTTP listener for Mesos frameworks (`[mesos] scheduler_http_listen`).
const SCHEDULER_PORT: u16 = 5052;
const BODY_MAX: usize = 16 << 20;

/// One cluster at a time on this machine, across test processes too: the hosts, addresses
/// and bridge have fixed names. A `flock` on this file, held by the `Cluster`.
const LOCK_FILE: &str = "/tmp/dcos-rs-e2e.lock";

/// Waits for and holds the machine-wide e2e lock (released when the file is dropped).
pub fn one_at_a_time() -> std::fs::File {
    let guard = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap();
    // SAFETY: flock on an fd we own; released when the file is closed.
    let locked = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&guard), libc::LOCK_EX) };
    assert_eq!(
        locked,
        0,
        "locking {LOCK_FILE}: {}",
        std::io::Error::last_os_error()
    );
    guard
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Master,
    Agent,
}

struct Node {
    kind: Kind,
    config: PathBuf,
    /// After `--config`: agents get their masters on the command line (`--masters`).
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct Cluster {
    pub dir: TempDir,
    net: Option<Net>,
    nodes: BTreeMap<u32, Node>,
    admin: NodeClient,
    /// The admin token `cluster setup` made; every API call carries it.
    token: String,
    /// Short test timeouts (`UNREACHABLE_TIMEOUT_MS`, `AGENT_HEARTBEAT_MS`) or the built-in
    /// defaults (`Cluster::with_default_timeouts`, for the benchmarks).
    test_timeouts: bool,
    cgroup_tag: String,
    _one_at_a_time: std::fs::File,
}

pub fn master_url(host: u32) -> String {
    format!("https://{}:{PORT}", net::address(host))
}

/// `host:port` of a master's plain-HTTP scheduler listener, as pymesos takes a master.
pub fn scheduler_addr(host: u32) -> String {
    format!("{}:{SCHEDULER_PORT}", net::address(host))
}

pub fn agent_url(host: u32) -> String {
    format!("https://{}:{AGENT_PORT}", net::address(host))
}

impl Cluster {
    /// `hosts` empty hosts with a cluster CA and an admin certificate; nodes started later
    /// use short test timeouts.
    pub fn new(hosts: u32) -> Cluster {
        Self::create(hosts, true)
    }

    /// `new`, but nodes keep the built-in agent timeouts (unreachable after 15 s, heartbeat
    /// every 2 s): for figures "at default settings".
    #[allow(dead_code)] // for the benchmarks
    pub fn with_default_timeouts(hosts: u32) -> Cluster {
        Self::create(hosts, false)
    }

    fn create(hosts: u32, test_timeouts: bool) -> Cluster {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the e2e tests create network namespaces: run them as root (CI does)"
        );
        let guard = one_at_a_time();
        let net = Net::up(hosts);
        let dir = TempDir::new().unwrap();
        // The CA, an admin token (its hash in ca/tokens) and the CLI's cli.toml.
        dcos(
            dir.path(),
            &[
                "cluster",
                "setup",
                "--ca-dir",
                "ca",
                "--url",
                &master_url(1),
                "--cli-config",
                "cli.toml",
            ],
        );
        let cli: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.path().join("cli.toml")).unwrap()).unwrap();
        let token = cli["token"].as_str().unwrap().to_string();
        issue(dir.path(), "admin", "admin", None);
        let files = TlsFiles {
            ca: dir.path().join("ca/ca.crt"),
            cert: dir.path().join("admin/admin.crt"),
            key: dir.path().join("admin/admin.key"),
        };
        let admin = NodeClient::new(tls::client_config(&files).unwrap());
        Cluster {
            cgroup_tag: dcos_rs::link::random_id()[..8].to_string(),
            dir,
            net: Some(net),
            nodes: BTreeMap::new(),
            admin,
            token,
            test_timeouts,
            _one_at_a_time: guard,
        }
    }

    /// The admin token every API call carries (`Authorization: Bearer`).
    #[allow(dead_code)] // for the benchmarks
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The cluster CA and the admin's certificate and key, for clients of one's own.
    #[allow(dead_code)] // for the benchmarks
    pub fn admin_tls(&self) -> TlsFiles {
        let dir = self.dir.path();
        TlsFiles {
            ca: dir.join("ca/ca.crt"),
            cert: dir.join("admin/admin.crt"),
            key: dir.join("admin/admin.key"),
        }
    }

    pub fn net(&self) -> &Net {
        self.net.as_ref().unwrap()
    }

    /// Starts master `host` (its Raft id is the host number). `initial` is the initial
    /// membership for a new cluster, empty for a master that will be added at runtime.
    pub async fn start_master(&mut self, host: u32, initial: &[u32]) {
        let name = format!("m{host}");
        let home = issue(self.dir.path(), "master", &name, Some(host));
        let peers: Vec<String> = initial
            .iter()
            .map(|i| format!("{{ id = {i}, url = \"{}\" }}", master_url(*i)))
            .collect();
        let config = format!(
            r#"node_id = {host}
listen = "{ip}:{PORT}"
advertise_url = "{url}"
data_dir = "data"
initial_masters = [{peers}]
[tls]
ca = "../ca/ca.crt"
cert = "{name}.crt"
key = "{name}.key"
{agents}[auth]
tokens_file = "../ca/tokens"
[mesos]
scheduler_http_listen = "{ip}:{SCHEDULER_PORT}"
"#,
            agents = if self.test_timeouts {
                format!("[agents]\nunreachable_timeout_ms = {UNREACHABLE_TIMEOUT_MS}\n")
            } else {
                String::new()
            },
            ip = net::address(host),
            url = master_url(host),
            peers = peers.join(", "),
        );
        std::fs::write(home.join("master.toml"), config).unwrap();
        self.add_node(host, Kind::Master, home.join("master.toml"), Vec::new())
            .await;
    }

    /// Starts an agent on `host` that knows the masters on `masters`.
    pub async fn start_agent(&mut self, host: u32, masters: &[u32]) {
        let name = format!("a{host}");
        let home = issue(self.dir.path(), "agent", &name, Some(host));
        let urls: Vec<String> = masters.iter().map(|m| master_url(*m)).collect();
        let config = format!(
            r#"listen = "{ip}:{AGENT_PORT}"
advertise_url = "{url}"
work_dir = "work"
{heartbeat}cpus = 2.0
mem_mib = 1024
cgroup_parent = "{cgroup}"
[tls]
ca = "../ca/ca.crt"
cert = "{name}.crt"
key = "{name}.key"
[auth]
tokens_file = "../ca/tokens"
"#,
            ip = net::address(host),
            url = agent_url(host),
            heartbeat = if self.test_timeouts {
                format!("heartbeat_ms = {AGENT_HEARTBEAT_MS}\n")
            } else {
                String::new()
            },
            cgroup = self.cgroup_parent(host),
        );
        std::fs::write(home.join("agent.toml"), config).unwrap();
        let args = vec!["--masters".to_string(), urls.join(",")];
        self.add_node(host, Kind::Agent, home.join("agent.toml"), args)
            .await;
    }

    fn cgroup_parent(&self, host: u32) -> String {
        format!("dcos-e2e-{}-a{host}", self.cgroup_tag)
    }

    async fn add_node(&mut self, host: u32, kind: Kind, config: PathBuf, args: Vec<String>) {
        let log = self.dir.path().join(format!(
            "{}{host}.log",
            if kind == Kind::Master { "m" } else { "a" }
        ));
        self.nodes.insert(
            host,
            Node {
                kind,
                config,
                args,
                log,
                child: None,
            },
        );
        self.start(host).await;
    }

    /// (Re)starts the process of `host` with its existing config and data, and waits until
    /// its HTTPS port answers.
    pub async fn start(&mut self, host: u32) {
        self.spawn(host);
        let url = match self.nodes[&host].kind {
            Kind::Master => master_url(host),
            Kind::Agent => agent_url(host),
        };
        let limit = Duration::from_secs(1);
        wait_for(
            &format!("{url} to answer"),
            Duration::from_secs(20),
            async || {
                let answer = self
                    .try_call(&url, Method::GET, "/health", None, limit)
                    .await;
                answer.ok().filter(|a| a.status == StatusCode::OK)
            },
        )
        .await;
    }

    fn spawn(&mut self, host: u32) {
        let namespace = self.net().namespace_file(host);
        let node = self.nodes.get_mut(&host).expect("a node on this host");
        assert!(node.child.is_none(), "host {host} already runs");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .unwrap();
        let mut command = Command::new(BIN);
        command
            .arg(if node.kind == Kind::Master {
                "master"
            } else {
                "agent"
            })
            .arg("--config")
            .arg(&node.config)
            .args(&node.args)
            .env("DCOS_LOG", "warn,dcos_rs=info,openraft=error")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        net::enter_before_exec(&mut command, &namespace);
        node.child = Some(command.spawn().expect("starting dcos-rs"));
    }

    pub fn pid(&self, host: u32) -> i32 {
        self.nodes[&host].child.as_ref().expect("running").id() as i32
    }

    /// SIGKILL, as a crash or a pulled plug would end it; waits until it is gone.
    pub fn kill(&mut self, host: u32) {
        let mut child = self.nodes.get_mut(&host).unwrap().child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM and wait: the clean stop of an operator.
    pub fn stop(&mut self, host: u32) {
        let mut child = self.nodes.get_mut(&host).unwrap().child.take().unwrap();
        signal(child.id() as i32, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "host {host} ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The real CLI against this cluster, configured only by the cli.toml of `cluster setup`;
    /// returns its stdout (it must succeed).
    pub fn cli(&self, args: &[&str]) -> String {
        let mut command = Command::new(BIN);
        command
            .env("DCOS_CONFIG", self.dir.path().join("cli.toml"))
            .env_remove("DCOS_URL")
            .env_remove("DCOS_TOKEN")
            .env_remove("DCOS_CA");
        run_cli(command, args)
    }

    pub fn pause(&self, host: u32) {
        signal(self.pid(host), nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn resume(&self, host: u32) {
        signal(self.pid(host), nix::sys::signal::Signal::SIGCONT);
    }

    /// One API call as the admin; `Err` when there is no answer within `timeout`.
    pub async fn try_call(
        &self,
        url: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            hyper::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        headers.insert(
            hyper::header::AUTHORIZATION,
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, headers, bytes) = self
            .admin
            .request(
                method,
                &format!("{url}{path}"),
                body,
                headers,
                timeout,
                BODY_MAX,
            )
            .await
            .map_err(|e| format!("{url}{path}: {e}"))?;
        Ok(Answer {
            status,
            headers,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        })
    }

    /// An API call to master `host` that must be answered.
    pub async fn call(
        &self,
        host: u32,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        self.try_call(
            &master_url(host),
            method,
            path,
            body,
            Duration::from_secs(20),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A write sent to `host` and, if it answers with a redirect, to the leader it names.
    pub async fn write(&self, host: u32, method: Method, path: &str, body: &Value) -> Answer {
        let answer = self.call(host, method.clone(), path, Some(body)).await;
        if answer.status != StatusCode::TEMPORARY_REDIRECT {
            return answer;
        }
        let location = answer.headers["location"].to_str().unwrap().to_string();
        self.try_call(&location, method, "", Some(body), Duration::from_secs(20))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The leader every master of `among` names (via `/v2/leader`), once they agree.
    pub async fn leader(&self, among: &[u32], within: Duration) -> u32 {
        let started = Instant::now();
        loop {
            let mut named = Vec::new();
            for host in among {
                let answer = self
                    .try_call(
                        &master_url(*host),
                        Method::GET,
                        "/v2/leader",
                        None,
                        Duration::from_secs(1),
                    )
                    .await;
                // Marathon's answer: the leader as host:port.
                named.push(
                    answer
                        .ok()
                        .filter(|a| a.status == StatusCode::OK)
                        .and_then(|a| {
                            let leader = a.body["leader"].as_str()?.to_string();
                            among
                                .iter()
                                .copied()
                                .find(|h| master_url(*h).trim_start_matches("https://") == leader)
                        })
                        .map(u64::from),
                );
            }
            if let Some(Some(leader)) = named.first() {
                let leader = *leader as u32;
                if among.contains(&leader) && named.iter().all(|n| *n == Some(leader as u64)) {
                    return leader;
                }
            }
            assert!(
                started.elapsed() < within,
                "masters {among:?} named no common leader within {within:?}: {named:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Tasks as master `host` sees them.
    pub async fn tasks(&self, host: u32) -> Vec<Value> {
        let answer = self.call(host, Method::GET, "/v2/tasks", None).await;
        answer.body["tasks"].as_array().cloned().unwrap_or_default()
    }

    /// Agents as master `host` sees them.
    pub async fn agents(&self, host: u32) -> Vec<Value> {
        let answer = self
            .call(host, Method::GET, "/cluster/v1/nodes", None)
            .await;
        answer.body["agents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// What the agent on `host` itself runs: task id → pid (from its `/containers`).
    pub async fn agent_tasks(&self, host: u32) -> BTreeMap<String, i64> {
        let answer = self
            .try_call(
                &agent_url(host),
                Method::GET,
                "/containers",
                None,
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        answer.body["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["taskId"].as_str().unwrap().to_string(),
                    c["pid"].as_i64().unwrap_or(0),
                )
            })
            .collect()
    }

    /// The agent id of the agent on `host` (its work dir keeps it).
    pub fn agent_id(&self, host: u32) -> String {
        let path = self.dir.path().join(format!("a{host}/work/agent_id"));
        wait_sync(&format!("agent {host} to write its id"), || {
            std::fs::read_to_string(&path)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
    }

    /// Everything the process of `host` wrote so far (all its runs).
    pub fn log(&self, host: u32) -> String {
        std::fs::read_to_string(&self.nodes[&host].log).unwrap_or_default()
    }

    fn print_logs(&self) {
        for (host, node) in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!(
                "---- host {host} ({:?}) {} (last {} lines)\n{}",
                node.kind,
                node.log.display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    /// Kills every process of the test (also tasks), removes the hosts and the agents'
    /// cgroups; after a failure, prints the end of every node's log first.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Tasks live in their agent's namespace: tearing the hosts down kills them.
        drop(self.net.take());
        for (host, node) in &self.nodes {
            if node.kind == Kind::Agent {
                remove_cgroups(&self.cgroup_parent(*host));
            }
        }
    }
}

/// Runs the real CLI in `dir`; panics with its output when it fails.
fn dcos(dir: &Path, args: &[&str]) {
    let mut command = Command::new(BIN);
    command.current_dir(dir);
    run_cli(command, args);
}

/// Runs `command` (the binary, prepared) with `args`; returns its stdout, or panics with
/// its output when it fails.
fn run_cli(mut command: Command, args: &[&str]) -> String {
    let out = command.args(args).output().unwrap();
    assert!(
        out.status.success(),
        "dcos-rs {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `dcos-rs cluster issue-cert` into `<dir>/<name>/`, for `host`'s address if given.
fn issue(dir: &Path, role: &str, name: &str, host: Option<u32>) -> PathBuf {
    let mut args = vec![
        "cluster",
        "issue-cert",
        "--role",
        role,
        "--name",
        name,
        "--ca-dir",
        "ca",
        "--out",
        name,
    ];
    let address = host.map(net::address);
    if let Some(address) = &address {
        args.extend(["--san", address]);
    }
    dcos(dir, &args);
    dir.join(name)
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

/// Removes a cgroup parent and the (empty) task cgroups under it, in every hierarchy.
fn remove_cgroups(parent: &str) {
    let roots = std::fs::read_dir("/sys/fs/cgroup")
        .map(|entries| entries.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default();
    for root in roots
        .iter()
        .map(|r| r.as_path())
        .chain([Path::new("/sys/fs/cgroup")])
    {
        let dir = root.join(parent);
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::remove_dir(child.path());
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

/// Polls (blocking) until `check` yields a value, at most 20 s.
fn wait_sync<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls until `check` yields a value or `within` passes (then panics naming `what`).
pub async fn wait_for<T>(
    what: &str,
    within: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
