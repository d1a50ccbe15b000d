//! The agent's side of a remote master: finds the leader (following 307s and trying each
//! master in turn), holds the command stream, sends heartbeats, and delivers task statuses
//! from a durable outbox until the leader acknowledges each one after committing it.
//!
//! With no master reachable the agent keeps its tasks running and keeps trying; statuses
//! wait in the outbox (`status-outbox.json` in the work dir), in order, across restarts.

use super::Agent;
use crate::http_util::json_headers;
use crate::link::{
    ConnectRequest, HeartbeatRequest, ImagesRequest, StatusRequest, StreamMessage, TaskReport,
    ToAgent, ToMaster, AGENT_CONNECT_PATH, AGENT_HEARTBEAT_PATH, AGENT_IMAGES_PATH,
    AGENT_PROTOCOL_VERSION, AGENT_STATUS_PATH, PING_INTERVAL_MS, PROTOCOL_HEADER,
    STREAM_LINE_MAX_BYTES,
};
use crate::tls::NodeClient;
use anyhow::Context;
use http_body_util::BodyExt;
use hyper::{HeaderMap, Method, StatusCode};
use std::collections::{BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};

/// Default heartbeat interval: 8 heartbeats within the masters' 4 s unreachable timeout.
pub const DEFAULT_HEARTBEAT_MS: u64 = 500;
/// Heartbeats in flight at once. Each goes out on its own tick without waiting for the one
/// before: on a lossy network one stalled in TCP retransmission (its connection blocked)
/// does not hold back the next, which takes another pooled connection.
const HEARTBEATS_IN_FLIGHT_MAX: usize = 8;
/// Longest wait for one heartbeat's answer.
const HEARTBEAT_TIMEOUT_MS: u64 = 5_000;
/// Heartbeats failing in a row (unanswered within `HEARTBEAT_TIMEOUT_MS`, or refused) after
/// which the master is taken for gone and the agent looks for the leader again. At 10 %
/// packet loss one heartbeat in ~10^5 goes unanswered for 5 s; three in a row, never.
const HEARTBEAT_FAILURES_MAX: u32 = 3;
/// A stream with no line (not even a ping) for this long is dead: reconnect.
const STREAM_SILENCE_MAX_MS: u64 = 3 * PING_INTERVAL_MS;
/// Per-call timeout of statuses, heartbeats and image reports.
const CALL_TIMEOUT_MS: u64 = 10_000;
/// Waits between attempts when no master answers, doubling up to the maximum.
const RETRY_MIN_MS: u64 = 200;
const RETRY_MAX_MS: u64 = 5_000;
/// Statuses kept while no master acknowledges them; beyond this the oldest RUNNING-type
/// updates would be dropped first (terminal ones are never dropped).
pub const OUTBOX_MAX: usize = 10_000;
const ANSWER_MAX_BYTES: usize = 1 << 20;

/// Statuses not yet acknowledged, in order, persisted before they are sent.
/// A status answer that sending again cannot change: the master understood the request and
/// refused it (400, 404, 409, 413, 422, ...). Not: timeouts, rate limits, and
/// authentication (a token or certificate may be fixed), nor anything 5xx.
fn refused_for_good(status: StatusCode) -> bool {
    status.is_client_error()
        && !matches!(
            status,
            StatusCode::REQUEST_TIMEOUT
                | StatusCode::TOO_MANY_REQUESTS
                | StatusCode::UNAUTHORIZED
                | StatusCode::FORBIDDEN
                | StatusCode::MISDIRECTED_REQUEST
        )
}

pub struct Outbox {
    path: PathBuf,
    queue: Mutex<VecDeque<TaskReport>>,
    changed: Notify,
}

