//! The cluster's vocabulary: resources, agents, tasks, who owns a task, and task states.
//!
//! Plain data with serde; no behaviour beyond small predicates. Framework-specific
//! definitions (a service app, a job) live with their framework (`crate::services`), which
//! turns them into `Task`s; nothing here knows of any one framework.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Resources in integer units so that sums never drift: milli-cpus and MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpus_milli: u64,
    pub mem_mib: u64,
    pub disk_mib: u64,
}

impl Resources {
    /// From the units the APIs take (cpus, MiB as floats), rounded up.
    pub fn of(cpus: f64, mem_mib: f64, disk_mib: f64) -> Resources {
        Resources {
            cpus_milli: (cpus * 1000.0).ceil() as u64,
            mem_mib: mem_mib.ceil() as u64,
            disk_mib: disk_mib.ceil() as u64,
        }
    }

    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpus_milli <= free.cpus_milli
            && self.mem_mib <= free.mem_mib
            && self.disk_mib <= free.disk_mib
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli.saturating_sub(other.cpus_milli),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
            disk_mib: self.disk_mib.saturating_sub(other.disk_mib),
        }
    }

    pub fn add(&self, other: &Resources) -> Resources {
        Resources {
            cpus_milli: self.cpus_milli + other.cpus_milli,
            mem_mib: self.mem_mib + other.mem_mib,
            disk_mib: self.disk_mib + other.disk_mib,
        }
    }

    pub fn cpus(&self) -> f64 {
        self.cpus_milli as f64 / 1000.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentState {
    Active,
    Unreachable,
    Gone,
}

impl AgentState {
    pub fn as_str(&self) -> &'static str {
        match self {
            AgentState::Active => "active",
            AgentState::Unreachable => "unreachable",
            AgentState::Gone => "gone",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agent {
    /// Stable across agent restarts: kept in the agent's work dir.
    pub id: String,
    pub hostname: String,
    /// Base URL of the agent's own HTTP API (logs, images).
    pub url: String,
    /// Total resources offered by the agent (already minus its own reservation).
    pub resources: Resources,
    pub state: AgentState,
    pub registered_at_ms: u64,
    /// Host ports tasks may use (Mesos's `ports` resource).
    #[serde(default)]
    pub ports: Vec<PortRange>,
    /// The name in the certificate the agent registered with (remote agents); another
    /// certificate may not take over this agent id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// The serial of that certificate (hex): revoked when the agent is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_serial: Option<String>,
    /// The agent's build (`dcos-rs --version`), as it registered: upgrades wait for it.
    /// Empty for registrations written before agents reported it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The images the agent's store holds, as presence keys (`name:tag` normalized, and
    /// `sha256:` digests): reported at registration and on every change, so placement knows
    /// where a task's image is without asking. Empty for registrations written before agents
    /// reported their images.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub images: BTreeSet<String>,
    /// The operator's labels of the agent (agent.toml `[attributes]`, `up --attribute`), for
    /// placement constraints (`rack`, `zone`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

/// Most image names (`Agent::images`) the cluster state keeps per agent: an agent with
/// more reports this many, and `RegisterAgent`/`AgentImages` refuse more.
pub const IMAGES_PER_AGENT_MAX: usize = 10_000;

/// An inclusive range of host ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub begin: u16,
    pub end: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        self.begin <= port && port <= self.end
    }
}

/// Mesos task states, serialized with Mesos's names (`TASK_RUNNING`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    #[serde(rename = "TASK_STAGING")]
    Staging,
    #[serde(rename = "TASK_STARTING")]
    Starting,
    #[serde(rename = "TASK_RUNNING")]
    Running,
    #[serde(rename = "TASK_KILLING")]
    Killing,
    #[serde(rename = "TASK_FINISHED")]
    Finished,
    #[serde(rename = "TASK_FAILED")]
    Failed,
    #[serde(rename = "TASK_KILLED")]
    Killed,
    #[serde(rename = "TASK_LOST")]
    Lost,
    #[serde(rename = "TASK_ERROR")]
    Error,
    /// Its agent stopped answering; not terminal: the task may still run and come back.
    /// Last in the order on purpose: only `MarkAgentUnreachable` sets it, and any report
    /// from the returning agent replaces it (see `ClusterState::apply`).
    #[serde(rename = "TASK_UNREACHABLE")]
    Unreachable,
}

impl TaskState {
    pub const ALL: [TaskState; 10] = [
        TaskState::Staging,
        TaskState::Starting,
        TaskState::Running,
        TaskState::Killing,
        TaskState::Finished,
        TaskState::Failed,
        TaskState::Killed,
        TaskState::Lost,
        TaskState::Error,
        TaskState::Unreachable,
    ];

    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
        )
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Error => "TASK_ERROR",
            TaskState::Unreachable => "TASK_UNREACHABLE",
        }
    }
}

