//! `ReplicatedState`: the master's handle on the replicated `ClusterState`. It opens the redb
//! store, runs openraft, proposes commands and lets readers look at the applied state.
//!
//! Single-master only for now: `open_single` makes this node the one voter. Adding masters,
//! redirects to a leader over HTTP and the peer transport are later work; callers already get
//! `RaftError::NotLeader` where a redirect will be needed.

use crate::db;
use crate::error::RaftError;
use crate::log_store::LogStore;
use crate::network::Network;
use crate::state_machine::{AppliedState, StateMachineStore};
use crate::TypeConfig;
use dcos_core::{ClusterState, Command, Outcome};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
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
}

impl RaftOptions {
    /// Options for the only master of a cluster: node id 1 and the default snapshot policy.
    pub fn single(data_dir: impl Into<PathBuf>, advertise_addr: impl Into<String>) -> Self {
        Self {
            node_id: 1,
            data_dir: data_dir.into(),
            advertise_addr: advertise_addr.into(),
            snapshot_logs_since_last: DEFAULT_SNAPSHOT_LOGS_SINCE_LAST,
            max_in_snapshot_log_to_keep: DEFAULT_MAX_IN_SNAPSHOT_LOG_TO_KEEP,
        }
    }

    fn raft_config(&self) -> Result<Config, RaftError> {
        if self.snapshot_logs_since_last == 0 {
            return Err(RaftError::Config(
                "snapshot_logs_since_last must be at least 1".to_string(),
            ));
        }
        Config {
            cluster_name: "dcos-rs".to_string(),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
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
    /// "leader", "follower", "candidate", "learner" or "shutdown".
    pub role: String,
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
    /// Lets `shutdown` wait until every openraft task has let go of the file, so the data dir
    /// can be reopened right away. Weak: this handle alone must not keep the file open.
    db: Weak<Database>,
}

impl ReplicatedState {
    /// Opens (or creates) the store, starts openraft, initializes a 1-voter membership on first
    /// start, and waits (bounded, 10 s) until this node is leader and has applied its log.
    pub async fn open_single(opts: RaftOptions) -> Result<Self, RaftError> {
        let config = Arc::new(opts.raft_config()?);
        let started = Instant::now();

        let data_dir = opts.data_dir.clone();
        let (db, state_machine) = tokio::task::spawn_blocking(move || {
            let db = db::open(&data_dir)?;
            let state_machine = StateMachineStore::open(Arc::clone(&db))?;
            Ok::<_, db::StoreError>((db, state_machine))
        })
        .await
        .map_err(|e| RaftError::Storage(format!("opening the raft store: {e}")))?
        .map_err(|e| RaftError::Storage(e.to_string()))?;

        let applied = state_machine.shared_state();
        let applied_index = state_machine.applied_index_sender();
        let log_store = LogStore::new(Arc::clone(&db));
        let db_weak = Arc::downgrade(&db);
        drop(db);

        let raft = Raft::new(opts.node_id, config, Network, log_store, state_machine)
            .await
            .map_err(RaftError::from)?;
        let state = Self {
            inner: Arc::new(Inner {
                node_id: opts.node_id,
                raft,
                applied,
                applied_index,
                db: db_weak,
            }),
        };

        match state.start_single(&opts).await {
            Ok(()) => {
                tracing::info!(
                    node_id = opts.node_id,
                    data_dir = %opts.data_dir.display(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    status = ?state.status(),
                    "raft ready: this master leads"
                );
                Ok(state)
            }
            Err(e) => {
                // Release the file so the caller can retry or report without a lingering node.
                if let Err(shutdown_error) = state.shutdown().await {
                    tracing::warn!(error = %shutdown_error, "raft shutdown after a failed open also failed");
                }
                Err(e)
            }
        }
    }

    async fn start_single(&self, opts: &RaftOptions) -> Result<(), RaftError> {
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
    pub async fn write(&self, command: Command) -> Result<Outcome, RaftError> {
        let response = self.inner.raft.client_write(command).await?;
        Ok(response.data)
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
        RaftStatus {
            node_id: self.inner.node_id,
            term: m.current_term,
            // openraft's metrics trail the state machine a little; never report a log shorter
            // than what is applied.
            last_log_index: m.last_log_index.unwrap_or(0).max(applied_index),
            commit_index: applied_index,
            leader_id: m.current_leader,
            role: role.to_string(),
        }
    }

    pub fn is_leader(&self) -> bool {
        let metrics = self.inner.raft.metrics();
        let m = metrics.borrow();
        m.state == ServerState::Leader && m.current_leader == Some(self.inner.node_id)
    }

    /// Stops Raft and waits (bounded) until the database file is closed, so the same data dir
    /// can be opened again at once. Later writes fail with `RaftError::Fatal`.
    pub async fn shutdown(&self) -> Result<(), RaftError> {
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
