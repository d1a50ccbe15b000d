//! Marathon's event stream, `GET /v2/events` (server-sent events), as marathon-python's
//! `event_stream` and marathon-lb read it: frames `event: <type>\r\ndata: <one-line
//! JSON>\r\n\r\n`, the JSON carrying `eventType` and `timestamp`, `event_stream_attached`
//! first, repeated `event_type=` filters, and a comment line as heartbeat every
//! `HEARTBEAT_MS` (marathon-lb reconnects after 300 s of silence).
//!
//! Events come from the commands this master applies (`ReplicatedState::subscribe_commands`),
//! so a follower streams them as well as the leader, in log order: a change of an app is an
//! `api_post_event` and a `deployment_info`; a task's launch and each status an
//! `status_update_event`; the end of a deployment (its app converged)
//! `deployment_step_success` then `deployment_success`, or `deployment_failed` when a forced
//! change or a rollback replaced it (with `reason` when the framework rolled it back past its
//! `progressDeadlineSeconds`); a removal `app_terminated_event`. One translator task runs while
//! anyone listens.
//!
//! Limits: at most `SUBSCRIBERS_MAX` streams at once (503 beyond); a stream more than
//! `BUS_BUFFER` events behind is ended with `event_stream_detached` (its client reconnects).

use crate::http_util::api_error;
use crate::link::now_ms;
use crate::master::Master;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use dcos_api::{app_converged, iso8601, task_view, ApiError};
use dcos_core::{AppRecord, ClusterState, Command, Outcome, TaskOwner, TaskState};
use dcos_raft::AppliedCommand;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Most event streams open at once.
pub const SUBSCRIBERS_MAX: usize = 256;
/// A comment line at least this often, so idle streams are not taken for dead.
pub const HEARTBEAT_MS: u64 = 5_000;
/// Events a stream may fall behind by before it is ended.
pub const BUS_BUFFER: usize = 1_024;

/// One event, framed for the stream.
#[derive(Debug)]
pub struct Event {
    pub event_type: &'static str,
    pub frame: Bytes,
}

fn event(event_type: &'static str, mut body: serde_json::Value) -> Event {
    body["eventType"] = serde_json::Value::String(event_type.to_string());
    body["timestamp"] = serde_json::Value::String(iso8601(now_ms()));
    let frame = format!("event: {event_type}\r\ndata: {body}\r\n\r\n");
    Event {
        event_type,
        frame: Bytes::from(frame),
    }
}

/// The services framework's event bus.
pub struct Events {
    bus: broadcast::Sender<Arc<Event>>,
    /// Whether the translator runs; checked and set under this lock by subscribers and by
    /// the translator when it sees nobody listening, so one always runs while anyone does.
    translating: Arc<Mutex<bool>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            bus: broadcast::channel(BUS_BUFFER).0,
            translating: Arc::new(Mutex::new(false)),
        }
    }
}

impl Events {
    fn subscribe(&self, master: &Arc<Master>) -> broadcast::Receiver<Arc<Event>> {
        let receiver = self.bus.subscribe();
        let mut translating = self.translating.lock().unwrap_or_else(|e| e.into_inner());
        if !*translating {
            *translating = true;
            tokio::spawn(translate(
                Arc::clone(master),
                self.bus.clone(),
                Arc::clone(&self.translating),
            ));
        }
        receiver
    }
}

/// An app's deployment under way, as its events describe it.
struct Deployment {
    id: String,
    plan: serde_json::Value,
    step: serde_json::Value,
}

/// Turns applied commands into events while anyone listens.
async fn translate(
    master: Arc<Master>,
    bus: broadcast::Sender<Arc<Event>>,
    translating: Arc<Mutex<bool>>,
) {
    let mut commands = master.raft.subscribe_commands();
    let mut deployments = master.read(deployments_under_way);
    loop {
        {
            let mut running = translating.lock().unwrap_or_else(|e| e.into_inner());
            if bus.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
        let mut batch = Vec::new();
        match tokio::time::timeout(Duration::from_secs(1), commands.recv()).await {
            Err(_) => continue,
            Ok(Err(broadcast::error::RecvError::Closed)) => {
                *translating.lock().unwrap_or_else(|e| e.into_inner()) = false;
                return;
            }
            Ok(Err(broadcast::error::RecvError::Lagged(missed))) => {
                tracing::warn!(
                    missed,
                    "event stream fell behind the applied commands; deployments re-read"
                );
                deployments = master.read(deployments_under_way);
                continue;
            }
            Ok(Ok(first)) => batch.push(first),
        }
        while let Ok(next) = commands.try_recv() {
            batch.push(next);
        }
        let events = master.read(|state| events_of(state, &batch, &mut deployments));
        for event in events {
            let _ = bus.send(Arc::new(event));
        }
    }
}

fn deployments_under_way(state: &ClusterState) -> BTreeMap<String, Deployment> {
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
fn events_of(
    state: &ClusterState,
    batch: &[Arc<AppliedCommand>],
    deployments: &mut BTreeMap<String, Deployment>,
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

/// `GET /v2/events`.
pub async fn stream(
    State(master): State<Arc<Master>>,
    Extension(events): Extension<Arc<Events>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    if !accept.contains("text/event-stream") && !accept.contains("*/*") {
        return api_error(ApiError::new(
            406,
            "not_acceptable",
            "the event stream is text/event-stream: send Accept: text/event-stream",
        ));
    }
    if events.bus.receiver_count() >= SUBSCRIBERS_MAX {
        return api_error(ApiError::unavailable(format!(
            "{SUBSCRIBERS_MAX} event streams are open already; retry later"
        )));
    }
    let params = super::query::Params::parse(query.as_deref());
    let wanted: BTreeSet<String> = params.all("event_type").map(str::to_string).collect();
    let receiver = events.subscribe(&master);
    let attached = event(
        "event_stream_attached",
        serde_json::json!({ "remoteAddress": peer.ip().to_string() }),
    );
    let start =
        (wanted.is_empty() || wanted.contains(attached.event_type)).then_some(attached.frame);
    let state = Stream {
        master,
        receiver,
        wanted,
        peer,
        pending: start,
        ended: false,
    };
    let body = futures_util::stream::unfold(state, |mut stream| async move {
        let frame = stream.next().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), stream))
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

struct Stream {
    master: Arc<Master>,
    receiver: broadcast::Receiver<Arc<Event>>,
    wanted: BTreeSet<String>,
    peer: SocketAddr,
    pending: Option<Bytes>,
    ended: bool,
}

impl Stream {
    /// The next frame: an event that passes the filter, a heartbeat after `HEARTBEAT_MS` of
    /// silence, or `None` once the master stops or the stream fell too far behind.
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(frame) = self.pending.take() {
            return Some(frame);
        }
        if self.ended {
            return None;
        }
        let heartbeat = tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS));
        tokio::pin!(heartbeat);
        loop {
            tokio::select! {
                received = self.receiver.recv() => match received {
                    Ok(event) => {
                        if self.wanted.is_empty() || self.wanted.contains(event.event_type) {
                            return Some(event.frame.clone());
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.ended = true;
                        let detached = event(
                            "event_stream_detached",
                            serde_json::json!({ "remoteAddress": self.peer.ip().to_string() }),
                        );
                        return Some(detached.frame);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                _ = &mut heartbeat => {
                    if !self.master.is_scheduling() {
                        return None;
                    }
                    return Some(Bytes::from_static(b":\r\n\r\n"));
                }
            }
        }
    }
}
