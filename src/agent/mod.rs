//! The agent: runs tasks under `dcos-rs __shim`, watches them through their sandbox
//! directories, reports their states to the master, and recovers them after a restart.
//!
//! It never calls libcontainer itself (this is a multi-threaded tokio process); each task's
//! shim does. Tasks outlive the agent: nothing here kills a task unless asked to.

pub mod config;
pub mod http;
pub mod remote;

use crate::link::{now_ms, random_id, TaskReport, ToAgent, ToMaster, LINK_QUEUE_MAX};
use anyhow::Context;
use dcos_core::{Agent as AgentInfo, AgentState, Resources, Task, TaskNetworkMode, TaskState};
use dcos_runtime::bundle::{resolve_process, resolve_user};
use dcos_runtime::image::ImageStore;
use dcos_runtime::network::{self, BridgeConfig, PortForward, Protocol, TaskNetwork};
use dcos_runtime::task_dir::{write_json_atomic, ExitKind, ShimSpec, TaskDir, TaskExit};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often task directories are checked for a started task or an exit record.
const MONITOR_INTERVAL_MS: u64 = 200;
/// Processes one task may hold (cgroup pids limit).
const TASK_PIDS_MAX: i64 = 4096;
/// Sandboxes of ended tasks kept for their logs; older ones are removed (bounded disk).
pub const ENDED_SANDBOXES_KEPT_MAX: usize = 100;
/// How often ended sandboxes are garbage-collected.
const SANDBOX_GC_INTERVAL_MS: u64 = 60_000;
/// How long a shim may take to record its task's pid before the launch counts as failed.
const SHIM_START_TIMEOUT_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub work_dir: PathBuf,
    /// The `dcos-rs` binary to re-exec as `__shim` (normally this very binary).
    pub shim_exe: PathBuf,
    /// URL the master and CLI use to reach this agent's API (logs, images).
    pub url: String,
    pub hostname: String,
    /// Overrides of detected resources.
    pub cpus: Option<f64>,
    pub mem_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    /// Cgroup directory under which every task gets `<parent>/<task-id>`.
    pub cgroup_parent: String,
    /// Size at which a task's stdout/stderr file is rotated.
    pub task_log_max_bytes: u64,
    /// Rotated files kept per task stream.
    pub task_log_files_max: u32,
    /// Host ports tasks may be given.
    pub ports: Vec<dcos_core::PortRange>,
    /// The bridge and subnet of `container/bridge` tasks (set up on the first such task).
    pub bridge: BridgeConfig,
}

/// Mesos's default port range for tasks.
pub const DEFAULT_TASK_PORTS: dcos_core::PortRange = dcos_core::PortRange {
    begin: 31000,
    end: 32000,
};

impl AgentConfig {
    pub fn new(work_dir: PathBuf, url: String) -> Self {
        AgentConfig {
            work_dir,
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
            url,
            hostname: hostname(),
            cpus: None,
            mem_mib: None,
            disk_mib: None,
            cgroup_parent: "dcos-rs".to_string(),
            task_log_max_bytes: dcos_runtime::logs::LOG_MAX_BYTES_DEFAULT,
            task_log_files_max: dcos_runtime::logs::LOG_FILES_MAX_DEFAULT,
            ports: vec![DEFAULT_TASK_PORTS],
            bridge: BridgeConfig::default_config(),
        }
    }
}

/// What the agent knows of one task in its work dir.
struct LocalTask {
    dir: TaskDir,
    /// The shim we spawned (this run) or found (after recovery).
    shim_pid: Option<i32>,
    started_at_ms: u64,
    running_reported: bool,
    terminal_reported: bool,
    /// The task's place on the bridge (its address is held until the task is forgotten).
    network: Option<TaskNetwork>,
}

pub struct Agent {
    pub config: AgentConfig,
    pub id: String,
    pub images: ImageStore,
    pub resources: Resources,
    tasks: Mutex<BTreeMap<String, LocalTask>>,
    to_master: mpsc::Sender<ToMaster>,
    /// Set while stopping with task kills: new launches are refused.
    draining: AtomicBool,
    /// Launches between "accepted" and "in the task map"; a drain waits for them.
    launches_in_flight: AtomicUsize,
    /// Shims started since this agent started (for metrics and the leak test).
    launched_total: AtomicU64,
    /// What the last recovery found and how long it took: (tasks, microseconds).
    last_recovery: Mutex<(usize, u64)>,
    /// Set once the bridge and its nftables table are known to exist.
    bridge_ready: AtomicBool,
}

