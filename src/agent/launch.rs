//! Launching and killing one task: the sandbox, the start through the runtime, the stop
//! request. What the task runs and how is the runtime's (`runtime.rs`).

use super::runtime::LaunchContext;
use super::{valid_task_id, Agent, LocalTask};
use crate::link::{now_ms, TaskReport};
use anyhow::Context;
use dcos_core::{Task, TaskState};
use dcos_runtime::task_dir::TaskDir;
use std::os::unix::fs::DirBuilderExt;
use std::sync::atomic::Ordering;

impl Agent {
    /// Prepares the sandbox and spec, then starts the shim. Blocking (file I/O).
    pub(super) fn launch(&self, task: &Task) -> anyhow::Result<()> {
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
        let result = self.start(task, &dir);
        if result.is_err() {
            // Nothing half-created stays behind.
            let _ = std::fs::remove_dir_all(&dir.path);
        }
        result
    }

    /// Starts the task through the runtime and tracks it.
    pub(super) fn start(&self, task: &Task, dir: &TaskDir) -> anyhow::Result<()> {
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
                    health: None,
                    readiness: None,
                })
                .await
            }
        }
    }
}
