//! The operator API's SUBSCRIBE (`POST /api/v1 {"type": "SUBSCRIBE"}`): SUBSCRIBED with
//! the whole state (what GET_STATE answers) and the heartbeat interval, then TASK_ADDED,
//! TASK_UPDATED, AGENT_ADDED, AGENT_REMOVED, FRAMEWORK_ADDED, FRAMEWORK_UPDATED and
//! FRAMEWORK_REMOVED as the state changes, and HEARTBEAT every
//! `HEARTBEAT_INTERVAL_SECONDS`: a chunked RecordIO stream of JSON, as the scheduler API's.
//!
//! The events are the differences between what the stream last told its client (`Seen`)
//! and the state once the applied index moved (a command applied, or a snapshot installed
//! on a follower), so every master serves the stream, followers too. A burst of commands
//! is one look (at most one per `LOOK_GAP_MS`): the stream may skip a state a task passed
//! through in between, never the last one.
//!
//! Limits: `OPERATOR_STREAMS_MAX` streams per master (503 beyond); a client that takes no
//! event for `SEND_TIMEOUT_MS` is dropped (it subscribes again for the whole state); a
//! stream ends when its master stops. Each look compares every task's state.

use super::{id, seconds, Mesos};
use super::{offered_on, v1_agent, v1_framework, v1_state, v1_task, views};
use crate::frameworks::mesos::{wire, wire_state, HEARTBEAT_INTERVAL_SECONDS};
use crate::http_util::api_error;
use crate::master::Master;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::Response;
use dcos_api::{ApiError, FrameworkView};
use dcos_core::mesos::state::framework_of;
use dcos_core::{ClusterState, Resources, TaskState};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Most operator event streams open at once on one master.
pub const OPERATOR_STREAMS_MAX: usize = 32;
/// Events queued for a stream's client.
const STREAM_BUFFER: usize = 1_024;
/// Longest a stream waits for its client to take an event before it drops the client.
const SEND_TIMEOUT_MS: u64 = 30_000;
/// Shortest gap between two looks at the state by one stream (a burst is one look).
const LOOK_GAP_MS: u64 = 50;

/// What a stream has told its client.
#[derive(Debug, Default)]
struct Seen {
    tasks: HashMap<String, TaskState>,
    agents: BTreeSet<String>,
    /// Each framework as last sent (`framework_info`, `active`, `connected`, ...).
    frameworks: BTreeMap<String, Value>,
}

/// The frameworks of `views` as the operator API writes them, by id.
fn frameworks_by_id(views: &[FrameworkView]) -> BTreeMap<String, Value> {
    views
        .iter()
        .map(|v| (v.id.clone(), v1_framework(v)))
        .collect()
}

