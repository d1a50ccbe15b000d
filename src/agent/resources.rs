//! What the agent offers and holds: its resources (detected, minus a reservation), the
//! images it reports to the master for placement, and what each running task uses.

use super::{Agent, AgentConfig, IMAGES_REPORT_WAIT_MS};
use crate::link::ToMaster;
use dcos_core::Resources;
use dcos_runtime::task_dir::TaskDir;
use std::collections::BTreeSet;
use std::time::Duration;

impl Agent {
    /// What the image store holds, as the master places tasks by (`Agent::images`). At
    /// most `IMAGES_REPORTED_MAX` keys: a store beyond that is reported cut short (with a
    /// warning), and placement misses what was cut.
    pub(super) fn image_keys(&self) -> BTreeSet<String> {
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