impl Agent {
    /// Opens the work dir (creating the agent id on first start) and the image store.
    pub fn open(
        config: AgentConfig,
        to_master: mpsc::Sender<ToMaster>,
    ) -> anyhow::Result<Arc<Agent>> {
        std::fs::create_dir_all(config.work_dir.join("tasks"))
            .with_context(|| format!("creating agent work dir {}", config.work_dir.display()))?;
        let id_file = config.work_dir.join("agent_id");
        let id = match std::fs::read_to_string(&id_file) {
            Ok(id) => id.trim().to_string(),
            Err(_) => {
                let id = random_id();
                dcos_runtime::task_dir::write_durable(&id_file, id.as_bytes())
                    .with_context(|| format!("writing {}", id_file.display()))?;
                id
            }
        };
        let images = ImageStore::open(&config.work_dir.join("images"))
            .with_context(|| "opening the image store")?;
        let resources = detect_resources(&config);
        Ok(Arc::new(Agent {
            config,
            id,
            images,
            resources,
            tasks: Mutex::new(BTreeMap::new()),
            to_master,
            draining: AtomicBool::new(false),
            launches_in_flight: AtomicUsize::new(0),
            launched_total: AtomicU64::new(0),
            last_recovery: Mutex::new((0, 0)),
            bridge_ready: AtomicBool::new(false),
        }))
    }

    pub fn info(&self) -> AgentInfo {
        AgentInfo {
            id: self.id.clone(),
            hostname: self.config.hostname.clone(),
            url: self.config.url.clone(),
            resources: self.resources,
            state: AgentState::Active,
            registered_at_ms: now_ms(),
            ports: self.config.ports.clone(),
            certificate: None,
        }
    }

    fn task_dir(&self, task_id: &str) -> TaskDir {
        TaskDir::new(self.config.work_dir.join("tasks").join(task_id))
    }

    pub fn sandbox(&self, task_id: &str) -> Option<TaskDir> {
        valid_task_id(task_id).then(|| self.task_dir(task_id))
    }

    /// Finds the tasks of earlier runs: still running (their shim is alive), ended while we
    /// were away (their exit record), or lost (shim gone without a record).
    pub fn recover(&self) -> Vec<TaskReport> {
        let started = std::time::Instant::now();
        let reports = self.recover_tasks();
        self.sweep_networks();
        let micros = started.elapsed().as_micros() as u64;
        *self.last_recovery.lock().expect("recovery lock") = (reports.len(), micros);
        tracing::info!(
            tasks = reports.len(),
            micros,
            "recovered tasks from the work dir"
        );
        reports
    }

    /// What every task this agent knows of is doing now, for a (re-)registration: the exit
    /// status of ended ones, RUNNING or STARTING for live ones.
    pub fn current_reports(&self) -> Vec<TaskReport> {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks
            .iter()
            .map(|(task_id, task)| match task.dir.read_exit() {
                Ok(Some(exit)) => exit_report(task_id, &exit),
                _ => TaskReport {
                    task_id: task_id.clone(),
                    state: if task.running_reported {
                        TaskState::Running
                    } else {
                        TaskState::Starting
                    },
                    message: None,
                    exit_code: None,
                    at_ms: now_ms(),
                },
            })
            .collect()
    }

    /// (tasks found, microseconds taken) by the last `recover`.
    pub fn last_recovery(&self) -> (usize, u64) {
        *self.last_recovery.lock().expect("recovery lock")
    }

    pub fn launched_total(&self) -> u64 {
        self.launched_total.load(Ordering::SeqCst)
    }

