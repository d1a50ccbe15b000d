//! Recovery after the agent (re)starts: finds the tasks of earlier runs in its work dir
//! (still running, ended while it was away, or lost) and removes the network leftovers of
//! tasks that are gone. Nothing here kills a live task.

use super::monitor::{exit_report, lost_report};
use super::{Agent, LocalTask};
use crate::link::{now_ms, TaskReport};
use dcos_core::TaskState;
use dcos_runtime::network::TaskNetwork;
use dcos_runtime::task_dir::TaskDir;

impl Agent {
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
    pub(super) fn recover_tasks(&self) -> Vec<TaskReport> {
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
    pub(super) fn sweep_networks(&self) {
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
}
