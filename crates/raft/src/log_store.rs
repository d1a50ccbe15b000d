//! The Raft log store: entries in the write-ahead log (`wal.rs`), the vote and the purge
//! point in redb, the committed log id in a small file of its own.
//!
//! Every write that Raft's safety rests on is durable before it returns: appends are synced
//! WAL records, and `append` calls openraft's `LogFlushed` callback only after that; the vote
//! and the purge point are redb commits with immediate durability (fsync); truncation and
//! purge are durable as `wal.rs` describes. Writes are serialized because openraft awaits each
//! call. The one write that is not synced is the committed log id (see `save_committed`).
//!
//! Stores written before the WAL kept entries in redb's `raft_log` table; opening moves them
//! into the WAL once.
//!
//! Not here: the state machine and snapshots (`state_machine.rs`), which share the redb file.

use crate::db::{self, StoreError, LOG_TABLE, META_LAST_PURGED, META_TABLE, META_VOTE};
use crate::wal::{Wal, WalError};
use crate::TypeConfig;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::ops::{Bound, RangeBounds};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Directory of the WAL segments and the committed file, inside the data dir.
pub(crate) const LOG_DIR_NAME: &str = "raft-log";
const COMMITTED_FILE_NAME: &str = "committed";
/// More than an encoded committed log id ever takes.
const COMMITTED_MAX_BYTES: usize = 4096;

/// Handle to the log; cloning it is how openraft gets its log readers.
#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
    wal: Arc<Mutex<Wal>>,
    committed: Arc<File>,
}

impl LogStore {
    /// Opens the log under `data_dir`, next to the redb file `db`. Blocking.
    pub(crate) fn open(db: Arc<Database>, data_dir: &Path) -> Result<Self, StoreError> {
        let purged: Option<LogId<u64>> = db::read_json(&db, META_TABLE, META_LAST_PURGED)?;
        let dir = data_dir.join(LOG_DIR_NAME);
        let mut wal = Wal::open(&dir, purged.map(|id| id.index))?;
        move_redb_entries(&db, &mut wal)?;
        let path = dir.join(COMMITTED_FILE_NAME);
        let committed = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| WalError::Io { path, source })?;
        Ok(Self {
            db,
            wal: Arc::new(Mutex::new(wal)),
            committed: Arc::new(committed),
        })
    }

    fn wal(&self) -> Result<std::sync::MutexGuard<'_, Wal>, StoreError> {
        self.wal.lock().map_err(|_| StoreError::Poisoned)
    }

    fn last_log_id_in_wal(&self) -> Result<Option<LogId<u64>>, StoreError> {
        let wal = self.wal()?;
        let Some((_, last)) = wal.bounds() else {
            return Ok(None);
        };
        Ok(Some(decode(last, wal.read(last)?)?.log_id))
    }

    fn read_entries(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<Vec<Entry<TypeConfig>>, StoreError> {
        let wal = self.wal()?;
        let Some((first, last)) = wal.bounds() else {
            return Ok(Vec::new());
        };
        let from = match start {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => first,
        }
        .max(first);
        let to = match end {
            Bound::Included(i) => i.min(last),
            Bound::Excluded(0) => return Ok(Vec::new()),
            Bound::Excluded(i) => (i - 1).min(last),
            Bound::Unbounded => last,
        };
        (from..=to)
            .map(|index| decode(index, wal.read(index)?))
            .collect()
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

    /// Runs `f` on the WAL on a blocking thread.
    async fn with_wal<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Wal) -> Result<T, WalError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let wal = Arc::clone(&self.wal);
        tokio::task::spawn_blocking(move || {
            let mut wal = wal.lock().map_err(|_| StoreError::Poisoned)?;
            Ok(f(&mut wal)?)
        })
        .await?
    }
}

/// `decode`, for `make fuzz`.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_for_fuzzing(
    index: u64,
    record: Option<Vec<u8>>,
) -> Result<Entry<TypeConfig>, StoreError> {
    decode(index, record)
}