    fn recover_tasks(&self) -> Vec<TaskReport> {
        let mut reports = Vec::new();
        let Ok(entries) = std::fs::read_dir(self.config.work_dir.join("tasks")) else {
            return reports;
        };
        let mut tasks = self.tasks.lock().expect("tasks lock");
        for entry in entries.flatten() {
            let task_id = entry.file_name().to_string_lossy().to_string();
            let dir = TaskDir::new(entry.path());
            if !dir.spec().exists() {
                continue;
            }
            let shim_pid = TaskDir::read_pid(&dir.shim_pid()).filter(|pid| shim_alive(*pid, &dir));
            let report = match dir.read_exit() {
                Ok(Some(exit)) => exit_report(&task_id, &exit),
                _ if shim_pid.is_some() => TaskReport {
                    task_id: task_id.clone(),
                    state: TaskState::Running,
                    message: None,
                    exit_code: None,
                    at_ms: now_ms(),
                },
                _ => {
                    dcos_runtime::shim::force_cleanup(&dir, None);
                    lost_report(&task_id)
                }
            };
            let terminal = report.state.is_terminal();
            let network = match terminal {
                true => None,
                false => dir.read_spec().ok().and_then(|s| s.network),
            };
            tasks.insert(
                task_id,
                LocalTask {
                    dir,
                    shim_pid,
                    started_at_ms: now_ms(),
                    running_reported: true,
                    terminal_reported: terminal,
                    network,
                },
            );
            reports.push(report);
        }
        reports
    }

    /// Removes the namespaces and port mappings that tasks which are gone left on this
    /// agent's bridge (a shim killed with SIGKILL, a host crash).
    fn sweep_networks(&self) {
        let bridge = &self.config.bridge;
        let live: Vec<TaskNetwork> = self
            .tasks
            .lock()
            .expect("tasks lock")
            .values()
            .filter(|t| !t.terminal_reported)
            .filter_map(|t| t.network.clone())
            .collect();
        let removed = network::sweep(bridge, &live);
        if removed > 0 {
            tracing::info!(removed, bridge = %bridge.bridge, "removed leftovers of ended tasks from the bridge");
        }
    }

    /// Chooses the task's address on the bridge (making sure the bridge exists) and its
    /// port forwards: the n-th mapping gets the n-th host port the master gave the task.
    fn bridge_network(
        &self,
        task: &Task,
        mappings: &[dcos_core::PortMapping],
    ) -> anyhow::Result<TaskNetwork> {
        let bridge = &self.config.bridge;
        let exists = std::path::Path::new("/sys/class/net")
            .join(&bridge.bridge)
            .exists();
        if !self.bridge_ready.load(Ordering::SeqCst) || !exists {
            network::setup_host(bridge)
                .map_err(|e| anyhow::anyhow!("setting up bridge {}: {e}", bridge.bridge))?;
            self.bridge_ready.store(true, Ordering::SeqCst);
        }
        anyhow::ensure!(
            task.ports.len() == mappings.len(),
            "the task has {} host ports for {} port mappings",
            task.ports.len(),
            mappings.len()
        );
        let mut forwards = Vec::new();
        for (mapping, host_port) in mappings.iter().zip(&task.ports) {
            for protocol in mapping.protocol.split(',') {
                forwards.push(PortForward {
                    host_port: *host_port,
                    container_port: mapping.container_port,
                    protocol: match protocol {
                        "udp" => Protocol::Udp,
                        _ => Protocol::Tcp,
                    },
                });
            }
        }
        // Launches are handled one at a time, so the task map is the whole truth here.
        let used: std::collections::BTreeSet<Ipv4Addr> = self
            .tasks
            .lock()
            .expect("tasks lock")
            .values()
            .filter_map(|t| t.network.as_ref().map(|n| n.address))
            .collect();
        let address = bridge.allocate(&used).ok_or_else(|| {
            anyhow::anyhow!(
                "no free address left in {}/{} on bridge {}",
                bridge.subnet,
                bridge.prefix_len,
                bridge.bridge
            )
        })?;
        Ok(bridge.task_network(&task.id, address, forwards))
    }

