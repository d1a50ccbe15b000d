//! The services framework's pure half (Marathon's `/v2`): app definitions (`app`), its
//! replicated state (`ServicesState`: apps, their versions, deployments, failure counters),
//! how it changes, how an app's instance becomes a complete `Task` (`build_task`), and the
//! planner that moves every app towards its definition (`planner`).
//!
//! The rules here act only on tasks this framework owns (`TaskOwner::Service`): a task of a
//! job or of an external framework is never counted, relaunched or killed by them.

pub mod app;
pub mod fields;
pub mod groups;
pub mod planner;
pub mod queue;

use crate::command::Reject;
use crate::types::{Task, TaskNetworkMode, TaskOwner, TaskState};
use app::AppSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppRecord {
    pub spec: AppSpec,
    /// Changes on every write to the app (Marathon's `version`).
    pub version_ms: u64,
    /// Changes only when the definition changes in more than `instances`; tasks launched from
    /// an older config are replaced.
    pub config_version_ms: u64,
    /// The last change that started a deployment; shown while the app converges.
    pub deployment_id: String,
    /// Failures since the last task reached RUNNING; drives the relaunch backoff.
    pub consecutive_failures: u32,
    pub last_failure_at_ms: u64,
    /// The last change of `instances` or of the config (Marathon's `lastScalingAt`); 0 in
    /// records written before it was kept, where it was `version_ms` unless a restart came
    /// after (there were none then).
    #[serde(default)]
    pub last_scaling_ms: u64,
    /// Earlier definitions by version (ms), the newest `VERSIONS_KEPT` including the current
    /// one (Marathon's `/v2/apps/{id}/versions`; a rollback puts one back).
    #[serde(default)]
    pub versions: BTreeMap<u64, AppSpec>,
    /// When the app was created; 0 in records written before it was kept (a group's
    /// rollback then cannot tell whether the app existed at an older version).
    #[serde(default)]
    pub created_ms: u64,
    /// The last rollback the framework made itself (`progressDeadlineSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RolledBack>,
    /// The last deployment seen converged, kept for apps with `progressDeadlineSeconds`
    /// only (`ServicesState::note_progress`): a task lost after its deployment finished is
    /// no missed deadline.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub finished_deployment_id: String,
}

/// A deployment that missed its deadline and the rollback that replaced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolledBack {
    pub failed_deployment_id: String,
    /// The rollback's own deployment: never rolled back automatically in turn.
    pub deployment_id: String,
    pub at_ms: u64,
    pub reason: String,
}

/// A task that ran this long before it failed ends the app's streak of failures: the
/// failure counts as the first of a new one (Mesos and Marathon forgive a task that ran a
/// while the same way).
pub const RUN_ENDS_FAILURE_STREAK_MS: u64 = 60_000;

/// Definitions kept per app (Marathon's `--max_versions` default is 50).
pub const VERSIONS_KEPT: usize = 50;

impl AppRecord {
    /// Marathon's `versionInfo.lastScalingAt`.
    pub fn last_scaling_ms(&self) -> u64 {
        match self.last_scaling_ms {
            0 => self.version_ms,
            at => at,
        }
    }

    /// The definition that was current at `version_ms`, if kept.
    pub fn version(&self, version_ms: u64) -> Option<&AppSpec> {
        if version_ms == self.version_ms {
            return Some(&self.spec);
        }
        self.versions.get(&version_ms)
    }

    /// Every kept version, newest first (the current one included).
    pub fn version_list(&self) -> Vec<u64> {
        let mut list: Vec<u64> = self.versions.keys().copied().collect();
        if !self.versions.contains_key(&self.version_ms) {
            list.push(self.version_ms);
        }
        list.sort_unstable_by(|a, b| b.cmp(a));
        list
    }

    /// Before a change: the definition being replaced is kept as a version, also for a
    /// record written before versions were kept (so a rollback always has it).
    fn keep_outgoing(&mut self) {
        self.versions
            .entry(self.version_ms)
            .or_insert_with(|| self.spec.clone());
    }

    /// True when the app's only version is its first: nothing to go back to but removal.
    pub fn only_first_version(&self) -> bool {
        self.versions.len() == 1
            && self.versions.contains_key(&self.version_ms)
            && self.config_version_ms == self.version_ms
    }

