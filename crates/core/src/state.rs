//! `ClusterState`: everything that must survive a master failure, changed only by `apply`.
//!
//! The cluster's own facts (agents, tasks, draining and removed agents) are fields here; each
//! built-in framework keeps its state in a field of its own (`services`), changed through that
//! framework's functions, so the rules about a task's owner stay with the owner.
//!
//! `apply` is pure and deterministic: no clock, no randomness, maps iterate in key order.
//! Each command that could break an invariant (see `invariant_violations`) checks, before it
//! changes anything, what it would break, and is refused (`Reject`) instead: a bug must never
//! make replay crash every master.

use crate::command::{Command, Outcome, Reject};
use crate::jobs::state::JobsState;
use crate::services::ServicesState;
use crate::types::{Agent, AgentState, Resources, Task, TaskOwner, TaskState};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use crate::services::AppRecord;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "StateRecord")]
pub struct ClusterState {
    pub agents: BTreeMap<String, Agent>,
    pub tasks: BTreeMap<String, Task>,
    /// Agents an operator is draining: no new tasks, and frameworks move theirs elsewhere.
    /// Kept across the agent's restarts and unreachable spells until it is removed.
    #[serde(default)]
    pub draining: BTreeSet<String>,
    /// Agents an operator removed: they may not register again under the same id.
    #[serde(default)]
    pub removed_agents: BTreeSet<String>,
    /// Serials (hex) of the certificates of removed agents: every master refuses them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub revoked_certificates: BTreeSet<String>,
    /// The services framework's apps.
    #[serde(default)]
    pub services: ServicesState,
    /// The jobs framework's jobs and runs.
    #[serde(default, skip_serializing_if = "JobsState::is_empty")]
    pub jobs: JobsState,
    /// The external frameworks registered through the scheduler API.
    #[serde(
        default,
        skip_serializing_if = "crate::mesos::state::FrameworksState::is_empty"
    )]
    pub frameworks: crate::mesos::state::FrameworksState,
    /// The build and log protocol each master reported (`Command::MasterBuild`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub masters: BTreeMap<u64, MasterBuild>,
    /// What the live tasks of each agent hold (a sum over `tasks`, never stored: rebuilt on
    /// restore), so a launch checks its agent's room without looking at any task.
    #[serde(skip)]
    held: BTreeMap<String, Held>,
}

/// Resources and host ports the live tasks of one agent hold.
#[derive(Debug, Clone, Default, PartialEq)]
struct Held {
    resources: Resources,
    ports: BTreeSet<u16>,
}

impl Held {
    /// What `tasks` hold, per agent.
    fn of<'a>(tasks: impl Iterator<Item = &'a Task>) -> BTreeMap<String, Held> {
        let mut held = BTreeMap::new();
        for task in tasks.filter(|t| t.holds_resources()) {
            hold(&mut held, task);
        }
        held
    }
}

/// The state as any version wrote it: `apps` sat beside `agents` before frameworks had
/// their own parts of the state.
#[derive(Deserialize)]
struct StateRecord {
    #[serde(default)]
    agents: BTreeMap<String, Agent>,
    #[serde(default)]
    tasks: BTreeMap<String, Task>,
    #[serde(default)]
    draining: BTreeSet<String>,
    #[serde(default)]
    removed_agents: BTreeSet<String>,
    #[serde(default)]
    revoked_certificates: BTreeSet<String>,
    #[serde(default)]
    services: Option<ServicesState>,
    #[serde(default)]
    apps: Option<BTreeMap<String, AppRecord>>,
    #[serde(default)]
    jobs: JobsState,
    #[serde(default)]
    frameworks: crate::mesos::state::FrameworksState,
    #[serde(default)]
    masters: BTreeMap<u64, MasterBuild>,
}

/// What a master runs: `dcos-rs --version` and the log protocol it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterBuild {
    pub version: String,
    pub protocol: u32,
}

impl From<StateRecord> for ClusterState {
    fn from(record: StateRecord) -> ClusterState {
        let services = match (record.services, record.apps) {
            (Some(services), _) => services,
            (None, Some(apps)) => ServicesState {
                apps,
                groups: BTreeMap::new(),
            },
            (None, None) => ServicesState::default(),
        };
        ClusterState {
            held: Held::of(record.tasks.values()),
            agents: record.agents,
            tasks: record.tasks,
            draining: record.draining,
            removed_agents: record.removed_agents,
            revoked_certificates: record.revoked_certificates,
            services,
            jobs: record.jobs,
            frameworks: record.frameworks,
            masters: record.masters,
        }
    }
}

impl ClusterState {
    /// The log protocol every one of `voters` applies: the lowest they reported (a master
    /// that has not reported yet counts as protocol 1), and those below `needs`.
    pub fn protocol_of(&self, voters: &[u64], needs: u32) -> (u32, Vec<u64>) {
        let of = |id: &u64| self.masters.get(id).map(|b| b.protocol).unwrap_or(1);
        let lowest = voters
            .iter()
            .map(of)
            .min()
            .unwrap_or(crate::command::PROTOCOL);
        let behind = voters.iter().filter(|id| of(id) < needs).copied().collect();
        (lowest, behind)
    }

    /// Applies one log entry: a command, or each command of a `Command::Batch` in order.
    /// One outcome per command.
    pub fn apply_entry(&mut self, command: &Command) -> Vec<Outcome> {
        match command {
            Command::Batch(commands) => commands.iter().map(|c| self.apply(c)).collect(),
            command => vec![self.apply(command)],
        }
    }

    pub fn apply(&mut self, command: &Command) -> Outcome {
        let outcome = match self.apply_inner(command) {
            Ok(()) => {
                self.note_progress(command);
                Outcome::Applied
            }
            Err(reject) => Outcome::Rejected(reject),
        };
        // Every test of this crate checks the invariants after every command.
        #[cfg(test)]
        self.assert_invariants();
        outcome
    }

    /// Asks for a live task to be killed (its agent is told by the framework's shell).
    fn request_kill(&mut self, task_id: &str, at_ms: u64) {
        if let Some(task) = self.tasks.get_mut(task_id) {
            if !task.state.is_terminal() {
                task.kill_requested = true;
                task.updated_at_ms = at_ms;
            }
        }
    }