    /// Registers with the master, then serves its commands and watches tasks until
    /// `shutdown` resolves.
    /// `reports` are what `recover` found (called before, so start-up can report it).
    pub async fn run(
        self: Arc<Self>,
        reports: Vec<TaskReport>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let (link, mut commands) = mpsc::channel(LINK_QUEUE_MAX);
        tracing::info!(agent = %self.id, tasks = reports.len(), "registering with the master");
        let _ = self
            .to_master
            .send(ToMaster::Register {
                agent: self.info(),
                tasks: reports,
                link,
            })
            .await;
        let mut tick = tokio::time::interval(Duration::from_millis(MONITOR_INTERVAL_MS));
        let mut gc_tick = tokio::time::interval(Duration::from_millis(SANDBOX_GC_INTERVAL_MS));
        loop {
            tokio::select! {
                _ = gc_tick.tick() => {
                    let agent = self.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        agent.gc_sandboxes(ENDED_SANDBOXES_KEPT_MAX);
                        agent.gc_images();
                    })
                    .await;
                }
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = tick.tick() => self.monitor().await,
                _ = shutdown.changed() => break,
            }
        }
    }

    async fn handle(self: &Arc<Self>, command: ToAgent) {
        match command {
            ToAgent::Launch(task) if self.draining.load(Ordering::SeqCst) => {
                self.report(TaskReport {
                    task_id: task.id.clone(),
                    state: TaskState::Killed,
                    message: Some("not started: the agent is shutting down".into()),
                    exit_code: None,
                    at_ms: now_ms(),
                })
                .await
            }
            ToAgent::Launch(task) => {
                let agent = self.clone();
                let task_id = task.id.clone();
                self.launches_in_flight.fetch_add(1, Ordering::SeqCst);
                let result = tokio::task::spawn_blocking(move || agent.launch(&task))
                    .await
                    .map_err(|e| anyhow::anyhow!("launch panicked: {e}"))
                    .and_then(|r| r);
                self.launches_in_flight.fetch_sub(1, Ordering::SeqCst);
                match result {
                    Ok(()) => self.report(TaskReport {
                        task_id,
                        state: TaskState::Starting,
                        message: None,
                        exit_code: None,
                        at_ms: now_ms(),
                    }),
                    Err(error) => {
                        tracing::warn!(task = %task_id, "launch failed: {error:#}");
                        self.report(TaskReport {
                            task_id,
                            state: TaskState::Failed,
                            message: Some(format!("launch failed: {error:#}")),
                            exit_code: None,
                            at_ms: now_ms(),
                        })
                    }
                }
                .await
            }
            ToAgent::Kill { task_id } => self.kill(&task_id).await,
            ToAgent::HasImage { reference, reply } => {
                let _ = reply.send(self.images.resolve(&reference).is_ok());
            }
        }
    }

    async fn report(&self, report: TaskReport) {
        tracing::debug!(task = %report.task_id, state = report.state.as_str(), "status");
        let _ = self.to_master.send(ToMaster::Status(report)).await;
    }

    /// Prepares the sandbox and spec, then starts the shim. Blocking (file I/O).
    fn launch(&self, task: &Task) -> anyhow::Result<()> {
        anyhow::ensure!(valid_task_id(&task.id), "invalid task id {}", task.id);
        let dir = self.task_dir(&task.id);
        anyhow::ensure!(!dir.path.exists(), "task {} already has a sandbox", task.id);
        std::fs::create_dir_all(&dir.path)
            .with_context(|| format!("creating sandbox {}", dir.path.display()))?;
        let result = self.write_spec_and_spawn(task, &dir);
        if result.is_err() {
            // Nothing half-created stays behind.
            let _ = std::fs::remove_dir_all(&dir.path);
        }
        result
    }

    fn write_spec_and_spawn(&self, task: &Task, dir: &TaskDir) -> anyhow::Result<()> {
        let launch = &task.launch;
        let image = match &launch.image {
            Some(reference) => Some(
                self.images
                    .resolve(reference)
                    .with_context(|| format!("image {reference}"))?,
            ),
            None => None,
        };
        let sandbox = dir.path.to_string_lossy().to_string();
        let mut extra_env = BTreeMap::new();
        extra_env.insert("MESOS_TASK_ID".to_string(), task.id.clone());
        extra_env.insert("MARATHON_APP_ID".to_string(), task.app_id.clone());
        extra_env.insert("HOST".to_string(), self.config.hostname.clone());
        if image.is_none() {
            extra_env.insert("MESOS_SANDBOX".to_string(), sandbox.clone());
        }
        // Marathon's port variables: PORT0..N, PORT (the first) and PORTS (all, commas).
        for (i, port) in task.ports.iter().enumerate() {
            extra_env.insert(format!("PORT{i}"), port.to_string());
        }
        if let Some(first) = task.ports.first() {
            extra_env.insert("PORT".to_string(), first.to_string());
            let all: Vec<String> = task.ports.iter().map(|p| p.to_string()).collect();
            extra_env.insert("PORTS".to_string(), all.join(","));
        }
        let network = match &launch.network {
            TaskNetworkMode::Host => None,
            TaskNetworkMode::Bridge { port_mappings } => {
                // Marathon's PORT_<containerPort>: the host port that reaches it.
                for (mapping, port) in port_mappings.iter().zip(&task.ports) {
                    extra_env.insert(format!("PORT_{}", mapping.container_port), port.to_string());
                }
                Some(self.bridge_network(task, port_mappings)?)
            }
        };
        let process = resolve_process(
            image.as_ref().map(|i| &i.config),
            launch.cmd.as_deref(),
            launch.args.as_deref(),
            &launch.env,
            &extra_env,
            if image.is_some() { "/" } else { &sandbox },
        )
        .map_err(anyhow::Error::msg)?;
        let user = launch
            .user
            .as_deref()
            .or(image.as_ref().and_then(|i| i.config.user.as_deref()));
        let (uid, gid) = resolve_user(user, image.as_ref().map(|i| i.layers.as_slice()))
            .map_err(anyhow::Error::msg)?;
        // Validation allows it only with an image; a log entry from elsewhere is checked too.
        let user_namespace = match (launch.user_namespace, &image) {
            (false, _) => None,
            (true, None) => anyhow::bail!("a user namespace needs an image"),
            (true, Some(_)) => {
                let map = dcos_runtime::userns::IdMap::agent_default();
                anyhow::ensure!(
                    map.host_id(uid).is_some() && map.host_id(gid).is_some(),
                    "user {uid}:{gid} is outside the user namespace's ids (0..{})",
                    map.size
                );
                Some(map)
            }
        };
        let spec = ShimSpec {
            task_id: task.id.clone(),
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            uid,
            gid,
            image_digest: image.as_ref().map(|i| i.digest.clone()),
            image_layers: image.as_ref().map(|i| i.task_layers()).unwrap_or_default(),
            image_rootfs: None,
            hostname: short_hostname(&task.id),
            cgroup_path: format!("/{}/{}", self.config.cgroup_parent, task.id),
            mem_limit_bytes: task.resources.mem_mib * 1024 * 1024,
            cpus_milli: task.resources.cpus_milli,
            pids_limit: TASK_PIDS_MAX,
            kill_grace_ms: launch.kill_grace_period_ms,
            container_state_root: self.config.work_dir.join("containers"),
            mounts: resolve_volumes(&launch.volumes, dir, user_namespace)?,
            log_max_bytes: self.config.task_log_max_bytes,
            log_files_max: self.config.task_log_files_max,
            stop_signal: image
                .as_ref()
                .and_then(|i| i.config.stop_signal.as_deref())
                .and_then(dcos_runtime::task_dir::parse_signal)
                .unwrap_or(libc::SIGTERM),
            network,
            user_namespace,
        };
        write_json_atomic(&dir.spec(), &spec).context("writing task.json")?;
        let shim_pid = spawn_shim(&self.config.shim_exe, dir)?;
        self.launched_total.fetch_add(1, Ordering::SeqCst);
        // Recorded by us too (the shim writes the same): a crash of the agent right now
        // must not leave a shim nobody can find.
        dcos_runtime::task_dir::write_atomic(&dir.shim_pid(), shim_pid.to_string().as_bytes())
            .context("writing shim.pid")?;
        self.tasks.lock().expect("tasks lock").insert(
            task.id.clone(),
            LocalTask {
                dir: dir.clone(),
                shim_pid: Some(shim_pid),
                started_at_ms: now_ms(),
                running_reported: false,
                terminal_reported: false,
                network: spec.network.clone(),
            },
        );
        Ok(())
    }

    /// Asks the task's shim to stop it (SIGTERM, then SIGKILL after the grace period).
    pub async fn kill(&self, task_id: &str) {
        enum Known {
            Running(Option<i32>),
            Ended,
            Unknown,
        }
        let known = match self.tasks.lock().expect("tasks lock").get(task_id) {
            Some(task) if !task.terminal_reported => Known::Running(task.shim_pid),
            Some(_) => Known::Ended,
            None => Known::Unknown,
        };
        match known {
            Known::Running(shim_pid) => {
                let dir = self.task_dir(task_id);
                if let Some(pid) = shim_pid.filter(|p| shim_alive(*p, &dir)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
            }
            Known::Ended => {}
            // Never launched here (or long gone): report it killed so the master does not
            // wait forever.
            Known::Unknown => {
                self.report(TaskReport {
                    task_id: task_id.to_string(),
                    state: TaskState::Killed,
                    message: Some("the agent does not run this task".into()),
                    exit_code: None,
                    at_ms: now_ms(),
                })
                .await
            }
        }
    }

    /// Checks every unfinished task's directory and reports what changed.
    async fn monitor(&self) {
        let mut reports = Vec::new();
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            for (task_id, task) in tasks.iter_mut().filter(|(_, t)| !t.terminal_reported) {
                if let Ok(Some(exit)) = task.dir.read_exit() {
                    task.terminal_reported = true;
                    reports.push(exit_report(task_id, &exit));
                    continue;
                }
                if !task.running_reported && task.dir.task_pid().exists() {
                    task.running_reported = true;
                    reports.push(TaskReport {
                        task_id: task_id.clone(),
                        state: TaskState::Running,
                        message: None,
                        exit_code: None,
                        at_ms: now_ms(),
                    });
                    continue;
                }
                let shim_gone = !task.shim_pid.is_some_and(|pid| shim_alive(pid, &task.dir));
                let start_overdue =
                    !task.running_reported && now_ms() > task.started_at_ms + SHIM_START_TIMEOUT_MS;
                if shim_gone || start_overdue {
                    // The shim may have written its record just now.
                    if let Ok(Some(exit)) = task.dir.read_exit() {
                        reports.push(exit_report(task_id, &exit));
                    } else {
                        // Nothing of it may keep running once it is reported lost.
                        let live_shim = task.shim_pid.filter(|pid| shim_alive(*pid, &task.dir));
                        dcos_runtime::shim::force_cleanup(&task.dir, live_shim);
                        reports.push(lost_report(task_id));
                    }
                    task.terminal_reported = true;
                }
            }
            // Ended tasks are forgotten in memory; their sandboxes stay on disk for logs.
            tasks.retain(|_, t| !t.terminal_reported);
        }
        for report in reports {
            self.report(report).await;
        }
    }

    /// Kills every task and waits (bounded by the longest grace period + 5 s) until each
    /// has an exit record; used by `dcos-rs up` on Ctrl-C without `--keep-tasks`.
    pub async fn kill_all_and_wait(&self) {
        self.draining.store(true, Ordering::SeqCst);
        // A launch already accepted finishes first, so its task is killed below too.
        for _ in 0..200 {
            if self.launches_in_flight.load(Ordering::SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Launches already in flight may add tasks after the first pass: kill again until
        // none is left (bounded).
        for _ in 0..3 {
            self.kill_all_once().await;
            if self.tasks.lock().expect("tasks lock").is_empty() {
                break;
            }
        }
    }

    async fn kill_all_once(&self) {
        let ids: Vec<(String, u64)> = {
            let tasks = self.tasks.lock().expect("tasks lock");
            tasks
                .iter()
                .filter(|(_, t)| !t.terminal_reported)
                .map(|(id, t)| {
                    let grace = t.dir.read_spec().map(|s| s.kill_grace_ms).unwrap_or(3000);
                    (id.clone(), grace)
                })
                .collect()
        };
        let max_grace_ms = ids.iter().map(|(_, g)| *g).max().unwrap_or(0);
        for (id, _) in &ids {
            self.kill(id).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(max_grace_ms + 5000);
        while tokio::time::Instant::now() < deadline {
            self.monitor().await;
            if self.tasks.lock().expect("tasks lock").is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes the sandboxes of ended tasks beyond the newest `keep` (by end time); tasks
    /// still tracked are never touched. Returns how many were removed.
    pub fn gc_sandboxes(&self, keep: usize) -> usize {
        let Ok(entries) = std::fs::read_dir(self.config.work_dir.join("tasks")) else {
            return 0;
        };
        let mut ended: Vec<(u64, TaskDir)> = entries
            .flatten()
            .filter(|e| !self.is_tracking(&e.file_name().to_string_lossy()))
            .filter_map(|e| {
                let dir = TaskDir::new(e.path());
                let exit = dir.read_exit().ok().flatten()?;
                Some((exit.finished_at_ms, dir))
            })
            .collect();
        ended.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.path.cmp(&b.1.path)));
        let mut removed = 0;
        for (_, dir) in ended.into_iter().skip(keep) {
            match std::fs::remove_dir_all(&dir.path) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("removing sandbox {}: {e}", dir.path.display()),
            }
        }
        removed
    }

    /// Removes images that lost their last tag (a re-import moved it) and that no task still
    /// runs from. Tagged images stay until removed. Returns how many were removed. Also
    /// removes the whole-image trees of older builds that no recovered task runs from.
    pub fn gc_images(&self) -> usize {
        let Ok(images) = self.images.list() else {
            return 0;
        };
        let in_use = self.images_in_use();
        if let Err(e) = self.images.remove_flat_trees(&in_use) {
            tracing::warn!("removing whole-image trees of an older build: {e}");
        }
        let mut removed = 0;
        for image in images.iter().filter(|i| i.reference == i.digest) {
            if in_use.contains(&image.digest) {
                continue;
            }
            match self.images.remove(&image.digest) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("removing unused image {}: {e}", image.digest),
            }
        }
        removed
    }

    pub fn is_tracking(&self, task_id: &str) -> bool {
        self.tasks.lock().expect("tasks lock").contains_key(task_id)
    }

    /// Config digests (`sha256:...`) of the images of tasks that have not ended (they must
    /// not be removed).
    pub fn images_in_use(&self) -> BTreeSet<String> {
        let tasks = self.tasks.lock().expect("tasks lock");
        tasks
            .values()
            .filter_map(|t| t.dir.read_spec().ok().and_then(|s| s.image()))
            .collect()
    }

    /// Resource usage of every task that has not ended, read from its cgroup.
    pub fn container_stats(&self) -> Vec<ContainerStats> {
        let dirs: Vec<(String, TaskDir)> = {
            let tasks = self.tasks.lock().expect("tasks lock");
            tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.dir.clone()))
                .collect()
        };
        dirs.into_iter()
            .filter_map(|(task_id, dir)| {
                let spec = dir.read_spec().ok()?;
                let stats = dcos_runtime::cgroups::task_stats(&spec.cgroup_path)?;
                Some(ContainerStats {
                    task_id,
                    pid: TaskDir::read_pid(&dir.task_pid()),
                    image: spec.image().is_some(),
                    stats,
                })
            })
            .collect()
    }

    pub fn running_task_count(&self) -> usize {
        self.tasks.lock().expect("tasks lock").len()
    }
}

