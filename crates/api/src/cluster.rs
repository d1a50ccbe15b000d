//! This system's own `/cluster/v1` shapes: nodes (masters and agents), task counts, and
//! the cluster's usage over time.

use dcos_core::time::iso8601;
use dcos_core::{Agent, ClusterState, Resources, TaskState, Usage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An agent as `/cluster/v1/nodes` shows it: what it offers, what its tasks hold, how it is.
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
    /// MiB of `disk` its live tasks hold (absent from masters before it was shown).
    #[serde(default)]
    pub used_disk: u64,
    pub tasks: usize,
    pub registered_at: String,
    /// The operator's labels of the agent (`rack`, `zone`, ...), for constraints; absent
    /// when it has none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// The agent's build (`dcos-rs --version`) as it registered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// How long ago the leader last heard from the agent (ms): known on the leader only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms_ago: Option<u64>,
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
    /// The master's build (`dcos-rs --version`): the answering master's own; the others'
    /// as they recorded it in the cluster state (`Command::MasterBuild`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
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
        used_disk: used.disk_mib,
        tasks: state
            .tasks
            .values()
            .filter(|t| t.agent_id == agent.id && !t.state.is_terminal())
            .count(),
        registered_at: iso8601(agent.registered_at_ms),
        attributes: agent.attributes.clone(),
        version: agent.version.clone(),
        last_heartbeat_ms_ago: None,
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

/// How much of one resource is taken, of how much (cpus, or MiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct UsedOf<T> {
    pub used: T,
    pub total: T,
}

/// The cluster's usage at one moment (`GET /cluster/v1/usage`): what the active agents
/// offer and what live tasks hold, and every task by state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageSample {
    /// When the master took it (ISO 8601).
    pub at: String,
    pub cpus: UsedOf<f64>,
    /// MiB.
    pub mem: UsedOf<u64>,
    /// MiB.
    pub disk: UsedOf<u64>,
    /// Tasks by state (`TASK_RUNNING`, ...), every state present, ended tasks still kept
    /// included.
    pub tasks: BTreeMap<String, usize>,
    /// Active agents (those whose resources `total` sums).
    pub agents: usize,
}

impl UsageSample {
    /// `usage` as taken at `at_ms`.
    pub fn of(at_ms: u64, usage: &Usage) -> UsageSample {
        UsageSample {
            at: iso8601(at_ms),
            cpus: UsedOf {
                used: usage.used.cpus(),
                total: usage.total.cpus(),
            },
            mem: UsedOf {
                used: usage.used.mem_mib,
                total: usage.total.mem_mib,
            },
            disk: UsedOf {
                used: usage.used.disk_mib,
                total: usage.total.disk_mib,
            },
            tasks: usage
                .tasks
                .iter()
                .map(|(state, n)| (state.as_str().to_string(), *n))
                .collect(),
            agents: usage.agents,
        }
    }
}

/// `GET /cluster/v1/usage`: the samples the answering master took, oldest first, one every
/// `interval_seconds` since it started (at most an hour of them), and one taken for the
/// request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageHistory {
    pub interval_seconds: u64,
    pub samples: Vec<UsageSample>,
    pub now: UsageSample,
}

/// Resources as the views show them: cpus, MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ResourcesView {
    pub cpus: f64,
    pub mem: u64,
    pub disk: u64,
}

impl From<Resources> for ResourcesView {
    fn from(r: Resources) -> Self {
        ResourcesView {
            cpus: r.cpus(),
            mem: r.mem_mib,
            disk: r.disk_mib,
        }
    }
}

/// A task of a framework as `framework show` lists it (its id as the framework knows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameworkTaskView {
    pub id: String,
    /// Its id in the cluster (`/cluster/v1/tasks`): an external framework's tasks are
    /// `<framework id>.<id>` there.
    #[serde(default)]
    pub task_id: String,
    pub agent_id: String,
    pub state: String,
    pub resources: ResourcesView,
}

/// A framework (an external one, or a built-in one) with its share of the cluster:
/// `GET /cluster/v1/frameworks[/{id}]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub role: String,
    /// The role's weight in DRF.
    pub weight: f64,
    pub builtin: bool,
    /// "subscribed", "disconnected" (its failover timeout runs) or "built-in".
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registered_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnected_at: Option<String>,
    /// When a disconnected framework is removed with its tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout_seconds: Option<f64>,
    /// What its live tasks use.
    pub used: ResourcesView,
    /// What its outstanding offers hold (known on the leader only).
    pub offered: ResourcesView,
    /// Its dominant share: the largest fraction of the active agents' cpus, memory or disk
    /// its tasks use (0 to 1).
    pub share: f64,
    /// Its tasks by state (`TASK_RUNNING`, ...), the ended ones still kept included.
    pub tasks_by_state: BTreeMap<String, usize>,
    /// Its tasks (in `GET /cluster/v1/frameworks/{id}` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<FrameworkTaskView>>,
}

