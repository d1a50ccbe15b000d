//! The master's event streams (server-sent events), fed by one translator through two
//! buses (Marathon's events alone, and all), so a burst of our own events never pushes a
//! Marathon client's stream behind:
//!
//! - `GET /v2/events`, Marathon's, as marathon-python's `event_stream` and marathon-lb read
//!   it: the services framework's events only (`services::events`), with Marathon's names.
//! - `GET /cluster/v1/events`, ours: the same, and the jobs framework's (`jobs::events`:
//!   `job_created`, `job_run_started`, `job_run_finished`, ...), in one order.
//!
//! Frames are `event: <type>\r\ndata: <one-line JSON>\r\n\r\n`, the JSON carrying
//! `eventType` and `timestamp`, `event_stream_attached` first, repeated `event_type=`
//! filters, and a comment line as heartbeat every `HEARTBEAT_MS` (marathon-lb reconnects
//! after 300 s of silence).
//!
//! Events come from the commands this master applies (`ReplicatedState::subscribe_commands`),
//! so a follower streams them as well as the leader, in log order. One translator task runs
//! while anyone listens.
//!
//! Limits: at most `SUBSCRIBERS_MAX` streams at once (503 beyond); a stream more than
//! `BUS_BUFFER` events behind is ended with `event_stream_detached` (its client reconnects).

use super::{jobs, services};
use crate::http_util::api_error;
use crate::link::now_ms;
use crate::master::Master;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use dcos_api::{iso8601, ApiError};
use std::collections::BTreeSet;
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
    /// One of Marathon's events (on `/v2/events` too); ours are on `/cluster/v1/events` only.
    pub marathon: bool,
}

/// One of Marathon's events.
pub fn event(event_type: &'static str, body: serde_json::Value) -> Event {
    framed(event_type, body, true)
}

/// One of our own events (jobs'), never on Marathon's stream, whose clients know only its
/// event types.
pub fn own_event(event_type: &'static str, body: serde_json::Value) -> Event {
    framed(event_type, body, false)
}

fn framed(event_type: &'static str, mut body: serde_json::Value, marathon: bool) -> Event {
    body["eventType"] = serde_json::Value::String(event_type.to_string());
    body["timestamp"] = serde_json::Value::String(iso8601(now_ms()));
    let frame = format!("event: {event_type}\r\ndata: {body}\r\n\r\n");
    Event {
        event_type,
        frame: Bytes::from(frame),
        marathon,
    }
}

/// The event buses of the master's frameworks.
#[derive(Clone)]
struct Buses {
    /// Every event (`/cluster/v1/events`).
    all: broadcast::Sender<Arc<Event>>,
    /// Marathon's events only (`/v2/events`).
    marathon: broadcast::Sender<Arc<Event>>,
}

impl Buses {
    fn listeners(&self) -> usize {
        self.all.receiver_count() + self.marathon.receiver_count()
    }
}

pub struct Events {
    bus: Buses,
    /// Whether the translator runs; checked and set under this lock by subscribers and by
    /// the translator when it sees nobody listening, so one always runs while anyone does.
    translating: Arc<Mutex<bool>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            bus: Buses {
                all: broadcast::channel(BUS_BUFFER).0,
                marathon: broadcast::channel(BUS_BUFFER).0,
            },
            translating: Arc::new(Mutex::new(false)),
        }
    }
}

impl Events {
    fn subscribe(
        &self,
        master: &Arc<Master>,
        marathon_only: bool,
    ) -> broadcast::Receiver<Arc<Event>> {
        let receiver = match marathon_only {
            true => self.bus.marathon.subscribe(),
            false => self.bus.all.subscribe(),
        };
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

/// Turns applied commands into events while anyone listens.
async fn translate(master: Arc<Master>, bus: Buses, translating: Arc<Mutex<bool>>) {
    let mut commands = master.raft.subscribe_commands();
    let mut deployments = master.read(services::events::deployments_under_way);
    let mut jobs_seen = jobs::events::Seen::default();
    loop {
        {
            let mut running = translating.lock().unwrap_or_else(|e| e.into_inner());
            if bus.listeners() == 0 {
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
                deployments = master.read(services::events::deployments_under_way);
                continue;
            }
            Ok(Ok(first)) => batch.push(first),
        }
        while let Ok(next) = commands.try_recv() {
            batch.push(next);
        }
        let events = master.read(|state| {
            let mut events = services::events::events_of(state, &batch, &mut deployments);
            events.extend(jobs::events::events_of(state, &batch, &mut jobs_seen));
            events
        });
        for event in events {
            let event = Arc::new(event);
            if event.marathon {
                let _ = bus.marathon.send(Arc::clone(&event));
            }
            let _ = bus.all.send(event);
        }
    }
}

/// `GET /v2/events`: Marathon's events.
pub async fn marathon_stream(
    State(master): State<Arc<Master>>,
    Extension(events): Extension<Arc<Events>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    stream(master, events, peer, headers, query, true)
}

/// `GET /cluster/v1/events`: every framework's events.
pub async fn cluster_stream(
    State(master): State<Arc<Master>>,
    Extension(events): Extension<Arc<Events>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    stream(master, events, peer, headers, query, false)
}

fn stream(
    master: Arc<Master>,
    events: Arc<Events>,
    peer: SocketAddr,
    headers: HeaderMap,
    query: Option<String>,
    marathon_only: bool,
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
    if events.bus.listeners() >= SUBSCRIBERS_MAX {
        return api_error(ApiError::unavailable(format!(
            "{SUBSCRIBERS_MAX} event streams are open already; retry later"
        )));
    }
    let params = super::services::query::Params::parse(query.as_deref());
    let wanted: BTreeSet<String> = params.all("event_type").map(str::to_string).collect();
    let receiver = events.subscribe(&master, marathon_only);
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