    /// Records the current definition as a version, dropping the oldest beyond the limit.
    fn keep_version(&mut self) {
        self.versions.insert(self.version_ms, self.spec.clone());
        while self.versions.len() > VERSIONS_KEPT {
            self.versions.pop_first();
        }
    }
}

/// What the services framework keeps in the replicated state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServicesState {
    pub apps: BTreeMap<String, AppRecord>,
    /// Groups with something of their own (dependencies, a version); the rest are implied
    /// by app ids.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, groups::GroupRecord>,
}

impl ServicesState {
    /// The record of `app_id`, or the refusal naming it.
    fn app_mut(&mut self, app_id: &str) -> Result<&mut AppRecord, Reject> {
        self.apps.get_mut(app_id).ok_or_else(|| Reject::UnknownApp {
            app_id: app_id.to_string(),
        })
    }

    /// The record of the app a service task belongs to.
    fn app_of_task_mut(&mut self, task: &Task) -> Option<&mut AppRecord> {
        task.owner
            .service_app()
            .and_then(|id| self.apps.get_mut(id))
    }

    /// Service ports other apps than `app_id` hold.
    fn service_ports_taken(&self, app_id: &str) -> std::collections::BTreeSet<u16> {
        self.apps
            .values()
            .filter(|r| r.spec.id != app_id)
            .flat_map(|r| r.spec.service_ports())
            .filter(|p| *p != 0)
            .collect()
    }

    /// `PutApp`: create (`create`, refused if the id exists) or replace a definition. Its
    /// service ports left at 0 get ones of their own here, in the log's order, so every
    /// master gives the same ones.
    pub(crate) fn put_app(
        &mut self,
        app: &AppSpec,
        create: bool,
        at_ms: u64,
        deployment_id: &str,
    ) -> Result<(), Reject> {
        let mut app = app.clone();
        let previous = self.apps.get(&app.id).map(|r| &r.spec);
        app.assign_service_ports(previous, &self.service_ports_taken(&app.id))
            .ok_or_else(|| Reject::ServicePortsExhausted {
                app_id: app.id.clone(),
            })?;
        let app = &app;
        match self.apps.get_mut(&app.id) {
            Some(_) if create => Err(Reject::AppExists {
                app_id: app.id.clone(),
            }),
            Some(record) => {
                record.keep_outgoing();
                if record.spec.config_differs(app) {
                    record.config_version_ms = at_ms;
                    record.consecutive_failures = 0;
                }
                if record.spec != *app {
                    record.last_scaling_ms = at_ms;
                }
                record.spec = app.clone();
                record.version_ms = at_ms;
                record.deployment_id = deployment_id.to_string();
                record.keep_version();
                Ok(())
            }
            None => {
                let mut record = AppRecord {
                    spec: app.clone(),
                    version_ms: at_ms,
                    config_version_ms: at_ms,
                    deployment_id: deployment_id.to_string(),
                    consecutive_failures: 0,
                    last_failure_at_ms: 0,
                    last_scaling_ms: at_ms,
                    versions: BTreeMap::new(),
                    created_ms: at_ms,
                    rolled_back: None,
                    finished_deployment_id: String::new(),
                };
                record.keep_version();
                self.apps.insert(app.id.clone(), record);
                Ok(())
            }
        }
    }

    /// `ScaleApp`: a new instance count; the config (and so the tasks) stay.
    pub(crate) fn scale_app(
        &mut self,
        app_id: &str,
        instances: u32,
        at_ms: u64,
        deployment_id: &str,
    ) -> Result<(), Reject> {
        let record = self.app_mut(app_id)?;
        record.keep_outgoing();
        record.spec.instances = instances;
        record.version_ms = at_ms;
        record.last_scaling_ms = at_ms;
        record.deployment_id = deployment_id.to_string();
        record.keep_version();
        Ok(())
    }

    /// `RestartApp`: same definition, new config version, so every task is replaced (with
    /// the app's kill grace, start-then-stop like any config change).
    pub(crate) fn restart_app(
        &mut self,
        app_id: &str,
        at_ms: u64,
        deployment_id: &str,
    ) -> Result<(), Reject> {
        let record = self.app_mut(app_id)?;
        record.keep_outgoing();
        record.last_scaling_ms = record.last_scaling_ms();
        record.config_version_ms = at_ms;
        record.consecutive_failures = 0;
        record.version_ms = at_ms;
        record.deployment_id = deployment_id.to_string();
        record.keep_version();
        Ok(())
    }

