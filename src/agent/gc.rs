//! Garbage collection on the agent's disk: sandboxes of ended tasks beyond a bound, and
//! images nobody can name or run any more. Never touches what a live task uses.

use super::Agent;
use dcos_runtime::task_dir::TaskDir;
use std::collections::BTreeSet;

impl Agent {
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
        if removed > 0 {
            // Its digests must leave the master's view too, or tasks pinned to them would
            // still be placed here.
            self.mark_images_changed();
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
}

#[cfg(test)]
mod tests {
    use super::super::AgentConfig;
    use super::*;
    use dcos_runtime::task_dir::TaskExit;
    use tokio::sync::mpsc;

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
}
