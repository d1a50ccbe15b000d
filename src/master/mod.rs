//! The master: the replicated state (through `dcos-raft`), leadership, the links to its
//! agents, and the loop that runs the built-in frameworks (`Framework`) and performs what
//! they propose (propose a command, then tell the agent), feeding agent reports back into
//! the log. Nothing here knows of any one framework. Beside it, what the dashboard reads
//! through any master: a task's logs, usage and sandbox from its agent (`task_detail`), and
//! the cluster's usage over the last hour (`usage`, sampled in this master's memory).
//!
//! Leader-only memory (agent links, kills in flight) is rebuilt when agents register.

pub mod agents;
pub mod config;
mod framework;
pub mod http;
pub mod metrics;
pub mod serve;
mod task_detail;
mod usage;

pub use framework::{Framework, Proposal, Round};

use crate::link::{now_ms, TaskReport, ToAgent, ToMaster};
use dcos_core::{AgentState, ClusterState, Command, Outcome, Task, TaskState};
use dcos_raft::{RaftError, ReplicatedState};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Frameworks re-plan at least this often (backoff timers expire without a write).
const PLAN_INTERVAL_MS: u64 = 1_000;
/// After a change, frameworks re-plan at most this often: a round looks at every task, so
/// a burst of status updates (each batch a change) must not cost a round each.
const REPLAN_GAP_MS: u64 = 100;
/// How often agents' silence is checked: a dead agent is marked at most this long after its
/// `unreachable_timeout` ran out.
const AGENT_CHECK_INTERVAL_MS: u64 = 250;
/// After it takes over, a leader gives an agent it has not heard from yet this many
/// unreachable timeouts (20 s with the default 4 s) to find it before counting its silence:
/// an agent whose old leader went silent (powered off, partitioned) first has to notice (3
/// heartbeats in a row failing, 5 s each at most) and connect again. Agents that reached this
/// leader are timed from their last message.
const NEW_LEADER_GRACE_TIMEOUTS: u32 = 5;
/// A kill not answered by a terminal status is sent again after this long.
const KILL_RESEND_MS: u64 = 15_000;
/// Launches performed per planning round and framework: keeps a round short and the agent
/// links far from full (they share log entries, `ReplicatedState::write_all`); the next
/// round continues.
const LAUNCHES_PER_ROUND_MAX: usize = 4096;
/// Room kept free on an agent's link when a round fills it with launches (for kills).
const LINK_ROOM_KEPT: usize = crate::link::LINK_QUEUE_MAX / 4;
/// Agent messages handled in one go (status updates in a row share log entries) before
/// the master's loop looks at its other work.
const STATUS_BATCH_MAX: usize = 4096;

pub struct Master {
    pub raft: ReplicatedState,
    /// This master's own API URL, as shown by `node list`.
    pub url: String,
    /// Command channels of connected agents, by agent id (leader memory only).
    links: Mutex<BTreeMap<String, mpsc::Sender<ToAgent>>>,
    /// Kills sent, when, and with which grace period (a framework's kill_policy), so a
    /// kill is repeated only after `KILL_RESEND_MS`, and with the same grace.
    kills_sent: Mutex<HashMap<String, (Instant, Option<u64>)>>,
    pub metrics: metrics::Metrics,
    /// The built-in frameworks, planned in this order every round.
    frameworks: Vec<Arc<dyn Framework>>,
    /// Cleared when the master is stopping: task ends are still recorded, but frameworks no
    /// longer launch replacements.
    scheduling: AtomicBool,
    /// A planning round is being performed (its writes are not all applied yet): the next
    /// one waits, so it plans on what this one did.
    round_in_flight: AtomicBool,
    /// Told when a round ends (`run` may be waiting to start the next).
    round_done: tokio::sync::Notify,
    /// How a follower passes writes on to the leader (masters over mutual TLS); without it
    /// a follower answers a write with a redirect to the leader.
    leader_client: std::sync::OnceLock<crate::tls::NodeClient>,
    /// Remote agents: silence longer than this marks an agent unreachable. `None` for the
    /// in-process agent of `dcos-rs up`, whose link cannot go silent.
    unreachable_timeout: Option<Duration>,
    /// When each remote agent was last heard from (leader memory only).
    agent_seen: Mutex<HashMap<String, Instant>>,
    /// When this master last reported or recorded builds (`throttle_builds`).
    build_reported: Mutex<Option<Instant>>,
    /// On the leader: the masters' reported builds, with when they came (`record_builds`).
    build_reports: Mutex<BTreeMap<u64, (Instant, BuildReport)>>,
    /// Since when this master leads (None while it follows): agents get the unreachable
    /// timeout as a grace period from there to reconnect after a failover.
    leading_since: Mutex<Option<Instant>>,
    /// The allocator the built-in frameworks' launches go through (the Mesos framework's,
    /// set when it starts): they take their share as external frameworks do.
    share: std::sync::OnceLock<Arc<crate::frameworks::mesos::Mesos>>,
    /// How this master reaches agents' APIs for the dashboard (a task's logs, usage and
    /// files): over mutual TLS with its certificate in a cluster, plain HTTP in `up`.
    /// Without it those endpoints answer 503.
    agent_client: std::sync::OnceLock<crate::tls::NodeClient>,
    /// Log streams this master passes on from agents right now, at most
    /// `task_detail::LOG_FOLLOWS_MAX`: each holds a connection to an agent.
    log_follows: Arc<tokio::sync::Semaphore>,
    /// The cluster's usage as this master sampled it, oldest first: one sample every
    /// `usage::USAGE_SAMPLE_INTERVAL_MS`, at most `usage::USAGE_SAMPLES_MAX` (memory only:
    /// a restarted master starts again).
    usage_samples: Mutex<std::collections::VecDeque<dcos_api::UsageSample>>,
}

