//! `ReplicatedState`: the master's handle on the replicated `ClusterState`. It opens the redb
//! store, runs openraft, proposes commands and lets readers look at the applied state.
//!
//! `open_single` runs the only master of a cluster (`dcos-rs up`); `open` runs one of several
//! masters that reach each other through a `Transport`. Membership changes (add a learner,
//! promote it, remove a master) go through the leader; a follower answers writes with
//! `RaftError::NotLeader` naming the leader's address so the HTTP layer can redirect.

use crate::db;
use crate::error::RaftError;
use crate::log_store::LogStore;
use crate::network::{self, Network, NoPeers, ServeError, Transport};
use crate::state_machine::{AppliedCommand, AppliedState, StateMachineStore};
use crate::TypeConfig;
use dcos_core::{ClusterState, Command, Outcome};
use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use redb::Database;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long `open_single` waits for this node to lead and to have applied its whole log.
const LEADER_WAIT_MS: u64 = 10_000;
/// How long `shutdown` waits for openraft's detached tasks to release the database file.
const RELEASE_WAIT_MS: u64 = 5_000;
const RELEASE_POLL_MS: u64 = 10;

/// Default snapshot interval: one snapshot per this many applied entries.
pub const DEFAULT_SNAPSHOT_LOGS_SINCE_LAST: u64 = 1_000;
/// Default number of already-snapshotted entries kept for followers that lag a little.
pub const DEFAULT_MAX_IN_SNAPSHOT_LOG_TO_KEEP: u64 = 1_000;
/// Default leader heartbeat. With the election timeouts below a dead leader is replaced
/// well within 2 s even after a split vote (one more timeout), and a follower misses three
/// heartbeats before it starts an election. 600-1200 ms measured 2.1 s to the first write.
pub const DEFAULT_HEARTBEAT_MS: u64 = 100;
pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 300;
pub const DEFAULT_ELECTION_TIMEOUT_MAX_MS: u64 = 600;
/// How long a write may wait to be committed. A leader cut off from its quorum cannot commit;
/// the caller then gets `RaftError::Timeout` instead of waiting forever.
pub const WRITE_TIMEOUT_MS: u64 = 10_000;
/// How long adding a learner waits for it to catch up before it is promoted.
#[cfg(not(test))]
const CATCH_UP_WAIT_MS: u64 = 60_000;
#[cfg(test)]
const CATCH_UP_WAIT_MS: u64 = 3_000;

#[derive(Debug, Clone)]
pub struct RaftOptions {
    /// Stable Raft id of this master; must never change for a data dir.
    pub node_id: u64,
    /// Holds `raft.redb` (log, vote, snapshot).
    pub data_dir: PathBuf,
    /// Address other masters will use to reach this one; recorded in the membership.
    pub advertise_addr: String,
    /// Build a snapshot after this many entries since the last one (bounds replay time).
    pub snapshot_logs_since_last: u64,
    /// Entries already in a snapshot that are kept anyway; the rest are purged (bounds disk).
    pub max_in_snapshot_log_to_keep: u64,
    /// The voters (id → address) a brand-new cluster starts with. Used only on a first start
    /// (empty log); every initial master must be given the same map. Empty: this master
    /// starts empty and waits to be added to a running cluster as a learner.
    pub initial_members: BTreeMap<u64, String>,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Free bytes the data dir's filesystem must keep for this master to accept writes; below
    /// it writes are refused with `RaftError::DiskFull` until space returns (`crate::space`).
    /// 0 turns the check off.
    pub min_free_bytes: u64,
}

impl RaftOptions {
    /// Options for the only master of a cluster: node id 1 and the default snapshot policy.
    pub fn single(data_dir: impl Into<PathBuf>, advertise_addr: impl Into<String>) -> Self {
        let advertise_addr = advertise_addr.into();
        Self {
            node_id: 1,
            data_dir: data_dir.into(),
            initial_members: BTreeMap::from([(1, advertise_addr.clone())]),
            advertise_addr,
            snapshot_logs_since_last: DEFAULT_SNAPSHOT_LOGS_SINCE_LAST,
            max_in_snapshot_log_to_keep: DEFAULT_MAX_IN_SNAPSHOT_LOG_TO_KEEP,
            heartbeat_ms: DEFAULT_HEARTBEAT_MS,
            election_timeout_min_ms: DEFAULT_ELECTION_TIMEOUT_MIN_MS,
            election_timeout_max_ms: DEFAULT_ELECTION_TIMEOUT_MAX_MS,
            min_free_bytes: crate::space::DEFAULT_MIN_FREE_BYTES,
        }
    }