    /// `PutGroup`: a group's apps and subgroups in one step (one deployment id). `create`
    /// refuses a group that exists (a record or any app in it); `replace` also removes the
    /// apps and subgroups inside `group_id` the request does not name (Marathon's PUT of a
    /// whole group).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn put_group(
        &mut self,
        group_id: &str,
        groups: &[groups::GroupEntry],
        apps: &[AppSpec],
        create: bool,
        replace: bool,
        at_ms: u64,
        deployment_id: &str,
        tasks: &mut BTreeMap<String, Task>,
    ) -> Result<(), Reject> {
        let exists = self.groups.contains_key(group_id)
            || self.apps.keys().any(|id| groups::is_under(id, group_id));
        if create && exists {
            return Err(Reject::GroupExists {
                group_id: group_id.to_string(),
            });
        }
        // Every app's service ports first, so a group that cannot have them all is refused
        // before anything of it changes: the request's explicit ports are reserved for it,
        // then each port left at 0 gets a free one (its app's earlier one if still free).
        let named: std::collections::BTreeSet<&str> = apps.iter().map(|a| a.id.as_str()).collect();
        let mut taken: std::collections::BTreeSet<u16> = self
            .apps
            .values()
            .filter(|r| !named.contains(r.spec.id.as_str()))
            .flat_map(|r| r.spec.service_ports())
            .chain(apps.iter().flat_map(AppSpec::service_ports))
            .filter(|p| *p != 0)
            .collect();
        let mut assigned = Vec::with_capacity(apps.len());
        for app in apps {
            let mut app = app.clone();
            let previous = self.apps.get(&app.id).map(|r| &r.spec);
            app.assign_service_ports(previous, &taken).ok_or_else(|| {
                Reject::ServicePortsExhausted {
                    app_id: app.id.clone(),
                }
            })?;
            taken.extend(app.service_ports());
            assigned.push(app);
        }
        let apps = assigned.as_slice();
        if replace {
            let named: std::collections::BTreeSet<&str> =
                apps.iter().map(|a| a.id.as_str()).collect();
            let gone: Vec<String> = self
                .apps
                .keys()
                .filter(|id| groups::is_under(id, group_id) && !named.contains(id.as_str()))
                .filter(|id| groups::replaced_away(id, groups))
                .cloned()
                .collect();
            for app_id in gone {
                self.remove_app(&app_id, at_ms, tasks)?;
            }
            // A group record goes with its apps: when a listed parent's subgroups leave it out.
            let kept: std::collections::BTreeSet<&str> =
                groups.iter().map(|g| g.id.as_str()).collect();
            self.groups.retain(|id, _| {
                kept.contains(id.as_str())
                    || !groups::is_under(id, group_id)
                    || !groups::replaced_away(&format!("{id}/app"), groups)
            });
        }
        for app in apps {
            self.put_app(app, false, at_ms, deployment_id)?;
        }
        for group in groups {
            self.groups.insert(
                group.id.clone(),
                groups::GroupRecord {
                    dependencies: group.dependencies.clone(),
                    version_ms: at_ms,
                },
            );
        }
        Ok(())
    }

    /// `RemoveGroup`: every app inside the group goes (its tasks are killed), and its records.
    pub(crate) fn remove_group(
        &mut self,
        group_id: &str,
        at_ms: u64,
        tasks: &mut BTreeMap<String, Task>,
    ) -> Result<(), Reject> {
        let apps: Vec<String> = self
            .apps
            .keys()
            .filter(|id| groups::is_under(id, group_id))
            .cloned()
            .collect();
        let records = self.groups.keys().any(|id| groups::is_under(id, group_id));
        if apps.is_empty() && !records {
            return Err(Reject::UnknownGroup {
                group_id: group_id.to_string(),
            });
        }
        for app_id in apps {
            self.remove_app(&app_id, at_ms, tasks)?;
        }
        self.groups.retain(|id, _| !groups::is_under(id, group_id));
        Ok(())
    }

    /// `RollBack`: the deployment under way goes back to the version before it: a scale
    /// when only `instances` differ, the earlier definition otherwise; an app's first
    /// deployment rolled back by a user removes the app (nothing came before), while the
    /// framework's own rollback (`reason`) refuses that.
    pub(crate) fn roll_back(
        &mut self,
        app_id: &str,
        failed_deployment_id: &str,
        at_ms: u64,
        deployment_id: &str,
        reason: Option<&str>,
        tasks: &mut BTreeMap<String, Task>,
    ) -> Result<(), Reject> {
        let record = self.apps.get(app_id).ok_or_else(|| Reject::UnknownApp {
            app_id: app_id.to_string(),
        })?;
        let live: Vec<&Task> = Self::tasks_of_app(tasks, app_id).collect();
        if record.deployment_id != failed_deployment_id
            || record.finished_deployment_id == failed_deployment_id
            || groups::converged(record, &live)
        {
            return Err(Reject::DeploymentNotUnderWay {
                app_id: app_id.to_string(),
                deployment_id: failed_deployment_id.to_string(),
            });
        }
        let previous = record
            .version_list()
            .get(1)
            .and_then(|v| record.version(*v))
            .cloned();
        match previous {
            Some(spec) if !record.spec.differs_beyond_instances(&spec) => {
                self.scale_app(app_id, spec.instances, at_ms, deployment_id)?
            }
            Some(spec) => self.put_app(&spec, false, at_ms, deployment_id)?,
            None if reason.is_none() && record.only_first_version() => {
                return self.remove_app(app_id, at_ms, tasks)
            }
            None => {
                return Err(Reject::NothingToRollBackTo {
                    app_id: app_id.to_string(),
                })
            }
        }
        if let Some(reason) = reason {
            self.app_mut(app_id)?.rolled_back = Some(RolledBack {
                failed_deployment_id: failed_deployment_id.to_string(),
                deployment_id: deployment_id.to_string(),
                at_ms,
                reason: reason.to_string(),
            });
        }
        Ok(())
    }

    /// After a command that touched `app_id`: an app with a progress deadline whose
    /// deployment has converged has it recorded as finished. Apps without a deadline pay
    /// one lookup.
    pub(crate) fn note_progress(&mut self, app_id: &str, tasks: &BTreeMap<String, Task>) {
        let Some(record) = self.apps.get(app_id) else {
            return;
        };
        if record.spec.progress_deadline_seconds.is_none()
            || record.finished_deployment_id == record.deployment_id
        {
            return;
        }
        let live: Vec<&Task> = Self::tasks_of_app(tasks, app_id).collect();
        if groups::converged(record, &live) {
            let finished = record.deployment_id.clone();
            if let Some(record) = self.apps.get_mut(app_id) {
                record.finished_deployment_id = finished;
            }
        }
    }

    /// `ResetDelay`: the relaunch backoff starts over.
    pub(crate) fn reset_delay(&mut self, app_id: &str) -> Result<(), Reject> {
        let record = self.app_mut(app_id)?;
        record.consecutive_failures = 0;
        Ok(())
    }

    /// `RemoveApp`: forgets the app and asks for its live tasks to be killed.
    pub(crate) fn remove_app(
        &mut self,
        app_id: &str,
        at_ms: u64,
        tasks: &mut BTreeMap<String, Task>,
    ) -> Result<(), Reject> {
        if self.apps.remove(app_id).is_none() {
            return Err(Reject::UnknownApp {
                app_id: app_id.to_string(),
            });
        }
        for task in tasks.values_mut() {
            if task.owner.service_app() == Some(app_id) && !task.state.is_terminal() {
                task.kill_requested = true;
                task.updated_at_ms = at_ms;
            }
        }
        Ok(())
    }

    /// A task of this framework may be recorded only for an app that exists.
    pub(crate) fn check_launch(&self, app_id: &str) -> Result<(), Reject> {
        match self.apps.contains_key(app_id) {
            true => Ok(()),
            false => Err(Reject::UnknownApp {
                app_id: app_id.to_string(),
            }),
        }
    }

    /// One of this framework's tasks changed state: RUNNING resets the app's failure count,
    /// a failure not asked for raises it (the relaunch backoff).
    pub(crate) fn task_changed(&mut self, task: &Task, at_ms: u64) {
        let Some(app) = self.app_of_task_mut(task) else {
            return;
        };
        let failed = matches!(
            task.state,
            TaskState::Failed | TaskState::Lost | TaskState::Error
        ) && !task.kill_requested;
        // Reaching RUNNING is not a success by itself (a task that starts and crashes at once
        // would relaunch with no delay for ever): a failure after a run of
        // `RUN_ENDS_FAILURE_STREAK_MS` starts a new streak; passing health checks end it
        // (`task_healthy`).
        if failed {
            let ran_long = task
                .started_at_ms
                .is_some_and(|started| at_ms.saturating_sub(started) >= RUN_ENDS_FAILURE_STREAK_MS);
            app.consecutive_failures = match ran_long {
                true => 1,
                false => app.consecutive_failures.saturating_add(1),
            };
            app.last_failure_at_ms = at_ms;
        }
    }

    /// One of this framework's tasks failed its health checks for good: it is replaced, and
    /// like a crash it counts towards the app's relaunch backoff.
    pub(crate) fn task_unhealthy(&mut self, task: &Task, at_ms: u64) {
        if let Some(app) = self.app_of_task_mut(task) {
            app.consecutive_failures = app.consecutive_failures.saturating_add(1);
            app.last_failure_at_ms = at_ms;
        }
    }

    /// A task's health checks passed: the app's failures in a row are over.
    pub(crate) fn task_healthy(&mut self, task: &Task) {
        if let Some(app) = self.app_of_task_mut(task) {
            app.consecutive_failures = 0;
        }
    }

    /// The tasks of one app (any state), in id order.
    pub fn tasks_of_app<'a>(
        tasks: &'a BTreeMap<String, Task>,
        app_id: &'a str,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        tasks
            .values()
            .filter(move |t| t.owner.service_app() == Some(app_id))
    }
}

