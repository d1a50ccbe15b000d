//! The replicated state machine: `dcos_core::ClusterState` in memory, plus the last applied log
//! id and membership, with durable snapshots in the redb file.
//!
//! `apply` changes memory only; durability comes from the log (fsync'd before an entry can be
//! committed) and from snapshots (fsync'd before openraft may purge the log they cover). A
//! restart loads the snapshot and openraft replays the committed log after it.
//!
//! Readers share the state through `Arc<RwLock<AppliedState>>` without going through Raft. Not
//! here: the business rules (`ClusterState::apply`, in crates/core) and the log itself.

use crate::db::{self, StoreError, SNAPSHOT_DATA, SNAPSHOT_META, SNAPSHOT_TABLE};
use crate::TypeConfig;
use dcos_core::{ClusterState, Command, Outcome};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use redb::{Database, Durability, ReadableDatabase};
use serde::{Deserialize, Serialize};
use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{broadcast, watch};

pub(crate) type Meta = SnapshotMeta<u64, BasicNode>;

/// Everything applied so far. Its serde_json encoding is the snapshot format.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    pub(crate) state: ClusterState,
    pub(crate) last_applied: Option<LogId<u64>>,
    pub(crate) last_membership: StoredMembership<u64, BasicNode>,
}

/// Cheap to clone: every field is shared. openraft owns one clone as its state machine and gets
/// others as snapshot builders; `ReplicatedState` keeps the lock and the watch sender.
#[derive(Clone)]
pub(crate) struct StateMachineStore {
    applied: Arc<RwLock<AppliedState>>,
    /// Carries the last applied index to subscribers (schedulers waiting for changes).
    applied_index: Arc<watch::Sender<u64>>,
    db: Arc<Database>,
    /// Makes snapshot ids unique within this process; ids only need to differ between
    /// snapshots of different content, and equal last log ids mean equal content.
    snapshot_seq: Arc<AtomicU64>,
    /// Every command applied, with its outcome, for whoever listens (event streams); filled
    /// only while someone does.
    applied_commands: Arc<broadcast::Sender<Arc<AppliedCommand>>>,
}

/// One applied command (a batch's commands each on their own) and what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct AppliedCommand {
    pub index: u64,
    pub command: Command,
    pub outcome: Outcome,
}

/// Applied commands a slow listener may fall behind by before it misses some
/// (`broadcast::error::RecvError::Lagged`).
pub const APPLIED_COMMANDS_BUFFER: usize = 4_096;

impl StateMachineStore {
    /// Loads the current snapshot, if any, as the starting state. Blocking (reads the file).
    pub(crate) fn open(db: Arc<Database>) -> Result<Self, StoreError> {
        let applied = match read_snapshot(&db)? {
            Some((meta, data)) => {
                let applied = decode_snapshot(&meta, &data)?;
                tracing::info!(snapshot = %meta, "loaded raft snapshot");
                applied
            }
            None => AppliedState::default(),
        };
        let index = applied.last_applied.map(|id| id.index).unwrap_or(0);
        Ok(Self {
            applied: Arc::new(RwLock::new(applied)),
            applied_index: Arc::new(watch::channel(index).0),
            db,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            applied_commands: Arc::new(broadcast::channel(APPLIED_COMMANDS_BUFFER).0),
        })
    }

    pub(crate) fn applied_commands_sender(&self) -> Arc<broadcast::Sender<Arc<AppliedCommand>>> {
        Arc::clone(&self.applied_commands)
    }

    pub(crate) fn shared_state(&self) -> Arc<RwLock<AppliedState>> {
        Arc::clone(&self.applied)
    }

    pub(crate) fn applied_index_sender(&self) -> Arc<watch::Sender<u64>> {
        Arc::clone(&self.applied_index)
    }

    fn read_lock(&self) -> Result<RwLockReadGuard<'_, AppliedState>, StoreError> {
        self.applied.read().map_err(|_| StoreError::Poisoned)
    }

    fn write_lock(&self) -> Result<RwLockWriteGuard<'_, AppliedState>, StoreError> {
        self.applied.write().map_err(|_| StoreError::Poisoned)
    }

    fn publish_applied_index(&self, last_applied: Option<LogId<u64>>) {
        if let Some(id) = last_applied {
            self.applied_index.send_replace(id.index);
        }
    }

    /// Makes `meta`/`data` the current snapshot, durably, replacing the previous one.
    async fn save_snapshot(&self, meta: Meta, data: Vec<u8>) -> Result<Vec<u8>, StoreError> {
        let meta_bytes = serde_json::to_vec(&meta).map_err(StoreError::encode("snapshot meta"))?;
        db::commit(&self.db, Durability::Immediate, move |txn| {
            let mut table = txn.open_table(SNAPSHOT_TABLE).map_err(redb::Error::from)?;
            table
                .insert(SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(redb::Error::from)?;
            table
                .insert(SNAPSHOT_DATA, data.as_slice())
                .map_err(redb::Error::from)?;
            Ok(data)
        })
        .await
    }
}