impl Master {
    /// A master running `frameworks`. `unreachable_timeout`: silence after which a remote
    /// agent is marked unreachable; `None` for the in-process agent of `dcos-rs up`, whose
    /// link cannot go silent.
    pub fn new(
        raft: ReplicatedState,
        url: String,
        frameworks: Vec<Arc<dyn Framework>>,
        unreachable_timeout: Option<Duration>,
    ) -> Arc<Master> {
        Arc::new(Master {
            raft,
            url,
            links: Mutex::new(BTreeMap::new()),
            kills_sent: Mutex::new(HashMap::new()),
            metrics: metrics::Metrics::new(),
            frameworks,
            scheduling: AtomicBool::new(true),
            round_in_flight: AtomicBool::new(false),
            round_done: tokio::sync::Notify::new(),
            leader_client: std::sync::OnceLock::new(),
            unreachable_timeout,
            agent_seen: Mutex::new(HashMap::new()),
            build_reported: Mutex::new(None),
            build_reports: Mutex::new(BTreeMap::new()),
            leading_since: Mutex::new(None),
            share: std::sync::OnceLock::new(),
            agent_client: std::sync::OnceLock::new(),
            log_follows: Arc::new(tokio::sync::Semaphore::new(task_detail::LOG_FOLLOWS_MAX)),
            usage_samples: Mutex::new(std::collections::VecDeque::new()),
        })
    }

    /// A remote agent was heard from. False if it has no link to this master (it must
    /// connect again, e.g. after a failover).
    pub fn heartbeat(&self, agent_id: &str) -> bool {
        let connected = self.is_connected(agent_id);
        if connected {
            self.agent_seen
                .lock()
                .expect("seen lock")
                .insert(agent_id.to_string(), Instant::now());
        }
        connected
    }

    /// How long ago (ms) this master, as leader, last heard from the agent; `None` if it
    /// has not (a follower, or no link since it leads).
    pub fn heard_ms_ago(&self, agent_id: &str) -> Option<u64> {
        let seen = self.agent_seen.lock().expect("seen lock");
        seen.get(agent_id).map(|at| at.elapsed().as_millis() as u64)
    }