    /// The apps an applied command may have brought to their definition, for
    /// `ServicesState::note_progress` (ended tasks count for nothing, so an expunge or an
    /// agent's loss never completes a deployment).
    fn note_progress(&mut self, command: &Command) {
        let task_app = |s: &Self, task_id: &str| {
            s.tasks
                .get(task_id)
                .and_then(|t| t.owner.service_app())
                .map(str::to_string)
        };
        let apps: Vec<String> = match command {
            Command::PutApp { app, .. } => vec![app.id.clone()],
            Command::ScaleApp { app_id, .. }
            | Command::RestartApp { app_id, .. }
            | Command::RollBack { app_id, .. } => vec![app_id.clone()],
            Command::PutGroup { apps, .. } => apps.iter().map(|a| a.id.clone()).collect(),
            Command::LaunchTask { task } => task
                .owner
                .service_app()
                .map(str::to_string)
                .into_iter()
                .collect(),
            Command::TaskStatus { task_id, .. }
            | Command::TaskHealth { task_id, .. }
            | Command::TaskReadiness { task_id, .. }
            | Command::KillTask { task_id, .. } => task_app(self, task_id).into_iter().collect(),
            Command::KillTasks { task_ids, .. } => task_ids
                .iter()
                .filter_map(|id| task_app(self, id))
                .collect(),
            _ => Vec::new(),
        };
        for app_id in apps {
            self.services.note_progress(&app_id, &self.tasks);
        }
    }

