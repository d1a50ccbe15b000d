//! Marathon's events, from the commands the services framework's apps and tasks see
//! applied (the bus and the streams are `crate::frameworks::events`): a change of an app is
//! an `api_post_event` and a `deployment_info`; a task's launch and each status a
//! `status_update_event`; the end of a deployment (its app converged)
//! `deployment_step_success` then `deployment_success`, or `deployment_failed` when a forced
//! change or a rollback replaced it (with `reason` when the framework rolled it back past its
//! `progressDeadlineSeconds`); a removal `app_terminated_event`; health changes
//! `health_status_changed_event` and its kin.

use crate::frameworks::events::{event, Event};
use dcos_api::{app_converged, iso8601, task_view};
use dcos_core::{AppRecord, ClusterState, Command, Outcome, TaskOwner, TaskState};
use dcos_raft::AppliedCommand;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An app's deployment under way, as its events describe it.
pub struct Deployment {
    id: String,
    plan: serde_json::Value,
    step: serde_json::Value,
}

/// The deployments under way, by app: what the events of a deployment's end describe.
pub type Deployments = BTreeMap<String, Deployment>;

pub fn deployments_under_way(state: &ClusterState) -> Deployments {
    state
        .services
        .apps
        .values()
        .filter(|record| {
            let tasks: Vec<_> = state.tasks_of_app(&record.spec.id).collect();
            !app_converged(record, &tasks)
        })
        .map(|record| (record.spec.id.clone(), deployment(record)))
        .collect()
}

fn deployment(record: &AppRecord) -> Deployment {
    let action = dcos_api::marathon::deployment_action(record);
    let app_id = &record.spec.id;
    let step = serde_json::json!({ "actions": [{ "action": action, "app": app_id }] });
    let root = |apps: serde_json::Value| {
        serde_json::json!({
            "id": "/", "apps": apps, "groups": [], "pods": [], "dependencies": [],
            "version": iso8601(record.version_ms),
        })
    };
    Deployment {
        id: record.deployment_id.clone(),
        plan: serde_json::json!({
            "id": record.deployment_id,
            "version": iso8601(record.version_ms),
            "original": root(serde_json::json!([])),
            "target": root(serde_json::json!([record.spec.for_marathon()])),
            "steps": [step],
        }),
        step,
    }
}