    /// Leadership changes and silent agents; runs on every tick.
    async fn check_agents(&self) {
        let leading = self.raft.is_leader();
        let since = {
            let mut since = self.leading_since.lock().expect("leading lock");
            match (leading, *since) {
                (true, None) => *since = Some(Instant::now()),
                (false, Some(_)) => {
                    *since = None;
                    // Agents must follow the new leader: closing the links ends their streams.
                    self.links.lock().expect("links lock").clear();
                    self.agent_seen.lock().expect("seen lock").clear();
                }
                _ => {}
            }
            *since
        };
        let (Some(since), Some(timeout)) = (since, self.unreachable_timeout) else {
            return;
        };
        let now = Instant::now();
        let active: Vec<String> = self.read(|s| {
            s.agents
                .values()
                .filter(|a| a.state == AgentState::Active)
                .map(|a| a.id.clone())
                .collect()
        });
        // Silence counts from the agent's last message to this leader; an agent not heard
        // from since this master became leader (it may still be looking for it) gets the
        // grace first.
        let grace_end = since + timeout * (NEW_LEADER_GRACE_TIMEOUTS - 1);
        for agent_id in active {
            let seen = self
                .agent_seen
                .lock()
                .expect("seen lock")
                .get(&agent_id)
                .copied()
                .unwrap_or(grace_end);
            if now.saturating_duration_since(seen) < timeout {
                continue;
            }
            tracing::warn!(agent = %agent_id, silent_ms = now.saturating_duration_since(seen).as_millis() as u64, "agent unreachable");
            self.links.lock().expect("links lock").remove(&agent_id);
            self.agent_seen.lock().expect("seen lock").remove(&agent_id);
            if let Err(e) = self
                .write(Command::MarkAgentUnreachable {
                    agent_id: agent_id.clone(),
                    at_ms: now_ms(),
                })
                .await
            {
                tracing::warn!(agent = %agent_id, "marking unreachable not recorded: {e}");
            }
        }
    }

    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        self.raft.read(f)
    }

    pub async fn write(&self, command: Command) -> Result<Outcome, RaftError> {
        // A command of a newer log protocol waits until every voter applies it (none yet:
        // every command so far is protocol 1).
        let needs = command.protocol();
        if needs > 1 {
            let voters = self.voters();
            let (cluster, behind) = self.read(|s| s.protocol_of(&voters, needs));
            if cluster < needs {
                return Ok(Outcome::Rejected(dcos_core::Reject::ProtocolTooNew {
                    needs,
                    cluster,
                    behind,
                }));
            }
        }
        self.raft.write(command).await
    }

    /// The voting masters' ids.
    fn voters(&self) -> Vec<u64> {
        let status = self.raft.status();
        status
            .members
            .iter()
            .filter(|m| m.role != "learner")
            .map(|m| m.node_id)
            .collect()
    }

    /// Records this master's build and log protocol in the cluster state once it is known
    /// and differs from what is recorded: a follower reports it to the leader's internal
    /// endpoint (this master's certificate) at most every 2 s; the leader keeps the reports
    /// (`take_build_report`) and records them (`record_builds`).
    fn report_build(self: &Arc<Self>) {
        let Some(version) = crate::build_version_if_known() else {
            return;
        };
        let report = BuildReport {
            master_id: self.raft.status().node_id,
            version: version.to_string(),
            protocol: dcos_core::command::PROTOCOL,
        };
        let recorded = self.read(|s| s.masters.get(&report.master_id).cloned());
        if recorded.is_some_and(|b| b == report.build()) {
            return;
        }
        if self.raft.is_leader() {
            self.take_build_report(report);
            return;
        }
        if !self.throttle_builds() {
            return;
        }
        let master = Arc::clone(self);
        tokio::spawn(async move {
            let (Some(client), Some(leader)) =
                (master.leader_client(), master.raft.status().leader_addr)
            else {
                return;
            };
            let url = format!(
                "{}{}",
                leader.trim_end_matches('/'),
                dcos_api::routes::internal::MASTER_BUILD
            );
            let mut headers = hyper::HeaderMap::new();
            headers.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            let body = serde_json::to_vec(&report).unwrap_or_default();
            let sent = client
                .request(
                    hyper::Method::POST,
                    &url,
                    body,
                    headers,
                    Duration::from_secs(5),
                    64 << 10,
                )
                .await;
            if let Err(e) = sent {
                tracing::debug!(error = %e, "reporting this master's build to the leader");
            }
        });
    }

    /// True at most once per 2 s (build reports and records).
    fn throttle_builds(&self) -> bool {
        let mut last = self.build_reported.lock().expect("build lock");
        if last.is_some_and(|at| at.elapsed() < Duration::from_secs(2)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// On the leader: a master's report of its build (its own, or a follower's).
    pub(crate) fn take_build_report(self: &Arc<Self>, report: BuildReport) {
        self.build_reports
            .lock()
            .expect("reports lock")
            .insert(report.master_id, (Instant::now(), report));
        self.record_builds();
    }

    /// On the leader: writes the voters' reported builds, but only once every voter has a
    /// record or reported within `BUILD_REPORT_FRESH`. A master of a build before
    /// `MasterBuild` never reports and could not apply the entry: while one votes, nothing
    /// is written (and the protocol gate counts it as protocol 1). Going back to such a
    /// build after its record exists is not covered.
    fn record_builds(self: &Arc<Self>) {
        let voters = self.voters();
        let reports: BTreeMap<u64, BuildReport> = {
            let mut reports = self.build_reports.lock().expect("reports lock");
            reports.retain(|_, (at, _)| at.elapsed() < BUILD_REPORT_FRESH);
            reports
                .iter()
                .map(|(id, (_, r))| (*id, r.clone()))
                .collect()
        };
        let stale: Option<Vec<Command>> = self.read(|s| {
            // A voter with a record reported a build that reads these entries before.
            let all_known = voters
                .iter()
                .all(|v| reports.contains_key(v) || s.masters.contains_key(v));
            all_known.then(|| {
                reports
                    .values()
                    .filter(|r| voters.contains(&r.master_id))
                    .filter(|r| s.masters.get(&r.master_id) != Some(&r.build()))
                    .map(BuildReport::command)
                    .collect()
            })
        });
        let Some(stale) = stale.filter(|stale| !voters.is_empty() && !stale.is_empty()) else {
            return;
        };
        if !self.throttle_builds() {
            return;
        }
        let master = Arc::clone(self);
        tokio::spawn(async move {
            for command in stale {
                if let Err(e) = master.raft.write(command).await {
                    tracing::debug!(error = %e, "recording a master's build");
                    return;
                }
            }
        });
    }

    /// Stops launching and replacing tasks (used before a shutdown that kills tasks).
    /// False once the master is stopping (long-lived answers such as event streams end).
    pub fn is_scheduling(&self) -> bool {
        self.scheduling.load(Ordering::SeqCst)
    }

    /// The built-in frameworks' launches go through `mesos`'s allocator from now on.
    pub(crate) fn share_with(&self, mesos: Arc<crate::frameworks::mesos::Mesos>) {
        let _ = self.share.set(mesos);
    }

    /// From now on a follower passes writes on to the leader through `client` (its
    /// certificate's, trusting the cluster CA), as Marathon's followers proxy them.
    pub fn proxy_writes_with(&self, client: crate::tls::NodeClient) {
        let _ = self.leader_client.set(client);
    }

    pub(crate) fn leader_client(&self) -> Option<&crate::tls::NodeClient> {
        self.leader_client.get()
    }

    /// From now on this master reaches agents' APIs (the dashboard's task logs, usage and
    /// files) through `client`: its own certificate in a cluster (agents accept masters'),
    /// plain HTTP in `dcos-rs up`.
    pub fn reach_agents_with(&self, client: crate::tls::NodeClient) {
        let _ = self.agent_client.set(client);
    }

    pub(crate) fn agent_client(&self) -> Option<&crate::tls::NodeClient> {
        self.agent_client.get()
    }

    pub fn stop_scheduling(&self) {
        self.scheduling.store(false, Ordering::SeqCst);
    }

    /// True once the agent has registered in this master's term (its link is up).
    pub fn is_connected(&self, agent_id: &str) -> bool {
        self.links
            .lock()
            .expect("links lock")
            .contains_key(agent_id)
    }

    /// Closes the agent's command stream (it was removed): when it connects again it is
    /// told why it is refused.
    pub fn disconnect(&self, agent_id: &str) {
        self.links.lock().expect("links lock").remove(agent_id);
        self.agent_seen.lock().expect("seen lock").remove(agent_id);
    }

    fn link(&self, agent_id: &str) -> Option<mpsc::Sender<ToAgent>> {
        self.links
            .lock()
            .expect("links lock")
            .get(agent_id)
            .cloned()
    }

    /// Runs the frameworks and handles agent messages until `shutdown` flips.
    pub async fn run(
        self: Arc<Self>,
        mut from_agents: mpsc::Receiver<ToMaster>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut applied = self.raft.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(PLAN_INTERVAL_MS));
        let mut agents_tick = tokio::time::interval(Duration::from_millis(AGENT_CHECK_INTERVAL_MS));
        let gap = Duration::from_millis(REPLAN_GAP_MS);
        // Something was applied since the last round.
        let mut changed = false;
        // A round was due but another was still in flight: the next starts when it ends
        // (at once if the gap has passed), so long rounds follow each other without a pause.
        let mut waiting_for_round = false;
        let mut last_round = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = agents_tick.tick() => {
                    self.check_agents().await;
                    self.report_build();
                }
                message = from_agents.recv() => match message {
                    Some(message) => self.handle_agent_messages(message, &mut from_agents).await,
                    None => break,
                },
                applied_now = applied.changed(), if !changed => {
                    if applied_now.is_err() { break; }
                    changed = true;
                }
                _ = tokio::time::sleep_until(last_round + gap), if changed && !waiting_for_round => {
                    if self.start_round() {
                        last_round = tokio::time::Instant::now();
                        changed = false;
                    } else {
                        waiting_for_round = true;
                    }
                }
                _ = self.round_done.notified(), if waiting_for_round => waiting_for_round = false,
                _ = tick.tick() => {
                    if self.start_round() {
                        changed = false;
                        last_round = tokio::time::Instant::now();
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
        // A round in flight finishes its writes before the master goes (bounded by the
        // writes' own timeout); it sends nothing more once scheduling stopped.
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(dcos_raft::WRITE_TIMEOUT_MS + REPLAN_GAP_MS);
        while self.round_in_flight.load(Ordering::SeqCst) {
            let done = self.round_done.notified();
            if tokio::time::timeout_at(deadline, done).await.is_err() {
                tracing::warn!("a planning round did not end before the master stopped");
                break;
            }
        }
    }

    /// Handles `first` and whatever else agents have sent meanwhile (up to
    /// `STATUS_BATCH_MAX` messages): status updates in a row are recorded together, in
    /// their order, so a burst of them costs a few log entries instead of one each.
    async fn handle_agent_messages(
        self: &Arc<Self>,
        first: ToMaster,
        from_agents: &mut mpsc::Receiver<ToMaster>,
    ) {
        let mut statuses = Vec::new();
        let mut message = Some(first);
        let mut handled = 0;
        while let Some(m) = message.take() {
            match m {
                ToMaster::Status(report) => statuses.push((report, None)),
                ToMaster::StatusAcked { report, ack } => statuses.push((report, Some(ack))),
                other => {
                    self.record_statuses_acked(std::mem::take(&mut statuses))
                        .await;
                    self.handle_agent_message(other).await;
                }
            }
            handled += 1;
            if handled < STATUS_BATCH_MAX {
                message = from_agents.try_recv().ok();
            }
        }
        self.record_statuses_acked(statuses).await;
    }

    /// Proposes the statuses (in their order) without waiting for their commit, so the
    /// loop goes on reading agents meanwhile; each ack is answered once its status is
    /// committed.
    async fn record_statuses_acked(
        self: &Arc<Self>,
        statuses: Vec<(TaskReport, Option<oneshot::Sender<bool>>)>,
    ) {
        if statuses.is_empty() {
            return;
        }
        let (reports, acks): (Vec<_>, Vec<_>) = statuses.into_iter().unzip();
        let proposed = self
            .raft
            .propose_all(reports.iter().map(status_command).collect())
            .await;
        let master = Arc::clone(self);
        tokio::spawn(async move {
            let committed = master.statuses_recorded(&reports, proposed.outcomes().await);
            for (ack, committed) in acks.into_iter().zip(committed) {
                if let Some(ack) = ack {
                    let _ = ack.send(committed);
                }
            }
        });
    }

    async fn handle_agent_message(self: &Arc<Self>, message: ToMaster) {
        match message {
            ToMaster::Register { agent, tasks, link } => {
                let agent_id = agent.id.clone();
                tracing::info!(agent = %agent_id, url = %agent.url, tasks = tasks.len(), "agent registered");
                match self.write(Command::RegisterAgent { agent }).await {
                    Ok(Outcome::Applied) => {}
                    // Dropping the link ends its command stream: the agent tries again.
                    Ok(Outcome::Rejected(reject)) => {
                        tracing::warn!("agent {agent_id} refused: {reject}");
                        return;
                    }
                    Err(e) => {
                        tracing::error!("recording agent {agent_id}: {e}");
                        return;
                    }
                }
                self.links
                    .lock()
                    .expect("links lock")
                    .insert(agent_id.clone(), link);
                self.agent_seen
                    .lock()
                    .expect("seen lock")
                    .insert(agent_id.clone(), Instant::now());
                self.reconcile_agent(&agent_id, tasks).await;
            }
            ToMaster::Status(report) => self.record_statuses_acked(vec![(report, None)]).await,
            ToMaster::StatusAcked { report, ack } => {
                self.record_statuses_acked(vec![(report, Some(ack))]).await
            }
            ToMaster::Images {
                agent_id,
                images,
                ack,
            } => {
                let count = images.len();
                let written = self
                    .write(Command::AgentImages {
                        agent_id: agent_id.clone(),
                        images,
                    })
                    .await;
                let committed = match written {
                    Ok(Outcome::Applied) => true,
                    Ok(Outcome::Rejected(reject)) => {
                        tracing::warn!(agent = %agent_id, "image list refused: {reject}");
                        false
                    }
                    Err(e) => {
                        tracing::warn!(agent = %agent_id, "image list not recorded: {e}");
                        false
                    }
                };
                tracing::debug!(agent = %agent_id, images = count, committed, "agent images");
                let _ = ack.send(committed);
            }
        }
    }

    /// After a (re-)registration: adopt what the agent runs, mark lost what it does not know,
    /// and kill what should not run any more.
    async fn reconcile_agent(&self, agent_id: &str, reports: Vec<TaskReport>) {
        let reported: BTreeMap<String, TaskReport> = reports
            .into_iter()
            .map(|r| (r.task_id.clone(), r))
            .collect();
        // Back from unreachable: tasks replaced meanwhile are killed before anything else,
        // so an instance never runs twice; the others take their place again.
        let replaced: Vec<String> = self.read(|s| {
            self.frameworks
                .iter()
                .flat_map(|f| f.replaced_while_unreachable(s, agent_id))
                .collect()
        });
        for task_id in replaced {
            tracing::info!(task = %task_id, agent = %agent_id, "replaced while its agent was unreachable: killing");
            let _ = self
                .write(Command::KillTask {
                    task_id: task_id.clone(),
                    at_ms: now_ms(),
                })
                .await;
        }
        let (known, unknown_to_agent): (Vec<Task>, Vec<String>) = self.read(|s| {
            let on_agent: Vec<&Task> = s
                .tasks
                .values()
                .filter(|t| t.agent_id == agent_id)
                .collect();
            (
                on_agent.iter().map(|t| (*t).clone()).collect(),
                on_agent
                    .iter()
                    .filter(|t| !t.state.is_terminal() && !reported.contains_key(&t.id))
                    .map(|t| t.id.clone())
                    .collect(),
            )
        });
        for task_id in unknown_to_agent {
            self.record_status(TaskReport {
                task_id,
                state: TaskState::Lost,
                message: Some("the agent has no record of this task".into()),
                exit_code: None,
                at_ms: now_ms(),
                health: None,
                readiness: None,
                output: None,
            })
            .await;
        }
        let known: BTreeMap<String, Task> = known.into_iter().map(|t| (t.id.clone(), t)).collect();
        for (task_id, report) in reported {
            match known.get(&task_id) {
                Some(task) if !task.state.is_terminal() => {
                    let kill = task.kill_requested && !report.state.is_terminal();
                    self.record_status(report).await;
                    if kill {
                        self.send_kill(agent_id, &task_id).await;
                    }
                }
                // Ended or forgotten here but still alive there: it must not run.
                _ if !report.state.is_terminal() => self.send_kill(agent_id, &task_id).await,
                _ => {}
            }
        }
    }

    /// Records a status; true once it is committed (applied or refused as stale).
    async fn record_status(&self, report: TaskReport) -> bool {
        self.record_statuses(vec![report]).await[0]
    }

    /// Records statuses in their order (sharing log entries); for each, true once it is
    /// committed (applied or refused as stale).
    async fn record_statuses(&self, reports: Vec<TaskReport>) -> Vec<bool> {
        if reports.is_empty() {
            return Vec::new();
        }
        let commands = reports.iter().map(status_command).collect();
        let outcomes = self.raft.write_all(commands).await;
        self.statuses_recorded(&reports, outcomes)
    }

    /// What the outcomes of statuses mean: true for each committed.
    fn statuses_recorded(
        &self,
        reports: &[TaskReport],
        outcomes: Vec<Result<Outcome, RaftError>>,
    ) -> Vec<bool> {
        reports
            .iter()
            .zip(outcomes)
            .map(|(report, outcome)| match outcome {
                Ok(Outcome::Applied) => {
                    if report.state.is_terminal() {
                        self.kills_sent
                            .lock()
                            .expect("kills lock")
                            .remove(&report.task_id);
                    }
                    true
                }
                Ok(Outcome::Rejected(reject)) => {
                    tracing::debug!(task = %report.task_id, "status not recorded: {reject}");
                    true
                }
                Err(e) => {
                    tracing::warn!(task = %report.task_id, "status not recorded: {e}");
                    false
                }
            })
            .collect()
    }

    /// Sends a recorded launch to its agent; one its agent cannot take now (no link) is
    /// recorded lost.
    pub(crate) async fn send_launch(&self, task: Task) {
        if let Some(lost) = self.launch_or_lost(Box::new(task)) {
            self.record_status(lost).await;
        }
    }

    /// Queues a recorded launch on its agent's link; the TASK_LOST to record when its
    /// agent cannot take it now (no link, or a full one).
    fn launch_or_lost(&self, task: Box<Task>) -> Option<TaskReport> {
        let task_id = task.id.clone();
        let agent_id = task.agent_id.clone();
        if self.send_to_agent(&agent_id, ToAgent::Launch(task)) {
            return None;
        }
        Some(TaskReport {
            task_id,
            state: TaskState::Lost,
            message: Some("agent disconnected before the launch".into()),
            exit_code: None,
            at_ms: now_ms(),
            health: None,
            readiness: None,
            output: None,
        })
    }

    /// Tells the task's agent to kill it (again after `KILL_RESEND_MS` while unanswered).
    pub(crate) async fn send_kill(&self, agent_id: &str, task_id: &str) {
        self.send_kill_with_grace(agent_id, task_id, None).await
    }

    /// `send_kill` with the kill's own grace period (a Mesos framework's `kill_policy`).
    pub(crate) async fn send_kill_with_grace(
        &self,
        agent_id: &str,
        task_id: &str,
        grace_ms: Option<u64>,
    ) {
        // A repeated kill keeps the grace period an earlier one of the task was given.
        let grace_ms = {
            let mut sent = self.kills_sent.lock().expect("kills lock");
            let grace_ms = grace_ms.or_else(|| sent.get(task_id).and_then(|(_, g)| *g));
            sent.insert(task_id.to_string(), (Instant::now(), grace_ms));
            grace_ms
        };
        self.send_to_agent(
            agent_id,
            ToAgent::Kill {
                task_id: task_id.to_string(),
                grace_ms,
            },
        );
    }

    /// Queues `message` on the agent's link without ever waiting: the master's loop serves
    /// every agent, so one that does not read its link must not stall the others. A full
    /// link is dropped: the agent registers again (a remote agent's stream ends and it
    /// reconnects; the in-process agent of `up` sees its link close) and is reconciled. False
    /// if the message was not queued.
    fn send_to_agent(&self, agent_id: &str, message: ToAgent) -> bool {
        let Some(link) = self.link(agent_id) else {
            return false;
        };
        match link.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(
                    agent = %agent_id,
                    queued = crate::link::LINK_QUEUE_MAX,
                    "the agent's link is full (it does not read its commands): dropping the link; it registers again"
                );
                self.disconnect(agent_id);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.disconnect(agent_id);
                false
            }
        }
    }

    /// Starts a planning round beside the loop (which goes on reading agents); false if one
    /// is still in flight.
    fn start_round(self: &Arc<Self>) -> bool {
        if self.round_in_flight.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Cleared however the round ends (a panic included), or no round would start again.
        struct InFlight(Arc<Master>);
        impl Drop for InFlight {
            fn drop(&mut self) {
                self.0.round_in_flight.store(false, Ordering::SeqCst);
                self.0.round_done.notify_one();
            }
        }
        let round = InFlight(Arc::clone(self));
        tokio::spawn(async move { round.0.plan_and_act().await });
        true
    }

    /// One round: every framework plans on the applied state, then its proposals are
    /// performed; kills not yet answered are sent again.
    async fn plan_and_act(&self) {
        if !self.raft.is_leader() || !self.scheduling.load(Ordering::SeqCst) {
            return;
        }
        let now = now_ms();
        // An agent whose link is nearly full (it is behind on its commands, or does not
        // read them) takes no launches until it catches up: they go elsewhere.
        let connected: BTreeSet<String> = self
            .links
            .lock()
            .expect("links lock")
            .iter()
            .filter(|(_, link)| link.capacity() > LINK_ROOM_KEPT)
            .map(|(id, _)| id.clone())
            .collect();
        for framework in &self.frameworks {
            let proposals = self.read(|state| {
                // Place only on agents that are connected now.
                let placeable = |agent: &dcos_core::Agent| connected.contains(&agent.id);
                let round = Round {
                    now_ms: now,
                    connected: &placeable,
                    launches_max: LAUNCHES_PER_ROUND_MAX,
                };
                framework.plan(state, &round)
            });
            self.perform(proposals, framework.name(), now).await;
        }
        let pending_kills: Vec<(String, String)> = self.read(|state| {
            state
                .tasks
                .values()
                .filter(|t| t.kill_requested && !t.state.is_terminal())
                .map(|t| (t.agent_id.clone(), t.id.clone()))
                .collect()
        });
        for (agent_id, task_id) in pending_kills {
            let due = self
                .kills_sent
                .lock()
                .expect("kills lock")
                .get(&task_id)
                .is_none_or(|(sent, _)| sent.elapsed() >= Duration::from_millis(KILL_RESEND_MS));
            if due {
                self.send_kill(&agent_id, &task_id).await;
            }
        }
    }

    /// Performs a round's proposals: all recorded at once (in their order, sharing log
    /// entries), then each recorded launch sent to its agent (or recorded lost if the
    /// agent's link is gone) and each recorded kill told to the task's agent.
    async fn perform(&self, proposals: Vec<Proposal>, framework: &str, now: u64) {
        let mut launches = 0;
        // What each agent's link still takes (launches beyond wait for a later round: a
        // full link would be dropped and these launches lost), keeping room for kills.
        let mut room: BTreeMap<String, usize> = BTreeMap::new();
        let proposals: Vec<Proposal> = proposals
            .into_iter()
            .filter(|p| match p {
                Proposal::Launch(task) => {
                    let left = room.entry(task.agent_id.clone()).or_insert_with(|| {
                        self.link(&task.agent_id)
                            .map_or(0, |link| link.capacity().saturating_sub(LINK_ROOM_KEPT))
                    });
                    if launches >= LAUNCHES_PER_ROUND_MAX || *left == 0 {
                        return false;
                    }
                    *left -= 1;
                    launches += 1;
                    true
                }
                _ => true,
            })
            .collect();
        // Launches of the built-in frameworks within their fair share (held while recorded).
        let mut proposals = proposals;
        let share = self.share.get().cloned();
        let admitted = match &share {
            Some(mesos) => mesos.admit(self, &mut proposals).await,
            None => None,
        };
        let commands = proposals
            .iter()
            .map(|proposal| match proposal {
                Proposal::Launch(task) => Command::LaunchTask {
                    task: (**task).clone(),
                },
                Proposal::Kill { task_id } => Command::KillTask {
                    task_id: task_id.clone(),
                    at_ms: now,
                },
                Proposal::Expunge { task_id } => Command::ExpungeTask {
                    task_id: task_id.clone(),
                },
                Proposal::Record(command) => (**command).clone(),
                Proposal::RollBack {
                    app_id,
                    failed_deployment_id,
                    reason,
                } => Command::RollBack {
                    app_id: app_id.clone(),
                    failed_deployment_id: failed_deployment_id.clone(),
                    at_ms: now,
                    deployment_id: crate::link::random_id(),
                    reason: Some(reason.clone()),
                },
            })
            .collect();
        let outcomes = self.raft.write_all(commands).await;
        drop(admitted);
        let mut lost = Vec::new();
        for (proposal, outcome) in proposals.into_iter().zip(outcomes) {
            match (proposal, outcome) {
                // The master stopped meanwhile: the task is recorded and not sent; the agent
                // does not know it, so it is lost at the agent's next registration.
                (Proposal::Launch(task), Ok(Outcome::Applied)) if !self.is_scheduling() => {
                    tracing::info!(task = %task.id, "not launched: the master is stopping");
                }
                (Proposal::Launch(task), Ok(Outcome::Applied)) => {
                    tracing::info!(task = %task.id, agent = %task.agent_id, framework, "launching");
                    lost.extend(self.launch_or_lost(task));
                }
                (Proposal::Launch(task), Ok(Outcome::Rejected(reject))) => {
                    tracing::debug!(task = %task.id, framework, "launch refused: {reject}")
                }
                (Proposal::Launch(task), Err(e)) => {
                    tracing::warn!(task = %task.id, framework, "launch not recorded: {e}")
                }
                (Proposal::Kill { task_id }, Ok(Outcome::Applied)) => {
                    let agent_id = self.read(|s| s.tasks.get(&task_id).map(|t| t.agent_id.clone()));
                    if let Some(agent_id) = agent_id {
                        self.send_kill(&agent_id, &task_id).await;
                    }
                }
                (Proposal::RollBack { app_id, reason, .. }, Ok(Outcome::Applied)) => {
                    tracing::warn!(app = %app_id, framework, "rolled back: {reason}")
                }
                (Proposal::RollBack { app_id, .. }, Ok(Outcome::Rejected(reject))) => {
                    tracing::debug!(app = %app_id, framework, "rollback not needed: {reject}")
                }
                (Proposal::RollBack { app_id, .. }, Err(e)) => {
                    tracing::warn!(app = %app_id, framework, "rollback not recorded: {e}")
                }
                (Proposal::Record(command), Ok(Outcome::Rejected(reject))) => {
                    tracing::debug!(framework, "{} refused: {reject}", command_name(&command))
                }
                (Proposal::Record(command), Err(e)) => {
                    tracing::warn!(framework, "{} not recorded: {e}", command_name(&command))
                }
                (Proposal::Kill { .. } | Proposal::Expunge { .. } | Proposal::Record(_), _) => {}
            }
        }
        self.record_statuses(lost).await;
    }
}

