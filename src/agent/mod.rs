//! The agent: runs tasks under `dcos-rs __shim`, watches them through their sandbox
//! directories, reports their states to the master, and recovers them after a restart.
//!
//! It never calls libcontainer itself (this is a multi-threaded tokio process); each task's
//! shim does. Tasks outlive the agent: nothing here kills a task unless asked to.

mod command_check;
pub mod config;
pub mod disk;
pub mod fake;
mod fetch;
mod gc;
mod health;
pub mod http;
mod launch;
mod mesos;
mod monitor;
pub mod policy;
mod readiness;
mod recovery;
pub mod registry;
pub mod remote;
mod resources;
pub mod runtime;

pub use resources::ContainerStats;

use crate::link::{now_ms, random_id, TaskReport, ToAgent, ToMaster, LINK_QUEUE_MAX};
use anyhow::Context;
use dcos_core::{Agent as AgentInfo, AgentState, Resources, TaskState};
use dcos_runtime::image::ImageStore;
use dcos_runtime::network::{BridgeConfig, TaskNetwork};
use dcos_runtime::task_dir::TaskDir;
use runtime::{ShimRuntime, TaskRuntime};
use std::collections::BTreeMap;
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
    /// PEM file of CAs trusted for registry pulls besides the system's.
    pub registry_ca: Option<PathBuf>,
    /// What tasks may do to this host (host paths, users).
    pub policy: policy::TaskPolicy,
    /// How often tasks' disk use is measured against their `disk` (see `disk`).
    pub disk_check_interval_ms: u64,
    /// How often tasks' sandboxes are checked for starts and ends (`monitor`).
    pub monitor_interval_ms: u64,
    /// The operator's labels of this agent (`rack = "r1"`), for placement constraints.
    pub attributes: std::collections::BTreeMap<String, String>,
}

/// Most attributes one agent may carry, and the longest name or value.
pub const ATTRIBUTES_MAX: usize = 64;
pub const ATTRIBUTE_MAX_LEN: usize = 128;

/// Checks agent attributes: at most `ATTRIBUTES_MAX`, names of letters, digits, `-`, `_`,
/// `.`, not `hostname` (a constraint's field for the host name itself), values non-empty
/// and at most `ATTRIBUTE_MAX_LEN` bytes without control characters.
pub fn check_attributes(
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    if attributes.len() > ATTRIBUTES_MAX {
        return Err(format!("at most {ATTRIBUTES_MAX} attributes"));
    }
    for (name, value) in attributes {
        let name_ok = !name.is_empty()
            && name.len() <= ATTRIBUTE_MAX_LEN
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok || name == "hostname" {
            return Err(format!(
                "attribute name '{name}': letters, digits, '-', '_' or '.', at most {ATTRIBUTE_MAX_LEN}, not 'hostname'"
            ));
        }
        if value.is_empty()
            || value.len() > ATTRIBUTE_MAX_LEN
            || value.chars().any(char::is_control)
        {
            return Err(format!(
                "attribute {name}: the value must be 1-{ATTRIBUTE_MAX_LEN} bytes without control characters"
            ));
        }
    }
    Ok(())
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
            registry_ca: None,
            policy: policy::TaskPolicy::default(),
            disk_check_interval_ms: disk::DISK_CHECK_INTERVAL_MS,
            monitor_interval_ms: MONITOR_INTERVAL_MS,
            attributes: Default::default(),
        }
    }
}

