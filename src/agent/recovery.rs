//! Recovery after the agent (re)starts: finds the tasks of earlier runs in its work dir
//! (still running, ended while it was away, or lost) and removes the network leftovers of
//! tasks that are gone. Nothing here kills a live task.

use super::monitor::{exit_report, lost_report};
use super::{Agent, LocalTask};
use crate::link::{now_ms, TaskReport};
use dcos_core::TaskState;
use dcos_runtime::network::TaskNetwork;
use dcos_runtime::task_dir::TaskDir;

/// True when the task's task.json is empty or ends before its JSON does (a power loss
/// while it was written); any other unreadable spec keeps its sandbox for a human to see.
fn spec_cut_short(dir: &TaskDir) -> bool {
    match std::fs::read(dir.spec()) {
        Ok(bytes) => {
            bytes.iter().all(u8::is_ascii_whitespace)
                || serde_json::from_slice::<serde_json::Value>(&bytes).is_err_and(|e| e.is_eof())
        }
        Err(_) => false,
    }
}

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
                // A launch cut short before its spec was written (the agent stopped while
                // it fetched the task's artifacts): nothing runs from it. The master hears
                // of no such task and records it lost.
                if entry.path().is_dir() && TaskDir::read_pid(&dir.shim_pid()).is_none() {
                    tracing::info!(task = %task_id, "removing a sandbox without a spec (a launch cut short)");
                    let _ = std::fs::remove_dir_all(&dir.path);
                }
                continue;
            }
            let shim_pid = TaskDir::read_pid(&dir.shim_pid())
                .filter(|pid| self.runtime.supervisor_alive(*pid, &dir));
            if shim_pid.is_none()
                && spec_cut_short(&dir)
                && dir.read_exit().ok().flatten().is_none()
            {
                // A power loss while task.json was written (empty or cut short): nothing
                // can run from it or be cleaned up through it, so the sandbox goes and the
                // task is reported lost.
                reports.push(self.remove_damaged_sandbox(&task_id, &dir));
                continue;
            }
            let report = match dir.read_exit() {
                Ok(Some(exit)) => exit_report(&task_id, &dir, &exit),
                _ if shim_pid.is_some() => TaskReport {
                    task_id: task_id.clone(),
                    state: TaskState::Running,
                    message: None,
                    exit_code: None,
                    at_ms: now_ms(),
                    health: None,
                    readiness: None,
                    output: None,
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
            let health_checks = match terminal {
                true => Vec::new(),
                false => super::health::read_checks(&dir),
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
                    health_checks,
                },
            );
            reports.push(report);
        }
        reports
    }

    /// Ends what may be left of a task whose task.json was cut short (its cgroup is found by
    /// the agent's naming, not the spec), removes its sandbox and reports it lost.
    fn remove_damaged_sandbox(&self, task_id: &str, dir: &TaskDir) -> TaskReport {
        tracing::warn!(task = task_id, sandbox = %dir.path.display(), "task.json is empty or damaged (a power loss while it was written?): removing the sandbox and reporting the task lost");
        let cgroup = format!("/{}/{task_id}", self.config.cgroup_parent);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        if let Err(e) = dcos_runtime::cgroups::remove_everywhere(
            std::path::Path::new(dcos_runtime::cgroups::CGROUP_ROOT),
            &cgroup,
            deadline,
        ) {
            tracing::debug!(task = task_id, "no cgroup to remove: {e}");
        }
        if let Err(e) = std::fs::remove_dir_all(&dir.path) {
            tracing::warn!(task = task_id, "removing the damaged sandbox: {e}");
        }
        TaskReport {
            message: Some(
                "the agent found this task's task.json empty or damaged after a restart (a power loss while it was written): it never ran or its supervisor is gone".into(),
            ),
            ..lost_report(task_id)
        }
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

#[cfg(test)]
mod tests {
    use crate::agent::{fake::FakeRuntime, Agent, AgentConfig};
    use dcos_core::TaskState;
    use std::sync::Arc;

    #[test]
    fn an_empty_task_json_after_a_power_loss_is_cleaned_up_and_reported_lost() {
        let work = tempfile::tempdir().unwrap();
        let (tx, _rx) = tokio::sync::mpsc::channel(1);
        let mut config = AgentConfig::new(work.path().to_path_buf(), "http://x".into());
        config.cgroup_parent = format!("dcos-rs-unit-{}", std::process::id());
        let agent = Agent::open_with_runtime(config, tx, Arc::new(FakeRuntime::default())).unwrap();
        let dir = agent.task_dir("t1");
        std::fs::create_dir_all(&dir.path).unwrap();
        std::fs::write(dir.spec(), "").unwrap();
        std::fs::write(dir.stdout(), "partial log").unwrap();
        // Cut short mid-way is the same; a whole but foreign JSON is kept for a human.
        let cut = agent.task_dir("t2");
        std::fs::create_dir_all(&cut.path).unwrap();
        std::fs::write(cut.spec(), r#"{"task_id": "t2", "args": ["#).unwrap();
        let odd = agent.task_dir("t3");
        std::fs::create_dir_all(&odd.path).unwrap();
        std::fs::write(odd.spec(), r#"{"unexpected": true}"#).unwrap();
        let mut reports = agent.recover_tasks();
        reports.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        assert_eq!(reports.len(), 3);
        assert_eq!(reports[0].task_id, "t1");
        assert_eq!(reports[1].task_id, "t2");
        assert!(!cut.path.exists(), "the cut-short sandbox is gone");
        assert!(
            odd.path.exists(),
            "an unreadable but whole task.json is kept"
        );
        assert_eq!(reports[0].state, TaskState::Lost);
        assert!(
            reports[0].message.as_deref().unwrap().contains("task.json"),
            "{:?}",
            reports[0].message
        );
        assert!(!dir.path.exists(), "the sandbox is gone");
    }
}