/// One log entry from its WAL record.
fn decode(index: u64, record: Option<Vec<u8>>) -> Result<Entry<TypeConfig>, StoreError> {
    let record = record.ok_or_else(|| {
        StoreError::Inconsistent(format!("log entry {index} is missing from the WAL"))
    })?;
    let entry: Entry<TypeConfig> =
        serde_json::from_slice(&record).map_err(StoreError::decode("log entry"))?;
    if entry.log_id.index != index {
        return Err(StoreError::Inconsistent(format!(
            "log entry stored at index {index} carries index {}",
            entry.log_id.index
        )));
    }
    Ok(entry)
}

/// Moves entries a store written before the WAL kept in redb into the WAL, then empties the
/// table (durably). While the table holds rows it is the only complete copy: the WAL is
/// rebuilt from it each time (a crash or error halfway through the move leaves a WAL with a
/// prefix only), and the table is emptied only once the WAL holds every row, synced.
fn move_redb_entries(db: &Database, wal: &mut Wal) -> Result<(), StoreError> {
    let rows = {
        let txn = db.begin_read().map_err(redb::Error::from)?;
        let table = txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
        if table.len().map_err(redb::Error::from)? == 0 {
            return Ok(());
        }
        let mut rows = Vec::new();
        for row in table.iter().map_err(redb::Error::from)? {
            let (index, bytes) = row.map_err(redb::Error::from)?;
            rows.push((index.value(), bytes.value().to_vec()));
        }
        rows
    };
    tracing::info!(
        entries = rows.len(),
        "moving raft log entries from redb into the WAL"
    );
    wal.reset()?;
    wal.append(&rows)?;
    let txn = db.begin_write().map_err(redb::Error::from)?;
    txn.open_table(LOG_TABLE)
        .map_err(redb::Error::from)?
        .retain(|_, _| false)
        .map_err(redb::Error::from)?;
    txn.commit().map_err(redb::Error::from)?;
    Ok(())
}

/// The committed log id's file: payload length u32 LE, CRC-32 u32 LE, serde_json of the id.
fn encode_committed(committed: &Option<LogId<u64>>) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(committed).map_err(StoreError::encode("committed log id"))?;
    let mut bytes = Vec::with_capacity(8 + json.len());
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&json).to_le_bytes());
    bytes.extend_from_slice(&json);
    Ok(bytes)
}