/// Modes of the agent's work dir, also for an installation made before them: the work dir
/// and `tasks/` may only be traversed by others (a task without an image reaches its own
/// working directory as its own user), each sandbox too, and what is in a sandbox is
/// private (files 0600, the overlay 0700; see `launch` and the shim).
fn tighten_work_dir(work_dir: &std::path::Path) -> anyhow::Result<()> {
    use dcos_runtime::task_dir::set_mode;
    let tasks = work_dir.join("tasks");
    for dir in [work_dir, tasks.as_path()] {
        set_mode(dir, 0o711).with_context(|| format!("chmod 711 {}", dir.display()))?;
    }
    for entry in std::fs::read_dir(&tasks)
        .with_context(|| format!("listing {}", tasks.display()))?
        .flatten()
    {
        let sandbox = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        set_mode(&sandbox, 0o711).with_context(|| format!("chmod 711 {}", sandbox.display()))?;
        for file in std::fs::read_dir(&sandbox).into_iter().flatten().flatten() {
            let private = match file.file_type() {
                Ok(t) if t.is_file() => Some(0o600),
                Ok(t) if t.is_dir() && file.file_name() == "overlay" => Some(0o700),
                _ => None,
            };
            if let Some(mode) = private {
                set_mode(&file.path(), mode)
                    .with_context(|| format!("chmod {mode:o} {}", file.path().display()))?;
            }
        }
    }
    Ok(())
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
    /// Checks run beside it while it runs (`health.rs`).
    health_checks: Vec<dcos_core::TaskHealthCheck>,
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
    /// Changes of the image store so far, and the last change the master committed a
    /// report of; the reporter (`resources.rs`) wakes on `image_report_wake`.
    image_changes: AtomicU64,
    images_reported: tokio::sync::watch::Sender<u64>,
    image_report_wake: tokio::sync::Notify,
    /// A disk check (`disk::enforce_disk_limits`) is under way: the next tick skips.
    disk_check_running: AtomicBool,
    /// What the health checks of running tasks found (`health.rs`).
    health: health::Book,
    readiness: readiness::Book,
    /// Held by each start (`launch.rs`): a start picks its bridge address from the task
    /// map, so starts run one at a time, also those of launches that fetched artifacts.
    start_lock: Mutex<()>,
    /// Launches fetching their artifacts (or waiting for a `fetch_permits` permit), by task
    /// id: a kill cancels the fetch. Claimed by the agent's loop as it takes the launch
    /// (`claim_fetch`), so a kill handled right after it finds the launch here.
    fetching: Mutex<BTreeMap<String, tokio_util::sync::CancellationToken>>,
    /// One permit per fetch in progress (`launch::FETCHES_IN_FLIGHT_MAX`): a burst of
    /// launches with artifacts waits for them instead of opening downloads without end.
    fetch_permits: tokio::sync::Semaphore,
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
        let ours = !config.work_dir.exists() || config.work_dir.join("agent_id").exists();
        std::fs::create_dir_all(config.work_dir.join("tasks"))
            .with_context(|| format!("creating agent work dir {}", config.work_dir.display()))?;
        // Only a work dir that is ours (made now, or holding our id): never one the operator
        // shares with others.
        if ours {
            tighten_work_dir(&config.work_dir)?;
        }
        // A work dir made just now must survive a power loss with the agent id written into
        // it below (write_durable syncs the file and the work dir, not the work dir's parent).
        if let Some(parent) = config
            .work_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .with_context(|| format!("syncing {}", parent.display()))?;
        }
        let id_file = config.work_dir.join("agent_id");
        let id = match std::fs::read_to_string(&id_file) {
            Ok(text) if valid_agent_id(text.trim()) => text.trim().to_string(),
            // Damaged (a power loss while it was written, an edit): a new id would make
            // the cluster see a new agent beside the old one, so say what to do instead.
            Ok(text) => anyhow::bail!(
                "{} holds no valid agent id ({:?}): restore the id this agent had (`dcos-rs node list` shows it), or remove that agent (`dcos-rs node remove`) and delete the file to join as a new agent",
                id_file.display(),
                text.chars().take(80).collect::<String>()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let id = random_id();
                dcos_runtime::task_dir::write_durable(&id_file, id.as_bytes())
                    .with_context(|| format!("writing {}", id_file.display()))?;
                id
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", id_file.display()));
            }
        };
        let images = ImageStore::open(&config.work_dir.join("images"))
            .with_context(|| "opening the image store")?;
        dcos_runtime::task_dir::set_mode(&config.work_dir.join("images"), 0o700)
            .context("making the image store private")?;
        let resources = resources::detect_resources(&config);
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
            image_changes: AtomicU64::new(0),
            images_reported: tokio::sync::watch::channel(0).0,
            image_report_wake: tokio::sync::Notify::new(),
            disk_check_running: AtomicBool::new(false),
            health: Default::default(),
            readiness: Default::default(),
            start_lock: Mutex::new(()),
            fetching: Mutex::new(BTreeMap::new()),
            fetch_permits: tokio::sync::Semaphore::new(launch::FETCHES_IN_FLIGHT_MAX),
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
            certificate_serial: None,
            version: crate::build_version().to_string(),
            images: self.image_keys(),
            attributes: self.config.attributes.clone(),
        }
    }

    fn task_dir(&self, task_id: &str) -> TaskDir {
        TaskDir::new(self.config.work_dir.join("tasks").join(task_id))
    }

    pub fn sandbox(&self, task_id: &str) -> Option<TaskDir> {
        valid_task_id(task_id).then(|| self.task_dir(task_id))
    }

    /// (tasks found, microseconds taken) by the last `recover`.
    pub fn last_recovery(&self) -> (usize, u64) {
        *self.last_recovery.lock().expect("recovery lock")
    }

    pub fn launched_total(&self) -> u64 {
        self.launched_total.load(Ordering::SeqCst)
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
        let reporter = tokio::spawn(self.clone().report_images());
        let mut tick =
            tokio::time::interval(Duration::from_millis(self.config.monitor_interval_ms));
        let mut gc_tick = tokio::time::interval(Duration::from_millis(SANDBOX_GC_INTERVAL_MS));
        let mut disk_tick =
            tokio::time::interval(Duration::from_millis(self.config.disk_check_interval_ms));
        loop {
            tokio::select! {
                _ = disk_tick.tick() => {
                    // Off the loop: a task with many files must not hold back launches.
                    if !self.disk_check_running.swap(true, Ordering::SeqCst) {
                        let agent = self.clone();
                        tokio::spawn(async move {
                            agent.enforce_disk_limits().await;
                            agent.disk_check_running.store(false, Ordering::SeqCst);
                        });
                    }
                }
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
                    // The master dropped this link (it was full): register again, with
                    // what runs now, on a new one.
                    None => {
                        let (link, new_commands) = mpsc::channel(LINK_QUEUE_MAX);
                        commands = new_commands;
                        tracing::warn!(agent = %self.id, "the master dropped the command link; registering again");
                        let registered = self
                            .to_master
                            .send(ToMaster::Register {
                                agent: self.info(),
                                tasks: self.current_reports(),
                                link,
                            })
                            .await;
                        if registered.is_err() {
                            break;
                        }
                    }
                },
                _ = tick.tick() => {
                    self.monitor().await;
                    self.run_health_checks();
                    self.run_readiness_checks();
                }
                _ = shutdown.changed() => break,
            }
        }
        reporter.abort();
    }

    async fn handle(self: &Arc<Self>, command: ToAgent) {
        match command {
            // Sent twice (a master resending after a failover, say): the launch in progress,
            // or the task running, reports for it; this one says nothing. Checked first: a
            // failure reported now would end a task that runs.
            ToAgent::Launch(task) if self.has_task(&task.id) => {
                tracing::warn!(task = %task.id, "launch ignored: the agent has this task already");
            }
            ToAgent::Launch(task) if self.draining.load(Ordering::SeqCst) => {
                self.report(TaskReport {
                    task_id: task.id.clone(),
                    state: TaskState::Killed,
                    message: Some("not started: the agent is shutting down".into()),
                    exit_code: None,
                    at_ms: now_ms(),
                    health: None,
                    readiness: None,
                    output: None,
                })
                .await
            }
            // Downloads may take minutes: on a tokio task of their own, so other launches,
            // kills and this loop go on meanwhile. Its place in `fetching` is claimed here,
            // before this loop handles the next command: a kill right after finds it.
            ToAgent::Launch(task) if !task.launch.fetch.is_empty() => {
                match self.claim_fetch(&task.id) {
                    Some(cancel) => {
                        self.launches_in_flight.fetch_add(1, Ordering::SeqCst);
                        tokio::spawn(self.clone().fetch_and_launch(task, cancel));
                    }
                    // The launch in progress reports for the task; a duplicate says nothing.
                    None => tracing::warn!(
                        task = %task.id,
                        "launch ignored: the task is being launched already"
                    ),
                }
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
                self.report_launch(task_id, result).await;
            }
            ToAgent::Kill { task_id, grace_ms } => self.kill_with_grace(&task_id, grace_ms).await,
        }
    }

    async fn report(&self, report: TaskReport) {
        tracing::debug!(task = %report.task_id, state = report.state.as_str(), "status");
        let _ = self.to_master.send(ToMaster::Status(report)).await;
    }

    pub fn running_task_count(&self) -> usize {
        self.tasks.lock().expect("tasks lock").len()
    }
}