    fn apply_inner(&mut self, command: &Command) -> Result<(), Reject> {
        match command {
            Command::RegisterAgent { agent } => {
                check_images(&agent.id, &agent.images)?;
                if self.removed_agents.contains(&agent.id) {
                    return Err(Reject::AgentRemoved {
                        agent_id: agent.id.clone(),
                    });
                }
                if let Some(known) = self
                    .agents
                    .get(&agent.id)
                    .and_then(|a| a.certificate.as_ref())
                {
                    if agent.certificate.as_ref() != Some(known) {
                        return Err(Reject::AgentCertificate {
                            agent_id: agent.id.clone(),
                            registered: known.clone(),
                            presented: agent.certificate.clone().unwrap_or_default(),
                        });
                    }
                }
                self.agents.insert(agent.id.clone(), agent.clone());
            }
            Command::PutApp {
                app,
                create,
                at_ms,
                deployment_id,
            } => self.services.put_app(app, *create, *at_ms, deployment_id)?,
            Command::ScaleApp {
                app_id,
                instances,
                at_ms,
                deployment_id,
            } => self
                .services
                .scale_app(app_id, *instances, *at_ms, deployment_id)?,
            Command::RestartApp {
                app_id,
                at_ms,
                deployment_id,
            } => self.services.restart_app(app_id, *at_ms, deployment_id)?,
            Command::ResetDelay { app_id } => self.services.reset_delay(app_id)?,
            Command::PutGroup {
                group_id,
                groups,
                apps,
                create,
                replace,
                at_ms,
                deployment_id,
            } => self.services.put_group(
                group_id,
                groups,
                apps,
                *create,
                *replace,
                *at_ms,
                deployment_id,
                &mut self.tasks,
            )?,
            Command::RemoveGroup { group_id, at_ms } => {
                self.services
                    .remove_group(group_id, *at_ms, &mut self.tasks)?
            }
            Command::RemoveApp { app_id, at_ms } => {
                self.services.remove_app(app_id, *at_ms, &mut self.tasks)?
            }
            Command::RollBack {
                app_id,
                failed_deployment_id,
                at_ms,
                deployment_id,
                reason,
            } => self.services.roll_back(
                app_id,
                failed_deployment_id,
                *at_ms,
                deployment_id,
                reason.as_deref(),
                &mut self.tasks,
            )?,
            Command::LaunchTask { task } => {
                if self.tasks.contains_key(&task.id) {
                    return Err(Reject::TaskExists {
                        task_id: task.id.clone(),
                    });
                }
                // The owner's framework says whether it may have this task.
                match &task.owner {
                    TaskOwner::Service { app_id, .. } => self.services.check_launch(app_id)?,
                    TaskOwner::JobRun { job_id, run_id } => {
                        self.jobs.check_launch(job_id, run_id)?
                    }
                    TaskOwner::Framework { framework_id } => {
                        self.frameworks.check_launch(framework_id)?
                    }
                }
                let agent =
                    self.agents
                        .get(&task.agent_id)
                        .ok_or_else(|| Reject::UnknownAgent {
                            agent_id: task.agent_id.clone(),
                        })?;
                if agent.state != AgentState::Active || self.draining.contains(&agent.id) {
                    return Err(Reject::AgentNotActive {
                        agent_id: agent.id.clone(),
                        state: self.agent_state_label(&agent.id).to_string(),
                    });
                }
                let held = self.held.get(&agent.id).cloned().unwrap_or_default();
                let used = &held.ports;
                let free = agent.resources.saturating_sub(&held.resources);
                if !task.resources.fits_in(&free) {
                    return Err(Reject::InsufficientResources {
                        agent_id: agent.id.clone(),
                        needed: task.resources,
                        free,
                    });
                }
                let ports_ok = task
                    .ports
                    .iter()
                    .all(|p| agent.ports.iter().any(|r| r.contains(*p)))
                    && task
                        .ports
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .len()
                        == task.ports.len()
                    && task.ports.iter().all(|p| !used.contains(p));
                if !ports_ok {
                    return Err(Reject::PortsUnavailable {
                        agent_id: agent.id.clone(),
                        ports: task.ports.clone(),
                    });
                }
                if task.holds_resources() {
                    hold(&mut self.held, task);
                }
                self.tasks.insert(task.id.clone(), task.clone());
                self.jobs.task_launched(task);
            }
            Command::PutJob {
                job,
                create,
                at_ms,
                if_version_ms,
            } => {
                if let Some(version) = if_version_ms {
                    let current = self.jobs.jobs.get(&job.id).map(|r| r.version_ms);
                    if current != Some(*version) {
                        return Err(Reject::JobChanged {
                            job_id: job.id.clone(),
                        });
                    }
                }
                let graph: BTreeMap<String, Vec<String>> = self
                    .jobs
                    .jobs
                    .iter()
                    .filter(|(id, _)| **id != job.id)
                    .map(|(id, j)| (id.clone(), j.spec.parents.clone()))
                    .collect();
                crate::jobs::dag::check_parents(&graph, &job.id, &job.parents).map_err(|e| {
                    Reject::JobParents {
                        job_id: job.id.clone(),
                        reason: e.to_string(),
                    }
                })?;
                self.jobs.put_job(job, *create, *at_ms)?
            }
            Command::RemoveJob {
                job_id,
                stop_runs,
                at_ms,
            } => {
                for task_id in self.jobs.remove_job(job_id, *stop_runs)? {
                    self.request_kill(&task_id, *at_ms);
                }
            }
            Command::StartRun {
                job_id,
                run_id,
                workflow_id,
                trigger,
                arguments,
                at_ms,
            } => self
                .jobs
                .start_run(job_id, run_id, workflow_id, trigger, arguments, *at_ms)?,
            Command::SkipRuns {
                job_id,
                first_ms,
                last_ms,
                count,
                reason,
            } => self
                .jobs
                .skip(job_id, *first_ms, *last_ms, *count, reason)?,
            Command::StopRun { run_id, at_ms } => {
                for task_id in self.jobs.stop_run(run_id, *at_ms)? {
                    self.request_kill(&task_id, *at_ms);
                }
            }
            Command::MarkJobSuccess { job_id, at_ms } => self.jobs.mark_success(job_id, *at_ms)?,
            Command::SubscribeFramework {
                framework,
                resubscribe,
                at_ms,
            } => self.frameworks.subscribe(framework, *resubscribe, *at_ms)?,
            Command::FrameworkDisconnected {
                framework_id,
                at_ms,
            } => self.frameworks.disconnected(framework_id, *at_ms)?,
            Command::RemoveFramework {
                framework_id,
                at_ms,
            } => {
                self.frameworks.remove(framework_id)?;
                let live: Vec<String> = self
                    .tasks
                    .values()
                    .filter(|t| {
                        matches!(&t.owner, TaskOwner::Framework { framework_id: f } if f == framework_id)
                    })
                    .map(|t| t.id.clone())
                    .collect();
                for task_id in live {
                    // Nobody is left to acknowledge its updates.
                    self.frameworks.task_expunged(&task_id);
                    self.request_kill(&task_id, *at_ms);
                }
            }
            Command::AcknowledgeUpdate {
                framework_id,
                task_id,
                uuid,
            } => self
                .frameworks
                .acknowledge(framework_id, self.tasks.get(task_id), uuid)?,
            Command::UpdateWeights { weights } => self.frameworks.update_weights(weights)?,
            Command::UpdateQuota {
                role,
                guarantee,
                limit,
            } => self
                .frameworks
                .update_quota(role, guarantee, limit.as_ref())?,
            Command::KillTask { task_id, at_ms } => {
                let task = self.task_mut(task_id)?;
                if !task.state.is_terminal() {
                    task.kill_requested = true;
                    task.updated_at_ms = *at_ms;
                }
            }
            Command::KillTasks {
                task_ids,
                scale,
                at_ms,
                deployment_id,
            } => {
                if let Some(unknown) = task_ids.iter().find(|id| !self.tasks.contains_key(*id)) {
                    return Err(Reject::UnknownTask {
                        task_id: unknown.clone(),
                    });
                }
                let mut ended: BTreeMap<String, u32> = BTreeMap::new();
                for task_id in task_ids {
                    let task = self.tasks.get_mut(task_id).expect("checked above");
                    if task.state.is_terminal() || task.kill_requested {
                        continue;
                    }
                    task.kill_requested = true;
                    task.updated_at_ms = *at_ms;
                    if let TaskOwner::Service { app_id, .. } = &task.owner {
                        *ended.entry(app_id.clone()).or_default() += 1;
                    }
                }
                if *scale {
                    for (app_id, n) in ended {
                        // An app removed since its task was placed has nothing to scale.
                        let Some(record) = self.services.apps.get(&app_id) else {
                            continue;
                        };
                        let instances = record.spec.instances.saturating_sub(n);
                        self.services
                            .scale_app(&app_id, instances, *at_ms, deployment_id)?;
                    }
                }
            }
            Command::TaskStatus {
                task_id,
                state,
                at_ms,
                message,
                exit_code,
                output,
            } => {
                // A live state reported before its agent went silent, recorded after: the
                // task stays unreachable until the agent is back (and reports again).
                let agent_active = self.tasks.get(task_id).is_some_and(|t| {
                    self.agents
                        .get(&t.agent_id)
                        .is_some_and(|a| a.state == AgentState::Active)
                });
                let task = self.task_mut(task_id)?;
                // A terminal state is final, and live states only move forward
                // (STAGING < STARTING < RUNNING < KILLING): late or duplicated updates
                // change nothing. TASK_UNREACHABLE is left by whatever its agent reports
                // once it is back, and never entered through a status update.
                let from_unreachable = task.state == TaskState::Unreachable;
                let previous = task.state;
                if *state == TaskState::Unreachable
                    || task.state.is_terminal()
                    || (!from_unreachable && !state.is_terminal() && *state < task.state)
                    || (from_unreachable && !state.is_terminal() && !agent_active)
                {
                    return Ok(());
                }
                task.state = *state;
                task.updated_at_ms = *at_ms;
                if message.is_some() {
                    task.message = message.clone();
                }
                if exit_code.is_some() {
                    task.exit_code = *exit_code;
                }
                if *state == TaskState::Running && task.started_at_ms.is_none() {
                    task.started_at_ms = Some(*at_ms);
                }
                // Live until now (see above): an end frees what it held.
                if state.is_terminal() {
                    let task = &self.tasks[task_id];
                    release(&mut self.held, task);
                }
                self.services.task_changed(&self.tasks[task_id], *at_ms);
                self.jobs
                    .task_changed(&self.tasks[task_id], *at_ms, output.as_ref());
                // A framework hears of a change once (a report repeated is none).
                if previous != *state {
                    self.frameworks.task_changed(&self.tasks[task_id]);
                }
            }
            Command::TaskReadiness { task_id, readiness } => {
                let task = self.task_mut(task_id)?;
                let was_ready = task.readiness.as_ref().is_some_and(|r| r.ready);
                // A late report about a task that has ended changes nothing, and readiness
                // once reached is kept.
                if task.state.is_terminal() || was_ready {
                    return Ok(());
                }
                task.readiness = Some(readiness.clone());
            }
            Command::TaskHealth {
                task_id,
                health,
                at_ms,
            } => {
                let task = self.task_mut(task_id)?;
                // A late report about a task that has ended changes nothing.
                if task.state.is_terminal() {
                    return Ok(());
                }
                let newly_exhausted =
                    health.exhausted && !task.health.as_ref().is_some_and(|h| h.exhausted);
                task.health = Some(health.clone());
                task.updated_at_ms = task.updated_at_ms.max(*at_ms);
                if newly_exhausted {
                    self.services.task_unhealthy(&self.tasks[task_id], *at_ms);
                } else if health.alive {
                    self.services.task_healthy(&self.tasks[task_id]);
                }
            }
            Command::ExpungeTask { task_id } => {
                let task = self.task_mut(task_id)?;
                // Ended, or unreachable for its app's expungeAfterSeconds: forgotten (an
                // expunged task whose agent comes back is killed there as unknown).
                if !task.state.is_terminal() && task.state != TaskState::Unreachable {
                    return Err(Reject::TaskNotTerminal {
                        task_id: task_id.clone(),
                    });
                }
                self.frameworks.task_expunged(task_id);
                if let Some(mut task) = self.tasks.remove(task_id) {
                    if !task.state.is_terminal() {
                        release(&mut self.held, &task);
                        // A job run's attempt ends with its task (an unreachable one given up).
                        task.state = TaskState::Lost;
                        self.jobs.task_changed(&task, task.updated_at_ms, None);
                    }
                }
            }
            Command::MarkAgentUnreachable { agent_id, at_ms } => {
                let agent = self.agent_mut(agent_id)?;
                agent.state = AgentState::Unreachable;
                let mut unreachable = Vec::new();
                for task in self
                    .tasks
                    .values_mut()
                    .filter(|t| t.agent_id == *agent_id && !t.state.is_terminal())
                {
                    task.state = TaskState::Unreachable;
                    task.updated_at_ms = *at_ms;
                    task.message = Some("its agent stopped answering".to_string());
                    unreachable.push(task.id.clone());
                }
                for task_id in unreachable {
                    self.frameworks.task_changed(&self.tasks[&task_id]);
                }
            }
            Command::Batch(_) => return Err(Reject::NestedBatch),
            Command::AgentImages { agent_id, images } => {
                check_images(agent_id, images)?;
                let agent = self.agent_mut(agent_id)?;
                agent.images = images.clone();
            }
            Command::DrainAgent { agent_id } => {
                if !self.agents.contains_key(agent_id) {
                    return Err(Reject::UnknownAgent {
                        agent_id: agent_id.clone(),
                    });
                }
                self.draining.insert(agent_id.clone());
            }
            Command::RevokeCertificate { serial } => {
                self.revoked_certificates
                    .insert(serial.to_ascii_lowercase());
            }
            Command::MasterBuild {
                master_id,
                version,
                protocol,
            } => {
                self.masters.insert(
                    *master_id,
                    MasterBuild {
                        version: version.clone(),
                        protocol: *protocol,
                    },
                );
            }
            Command::Restore {
                services,
                jobs,
                frameworks,
                replace,
            } => {
                let held = (
                    self.services.apps.len() + self.services.groups.len(),
                    self.jobs.jobs.len(),
                    self.frameworks.frameworks.len(),
                );
                if held != (0, 0, 0) && !replace {
                    return Err(Reject::NotFresh {
                        apps: held.0,
                        jobs: held.1,
                        frameworks: held.2,
                    });
                }
                // This cluster's tasks of the replaced definitions are no one's now.
                let mut services = services.clone();
                let mut jobs = jobs.clone();
                let mut frameworks = frameworks.clone();
                jobs.runs.clear();
                jobs.output_bytes = 0;
                frameworks.updates.clear();
                services
                    .apps
                    .values_mut()
                    .for_each(|app| app.consecutive_failures = 0);
                self.services = services;
                self.jobs = jobs;
                self.frameworks = frameworks;
            }
            Command::RemoveAgent { agent_id, at_ms } => {
                let agent = self
                    .agents
                    .get(agent_id)
                    .ok_or_else(|| Reject::UnknownAgent {
                        agent_id: agent_id.clone(),
                    })?;
                let live = self
                    .tasks
                    .values()
                    .filter(|t| t.agent_id == *agent_id && !t.state.is_terminal())
                    .count();
                let drained = self.draining.contains(agent_id) && live == 0;
                if agent.state == AgentState::Active && !drained {
                    return Err(Reject::AgentInUse {
                        agent_id: agent_id.clone(),
                        live_tasks: live,
                    });
                }
                // What an unreachable agent ran is gone with it; frameworks replaced it already.
                let mut lost = Vec::new();
                for task in self
                    .tasks
                    .values_mut()
                    .filter(|t| t.agent_id == *agent_id && !t.state.is_terminal())
                {
                    task.state = TaskState::Lost;
                    task.updated_at_ms = *at_ms;
                    task.message = Some("its agent was removed by an operator".to_string());
                    lost.push(task.id.clone());
                }
                for task_id in lost {
                    self.jobs.task_changed(&self.tasks[&task_id], *at_ms, None);
                    self.frameworks.task_changed(&self.tasks[&task_id]);
                }
                self.held.remove(agent_id);
                if let Some(serial) = self
                    .agents
                    .remove(agent_id)
                    .and_then(|a| a.certificate_serial)
                {
                    self.revoked_certificates.insert(serial);
                }
                self.draining.remove(agent_id);
                self.removed_agents.insert(agent_id.clone());
            }
        }
        Ok(())
    }

