//! Marathon's `/v2` shapes (apps, tasks, deployment answers) and how the services
//! framework's state is shown in them. Field names and formats are what Marathon's clients
//! parse (ISO 8601 versions, camelCase).

use dcos_core::time::iso8601;
use dcos_core::{Agent, AppRecord, AppSpec, ClusterState, Task, TaskOwner, TaskState};
use serde::{Deserialize, Serialize};

/// Marathon's app JSON: the definition plus counters and running deployments, and the
/// tasks when asked for (`embed=apps.tasks`, and always for one app).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppView {
    #[serde(flatten)]
    pub spec: AppSpec,
    /// ISO 8601, as Marathon's `version`.
    pub version: String,
    pub version_info: VersionInfo,
    pub tasks_running: usize,
    pub tasks_staged: usize,
    pub tasks_healthy: usize,
    pub tasks_unhealthy: usize,
    pub deployments: Vec<DeploymentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<MarathonTask>>,
    /// `embed=apps.readiness` / `app.readiness`: what the live tasks' readiness checks found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness_check_results: Option<Vec<serde_json::Value>>,
}

/// When the app last changed in size and in config (Marathon's `versionInfo`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub last_scaling_at: String,
    pub last_config_change_at: String,
}

/// One kept version of an app (`/v2/apps/{id}/versions/{version}`): the definition as it
/// was, with its version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppVersionView {
    #[serde(flatten)]
    pub spec: AppSpec,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionsEnvelope {
    pub versions: Vec<String>,
}