    fn raft_config(&self) -> Result<Config, RaftError> {
        if self.snapshot_logs_since_last == 0 {
            return Err(RaftError::Config(
                "snapshot_logs_since_last must be at least 1".to_string(),
            ));
        }
        if self.heartbeat_ms == 0 || self.election_timeout_min_ms <= self.heartbeat_ms {
            return Err(RaftError::Config(format!(
                "election_timeout_min_ms ({}) must be larger than heartbeat_ms ({}), which must be at least 1",
                self.election_timeout_min_ms, self.heartbeat_ms
            )));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(RaftError::Config(format!(
                "election_timeout_max_ms ({}) must be larger than election_timeout_min_ms ({})",
                self.election_timeout_max_ms, self.election_timeout_min_ms
            )));
        }
        Config {
            cluster_name: "dcos-rs".to_string(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            max_payload_entries: network::MAX_PAYLOAD_ENTRIES,
            snapshot_max_chunk_size: network::SNAPSHOT_CHUNK_BYTES,
            ..Config::default()
        }
        .validate()
        .map_err(|e| RaftError::Config(e.to_string()))
    }
}

/// What `status()` reports, e.g. on the master's status endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RaftStatus {
    pub node_id: u64,
    pub term: u64,
    pub last_log_index: u64,
    /// The last applied index, exactly what `read` shows (applied entries are committed; it may
    /// trail the commit index by the entries being applied).
    pub commit_index: u64,
    pub leader_id: Option<u64>,
    /// Last entry covered by this node's newest snapshot.
    pub snapshot_index: Option<u64>,
    /// Last entry removed from this node's log (covered by a snapshot): a master that needs
    /// older entries catches up by snapshot.
    pub purged_index: Option<u64>,
    /// The leader's address (its API URL) from the membership, if a leader is known.
    pub leader_addr: Option<String>,
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
    /// Every master in the effective membership, as this node sees it.
    pub members: Vec<MemberStatus>,
    /// On the leader: how long ago a majority last acknowledged it (ms). Past the lease (twice
    /// the longest election timeout) the majority may have elected another leader, so this node
    /// stops acting as leader (`is_leader` is false) although openraft still calls it one.
    pub quorum_ack_age_ms: Option<u64>,
}

/// One master of the membership. Replication progress is known only on the leader.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemberStatus {
    pub node_id: u64,
    pub addr: String,
    /// "leader", "follower" (a voter) or "learner".
    pub role: String,
    /// Highest log index known to be on that master (leader only).
    pub matched_index: Option<u64>,
    /// Entries it is behind the leader's log (leader only).
    pub lag: Option<u64>,
}

/// Cheap to clone: all clones share one Raft node.
#[derive(Clone)]
pub struct ReplicatedState {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    raft: Raft<TypeConfig>,
    /// The state machine's memory, shared so `read` never goes through the Raft core.
    applied: Arc<RwLock<AppliedState>>,
    applied_index: Arc<watch::Sender<u64>>,
    applied_commands: Arc<tokio::sync::broadcast::Sender<Arc<AppliedCommand>>>,
    /// Lets `shutdown` wait until every openraft task has let go of the file, so the data dir
    /// can be reopened right away. Weak: this handle alone must not keep the file open.
    db: Weak<Database>,
    /// The leader lease: a leader no majority has acknowledged for longer stops leading.
    /// Twice the longest election timeout: past one, followers may have elected another;
    /// the margin keeps a leader on a loaded host from stepping down for a late answer.
    lease_ms: u64,
    /// Group commit of concurrent writes (one log entry, one fsync per master).
    batcher: crate::batch::Batcher,
    /// Where the log and the database live, and the free space writes need there.
    data_dir: PathBuf,
    min_free_bytes: u64,
}

