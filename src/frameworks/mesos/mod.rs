//! External frameworks through Mesos's v1 scheduler API (`POST /api/v1/scheduler`): the
//! leader offers free resources to subscribed frameworks (the pure allocator,
//! `dcos_core::mesos::allocator`), launches what they accept, and streams them their
//! tasks' status updates until they acknowledge them.
//!
//! What is replicated: frameworks (`SubscribeFramework`, ...), their tasks (tasks like any,
//! `TaskOwner::Framework`, under the id `<framework id>.<their task id>`, since Mesos's task
//! ids are the framework's own), and the status updates not yet acknowledged
//! (`FrameworksState::updates`): a new leader sends again whatever the old one had not seen
//! acknowledged. What is leader memory: the subscriptions (event streams), the offers and
//! decline filters (the allocator), when each update was last sent.
//!
//! The offer loop (`run`) is event-driven: it wakes when something is applied or a call
//! changes the allocator (decline, revive, ...), at most every `CYCLE_GAP_MS`, and does
//! nothing at all while no framework is subscribed.

pub mod http;
pub mod operator;

use crate::master::{Framework, Master, Proposal, Round};
use bytes::Bytes;
use dcos_api::mesos as wire;
use dcos_core::mesos::allocator::{Allocator, Offer};
use dcos_core::mesos::state::StatusUpdate;
pub use dcos_core::mesos::state::{
    framework_of, DEFAULT_ROLE, JOBS_FRAMEWORK_ID, SERVICES_FRAMEWORK_ID,
};
use dcos_core::{ClusterState, Command, Resources, Task, TaskOwner, TaskState};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};

/// The Mesos API this master speaks (`GET /version`; pymesos parses it as X.Y.Z and
/// enables what Mesos 1.x has).
pub const MESOS_API_VERSION: &str = "1.11.0";
/// How often a subscription gets a HEARTBEAT (SUBSCRIBED says so).
pub const HEARTBEAT_INTERVAL_SECONDS: f64 = 15.0;
/// An update not acknowledged within this is sent again (Mesos's agents: 10 s, growing).
const UPDATE_RESEND_MS: u64 = 10_000;
/// Most subscriptions at once.
pub const SUBSCRIPTIONS_MAX: usize = 256;
/// Events queued for one subscription: a framework that does not read its stream loses
/// its subscription (it subscribes again) rather than the master's memory.
const EVENTS_QUEUED_MAX: usize = 4096;
/// The offer loop runs at most this often (a burst of applied changes costs one cycle).
const CYCLE_GAP_MS: u64 = 10;
/// A new leader waits this long for the frameworks of the old one to subscribe again
/// before it counts them disconnected and before it offers anything (unless all are back).
pub const RECONNECT_GRACE_MS: u64 = 15_000;
/// An ended task of a framework, its updates all acknowledged, is forgotten after this.
const ENDED_TASKS_KEPT_MS: u64 = 15 * 60_000;

#[derive(Default)]
pub struct Mesos {
    inner: tokio::sync::Mutex<Inner>,
    /// Something changed that the offer loop should look at (a call, a closed stream).
    wake: Notify,
    /// The operator API's SUBSCRIBE streams open on this master.
    operator_streams: Arc<std::sync::atomic::AtomicUsize>,
}

#[derive(Default)]
pub(crate) struct Inner {
    /// This leadership's allocator (`None` while following).
    allocator: Option<Allocator>,
    leading_since: Option<Instant>,
    subs: HashMap<String, Subscription>,
    /// Updates sent and not yet acknowledged: uuid -> (framework id, when sent).
    sent: HashMap<String, (String, Instant)>,
}

struct Subscription {
    stream_id: String,
    events: mpsc::Sender<Bytes>,
    partition_aware: bool,
    /// Ends the stream's heartbeats (and with them the stream) when the subscription is
    /// dropped: replaced by a new one, torn down, or this master stops leading.
    ended: tokio_util::sync::CancellationToken,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.ended.cancel();
    }
}

impl Subscription {
    /// Queues `event`; false if the stream is gone or too far behind (then it is dropped).
    fn send(&self, event: &wire::Event) -> bool {
        self.events.try_send(Bytes::from(event.record())).is_ok()
    }
}

/// The id of a framework's task in the state: `<framework id>.<its task id>`.
pub fn task_key(framework_id: &str, task_id: &str) -> String {
    format!("{framework_id}.{task_id}")
}

