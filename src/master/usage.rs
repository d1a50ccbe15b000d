//! The cluster's usage over the last hour, for the dashboard's overview chart: each master
//! samples `ClusterState::usage` from its own copy of the state every
//! `USAGE_SAMPLE_INTERVAL_MS` into memory, and `GET /cluster/v1/usage` answers its samples
//! and one taken for the request. Any master answers (a follower from its replicated state).
//!
//! Deliberately absent: keeping samples across restarts (a restarted master's chart starts
//! again) and what tasks actually consume (the agents' cgroup counters: `task_detail`).

use super::Master;
use crate::link::now_ms;
use axum::extract::State;
use axum::Json;
use dcos_api::{UsageHistory, UsageSample};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often a master samples the cluster's usage.
pub const USAGE_SAMPLE_INTERVAL_MS: u64 = 30_000;
/// Samples a master keeps: one hour of them.
pub const USAGE_SAMPLES_MAX: usize = 120;

impl Master {
    /// Records the cluster's usage as this master's state has it now (the sampling loop
    /// calls it every interval; a test calls it for a sample without waiting).
    pub fn sample_usage(&self) {
        let sample = self.read(|s| UsageSample::of(now_ms(), &s.usage()));
        let mut samples = self.usage_samples.lock().expect("usage lock");
        samples.push_back(sample);
        while samples.len() > USAGE_SAMPLES_MAX {
            samples.pop_front();
        }
    }

    /// The samples this master took, oldest first.
    pub fn usage_samples(&self) -> Vec<UsageSample> {
        let samples = self.usage_samples.lock().expect("usage lock");
        samples.iter().cloned().collect()
    }

    /// Samples at once, then every `USAGE_SAMPLE_INTERVAL_MS`, until `shutdown`.
    pub(super) async fn sample_usage_every_interval(
        self: Arc<Self>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_millis(USAGE_SAMPLE_INTERVAL_MS));
        // A master that was held up takes the next sample when it can, never a burst.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.sample_usage(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// `GET /cluster/v1/usage`: `{intervalSeconds, samples, now}` (`UsageHistory`).
pub(super) async fn usage(State(master): State<Arc<Master>>) -> Json<UsageHistory> {
    let now = master.read(|s| UsageSample::of(now_ms(), &s.usage()));
    Json(UsageHistory {
        interval_seconds: USAGE_SAMPLE_INTERVAL_MS / 1000,
        samples: master.usage_samples(),
        now,
    })
}