impl Outbox {
    /// Reads the outbox at `path`. A damaged one (a power loss, a full disk) is moved aside
    /// (`<name>.damaged`) and the agent starts with an empty one: the statuses it held are
    /// rebuilt from the sandboxes, since recovery reports every task's state at start.
    pub fn open(path: PathBuf) -> anyhow::Result<Outbox> {
        let queue = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(queue) => queue,
                Err(e) => {
                    let aside = path.with_extension("json.damaged");
                    tracing::warn!(path = %path.display(), aside = %aside.display(), "the status outbox is damaged ({e}): moved aside; the tasks' states are reported again from their sandboxes");
                    std::fs::rename(&path, &aside)
                        .with_context(|| format!("moving {} aside", path.display()))?;
                    VecDeque::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => VecDeque::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Outbox {
            path,
            queue: Mutex::new(queue),
            changed: Notify::new(),
        })
    }

    fn persist(&self, queue: &VecDeque<TaskReport>) {
        let bytes = serde_json::to_vec(queue).expect("reports serialize");
        if let Err(e) = dcos_runtime::task_dir::write_durable(&self.path, &bytes) {
            tracing::error!(path = %self.path.display(), "status outbox not saved: {e}");
        }
    }

    pub fn push(&self, report: TaskReport) {
        let mut queue = self.queue.lock().expect("outbox lock");
        if queue.len() >= OUTBOX_MAX {
            if let Some(i) = to_drop(&queue) {
                queue.remove(i);
            }
        }
        queue.push_back(report);
        self.persist(&queue);
        drop(queue);
        self.changed.notify_one();
    }

    fn front(&self) -> Option<TaskReport> {
        self.queue.lock().expect("outbox lock").front().cloned()
    }

    fn pop_if_front(&self, report: &TaskReport) {
        let mut queue = self.queue.lock().expect("outbox lock");
        if queue.front() == Some(report) {
            queue.pop_front();
            self.persist(&queue);
        }
    }

    pub fn len(&self) -> usize {
        self.queue.lock().expect("outbox lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the leader is believed to be, and the list to fall back on.
struct Masters {
    all: Vec<String>,
    current: Mutex<(String, usize)>,
}

impl Masters {
    fn new(all: Vec<String>) -> Masters {
        let first = all[0].clone();
        Masters {
            all,
            current: Mutex::new((first, 0)),
        }
    }

    fn leader(&self) -> String {
        self.current.lock().expect("masters lock").0.clone()
    }

    /// Follow a redirect: the answer named the leader.
    fn redirected(&self, headers: &HeaderMap) -> bool {
        let leader = headers
            .get(crate::link::LEADER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_end_matches('/').to_string());
        match leader {
            Some(leader) => {
                self.current.lock().expect("masters lock").0 = leader;
                true
            }
            None => false,
        }
    }

    /// The current one failed: try the next in the list.
    fn next(&self) {
        let mut current = self.current.lock().expect("masters lock");
        current.1 = (current.1 + 1) % self.all.len();
        current.0 = self.all[current.1].clone();
    }
}

pub struct RemoteLink {
    agent: Arc<Agent>,
    client: NodeClient,
    masters: Masters,
    outbox: Arc<Outbox>,
    heartbeat: Duration,
}

impl RemoteLink {
    pub fn new(
        agent: Arc<Agent>,
        client: NodeClient,
        masters: Vec<String>,
        heartbeat: Duration,
    ) -> anyhow::Result<RemoteLink> {
        anyhow::ensure!(!masters.is_empty(), "no master URL given");
        let outbox = Arc::new(Outbox::open(
            agent.config.work_dir.join("status-outbox.json"),
        )?);
        Ok(RemoteLink {
            agent,
            client,
            masters: Masters::new(masters),
            outbox,
            heartbeat,
        })
    }

    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::clone(&self.outbox)
    }

    /// Runs until `shutdown`: takes the agent's messages, keeps a stream to the leader and
    /// delivers the outbox.
    pub async fn run(
        self: Arc<Self>,
        mut from_agent: mpsc::Receiver<ToMaster>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The agent's first message carries the channel its commands go to; what it sends
        // before (nothing, in practice) is handled like what it sends after.
        let link = loop {
            match from_agent.recv().await {
                Some(ToMaster::Register { link, .. }) => break link,
                Some(message) => Arc::clone(&self).forward(message),
                None => return,
            }
        };
        let statuses = tokio::spawn(Arc::clone(&self).deliver_statuses());
        let inbox = {
            let this = Arc::clone(&self);
            tokio::spawn(async move {
                while let Some(message) = from_agent.recv().await {
                    Arc::clone(&this).forward(message);
                }
            })
        };
        let mut retry_ms = RETRY_MIN_MS;
        loop {
            let session = self.connect_once(&link);
            tokio::select! {
                result = session => match result {
                    Ok(()) => retry_ms = RETRY_MIN_MS,
                    Err(e) => {
                        tracing::warn!(master = %self.masters.leader(), "master link: {e:#}");
                        self.masters.next();
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(retry_ms)) => {}
                            _ = shutdown.changed() => break,
                        }
                        retry_ms = (retry_ms * 2).min(RETRY_MAX_MS);
                    }
                },
                _ = shutdown.changed() => break,
            }
        }
        statuses.abort();
        inbox.abort();
    }

