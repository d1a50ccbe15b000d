//! Launching and killing one task: the sandbox, the artifacts (`fetch.rs`, on a tokio task
//! of the launch's own, at most `FETCHES_IN_FLIGHT_MAX` at once), the start through the
//! runtime, the stop request. What the task runs and how is the runtime's (`runtime.rs`).

use super::fetch::{self, FetchFailure};
use super::runtime::LaunchContext;
use super::{valid_task_id, Agent, LocalTask};
use crate::link::{now_ms, TaskReport};
use anyhow::Context;
use dcos_core::{Task, TaskState};
use dcos_runtime::task_dir::TaskDir;
use std::collections::btree_map::Entry;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use tokio_util::sync::CancellationToken;

/// Most launches fetching artifacts at once on one agent: each holds connections, a
/// blocking thread at each step and disk bandwidth, so a burst of launches (a scale-up with
/// a large artifact) must not open downloads without end. Launches beyond wait for a permit
/// (as staging; a kill still stops them).
pub(super) const FETCHES_IN_FLIGHT_MAX: usize = 8;

/// Why a launch with artifacts did not start its task (reported TASK_KILLED): killed while
/// its artifacts were fetched (or while it waited to fetch them).
const KILLED_WHILE_FETCHING: &str = "killed while its artifacts were fetched";
/// ... or the agent began draining meanwhile (the words of a launch refused while draining).
const NOT_STARTED_DRAINING: &str = "not started: the agent is shutting down";

/// How a launch with artifacts to fetch ended.
enum FetchedLaunch {
    Started,
    Failed(anyhow::Error),
    /// Killed, or the agent is draining: reported TASK_KILLED with this reason.
    NotStarted(&'static str),
}

impl Agent {
    /// Prepares the sandbox and spec, then starts the shim. Blocking (file I/O).
    pub(super) fn launch(&self, task: &Task) -> anyhow::Result<()> {
        let dir = self.create_sandbox(task)?;
        let result = self.start(task, &dir);
        if result.is_err() {
            // Nothing half-created stays behind.
            let _ = std::fs::remove_dir_all(&dir.path);
        }
        result
    }

    /// Makes the task's sandbox; a task that has one already is refused. Blocking.
    fn create_sandbox(&self, task: &Task) -> anyhow::Result<TaskDir> {
        anyhow::ensure!(valid_task_id(&task.id), "invalid task id {}", task.id);
        let dir = self.task_dir(&task.id);
        anyhow::ensure!(!dir.path.exists(), "task {} already has a sandbox", task.id);
        // Others may only traverse it (a task without an image, as its own user, to reach its
        // working directory; a user-namespaced one to its volumes); its files are 0600.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&dir.path)
            .with_context(|| format!("creating sandbox {}", dir.path.display()))?;
        Ok(dir)
    }

    /// True when a launch of `task_id` is fetching its artifacts or the task is in the task
    /// map: a launch of it again is a duplicate. `fetching` first: a launch leaves it only
    /// after its start put the task into the task map, so the task is found in one or the
    /// other (the locks are taken one after the other, never together).
    pub(super) fn has_task(&self, task_id: &str) -> bool {
        let fetching = self
            .fetching
            .lock()
            .expect("fetching lock")
            .contains_key(task_id);
        fetching || self.tasks.lock().expect("tasks lock").contains_key(task_id)
    }

    /// Claims the place of a launch with artifacts in `fetching`, with a new kill switch;
    /// `None` when a launch of the task is fetching already. Called by the agent's loop
    /// before it handles the next command, so a kill right after the launch finds it.
    pub(super) fn claim_fetch(&self, task_id: &str) -> Option<CancellationToken> {
        match self
            .fetching
            .lock()
            .expect("fetching lock")
            .entry(task_id.to_string())
        {
            Entry::Occupied(_) => None,
            Entry::Vacant(slot) => Some(slot.insert(CancellationToken::new()).clone()),
        }
    }

    /// Stops every fetch in progress or waiting for a permit (the agent is draining): their
    /// launches report their tasks not started.
    pub(super) fn cancel_fetches(&self) {
        for cancel in self.fetching.lock().expect("fetching lock").values() {
            cancel.cancel();
        }
    }