impl ReplicatedState {
    /// Opens (or creates) the store, starts openraft, initializes a 1-voter membership on first
    /// start, and waits (bounded, 10 s) until this node is leader and has applied its log.
    pub async fn open_single(opts: RaftOptions) -> Result<Self, RaftError> {
        let state = Self::start(&opts, Arc::new(NoPeers)).await?;
        match state.initialize_single(&opts).await {
            Ok(()) => {
                tracing::info!(node_id = opts.node_id, status = ?state.status(), "raft ready: this master leads");
                Ok(state)
            }
            Err(e) => Err(state.release_after(e).await),
        }
    }

    /// Opens (or creates) the store and starts openraft as one of several masters reaching
    /// the others through `transport`. On a first start with `initial_members` set, this
    /// master proposes that membership (every initial master does the same; openraft makes
    /// that safe). Returns at once: leadership is elected in the background.
    pub async fn open(opts: RaftOptions, transport: Arc<dyn Transport>) -> Result<Self, RaftError> {
        if !opts.initial_members.is_empty() && !opts.initial_members.contains_key(&opts.node_id) {
            return Err(RaftError::Config(format!(
                "initial members {:?} do not include this master's node id {}",
                opts.initial_members.keys().collect::<Vec<_>>(),
                opts.node_id
            )));
        }
        let state = Self::start(&opts, transport).await?;
        let initialized = state.inner.raft.is_initialized().await;
        match initialized {
            Ok(false) if !opts.initial_members.is_empty() => {
                let members: BTreeMap<u64, BasicNode> = opts
                    .initial_members
                    .iter()
                    .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
                    .collect();
                match state.inner.raft.initialize(members).await {
                    Ok(()) => {
                        tracing::info!(node_id = opts.node_id, members = ?opts.initial_members, "initialized the cluster membership")
                    }
                    // Another initial master's membership reached us first: the same cluster.
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::InitializeError::NotAllowed(_),
                    )) => {}
                    Err(e) => return Err(state.release_after(e.into()).await),
                }
            }
            Ok(false) => tracing::info!(
                node_id = opts.node_id,
                "empty store and no initial members: waiting to be added to a cluster as a learner"
            ),
            Ok(true) => {}
            Err(fatal) => return Err(state.release_after(fatal.into()).await),
        }
        Ok(state)
    }

    async fn start(opts: &RaftOptions, transport: Arc<dyn Transport>) -> Result<Self, RaftError> {
        let config = Arc::new(opts.raft_config()?);
        let started = Instant::now();

        let data_dir = opts.data_dir.clone();
        crate::space::resume_waiting(&data_dir);
        let (db, state_machine, log_store) = tokio::task::spawn_blocking(move || {
            let db = db::open(&data_dir)?;
            let state_machine = StateMachineStore::open(Arc::clone(&db))?;
            let log_store = LogStore::open(Arc::clone(&db), &data_dir)?;
            Ok::<_, db::StoreError>((db, state_machine, log_store))
        })
        .await
        .map_err(|e| RaftError::Storage(format!("opening the raft store: {e}")))?
        .map_err(|e| RaftError::Storage(e.to_string()))?;

        let applied = state_machine.shared_state();
        let applied_index = state_machine.applied_index_sender();
        let applied_commands = state_machine.applied_commands_sender();
        let db_weak = Arc::downgrade(&db);
        drop(db);

        let raft = Raft::new(
            opts.node_id,
            config,
            Network::new(transport),
            log_store,
            state_machine,
        )
        .await
        .map_err(RaftError::from)?;
        tracing::debug!(
            node_id = opts.node_id,
            data_dir = %opts.data_dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "raft store opened"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                node_id: opts.node_id,
                applied,
                applied_index,
                applied_commands,
                db: db_weak,
                lease_ms: 2 * opts.election_timeout_max_ms,
                batcher: crate::batch::Batcher::start(raft.clone()),
                raft,
                data_dir: opts.data_dir.clone(),
                min_free_bytes: opts.min_free_bytes,
            }),
        })
    }

    /// Shuts a node down after a failed open (so the file is released) and returns `error`.
    async fn release_after(&self, error: RaftError) -> RaftError {
        if let Err(shutdown_error) = self.shutdown().await {
            tracing::warn!(error = %shutdown_error, "raft shutdown after a failed open also failed");
        }
        error
    }

    async fn initialize_single(&self, opts: &RaftOptions) -> Result<(), RaftError> {
        let raft = &self.inner.raft;
        if !raft.is_initialized().await? {
            let members =
                BTreeMap::from([(opts.node_id, BasicNode::new(opts.advertise_addr.clone()))]);
            raft.initialize(members).await?;
            tracing::info!(
                node_id = opts.node_id,
                "initialized a single-master raft membership"
            );
        }
        let voters: BTreeSet<u64> = raft
            .with_raft_state(|st| st.membership_state.effective().voter_ids().collect())
            .await?;
        if voters != BTreeSet::from([opts.node_id]) {
            return Err(RaftError::Config(format!(
                "the data dir {} belongs to a cluster whose voters are {voters:?}; a single master needs exactly node {} as its only voter",
                opts.data_dir.display(),
                opts.node_id
            )));
        }
        self.wait_until_leading_and_applied(Duration::from_millis(LEADER_WAIT_MS))
            .await
    }

    /// Waits until this node leads and has applied every entry in its log: only then do reads
    /// show everything that was acknowledged before a restart.
    async fn wait_until_leading_and_applied(&self, timeout: Duration) -> Result<(), RaftError> {
        let node_id = self.inner.node_id;
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if let Err(fatal) = &m.running_state {
                        return Err(RaftError::from(fatal.clone()));
                    }
                    let applied_index = m.last_applied.map(|id| id.index);
                    if m.state == ServerState::Leader
                        && m.current_leader == Some(node_id)
                        && applied_index == m.last_log_index
                    {
                        return Ok(());
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(RaftError::Fatal(
                        "raft stopped while waiting for leadership".to_string(),
                    ));
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(RaftError::Timeout(format!(
                "node {node_id} did not lead with its log applied within {} ms ({:?})",
                timeout.as_millis(),
                self.status()
            ))),
        }
    }

    /// Proposes a command; returns after it is committed (fsync'd) and applied. A refusal by
    /// the business rules is `Ok(Outcome::Rejected(..))`, replicated like any outcome.
    /// Concurrent writes share log entries (`crate::batch`).
    /// Bounded by `WRITE_TIMEOUT_MS`: a timed-out write may still commit later.
    pub async fn write(&self, command: Command) -> Result<Outcome, RaftError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        let write = self.inner.batcher.submit(command);
        match tokio::time::timeout(Duration::from_millis(WRITE_TIMEOUT_MS), write).await {
            Ok(outcome) => outcome,
            Err(_) => Err(RaftError::Timeout(format!(
                "the write was not committed within {WRITE_TIMEOUT_MS} ms (is a majority of masters reachable?); it may still be applied later"
            ))),
        }
    }

    /// Why a write would be refused before it is proposed. A leader past its lease answers
    /// at once instead of waiting for a commit that the majority, which may have moved on,
    /// will never acknowledge; a nearly full disk refuses (`crate::space`).
    fn refusal(&self) -> Option<RaftError> {
        if self.leadership() == Some(false) {
            return Some(RaftError::NotLeader {
                leader_id: None,
                leader_addr: None,
            });
        }
        crate::space::check_free(&self.inner.data_dir, self.inner.min_free_bytes)
            .map(RaftError::DiskFull)
    }

    /// Proposes `commands` in this order (they are applied in it, sharing log entries)
    /// and waits for all of them: one outcome each, in order. For a shell with many writes
    /// at once (a round's launches, a burst of status updates); each is bounded by
    /// `WRITE_TIMEOUT_MS` like `write`.
    pub async fn write_all(&self, commands: Vec<Command>) -> Vec<Result<Outcome, RaftError>> {
        self.propose_all(commands).await.outcomes().await
    }

    /// `write_all` in two steps: this one returns once the commands are proposed (in order:
    /// whatever is proposed after them is applied after them), `Proposed::outcomes` waits
    /// for them. A caller that must not wait for commits keeps its order this way.
    pub async fn propose_all(&self, commands: Vec<Command>) -> Proposed {
        let count = commands.len();
        if let Some(refusal) = self.refusal() {
            return Proposed {
                answers: (0..count).map(|_| Err(refusal.clone())).collect(),
                deadline: tokio::time::Instant::now(),
            };
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WRITE_TIMEOUT_MS);
        let mut answers = Vec::with_capacity(count);
        for command in commands {
            // A queue that stays full (commits stalled) must not hold the caller for ever.
            let enqueue = self
                .inner
                .batcher
                .enqueue(command, crate::batch::Lane::Bulk);
            answers.push(match tokio::time::timeout_at(deadline, enqueue).await {
                Ok(answer) => answer,
                Err(_) => Err(RaftError::Timeout(format!(
                    "the write was not proposed within {WRITE_TIMEOUT_MS} ms (the queue of writes stayed full); it was not applied"
                ))),
            });
        }
        Proposed { answers, deadline }
    }

    /// Reads the applied state under a read lock. Keep `f` short: applying waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&ClusterState) -> R) -> R {
        let applied = self
            .inner
            .applied
            .read()
            .expect("cluster state lock poisoned: an earlier apply panicked");
        f(&applied.state)
    }

    /// Every command applied from now on (a batch's one by one), with its outcome, in log
    /// order; for event streams. A listener more than `APPLIED_COMMANDS_BUFFER` behind
    /// misses some (`Lagged`).
    pub fn subscribe_commands(&self) -> tokio::sync::broadcast::Receiver<Arc<AppliedCommand>> {
        self.inner.applied_commands.subscribe()
    }

    /// Changes whenever entries are applied (value = last applied index); for schedulers that
    /// react to changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.applied_index.subscribe()
    }

    pub fn status(&self) -> RaftStatus {
        let applied_index = *self.inner.applied_index.borrow();
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        // openraft's metrics trail the state machine a little; never report a log shorter
        // than what is applied.
        let last_log_index = m.last_log_index.unwrap_or(0).max(applied_index);
        let membership = m.membership_config.membership();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| {
                let matched_index = m
                    .replication
                    .as_ref()
                    .and_then(|replication| replication.get(id))
                    .map(|matched| matched.map_or(0, |log_id| log_id.index));
                let role = if Some(*id) == m.current_leader {
                    "leader"
                } else if voters.contains(id) {
                    "follower"
                } else {
                    "learner"
                };
                MemberStatus {
                    node_id: *id,
                    addr: node.addr.clone(),
                    role: role.to_string(),
                    matched_index,
                    lag: matched_index.map(|matched| last_log_index.saturating_sub(matched)),
                }
            })
            .collect();
        let leader_addr = m
            .current_leader
            .and_then(|leader| membership.get_node(&leader))
            .map(|node| node.addr.clone());
        RaftStatus {
            node_id: self.inner.node_id,
            term: m.current_term,
            last_log_index,
            commit_index: applied_index,
            leader_id: m.current_leader,
            snapshot_index: m.snapshot.map(|log_id| log_id.index),
            purged_index: m.purged.map(|log_id| log_id.index),
            leader_addr,
            role: role.to_string(),
            members,
            quorum_ack_age_ms: m.millis_since_quorum_ack,
        }
    }

    /// The leader this node knows of, with its address, if any.
    /// A leader past its lease knows of none: the majority may have elected another.
    pub fn leader(&self) -> Option<(u64, String)> {
        if self.leadership() == Some(false) {
            return None;
        }
        let status = self.status();
        Some((status.leader_id?, status.leader_addr?))
    }

    /// Waits (bounded) until some master leads, as far as this node knows; returns its id.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<u64, RaftError> {
        let mut metrics = self.inner.raft.metrics();
        let wait = async {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if let Err(fatal) = &m.running_state {
                        return Err(RaftError::from(fatal.clone()));
                    }
                    if let Some(leader) = m.current_leader {
                        return Ok(leader);
                    }
                }
                if metrics.changed().await.is_err() {
                    return Err(RaftError::Fatal(
                        "raft stopped while waiting for a leader".to_string(),
                    ));
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            RaftError::Timeout(format!(
                "no leader known to node {} within {} ms",
                self.inner.node_id,
                timeout.as_millis()
            ))
        })?
    }

    /// Hands an RPC from another master (`rpc` = append, vote or snapshot; `body` its JSON)
    /// to this node and returns the JSON answer.
    pub async fn serve_rpc(&self, rpc: &str, body: &[u8]) -> Result<Vec<u8>, ServeError> {
        network::serve_rpc(&self.inner.raft, rpc, body).await
    }

    /// Adds a master as a learner and waits (bounded, 60 s) until it has caught up with the
    /// leader's log. Leader only. Adding a member that exists with the same address is a
    /// no-op; with another address it is refused (remove it first).
    pub async fn add_learner(&self, node_id: u64, addr: &str) -> Result<(), RaftError> {
        if let Some(existing) = self
            .status()
            .members
            .into_iter()
            .find(|m| m.node_id == node_id)
        {
            if existing.addr == addr {
                return Ok(());
            }
            return Err(RaftError::Membership(format!(
                "master {node_id} is already a member at {}; remove it before adding it at {addr}",
                existing.addr
            )));
        }
        let add = self
            .inner
            .raft
            .add_learner(node_id, BasicNode::new(addr), true);
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_millis(CATCH_UP_WAIT_MS), add).await {
            Ok(result) => result.map(|_| ()).map_err(RaftError::from)?,
            Err(_) => return Err(self.forget_learner(node_id, addr).await),
        }
        // openraft's blocking add counts a learner as caught up once it lags by fewer than
        // `replication_lag_threshold` entries, which a learner that never answered does on a
        // young log: promoting it would make the cluster wait on a dead voter for good.
        let target = self
            .inner
            .raft
            .metrics()
            .borrow()
            .last_log_index
            .unwrap_or(0);
        loop {
            let matched = self
                .inner
                .raft
                .metrics()
                .borrow()
                .replication
                .as_ref()
                .and_then(|r| r.get(&node_id).cloned().flatten())
                .map(|log_id| log_id.index);
            if matched.is_some_and(|index| index >= target) {
                return Ok(());
            }
            if started.elapsed() > Duration::from_millis(CATCH_UP_WAIT_MS) {
                return Err(self.forget_learner(node_id, addr).await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Removes a learner that did not catch up (a learner holds no vote, so its removal
    /// needs no answer from it) and says why it was not added.
    async fn forget_learner(&self, node_id: u64, addr: &str) -> RaftError {
        let removal = ChangeMembers::RemoveNodes(BTreeSet::from([node_id]));
        let removed = self.inner.raft.change_membership(removal, false).await;
        RaftError::Timeout(format!(
            "master {node_id} at {addr} did not catch up within {CATCH_UP_WAIT_MS} ms (is it running and reachable?): it was {}",
            match removed {
                Ok(_) => "not added".to_string(),
                Err(e) => format!("left as a learner, which holds no vote ({e})"),
            }
        ))
    }

    /// Makes a learner a voter. Leader only.
    pub async fn promote(&self, node_id: u64) -> Result<(), RaftError> {
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
        self.inner
            .raft
            .change_membership(change, false)
            .await
            .map(|_| ())
            .map_err(RaftError::from)
    }

    /// Removes a master from the membership: a voter is demoted first (through joint
    /// consensus), then forgotten. Refuses to remove the last voter. Leader only.
    pub async fn remove_member(&self, node_id: u64) -> Result<(), RaftError> {
        let status = self.status();
        let Some(member) = status.members.iter().find(|m| m.node_id == node_id) else {
            return Err(RaftError::Membership(format!(
                "master {node_id} is not a member"
            )));
        };
        if member.role != "learner" {
            let voters = status
                .members
                .iter()
                .filter(|m| m.role != "learner")
                .count();
            if voters <= 1 {
                return Err(RaftError::Membership(format!(
                    "master {node_id} is the last voter; a cluster cannot remove its last master"
                )));
            }
            self.inner
                .raft
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([node_id])), true)
                .await
                .map_err(RaftError::from)?;
        }
        self.inner
            .raft
            .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
            .await
            .map(|_| ())
            .map_err(RaftError::from)
    }

    /// Asks this master to stand for election now (a higher term), so that it takes the
    /// leadership over if its log is as recent as a majority's: the way an upgrade moves the
    /// leadership off a master before restarting it (openraft 0.9 has no leadership
    /// transfer). Voters refuse it while the leader's lease holds, so it wins once the old
    /// leader steps down: one election, with no leader for about a lease. Waits up to
    /// `within` for the outcome; true if this master leads.
    pub async fn campaign(&self, within: std::time::Duration) -> Result<bool, RaftError> {
        if self.is_leader() {
            return Ok(true);
        }
        self.inner
            .raft
            .trigger()
            .elect()
            .await
            .map_err(|e| RaftError::Fatal(format!("starting an election: {e}")))?;
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.is_leader() {
                return Ok(true);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Ok(self.is_leader())
    }

    /// This node leads and holds the lease: a majority acknowledged it within twice the
    /// longest election timeout (a sole voter needs no one). A leader cut off from the majority stops
    /// leading after the lease, so it neither hands out work nor keeps agents attached while
    /// the majority elects another; openraft itself only steps down when it hears a newer term.
    pub fn is_leader(&self) -> bool {
        self.leadership() == Some(true)
    }

    /// `None` if openraft does not call this node the leader, else whether it holds the lease.
    fn leadership(&self) -> Option<bool> {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        if m.state != ServerState::Leader || m.current_leader != Some(self.inner.node_id) {
            return None;
        }
        let sole_voter = m.membership_config.membership().voter_ids().count() == 1;
        // No acknowledgement yet: just elected, by a majority's votes.
        Some(
            sole_voter
                || m.millis_since_quorum_ack
                    .is_none_or(|age| age <= self.inner.lease_ms),
        )
    }

    /// Stops Raft and waits (bounded) until the database file is closed, so the same data dir
    /// can be opened again at once. Later writes fail with `RaftError::Fatal`.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
        // A write waiting for disk space gives up, or the core would never stop.
        crate::space::stop_waiting(&self.inner.data_dir);
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Fatal(format!("the raft core task failed: {e}")))?;
        // openraft does not join its state machine worker or snapshot tasks; they drop their
        // handles on the database shortly after the core stops.
        let started = Instant::now();
        while self.inner.db.strong_count() > 0 {
            if started.elapsed() >= Duration::from_millis(RELEASE_WAIT_MS) {
                return Err(RaftError::Storage(format!(
                    "raft database still in use {RELEASE_WAIT_MS} ms after shutdown"
                )));
            }
            tokio::time::sleep(Duration::from_millis(RELEASE_POLL_MS)).await;
        }
        Ok(())
    }
}

/// Commands proposed by `ReplicatedState::propose_all`, not yet known to be applied.
pub struct Proposed {
    answers: Vec<Result<tokio::sync::oneshot::Receiver<Result<Outcome, RaftError>>, RaftError>>,
    deadline: tokio::time::Instant,
}

impl Proposed {
    /// One outcome per command, in order, once each is applied (or has failed, or
    /// `WRITE_TIMEOUT_MS` has passed since it was proposed).
    pub async fn outcomes(self) -> Vec<Result<Outcome, RaftError>> {
        let mut outcomes = Vec::with_capacity(self.answers.len());
        for answer in self.answers {
            outcomes.push(match answer {
                Err(e) => Err(e),
                Ok(answer) => match tokio::time::timeout_at(self.deadline, answer).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => Err(RaftError::Fatal("raft is shut down".to_string())),
                    Err(_) => Err(RaftError::Timeout(format!(
                        "the write was not committed within {WRITE_TIMEOUT_MS} ms (is a majority of masters reachable?); it may still be applied later"
                    ))),
                },
            });
        }
        outcomes
    }
}