/// The framework's own id of one of its tasks.
pub fn framework_task_id(task: &Task) -> &str {
    task.id
        .split_once('.')
        .map_or(task.id.as_str(), |(_, id)| id)
}

/// A task's state as the framework is told it: without PARTITION_AWARE, unreachable and
/// gone tasks are TASK_LOST (Mesos's rule); with it, TASK_UNREACHABLE and TASK_GONE.
fn wire_state(state: TaskState, partition_aware: bool) -> &'static str {
    match (state, partition_aware) {
        (TaskState::Staging, _) => "TASK_STAGING",
        (TaskState::Starting, _) => "TASK_STARTING",
        (TaskState::Running, _) => "TASK_RUNNING",
        (TaskState::Killing, _) => "TASK_KILLING",
        (TaskState::Finished, _) => "TASK_FINISHED",
        (TaskState::Failed, _) => "TASK_FAILED",
        (TaskState::Killed, _) => "TASK_KILLED",
        (TaskState::Error, _) => "TASK_ERROR",
        (TaskState::Unreachable, true) => "TASK_UNREACHABLE",
        (TaskState::Lost, true) => "TASK_GONE",
        (TaskState::Unreachable | TaskState::Lost, false) => "TASK_LOST",
    }
}

/// The status of `task` as an update: `update` (with its uuid, to be acknowledged) or, for
/// reconciliation, the task's current state without a uuid.
fn task_status(
    task: &Task,
    update: Option<&StatusUpdate>,
    partition_aware: bool,
    reason: Option<&str>,
) -> wire::TaskStatus {
    let (state, at_ms, message, exit_code) = match update {
        Some(u) => (u.state, u.at_ms, u.message.clone(), u.exit_code),
        None => (
            task.state,
            task.updated_at_ms,
            task.message.clone(),
            task.exit_code,
        ),
    };
    let source = match state {
        TaskState::Unreachable | TaskState::Lost => "SOURCE_MASTER",
        _ if update.is_none() => "SOURCE_MASTER",
        _ => "SOURCE_EXECUTOR",
    };
    // Mesos's command executor's words for a failed command.
    let message = match (state, exit_code) {
        (TaskState::Failed, Some(code)) => Some(format!("Command exited with status {code}")),
        _ => message,
    };
    wire::TaskStatus {
        task_id: wire::Id::new(framework_task_id(task)),
        state: wire_state(state, partition_aware).to_string(),
        source: source.to_string(),
        reason: reason.map(str::to_string),
        message,
        agent_id: Some(wire::Id::new(&task.agent_id)),
        timestamp: at_ms as f64 / 1000.0,
        uuid: update.map(|u| u.uuid.clone()),
    }
}

/// An update the master makes up (a refused launch, a kill or reconciliation of a task it
/// does not know): no uuid, nothing to acknowledge.
fn master_status(
    task_id: &str,
    agent_id: Option<&str>,
    state: &str,
    reason: &str,
    message: String,
) -> wire::TaskStatus {
    wire::TaskStatus {
        task_id: wire::Id::new(task_id),
        state: state.to_string(),
        source: "SOURCE_MASTER".to_string(),
        reason: Some(reason.to_string()),
        message: Some(message),
        agent_id: agent_id.map(wire::Id::new),
        timestamp: crate::link::now_ms() as f64 / 1000.0,
        uuid: None,
    }
}

/// The free host ports of `agent_id` as a Mesos `ports` resource (ranges).
fn free_ports(state: &ClusterState, agent: &dcos_core::Agent) -> Option<wire::Resource> {
    let (_, used) = state.held_on(&agent.id);
    let mut ranges: Vec<wire::Range> = Vec::new();
    for range in &agent.ports {
        for port in range.begin..=range.end {
            if used.contains(&port) {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.end + 1 == u64::from(port) => last.end = u64::from(port),
                _ => ranges.push(wire::Range {
                    begin: u64::from(port),
                    end: u64::from(port),
                }),
            }
        }
    }
    (!ranges.is_empty()).then(|| wire::Resource::ranges("ports", ranges))
}