/// The events of a batch of applied commands, in order, then the ends of deployments the
/// batch completed.
pub fn events_of(
    state: &ClusterState,
    batch: &[Arc<AppliedCommand>],
    deployments: &mut Deployments,
) -> Vec<Event> {
    let mut events = Vec::new();
    for applied in batch {
        if applied.outcome != Outcome::Applied {
            continue;
        }
        match &applied.command {
            Command::PutApp { app, .. } => {
                app_changed(state, &app.id, None, deployments, &mut events)
            }
            Command::ScaleApp { app_id, .. } | Command::RestartApp { app_id, .. } => {
                app_changed(state, app_id, None, deployments, &mut events)
            }
            Command::PutGroup {
                group_id,
                apps,
                at_ms,
                ..
            } => {
                for app in apps {
                    app_changed(state, &app.id, None, deployments, &mut events);
                }
                events.push(event(
                    "group_change_success",
                    serde_json::json!({ "groupId": group_id, "version": iso8601(*at_ms) }),
                ));
            }
            Command::RemoveGroup { group_id, at_ms } => {
                deployments
                    .retain(|app_id, _| !dcos_core::services::groups::is_under(app_id, group_id));
                events.push(event(
                    "group_change_success",
                    serde_json::json!({ "groupId": group_id, "version": iso8601(*at_ms) }),
                ));
            }
            Command::RollBack { app_id, reason, .. }
                if state.services.apps.contains_key(app_id) =>
            {
                app_changed(state, app_id, reason.as_deref(), deployments, &mut events)
            }
            Command::RemoveApp { app_id, .. } | Command::RollBack { app_id, .. } => {
                deployments.remove(app_id);
                events.push(event(
                    "app_terminated_event",
                    serde_json::json!({ "appId": app_id }),
                ));
            }
            Command::LaunchTask { task } => {
                status_update(state, &task.id, TaskState::Staging, None, &mut events)
            }
            Command::TaskStatus {
                task_id,
                state: task_state,
                message,
                ..
            } => status_update(state, task_id, *task_state, message.as_deref(), &mut events),
            Command::TaskHealth {
                task_id, health, ..
            } => health_events(state, task_id, health, &mut events),
            Command::KillTask { task_id, .. } => unhealthy_kill(state, task_id, &mut events),
            Command::KillTasks {
                task_ids,
                scale,
                deployment_id,
                ..
            } => {
                let mut scaled = BTreeSet::new();
                for task_id in task_ids {
                    unhealthy_kill(state, task_id, &mut events);
                    if let Some(TaskOwner::Service { app_id, .. }) =
                        state.tasks.get(task_id).map(|t| &t.owner)
                    {
                        let now_scaled = state
                            .services
                            .apps
                            .get(app_id)
                            .is_some_and(|r| r.deployment_id == *deployment_id);
                        if *scale && now_scaled && scaled.insert(app_id.clone()) {
                            app_changed(state, app_id, None, deployments, &mut events);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let finished: Vec<String> = deployments
        .keys()
        .filter(|app_id| {
            state.services.apps.get(*app_id).is_some_and(|record| {
                let tasks: Vec<_> = state.tasks_of_app(app_id).collect();
                app_converged(record, &tasks)
            })
        })
        .cloned()
        .collect();
    for app_id in finished {
        if let Some(done) = deployments.remove(&app_id) {
            events.push(event(
                "deployment_step_success",
                serde_json::json!({ "plan": done.plan, "currentStep": done.step }),
            ));
            events.push(event(
                "deployment_success",
                serde_json::json!({ "id": done.id, "plan": done.plan }),
            ));
        }
    }
    events
}

/// An app's new definition or size: what was posted, the deployment it began, and the end
/// of the deployment it replaced (`deployment_failed`, with the `reason` when the framework
/// rolled it back itself; Marathon's clients read only the keys they know of an event).
fn app_changed(
    state: &ClusterState,
    app_id: &str,
    reason: Option<&str>,
    deployments: &mut BTreeMap<String, Deployment>,
    events: &mut Vec<Event>,
) {
    let Some(record) = state.services.apps.get(app_id) else {
        return;
    };
    events.push(event(
        "api_post_event",
        serde_json::json!({
            "clientIp": "",
            "uri": dcos_api::routes::marathon::app(app_id),
            "appDefinition": record.spec.for_marathon(),
        }),
    ));
    let next = deployment(record);
    if let Some(replaced) = deployments.remove(app_id) {
        if replaced.id != next.id {
            let mut failed = serde_json::json!({ "id": replaced.id, "plan": replaced.plan });
            if let Some(reason) = reason {
                failed["reason"] = reason.into();
            }
            events.push(event("deployment_failed", failed));
        }
    }
    events.push(event(
        "deployment_info",
        serde_json::json!({ "plan": next.plan, "currentStep": next.step }),
    ));
    deployments.insert(app_id.to_string(), next);
}

fn status_update(
    state: &ClusterState,
    task_id: &str,
    task_state: TaskState,
    message: Option<&str>,
    events: &mut Vec<Event>,
) {
    let Some(view) = state.tasks.get(task_id).and_then(|t| task_view(state, t)) else {
        return;
    };
    events.push(event(
        "status_update_event",
        serde_json::json!({
            "slaveId": view.slave_id,
            "taskId": view.id,
            "taskStatus": task_state,
            "message": message.unwrap_or_default(),
            "appId": view.app_id,
            "host": view.host,
            "ports": view.ports,
            "ipAddresses": [],
            "version": view.version,
        }),
    ));
}

/// A health report (each is a change): `health_status_changed_event` and Marathon's
/// instance variant, and `failed_health_check_event` when a check failed.
fn health_events(
    state: &ClusterState,
    task_id: &str,
    health: &dcos_core::TaskHealth,
    events: &mut Vec<Event>,
) {
    let Some(view) = state.tasks.get(task_id).and_then(|t| task_view(state, t)) else {
        return;
    };
    if !health.alive {
        events.push(event(
            "failed_health_check_event",
            serde_json::json!({ "appId": view.app_id, "taskId": view.id, "instanceId": view.id }),
        ));
    }
    events.push(event(
        "health_status_changed_event",
        serde_json::json!({
            "appId": view.app_id, "taskId": view.id, "instanceId": view.id,
            "version": view.version, "alive": health.alive,
        }),
    ));
    events.push(event(
        "instance_health_changed_event",
        serde_json::json!({
            "instanceId": view.id, "runSpecId": view.app_id,
            "runSpecVersion": view.version, "healthy": health.alive,
        }),
    ));
}

/// A kill of a task whose health checks failed for good: `unhealthy_task_kill_event`.
fn unhealthy_kill(state: &ClusterState, task_id: &str, events: &mut Vec<Event>) {
    let Some(task) = state.tasks.get(task_id) else {
        return;
    };
    let Some(health) = task.health.as_ref().filter(|h| h.exhausted) else {
        return;
    };
    let Some(view) = task_view(state, task) else {
        return;
    };
    events.push(event(
        "unhealthy_task_kill_event",
        serde_json::json!({
            "appId": view.app_id, "taskId": view.id, "instanceId": view.id,
            "version": view.version, "host": view.host, "slaveId": view.slave_id,
            "reason": health.last_failure_cause.clone().unwrap_or_default(),
        }),
    ));
}