/// One running task's resource usage, as `/containers` and `/metrics` show it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    pub task_id: String,
    pub pid: Option<i32>,
    /// Runs in a container image (else a plain process in cgroups).
    pub image: bool,
    pub stats: dcos_runtime::cgroups::TaskStats,
}

/// Volumes to host paths: an absolute `hostPath` must exist on this host; a relative one is
/// a directory created in the task's sandbox (owned by the task's root when it runs in a
/// user namespace, so it can write there); `tmpfs` needs no source.
fn resolve_volumes(
    volumes: &[dcos_core::VolumeSpec],
    dir: &TaskDir,
    user_namespace: Option<dcos_runtime::userns::IdMap>,
) -> anyhow::Result<Vec<dcos_runtime::task_dir::MountSpec>> {
    volumes
        .iter()
        .enumerate()
        .map(|(i, volume)| {
            let source = match &volume.host_path {
                Some(host) if host.starts_with('/') => {
                    let path = PathBuf::from(host);
                    anyhow::ensure!(
                        path.exists(),
                        "container.volumes[{i}].hostPath {host} does not exist on this agent"
                    );
                    Some(path)
                }
                Some(relative) => {
                    let path = dir.path.join("volumes").join(relative);
                    std::fs::create_dir_all(&path)
                        .with_context(|| format!("creating sandbox volume {}", path.display()))?;
                    if let Some(map) = user_namespace {
                        std::os::unix::fs::chown(&path, Some(map.host_base), Some(map.host_base))
                            .with_context(|| format!("chown {}", path.display()))?;
                    }
                    Some(path)
                }
                None => None,
            };
            Ok(dcos_runtime::task_dir::MountSpec {
                destination: volume.container_path.clone(),
                source,
                read_only: volume.read_only(),
                tmpfs_size_mib: volume.tmpfs.as_ref().map(|t| t.size_mib),
            })
        })
        .collect()
}

