//! The Raft log entry (`Command`) and what applying it answers (`Outcome`).
//!
//! Every time and id a command needs is a field chosen by the leader before it proposes, so
//! applying the same log always yields the same state on every master.

use crate::services::app::AppSpec;
use crate::types::{Agent, Resources, Task, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// The log protocol this build writes and applies. A build that adds a command (or a field
/// an older build would drop) raises it and gives that command `Command::protocol` the new
/// number; the leader then refuses the command until every voting master has reported a
/// build that applies it (`ClusterState::protocol_of`), so masters of adjacent builds run
/// together during a rolling upgrade.
pub const PROTOCOL: u32 = 2;

// An app definition makes `PutApp` several times the size of the other commands; commands
// are built once per write and moved a few times, so boxing it would buy nothing measurable.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// An agent (re-)registers; an existing id keeps its tasks.
    RegisterAgent { agent: Agent },
    /// The images an agent's store holds now (presence keys, see `Agent::images`): sent
    /// when they change, so placement knows where each image is.
    AgentImages {
        agent_id: String,
        images: BTreeSet<String>,
    },
    /// Services framework: create (`create = true`, refused if the id exists) or replace an
    /// app definition. (The services commands stay flat in this enum so log entries written
    /// before frameworks were split keep their names.)
    PutApp {
        app: AppSpec,
        create: bool,
        at_ms: u64,
        deployment_id: String,
    },
    ScaleApp {
        app_id: String,
        instances: u32,
        at_ms: u64,
        deployment_id: String,
    },
    /// Replace every task of the app with a new one (Marathon's restart): a new config
    /// version with the same definition.
    RestartApp {
        app_id: String,
        at_ms: u64,
        deployment_id: String,
    },
    /// Services framework: a group's apps and subgroups at once (`ServicesState::put_group`).
    PutGroup {
        group_id: String,
        groups: Vec<crate::services::groups::GroupEntry>,
        apps: Vec<AppSpec>,
        create: bool,
        replace: bool,
        at_ms: u64,
        deployment_id: String,
    },
    /// Every app of the group goes, and the group.
    RemoveGroup { group_id: String, at_ms: u64 },
    /// Create (`create`, refused if the id exists) or replace a job (its runs, counts and
    /// history stay); its parents must be jobs and make no cycle.
    PutJob {
        job: crate::jobs::state::JobSpec,
        create: bool,
        at_ms: u64,
        /// Only if the job is still at this version (`JobRecord::version_ms`): a change
        /// read off the job as it was is refused (`JobChanged`) when another came between.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        if_version_ms: Option<u64>,
    },
    /// Remove a job; with `stop_runs` its runs under way are stopped (tasks killed), else
    /// such a job is refused, as is one another job names as parent.
    RemoveJob {
        job_id: String,
        stop_runs: bool,
        at_ms: u64,
    },
    /// Start a run of a job. A scheduled one is for an instant after the job's cursor,
    /// which it moves: each scheduled instant is started (or skipped) at most once.
    StartRun {
        job_id: String,
        run_id: String,
        workflow_id: String,
        trigger: crate::jobs::state::Trigger,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        arguments: Vec<String>,
        at_ms: u64,
    },
    /// Scheduled instants `first_ms..=last_ms` (`count` of them) of a job do not run.
    SkipRuns {
        job_id: String,
        first_ms: u64,
        last_ms: u64,
        count: u64,
        reason: crate::jobs::policy::SkipReason,
    },
    /// Stop a run: its live task is killed and it ends failed, without retries.
    StopRun { run_id: String, at_ms: u64 },
    /// Chronos's "mark a job successful": a success counted for the job without a run, so
    /// the jobs after it may run.
    MarkJobSuccess { job_id: String, at_ms: u64 },
    /// An external framework subscribed: new, or again with its id (`resubscribe`: it must
    /// be registered and not removed).
    SubscribeFramework {
        framework: crate::mesos::state::FrameworkRecord,
        resubscribe: bool,
        at_ms: u64,
    },
    /// A framework's subscription ended without a teardown: its failover timeout runs.
    FrameworkDisconnected { framework_id: String, at_ms: u64 },
    /// A framework is gone (teardown, or past its failover timeout): its live tasks are
    /// asked to be killed, and its id may not subscribe again.
    RemoveFramework { framework_id: String, at_ms: u64 },
    /// The framework acknowledged its task's status update `uuid` (and with it every
    /// earlier one of that task): they are not sent again.
    AcknowledgeUpdate {
        framework_id: String,
        task_id: String,
        uuid: String,
    },
    /// An operator set roles' weights in DRF (Mesos's `UPDATE_WEIGHTS`, `PUT /weights`).
    UpdateWeights { weights: Vec<(String, f64)> },
    /// An operator set a role's quota: what it is guaranteed and what it gets at most
    /// (Mesos's `UPDATE_QUOTA`); an empty guarantee and no limit remove it.
    UpdateQuota {
        role: String,
        guarantee: crate::types::Resources,
        limit: Option<crate::types::Resources>,
    },
    /// Rolls the app's deployment `failed_deployment_id`, while still under way, back to
    /// the version before it, as deployment `deployment_id` (Marathon's `DELETE
    /// /v2/deployments/{id}`). With `reason`, the services framework's own rollback of a
    /// deployment past the app's `progressDeadlineSeconds`, recorded on the app.
    RollBack {
        app_id: String,
        failed_deployment_id: String,
        at_ms: u64,
        deployment_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Forget the app's failures in a row, so its next launch is not delayed (Marathon's
    /// `DELETE /v2/queue/{id}/delay`).
    ResetDelay { app_id: String },
    /// Forget the app; its tasks are marked for killing and expunged once they end.
    RemoveApp { app_id: String, at_ms: u64 },
    /// Record a task placed by a framework; refused if its agent lacks the resources or
    /// ports, and for a service's task, if its app is unknown.
    LaunchTask { task: Task },
    /// Ask for a task to be killed; its state changes when the agent reports the end.
    KillTask { task_id: String, at_ms: u64 },
    /// Kill tasks at once, all or none (an unknown id refuses the whole command). With
    /// `scale`, each service app's `instances` goes down by the number of its tasks this
    /// kill ends: live and not already being killed, so a repeated request scales once
    /// (Marathon's `DELETE /v2/apps/{id}/tasks?scale=true` and `POST /v2/tasks/delete`).
    KillTasks {
        task_ids: Vec<String>,
        scale: bool,
        at_ms: u64,
        deployment_id: String,
    },
    /// A status update from the agent running the task.
    TaskStatus {
        task_id: String,
        state: TaskState,
        at_ms: u64,
        message: Option<String>,
        exit_code: Option<i32>,
        /// The end of its output, with a terminal state of a task whose launch asked for it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<crate::types::TaskOutput>,
    },
    /// What the health checks beside a live task found, from its agent.
    TaskHealth {
        task_id: String,
        health: crate::types::TaskHealth,
        at_ms: u64,
    },
    /// What the readiness check of a live task found, from its agent. Once ready, a task
    /// stays ready (as in Marathon, the check stops there).
    TaskReadiness {
        task_id: String,
        readiness: crate::types::TaskReadiness,
    },
    /// Drop the record of a terminal task.
    ExpungeTask { task_id: String },
    /// The leader heard nothing from the agent for the unreachable timeout: the agent gets no
    /// new tasks and its live tasks become TASK_UNREACHABLE (frameworks may replace them).
    /// Re-registering makes it active again.
    MarkAgentUnreachable { agent_id: String, at_ms: u64 },
    /// An operator drains the agent: it gets no new tasks and frameworks move its tasks to
    /// other agents (start-then-stop, with each task's kill grace). Survives re-registration.
    DrainAgent { agent_id: String },
    /// An operator forgets the agent: allowed once it is drained (no live tasks) or when it
    /// is unreachable, whose remaining tasks become TASK_LOST. The id may not register again.
    RemoveAgent { agent_id: String, at_ms: u64 },
    /// An operator revokes a certificate (its serial, hex): every master refuses it from
    /// then on (a removed master's; a removed agent's serial is revoked by `RemoveAgent`).
    RevokeCertificate { serial: String },
    /// A master reports the build it runs and the log protocol it applies (`PROTOCOL`).
    MasterBuild {
        master_id: u64,
        version: String,
        protocol: u32,
    },
    /// A backup's definitions (`dcos-rs cluster restore`) replace the frameworks' parts of
    /// the state: apps and groups, jobs and their history, external frameworks and roles.
    /// Agents and tasks stay this cluster's: the backup's tasks ran on the old cluster's
    /// agents, so its job runs under way and unacknowledged updates are dropped and the
    /// services framework starts each app's instances anew. Refused over a state holding an
    /// app, a job or a framework unless `replace`.
    Restore {
        services: crate::services::ServicesState,
        jobs: crate::jobs::state::JobsState,
        frameworks: crate::mesos::state::FrameworksState,
        replace: bool,
    },
    /// Several commands in one log entry (one fsync for all), applied in order as if each
    /// were its own entry (`ClusterState::apply_entry`, one outcome each). Not nested: a
    /// batch inside a batch, or given to `apply`, is refused with `Reject::NestedBatch`.
    Batch(Vec<Command>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    Applied,
    Rejected(Reject),
}

/// Business refusals: replicated like any result, never errors of the log itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Reject {
    #[error("an app with id {app_id} already exists")]
    AppExists { app_id: String },
    #[error("app {app_id} does not exist")]
    UnknownApp { app_id: String },
    #[error("group {group_id} already exists")]
    GroupExists { group_id: String },
    #[error("group {group_id} does not exist")]
    UnknownGroup { group_id: String },
    #[error("agent {agent_id} is not registered")]
    UnknownAgent { agent_id: String },
    #[error("agent {agent_id} was removed from the cluster; delete its work dir's agent_id file to join as a new agent")]
    AgentRemoved { agent_id: String },
    #[error("agent {agent_id} registered with the certificate of {registered:?}; {presented:?} may not take it over")]
    AgentCertificate {
        agent_id: String,
        registered: String,
        presented: String,
    },
    #[error("agent {agent_id} still runs {live_tasks} task(s) and is reachable: drain it first (dcos-rs node drain)")]
    AgentInUse { agent_id: String, live_tasks: usize },
    #[error("agent {agent_id} reports {count} image names, more than the {max} kept per agent")]
    TooManyImages {
        agent_id: String,
        count: usize,
        max: usize,
    },
    #[error("a batch of commands is applied as a log entry, and may not hold another batch")]
    NestedBatch,
    #[error("agent {agent_id} does not accept tasks (it is {state})")]
    AgentNotActive { agent_id: String, state: String },
    #[error("task {task_id} does not exist")]
    UnknownTask { task_id: String },
    #[error("task {task_id} already exists")]
    TaskExists { task_id: String },
    #[error("agent {agent_id} has {free:?} free, the task needs {needed:?}")]
    InsufficientResources {
        agent_id: String,
        needed: Resources,
        free: Resources,
    },
    #[error("task {task_id} is still running")]
    TaskNotTerminal { task_id: String },
    #[error("deployment {deployment_id} of {app_id} is not under way (any more)")]
    DeploymentNotUnderWay {
        app_id: String,
        deployment_id: String,
    },
    #[error("no earlier version of {app_id} is kept to roll back to; PUT the definition you want")]
    NothingToRollBackTo { app_id: String },
    #[error("no service port is left for {app_id} (10000-20000 are all in use): give its ports explicitly")]
    ServicePortsExhausted { app_id: String },
    #[error("job {job_id} does not exist")]
    UnknownJob { job_id: String },
    #[error("a job with id {job_id} already exists")]
    JobExists { job_id: String },
    #[error("job {job_id} is a parent of {child}: change or remove {child} first")]
    JobIsParent { job_id: String, child: String },
    #[error(
        "job {job_id} has runs under way ({runs:?}): stop them first (stopCurrentJobRuns=true)"
    )]
    JobRunsActive { job_id: String, runs: Vec<String> },
    #[error("job {job_id} changed while this change was being made: read it again and retry")]
    JobChanged { job_id: String },
    #[error("framework {framework_id} is not registered")]
    UnknownFramework { framework_id: String },
    #[error("role {role:?}: {reason}")]
    InvalidRole { role: String, reason: String },
    #[error("framework {framework_id} was removed and cannot subscribe again")]
    FrameworkRemoved { framework_id: String },
    #[error("run {run_id} already exists")]
    RunExists { run_id: String },
    #[error("run {run_id} does not exist or has finished")]
    UnknownRun { run_id: String },
    #[error("run {run_id} has a task under way already")]
    RunHasTask { run_id: String },
    #[error("job {job_id}: {reason}")]
    RunNotDue { job_id: String, reason: String },
    #[error("parents of job {job_id}: {reason}")]
    JobParents { job_id: String, reason: String },
    #[error("the scheduled instant {instant_ms} of job {job_id} is decided already (up to {through_ms})")]
    InstantDecided {
        job_id: String,
        instant_ms: u64,
        through_ms: u64,
    },
    #[error("agent {agent_id} cannot give ports {ports:?} (outside its ranges or in use)")]
    PortsUnavailable { agent_id: String, ports: Vec<u16> },
    #[error("this change needs log protocol {needs} but master(s) {behind:?} apply only {cluster}: it waits until every master runs a newer build (finish the upgrade)")]
    ProtocolTooNew {
        needs: u32,
        cluster: u32,
        behind: Vec<u64>,
    },
    #[error("this cluster already holds {apps} app(s) and group(s), {jobs} job(s) and {frameworks} framework(s): a restore replaces them only when asked to (replace)")]
    NotFresh {
        apps: usize,
        jobs: usize,
        frameworks: usize,
    },
}

impl Command {
    /// The lowest log protocol whose builds apply this command (see `PROTOCOL`): 2 for
    /// the commands the installer's build added (builds before it cannot read them), 1 for
    /// the rest.
    pub fn protocol(&self) -> u32 {
        match self {
            Command::Batch(commands) => commands.iter().map(Command::protocol).max().unwrap_or(1),
            Command::MasterBuild { .. }
            | Command::RevokeCertificate { .. }
            | Command::Restore { .. } => 2,
            _ => 1,
        }
    }
}