    /// A launch with artifacts to fetch (Marathon's `fetch`), on a tokio task of its own, so
    /// a download holds back neither other launches nor the agent's loop: a fetch permit,
    /// the sandbox and the task's working dir, the artifacts into it, then the start, unless
    /// the task was killed meanwhile or the agent is draining. The caller claimed the task's
    /// place in `fetching` (`claim_fetch`, whose kill switch is `cancel`) and counted it in
    /// `launches_in_flight`; it leaves both here.
    pub(super) async fn fetch_and_launch(
        self: Arc<Self>,
        task: Box<Task>,
        cancel: CancellationToken,
    ) {
        let task: Arc<Task> = Arc::from(task);
        let task_id = task.id.clone();
        let outcome = self.fetch_then_start(&task, &cancel).await;
        // Out of `fetching` only after a start put the task into the task map: a kill
        // finds it in one or the other.
        let killed_meanwhile = self
            .fetching
            .lock()
            .expect("fetching lock")
            .remove(&task_id)
            .is_some_and(|token| token.is_cancelled());
        self.launches_in_flight.fetch_sub(1, Ordering::SeqCst);
        match outcome {
            FetchedLaunch::Started => {
                self.report_launch(task_id.clone(), Ok(())).await;
                if killed_meanwhile {
                    self.kill(&task_id).await;
                }
            }
            FetchedLaunch::Failed(error) => self.report_launch(task_id, Err(error)).await,
            FetchedLaunch::NotStarted(reason) => {
                let report = launch_status(task_id, TaskState::Killed, Some(reason.to_string()));
                self.report(report).await
            }
        }
    }

    /// Why a launch with artifacts stops before its start: a drain, else a kill.
    fn why_not_started(&self) -> &'static str {
        match self.draining.load(Ordering::SeqCst) {
            true => NOT_STARTED_DRAINING,
            false => KILLED_WHILE_FETCHING,
        }
    }