/// An instance of `app` as a complete task for `agent_id`, with the host `ports` placement
/// chose and Marathon's variables: `MARATHON_APP_ID`, `MARATHON_APP_VERSION`, `PORT0..N`,
/// `PORT` (the first), `PORTS` (all, commas) and, on a bridge, `PORT_<containerPort>`. They
/// win over the app's own `env`, as in Marathon. `task_id` and `now_ms` come from the caller
/// (ids and clocks are not this crate's).
pub fn build_task(
    app: &AppRecord,
    agent_id: &str,
    ports: Vec<u16>,
    task_id: String,
    now_ms: u64,
) -> Task {
    let mut launch = app.spec.launch_spec();
    let env = &mut launch.env;
    env.insert("MARATHON_APP_ID".into(), app.spec.id.clone());
    // The config the task runs, as `/v2/tasks` shows it in the task's `version`.
    env.insert(
        "MARATHON_APP_VERSION".into(),
        crate::time::iso8601(app.config_version_ms),
    );
    for (i, port) in ports.iter().enumerate() {
        env.insert(format!("PORT{i}"), port.to_string());
    }
    if let Some(first) = ports.first() {
        env.insert("PORT".into(), first.to_string());
        let all: Vec<String> = ports.iter().map(|p| p.to_string()).collect();
        env.insert("PORTS".into(), all.join(","));
    }
    if let TaskNetworkMode::Bridge { port_mappings } = &launch.network {
        for (mapping, port) in port_mappings.iter().zip(&ports) {
            env.insert(format!("PORT_{}", mapping.container_port), port.to_string());
        }
    }
    launch.health_checks = app.spec.task_health_checks(&ports);
    launch.readiness_checks = app.spec.task_readiness_checks(&ports);
    Task {
        id: task_id,
        owner: TaskOwner::Service {
            app_id: app.spec.id.clone(),
            config_version_ms: app.config_version_ms,
        },
        agent_id: agent_id.to_string(),
        resources: app.spec.resources(),
        launch,
        state: TaskState::Staging,
        kill_requested: false,
        staged_at_ms: now_ms,
        started_at_ms: None,
        health: None,
        readiness: None,
        updated_at_ms: now_ms,
        message: None,
        exit_code: None,
        ports,
    }
}