/// Everything an agent needs to run a task, copied from the app at launch time so a later
/// app change never alters a running task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    /// Shell command (`sh -c`), as Marathon's `cmd`.
    pub cmd: Option<String>,
    /// Argument vector, as Marathon's `args`; replaces the image's Cmd.
    pub args: Option<Vec<String>>,
    pub env: BTreeMap<String, String>,
    /// Local image reference; `None` runs a plain process in cgroups on the host filesystem.
    pub image: Option<String>,
    pub user: Option<String>,
    pub kill_grace_period_ms: u64,
    /// Default (empty) when reading log entries written before volumes existed.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// The host's network (default, also for entries written before bridging existed) or
    /// the agent's bridge with these port mappings (host ports are the task's `ports`).
    #[serde(default)]
    pub network: TaskNetworkMode,
    /// Run in a user namespace of its own (image tasks only); false for entries written
    /// before user namespaces existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub user_namespace: bool,
    /// Checks the agent runs beside the task; none for entries written before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<TaskHealthCheck>,
    /// Artifacts the agent puts into the sandbox before the task starts (Marathon's
    /// `fetch`, Mesos's `CommandInfo.uris`); none for entries written before fetching existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fetch: Vec<TaskFetch>,
    /// Checks the agent runs on the new task until it first passes; none for entries
    /// written before readiness checks existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readiness_checks: Vec<TaskReadinessCheck>,
    /// How much of the end of its stdout and of its stderr the agent sends with the task's
    /// end (`TaskOutput`; at most `OUTPUT_TAIL_MAX_BYTES`); 0, the default, sends none.
    #[serde(default, skip_serializing_if = "is_zero_bytes")]
    pub output_tail_bytes: u64,
}

fn is_zero_bytes(n: &u64) -> bool {
    *n == 0
}

/// Most of a task's output's end its last status carries, stdout and stderr together
/// (`LaunchSpec::output_tail_bytes`).
pub const OUTPUT_TAIL_MAX_BYTES: usize = 64 * 1024;

/// The end of what a task wrote, sent by its agent with the task's end when its launch
/// asked for it; both streams together at most `OUTPUT_TAIL_MAX_BYTES`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskOutput {
    pub stdout: String,
    pub stderr: String,
}

impl TaskOutput {
    /// Both streams together within `OUTPUT_TAIL_MAX_BYTES`, each keeping its end (cut at a
    /// character boundary): stderr keeps up to half, or more when stdout is shorter.
    pub fn bounded(mut self) -> TaskOutput {
        fn cut(text: &mut String, keep: usize) {
            if text.len() > keep {
                let mut start = text.len() - keep;
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                text.drain(..start);
            }
        }
        let max = OUTPUT_TAIL_MAX_BYTES;
        let stderr_keep = self
            .stderr
            .len()
            .min((max / 2).max(max.saturating_sub(self.stdout.len())));
        cut(&mut self.stderr, stderr_keep);
        cut(&mut self.stdout, max - stderr_keep);
        self
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.stdout.len() + self.stderr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A readiness check (Marathon's `readinessChecks`, the owner resolved its port): from
/// RUNNING, `GET path` on `127.0.0.1:port` every `interval_seconds` until the answer's
/// status is one of `ready_statuses`; then the task stays ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReadinessCheck {
    pub name: String,
    /// `http` or `https` (no certificate check, as for health checks).
    pub protocol: String,
    pub port: u16,
    pub path: String,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    pub ready_statuses: Vec<u16>,
    /// Keep the last answer's status, content type and (bounded) body in the result.
    pub preserve_last_response: bool,
}

/// What a task's readiness check last found (Marathon's `readinessCheckResults` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReadiness {
    pub name: String,
    pub ready: bool,
    /// The last answer, when the check preserves it (`None` without one, or on no answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_response: Option<ReadinessResponse>,
}

/// Marathon's `lastResponse` of a readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessResponse {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// One artifact to fetch into a task's sandbox, as Mesos's fetcher takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFetch {
    /// `http://`, `https://` or `file://` (the last only under the agent's `host_paths`).
    pub uri: String,
    /// Unpack a recognised archive (`.tar`, `.tar.gz`, `.tgz`, `.gz`) into the sandbox.
    pub extract: bool,
    /// Make the fetched file executable (not with `extract` of an archive).
    pub executable: bool,
    /// Keep a copy in the agent's artifact cache and reuse it for the same URI.
    pub cache: bool,
    /// The file name in the sandbox instead of the URI's last segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_file: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum TaskNetworkMode {
    #[default]
    Host,
    Bridge {
        port_mappings: Vec<PortMapping>,
    },
}