impl Seen {
    fn of(state: &ClusterState, frameworks: BTreeMap<String, Value>) -> Seen {
        Seen {
            tasks: state
                .tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.state))
                .collect(),
            agents: state.agents.keys().cloned().collect(),
            frameworks,
        }
    }

    /// The events that take a client who saw `self` to `state` (`frameworks`: its
    /// frameworks by id, as `frameworks_by_id` writes them); `self` becomes that.
    fn advance(&mut self, state: &ClusterState, frameworks: BTreeMap<String, Value>) -> Vec<Value> {
        let mut events = Vec::new();
        // Frameworks first: a framework's tasks come after it.
        for (framework_id, framework) in &frameworks {
            match self.frameworks.get(framework_id) {
                None => events.push(json!({
                    "type": "FRAMEWORK_ADDED",
                    "framework_added": { "framework": framework },
                })),
                Some(before) if before != framework => events.push(json!({
                    "type": "FRAMEWORK_UPDATED",
                    "framework_updated": { "framework": framework },
                })),
                Some(_) => {}
            }
        }
        for (framework_id, before) in &self.frameworks {
            if !frameworks.contains_key(framework_id) {
                events.push(json!({
                    "type": "FRAMEWORK_REMOVED",
                    "framework_removed": { "framework_info": before["framework_info"] },
                }));
            }
        }
        self.frameworks = frameworks;
        for (agent_id, agent) in &state.agents {
            if !self.agents.contains(agent_id) {
                events.push(json!({
                    "type": "AGENT_ADDED",
                    "agent_added": { "agent": v1_agent(state, agent, &Resources::default()) },
                }));
            }
        }
        for agent_id in &self.agents {
            if !state.agents.contains_key(agent_id) {
                events.push(json!({
                    "type": "AGENT_REMOVED",
                    "agent_removed": { "agent_id": id(agent_id) },
                }));
            }
        }
        self.agents = state.agents.keys().cloned().collect();
        for (task_id, task) in &state.tasks {
            let before = match self.tasks.get_mut(task_id) {
                Some(seen) => Some(std::mem::replace(seen, task.state)),
                None => self.tasks.insert(task_id.clone(), task.state),
            };
            match before {
                None => events.push(json!({
                    "type": "TASK_ADDED",
                    "task_added": { "task": v1_task(task) },
                })),
                Some(before) if before != task.state => {
                    let wire = wire_state(task.state, true);
                    let mut status = json!({
                        "task_id": id(super::own_task_id(task)),
                        "state": wire,
                        "source": "SOURCE_EXECUTOR",
                        "agent_id": id(&task.agent_id),
                        "timestamp": seconds(task.updated_at_ms),
                    });
                    if let Some(message) = &task.message {
                        status["message"] = json!(message);
                    }
                    events.push(json!({
                        "type": "TASK_UPDATED",
                        "task_updated": {
                            "framework_id": id(framework_of(&task.owner)),
                            "status": status,
                            "state": wire,
                        },
                    }));
                }
                Some(_) => {}
            }
        }
        // Tasks forgotten by the state are no event (Mesos says nothing of them either).
        self.tasks
            .retain(|task_id, _| state.tasks.contains_key(task_id));
        events
    }
}

/// One stream's place among `OPERATOR_STREAMS_MAX`, given back when the stream ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn framed(event: &Value) -> Bytes {
    Bytes::from(wire::record(event.to_string().as_bytes()))
}