/// An agent's attributes as Mesos's TEXT attributes.
fn attributes(agent: &dcos_core::Agent) -> Vec<serde_json::Value> {
    agent
        .attributes
        .iter()
        .map(|(name, value)| {
            serde_json::json!({ "name": name, "type": "TEXT", "text": { "value": value } })
        })
        .collect()
}

/// An offer as the framework reads it.
fn wire_offer(state: &ClusterState, offer: &Offer) -> Option<wire::Offer> {
    let agent = state.agents.get(&offer.agent_id)?;
    let mut resources = wire::resources_of(&offer.resources);
    resources.extend(free_ports(state, agent));
    Some(wire::Offer {
        id: wire::Id::new(&offer.id),
        framework_id: wire::Id::new(&offer.framework_id),
        agent_id: wire::Id::new(&agent.id),
        hostname: agent.hostname.clone(),
        resources,
        attributes: attributes(agent),
        url: wire::agent_url(&agent.url),
    })
}

/// What the offer loop reads of the state in one go.
struct Snapshot {
    agents: Vec<(String, Resources, bool)>,
    used: Vec<(String, String, Resources)>,
    /// Each task's oldest unacknowledged update, with its framework.
    pending: Vec<(String, Task, StatusUpdate)>,
    roles: BTreeMap<String, dcos_core::mesos::allocator::RoleConfig>,
}

fn snapshot(state: &ClusterState, connected: &dyn Fn(&str) -> bool) -> Snapshot {
    let agents = state
        .agents
        .values()
        .map(|a| {
            let offerable = a.state == dcos_core::AgentState::Active
                && !state.draining.contains(&a.id)
                && connected(&a.id);
            (a.id.clone(), a.resources, offerable)
        })
        .collect();
    let used = state
        .tasks
        .values()
        .filter(|t| !t.state.is_terminal() && t.holds_resources())
        .map(|t| {
            (
                framework_of(&t.owner).to_string(),
                t.agent_id.clone(),
                t.resources,
            )
        })
        .collect();
    let pending = state
        .frameworks
        .updates
        .iter()
        .filter_map(|(task_id, queue)| {
            let task = state.tasks.get(task_id)?;
            let TaskOwner::Framework { framework_id } = &task.owner else {
                return None;
            };
            Some((framework_id.clone(), task.clone(), queue.first()?.clone()))
        })
        .collect();
    Snapshot {
        agents,
        used,
        pending,
        roles: state.frameworks.roles.clone(),
    }
}

impl Inner {
    /// This leadership's allocator, made on first use with the built-in frameworks in it.
    fn allocator(&mut self) -> &mut Allocator {
        self.allocator.get_or_insert_with(|| {
            let mut allocator = Allocator::new(&format!("{}-", crate::link::random_id()));
            allocator.add_framework(SERVICES_FRAMEWORK_ID, DEFAULT_ROLE, true);
            allocator.add_framework(JOBS_FRAMEWORK_ID, DEFAULT_ROLE, true);
            allocator
        })
    }

    /// Brings the allocator to the state (`snap`) and tells frameworks of the offers that
    /// went with it (agents gone, drained or disconnected).
    fn sync(&mut self, snap: &Snapshot) {
        let Inner {
            allocator, subs, ..
        } = self;
        let Some(allocator) = allocator.as_mut() else {
            return;
        };
        allocator.set_roles(&snap.roles);
        for offer in allocator.sync(&snap.agents, &snap.used) {
            if let Some(sub) = subs.get(&offer.framework_id) {
                sub.send(&wire::Event::Rescind {
                    offer_id: wire::Id::new(&offer.id),
                });
            }
        }
    }
}

/// Whether the roles' settings restrict the built-in frameworks: a guarantee of another
/// role (held back from them), or a limit of theirs.
fn roles_restrict_builtins(state: &ClusterState) -> bool {
    state.frameworks.roles.iter().any(|(role, config)| {
        if role == DEFAULT_ROLE {
            config.limit.is_some()
        } else {
            config.guarantee != Resources::default()
        }
    })
}

