//! `POST /api/v1/scheduler` (SUBSCRIBE as a RecordIO stream, every other call answered 202
//! with an empty body) and `GET /version`.

use super::{
    master_status, task_key, task_status, wire, Inner, Mesos, Subscription, DEFAULT_ROLE,
    EVENTS_QUEUED_MAX, HEARTBEAT_INTERVAL_SECONDS, MESOS_API_VERSION, SUBSCRIPTIONS_MAX,
};
use crate::http_util::api_error;
use crate::master::Master;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use dcos_api::ApiError;
use dcos_core::mesos::state::FrameworkRecord;
use dcos_core::types::{LaunchSpec, TaskFetch};
use dcos_core::{Command, Outcome, Reject, Resources, Task, TaskOwner, TaskState};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The scheduler API's path.
pub const SCHEDULER: &str = "/api/v1/scheduler";
/// Mesos's version endpoint (pymesos reads it before it subscribes).
pub const VERSION: &str = "/version";
/// The header naming a subscription's stream; every call must carry it.
const STREAM_ID_HEADER: &str = "mesos-stream-id";
/// How long a command task gets between SIGTERM and SIGKILL when its kill policy says
/// nothing (Mesos's default).
const KILL_GRACE_DEFAULT_MS: u64 = 3_000;
/// Longest kill grace period taken from a kill policy.
const KILL_GRACE_MAX_MS: u64 = 10 * 60_000;

/// Mesos's list of tasks (every framework's, the built-in ones' under their ids).
pub const MASTER_TASKS: &str = "/master/tasks";

pub fn routes() -> axum::Router<Arc<Master>> {
    axum::Router::new()
        .route(SCHEDULER, axum::routing::post(scheduler))
        .route(MASTER_TASKS, axum::routing::get(master_tasks))
}

/// `GET /master/tasks`, as Mesos writes it: `{"tasks": [{id, name, framework_id,
/// executor_id, slave_id, state, resources, statuses}]}` (ids as the framework knows them).
async fn master_tasks(State(master): State<Arc<Master>>) -> Response {
    let tasks: Vec<serde_json::Value> = master.read(|s| {
        s.tasks
            .values()
            .map(|t| {
                let framework_id = super::framework_of(&t.owner);
                let own_id = match &t.owner {
                    TaskOwner::Framework { .. } => super::framework_task_id(t),
                    _ => t.id.as_str(),
                };
                serde_json::json!({
                    "id": own_id,
                    "name": own_id,
                    "framework_id": framework_id,
                    "executor_id": "",
                    "slave_id": t.agent_id,
                    "state": super::wire_state(t.state, true),
                    "resources": {
                        "cpus": t.resources.cpus_milli as f64 / 1000.0,
                        "mem": t.resources.mem_mib as f64,
                        "disk": t.resources.disk_mib as f64,
                    },
                    "statuses": [],
                })
            })
            .collect()
    });
    Json(serde_json::json!({ "tasks": tasks })).into_response()
}