/// Bridge networking: traffic to the agent's `hostPort` (0 = any port of the agent's range)
/// reaches the task's `containerPort`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default)]
    pub host_port: u16,
    #[serde(default = "default_protocol")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Kept for load balancers (marathon-lb configures its frontends from it).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub service_port: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

/// A volume in Marathon's shape. `hostPath` absolute: a directory of the agent's host;
/// relative: a directory in the task's sandbox (created, removed with the sandbox). `tmpfs`
/// instead of `hostPath`: a memory-backed filesystem of that size (counted in `mem`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    pub container_path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RO` or `RW`.
    #[serde(default = "default_volume_mode")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs: Option<TmpfsSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSpec {
    #[serde(rename = "sizeMiB")]
    pub size_mib: u64,
}

impl VolumeSpec {
    pub fn read_only(&self) -> bool {
        self.mode == "RO"
    }
}

fn default_volume_mode() -> String {
    "RW".to_string()
}

pub(crate) fn default_protocol() -> String {
    "tcp".to_string()
}

/// Who a task belongs to. The owner's framework alone decides the task's life (relaunch,
/// kill when its definition is gone, backoff); the core only keeps its resources and agent
/// straight.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TaskOwner {
    /// An instance of a service app (the services framework, Marathon's `/v2`), launched
    /// from the app's config of `config_version_ms`.
    Service {
        app_id: String,
        config_version_ms: u64,
    },
    /// One run of a job (the jobs framework).
    JobRun { job_id: String, run_id: String },
    /// A task an external framework launched through the scheduler API.
    Framework { framework_id: String },
}

/// The id a framework knows its task by: a registered framework's tasks are kept as
/// `<framework id>.<its id>`; other tasks' ids are their own (Mesos's agent endpoints show
/// it as the task's executor id).
pub fn framework_own_task_id<'a>(framework_id: &str, task_id: &'a str) -> &'a str {
    task_id
        .strip_prefix(framework_id)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(task_id)
}