fn exit_report(task_id: &str, exit: &TaskExit) -> TaskReport {
    TaskReport {
        task_id: task_id.to_string(),
        state: match exit.kind() {
            ExitKind::Finished => TaskState::Finished,
            ExitKind::Failed => TaskState::Failed,
            ExitKind::Killed => TaskState::Killed,
        },
        message: Some(exit.describe()),
        exit_code: exit.exit_code,
        at_ms: exit.finished_at_ms,
    }
}

fn lost_report(task_id: &str) -> TaskReport {
    TaskReport {
        task_id: task_id.to_string(),
        state: TaskState::Lost,
        message: Some("the task's supervisor ended without recording how the task ended".into()),
        exit_code: None,
        at_ms: now_ms(),
    }
}

/// Task ids name sandbox directories and cgroups: a strict charset keeps paths inside.
pub fn valid_task_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
}

fn short_hostname(task_id: &str) -> String {
    task_id.chars().take(63).collect()
}

/// Starts `dcos-rs __shim <dir>` in its own session (so Ctrl-C in a terminal and the
/// agent's death do not reach it), with its diagnostics in `shim.log`.
fn spawn_shim(exe: &std::path::Path, dir: &TaskDir) -> anyhow::Result<i32> {
    let log = std::fs::File::create(dir.shim_log()).context("creating shim.log")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("__shim")
        .arg(&dir.path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("cloning shim.log handle")?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting shim {}", exe.display()))?;
    let pid = child.id().context("shim has no pid")? as i32;
    // Reap the shim when it exits (it is our child until we exit).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// True if `pid` is the live `dcos-rs __shim` of the task in `dir` (not a recycled pid).
fn shim_alive(pid: i32, dir: &TaskDir) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let same_task = args
        .get(2)
        .is_some_and(|a| *a == dir.path.as_os_str().as_encoded_bytes());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false);
    !zombie && args.get(1).is_some_and(|a| *a == b"__shim") && same_task
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// Detected resources minus a reservation for the agent and the system (0.5 cpu, 512 MiB
/// or 10 %), unless overridden.
fn detect_resources(config: &AgentConfig) -> Resources {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as u64;
    let mem_mib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(1024);
    let disk_mib = nix::sys::statvfs::statvfs(&config.work_dir)
        .map(|s| s.blocks_available() * s.fragment_size() / (1024 * 1024))
        .unwrap_or(0);
    let cpus_milli = match config.cpus {
        Some(c) => (c * 1000.0) as u64,
        None => (cpus * 1000).saturating_sub(500).max(100),
    };
    let mem_mib = config
        .mem_mib
        .unwrap_or_else(|| mem_mib.saturating_sub((mem_mib / 10).max(512)).max(64));
    Resources {
        cpus_milli,
        mem_mib,
        disk_mib: config.disk_mib.unwrap_or(disk_mib),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_sandboxes_beyond_the_limit_are_removed_oldest_first() {
        let work = tempfile::tempdir().unwrap();
        let (tx, _rx) = mpsc::channel(1);
        let agent = Agent::open(
            AgentConfig::new(work.path().to_path_buf(), "http://x".into()),
            tx,
        )
        .unwrap();
        for i in 0..7u64 {
            let dir = agent.task_dir(&format!("t{i}"));
            std::fs::create_dir_all(&dir.path).unwrap();
            let exit = TaskExit {
                exit_code: Some(0),
                signal: None,
                oom_killed: false,
                kill_requested: false,
                mem_limit_bytes: 0,
                start_error: None,
                finished_at_ms: 1000 + i,
            };
            write_json_atomic(&dir.exit(), &exit).unwrap();
        }
        // A sandbox without an exit record (a live or unknown task) is never collected.
        std::fs::create_dir_all(agent.task_dir("live").path).unwrap();
        assert_eq!(agent.gc_sandboxes(3), 4);
        let mut left: Vec<String> = std::fs::read_dir(work.path().join("tasks"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        left.sort();
        assert_eq!(left, vec!["live", "t4", "t5", "t6"]);
    }

    #[test]
    fn task_ids_cannot_escape_the_sandbox_root() {
        for bad in ["", "..", ".hidden", "a/b", "a\0b", "../x"] {
            assert!(!valid_task_id(bad), "{bad:?}");
        }
        assert!(valid_task_id("group_web.0f3c-11"));
    }
}
