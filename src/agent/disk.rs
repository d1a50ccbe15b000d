//! The `disk` resource, enforced as Mesos's `disk/du` isolator does it: every
//! `disk_check_interval_ms` the agent measures what each task with a disk resource wrote
//! (its working dir, writable layer and sandbox volumes; not the logs, which the agent
//! rotates) and kills a task over its limit, with a final status that says why. A task that
//! asked for no disk (`disk: 0`, Marathon's default) is not limited.

use super::Agent;
use dcos_runtime::task_dir::TaskDir;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

/// How often tasks' disk use is measured (Mesos's `container_disk_watch_interval`).
pub const DISK_CHECK_INTERVAL_MS: u64 = 15_000;

/// Bytes allocated under `roots`, as `du -x` counts them: blocks of files, directories and
/// links, each inode once, not crossing into other filesystems, not following links.
pub fn usage_bytes(roots: &[PathBuf]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for root in roots {
        let Ok(meta) = std::fs::symlink_metadata(root) else {
            continue;
        };
        let device = meta.dev();
        let mut stack = vec![(root.clone(), meta)];
        while let Some((path, meta)) = stack.pop() {
            if meta.dev() != device || !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            total += meta.blocks() * 512;
            if meta.is_dir() {
                for entry in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    if let Ok(meta) = entry.metadata() {
                        stack.push((entry.path(), meta));
                    }
                }
            }
        }
    }
    total
}

/// The final message of a task killed for its disk use.
pub fn over_limit_reason(used_bytes: u64, limit_bytes: u64) -> String {
    format!(
        "killed by the agent: it wrote {} MiB, over its disk limit of {} MiB (the app's `disk`)",
        used_bytes.div_ceil(1 << 20),
        limit_bytes >> 20
    )
}

/// The reason recorded for a task the agent killed on its own, if any.
pub fn recorded_reason(dir: &TaskDir) -> Option<String> {
    std::fs::read_to_string(dir.kill_reason())
        .ok()
        .filter(|r| !r.is_empty())
}

impl Agent {
    /// Measures every live task with a disk limit and kills those over it, after recording
    /// why (the record survives an agent restart).
    pub(super) async fn enforce_disk_limits(self: &Arc<Self>) {
        let live: Vec<(String, TaskDir)> = self
            .tasks
            .lock()
            .expect("tasks lock")
            .iter()
            .filter(|(_, t)| !t.terminal_reported)
            .map(|(id, t)| (id.clone(), t.dir.clone()))
            .collect();
        if live.is_empty() {
            return;
        }
        let over = tokio::task::spawn_blocking(move || {
            let mut over = Vec::new();
            for (task_id, dir) in live {
                let Ok(spec) = dir.read_spec() else { continue };
                if spec.disk_limit_bytes == 0 || recorded_reason(&dir).is_some() {
                    continue;
                }
                let used = usage_bytes(&dir.writable());
                if used > spec.disk_limit_bytes {
                    let reason = over_limit_reason(used, spec.disk_limit_bytes);
                    tracing::warn!(task = %task_id, used, limit = spec.disk_limit_bytes, "task over its disk limit: killing it");
                    if let Err(e) =
                        dcos_runtime::task_dir::write_atomic(&dir.kill_reason(), reason.as_bytes())
                    {
                        tracing::error!(task = %task_id, "recording the kill reason: {e}");
                    }
                    over.push(task_id);
                }
            }
            over
        })
        .await
        .unwrap_or_default();
        for task_id in over {
            self.kill(&task_id).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_allocated_blocks_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("sub")).unwrap();
        std::fs::write(a.join("sub/data"), vec![1u8; 3 << 20]).unwrap();
        // A hard link is the same inode: counted once.
        std::fs::hard_link(a.join("sub/data"), a.join("link")).unwrap();
        // A sparse file takes no blocks for its hole.
        let sparse = std::fs::File::create(a.join("sparse")).unwrap();
        sparse.set_len(100 << 20).unwrap();
        let used = usage_bytes(&[a.clone(), dir.path().join("missing")]);
        assert!((3 << 20..4 << 20).contains(&used), "{used}");
        assert!(over_limit_reason(used, 2 << 20).contains("over its disk limit of 2 MiB"));
    }
}