    /// Passes one of the agent's messages on: statuses through the outbox, image changes
    /// straight to the leader (a reconnect sends the whole set again anyway).
    fn forward(self: Arc<Self>, message: ToMaster) {
        match message {
            ToMaster::Status(report) => self.outbox.push(report),
            ToMaster::StatusAcked { report, ack } => {
                self.outbox.push(report);
                let _ = ack.send(true);
            }
            ToMaster::Images { images, ack, .. } => {
                tokio::spawn(async move {
                    let _ = ack.send(self.send_images(images).await);
                });
            }
            // Registration is per connection, done by `connect_once`.
            ToMaster::Register { .. } => {}
        }
    }

    /// Tells the leader what the image store holds now; true once it is committed.
    async fn send_images(&self, images: BTreeSet<String>) -> bool {
        let body = serde_json::to_vec(&ImagesRequest {
            agent_id: self.agent.id.clone(),
            images,
        })
        .expect("image lists serialize");
        // One redirect to a new leader at most; a failure is repaired by the next connect.
        for _ in 0..2 {
            let master = self.masters.leader();
            match self.call(&master, AGENT_IMAGES_PATH, body.clone()).await {
                Ok((StatusCode::OK, _, _)) => return true,
                Ok((StatusCode::TEMPORARY_REDIRECT, headers, _))
                    if self.masters.redirected(&headers) => {}
                Ok((status, _, answer)) => {
                    tracing::warn!(
                        "image list not recorded ({status}): {}",
                        String::from_utf8_lossy(&answer[..answer.len().min(200)])
                    );
                    return false;
                }
                Err(e) => {
                    tracing::warn!("image list not delivered: {e:#}");
                    return false;
                }
            }
        }
        false
    }

