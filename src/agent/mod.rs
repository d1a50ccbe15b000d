//! The agent: runs tasks under `dcos-rs __shim`, watches them through their sandbox
//! directories, reports their states to the master, and recovers them after a restart.
//!
//! It never calls libcontainer itself (this is a multi-threaded tokio process); each task's
//! shim does. Tasks outlive the agent: nothing here kills a task unless asked to.

pub mod config;
pub mod fake;
pub mod http;
pub mod registry;
pub mod remote;
pub mod runtime;

use crate::link::{now_ms, random_id, TaskReport, ToAgent, ToMaster, LINK_QUEUE_MAX};
use anyhow::Context;
use dcos_core::{Agent as AgentInfo, AgentState, Resources, Task, TaskState};
use dcos_runtime::image::ImageStore;
use dcos_runtime::network::{BridgeConfig, TaskNetwork};
use dcos_runtime::task_dir::{ExitKind, TaskDir, TaskExit};
use runtime::{LaunchContext, ShimRuntime, TaskRuntime};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often task directories are checked for a started task or an exit record.
const MONITOR_INTERVAL_MS: u64 = 200;
/// Sandboxes of ended tasks kept for their logs; older ones are removed (bounded disk).
pub const ENDED_SANDBOXES_KEPT_MAX: usize = 100;
/// How often ended sandboxes are garbage-collected.
const SANDBOX_GC_INTERVAL_MS: u64 = 60_000;
/// How long an image import waits for the master to record the agent's new image list.
const IMAGES_REPORT_WAIT_MS: u64 = 15_000;
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
    /// What runs the tasks: the shim, or a fake in tests and benchmarks.
    runtime: Arc<dyn TaskRuntime>,
}

impl Agent {
    /// Opens the work dir (creating the agent id on first start) and the image store; tasks
    /// run under `dcos-rs __shim`.
    pub fn open(
        config: AgentConfig,
        to_master: mpsc::Sender<ToMaster>,
    ) -> anyhow::Result<Arc<Agent>> {
        Self::open_with_runtime(config, to_master, Arc::new(ShimRuntime::default()))
    }

    /// `open`, with tasks run by `runtime` (a `fake::FakeRuntime` in tests).
    pub fn open_with_runtime(
        config: AgentConfig,
        to_master: mpsc::Sender<ToMaster>,
        runtime: Arc<dyn TaskRuntime>,
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
            runtime,
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
            images: self.image_keys(),
        }
    }

    /// What the image store holds, as the master places tasks by (`Agent::images`). At
    /// most `IMAGES_REPORTED_MAX` keys: a store beyond that is reported cut short (with a
    /// warning), and placement misses what was cut.
    fn image_keys(&self) -> BTreeSet<String> {
        match self.images.presence_keys() {
            Ok(keys) if keys.len() > dcos_core::IMAGES_PER_AGENT_MAX => {
                tracing::warn!(
                    images = keys.len(),
                    max = dcos_core::IMAGES_PER_AGENT_MAX,
                    "more image names than the master keeps per agent; reporting the first"
                );
                keys.into_iter()
                    .take(dcos_core::IMAGES_PER_AGENT_MAX)
                    .collect()
            }
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("listing the image store for the master: {e}");
                BTreeSet::new()
            }
        }
    }

    /// Tells the master what the image store holds now and waits (bounded) until it is
    /// committed, so an import or pull answers only once tasks can be placed by it. A
    /// failure is logged; the next registration reports the store again.
    pub async fn report_images(&self) {
        let (ack, committed) = tokio::sync::oneshot::channel();
        let message = ToMaster::Images {
            agent_id: self.id.clone(),
            images: self.image_keys(),
            ack,
        };
        if self.to_master.send(message).await.is_err() {
            return;
        }
        match tokio::time::timeout(Duration::from_millis(IMAGES_REPORT_WAIT_MS), committed).await {
            Ok(Ok(true)) => {}
            _ => tracing::warn!(
                "the master has not recorded this agent's images; it learns them when the agent registers again"
            ),
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
            let shim_pid = TaskDir::read_pid(&dir.shim_pid())
                .filter(|pid| self.runtime.supervisor_alive(*pid, &dir));
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
                    self.runtime.force_cleanup(&dir, None);
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
        let removed = self.runtime.sweep_networks(bridge, &live);
        if removed > 0 {
            tracing::info!(removed, bridge = %bridge.bridge, "removed leftovers of ended tasks from the bridge");
        }
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
        let result = self.start(task, &dir);
        if result.is_err() {
            // Nothing half-created stays behind.
            let _ = std::fs::remove_dir_all(&dir.path);
        }
        result
    }

    /// Starts the task through the runtime and tracks it.
    fn start(&self, task: &Task, dir: &TaskDir) -> anyhow::Result<()> {
        // Launches are handled one at a time, so the task map is the whole truth here.
        let used_addresses = self
            .tasks
            .lock()
            .expect("tasks lock")
            .values()
            .filter_map(|t| t.network.as_ref().map(|n| n.address))
            .collect();
        let context = LaunchContext {
            config: &self.config,
            images: &self.images,
            used_addresses,
        };
        let started = self.runtime.start(task, dir, &context)?;
        self.launched_total.fetch_add(1, Ordering::SeqCst);
        self.tasks.lock().expect("tasks lock").insert(
            task.id.clone(),
            LocalTask {
                dir: dir.clone(),
                shim_pid: Some(started.supervisor_pid),
                started_at_ms: now_ms(),
                running_reported: false,
                terminal_reported: false,
                network: started.network,
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
                if let Some(pid) = shim_pid.filter(|p| self.runtime.supervisor_alive(*p, &dir)) {
                    self.runtime.stop(pid, &dir);
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
                let shim_gone = !task
                    .shim_pid
                    .is_some_and(|pid| self.runtime.supervisor_alive(pid, &task.dir));
                let start_overdue =
                    !task.running_reported && now_ms() > task.started_at_ms + SHIM_START_TIMEOUT_MS;
                if shim_gone || start_overdue {
                    // The shim may have written its record just now.
                    if let Ok(Some(exit)) = task.dir.read_exit() {
                        reports.push(exit_report(task_id, &exit));
                    } else {
                        // Nothing of it may keep running once it is reported lost.
                        let live_shim = task
                            .shim_pid
                            .filter(|pid| self.runtime.supervisor_alive(*pid, &task.dir));
                        self.runtime.force_cleanup(&task.dir, live_shim);
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
                let stats = self.runtime.stats(&spec)?;
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
            dcos_runtime::task_dir::write_json_atomic(&dir.exit(), &exit).unwrap();
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