impl TaskOwner {
    /// The service app this task is an instance of, if it is one.
    pub fn service_app(&self) -> Option<&str> {
        match self {
            TaskOwner::Service { app_id, .. } => Some(app_id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TaskRecord")]
pub struct Task {
    pub id: String,
    pub owner: TaskOwner,
    pub agent_id: String,
    pub resources: Resources,
    /// Complete: the owning framework put every variable and port it wants into it; the agent
    /// adds only what only it knows (the sandbox path, its hostname, the task id).
    pub launch: LaunchSpec,
    pub state: TaskState,
    /// Set when the framework asked for the task to be killed; the agent reports the end.
    pub kill_requested: bool,
    pub staged_at_ms: u64,
    pub started_at_ms: Option<u64>,
    pub updated_at_ms: u64,
    pub message: Option<String>,
    pub exit_code: Option<i32>,
    /// Host ports given to the task, in the order its owner asked for them.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// What its agent's health checks last reported (`None`: no check has a result yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<TaskHealth>,
    /// What its agent's readiness check last reported (`None`: no result yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<TaskReadiness>,
}

/// A check the agent runs beside a task (the owner resolved ports and defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskHealthCheck {
    /// `http` or `https` (GET `path`, healthy on 200-399; no certificate check, as Mesos's
    /// checks), `tcp` (a connection is accepted), to `127.0.0.1:port` on the agent; or
    /// `command` (`command` run beside the task, as the task, healthy on exit 0; `port` 0).
    pub protocol: String,
    pub port: u16,
    /// The shell command of a `command` check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub grace_period_seconds: u32,
    pub interval_seconds: u32,
    pub timeout_seconds: u32,
    /// Failures in a row after which the task is killed (0: never).
    pub max_consecutive_failures: u32,
    pub delay_seconds: u32,
    #[serde(default)]
    pub ignore_http1xx: bool,
}

/// A task's health as its agent's checks last found it (Marathon's `healthCheckResults`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskHealth {
    /// Every check passed its last run.
    pub alive: bool,
    /// The most failures in a row of any check.
    pub consecutive_failures: u32,
    /// Some check reached its `max_consecutive_failures`: the task is to be replaced.
    pub exhausted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_success_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_cause: Option<String>,
}

/// A task as stored by any version: `owner` now; `app_id` and `app_config_version_ms` in
/// snapshots and log entries written before tasks had owners (every task was a service's).
#[derive(Deserialize)]
struct TaskRecord {
    id: String,
    #[serde(default)]
    owner: Option<TaskOwner>,
    #[serde(default)]
    app_id: Option<String>,
    #[serde(default)]
    app_config_version_ms: Option<u64>,
    agent_id: String,
    resources: Resources,
    launch: LaunchSpec,
    state: TaskState,
    kill_requested: bool,
    staged_at_ms: u64,
    started_at_ms: Option<u64>,
    updated_at_ms: u64,
    message: Option<String>,
    exit_code: Option<i32>,
    #[serde(default)]
    ports: Vec<u16>,
    #[serde(default)]
    health: Option<TaskHealth>,
    #[serde(default)]
    readiness: Option<TaskReadiness>,
}

impl TryFrom<TaskRecord> for Task {
    type Error = String;

    fn try_from(record: TaskRecord) -> Result<Task, String> {
        let owner = match (record.owner, record.app_id) {
            (Some(owner), _) => owner,
            (None, Some(app_id)) => TaskOwner::Service {
                app_id,
                config_version_ms: record.app_config_version_ms.unwrap_or(0),
            },
            (None, None) => return Err(format!("task {} has no owner", record.id)),
        };
        Ok(Task {
            id: record.id,
            owner,
            agent_id: record.agent_id,
            resources: record.resources,
            launch: record.launch,
            state: record.state,
            kill_requested: record.kill_requested,
            staged_at_ms: record.staged_at_ms,
            started_at_ms: record.started_at_ms,
            updated_at_ms: record.updated_at_ms,
            message: record.message,
            exit_code: record.exit_code,
            ports: record.ports,
            health: record.health,
            readiness: record.readiness,
        })
    }
}

impl Task {
    /// Counts against its agent's resources until the agent reports a terminal state.
    pub fn holds_resources(&self) -> bool {
        !self.state.is_terminal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_written_before_owners_existed_is_a_service_instance() {
        let old = r#"{"id":"web.1","app_id":"/web","agent_id":"a1",
            "resources":{"cpus_milli":100,"mem_mib":32,"disk_mib":0},
            "launch":{"cmd":"sleep 1","args":null,"env":{},"image":null,"user":null,
                      "kill_grace_period_ms":3000},
            "app_config_version_ms":7,"state":"TASK_RUNNING","kill_requested":false,
            "staged_at_ms":1,"started_at_ms":2,"updated_at_ms":2,"message":null,"exit_code":null}"#;
        let task: Task = serde_json::from_str(old).unwrap();
        assert_eq!(
            task.owner,
            TaskOwner::Service {
                app_id: "/web".into(),
                config_version_ms: 7
            }
        );
        assert!(task.ports.is_empty());
        // Written back in the new shape, it reads back the same.
        let again: Task = serde_json::from_str(&serde_json::to_string(&task).unwrap()).unwrap();
        assert_eq!(again, task);
        let json = serde_json::to_value(&task).unwrap();
        assert!(json.get("app_id").is_none(), "{json}");
        assert_eq!(json["owner"]["kind"], "service");
    }

    #[test]
    fn a_task_without_any_owner_is_refused() {
        let orphan = r#"{"id":"x","agent_id":"a1",
            "resources":{"cpus_milli":100,"mem_mib":32,"disk_mib":0},
            "launch":{"cmd":"true","args":null,"env":{},"image":null,"user":null,
                      "kill_grace_period_ms":0},
            "state":"TASK_STAGING","kill_requested":false,"staged_at_ms":1,
            "started_at_ms":null,"updated_at_ms":1,"message":null,"exit_code":null}"#;
        let error = serde_json::from_str::<Task>(orphan).unwrap_err();
        assert!(error.to_string().contains("no owner"), "{error}");
    }
}