fn read_snapshot(db: &Database) -> Result<Option<(Meta, Vec<u8>)>, StoreError> {
    let Some(meta) = db::read_json::<Meta>(db, SNAPSHOT_TABLE, SNAPSHOT_META)? else {
        return Ok(None);
    };
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let table = txn.open_table(SNAPSHOT_TABLE).map_err(redb::Error::from)?;
    let Some(data) = table.get(SNAPSHOT_DATA).map_err(redb::Error::from)? else {
        return Err(StoreError::Inconsistent(format!(
            "snapshot {} has meta but no data",
            meta.snapshot_id
        )));
    };
    let data = data.value().to_vec();
    Ok(Some((meta, data)))
}

/// Decodes snapshot bytes and checks they describe what `meta` says.
pub(crate) fn decode_snapshot(meta: &Meta, data: &[u8]) -> Result<AppliedState, StoreError> {
    let applied: AppliedState =
        serde_json::from_slice(data).map_err(StoreError::decode("snapshot"))?;
    if applied.last_applied != meta.last_log_id || applied.last_membership != meta.last_membership {
        return Err(StoreError::Inconsistent(format!(
            "snapshot {} holds state up to {:?} with membership {}, its meta says {:?} with {}",
            meta.snapshot_id,
            applied.last_applied,
            applied.last_membership,
            meta.last_log_id,
            meta.last_membership
        )));
    }
    // The invariants every command keeps must hold for a restored state too. A violation is
    // a bug in some earlier version's apply: said loudly, but the master still starts (a
    // panic here would stop every master that loads this snapshot).
    for violation in applied.state.invariant_violations() {
        tracing::error!(snapshot = %meta.snapshot_id, "restored state breaks an invariant: {violation}");
    }
    Ok(applied)
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        // Clone under the read lock, encode outside it: applying waits only for the clone.
        let applied = self
            .read_lock()
            .map_err(|e| StorageIOError::read_state_machine(&e))?
            .clone();
        let data = serde_json::to_vec(&applied)
            .map_err(StoreError::encode("snapshot"))
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        let seq = self.snapshot_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let snapshot_id = match applied.last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id, id.index, seq),
            None => format!("--{seq}"),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.last_membership,
            snapshot_id,
        };
        let data = self
            .save_snapshot(meta.clone(), data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built raft snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError<u64>> {
        let applied = self
            .read_lock()
            .map_err(|e| StorageIOError::read_state_machine(&e))?;
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut outcomes = Vec::with_capacity(entries.size_hint().0);
        let listened = self.applied_commands.receiver_count() > 0;
        let mut heard: Vec<AppliedCommand> = Vec::new();
        let last_applied = {
            // One write lock per batch: readers see whole batches, never half of one.
            let mut applied = self
                .write_lock()
                .map_err(|e| StorageIOError::write_state_machine(&e))?;
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => Vec::new(),
                    EntryPayload::Normal(command) => {
                        let outcome = applied.state.apply_entry(&command);
                        if listened {
                            let commands = match command {
                                Command::Batch(commands) => commands,
                                single => vec![single],
                            };
                            heard.extend(commands.into_iter().zip(outcome.iter().cloned()).map(
                                |(command, outcome)| AppliedCommand {
                                    index: entry.log_id.index,
                                    command,
                                    outcome,
                                },
                            ));
                        }
                        outcome
                    }
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Vec::new()
                    }
                };
                outcomes.push(outcome);
            }
            applied.last_applied
        };
        self.publish_applied_index(last_applied);
        for applied in heard {
            // No listener left is fine: nobody needed it.
            let _ = self.applied_commands.send(Arc::new(applied));
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        let data = snapshot.into_inner();
        let installed = decode_snapshot(meta, &data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        // Persist before swapping memory: if the write fails, the previous state stays in force
        // and openraft stops on the error instead of serving a state it cannot restore.
        self.save_snapshot(meta.clone(), data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let last_applied = installed.last_applied;
        *self
            .write_lock()
            .map_err(|e| StorageIOError::write_state_machine(&e))? = installed;
        self.publish_applied_index(last_applied);
        tracing::info!(snapshot = %meta, "installed raft snapshot");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        let snapshot =
            read_snapshot(&self.db).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(snapshot.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
