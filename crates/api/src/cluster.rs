//! This system's own `/cluster/v1` shapes: nodes (masters and agents) and task counts.

use dcos_core::time::iso8601;
use dcos_core::{Agent, ClusterState, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    pub url: String,
    pub state: String,
    pub cpus: f64,
    pub mem: u64,
    pub disk: u64,
    pub used_cpus: f64,
    pub used_mem: u64,
    pub tasks: usize,
    pub registered_at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterView {
    pub id: u64,
    pub url: String,
    /// "leader", "follower", "candidate" or "learner".
    pub role: String,
    /// The term as the answering master knows it.
    pub term: u64,
    /// Last log index: the answering master's own, or (on the leader) what each master has.
    #[serde(default)]
    pub last_log_index: Option<u64>,
    /// Known for the answering master only.
    #[serde(default)]
    pub commit_index: Option<u64>,
    /// Entries behind the leader's log (known on the leader only).
    #[serde(default)]
    pub lag: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodesView {
    pub masters: Vec<MasterView>,
    pub agents: Vec<AgentView>,
}

pub fn agent_view(state: &ClusterState, agent: &Agent) -> AgentView {
    let used = state.used_resources(&agent.id);
    AgentView {
        id: agent.id.clone(),
        hostname: agent.hostname.clone(),
        url: agent.url.clone(),
        state: state.agent_state_label(&agent.id).to_string(),
        cpus: agent.resources.cpus(),
        mem: agent.resources.mem_mib,
        disk: agent.resources.disk_mib,
        used_cpus: used.cpus(),
        used_mem: used.mem_mib,
        tasks: state
            .tasks
            .values()
            .filter(|t| t.agent_id == agent.id && !t.state.is_terminal())
            .count(),
        registered_at: iso8601(agent.registered_at_ms),
    }
}

/// Counts of tasks per state, every state present (for metrics and the dashboard).
pub fn tasks_by_state(state: &ClusterState) -> BTreeMap<TaskState, usize> {
    let mut counts: BTreeMap<TaskState, usize> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    for task in state.tasks.values() {
        *counts.entry(task.state).or_default() += 1;
    }
    counts
}