/// The largest fraction of `total` that `used` is (0 to 1).
pub fn dominant_share(used: &Resources, total: &Resources) -> f64 {
    [
        (used.cpus_milli, total.cpus_milli),
        (used.mem_mib, total.mem_mib),
        (used.disk_mib, total.disk_mib),
    ]
    .into_iter()
    .filter(|(_, t)| *t > 0)
    .map(|(u, t)| u as f64 / t as f64)
    .fold(0.0, f64::max)
}

/// Every framework: the built-in services and jobs frameworks first, then the external
/// ones by id; `offered` is what outstanding offers hold per framework (leader memory),
/// `state_label` names a task state as Mesos does. With `with_tasks`, each lists its tasks.
pub fn frameworks_view(
    state: &ClusterState,
    offered: &BTreeMap<String, Resources>,
    state_label: &dyn Fn(TaskState) -> &'static str,
    with_tasks: bool,
) -> Vec<FrameworkView> {
    use dcos_core::mesos::state::{framework_of, JOBS_FRAMEWORK_ID, SERVICES_FRAMEWORK_ID};
    let total = state
        .agents
        .values()
        .filter(|a| a.state == dcos_core::AgentState::Active)
        .fold(Resources::default(), |sum, a| sum.add(&a.resources));
    let mut views: Vec<FrameworkView> = Vec::new();
    for (id, name) in [
        (SERVICES_FRAMEWORK_ID, "marathon"),
        (JOBS_FRAMEWORK_ID, "metronome"),
    ] {
        views.push(framework_view(id, name, true, state));
    }
    for record in state.frameworks.frameworks.values() {
        let mut view = framework_view(&record.id, &record.name, false, state);
        view.role = record.role.clone();
        view.weight = state.frameworks.role(&record.role).weight;
        view.state = if record.disconnected_ms.is_some() {
            "disconnected".into()
        } else {
            "subscribed".into()
        };
        view.principal = record.principal.clone();
        view.user = record.user.clone();
        view.hostname = record.hostname.clone();
        view.capabilities = record.capabilities.clone();
        view.registered_at = Some(iso8601(record.registered_ms));
        view.disconnected_at = record.disconnected_ms.map(iso8601);
        view.removed_at = record
            .disconnected_ms
            .map(|at| iso8601(at.saturating_add(record.failover_timeout_ms)));
        view.failover_timeout_seconds = Some(record.failover_timeout_ms as f64 / 1000.0);
        views.push(view);
    }
    let index: BTreeMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id.clone(), i))
        .collect();
    let mut used: Vec<Resources> = vec![Resources::default(); views.len()];
    for task in state.tasks.values() {
        let Some(&i) = index.get(framework_of(&task.owner)) else {
            continue;
        };
        let label = state_label(task.state);
        *views[i]
            .tasks_by_state
            .entry(label.to_string())
            .or_default() += 1;
        if !task.state.is_terminal() && task.holds_resources() {
            used[i] = used[i].add(&task.resources);
        }
        if with_tasks {
            let own_id = match &task.owner {
                dcos_core::TaskOwner::Framework { framework_id } => {
                    dcos_core::framework_own_task_id(framework_id, &task.id)
                }
                _ => &task.id,
            };
            views[i]
                .tasks
                .get_or_insert_with(Vec::new)
                .push(FrameworkTaskView {
                    id: own_id.to_string(),
                    task_id: task.id.clone(),
                    agent_id: task.agent_id.clone(),
                    state: label.to_string(),
                    resources: task.resources.into(),
                });
        }
    }
    for (view, used) in views.iter_mut().zip(used) {
        view.used = used.into();
        view.share = dominant_share(&used, &total);
        view.offered = offered.get(&view.id).copied().unwrap_or_default().into();
        if with_tasks && view.tasks.is_none() {
            view.tasks = Some(Vec::new());
        }
    }
    views
}

fn framework_view(id: &str, name: &str, builtin: bool, state: &ClusterState) -> FrameworkView {
    use dcos_core::mesos::state::DEFAULT_ROLE;
    FrameworkView {
        id: id.to_string(),
        name: name.to_string(),
        role: DEFAULT_ROLE.to_string(),
        weight: state.frameworks.role(DEFAULT_ROLE).weight,
        builtin,
        state: "built-in".into(),
        principal: None,
        user: String::new(),
        hostname: None,
        capabilities: Vec::new(),
        registered_at: None,
        disconnected_at: None,
        removed_at: None,
        failover_timeout_seconds: None,
        used: ResourcesView::default(),
        offered: ResourcesView::default(),
        share: 0.0,
        tasks_by_state: BTreeMap::new(),
        tasks: None,
    }
}