    /// "active", "draining", "unreachable" or "gone": liveness, with draining shown on top.
    pub fn agent_state_label(&self, agent_id: &str) -> &'static str {
        match self.agents.get(agent_id).map(|a| &a.state) {
            None => "gone",
            Some(AgentState::Active) if self.draining.contains(agent_id) => "draining",
            Some(state) => state.as_str(),
        }
    }

    fn agent_mut(&mut self, agent_id: &str) -> Result<&mut Agent, Reject> {
        self.agents
            .get_mut(agent_id)
            .ok_or_else(|| Reject::UnknownAgent {
                agent_id: agent_id.to_string(),
            })
    }

    fn task_mut(&mut self, task_id: &str) -> Result<&mut Task, Reject> {
        self.tasks
            .get_mut(task_id)
            .ok_or_else(|| Reject::UnknownTask {
                task_id: task_id.to_string(),
            })
    }

    /// Resources and host ports held by tasks on an agent that have not ended.
    pub fn held_on(&self, agent_id: &str) -> (Resources, &BTreeSet<u16>) {
        static NONE: BTreeSet<u16> = BTreeSet::new();
        match self.held.get(agent_id) {
            Some(held) => (held.resources, &held.ports),
            None => (Resources::default(), &NONE),
        }
    }

    /// Resources held by tasks on an agent that have not ended.
    pub fn used_resources(&self, agent_id: &str) -> Resources {
        self.held
            .get(agent_id)
            .map(|held| held.resources)
            .unwrap_or_default()
    }

    pub fn free_resources(&self, agent_id: &str) -> Resources {
        match self.agents.get(agent_id) {
            Some(agent) => agent
                .resources
                .saturating_sub(&self.used_resources(agent_id)),
            None => Resources::default(),
        }
    }

    /// The tasks of a service app (any state), in id order.
    pub fn tasks_of_app<'a>(&'a self, app_id: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        ServicesState::tasks_of_app(&self.tasks, app_id)
    }

    /// What breaks the invariants that hold after every apply and every snapshot restore
    /// (empty when all hold). An agent may hold more than it now offers (it can re-register
    /// smaller while its tasks run); launches never over-commit, `LaunchTask` refuses them.
    /// Every command refuses what would add a violation, so production code only reports
    /// these (on restore); tests assert them after every command.
    pub fn invariant_violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        if self.held != Held::of(self.tasks.values()) {
            violations
                .push("the sums of what agents' tasks hold do not match the tasks".to_string());
        }
        let mut ports_in_use = BTreeSet::new();
        for task in self.tasks.values().filter(|t| t.holds_resources()) {
            for port in &task.ports {
                if !ports_in_use.insert((task.agent_id.as_str(), *port)) {
                    violations.push(format!(
                        "port {port} given twice on agent {}",
                        task.agent_id
                    ));
                }
            }
            if !self.agents.contains_key(&task.agent_id) {
                violations.push(format!(
                    "task {} holds resources on unknown agent {}",
                    task.id, task.agent_id
                ));
            }
        }
        for run in self.jobs.runs.values() {
            if !self.jobs.jobs.contains_key(&run.job_id) {
                violations.push(format!(
                    "run {} of a job that does not exist ({})",
                    run.id, run.job_id
                ));
            }
        }
        violations
    }

    /// Panics when an invariant is broken (tests call it after every command).
    pub fn assert_invariants(&self) {
        let violations = self.invariant_violations();
        assert!(violations.is_empty(), "invariants broken: {violations:?}");
    }
}