    async fn fetch_then_start(
        self: &Arc<Self>,
        task: &Arc<Task>,
        cancel: &CancellationToken,
    ) -> FetchedLaunch {
        // Held for the fetch only, not the start; the wait ends with a kill or a drain.
        let permit = tokio::select! {
            permit = self.fetch_permits.acquire() => {
                permit.expect("the agent never closes its fetch permits")
            }
            _ = cancel.cancelled() => return FetchedLaunch::NotStarted(self.why_not_started()),
        };
        if cancel.is_cancelled() || self.draining.load(Ordering::SeqCst) {
            return FetchedLaunch::NotStarted(self.why_not_started());
        }
        let prepared = {
            let (agent, task) = (self.clone(), task.clone());
            tokio::task::spawn_blocking(move || agent.prepare_fetch(&task))
                .await
                .map_err(|e| anyhow::anyhow!("launch panicked: {e}"))
                .and_then(|r| r)
        };
        let (dir, owner) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => return FetchedLaunch::Failed(error),
        };
        let cache_dir = self.config.work_dir.join(fetch::FETCH_CACHE_DIR);
        let fetched = fetch::fetch_all(
            &task.launch.fetch,
            &dir.work(),
            &cache_dir,
            &self.config.policy,
            owner,
            fetch::ByteBudget::for_task(task.resources.disk_mib),
            cancel,
        )
        .await;
        drop(permit);
        let outcome = match fetched {
            Err(error) if matches!(error.failure, FetchFailure::Cancelled) => {
                FetchedLaunch::NotStarted(self.why_not_started())
            }
            Err(error) => FetchedLaunch::Failed(error.into()),
            Ok(_) if cancel.is_cancelled() || self.draining.load(Ordering::SeqCst) => {
                FetchedLaunch::NotStarted(self.why_not_started())
            }
            Ok(report) => {
                tracing::info!(
                    task = %task.id,
                    artifacts = report.artifacts,
                    bytes = report.bytes,
                    from_cache = report.from_cache,
                    elapsed_ms = report.elapsed_ms,
                    "fetched the task's artifacts"
                );
                let (agent, task, start_dir) = (self.clone(), task.clone(), dir.clone());
                let started = tokio::task::spawn_blocking(move || agent.start(&task, &start_dir))
                    .await
                    .map_err(|e| anyhow::anyhow!("launch panicked: {e}"))
                    .and_then(|r| r);
                match started {
                    Ok(()) => return FetchedLaunch::Started,
                    Err(error) => FetchedLaunch::Failed(error),
                }
            }
        };
        // Not started: nothing of it stays behind.
        let _ = tokio::fs::remove_dir_all(&dir.path).await;
        outcome
    }

    /// The sandbox and the task's working dir, the agent's own (0700) while the artifacts
    /// are fetched into it: the sandbox, and the host uid and gid the fetch hands the
    /// working dir to once done (`None`: it stays the agent's). Blocking.
    fn prepare_fetch(&self, task: &Task) -> anyhow::Result<(TaskDir, Option<(u32, u32)>)> {
        let dir = self.create_sandbox(task)?;
        match self
            .runtime
            .prepare_work_dir(task, &dir, &self.config, &self.images)
        {
            Ok(owner) => Ok((dir, owner)),
            Err(error) => {
                let _ = std::fs::remove_dir_all(&dir.path);
                Err(error)
            }
        }
    }

    /// Tells the master how a launch went: STARTING (and RUNNING at once after a fast
    /// start), or FAILED with the reason.
    pub(super) async fn report_launch(&self, task_id: String, result: anyhow::Result<()>) {
        match result {
            Ok(()) => {
                self.report(launch_status(task_id.clone(), TaskState::Starting, None))
                    .await;
                // Started already (a fast start): said now rather than at the next look
                // over the tasks.
                self.monitor_one(&task_id).await;
            }
            Err(error) => {
                tracing::warn!(task = %task_id, "launch failed: {error:#}");
                let message = format!("launch failed: {error:#}");
                self.report(launch_status(task_id, TaskState::Failed, Some(message)))
                    .await
            }
        }
    }

    /// Starts the task through the runtime and tracks it.
    pub(super) fn start(&self, task: &Task, dir: &TaskDir) -> anyhow::Result<()> {
        // One start at a time (launches with artifacts start from their own tokio tasks), so
        // the task map is the whole truth here. The lock guards no data: a panic under it
        // leaves nothing half-changed.
        let _one_start_at_a_time = self
            .start_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
        if !task.launch.health_checks.is_empty() {
            // Kept beside the spec, so the checks go on after an agent restart.
            dcos_runtime::task_dir::write_json_atomic(
                &super::health::checks_file(dir),
                &task.launch.health_checks,
            )
            .with_context(|| format!("writing the health checks of {}", task.id))?;
        }
        if !task.launch.readiness_checks.is_empty() {
            dcos_runtime::task_dir::write_json_atomic(
                &super::readiness::checks_file(dir),
                &task.launch.readiness_checks,
            )
            .with_context(|| format!("writing the readiness checks of {}", task.id))?;
        }
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
                health_checks: task.launch.health_checks.clone(),
            },
        );
        Ok(())
    }

    /// Asks the task's shim to stop it (SIGTERM, then SIGKILL after the grace period).
    pub async fn kill(&self, task_id: &str) {
        self.kill_with_grace(task_id, None).await
    }

    /// `kill` with the kill's own grace period (`None`: the launch's), which the shim
    /// reads from the task's directory when the stop signal comes.
    pub async fn kill_with_grace(&self, task_id: &str, grace_ms: Option<u64>) {
        // Still fetching its artifacts, so in no task map yet: the fetch stops and reports
        // the task killed (or kills it, when it started meanwhile).
        let fetching = self
            .fetching
            .lock()
            .expect("fetching lock")
            .get(task_id)
            .cloned();
        if let Some(cancel) = fetching {
            cancel.cancel();
            return;
        }
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
                    if let Some(grace_ms) = grace_ms {
                        let written = dcos_runtime::task_dir::write_atomic(
                            &dir.kill_grace(),
                            grace_ms.to_string().as_bytes(),
                        );
                        if let Err(e) = written {
                            tracing::warn!(task = %task_id, "the kill's grace period is not kept ({e}); the launch's applies");
                        }
                    }
                    // Its grace period starts: TASK_KILLING, as Mesos's executors say (the
                    // master passes it on to frameworks that know the state); said before
                    // the signal, so it cannot come after the task's end.
                    self.report(launch_status(task_id.to_string(), TaskState::Killing, None))
                        .await;
                    // Checked again: the report may have waited, and the pid must still be
                    // this task's shim when the signal goes out.
                    if self.runtime.supervisor_alive(pid, &dir) {
                        self.runtime.stop(pid, &dir);
                    }
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
                    health: None,
                    readiness: None,
                    output: None,
                })
                .await
            }
        }
    }
}

/// What a launch tells the master: a state, maybe with a reason, nothing more.
fn launch_status(task_id: String, state: TaskState, message: Option<String>) -> TaskReport {
    TaskReport {
        task_id,
        state,
        message,
        exit_code: None,
        at_ms: now_ms(),
        health: None,
        readiness: None,
        output: None,
    }
}