impl Mesos {
    /// Of a planning round's `proposals`, the built-in frameworks' launches that keep
    /// their role within its limit, leave other roles' guarantees whole and take nothing
    /// offered to an external framework (`Allocator::admit`); the others are dropped (their
    /// frameworks propose them again in a later round). While external frameworks are
    /// subscribed, the returned guard keeps the allocator until the admitted launches are
    /// recorded, so nothing they take is offered meanwhile. Nothing is checked (and no
    /// guard is needed) while no framework is subscribed and no role restricts them.
    pub(crate) async fn admit(
        &self,
        master: &Master,
        proposals: &mut Vec<Proposal>,
    ) -> Option<tokio::sync::MutexGuard<'_, Inner>> {
        let builtin = |p: &Proposal| matches!(p, Proposal::Launch(task) if !matches!(task.owner, TaskOwner::Framework { .. }));
        if !proposals.iter().any(builtin) {
            return None;
        }
        let mut inner = self.inner.lock().await;
        if inner.subs.is_empty() && !master.read(roles_restrict_builtins) {
            return None;
        }
        let snap = master.read(|s| snapshot(s, &|agent_id| master.is_connected(agent_id)));
        inner.allocator();
        inner.sync(&snap);
        let allocator = inner.allocator();
        proposals.retain(|p| {
            let Proposal::Launch(task) = p else {
                return true;
            };
            if !builtin(p) {
                return true;
            }
            match allocator.admit(framework_of(&task.owner), &task.agent_id, &task.resources) {
                Ok(()) => true,
                Err(reason) => {
                    tracing::debug!(task = %task.id, "launch held back by the fair share: {reason}");
                    false
                }
            }
        });
        Some(inner)
    }

    /// Wakes the offer loop (a call changed what may be offered).
    fn wake(&self) {
        self.wake.notify_one();
    }

    /// The offer loop: runs on every master, acts while it leads.
    pub async fn run(self: Arc<Self>, master: Arc<Master>, mut shutdown: watch::Receiver<bool>) {
        let mut applied = master.raft.subscribe();
        let mut tick = tokio::time::interval(Duration::from_millis(1_000));
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                changed = applied.changed() => if changed.is_err() { break },
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
            self.cycle(&master).await;
            tokio::time::sleep(Duration::from_millis(CYCLE_GAP_MS)).await;
        }
        // Streams end with the master.
        self.inner.lock().await.subs.clear();
    }

    /// One look at the state: leadership, closed streams, reconnect grace, offers, and
    /// updates due.
    async fn cycle(&self, master: &Arc<Master>) {
        let leading = master.raft.is_leader() && master.is_scheduling();
        let mut inner = self.inner.lock().await;
        if !leading {
            if inner.allocator.is_some() || !inner.subs.is_empty() {
                // Frameworks must follow the new leader: their streams end here.
                *inner = Inner::default();
            }
            return;
        }
        let now = crate::link::now_ms();
        let since = *inner.leading_since.get_or_insert_with(Instant::now);
        inner.allocator();
        // Streams that ended: their frameworks' failover timeouts run from now.
        let closed: Vec<String> = inner
            .subs
            .iter()
            .filter(|(_, s)| s.events.is_closed())
            .map(|(id, _)| id.clone())
            .collect();
        for id in &closed {
            inner.subs.remove(id);
        }
        let registered: BTreeMap<String, (String, bool)> = master.read(|s| {
            s.frameworks
                .frameworks
                .values()
                .map(|f| (f.id.clone(), (f.role.clone(), f.disconnected_ms.is_none())))
                .collect()
        });
        // Subscribed in the state but not here: after the grace (a new leader), disconnected.
        let graced = since.elapsed() >= Duration::from_millis(RECONNECT_GRACE_MS);
        let mut disconnected: Vec<String> = closed
            .into_iter()
            .filter(|id| registered.get(id).is_some_and(|(_, up)| *up))
            .collect();
        if graced {
            disconnected.extend(
                registered
                    .iter()
                    .filter(|(id, (_, up))| *up && !inner.subs.contains_key(*id))
                    .map(|(id, _)| id.clone()),
            );
            disconnected.sort();
            disconnected.dedup();
        }
        for framework_id in disconnected {
            tracing::info!(framework = %framework_id, "framework disconnected: its failover timeout runs");
            let _ = master
                .write(Command::FrameworkDisconnected {
                    framework_id,
                    at_ms: now,
                })
                .await;
        }
        if inner.subs.is_empty() {
            inner.sent.clear();
            return;
        }
        let snap = master.read(|s| snapshot(s, &|agent_id| master.is_connected(agent_id)));
        {
            // The allocator offers to subscribed frameworks only (one that is not has no
            // stream to hear of its offers' end).
            let Inner {
                allocator, subs, ..
            } = &mut *inner;
            let allocator = allocator.as_mut().expect("made above");
            let known: Vec<(String, bool)> = allocator
                .frameworks()
                .map(|(id, builtin)| (id.to_string(), builtin))
                .collect();
            for (id, builtin) in known {
                if !builtin && !subs.contains_key(&id) {
                    allocator.remove_framework(&id);
                }
            }
            for id in subs.keys() {
                let role = registered
                    .get(id)
                    .map_or(DEFAULT_ROLE, |(role, _)| role.as_str());
                allocator.add_framework(id, role, false);
            }
        }
        inner.sync(&snap);
        let Inner {
            allocator,
            subs,
            sent,
            ..
        } = &mut *inner;
        let allocator = allocator.as_mut().expect("made above");
        // Offers once the frameworks of a former leader had their chance to come back.
        let all_back = registered
            .iter()
            .all(|(id, (_, up))| !*up || subs.contains_key(id));
        if graced || all_back {
            let offers = allocator.allocate(now);
            let mut by_framework: BTreeMap<String, Vec<wire::Offer>> = BTreeMap::new();
            master.read(|s| {
                for offer in &offers {
                    if let Some(wire_offer) = wire_offer(s, offer) {
                        by_framework
                            .entry(offer.framework_id.clone())
                            .or_default()
                            .push(wire_offer);
                    }
                }
            });
            for (framework_id, offers) in by_framework {
                let count = offers.len();
                if let Some(sub) = subs.get(&framework_id) {
                    if sub.send(&wire::Event::Offers(offers)) {
                        tracing::debug!(framework = %framework_id, offers = count, "offers sent");
                    }
                }
            }
        }
        // Each task's oldest unacknowledged update, first sent or due again.
        let pending: std::collections::HashSet<&str> = snap
            .pending
            .iter()
            .map(|(_, _, u)| u.uuid.as_str())
            .collect();
        sent.retain(|uuid, _| pending.contains(uuid.as_str()));
        let resend = Duration::from_millis(UPDATE_RESEND_MS);
        for (framework_id, task, update) in &snap.pending {
            let Some(sub) = subs.get(framework_id) else {
                continue;
            };
            if sent
                .get(&update.uuid)
                .is_some_and(|(_, at)| at.elapsed() < resend)
            {
                continue;
            }
            let status = task_status(task, Some(update), sub.partition_aware, None);
            if sub.send(&wire::Event::Update(status)) {
                sent.insert(update.uuid.clone(), (framework_id.clone(), Instant::now()));
            }
        }
    }
}