/// `None` for an empty, torn or unreadable file: the restarted node then simply waits for the
/// leader to tell it what is committed.
fn decode_committed(bytes: &[u8]) -> Option<LogId<u64>> {
    let len = u32::from_le_bytes(bytes.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    let json = bytes.get(8..8 + len)?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice::<Option<LogId<u64>>>(json)
        .ok()
        .flatten()
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
        let last_in_wal = self
            .last_log_id_in_wal()
            .map_err(|e| StorageIOError::read_logs(&e))?;
        Ok(LogState {
            last_purged_log_id,
            // With every entry purged, the last log id is the last purged one.
            last_log_id: last_in_wal.or(last_purged_log_id),
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

    /// Saved so that a restart replays committed entries into the state machine before
    /// serving. Written in place and never synced: a few microseconds into the page cache,
    /// on the path of every write. Losing the newest value in a crash only means the restarted
    /// node applies less until the leader tells it again (the entries are durable in the log).
    async fn save_committed(
        &mut self,
        committed: Option<LogId<u64>>,
    ) -> Result<(), StorageError<u64>> {
        let bytes = encode_committed(&committed).map_err(|e| StorageIOError::write(&e))?;
        match self.committed.write_all_at(&bytes, 0) {
            // A hint like the rest of this file: without space it is simply not updated.
            Err(e) if crate::space::is_out_of_space(&e) => {
                tracing::debug!("disk full: the committed log id is not saved this time");
                Ok(())
            }
            result => result.map_err(|e| StorageIOError::write(&e).into()),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        let mut bytes = vec![0u8; COMMITTED_MAX_BYTES];
        let read = self
            .committed
            .read_at(&mut bytes, 0)
            .map_err(|e| StorageIOError::read(&e))?;
        Ok(decode_committed(&bytes[..read]))
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
            let records = entries
                .into_iter()
                .map(|entry| {
                    let bytes =
                        serde_json::to_vec(&entry).map_err(StoreError::encode("log entry"))?;
                    Ok((entry.log_id.index, bytes))
                })
                .collect::<Result<Vec<(u64, Vec<u8>)>, StoreError>>()?;
            let wal = Arc::clone(&self.wal);
            tokio::task::spawn_blocking(move || {
                let unsynced = wal
                    .lock()
                    .map_err(|_| StoreError::Poisoned)?
                    .write(&records)?;
                // The lock is released: readers of earlier entries do not wait for the disk.
                Ok::<_, StoreError>(unsynced.sync()?)
            })
            .await?
        };
        write.await.map_err(|e| StorageIOError::write_logs(&e))?;
        // Only now, after the records are synced, may openraft count these entries as persisted.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(since = %log_id, "truncating raft log");
        self.with_wal(move |wal| wal.truncate(log_id.index))
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        tracing::debug!(upto = %log_id, "purging raft log");
        let write = async {
            let purged =
                serde_json::to_vec(&log_id).map_err(StoreError::encode("purged log id"))?;
            // The purge point is durable before any segment goes, so the log never shows a
            // hole above it after a crash.
            self.put_meta(META_LAST_PURGED, purged, Durability::Immediate)
                .await?;
            self.with_wal(move |wal| wal.purge(log_id.index)).await
        };
        write
            .await
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// Entries on disk under `data_dir` (what a purge leaves), for tests.
#[cfg(test)]
pub(crate) fn entries_on_disk(data_dir: &Path) -> u64 {
    let db = db::open(data_dir).expect("open db");
    let store = LogStore::open(db, data_dir).expect("open log");
    let wal = store.wal().expect("wal");
    wal.bounds().map_or(0, |(first, last)| last - first + 1)
}

/// Turns the store under `data_dir` back into the layout from before the WAL (entries in
/// redb's log table), for the test of moving them; the WAL keeps the first `keep_in_wal`
/// entries, as a move interrupted halfway would leave it.
#[cfg(test)]
pub(crate) fn rewrite_as_redb_log(data_dir: &Path, keep_in_wal: usize) {
    let db = db::open(data_dir).expect("open db");
    let rows: Vec<(u64, Vec<u8>)> = {
        let store = LogStore::open(Arc::clone(&db), data_dir).expect("open log");
        let wal = store.wal().expect("wal");
        let (first, last) = wal.bounds().expect("entries");
        (first..=last)
            .map(|i| (i, wal.read(i).expect("read").expect("held")))
            .collect()
    };
    let txn = db.begin_write().expect("write txn");
    {
        let mut table = txn.open_table(LOG_TABLE).expect("log table");
        for (index, bytes) in &rows {
            table.insert(*index, bytes.as_slice()).expect("insert");
        }
    }
    txn.commit().expect("commit");
    std::fs::remove_dir_all(data_dir.join(LOG_DIR_NAME)).expect("remove the WAL");
    if keep_in_wal > 0 {
        let mut wal = Wal::open(&data_dir.join(LOG_DIR_NAME), None).expect("new WAL");
        wal.append(&rows[..keep_in_wal]).expect("prefix");
    }
}

/// Rows left in redb's old log table, for tests.
#[cfg(test)]
pub(crate) fn redb_log_rows(data_dir: &Path) -> u64 {
    let db = db::open(data_dir).expect("open db");
    let txn = db.begin_read().expect("read txn");
    let table = txn.open_table(LOG_TABLE).expect("log table");
    table.len().expect("len")
}