/// A command's kind for the log (`StartRun`).
fn command_name(command: &Command) -> String {
    let debug = format!("{command:?}");
    debug
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The log entry of an agent's report: its task's new state, or what its health or
/// readiness checks found (the state unchanged).
fn status_command(report: &TaskReport) -> Command {
    if let Some(mut readiness) = report.readiness.clone() {
        if let Some(response) = &mut readiness.last_response {
            response.body = crate::link::bounded_status_message(std::mem::take(&mut response.body));
        }
        return Command::TaskReadiness {
            task_id: report.task_id.clone(),
            readiness,
        };
    }
    match report.health.clone() {
        Some(mut health) => {
            health.last_failure_cause = health
                .last_failure_cause
                .map(crate::link::bounded_status_message);
            // Stamped here: the backoff it may start is timed by the master's clock.
            Command::TaskHealth {
                task_id: report.task_id.clone(),
                health,
                at_ms: now_ms(),
            }
        }
        None => Command::TaskStatus {
            task_id: report.task_id.clone(),
            state: report.state,
            at_ms: report.at_ms,
            message: report
                .message
                .clone()
                .map(crate::link::bounded_status_message),
            exit_code: report.exit_code,
            output: report
                .output
                .clone()
                .map(dcos_core::types::TaskOutput::bounded),
        },
    }
}

/// A single master in this process, plain HTTP without authentication, serving on
/// `listener` until `shutdown` (tests and benchmarks with in-process agents): the master and
/// the inbox its agents send to. Its Raft log is under `raft_dir`.
pub async fn start_local(
    raft_dir: std::path::PathBuf,
    listener: tokio::net::TcpListener,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<(Arc<Master>, mpsc::Sender<ToMaster>)> {
    let url = format!("http://{}", listener.local_addr()?);
    let raft = ReplicatedState::open_single(dcos_raft::RaftOptions::single(raft_dir, &url)).await?;
    let builtin = crate::frameworks::builtin();
    let master = Master::new(raft, url, builtin.frameworks, None);
    // Its agents are in this process, their APIs (if any) plain HTTP on loopback.
    master.reach_agents_with(crate::tls::NodeClient::allowing_http(
        crate::tls::client_config_trusting_none(),
    ));
    let (to_master, from_agents) = mpsc::channel(crate::link::LINK_QUEUE_MAX);
    let router = http::router(
        master.clone(),
        None,
        crate::http_guard::RequestGuard::new(),
        builtin.routes,
    );
    start(
        master.clone(),
        from_agents,
        listener,
        None,
        router,
        shutdown,
    );
    Ok((master, to_master))
}

/// Runs a master, the same way for every mode: its loop (frameworks, agent messages from
/// `from_agents`) and its API server on `listener` (HTTPS with `tls`, plain HTTP without),
/// until `shutdown`.
pub fn start(
    master: Arc<Master>,
    from_agents: mpsc::Receiver<ToMaster>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    for framework in master.frameworks.clone() {
        framework.spawn(master.clone(), shutdown.clone());
    }
    vec![
        tokio::spawn(master.clone().sample_usage_every_interval(shutdown.clone())),
        tokio::spawn(master.run(from_agents, shutdown.clone())),
        tokio::spawn(crate::tls::serve(listener, tls, router, shutdown)),
    ]
}

/// A master's build, as a follower reports it to the leader (`internal::MASTER_BUILD`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildReport {
    pub master_id: u64,
    pub version: String,
    pub protocol: u32,
}

/// A report counts towards recording the builds for this long: a master that stopped
/// reporting (an older build took its place) holds the records back again.
const BUILD_REPORT_FRESH: Duration = Duration::from_secs(30);

impl BuildReport {
    fn build(&self) -> dcos_core::state::MasterBuild {
        dcos_core::state::MasterBuild {
            version: self.version.clone(),
            protocol: self.protocol,
        }
    }

    pub fn command(&self) -> Command {
        Command::MasterBuild {
            master_id: self.master_id,
            version: self.version.clone(),
            protocol: self.protocol,
        }
    }
}