/// A deployment in Marathon's plan shape (`/v2/deployments`): each app change here is one
/// step of one action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentView {
    pub id: String,
    pub version: String,
    pub affected_apps: Vec<String>,
    pub affected_pods: Vec<String>,
    pub steps: Vec<DeploymentStep>,
    pub current_actions: Vec<CurrentAction>,
    pub current_step: u32,
    pub total_steps: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentStep {
    pub actions: Vec<DeploymentAction>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentAction {
    /// `StartApplication`, `ScaleApplication`, `RestartApplication`.
    pub action: String,
    pub app: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentAction {
    pub action: String,
    pub app: String,
    pub readiness_check_results: Vec<serde_json::Value>,
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

/// A task as this system shows it (`/cluster/v1/tasks`, the CLI, the dashboard): Marathon's
/// task fields plus where its agent's API is, what it holds and how it ended. Marathon's
/// own endpoints answer `MarathonTask`, these fields without the extras.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_results: Option<Vec<HealthCheckResult>>,
    /// Who owns it: `/cluster/v1/tasks` lists every framework's tasks (`app_id` and
    /// `version` are empty for those that are not a service's).
    #[serde(default)]
    pub owner: TaskOwnerView,
    /// When its state last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
}

/// Who owns a task, as this system shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOwnerView {
    /// `service`, `job` or `framework`.
    pub kind: String,
    /// The app's id, the job's id, or the framework's id.
    pub id: String,
    /// The job's run it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl TaskOwnerView {
    pub fn of(owner: &TaskOwner) -> TaskOwnerView {
        let (kind, id, run_id) = match owner {
            TaskOwner::Service { app_id, .. } => ("service", app_id, None),
            TaskOwner::JobRun { job_id, run_id } => ("job", job_id, Some(run_id.clone())),
            TaskOwner::Framework { framework_id } => ("framework", framework_id, None),
        };
        TaskOwnerView {
            kind: kind.to_string(),
            id: id.clone(),
            run_id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TasksEnvelope {
    pub tasks: Vec<TaskView>,
}

/// Marathon's task JSON (`/v2/tasks`, `/v2/apps/{id}/tasks`): only keys Marathon's clients
/// know, since their models refuse any other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MarathonTask {
    pub id: String,
    pub app_id: String,
    pub host: String,
    pub slave_id: String,
    pub state: TaskState,
    pub staged_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    pub version: String,
    pub ports: Vec<u16>,
    /// For a task with health checks: what they found (empty until the first result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check_results: Option<Vec<HealthCheckResult>>,
}

/// Marathon's `healthCheckResults[]` item (one per task here: every check together).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckResult {
    pub alive: bool,
    pub consecutive_failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_cause: Option<String>,
    pub task_id: String,
    pub instance_id: String,
}

impl HealthCheckResult {
    pub fn of(task: &Task) -> Option<Vec<HealthCheckResult>> {
        if task.launch.health_checks.is_empty() {
            return None;
        }
        Some(
            task.health
                .iter()
                .map(|h| HealthCheckResult {
                    alive: h.alive,
                    consecutive_failures: h.consecutive_failures,
                    first_success: h.first_success_ms.map(iso8601),
                    last_success: h.last_success_ms.map(iso8601),
                    last_failure: h.last_failure_ms.map(iso8601),
                    last_failure_cause: h.last_failure_cause.clone(),
                    task_id: task.id.clone(),
                    instance_id: task.id.clone(),
                })
                .collect(),
        )
    }
}

impl From<TaskView> for MarathonTask {
    fn from(task: TaskView) -> MarathonTask {
        MarathonTask {
            id: task.id,
            app_id: task.app_id,
            host: task.host,
            slave_id: task.slave_id,
            state: task.state,
            staged_at: task.staged_at,
            started_at: task.started_at,
            version: task.version,
            ports: task.ports,
            health_check_results: task.health_check_results,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarathonTasksEnvelope {
    pub tasks: Vec<MarathonTask>,
}

/// What an app's deployment in progress does: Marathon's action name.
pub fn deployment_action(record: &AppRecord) -> &'static str {
    if record.config_version_ms != record.version_ms {
        "ScaleApplication"
    } else if record.only_first_version() {
        "StartApplication"
    } else {
        "RestartApplication"
    }
}

/// The app's deployment in progress, if it has not converged.
pub fn deployment_view(state: &ClusterState, record: &AppRecord) -> Option<DeploymentView> {
    let tasks: Vec<&Task> = state.tasks_of_app(&record.spec.id).collect();
    if app_converged(record, &tasks) {
        return None;
    }
    let action = deployment_action(record).to_string();
    let app = record.spec.id.clone();
    Some(DeploymentView {
        id: record.deployment_id.clone(),
        version: iso8601(record.version_ms),
        affected_apps: vec![app.clone()],
        affected_pods: vec![],
        steps: vec![DeploymentStep {
            actions: vec![DeploymentAction {
                action: action.clone(),
                app: app.clone(),
            }],
        }],
        current_actions: vec![CurrentAction {
            action,
            app,
            readiness_check_results: readiness_check_results(&tasks),
        }],
        current_step: 1,
        total_steps: 1,
    })
}

pub fn app_view(state: &ClusterState, record: &AppRecord, embed_tasks: bool) -> AppView {
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
        spec: record.spec.for_marathon(),
        version: iso8601(record.version_ms),
        version_info: VersionInfo {
            last_scaling_at: iso8601(record.last_scaling_ms()),
            last_config_change_at: iso8601(record.config_version_ms),
        },
        tasks_running: running,
        tasks_staged: staged,
        // Without health checks a running task counts as healthy.
        tasks_healthy: tasks
            .iter()
            .filter(|t| t.state == TaskState::Running && !t.launch.health_checks.is_empty())
            .filter(|t| t.health.as_ref().is_some_and(|h| h.alive))
            .count()
            + tasks
                .iter()
                .filter(|t| t.state == TaskState::Running && t.launch.health_checks.is_empty())
                .count(),
        tasks_unhealthy: tasks
            .iter()
            .filter(|t| t.state == TaskState::Running)
            .filter(|t| t.health.as_ref().is_some_and(|h| !h.alive))
            .count(),
        deployments: if converged {
            vec![]
        } else {
            vec![DeploymentRef {
                id: record.deployment_id.clone(),
            }]
        },
        tasks: embed_tasks.then(|| {
            tasks
                .iter()
                .filter(|t| !t.state.is_terminal())
                .filter_map(|t| task_view(state, t).map(Into::into))
                .collect()
        }),
        readiness_check_results: None,
    }
}

/// Marathon's `readinessCheckResults`: one entry per live task with a readiness result
/// (`{name, taskId, ready, lastResponse?}`).
pub fn readiness_check_results(tasks: &[&Task]) -> Vec<serde_json::Value> {
    tasks
        .iter()
        .filter(|t| !t.state.is_terminal())
        .filter_map(|t| {
            let readiness = t.readiness.as_ref()?;
            let mut result = serde_json::json!({
                "name": readiness.name,
                "taskId": t.id,
                "ready": readiness.ready,
            });
            if let Some(response) = &readiness.last_response {
                result["lastResponse"] = serde_json::json!({
                    "status": response.status,
                    "contentType": response.content_type,
                    "body": response.body,
                });
            }
            Some(result)
        })
        .collect()
}

/// An app's deployment is over when exactly `instances` tasks of its current config run and
/// nothing else of it is alive.
pub fn app_converged(record: &AppRecord, tasks: &[&Task]) -> bool {
    dcos_core::services::groups::converged(record, tasks)
}

/// Marathon's view of a service's task; `None` for tasks other frameworks own (Marathon's
/// `/v2/tasks` lists only its own).
pub fn task_view(state: &ClusterState, task: &Task) -> Option<TaskView> {
    matches!(task.owner, TaskOwner::Service { .. }).then(|| any_task_view(state, task))
}

/// Any framework's task as `/cluster/v1/tasks` shows it (`app_id` and `version` empty but
/// for a service's).
pub fn any_task_view(state: &ClusterState, task: &Task) -> TaskView {
    let (app_id, version) = match &task.owner {
        TaskOwner::Service {
            app_id,
            config_version_ms,
        } => (app_id.clone(), iso8601(*config_version_ms)),
        _ => (String::new(), String::new()),
    };
    let agent: Option<&Agent> = state.agents.get(&task.agent_id);
    TaskView {
        id: task.id.clone(),
        app_id,
        host: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
        slave_id: task.agent_id.clone(),
        agent_url: agent.map(|a| a.url.clone()).unwrap_or_default(),
        state: task.state,
        staged_at: iso8601(task.staged_at_ms),
        started_at: task.started_at_ms.map(iso8601),
        version,
        cpus: task.resources.cpus(),
        mem: task.resources.mem_mib,
        ports: task.ports.clone(),
        message: task.message.clone(),
        exit_code: task.exit_code,
        kill_requested: task.kill_requested,
        health_check_results: HealthCheckResult::of(task),
        owner: TaskOwnerView::of(&task.owner),
        updated_at: Some(iso8601(task.updated_at_ms)),
    }
}
