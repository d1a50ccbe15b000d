//! What the agent offers and holds: its resources (detected, minus a reservation), the
//! images it reports to the master for placement, and what each running task uses.

use super::{Agent, AgentConfig, IMAGES_REPORT_WAIT_MS};
use crate::link::ToMaster;
use dcos_core::Resources;
use dcos_runtime::task_dir::TaskDir;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Waits between attempts to report the images, doubling up to the maximum.
const IMAGES_REPORT_RETRY_MIN_MS: u64 = 200;
const IMAGES_REPORT_RETRY_MAX_MS: u64 = 5_000;

impl Agent {
    /// What the image store holds, as the master places tasks by (`Agent::images`). At
    /// most `IMAGES_PER_AGENT_MAX` keys: a store beyond that is reported cut short (with a
    /// warning), tags before digests, and placement misses what was cut.
    pub(super) fn image_keys(&self) -> BTreeSet<String> {
        let keys = match self.images.presence_keys() {
            Ok(keys) => keys,
            Err(e) => {
                tracing::warn!("listing the image store for the master: {e}");
                return BTreeSet::new();
            }
        };
        if keys.len() <= dcos_core::IMAGES_PER_AGENT_MAX {
            return keys;
        }
        tracing::warn!(
            images = keys.len(),
            max = dcos_core::IMAGES_PER_AGENT_MAX,
            "more image names than the master keeps per agent; reporting tags first, then digests, up to the limit"
        );
        let (digests, tags): (Vec<String>, Vec<String>) =
            keys.into_iter().partition(|k| k.starts_with("sha256:"));
        tags.into_iter()
            .chain(digests)
            .take(dcos_core::IMAGES_PER_AGENT_MAX)
            .collect()
    }

    /// The image store changed: the reporter tells the master (see `report_images`).
    /// Returns the change's number. Callable from blocking code (garbage collection).
    pub(super) fn mark_images_changed(&self) -> u64 {
        let change = self.image_changes.fetch_add(1, Ordering::SeqCst) + 1;
        self.image_report_wake.notify_one();
        change
    }

    /// The image store changed: waits (bounded by `IMAGES_REPORT_WAIT_MS`) until the master
    /// has committed a report that includes the change, so an import or pull answers only
    /// once tasks can be placed by it. If the wait runs out, the reporter keeps trying.
    pub async fn images_changed(&self) {
        let change = self.mark_images_changed();
        let mut reported = self.images_reported.subscribe();
        let caught_up = tokio::time::timeout(
            Duration::from_millis(IMAGES_REPORT_WAIT_MS),
            reported.wait_for(|reported| *reported >= change),
        )
        .await;
        if !matches!(caught_up, Ok(Ok(_))) {
            tracing::warn!(
                "the master has not recorded this agent's new images yet; the agent keeps reporting them"
            );
        }
    }

    /// The agent's one image reporter: whenever the store changed, sends what it holds now
    /// (read at send time) and retries with backoff until the master commits it. One
    /// reporter, one report in flight: reports reach the master in order.
    pub(super) async fn report_images(self: Arc<Self>) {
        let mut retry_ms = IMAGES_REPORT_RETRY_MIN_MS;
        loop {
            self.image_report_wake.notified().await;
            loop {
                let change = self.image_changes.load(Ordering::SeqCst);
                if change <= *self.images_reported.borrow() {
                    break;
                }
                let keys = {
                    let agent = self.clone();
                    tokio::task::spawn_blocking(move || agent.image_keys())
                        .await
                        .unwrap_or_default()
                };
                let (ack, committed) = tokio::sync::oneshot::channel();
                let message = ToMaster::Images {
                    agent_id: self.id.clone(),
                    images: keys,
                    ack,
                };
                if self.to_master.send(message).await.is_err() {
                    return;
                }
                let wait = Duration::from_millis(IMAGES_REPORT_WAIT_MS);
                if let Ok(Ok(true)) = tokio::time::timeout(wait, committed).await {
                    self.images_reported.send_replace(change);
                    retry_ms = IMAGES_REPORT_RETRY_MIN_MS;
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(retry_ms)).await;
                retry_ms = (retry_ms * 2).min(IMAGES_REPORT_RETRY_MAX_MS);
            }
        }
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

/// Detected resources minus a reservation for the agent and the system (0.5 cpu, 512 MiB
/// or 10 %), unless overridden.
pub(super) fn detect_resources(config: &AgentConfig) -> Resources {
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