/// `task` is live: its agent's sums count it. (An agent holding nothing has no entry.)
fn hold(held: &mut BTreeMap<String, Held>, task: &Task) {
    let entry = held.entry(task.agent_id.clone()).or_default();
    entry.resources = entry.resources.add(&task.resources);
    entry.ports.extend(task.ports.iter().copied());
    if *entry == Held::default() {
        held.remove(&task.agent_id);
    }
}

/// `task` ended: its agent's sums no longer count it.
fn release(held: &mut BTreeMap<String, Held>, task: &Task) {
    if let Some(entry) = held.get_mut(&task.agent_id) {
        entry.resources = entry.resources.saturating_sub(&task.resources);
        for port in &task.ports {
            entry.ports.remove(port);
        }
        if *entry == Held::default() {
            held.remove(&task.agent_id);
        }
    }
}

fn check_images(agent_id: &str, images: &BTreeSet<String>) -> Result<(), Reject> {
    match images.len() > crate::types::IMAGES_PER_AGENT_MAX {
        true => Err(Reject::TooManyImages {
            agent_id: agent_id.to_string(),
            count: images.len(),
            max: crate::types::IMAGES_PER_AGENT_MAX,
        }),
        false => Ok(()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::services::app::AppSpec;
    use crate::types::LaunchSpec;

    pub fn agent(id: &str, cpus_milli: u64, mem_mib: u64) -> Agent {
        Agent {
            id: id.into(),
            hostname: "h".into(),
            url: "http://127.0.0.1:5051".into(),
            resources: Resources {
                cpus_milli,
                mem_mib,
                disk_mib: 1000,
            },
            state: AgentState::Active,
            registered_at_ms: 1,
            ports: vec![crate::types::PortRange {
                begin: 31000,
                end: 31009,
            }],
            certificate: None,
            certificate_serial: None,
            version: String::new(),
            images: Default::default(),
            attributes: Default::default(),
        }
    }

    pub fn app(id: &str, instances: u32) -> AppSpec {
        let mut spec: AppSpec = serde_json::from_value(serde_json::json!({
            "id": id, "cmd": "sleep 100", "cpus": 0.5, "mem": 64, "instances": instances
        }))
        .unwrap();
        spec.normalize_and_validate().unwrap();
        spec
    }

    /// Agents `(id, milli-cpus, MiB)` registered and apps `(id, instances)` put, at 1 ms.
    pub fn cluster(agents: &[(&str, u64, u64)], apps: &[(&str, u32)]) -> ClusterState {
        let mut s = ClusterState::default();
        for (id, cpus, mem) in agents {
            s.apply(&Command::RegisterAgent {
                agent: agent(id, *cpus, *mem),
            });
        }
        for (id, n) in apps {
            s.apply(&Command::PutApp {
                app: app(id, *n),
                create: true,
                at_ms: 1,
                deployment_id: "d".into(),
            });
        }
        s
    }

    pub fn task(id: &str, app_id: &str, agent_id: &str, config_version_ms: u64) -> Task {
        Task {
            id: id.into(),
            owner: TaskOwner::Service {
                app_id: app_id.into(),
                config_version_ms,
            },
            agent_id: agent_id.into(),
            resources: Resources {
                cpus_milli: 500,
                mem_mib: 64,
                disk_mib: 0,
            },
            launch: LaunchSpec {
                cmd: Some("sleep 100".into()),
                args: None,
                env: Default::default(),
                image: None,
                user: None,
                kill_grace_period_ms: 3000,
                volumes: vec![],
                network: Default::default(),
                user_namespace: false,
                health_checks: vec![],
                fetch: vec![],
                readiness_checks: vec![],
                output_tail_bytes: 0,
            },
            state: TaskState::Staging,
            kill_requested: false,
            staged_at_ms: 10,
            started_at_ms: None,
            updated_at_ms: 10,
            message: None,
            exit_code: None,
            ports: vec![],
            health: None,
            readiness: None,
        }
    }

    pub(crate) fn status(task_id: &str, state: TaskState, at_ms: u64) -> Command {
        Command::TaskStatus {
            task_id: task_id.into(),
            state,
            at_ms,
            message: None,
            exit_code: None,
            output: None,
        }
    }

    /// A log touching every command kind, used by the determinism and snapshot tests.
    pub fn sample_log() -> Vec<Command> {
        vec![
            Command::RegisterAgent {
                agent: agent("a1", 2000, 1024),
            },
            Command::PutApp {
                app: app("/web", 2),
                create: true,
                at_ms: 5,
                deployment_id: "d1".into(),
            },
            Command::PutApp {
                app: app("/web", 2),
                create: true,
                at_ms: 6,
                deployment_id: "d2".into(),
            },
            Command::LaunchTask {
                task: task("t1", "/web", "a1", 5),
            },
            Command::LaunchTask {
                task: task("t2", "/web", "a1", 5),
            },
            status("t1", TaskState::Running, 20),
            status("t2", TaskState::Failed, 21),
            Command::ScaleApp {
                app_id: "/web".into(),
                instances: 1,
                at_ms: 30,
                deployment_id: "d3".into(),
            },
            Command::ExpungeTask {
                task_id: "t2".into(),
            },
            Command::KillTask {
                task_id: "t1".into(),
                at_ms: 40,
            },
            status("t1", TaskState::Killed, 41),
            status("t1", TaskState::Running, 42),
            Command::RemoveApp {
                app_id: "/web".into(),
                at_ms: 50,
            },
            Command::ScaleApp {
                app_id: "/nope".into(),
                instances: 1,
                at_ms: 51,
                deployment_id: "d4".into(),
            },
            Command::LaunchTask {
                task: task("t3", "/api", "a1", 5),
            },
            Command::MarkAgentUnreachable {
                agent_id: "a1".into(),
                at_ms: 52,
            },
            status("t3", TaskState::Running, 53),
        ]
    }

    #[test]
    fn removing_an_agent_revokes_its_certificate() {
        let mut s = ClusterState::default();
        let mut registered = agent("a1", 1000, 1024);
        registered.certificate = Some("a1".into());
        registered.certificate_serial = Some("0badc0de".into());
        s.apply(&Command::RegisterAgent { agent: registered });
        s.apply(&Command::DrainAgent {
            agent_id: "a1".into(),
        });
        assert_eq!(
            s.apply(&Command::RemoveAgent {
                agent_id: "a1".into(),
                at_ms: 5
            }),
            Outcome::Applied
        );
        assert!(s.revoked_certificates.contains("0badc0de"));
        assert!(s.removed_agents.contains("a1"));
        // Kept through a snapshot.
        let json = serde_json::to_string(&s).unwrap();
        let back: ClusterState = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn apply_is_deterministic() {
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        let outcomes_a: Vec<_> = sample_log().iter().map(|c| a.apply(c)).collect();
        let outcomes_b: Vec<_> = sample_log().iter().map(|c| b.apply(c)).collect();
        assert_eq!(a, b);
        assert_eq!(outcomes_a, outcomes_b);
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
    }

    #[test]
    fn what_a_task_holds_is_freed_when_it_ends_or_its_agent_goes() {
        let mut s = cluster(&[("a1", 1000, 128)], &[("/web", 2)]);
        let mut first = task("t1", "/web", "a1", 1);
        first.ports = vec![31000];
        let mut second = task("t2", "/web", "a1", 1);
        second.ports = vec![31000];
        let launch = |t: &Task| Command::LaunchTask { task: t.clone() };
        assert_eq!(s.apply(&launch(&first)), Outcome::Applied);
        // The port is taken while t1 lives.
        assert!(matches!(
            s.apply(&launch(&second)),
            Outcome::Rejected(Reject::PortsUnavailable { .. })
        ));
        assert_eq!(s.used_resources("a1").mem_mib, 64);
        s.apply(&status("t1", TaskState::Failed, 5));
        assert_eq!(s.used_resources("a1"), Resources::default());
        assert_eq!(s.apply(&launch(&second)), Outcome::Applied);
        s.apply(&Command::MarkAgentUnreachable {
            agent_id: "a1".into(),
            at_ms: 6,
        });
        assert_eq!(
            s.used_resources("a1").mem_mib,
            64,
            "unreachable still holds"
        );
        s.apply(&Command::RemoveAgent {
            agent_id: "a1".into(),
            at_ms: 7,
        });
        assert_eq!(s.used_resources("a1"), Resources::default());
        // `apply` checks the sums against the tasks after every command (test builds).
    }

    #[test]
    fn snapshot_round_trip_then_replay_matches() {
        let log = sample_log();
        for split in 0..=log.len() {
            let mut full = ClusterState::default();
            for c in &log {
                full.apply(c);
            }
            let mut first = ClusterState::default();
            for c in &log[..split] {
                first.apply(c);
            }
            let bytes = serde_json::to_vec(&first).unwrap();
            let mut restored: ClusterState = serde_json::from_slice(&bytes).unwrap();
            restored.assert_invariants();
            for c in &log[split..] {
                restored.apply(c);
            }
            assert_eq!(restored, full, "split at {split}");
        }
    }

    #[test]
    fn duplicate_app_is_rejected_and_changes_nothing() {
        let mut s = ClusterState::default();
        s.apply(&Command::PutApp {
            app: app("/web", 1),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let before = s.clone();
        let outcome = s.apply(&Command::PutApp {
            app: app("/web", 3),
            create: true,
            at_ms: 2,
            deployment_id: "e".into(),
        });
        assert_eq!(
            outcome,
            Outcome::Rejected(Reject::AppExists {
                app_id: "/web".into()
            })
        );
        assert_eq!(s, before);
    }

    #[test]
    fn launch_beyond_agent_resources_is_rejected() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 1000, 100),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 3),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        assert_eq!(
            s.apply(&Command::LaunchTask {
                task: task("t1", "/web", "a1", 1)
            }),
            Outcome::Applied
        );
        let outcome = s.apply(&Command::LaunchTask {
            task: task("t2", "/web", "a1", 1),
        });
        assert!(matches!(
            outcome,
            Outcome::Rejected(Reject::InsufficientResources { .. })
        ));
        assert_eq!(s.tasks.len(), 1);
    }

    #[test]
    fn agent_re_registering_smaller_keeps_its_tasks_and_blocks_launches() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 2000, 1000),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 3),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        assert_eq!(
            s.apply(&Command::RegisterAgent {
                agent: agent("a1", 100, 10)
            }),
            Outcome::Applied
        );
        assert!(s.tasks.contains_key("t1"));
        assert_eq!(
            s.free_resources("a1"),
            Resources {
                cpus_milli: 0,
                mem_mib: 0,
                disk_mib: 1000
            }
        );
        assert!(matches!(
            s.apply(&Command::LaunchTask {
                task: task("t2", "/web", "a1", 1)
            }),
            Outcome::Rejected(Reject::InsufficientResources { .. })
        ));
    }

    #[test]
    fn live_states_only_move_forward() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 2000, 1000),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 1),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        s.apply(&status("t1", TaskState::Running, 5));
        s.apply(&status("t1", TaskState::Starting, 6));
        assert_eq!(s.tasks["t1"].state, TaskState::Running);
    }

    #[test]
    fn a_host_port_is_held_by_one_live_task_per_agent() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 4000, 1000),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 2),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        let mut t1 = task("t1", "/web", "a1", 1);
        t1.ports = vec![31000];
        assert_eq!(s.apply(&Command::LaunchTask { task: t1 }), Outcome::Applied);
        let mut t2 = task("t2", "/web", "a1", 1);
        t2.ports = vec![31000];
        assert!(matches!(
            s.apply(&Command::LaunchTask { task: t2.clone() }),
            Outcome::Rejected(Reject::PortsUnavailable { .. })
        ));
        t2.ports = vec![40000];
        assert!(
            matches!(
                s.apply(&Command::LaunchTask { task: t2.clone() }),
                Outcome::Rejected(Reject::PortsUnavailable { .. })
            ),
            "outside the agent's range"
        );
        s.apply(&status("t1", TaskState::Finished, 5));
        t2.ports = vec![31000];
        assert_eq!(
            s.apply(&Command::LaunchTask { task: t2 }),
            Outcome::Applied,
            "freed when t1 ended"
        );
    }

    #[test]
    fn terminal_state_is_final_and_frees_resources() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 1000, 100),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 1),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        s.apply(&status("t1", TaskState::Running, 5));
        assert_eq!(s.tasks["t1"].started_at_ms, Some(5));
        s.apply(&status("t1", TaskState::Failed, 6));
        s.apply(&status("t1", TaskState::Running, 7));
        assert_eq!(s.tasks["t1"].state, TaskState::Failed);
        assert_eq!(s.free_resources("a1").mem_mib, 100);
        assert_eq!(s.services.apps["/web"].consecutive_failures, 1);
    }

    #[test]
    fn removing_an_app_marks_its_tasks_for_killing() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 1000, 100),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 1),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        s.apply(&Command::LaunchTask {
            task: task("t1", "/web", "a1", 1),
        });
        s.apply(&Command::RemoveApp {
            app_id: "/web".into(),
            at_ms: 3,
        });
        assert!(s.tasks["t1"].kill_requested);
        assert!(s.services.apps.is_empty());
        assert!(matches!(
            s.apply(&Command::ExpungeTask {
                task_id: "t1".into()
            }),
            Outcome::Rejected(Reject::TaskNotTerminal { .. })
        ));
    }

    #[test]
    fn kill_with_scale_is_all_or_nothing_and_counts_a_task_once() {
        let mut s = ClusterState::default();
        s.apply(&Command::RegisterAgent {
            agent: agent("a1", 4000, 4096),
        });
        s.apply(&Command::PutApp {
            app: app("/web", 4),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        for id in ["t1", "t2", "t3", "t4"] {
            let launched = s.apply(&Command::LaunchTask {
                task: task(id, "/web", "a1", 1),
            });
            assert_eq!(launched, Outcome::Applied);
        }
        s.apply(&status("t4", TaskState::Failed, 2));
        let kill = |ids: &[&str], at_ms| Command::KillTasks {
            task_ids: ids.iter().map(|id| id.to_string()).collect(),
            scale: true,
            at_ms,
            deployment_id: format!("k{at_ms}"),
        };
        // One unknown id: nothing is killed and the app keeps its size.
        assert!(matches!(
            s.apply(&kill(&["t1", "nope"], 3)),
            Outcome::Rejected(Reject::UnknownTask { task_id }) if task_id == "nope"
        ));
        assert!(!s.tasks["t1"].kill_requested);
        assert_eq!(s.services.apps["/web"].spec.instances, 4);
        // An ended task (t4) ends nothing; t1 and t2 take the app from 4 to 2.
        assert_eq!(s.apply(&kill(&["t1", "t2", "t4"], 4)), Outcome::Applied);
        assert!(s.tasks["t1"].kill_requested && s.tasks["t2"].kill_requested);
        assert_eq!(s.services.apps["/web"].spec.instances, 2);
        assert_eq!(s.services.apps["/web"].deployment_id, "k4");
        // The same request again (a client retry, or two at once): no second decrement.
        assert_eq!(s.apply(&kill(&["t1", "t2"], 5)), Outcome::Applied);
        assert_eq!(s.services.apps["/web"].spec.instances, 2);
        // Without scale, a kill leaves the size alone (the task is replaced).
        let replace = Command::KillTasks {
            task_ids: vec!["t3".into()],
            scale: false,
            at_ms: 6,
            deployment_id: "r".into(),
        };
        assert_eq!(s.apply(&replace), Outcome::Applied);
        assert!(s.tasks["t3"].kill_requested);
        assert_eq!(s.services.apps["/web"].spec.instances, 2);
    }

    #[test]
    fn scale_keeps_config_version_and_change_bumps_it() {
        let mut s = ClusterState::default();
        s.apply(&Command::PutApp {
            app: app("/web", 1),
            create: true,
            at_ms: 1,
            deployment_id: "d".into(),
        });
        s.apply(&Command::ScaleApp {
            app_id: "/web".into(),
            instances: 4,
            at_ms: 2,
            deployment_id: "e".into(),
        });
        assert_eq!(s.services.apps["/web"].config_version_ms, 1);
        assert_eq!(s.services.apps["/web"].version_ms, 2);
        let mut changed = app("/web", 4);
        changed.cmd = Some("sleep 5".into());
        s.apply(&Command::PutApp {
            app: changed,
            create: false,
            at_ms: 3,
            deployment_id: "f".into(),
        });
        assert_eq!(s.services.apps["/web"].config_version_ms, 3);
    }

    #[test]
    fn an_agent_id_stays_with_the_certificate_it_registered_with() {
        let mut s = ClusterState::default();
        let with = |name: Option<&str>| {
            let mut a = agent("a1", 1000, 100);
            a.certificate = name.map(str::to_string);
            Command::RegisterAgent { agent: a }
        };
        assert_eq!(s.apply(&with(Some("host-1"))), Outcome::Applied);
        assert_eq!(s.apply(&with(Some("host-1"))), Outcome::Applied);
        for intruder in [Some("host-2"), None] {
            assert!(matches!(
                s.apply(&with(intruder)),
                Outcome::Rejected(Reject::AgentCertificate { .. })
            ));
        }
        assert_eq!(s.agents["a1"].certificate.as_deref(), Some("host-1"));
    }

    #[test]
    fn a_batch_applies_like_its_commands_one_by_one() {
        let commands = vec![
            Command::RegisterAgent {
                agent: agent("a1", 1000, 100),
            },
            Command::PutApp {
                app: app("/web", 1),
                create: true,
                at_ms: 1,
                deployment_id: "d".into(),
            },
            Command::PutApp {
                app: app("/web", 1),
                create: true,
                at_ms: 2,
                deployment_id: "d".into(),
            },
            Command::Batch(vec![]),
        ];
        let mut one_by_one = ClusterState::default();
        let mut outcomes: Vec<Outcome> =
            commands[..3].iter().map(|c| one_by_one.apply(c)).collect();
        outcomes.push(Outcome::Rejected(Reject::NestedBatch));
        let mut batched = ClusterState::default();
        assert_eq!(batched.apply_entry(&Command::Batch(commands)), outcomes);
        assert_eq!(batched, one_by_one);
        assert_eq!(
            batched.apply(&Command::Batch(vec![])),
            Outcome::Rejected(Reject::NestedBatch)
        );
    }
}

#[cfg(test)]
mod restore_tests {
    use super::*;

    #[test]
    fn a_restore_takes_definitions_only_and_only_into_a_fresh_state_unless_asked() {
        let mut source = ClusterState::default();
        let put = Command::PutApp {
            app: super::tests::app("/web", 2),
            create: true,
            at_ms: 1,
            deployment_id: "d1".into(),
        };
        assert_eq!(source.apply(&put), Outcome::Applied);
        let mut fresh = ClusterState::default();
        let restore = |replace| Command::Restore {
            services: source.services.clone(),
            jobs: source.jobs.clone(),
            frameworks: source.frameworks.clone(),
            replace,
        };
        assert_eq!(fresh.apply(&restore(false)), Outcome::Applied);
        assert!(fresh.services.apps.contains_key("/web"));
        // Now it holds an app: a second restore must be asked to replace it.
        assert!(matches!(
            fresh.apply(&restore(false)),
            Outcome::Rejected(Reject::NotFresh { apps: 1, .. })
        ));
        // Replacing: what the cluster held goes, with the runs and updates of the old tasks.
        let other = Command::PutApp {
            app: super::tests::app("/other", 1),
            create: true,
            at_ms: 2,
            deployment_id: "d2".into(),
        };
        assert_eq!(fresh.apply(&other), Outcome::Applied);
        assert_eq!(fresh.apply(&restore(true)), Outcome::Applied);
        let apps: Vec<&String> = fresh.services.apps.keys().collect();
        assert_eq!(apps, ["/web"]);
        assert!(fresh.jobs.runs.is_empty() && fresh.frameworks.updates.is_empty());
    }
}

#[cfg(test)]
mod protocol_tests {
    use super::*;

    #[test]
    fn the_cluster_applies_the_lowest_protocol_its_voters_reported() {
        let mut s = ClusterState::default();
        let report = |id, protocol| Command::MasterBuild {
            master_id: id,
            version: format!("0.{protocol}.0+abc"),
            protocol,
        };
        // Nobody reported: protocol 1, everyone behind a protocol 2 command.
        assert_eq!(s.protocol_of(&[1, 2, 3], 2), (1, vec![1, 2, 3]));
        for id in [1, 2] {
            assert_eq!(s.apply(&report(id, 2)), Outcome::Applied);
        }
        // Master 3 still runs the old build: the cluster is at 1 until it reports 2.
        assert_eq!(s.protocol_of(&[1, 2, 3], 2), (1, vec![3]));
        assert_eq!(s.apply(&report(3, 2)), Outcome::Applied);
        assert_eq!(s.protocol_of(&[1, 2, 3], 2), (2, vec![]));
        // A master that left the membership does not hold the cluster back.
        assert_eq!(s.apply(&report(4, 1)), Outcome::Applied);
        assert_eq!(s.protocol_of(&[1, 2, 3], 2), (2, vec![]));
        assert_eq!(s.masters[&3].version, "0.2.0+abc");
        // A revoked certificate is kept in lower case, as peers' serials are read.
        assert_eq!(
            s.apply(&Command::RevokeCertificate {
                serial: "0BADC0DE".into()
            }),
            Outcome::Applied
        );
        assert!(s.revoked_certificates.contains("0badc0de"));
        // The commands builds before the protocol gate cannot read are protocol 2.
        assert_eq!(Command::Batch(vec![report(1, 2)]).protocol(), 2);
        assert_eq!(
            Command::ExpungeTask {
                task_id: "t".into()
            }
            .protocol(),
            1
        );
    }
}
