//! The Raft log store on redb: vote, committed log id, entries keyed by index, last purged id.
//!
//! Every write that Raft's safety rests on (append, vote, truncate, purge) is one redb
//! transaction committed with immediate durability (fsync) before it returns, and `append`
//! calls openraft's `LogFlushed` callback only after that commit: nothing is acknowledged
//! before it is on disk. Writes are serialized because openraft awaits each call. The one
//! write that is not fsync'd on its own is the committed log id (see `save_committed`).
//!
//! Not here: the state machine and snapshots (`state_machine.rs`), which share the same file.

use crate::db::{
    self, StoreError, LOG_TABLE, META_COMMITTED, META_LAST_PURGED, META_TABLE, META_VOTE,
};
use crate::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

/// Handle to the log tables; cloning it is how openraft gets its log readers.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn last_log_id_in_table(&self) -> Result<Option<LogId<u64>>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
        let Some((_, bytes)) = table.last().map_err(redb::Error::from)? else {
            return Ok(None);
        };
        let entry: Entry<TypeConfig> =
            serde_json::from_slice(bytes.value()).map_err(StoreError::decode("log entry"))?;
        Ok(Some(entry.log_id))
    }

    fn read_entries(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let txn = self.db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
        let mut entries = Vec::new();
        for row in table
            .range::<u64>((start, end))
            .map_err(redb::Error::from)?
        {
            let (index, bytes) = row.map_err(redb::Error::from)?;
            let entry: Entry<TypeConfig> =
                serde_json::from_slice(bytes.value()).map_err(StoreError::decode("log entry"))?;
            if entry.log_id.index != index.value() {
                return Err(StoreError::Inconsistent(format!(
                    "log entry stored at index {} carries index {}",
                    index.value(),
                    entry.log_id.index
                )));
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    async fn put_meta(
        &self,
        key: &'static str,
        bytes: Vec<u8>,
        durability: Durability,
    ) -> Result<(), StoreError> {
        db::commit(&self.db, durability, move |txn| {
            let mut table = txn.open_table(META_TABLE).map_err(redb::Error::from)?;
            table
                .insert(key, bytes.as_slice())
                .map_err(redb::Error::from)?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        self.read_entries(range.start_bound().cloned(), range.end_bound().cloned())
            .map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let last_purged_log_id: Option<LogId<u64>> =
            db::read_json(&self.db, META_TABLE, META_LAST_PURGED)
                .map_err(|e| StorageIOError::read_logs(&e))?;
        let last_in_table = self
            .last_log_id_in_table()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id,
            // With every entry purged, the last log id is the last purged one.
            last_log_id: last_in_table.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        let write = async {
            let bytes = serde_json::to_vec(vote).map_err(StoreError::encode("vote"))?;
            self.put_meta(META_VOTE, bytes, Durability::Immediate).await
        };
        write
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        db::read_json(&self.db, META_TABLE, META_VOTE)
            .map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Saved so that a restart replays committed entries into the state machine before serving.
    /// Not fsync'd on its own: losing the newest value in a crash only means the restarted
    /// leader re-commits those entries itself (they are durable in the log), and the next
    /// durable commit (the next append) persists it anyway. This halves fsyncs per write.
    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let write = async {
            let bytes =
                serde_json::to_vec(&committed).map_err(StoreError::encode("committed log id"))?;
            self.put_meta(META_COMMITTED, bytes, Durability::None).await
        };
        write.await.map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let committed: Option<Option<LogId<u64>>> =
            db::read_json(&self.db, META_TABLE, META_COMMITTED)
                .map_err(|e| StorageIOError::read(&e))?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = async {
            let rows = entries
                .into_iter()
                .map(|entry| {
                    let bytes =
                        serde_json::to_vec(&entry).map_err(StoreError::encode("log entry"))?;
                    Ok((entry.log_id.index, bytes))
                })
                .collect::<Result<Vec<(u64, Vec<u8>)>, StoreError>>()?;
            if rows.is_empty() {
                return Ok(());
            }
            db::commit(&self.db, Durability::Immediate, move |txn| {
                let mut table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
                for (index, bytes) in &rows {
                    table
                        .insert(*index, bytes.as_slice())
                        .map_err(redb::Error::from)?;
                }
                Ok(())
            })
            .await
        };
        write.await.map_err(|e| StorageIOError::write_logs(&e))?;
        // Only now, after the fsync'd commit, may openraft count these entries as persisted.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(since = %log_id, "truncating raft log");
        db::commit(&self.db, Durability::Immediate, move |txn| {
            let mut table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
            table
                .retain_in::<u64, _>(log_id.index.., |_, _| false)
                .map_err(redb::Error::from)?;
            Ok(())
        })
        .await
        .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(upto = %log_id, "purging raft log");
        let write = async {
            let purged =
                serde_json::to_vec(&log_id).map_err(StoreError::encode("purged log id"))?;
            // The purge marker and the deletion commit together, so the log never shows a hole.
            db::commit(&self.db, Durability::Immediate, move |txn| {
                let mut meta = txn.open_table(META_TABLE).map_err(redb::Error::from)?;
                meta.insert(META_LAST_PURGED, purged.as_slice())
                    .map_err(redb::Error::from)?;
                let mut table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
                table
                    .retain_in::<u64, _>(..=log_id.index, |_, _| false)
                    .map_err(redb::Error::from)?;
                Ok(())
            })
            .await
        };
        write
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}
