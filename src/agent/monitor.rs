//! Watching tasks: what each task's sandbox says now (started, ended, supervisor gone) turned
//! into status reports for the master; the kill-everything of a stopping `dcos-rs up`.

use super::{Agent, SHIM_START_TIMEOUT_MS};
use crate::link::{now_ms, TaskReport};
use dcos_core::TaskState;
use dcos_runtime::task_dir::{ExitKind, TaskDir, TaskExit};
use std::sync::atomic::Ordering;
use std::time::Duration;

impl Agent {
    /// What every task this agent knows of is doing now, for a (re-)registration: the exit
    /// status of ended ones, RUNNING or STARTING for live ones.
    pub fn current_reports(&self) -> Vec<TaskReport> {
        // Launches still fetching their artifacts are in no task map yet: staging, so the
        // master does not take them for lost (taken first: no lock is held in another).
        let fetching: Vec<String> = self
            .fetching
            .lock()
            .expect("fetching lock")
            .keys()
            .cloned()
            .collect();
        let tasks = self.tasks.lock().expect("tasks lock");
        let staging = fetching
            .into_iter()
            .filter(|id| !tasks.contains_key(id))
            .map(|task_id| TaskReport {
                task_id,
                state: TaskState::Staging,
                message: None,
                exit_code: None,
                at_ms: now_ms(),
                health: None,
                readiness: None,
                output: None,
            });
        let started: Vec<TaskReport> = tasks
            .iter()
            .map(|(task_id, task)| match task.dir.read_exit() {
                Ok(Some(exit)) => exit_report(task_id, &task.dir, &exit),
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
                    health: None,
                    readiness: None,
                    output: None,
                },
            })
            .collect();
        started.into_iter().chain(staging).collect()
    }

    /// Checks every unfinished task's directory and reports what changed.
    pub(super) async fn monitor(&self) {
        let mut reports = Vec::new();
        {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            for (task_id, task) in tasks.iter_mut().filter(|(_, t)| !t.terminal_reported) {
                reports.extend(self.check(task_id, task));
            }
            // Ended tasks are forgotten in memory; their sandboxes stay on disk for logs.
            tasks.retain(|_, t| !t.terminal_reported);
        }
        for report in reports {
            self.report(report).await;
        }
    }

    /// `monitor` for one task.
    pub(super) async fn monitor_one(&self, task_id: &str) {
        let report = {
            let mut tasks = self.tasks.lock().expect("tasks lock");
            let Some(task) = tasks.get_mut(task_id).filter(|t| !t.terminal_reported) else {
                return;
            };
            let report = self.check(task_id, task);
            if task.terminal_reported {
                tasks.remove(task_id);
            }
            report
        };
        if let Some(report) = report {
            self.report(report).await;
        }
    }

    /// What changed for an unfinished task since it was last looked at: it ended, it
    /// started, or its supervisor is gone or never started it (then it is lost).
    fn check(&self, task_id: &str, task: &mut super::LocalTask) -> Option<TaskReport> {
        if let Ok(Some(exit)) = task.dir.read_exit() {
            task.terminal_reported = true;
            return Some(exit_report(task_id, &task.dir, &exit));
        }
        if !task.running_reported && task.dir.task_pid().exists() {
            task.running_reported = true;
            return Some(TaskReport {
                task_id: task_id.to_string(),
                state: TaskState::Running,
                message: None,
                exit_code: None,
                at_ms: now_ms(),
                health: None,
                readiness: None,
                output: None,
            });
        }
        let shim_gone = !task
            .shim_pid
            .is_some_and(|pid| self.runtime.supervisor_alive(pid, &task.dir));
        let start_overdue =
            !task.running_reported && now_ms() > task.started_at_ms + SHIM_START_TIMEOUT_MS;
        if !(shim_gone || start_overdue) {
            return None;
        }
        task.terminal_reported = true;
        // The shim may have written its record just now.
        if let Ok(Some(exit)) = task.dir.read_exit() {
            return Some(exit_report(task_id, &task.dir, &exit));
        }
        // Nothing of it may keep running once it is reported lost.
        let live_shim = task
            .shim_pid
            .filter(|pid| self.runtime.supervisor_alive(*pid, &task.dir));
        self.runtime.force_cleanup(&task.dir, live_shim);
        Some(lost_report(task_id))
    }

    /// Kills every task and waits (bounded by the longest grace period + 5 s) until each
    /// has an exit record; used by `dcos-rs up` on Ctrl-C without `--keep-tasks`.
    pub async fn kill_all_and_wait(&self) {
        self.draining.store(true, Ordering::SeqCst);
        self.cancel_fetches();
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

    pub(super) async fn kill_all_once(&self) {
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
}

/// The final status of a task from its exit record; a task the agent killed on its own
/// (over its disk limit) failed, for the reason recorded.
pub(super) fn exit_report(task_id: &str, dir: &TaskDir, exit: &TaskExit) -> TaskReport {
    let report = end_report(task_id, dir, exit);
    TaskReport {
        output: output_tail(dir),
        ..report
    }
}

/// The end of the task's stdout and stderr, when its launch asked for it.
fn output_tail(dir: &TaskDir) -> Option<dcos_core::types::TaskOutput> {
    let wanted = dir.read_spec().ok()?.output_tail_bytes;
    if wanted == 0 {
        return None;
    }
    let wanted = wanted.min(dcos_core::types::OUTPUT_TAIL_MAX_BYTES as u64);
    let output = dcos_core::types::TaskOutput {
        stdout: dcos_runtime::logs::tail(&dir.stdout(), wanted),
        stderr: dcos_runtime::logs::tail(&dir.stderr(), wanted),
    };
    // Bounded here, not only by the master: the report waits in the agent's outbox.
    Some(output.bounded())
}

/// How a task ended, from its exit record (as its report says).
pub(super) fn end_state(dir: &TaskDir, exit: &TaskExit) -> TaskState {
    end_report("", dir, exit).state
}

fn end_report(task_id: &str, dir: &TaskDir, exit: &TaskExit) -> TaskReport {
    if let Some(reason) = super::disk::recorded_reason(dir) {
        return TaskReport {
            task_id: task_id.to_string(),
            state: TaskState::Failed,
            message: Some(format!("{reason}; {}", exit.describe())),
            exit_code: exit.exit_code,
            at_ms: exit.finished_at_ms,
            health: None,
            readiness: None,
            output: None,
        };
    }
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
        health: None,
        readiness: None,
        output: None,
    }
}

pub(super) fn lost_report(task_id: &str) -> TaskReport {
    TaskReport {
        task_id: task_id.to_string(),
        state: TaskState::Lost,
        message: Some("the task's supervisor ended without recording how the task ended".into()),
        exit_code: None,
        at_ms: now_ms(),
        health: None,
        readiness: None,
        output: None,
    }
}