/// Answers SUBSCRIBE: the stream, or 406 / 503 with the reason.
pub(super) async fn subscribe(
    master: Arc<Master>,
    mesos: Arc<Mesos>,
    headers: &HeaderMap,
) -> Response {
    if let Err(refused) = crate::frameworks::mesos::http::accepts_json(headers) {
        return api_error(refused);
    }
    let counter = Arc::clone(&mesos.operator_streams);
    if counter.fetch_add(1, Ordering::SeqCst) >= OPERATOR_STREAMS_MAX {
        counter.fetch_sub(1, Ordering::SeqCst);
        return api_error(ApiError::unavailable(format!(
            "{OPERATOR_STREAMS_MAX} operator event streams are open on this master already; retry later or use another master"
        )));
    }
    let slot = Slot(counter);
    // Watched before the state is read: nothing applied in between is missed. The applied
    // index moves with every applied command and with an installed snapshot.
    let mut applied = master.raft.subscribe();
    let frameworks = views(&master, &mesos, false).await;
    let offered = offered_on(&mesos).await;
    let (subscribed, mut seen) = master.read(|s| {
        let subscribed = json!({
            "type": "SUBSCRIBED",
            "subscribed": {
                "get_state": v1_state(s, &frameworks, &offered),
                "heartbeat_interval_seconds": HEARTBEAT_INTERVAL_SECONDS,
            },
        });
        (subscribed, Seen::of(s, frameworks_by_id(&frameworks)))
    });
    let (events, received) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let _ = events.try_send(framed(&subscribed));
    tokio::spawn(async move {
        let _slot = slot;
        let heartbeat = Duration::from_secs_f64(HEARTBEAT_INTERVAL_SECONDS);
        let mut next_heartbeat = tokio::time::Instant::now() + heartbeat;
        loop {
            let changed = tokio::select! {
                _ = events.closed() => return,
                _ = tokio::time::sleep_until(next_heartbeat) => false,
                changed = applied.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
            };
            if !master.is_scheduling() {
                return;
            }
            let mut out = Vec::new();
            if changed {
                // A burst of commands is one look at the state: at most one per
                // `LOOK_GAP_MS` per stream.
                tokio::time::sleep(Duration::from_millis(LOOK_GAP_MS)).await;
                applied.borrow_and_update();
                let frameworks = views(&master, &mesos, false).await;
                out = master.read(|s| seen.advance(s, frameworks_by_id(&frameworks)));
            } else {
                out.push(json!({"type": "HEARTBEAT"}));
                next_heartbeat = tokio::time::Instant::now() + heartbeat;
            }
            for event in out {
                // A client that reads gets every event; one that has not taken any for
                // `SEND_TIMEOUT_MS` is dropped (it subscribes again for the whole state).
                let sent = tokio::time::timeout(
                    Duration::from_millis(SEND_TIMEOUT_MS),
                    events.send(framed(&event)),
                )
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    tracing::warn!(
                        "an operator event stream's client stopped reading; its stream ends"
                    );
                    return;
                }
            }
        }
    });
    crate::frameworks::mesos::http::stream_response(None, received)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcos_core::{Agent, AgentState, Task, TaskOwner};

    fn agent(id: &str) -> Agent {
        Agent {
            id: id.into(),
            hostname: "h".into(),
            url: "http://h:5051".into(),
            resources: Resources::default(),
            state: AgentState::Active,
            registered_at_ms: 1,
            ports: Vec::new(),
            certificate: None,
            certificate_serial: None,
            version: String::new(),
            images: Default::default(),
            attributes: Default::default(),
        }
    }

    fn task(id: &str, framework: &str, state: TaskState) -> Task {
        Task {
            id: id.into(),
            owner: TaskOwner::Framework {
                framework_id: framework.into(),
            },
            agent_id: "a1".into(),
            resources: Resources::default(),
            launch: serde_json::from_value(json!({
                "cmd": "sleep 1", "args": null, "env": {}, "image": null, "user": null,
                "kill_grace_period_ms": 3000,
            }))
            .expect("a launch"),
            state,
            kill_requested: false,
            staged_at_ms: 1,
            started_at_ms: None,
            updated_at_ms: 1,
            message: None,
            exit_code: None,
            ports: Vec::new(),
            health: None,
            readiness: None,
        }
    }

    fn types(events: &[Value]) -> Vec<&str> {
        events.iter().map(|e| e["type"].as_str().unwrap()).collect()
    }

    #[test]
    fn changes_become_mesos_events_once() {
        let mut state = ClusterState::default();
        let mut seen = Seen::of(&state, BTreeMap::new());
        assert!(seen.advance(&state, BTreeMap::new()).is_empty());

        state.agents.insert("a1".into(), agent("a1"));
        let fw = json!({"framework_info": {"id": {"value": "f1"}, "name": "n"}, "active": true});
        let frameworks = BTreeMap::from([("f1".to_string(), fw.clone())]);
        state
            .tasks
            .insert("f1.t1".into(), task("f1.t1", "f1", TaskState::Staging));
        let events = seen.advance(&state, frameworks.clone());
        assert_eq!(
            types(&events),
            ["FRAMEWORK_ADDED", "AGENT_ADDED", "TASK_ADDED"]
        );
        assert_eq!(events[2]["task_added"]["task"]["task_id"]["value"], "t1");
        assert_eq!(
            events[1]["agent_added"]["agent"]["agent_info"]["id"]["value"],
            "a1"
        );
        // Nothing changed: nothing said.
        assert!(seen.advance(&state, frameworks.clone()).is_empty());

        state.tasks.get_mut("f1.t1").unwrap().state = TaskState::Running;
        let mut inactive = fw.clone();
        inactive["active"] = json!(false);
        let events = seen.advance(&state, BTreeMap::from([("f1".to_string(), inactive)]));
        assert_eq!(types(&events), ["FRAMEWORK_UPDATED", "TASK_UPDATED"]);
        let updated = &events[1]["task_updated"];
        assert_eq!(updated["state"], "TASK_RUNNING");
        assert_eq!(updated["framework_id"]["value"], "f1");
        assert_eq!(updated["status"]["task_id"]["value"], "t1");
        assert_eq!(updated["status"]["agent_id"]["value"], "a1");

        state.agents.clear();
        state.tasks.clear();
        let events = seen.advance(&state, BTreeMap::new());
        assert_eq!(types(&events), ["FRAMEWORK_REMOVED", "AGENT_REMOVED"]);
        assert_eq!(
            events[0]["framework_removed"]["framework_info"]["id"]["value"],
            "f1"
        );
        assert!(seen.advance(&state, BTreeMap::new()).is_empty());
    }
}
