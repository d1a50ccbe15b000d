//! Test harness: start an in-process single-node cluster on ephemeral ports with its own
//! data dir and cgroup parent, and poll for conditions with a deadline.

use dcos_api::{TaskView, TasksEnvelope};
use dcos_rs::agent::AgentConfig;
use dcos_rs::cli::client::Client;
use dcos_rs::up::{start, UpHandle, UpOptions};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_dcos-rs");

pub struct TestCluster {
    pub handle: Option<UpHandle>,
    pub client: Client,
    pub dir: tempfile::TempDir,
    pub cgroup_parent: String,
    /// This cluster's own bridge (removed with the cluster if a test used it).
    pub bridge: dcos_runtime::network::BridgeConfig,
}

pub fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests create containers and cgroups: run them as root (CI does)"
    );
}

pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &dcos_rs::link::random_id()[..8])
}

impl TestCluster {
    pub async fn start() -> TestCluster {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut UpOptions)) -> TestCluster {
        require_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let cgroup_parent = unique("dcos-rs-test");
        // `up` sets the agent's work dir and URL itself.
        let mut agent = AgentConfig::new(PathBuf::new(), String::new());
        agent.shim_exe = PathBuf::from(BIN);
        agent.cpus = Some(2.0);
        agent.mem_mib = Some(2048);
        agent.cgroup_parent = cgroup_parent.clone();
        agent.ports = vec![dcos_core::PortRange {
            begin: 31000,
            end: 31009,
        }];
        // Its own bridge name, so its sweep never touches another test's tasks.
        agent.bridge =
            dcos_runtime::network::BridgeConfig::new(&unique("dt")[..10], "172.30.0.0/24")
                .expect("test bridge");
        let mut opts = UpOptions {
            data_dir: dir.path().join("data"),
            keep_tasks: false,
            announce: false,
            tokens_file: None,
            insecure_no_auth: false,
            agent,
        };
        tweak(&mut opts);
        let bridge = opts.agent.bridge.clone();
        let master = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let agent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let handle = start(opts, master, agent).await.expect("cluster starts");
        let client = match &handle.admin_token {
            Some(admin) => Client::with_auth(&handle.master_url, Some(&admin.token), None)
                .expect("a client with the admin token"),
            None => Client::new(&handle.master_url),
        };
        TestCluster {
            handle: Some(handle),
            client,
            dir,
            cgroup_parent,
            bridge,
        }
    }

    pub fn handle(&self) -> &UpHandle {
        self.handle.as_ref().expect("running")
    }

    /// The admin token `up` made.
    pub fn token(&self) -> String {
        self.handle()
            .admin_token
            .as_ref()
            .map(|admin| admin.token.clone())
            .expect("up runs with its admin token")
    }

    /// The `dcos-rs` CLI for this cluster, with only what a test gives it: its URL and
    /// token, no cli.toml or token of the machine's user.
    pub fn cli(&self) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command
            .arg("--url")
            .arg(&self.handle().master_url)
            .env("DCOS_CONFIG", self.dir.path().join("no-cli.toml"))
            .env("DCOS_TOKEN", self.token())
            .env_remove("DCOS_CA");
        command
    }

    pub async fn deploy(
        &self,
        app: serde_json::Value,
    ) -> Result<dcos_api::AppView, dcos_rs::cli::client::ClientError> {
        self.client
            .send_json(
                hyper::Method::POST,
                "/v2/apps",
                &serde_json::to_vec(&app).unwrap(),
            )
            .await
    }

    pub async fn tasks(&self, app_id: &str) -> Vec<TaskView> {
        let tasks: TasksEnvelope = self
            .client
            .get("/cluster/v1/tasks")
            .await
            .expect("task list");
        tasks
            .tasks
            .into_iter()
            .filter(|t| t.app_id == app_id)
            .collect()
    }

    pub async fn running(&self, app_id: &str) -> Vec<TaskView> {
        self.tasks(app_id)
            .await
            .into_iter()
            .filter(|t| t.state == dcos_core::TaskState::Running)
            .collect()
    }

    /// The sandbox of `task_id` on the cluster's agent.
    pub fn sandbox(&self, task_id: &str) -> PathBuf {
        self.dir.path().join("data/agent/tasks").join(task_id)
    }

    /// The stdout (and stderr) of the app's one running task once it printed `end`.
    pub async fn output_of(&self, app_id: &str) -> String {
        let task = self.wait_running(app_id, 1).await.remove(0);
        let stdout = self.sandbox(&task.id).join("stdout");
        let stderr = stdout.with_file_name("stderr");
        let output = wait_for(
            &format!("{app_id} to print end"),
            Duration::from_secs(20),
            || {
                let stdout = stdout.clone();
                async move {
                    let text = std::fs::read_to_string(&stdout).ok()?;
                    text.contains("end").then_some(text)
                }
            },
        )
        .await;
        let stderr = std::fs::read_to_string(stderr).unwrap_or_default();
        format!("{output}--- stderr ---\n{stderr}")
    }

    /// The message of the first failed task of `app_id`.
    pub async fn failure_of(&self, app_id: &str) -> String {
        wait_for(
            &format!("{app_id} to fail"),
            Duration::from_secs(20),
            || async {
                self.tasks(app_id)
                    .await
                    .into_iter()
                    .find(|t| t.state == dcos_core::TaskState::Failed)
                    .and_then(|t| t.message)
            },
        )
        .await
    }

    pub async fn wait_running(&self, app_id: &str, n: usize) -> Vec<TaskView> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tasks = self.tasks(app_id).await;
            let running: Vec<TaskView> = tasks
                .iter()
                .filter(|t| t.state == dcos_core::TaskState::Running)
                .cloned()
                .collect();
            let alive = tasks.iter().filter(|t| !t.state.is_terminal()).count();
            if running.len() == n && alive == n {
                return running;
            }
            if Instant::now() > deadline {
                let summary: Vec<String> = tasks
                    .iter()
                    .map(|t| format!("{} {:?} {:?}", t.id, t.state, t.message))
                    .collect();
                panic!(
                    "timed out waiting for {n} running task(s) of {app_id}; tasks: {summary:#?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(handle) = self.handle.take() {
            handle.stop(false).await.expect("clean stop");
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

impl Drop for TestCluster {
    /// A test that panicked never called `stop`: end its tasks so nothing outlives the run.
    fn drop(&mut self) {
        if self.handle.is_some() {
            kill_tasks_under(&self.dir.path().join("data/agent/tasks"));
            remove_cgroup_parent(&self.cgroup_parent);
        }
        let bridge = &self.bridge;
        if Path::new("/sys/class/net").join(&bridge.bridge).exists() {
            dcos_runtime::network::sweep(bridge, &[]);
            dcos_runtime::network::teardown_host(bridge);
        }
    }
}

/// SIGKILLs every task under a sandbox root and waits (bounded) for their shims to finish.
pub fn kill_tasks_under(tasks_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(tasks_dir) else {
        return;
    };
    let mut shims = Vec::new();
    for entry in entries.flatten() {
        let read = |name: &str| -> Option<i32> {
            std::fs::read_to_string(entry.path().join(name))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        if let Some(pid) = read("task.pid").filter(|p| pid_alive(*p)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some(shim) = read("shim.pid") {
            shims.push(shim);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while shims.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Removes the test's cgroup parent from every hierarchy (tasks' own cgroups are gone by now).
pub fn remove_cgroup_parent(parent: &str) {
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for entry in entries.flatten() {
            let _ = std::fs::remove_dir(entry.path().join(parent));
        }
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(parent));
}

/// Polls `check` until it yields a value or `timeout` passes (then panics naming `what`).
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A busybox image tarball built from Debian's busybox-static (no registry needed).
pub fn busybox_image(
    dir: &Path,
    reference: &str,
    format: dcos_runtime::testimage::TestImageFormat,
) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.exists(),
        "/bin/busybox is missing: apt-get install busybox-static (.ci/run does)"
    );
    let out = dir.join("busybox-image.tar");
    dcos_runtime::testimage::build_busybox_image(busybox, &out, reference, format)
        .expect("build test image");
    out
}

pub fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
}