/// A task id for an instance of `app_id`: the app's path with `_` for `/`, a dot, then
/// `unique` (Marathon's shape: `group_web.<uuid>`).
pub fn task_id(app_id: &str, unique: &str) -> String {
    format!(
        "{}.{unique}",
        app_id.trim_start_matches('/').replace('/', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::app;

    #[test]
    fn service_ports_left_at_zero_get_free_ones_of_their_own_and_keep_them() {
        use crate::services::app::PortDefinition;
        let with_ports = |id: &str, ports: &[u16]| {
            let mut spec = app(id, 1);
            spec.port_definitions = ports
                .iter()
                .map(|p| PortDefinition {
                    port: *p,
                    name: None,
                    protocol: "tcp".into(),
                    labels: Default::default(),
                })
                .collect();
            spec
        };
        let ports = |s: &ServicesState, id: &str| s.apps[id].spec.service_ports();
        let mut s = ServicesState::default();
        s.put_app(&with_ports("/a", &[0, 10001]), true, 1, "d")
            .unwrap();
        assert_eq!(
            ports(&s, "/a"),
            vec![10000, 10001],
            "the lowest free, explicit kept"
        );
        s.put_app(&with_ports("/b", &[0, 0]), true, 2, "d").unwrap();
        assert_eq!(
            ports(&s, "/b"),
            vec![10002, 10003],
            "none another app holds"
        );
        // Put again as first written (0): the same ones, so nothing is replaced.
        let config = s.apps["/b"].config_version_ms;
        s.put_app(&with_ports("/b", &[0, 0]), false, 3, "e")
            .unwrap();
        assert_eq!(ports(&s, "/b"), vec![10002, 10003]);
        assert_eq!(s.apps["/b"].config_version_ms, config, "no task replaced");
        // An explicit port may be one another app holds (as in Marathon).
        s.put_app(&with_ports("/c", &[10000]), true, 4, "d")
            .unwrap();
        assert_eq!(ports(&s, "/c"), vec![10000]);
        // Service ports are no host ports: only requirePorts pins them on the agent.
        let mut pinned = with_ports("/p", &[31005]);
        assert_eq!(pinned.requested_ports(), vec![0]);
        pinned.require_ports = true;
        assert_eq!(pinned.requested_ports(), vec![31005]);
        // The range used up (but one port).
        let mut full = ServicesState::default();
        let all: Vec<u16> = crate::services::app::SERVICE_PORTS.collect();
        for (i, chunk) in all[1..].chunks(1_000).enumerate() {
            full.put_app(&with_ports(&format!("/x{i}"), chunk), true, 1, "d")
                .unwrap();
        }
        // A group needing two is refused whole: nothing of it is written.
        let before = full.clone();
        let mut tasks = BTreeMap::new();
        let group = [with_ports("/g/a", &[0]), with_ports("/g/b", &[0])];
        assert_eq!(
            full.put_group("/g", &[], &group, true, false, 2, "g", &mut tasks),
            Err(Reject::ServicePortsExhausted {
                app_id: "/g/b".into()
            })
        );
        assert_eq!(full, before);
        full.put_app(&with_ports("/one", &[0]), true, 2, "d")
            .unwrap();
        assert_eq!(
            full.put_app(&with_ports("/late", &[0]), true, 2, "d"),
            Err(Reject::ServicePortsExhausted {
                app_id: "/late".into()
            })
        );
    }

    fn record(spec: AppSpec) -> AppRecord {
        AppRecord {
            spec,
            version_ms: 1_795_549_526_000,
            config_version_ms: 1_795_549_526_000,
            deployment_id: "d".into(),
            consecutive_failures: 0,
            last_failure_at_ms: 0,
            last_scaling_ms: 0,
            versions: BTreeMap::new(),
            created_ms: 1,
            rolled_back: None,
            finished_deployment_id: String::new(),
        }
    }

    #[test]
    fn a_failure_streak_survives_brief_runs_and_ends_after_a_long_one() {
        let mut services = ServicesState::default();
        services.put_app(&app("/web", 1), true, 1, "d").unwrap();
        let mut task = crate::state::tests::task("t", "/web", "a1", 1);
        for (i, ran_ms) in [(1u64, 100u64), (2, 100), (3, 100)] {
            task.started_at_ms = Some(i * 1_000);
            task.state = TaskState::Running;
            services.task_changed(&task, i * 1_000);
            task.state = TaskState::Failed;
            services.task_changed(&task, i * 1_000 + ran_ms);
        }
        assert_eq!(
            services.apps["/web"].consecutive_failures, 3,
            "brief runs do not reset"
        );
        task.started_at_ms = Some(10_000);
        services.task_changed(&task, 10_000 + RUN_ENDS_FAILURE_STREAK_MS);
        assert_eq!(
            services.apps["/web"].consecutive_failures, 1,
            "a long run starts over"
        );
    }

    #[test]
    fn every_change_is_a_version_and_version_info_follows_marathon() {
        let mut services = ServicesState::default();
        let spec = app("/web", 1);
        services.put_app(&spec, true, 10, "d1").unwrap();
        services.scale_app("/web", 3, 20, "d2").unwrap();
        let record = &services.apps["/web"];
        assert_eq!(
            (
                record.version_ms,
                record.last_scaling_ms(),
                record.config_version_ms
            ),
            (20, 20, 10)
        );

        services.restart_app("/web", 30, "d3").unwrap();
        let record = &services.apps["/web"];
        assert_eq!(
            (
                record.version_ms,
                record.last_scaling_ms(),
                record.config_version_ms
            ),
            (30, 20, 30)
        );

        let mut changed = record.spec.clone();
        changed.cmd = Some("sleep 5".into());
        services.put_app(&changed, false, 40, "d4").unwrap();
        let record = &services.apps["/web"];
        assert_eq!(
            (
                record.version_ms,
                record.last_scaling_ms(),
                record.config_version_ms
            ),
            (40, 40, 40)
        );
        assert_eq!(record.version_list(), vec![40, 30, 20, 10]);
        assert_eq!(record.version(10).unwrap().instances, 1);
        assert_eq!(record.version(20).unwrap().instances, 3);
        assert_eq!(record.version(40).unwrap().cmd.as_deref(), Some("sleep 5"));
        assert_eq!(record.version(41), None);

        for at in 0..VERSIONS_KEPT as u64 {
            services.scale_app("/web", 2, 100 + at, "d").unwrap();
        }
        let record = &services.apps["/web"];
        assert_eq!(record.versions.len(), VERSIONS_KEPT);
        assert_eq!(record.version_list()[0], 100 + VERSIONS_KEPT as u64 - 1);
        assert!(record.version(10).is_none(), "the oldest went");
        assert!(services.restart_app("/nope", 1, "d").is_err());
    }

    #[test]
    fn a_built_task_carries_marathons_variables_over_the_apps_own() {
        let mut spec = app("/shop/web", 1);
        spec.env.insert("PORT0".into(), "mine".into());
        spec.env.insert("KEEP".into(), "yes".into());
        let task = build_task(&record(spec), "a1", vec![31000, 31001], "t".into(), 5);
        let env = &task.launch.env;
        assert_eq!(env["MARATHON_APP_ID"], "/shop/web");
        assert_eq!(env["MARATHON_APP_VERSION"], "2026-11-24T19:45:26.000Z");
        assert_eq!(env["PORT0"], "31000", "the framework's value wins");
        assert_eq!(env["PORT1"], "31001");
        assert_eq!(env["PORT"], "31000");
        assert_eq!(env["PORTS"], "31000,31001");
        assert_eq!(env["KEEP"], "yes");
        assert_eq!(
            task.owner,
            TaskOwner::Service {
                app_id: "/shop/web".into(),
                config_version_ms: 1_795_549_526_000
            }
        );
        assert_eq!(task_id("/shop/web", "x1"), "shop_web.x1");
    }

    #[test]
    fn a_bridged_task_gets_a_variable_per_container_port() {
        let spec: AppSpec = serde_json::from_value(serde_json::json!({
            "id": "/web", "cpus": 0.1, "mem": 32,
            "container": {"docker": {"image": "busybox"},
                          "portMappings": [{"containerPort": 80}, {"containerPort": 443}]},
            "networks": [{"mode": "container/bridge"}]
        }))
        .unwrap();
        let task = build_task(&record(spec), "a1", vec![31005, 31006], "t".into(), 5);
        assert_eq!(task.launch.env["PORT_80"], "31005");
        assert_eq!(task.launch.env["PORT_443"], "31006");
        assert!(task.launch.env.contains_key("PORTS"));
    }
}
