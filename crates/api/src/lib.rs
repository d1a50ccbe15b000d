//! Wire types shared by the master, the agent and the CLI: Marathon-shaped views of apps and
//! tasks, this system's node views, and the one error shape (`ApiError`) every endpoint uses.
//!
//! Deliberately absent: HTTP plumbing. Servers and clients live in the binary crate.

use dcos_core::{Agent, AppRecord, AppSpec, ClusterState, FieldError, Task, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `{"code": "...", "message": "...", "details": {...}}` with an HTTP status beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    #[serde(skip)]
    pub status: u16,
}

impl ApiError {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            code: code.to_string(),
            message: message.into(),
            details: serde_json::Value::Null,
            status,
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "bad_request", message)
    }

    /// 422 with every invalid field named in `details.errors`.
    pub fn invalid(errors: &[FieldError]) -> Self {
        let message = errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(422, "invalid", format!("invalid app definition: {message}"))
            .with_details(serde_json::json!({ "errors": errors }))
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, "conflict", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, "unavailable", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "internal", message)
    }
}

/// Marathon's app JSON: the definition plus counters and running deployments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    #[serde(flatten)]
    pub spec: AppSpec,
    /// ISO 8601, as Marathon's `version`.
    pub version: String,
    pub tasks_running: usize,
    pub tasks_staged: usize,
    pub tasks_healthy: usize,
    pub tasks_unhealthy: usize,
    pub deployments: Vec<DeploymentRef>,
    /// Extra for the CLI and dashboard: failures since the last successful start.
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRef {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppEnvelope {
    pub app: AppView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppsEnvelope {
    pub apps: Vec<AppView>,
}

/// Marathon's answer to a change: `{"version": ..., "deploymentId": ...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentResult {
    pub version: String,
    pub deployment_id: String,
}

/// Marathon's task JSON plus the fields `dcos-rs task list` shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    pub id: String,
    pub app_id: String,
    /// Hostname of the agent.
    pub host: String,
    pub slave_id: String,
    pub agent_url: String,
    pub state: TaskState,
    pub staged_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub version: String,
    pub cpus: f64,
    pub mem: u64,
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    pub kill_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TasksEnvelope {
    pub tasks: Vec<TaskView>,
}

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

/// An image as the agent's store knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageView {
    pub reference: String,
    pub digest: String,
    pub size_bytes: u64,
    pub layers: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagesEnvelope {
    pub images: Vec<ImageView>,
}

/// Milliseconds since the epoch as ISO 8601 UTC with milliseconds (`2026-11-24T19:55:26.123Z`).
pub fn iso8601(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn app_view(state: &ClusterState, record: &AppRecord) -> AppView {
    let tasks: Vec<&Task> = state.tasks_of_app(&record.spec.id).collect();
    let running = tasks
        .iter()
        .filter(|t| t.state == TaskState::Running)
        .count();
    let staged = tasks
        .iter()
        .filter(|t| matches!(t.state, TaskState::Staging | TaskState::Starting))
        .count();
    let converged = app_converged(record, &tasks);
    AppView {
        spec: record.spec.clone(),
        version: iso8601(record.version_ms),
        tasks_running: running,
        tasks_staged: staged,
        // No health checks yet: a running task counts as healthy.
        tasks_healthy: running,
        tasks_unhealthy: 0,
        deployments: if converged {
            vec![]
        } else {
            vec![DeploymentRef {
                id: record.deployment_id.clone(),
            }]
        },
        consecutive_failures: record.consecutive_failures,
    }
}

/// An app's deployment is over when exactly `instances` tasks of its current config run and
/// nothing else of it is alive.
pub fn app_converged(record: &AppRecord, tasks: &[&Task]) -> bool {
    let alive: Vec<&&Task> = tasks.iter().filter(|t| !t.state.is_terminal()).collect();
    alive.len() == record.spec.instances as usize
        && alive.iter().all(|t| {
            t.state == TaskState::Running
                && !t.kill_requested
                && t.app_config_version_ms == record.config_version_ms
        })
}

pub fn task_view(state: &ClusterState, task: &Task) -> TaskView {
    let agent: Option<&Agent> = state.agents.get(&task.agent_id);
    TaskView {
        id: task.id.clone(),
        app_id: task.app_id.clone(),
        host: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
        slave_id: task.agent_id.clone(),
        agent_url: agent.map(|a| a.url.clone()).unwrap_or_default(),
        state: task.state,
        staged_at: iso8601(task.staged_at_ms),
        started_at: task.started_at_ms.map(iso8601),
        version: iso8601(task.app_config_version_ms),
        cpus: task.resources.cpus(),
        mem: task.resources.mem_mib,
        ports: task.ports.clone(),
        message: task.message.clone(),
        exit_code: task.exit_code,
        kill_requested: task.kill_requested,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(iso8601(1_795_549_526_000), "2026-11-24T19:45:26.000Z");
    }

    #[test]
    fn api_error_serializes_without_status() {
        let e = ApiError::conflict("app /web exists");
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": "conflict", "message": "app /web exists"})
        );
    }
}