    /// One connection: register, then forward stream lines and send heartbeats until the
    /// stream ends. `Ok` after a redirect or a normal end (reconnect at once).
    async fn connect_once(&self, link: &mpsc::Sender<ToAgent>) -> anyhow::Result<()> {
        let master = self.masters.leader();
        let request = ConnectRequest {
            protocol: AGENT_PROTOCOL_VERSION,
            agent: self.agent.info(),
            tasks: self.agent.current_reports(),
        };
        let body = serde_json::to_vec(&request)?;
        let (status, headers, mut stream) = self
            .client
            .open_stream(
                Method::POST,
                &format!("{master}{AGENT_CONNECT_PATH}"),
                body,
                json_headers(),
                Duration::from_millis(CALL_TIMEOUT_MS),
            )
            .await?;
        if status == StatusCode::TEMPORARY_REDIRECT && self.masters.redirected(&headers) {
            return Ok(());
        }
        if status != StatusCode::OK {
            // Say why (e.g. this agent was removed): the first bytes of the master's answer.
            let body = tokio::time::timeout(
                Duration::from_millis(CALL_TIMEOUT_MS),
                http_body_util::Limited::new(stream, 4096).collect(),
            )
            .await
            .ok()
            .and_then(|collected| collected.ok())
            .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
            .unwrap_or_default();
            let reason = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            anyhow::bail!("connect answered {status}: {reason}");
        }
        let master_protocol = headers
            .get(PROTOCOL_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        anyhow::ensure!(
            master_protocol == AGENT_PROTOCOL_VERSION,
            "{master} speaks agent protocol {master_protocol}, this agent {AGENT_PROTOCOL_VERSION}: run the same dcos-rs version on masters and agents (upgrade the masters first); the tasks keep running meanwhile"
        );
        tracing::info!(%master, tasks = request.tasks.len(), "connected to the leading master");

        let mut pending = Vec::new();
        let mut heartbeat = tokio::time::interval(self.heartbeat);
        let mut heartbeats = futures_util::stream::FuturesUnordered::new();
        let mut failures_in_a_row = 0u32;
        loop {
            tokio::select! {
                Some(answer) = futures_util::StreamExt::next(&mut heartbeats), if !heartbeats.is_empty() => {
                    match answer {
                        Ok((StatusCode::OK, _, _)) => failures_in_a_row = 0,
                        // The leader changed or forgot us: register again.
                        Ok(_) => return Ok(()),
                        // Lost or late: the next ones are on their way. Several in a row: the
                        // master is gone (powered off, partitioned, stopped), find the leader.
                        Err(e) => {
                            failures_in_a_row += 1;
                            tracing::debug!(%master, failures_in_a_row, "heartbeat not answered: {e:#}");
                            anyhow::ensure!(
                                failures_in_a_row < HEARTBEAT_FAILURES_MAX,
                                "{failures_in_a_row} heartbeats in a row to {master} failed (last: {e:#})"
                            );
                        }
                    }
                }
                frame = tokio::time::timeout(Duration::from_millis(STREAM_SILENCE_MAX_MS), stream.frame()) => {
                    let frame = match frame {
                        Err(_) => anyhow::bail!("no ping from {master} for {STREAM_SILENCE_MAX_MS} ms"),
                        Ok(None) => return Ok(()),
                        Ok(Some(frame)) => frame.context("reading the command stream")?,
                    };
                    let Ok(data) = frame.into_data() else { continue };
                    let data: bytes::Bytes = data;
                    pending.extend_from_slice(&data);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        self.handle_line(&line[..line.len() - 1], link).await?;
                    }
                    anyhow::ensure!(
                        pending.len() <= STREAM_LINE_MAX_BYTES,
                        "a command line over {STREAM_LINE_MAX_BYTES} bytes"
                    );
                }
                _ = heartbeat.tick() => {
                    if heartbeats.len() < HEARTBEATS_IN_FLIGHT_MAX {
                        let body = serde_json::to_vec(&HeartbeatRequest { agent_id: self.agent.id.clone() })?;
                        let master = master.clone();
                        heartbeats.push(async move {
                            self.call_within(&master, AGENT_HEARTBEAT_PATH, body, HEARTBEAT_TIMEOUT_MS).await
                        });
                    }
                }
            }
        }
    }

    async fn handle_line(&self, line: &[u8], link: &mpsc::Sender<ToAgent>) -> anyhow::Result<()> {
        let message: StreamMessage =
            serde_json::from_slice(line).context("an unreadable command line")?;
        let command = match message {
            StreamMessage::Ping | StreamMessage::Unknown => return Ok(()),
            StreamMessage::Launch { task } => ToAgent::Launch(task),
            StreamMessage::Kill { task_id, grace_ms } => ToAgent::Kill { task_id, grace_ms },
        };
        link.send(command)
            .await
            .map_err(|_| anyhow::anyhow!("the agent stopped"))
    }