impl Framework for Mesos {
    fn name(&self) -> &'static str {
        "mesos"
    }

    /// Frameworks past their failover timeout are removed; ended tasks whose updates were
    /// all acknowledged (or whose framework is gone) are forgotten after a while.
    fn plan(&self, state: &ClusterState, round: &Round) -> Vec<Proposal> {
        if state.frameworks.is_empty() {
            return Vec::new();
        }
        let mut proposals: Vec<Proposal> = state
            .frameworks
            .past_failover(round.now_ms)
            .into_iter()
            .map(|framework_id| {
                Proposal::Record(Box::new(Command::RemoveFramework {
                    framework_id,
                    at_ms: round.now_ms,
                }))
            })
            .collect();
        proposals.extend(
            state
                .tasks
                .values()
                .filter(|t| t.state.is_terminal())
                .filter(|t| match &t.owner {
                    TaskOwner::Framework { framework_id } => {
                        !state.frameworks.frameworks.contains_key(framework_id)
                            || (!state.frameworks.updates.contains_key(&t.id)
                                && round.now_ms.saturating_sub(t.updated_at_ms)
                                    >= ENDED_TASKS_KEPT_MS)
                    }
                    _ => false,
                })
                .map(|t| Proposal::Expunge {
                    task_id: t.id.clone(),
                }),
        );
        proposals
    }

    fn replaced_while_unreachable(&self, _state: &ClusterState, _agent_id: &str) -> Vec<String> {
        // An external framework decides itself what to do with a task that comes back.
        Vec::new()
    }

    fn spawn(self: Arc<Self>, master: Arc<Master>, shutdown: watch::Receiver<bool>) {
        master.share_with(Arc::clone(&self));
        tokio::spawn(self.run(master, shutdown));
    }
}