/// `GET /version`, open as Mesos's: `version` is plain `X.Y.Z` (clients parse each part
/// as a number).
pub async fn version() -> Response {
    Json(serde_json::json!({
        "version": MESOS_API_VERSION,
        "build_user": "dcos-rs",
        "git_tag": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

/// Resources in Mesos's words: `cpus 0.5, mem 64 MiB, disk 0 MiB`.
fn describe(r: &Resources) -> String {
    format!(
        "cpus {}, mem {} MiB, disk {} MiB",
        r.cpus_milli as f64 / 1000.0,
        r.mem_mib,
        r.disk_mib
    )
}

fn bad_request(message: impl Into<String>) -> Response {
    api_error(ApiError::bad_request(message))
}

pub async fn scheduler(
    State(master): State<Arc<Master>>,
    Extension(mesos): Extension<Arc<Mesos>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !master.raft.is_leader() {
        return crate::master::http::not_leader_response(&master, SCHEDULER);
    }
    let parsed = match wire::parse_call(&body) {
        Ok(parsed) => parsed,
        Err(message) => return bad_request(message),
    };
    if let wire::Call::Subscribe { framework_info } = parsed.call {
        return subscribe(
            &master,
            &mesos,
            &headers,
            framework_info,
            parsed.framework_id,
        )
        .await;
    }
    let framework_id = parsed.framework_id.expect("parse_call requires it").value;
    // Calls come from the framework's current subscription only.
    {
        let inner = mesos.inner.lock().await;
        let Some(sub) = inner.subs.get(&framework_id) else {
            return api_error(ApiError::new(
                403,
                "not_subscribed",
                format!(
                    "framework {framework_id} is not subscribed to this master: SUBSCRIBE first"
                ),
            ));
        };
        let stream_id = headers
            .get(STREAM_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if stream_id != sub.stream_id {
            return bad_request(format!(
                "the Mesos-Stream-Id header ({stream_id:?}) is not framework {framework_id}'s subscription's"
            ));
        }
    }
    let result = match parsed.call {
        wire::Call::Subscribe { .. } => unreachable!("handled above"),
        wire::Call::Teardown => teardown(&master, &mesos, &framework_id).await,
        wire::Call::Accept {
            offer_ids,
            operations,
            filters,
        } => {
            accept(
                &master,
                &mesos,
                &framework_id,
                offer_ids,
                operations,
                filters,
            )
            .await
        }
        wire::Call::Decline { offer_ids, filters } => {
            let mut inner = mesos.inner.lock().await;
            if let Some(allocator) = inner.allocator.as_mut() {
                let refuse_ms = wire::Filters::refuse_ms(filters.as_ref());
                for offer_id in offer_ids {
                    // An offer rescinded meanwhile is declined already.
                    let _ = allocator.decline(
                        &framework_id,
                        &offer_id.value,
                        refuse_ms,
                        crate::link::now_ms(),
                    );
                }
            }
            mesos.wake();
            Ok(())
        }
        wire::Call::Revive => {
            if let Some(allocator) = mesos.inner.lock().await.allocator.as_mut() {
                allocator.revive(&framework_id);
            }
            mesos.wake();
            Ok(())
        }
        wire::Call::Suppress => {
            let mut inner = mesos.inner.lock().await;
            let rescinded = inner
                .allocator
                .as_mut()
                .map(|a| a.suppress(&framework_id))
                .unwrap_or_default();
            if let Some(sub) = inner.subs.get(&framework_id) {
                for offer in rescinded {
                    sub.send(&wire::Event::Rescind {
                        offer_id: wire::Id::new(&offer.id),
                    });
                }
            }
            Ok(())
        }
        wire::Call::Kill {
            task_id,
            kill_policy,
            ..
        } => {
            let grace_ms = kill_policy.as_ref().and_then(grace_ms_of);
            kill(&master, &mesos, &framework_id, &task_id.value, grace_ms).await
        }
        wire::Call::Acknowledge { task_id, uuid, .. } => {
            let acknowledged = Command::AcknowledgeUpdate {
                framework_id: framework_id.clone(),
                task_id: task_key(&framework_id, &task_id.value),
                uuid,
            };
            let recorded = record(&master, acknowledged, "acknowledgement").await;
            mesos.wake();
            recorded
        }
        wire::Call::Reconcile { tasks } => reconcile(&master, &mesos, &framework_id, tasks).await,
        // Command tasks have no executor to take a message or a shutdown (custom executors
        // are refused at launch); Mesos's command executor ignores both as well.
        wire::Call::Message { .. } | wire::Call::Shutdown => Ok(()),
        // Mesos's allocator ignores resource requests too.
        wire::Call::Request => Ok(()),
    };
    match result {
        Ok(()) => StatusCode::ACCEPTED.into_response(),
        Err(response) => response,
    }
}

async fn subscribe(
    master: &Arc<Master>,
    mesos: &Arc<Mesos>,
    headers: &HeaderMap,
    info: wire::FrameworkInfo,
    call_framework_id: Option<wire::Id>,
) -> Response {
    if let Err(refused) = accepts_json(headers) {
        return api_error(refused);
    }
    if info.name.trim().is_empty() {
        return bad_request("subscribe.framework_info.name is required");
    }
    let given_id = info.id.clone().or(call_framework_id).map(|id| id.value);
    if let Some(id) = &given_id {
        if id.is_empty() || id.contains('.') || !crate::agent::valid_task_id(id) {
            return bad_request(format!(
                "framework_id {id:?}: letters, digits, '-' and '_' only"
            ));
        }
    }
    let resubscribe = given_id.is_some();
    let framework_id = given_id.unwrap_or_else(|| format!("{}-0000", crate::link::random_id()));
    let timeout_s = info.failover_timeout.unwrap_or(0.0);
    if !timeout_s.is_finite() || timeout_s < 0.0 {
        return bad_request("subscribe.framework_info.failover_timeout must be 0 or more seconds");
    }
    let record = FrameworkRecord {
        id: framework_id.clone(),
        name: info.name.clone(),
        user: info.user.clone(),
        role: match info.first_role() {
            "" => DEFAULT_ROLE.to_string(),
            role => role.to_string(),
        },
        principal: info.principal.clone(),
        hostname: info.hostname.clone(),
        capabilities: info.capabilities.iter().map(|c| c.kind.clone()).collect(),
        failover_timeout_ms: (timeout_s * 1000.0).min(u64::MAX as f64) as u64,
        registered_ms: 0,
        disconnected_ms: None,
    };
    // Held until the subscription is in place: the offer loop must never see the framework
    // subscribed in the state without its subscription here (it would count it
    // disconnected, and its failover timeout would run).
    let mut inner = mesos.inner.lock().await;
    if inner.subs.len() >= SUBSCRIPTIONS_MAX && !inner.subs.contains_key(&framework_id) {
        return api_error(ApiError::unavailable(format!(
            "{SUBSCRIPTIONS_MAX} frameworks are subscribed already; retry later"
        )));
    }
    let (events, received) = mpsc::channel::<Bytes>(EVENTS_QUEUED_MAX);
    // A removed framework is told so without a write (its driver may retry at once).
    let removed = master.read(|s| s.frameworks.removed.contains(&framework_id));
    let written = if removed {
        Ok(Outcome::Rejected(Reject::FrameworkRemoved {
            framework_id: framework_id.clone(),
        }))
    } else {
        master
            .write(Command::SubscribeFramework {
                framework: record,
                resubscribe,
                at_ms: crate::link::now_ms(),
            })
            .await
    };
    match written {
        Ok(Outcome::Applied) => {}
        // Mesos answers a removed or unknown framework with an ERROR event on the stream.
        Ok(Outcome::Rejected(
            reject @ (Reject::FrameworkRemoved { .. } | Reject::UnknownFramework { .. }),
        )) => {
            let error = wire::Event::Error {
                message: format!("{reject}"),
            };
            let _ = events.try_send(Bytes::from(error.record()));
            drop(events);
            return stream_response(Some(&crate::link::random_id()), received);
        }
        Ok(Outcome::Rejected(reject)) => return bad_request(reject.to_string()),
        Err(e) => {
            return api_error(ApiError::unavailable(format!(
                "the subscription was not recorded: {e}"
            )))
        }
    }
    let stream_id = crate::link::random_id();
    let subscribed = wire::Event::Subscribed {
        framework_id: wire::Id::new(&framework_id),
        heartbeat_interval_seconds: HEARTBEAT_INTERVAL_SECONDS,
    };
    let _ = events.try_send(Bytes::from(subscribed.record()));
    let ended = tokio_util::sync::CancellationToken::new();
    {
        let Inner { subs, sent, .. } = &mut *inner;
        // A framework that subscribes again replaces its former stream (which ends), and
        // gets every update it has not acknowledged at once.
        subs.insert(
            framework_id.clone(),
            Subscription {
                stream_id: stream_id.clone(),
                events: events.clone(),
                partition_aware: info.has_capability("PARTITION_AWARE"),
                ended: ended.clone(),
            },
        );
        sent.retain(|_, (framework, _)| *framework != framework_id);
    }
    drop(inner);
    tracing::info!(framework = %framework_id, name = %info.name, resubscribe, "framework subscribed");
    // Heartbeats until the stream ends; its end wakes the offer loop (failover timeout).
    let waker = Arc::clone(mesos);
    tokio::spawn(async move {
        let interval = Duration::from_secs_f64(HEARTBEAT_INTERVAL_SECONDS);
        let heartbeat = Bytes::from(wire::Event::Heartbeat.record());
        loop {
            tokio::select! {
                _ = events.closed() => break,
                // Replaced or removed: this sender is the stream's last, so it ends.
                _ = ended.cancelled() => break,
                _ = tokio::time::sleep(interval) => {
                    if events.try_send(heartbeat.clone()).is_err() {
                        break;
                    }
                }
            }
        }
        waker.wake();
    });
    mesos.wake();
    stream_response(Some(&stream_id), received)
}

/// The subscription's answer: 200, chunked, RecordIO of JSON events.
/// A Mesos event stream's answer (the scheduler API's, with its `Mesos-Stream-Id`, and the
/// operator API's): 200, chunked, RecordIO of JSON events as `received` yields them.
pub(super) fn stream_response(
    stream_id: Option<&str>,
    received: mpsc::Receiver<Bytes>,
) -> Response {
    let body = futures_util::stream::unfold(received, |mut received| async move {
        let frame = received.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), received))
    });
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response();
    if let Some(stream_id) = stream_id.and_then(|id| header::HeaderValue::from_str(id).ok()) {
        response
            .headers_mut()
            .insert(header::HeaderName::from_static(STREAM_ID_HEADER), stream_id);
    }
    response
}

/// Mesos's event streams are JSON (RecordIO-framed): 406 naming the `Accept` asked for
/// anything else (protobuf is not served).
pub(super) fn accepts_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if accept.contains("application/json") || accept.contains("*/*") {
        return Ok(());
    }
    Err(ApiError::new(
        406,
        "not_acceptable",
        format!("events are streamed as application/json only (Accept: {accept}); protobuf is not spoken here"),
    ))
}

/// Writes a call's command; 503 naming the call when it was not recorded (a refusal is
/// recorded: the call changed nothing, as Mesos ignores such calls).
async fn record(master: &Master, command: Command, call: &str) -> Result<(), Response> {
    match master.write(command).await {
        Ok(_) => Ok(()),
        Err(e) => Err(api_error(ApiError::unavailable(format!(
            "the {call} was not recorded: {e}"
        )))),
    }
}

/// The answer to a kill or reconciliation of a task the master does not know of the
/// framework: TASK_UNKNOWN for a partition-aware framework, else TASK_LOST.
fn unknown_task(task_id: &str, agent_id: Option<&str>, partition_aware: bool) -> wire::TaskStatus {
    master_status(
        task_id,
        agent_id,
        if partition_aware {
            "TASK_UNKNOWN"
        } else {
            "TASK_LOST"
        },
        "REASON_RECONCILIATION",
        "this master has no such task of the framework".to_string(),
    )
}

async fn teardown(
    master: &Arc<Master>,
    mesos: &Arc<Mesos>,
    framework_id: &str,
) -> Result<(), Response> {
    let removed = Command::RemoveFramework {
        framework_id: framework_id.to_string(),
        at_ms: crate::link::now_ms(),
    };
    record(master, removed, "teardown").await?;
    tracing::info!(framework = %framework_id, "framework torn down: its tasks are killed");
    forget(mesos, framework_id).await;
    Ok(())
}

/// A removed framework's subscription ends and its offers go; its tasks' kills go out with
/// the next planning round.
pub(super) async fn forget(mesos: &Mesos, framework_id: &str) {
    let mut inner = mesos.inner.lock().await;
    inner.subs.remove(framework_id);
    if let Some(allocator) = inner.allocator.as_mut() {
        allocator.remove_framework(framework_id);
    }
}

/// A kill policy's grace period in milliseconds, within `KILL_GRACE_MAX_MS`.
fn grace_ms_of(policy: &wire::KillPolicy) -> Option<u64> {
    policy
        .grace_period
        .as_ref()
        .map(|d| (d.nanoseconds.max(0) as u64 / 1_000_000).min(KILL_GRACE_MAX_MS))
}

/// KILL: recorded, then sent to the task's agent with the call's own grace period
/// (`grace_ms`, from its `kill_policy`) when it has one.
async fn kill(
    master: &Arc<Master>,
    mesos: &Arc<Mesos>,
    framework_id: &str,
    task_id: &str,
    grace_ms: Option<u64>,
) -> Result<(), Response> {
    let key = task_key(framework_id, task_id);
    let known = master.read(|s| {
        s.tasks
            .get(&key)
            .map(|t| (t.agent_id.clone(), t.state.is_terminal()))
    });
    match known {
        Some((agent_id, false)) => {
            let killed = Command::KillTask {
                task_id: key.clone(),
                at_ms: crate::link::now_ms(),
            };
            record(master, killed, "kill").await?;
            master.send_kill_with_grace(&agent_id, &key, grace_ms).await;
        }
        // Ended already: its end is (or was) sent as an update.
        Some((_, true)) => {}
        None => {
            let inner = mesos.inner.lock().await;
            if let Some(sub) = inner.subs.get(framework_id) {
                sub.send(&wire::Event::Update(unknown_task(
                    task_id,
                    None,
                    sub.partition_aware,
                )));
            }
        }
    }
    Ok(())
}

async fn reconcile(
    master: &Arc<Master>,
    mesos: &Arc<Mesos>,
    framework_id: &str,
    tasks: Vec<wire::TaskAgent>,
) -> Result<(), Response> {
    let inner = mesos.inner.lock().await;
    let Some(sub) = inner.subs.get(framework_id) else {
        return Ok(());
    };
    let statuses: Vec<wire::TaskStatus> = master.read(|s| {
        let owned = |t: &&Task| matches!(&t.owner, TaskOwner::Framework { framework_id: f } if f == framework_id);
        if tasks.is_empty() {
            // Implicit: every task the master knows of the framework, live or ended.
            return s
                .tasks
                .values()
                .filter(owned)
                .map(|t| task_status(t, None, sub.partition_aware, Some("REASON_RECONCILIATION")))
                .collect();
        }
        tasks
            .iter()
            .map(|wanted| match s.tasks.get(&task_key(framework_id, &wanted.task_id.value)).filter(owned) {
                Some(task) => task_status(task, None, sub.partition_aware, Some("REASON_RECONCILIATION")),
                None => unknown_task(
                    &wanted.task_id.value,
                    wanted.agent_id.as_ref().map(|a| a.value.as_str()),
                    sub.partition_aware,
                ),
            })
            .collect()
    });
    for status in statuses {
        sub.send(&wire::Event::Update(status));
    }
    Ok(())
}

/// A task the framework asked for, checked and made whole, or why not (the status to
/// answer it with).
fn build_task(
    framework_id: &str,
    agent: &dcos_core::Agent,
    info: &wire::TaskInfo,
) -> Result<(Task, Vec<u16>), (&'static str, String)> {
    let invalid = |message: String| ("REASON_TASK_INVALID", message);
    let id = &info.task_id.value;
    if id.is_empty() || !crate::agent::valid_task_id(id) {
        return Err(invalid(format!(
            "task_id {id:?}: letters, digits, '.', '-' and '_' only, not starting with '.'"
        )));
    }
    let key = task_key(framework_id, id);
    if key.len() > 200 {
        return Err(invalid(format!("task_id {id:?} is too long")));
    }
    if info.executor.is_some() {
        return Err(invalid(
            "custom executors are not run here (yet): send a task with a command and no executor"
                .into(),
        ));
    }
    let Some(command) = &info.command else {
        return Err(invalid(
            "command is required (a task without an executor runs a command)".into(),
        ));
    };
    let (resources, ports) = wire::resources_from(&info.resources).map_err(invalid)?;
    if resources.cpus_milli == 0 || resources.mem_mib == 0 {
        return Err(invalid("a task needs some cpus and mem resources".into()));
    }
    let (cmd, args) = if command.shell {
        match &command.value {
            Some(value) if !value.trim().is_empty() => (Some(value.clone()), None),
            _ => {
                return Err(invalid(
                    "command.value is required with shell (the default)".into(),
                ))
            }
        }
    } else if !command.arguments.is_empty() {
        (None, Some(command.arguments.clone()))
    } else {
        match &command.value {
            Some(value) if !value.is_empty() => (None, Some(vec![value.clone()])),
            _ => {
                return Err(invalid(
                    "command.value or command.arguments is required".into(),
                ))
            }
        }
    };
    let mut env: BTreeMap<String, String> = command
        .environment
        .iter()
        .flat_map(|e| &e.variables)
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    env.insert("MESOS_FRAMEWORK_ID".into(), framework_id.to_string());
    // Mesos's command executor has the task's id as its own.
    env.insert("MESOS_EXECUTOR_ID".into(), id.clone());
    let endpoint = crate::http_util::url_authority(&agent.url);
    env.insert("MESOS_AGENT_ENDPOINT".into(), endpoint.to_string());
    let kill_grace_period_ms = info
        .kill_policy
        .as_ref()
        .and_then(grace_ms_of)
        .unwrap_or(KILL_GRACE_DEFAULT_MS);
    let fetch = command
        .uris
        .iter()
        .map(|uri| TaskFetch {
            uri: uri.value.clone(),
            extract: uri.extract.unwrap_or(true),
            executable: uri.executable.unwrap_or(false),
            cache: uri.cache.unwrap_or(false),
            output_file: uri.output_file.clone(),
        })
        .collect();
    let now = crate::link::now_ms();
    let task = Task {
        id: key,
        owner: TaskOwner::Framework {
            framework_id: framework_id.to_string(),
        },
        agent_id: agent.id.clone(),
        resources,
        launch: LaunchSpec {
            cmd,
            args,
            env,
            image: info.image(),
            user: command.user.clone(),
            kill_grace_period_ms,
            volumes: Vec::new(),
            network: Default::default(),
            user_namespace: false,
            health_checks: Vec::new(),
            fetch,
            readiness_checks: Vec::new(),
            output_tail_bytes: 0,
        },
        state: TaskState::Staging,
        kill_requested: false,
        staged_at_ms: now,
        started_at_ms: None,
        updated_at_ms: now,
        message: None,
        exit_code: None,
        ports: ports.clone(),
        health: None,
        readiness: None,
    };
    Ok((task, ports))
}

async fn accept(
    master: &Arc<Master>,
    mesos: &Arc<Mesos>,
    framework_id: &str,
    offer_ids: Vec<wire::Id>,
    operations: Vec<wire::Operation>,
    filters: Option<wire::Filters>,
) -> Result<(), Response> {
    let now = crate::link::now_ms();
    let mut inner = mesos.inner.lock().await;
    let Inner {
        allocator, subs, ..
    } = &mut *inner;
    let (Some(allocator), Some(sub)) = (allocator.as_mut(), subs.get(framework_id)) else {
        return Ok(());
    };
    let task_infos: Vec<&wire::TaskInfo> = operations
        .iter()
        .filter_map(|op| op.launch.as_ref())
        .flat_map(|launch| &launch.task_infos)
        .collect();
    let refuse = |status: wire::TaskStatus| {
        sub.send(&wire::Event::Update(status));
    };
    // Operations other than LAUNCH are refused by name; their tasks (LAUNCH_GROUP's) too.
    for op in &operations {
        if op.kind != "LAUNCH" {
            let message = format!(
                "operation {} is not supported here (LAUNCH only; LAUNCH_GROUP, reservations and volumes may come later)",
                op.kind
            );
            tracing::info!(framework = %framework_id, "{message}");
            if let Some(group) = op.launch.as_ref() {
                for info in &group.task_infos {
                    refuse(master_status(
                        &info.task_id.value,
                        Some(&info.agent_id.value),
                        "TASK_ERROR",
                        "REASON_TASK_INVALID",
                        message.clone(),
                    ));
                }
            }
        }
    }
    // The offers, all outstanding and the framework's, of one agent.
    let mut offers = Vec::new();
    let mut offer_error = None;
    for id in &offer_ids {
        match allocator.offer(framework_id, &id.value) {
            Ok(offer) => offers.push(offer.clone()),
            Err(e) => offer_error = Some(e.to_string()),
        }
    }
    let agent_id = offers.first().map(|o| o.agent_id.clone());
    if offer_error.is_none()
        && offers
            .iter()
            .any(|o| Some(&o.agent_id) != agent_id.as_ref())
    {
        offer_error = Some("the offers of one ACCEPT must all be of one agent".to_string());
    }
    if offers.is_empty() && offer_error.is_none() {
        offer_error = Some("ACCEPT names no offer".to_string());
    }
    if let Some(message) = offer_error {
        // Mesos drops the launches of an ACCEPT with an invalid offer; the valid offers of
        // it are given back.
        for offer in &offers {
            let _ = allocator.decline(framework_id, &offer.id, 0, now);
        }
        for info in &task_infos {
            let state = if sub.partition_aware {
                "TASK_DROPPED"
            } else {
                "TASK_LOST"
            };
            refuse(master_status(
                &info.task_id.value,
                Some(&info.agent_id.value),
                state,
                "REASON_INVALID_OFFERS",
                message.clone(),
            ));
        }
        mesos.wake();
        return Ok(());
    }
    let agent_id = agent_id.expect("offers is not empty");
    let agent = master.read(|s| s.agents.get(&agent_id).cloned());
    let offered = offers
        .iter()
        .fold(Resources::default(), |sum, o| sum.add(&o.resources));
    let mut left = offered;
    let mut tasks = Vec::new();
    let mut ports_taken = std::collections::BTreeSet::new();
    for info in operations
        .iter()
        .filter(|op| op.kind == "LAUNCH")
        .filter_map(|op| op.launch.as_ref())
        .flat_map(|launch| &launch.task_infos)
    {
        let built = match &agent {
            None => Err(("REASON_AGENT_UNKNOWN", format!("agent {agent_id} is gone"))),
            Some(_) if info.agent_id.value != agent_id => Err((
                "REASON_TASK_INVALID",
                format!(
                    "task agent_id {} is not the offers' agent {agent_id}",
                    info.agent_id.value
                ),
            )),
            Some(agent) => build_task(framework_id, agent, info),
        };
        let checked = built.and_then(|(task, ports)| {
            if !task.resources.fits_in(&left) {
                return Err((
                    "REASON_TASK_INVALID",
                    format!(
                        "the task needs {} but the offers hold {} (left of {})",
                        describe(&task.resources),
                        describe(&left),
                        describe(&offered)
                    ),
                ));
            }
            if ports.iter().any(|p| !ports_taken.insert(*p)) {
                return Err((
                    "REASON_TASK_INVALID",
                    "a port is asked for twice in this ACCEPT".to_string(),
                ));
            }
            Ok(task)
        });
        match checked {
            Ok(task) => {
                left = left.saturating_sub(&task.resources);
                tasks.push(task);
            }
            Err((reason, message)) => {
                tracing::info!(framework = %framework_id, task = %info.task_id.value, "launch refused: {message}");
                refuse(master_status(
                    &info.task_id.value,
                    Some(&info.agent_id.value),
                    "TASK_ERROR",
                    reason,
                    message,
                ));
            }
        }
    }
    // What is launched becomes the framework's; the rest of the offers is free again,
    // and filtered from it for `refuse_seconds`.
    let mut to_take = offered.saturating_sub(&left);
    for offer in &offers {
        let part = Resources {
            cpus_milli: to_take.cpus_milli.min(offer.resources.cpus_milli),
            mem_mib: to_take.mem_mib.min(offer.resources.mem_mib),
            disk_mib: to_take.disk_mib.min(offer.resources.disk_mib),
        };
        to_take = to_take.saturating_sub(&part);
        let _ = allocator.accept(framework_id, &offer.id, &part);
    }
    allocator.refuse(
        framework_id,
        &agent_id,
        wire::Filters::refuse_ms(filters.as_ref()),
        now,
    );
    if tasks.is_empty() {
        mesos.wake();
        return Ok(());
    }
    let commands = tasks
        .iter()
        .map(|task| Command::LaunchTask { task: task.clone() })
        .collect();
    let outcomes = master.raft.write_all(commands).await;
    let mut launched = Vec::new();
    for (task, outcome) in tasks.into_iter().zip(outcomes) {
        let own_id = super::framework_task_id(&task).to_string();
        match outcome {
            Ok(Outcome::Applied) => launched.push(task),
            Ok(Outcome::Rejected(reject)) => refuse(master_status(
                &own_id,
                Some(&task.agent_id),
                "TASK_ERROR",
                "REASON_TASK_INVALID",
                format!("launch refused: {reject}"),
            )),
            Err(e) => refuse(master_status(
                &own_id,
                Some(&task.agent_id),
                if sub.partition_aware {
                    "TASK_DROPPED"
                } else {
                    "TASK_LOST"
                },
                "REASON_MASTER_DISCONNECTED",
                format!("the launch was not recorded: {e}"),
            )),
        }
    }
    drop(inner);
    for task in launched {
        tracing::info!(task = %task.id, agent = %task.agent_id, framework = %framework_id, "launching");
        master.send_launch(task).await;
    }
    mesos.wake();
    Ok(())
}