/// An agent id as this agent writes them (a UUID), or any id of the same safe alphabet.
fn valid_agent_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
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

/// A started agent: the agent and its running parts (its loop and its API server).
pub struct StartedAgent {
    pub agent: Arc<Agent>,
    pub handles: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts an agent, the same way for every mode: opens its work dir, recovers the tasks of
/// earlier runs, then runs its loop (reports go to `to_master`: the in-process master of
/// `dcos-rs up`, or a `remote::RemoteLink`) and serves its API on `listener` (HTTPS with
/// `tls`, plain HTTP without), until `shutdown`.
/// How the agent's HTTP API is served: where, over TLS or not, and what it asks of callers.
pub struct AgentApi {
    pub listener: tokio::net::TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<crate::auth::ApiAuth>,
    pub guard: crate::http_guard::RequestGuard,
}

pub async fn start(
    config: AgentConfig,
    to_master: mpsc::Sender<ToMaster>,
    runtime: Arc<dyn TaskRuntime>,
    api: AgentApi,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<StartedAgent> {
    let registry = Arc::new(
        registry::RegistryClient::new(config.registry_ca.as_deref())
            .context("setting up registry pulls (registry_ca, --registry-ca)")?,
    );
    let agent =
        Agent::open_with_runtime(config, to_master, runtime).context("starting the agent")?;
    // Find the tasks of earlier runs before anything else happens.
    let recovered = {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || agent.recover()).await?
    };
    let handles = vec![
        tokio::spawn(agent.clone().run(recovered, shutdown.clone())),
        tokio::spawn(crate::tls::serve(
            api.listener,
            api.tls,
            http::router(agent.clone(), registry, api.auth, api.guard),
            shutdown,
        )),
    ];
    Ok(StartedAgent { agent, handles })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_cannot_escape_the_sandbox_root() {
        for bad in ["", "..", ".hidden", "a/b", "a\0b", "../x"] {
            assert!(!valid_task_id(bad), "{bad:?}");
        }
        assert!(valid_task_id("group_web.0f3c-11"));
    }

    #[test]
    fn a_damaged_agent_id_file_stops_the_start_and_says_what_to_do() {
        let work = tempfile::tempdir().unwrap();
        let open = || {
            let (tx, _rx) = mpsc::channel(1);
            Agent::open(
                AgentConfig::new(work.path().to_path_buf(), "http://x".into()),
                tx,
            )
        };
        let first = open().unwrap().id.clone();
        assert_eq!(open().unwrap().id, first, "the id is kept");
        for damaged in ["", "  \n", "a/b", "\0\0\0"] {
            std::fs::write(work.path().join("agent_id"), damaged).unwrap();
            let error = format!("{:#}", open().err().expect("refused"));
            assert!(
                error.contains("agent_id") && error.contains("dcos-rs node remove"),
                "{error}"
            );
        }
    }
}