    async fn call(
        &self,
        master: &str,
        path: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(StatusCode, HeaderMap, bytes::Bytes)> {
        self.call_within(master, path, body, CALL_TIMEOUT_MS).await
    }

    async fn call_within(
        &self,
        master: &str,
        path: &str,
        body: Vec<u8>,
        timeout_ms: u64,
    ) -> anyhow::Result<(StatusCode, HeaderMap, bytes::Bytes)> {
        Ok(self
            .client
            .request(
                Method::POST,
                &format!("{master}{path}"),
                body,
                json_headers(),
                Duration::from_millis(timeout_ms),
                ANSWER_MAX_BYTES,
            )
            .await?)
    }

    /// Sends the outbox's oldest status until it is acknowledged, then the next, forever.
    async fn deliver_statuses(self: Arc<Self>) {
        let mut retry_ms = RETRY_MIN_MS;
        loop {
            let Some(report) = self.outbox.front() else {
                self.outbox.changed.notified().await;
                continue;
            };
            let master = self.masters.leader();
            let body = serde_json::to_vec(&StatusRequest {
                agent_id: self.agent.id.clone(),
                report: report.clone(),
            })
            .expect("statuses serialize");
            match self.call(&master, AGENT_STATUS_PATH, body).await {
                Ok((StatusCode::OK, _, _)) => {
                    self.outbox.pop_if_front(&report);
                    retry_ms = RETRY_MIN_MS;
                    continue;
                }
                Ok((StatusCode::TEMPORARY_REDIRECT, headers, _))
                    if self.masters.redirected(&headers) =>
                {
                    continue
                }
                Ok((status, _, body)) if refused_for_good(status) => {
                    // Sending it again cannot help, and the statuses behind it must go on.
                    tracing::warn!(
                        task = %report.task_id,
                        "status refused by the master ({status}), dropped: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    );
                    self.outbox.pop_if_front(&report);
                    retry_ms = RETRY_MIN_MS;
                    continue;
                }
                Ok((status, _, body)) => tracing::debug!(
                    task = %report.task_id,
                    "status not acknowledged ({status}): {}",
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
                Err(e) => tracing::debug!(task = %report.task_id, "status not delivered: {e:#}"),
            }
            tokio::time::sleep(Duration::from_millis(retry_ms)).await;
            retry_ms = (retry_ms * 2).min(RETRY_MAX_MS);
        }
    }
}

/// Which report a full outbox drops: the oldest live one, but what is said once and acted
/// on (a task ready, a health check exhausted) only when nothing else can go; a terminal
/// status never. A newer report of the same task supersedes an older live one.
fn to_drop(queue: &VecDeque<TaskReport>) -> Option<usize> {
    let said_once = |r: &TaskReport| {
        r.readiness.as_ref().is_some_and(|ready| ready.ready)
            || r.health.as_ref().is_some_and(|health| health.exhausted)
    };
    queue
        .iter()
        .position(|r| !r.state.is_terminal() && !said_once(r))
        .or_else(|| queue.iter().position(|r| !r.state.is_terminal()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_outbox_is_moved_aside_and_the_agent_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status-outbox.json");
        std::fs::write(&path, b"[{\"taskId\": \"t1\", \"sta").unwrap();
        let outbox = Outbox::open(path.clone()).unwrap();
        assert!(outbox.is_empty());
        assert!(!path.exists());
        assert!(dir.path().join("status-outbox.json.damaged").exists());
    }

    #[test]
    fn a_full_outbox_drops_a_live_report_but_keeps_ends_and_readiness() {
        use dcos_core::TaskState;
        let report = |task_id: &str, state: TaskState| TaskReport {
            task_id: task_id.into(),
            state,
            message: None,
            exit_code: None,
            at_ms: 1,
            health: None,
            readiness: None,
            output: None,
        };
        let mut ready = report("ready", TaskState::Running);
        ready.readiness = Some(dcos_core::TaskReadiness {
            name: "readinessCheck".into(),
            ready: true,
            last_response: None,
        });
        let mut queue: VecDeque<TaskReport> = [
            ready.clone(),
            report("ended", TaskState::Finished),
            report("live", TaskState::Running),
        ]
        .into();
        assert_eq!(to_drop(&queue), Some(2), "the live report goes first");
        queue.pop_back();
        assert_eq!(
            to_drop(&queue),
            Some(0),
            "then the ready one, never the end"
        );
        queue.pop_front();
        assert_eq!(to_drop(&queue), None);
    }

    #[test]
    fn only_permanent_refusals_drop_a_status() {
        for status in [400, 404, 409, 413, 422] {
            assert!(
                refused_for_good(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
        for status in [200, 307, 401, 403, 408, 429, 500, 503] {
            assert!(
                !refused_for_good(StatusCode::from_u16(status).unwrap()),
                "{status}"
            );
        }
    }
}
