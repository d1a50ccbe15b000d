//! The services framework (Marathon's `/v2`): keeps every app at its definition. Its
//! decisions are `dcos_core::services` (the planner, and `build_task`, which gives each task
//! Marathon's variables); this shell adds what is not pure (task ids, image reference
//! normalization) and its HTTP API (`http`).

pub mod events;
pub mod groups;
pub mod http;
pub mod query;

use crate::link::random_id;
use crate::master::{Framework, Proposal, Round};
use dcos_core::services::planner::{self, Action, PlanInput};
use dcos_core::services::{build_task, task_id};
use dcos_core::{ClusterState, PassedOver};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The services framework. `waiting` is what the last rounds could not place, for
/// `/v2/queue` and `dcos-rs app why` (the leader's memory; not replicated).
#[derive(Default)]
pub struct Services {
    pub waiting: Arc<Waiting>,
    /// When the last kills of unhealthy tasks were proposed (the cap's window).
    health_kills: Mutex<std::collections::VecDeque<u64>>,
}

/// Most tasks killed for failed health checks per minute, cluster-wide: when a dependency
/// every task checks breaks, replacing everything at once would only make it worse. Beyond
/// it, unhealthy tasks wait (and the master says so in its log).
pub const HEALTH_KILLS_PER_MINUTE_MAX: usize = 30;
const MINUTE_MS: u64 = 60_000;

impl Services {
    /// Unhealthy-task kills the cap still allows in the current minute.
    fn health_kills_left(&self, now_ms: u64) -> usize {
        let mut window = self.health_kills.lock().unwrap_or_else(|e| e.into_inner());
        while window.front().is_some_and(|at| at + MINUTE_MS <= now_ms) {
            window.pop_front();
        }
        let left = HEALTH_KILLS_PER_MINUTE_MAX.saturating_sub(window.len());
        if left == 0 {
            tracing::warn!(
                max_per_minute = HEALTH_KILLS_PER_MINUTE_MAX,
                "unhealthy tasks wait for replacement: the cluster-wide cap on health kills is reached (is something they all depend on down?)"
            );
        }
        left
    }

    fn record_health_kills(&self, now_ms: u64, kills: usize) {
        let mut window = self.health_kills.lock().unwrap_or_else(|e| e.into_inner());
        window.extend(std::iter::repeat_n(now_ms, kills));
    }
}

/// Apps short of instances that the planner could not place, by app id.
#[derive(Default)]
pub struct Waiting(Mutex<BTreeMap<String, WaitingApp>>);

#[derive(Debug, Clone)]
pub struct WaitingApp {
    /// The first round that could not place it, since it last could.
    pub since_ms: u64,
    /// The last round that tried.
    pub last_round_ms: u64,
    /// Agents considered over all those rounds (Marathon's processed offers).
    pub agents_considered: u64,
    /// Every agent passed over in the last round, and why.
    pub passed_over: Vec<PassedOver>,
}

impl Waiting {
    /// Records a round's unplaced apps; an app placed (or no longer short) is forgotten.
    fn record(&self, now_ms: u64, unplaced: &BTreeMap<String, Vec<PassedOver>>) {
        let mut waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        waiting.retain(|app_id, _| unplaced.contains_key(app_id));
        for (app_id, passed_over) in unplaced {
            let entry = waiting.entry(app_id.clone()).or_insert_with(|| WaitingApp {
                since_ms: now_ms,
                last_round_ms: now_ms,
                agents_considered: 0,
                passed_over: Vec::new(),
            });
            entry.last_round_ms = now_ms;
            entry.agents_considered += passed_over.len() as u64;
            entry.passed_over = passed_over.clone();
        }
    }

    pub fn get(&self, app_id: &str) -> Option<WaitingApp> {
        let waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        waiting.get(app_id).cloned()
    }
}

/// An app's image reference as agents report their images (`busybox` is
/// `docker.io/library/busybox:latest`); an unparsable one (refused at submission, see
/// `http::check_against_cluster`) stays as given and so matches no agent.
pub fn image_key(reference: &str) -> String {
    dcos_runtime::image::presence_key(reference).unwrap_or_else(|_| reference.to_string())
}

impl Framework for Services {
    fn name(&self) -> &'static str {
        "services"
    }

    fn plan(&self, state: &ClusterState, round: &Round) -> Vec<Proposal> {
        let input = PlanInput {
            now_ms: round.now_ms,
            connected: round.connected,
            image_key: &image_key,
            unhealthy_kills_max: self.health_kills_left(round.now_ms),
            launches_max: round.launches_max,
        };
        let plan = planner::plan(state, &input);
        for (app_id, passed_over) in &plan.unplaced {
            tracing::debug!(app = %app_id, "waiting for room: {}", describe(passed_over));
        }
        self.waiting.record(round.now_ms, &plan.unplaced);
        self.record_health_kills(round.now_ms, plan.unhealthy.len());
        let unhealthy_kills: Vec<Proposal> = plan
            .unhealthy
            .into_iter()
            .map(|task_id| Proposal::Kill { task_id })
            .collect();
        let rollbacks: Vec<Proposal> = plan
            .overdue
            .into_iter()
            .map(|overdue| Proposal::RollBack {
                app_id: overdue.app_id,
                failed_deployment_id: overdue.deployment_id,
                reason: overdue.reason,
            })
            .collect();
        plan.actions
            .into_iter()
            .filter_map(|action| match action {
                Action::Launch {
                    app_id,
                    agent_id,
                    ports,
                } => {
                    let app = state.services.apps.get(&app_id)?;
                    let id = task_id(&app_id, &random_id());
                    let task = build_task(app, &agent_id, ports, id, round.now_ms);
                    Some(Proposal::Launch(Box::new(task)))
                }
                Action::Kill { task_id } => Some(Proposal::Kill { task_id }),
                Action::Expunge { task_id } => Some(Proposal::Expunge { task_id }),
            })
            .chain(unhealthy_kills)
            .chain(rollbacks)
            .collect()
    }

    fn replaced_while_unreachable(&self, state: &ClusterState, agent_id: &str) -> Vec<String> {
        planner::returning_tasks(state, agent_id).1
    }
}

/// `a1: insufficient mem: needs 512 MiB, 64 MiB free; a2: agent is draining`.
pub fn describe(passed_over: &[dcos_core::PassedOver]) -> String {
    passed_over
        .iter()
        .map(|p| {
            let reasons: Vec<String> = p.reasons.iter().map(|r| r.to_string()).collect();
            format!("{}: {}", p.agent_id, reasons.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}
