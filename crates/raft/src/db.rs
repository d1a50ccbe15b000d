//! The one redb file a master keeps under its data dir: table layout, opening, and the single
//! way writes reach the disk (one write transaction, committed off the async worker threads).
//!
//! No Raft logic here: the log store and the state machine decide what to write and when to
//! acknowledge; this module only guarantees that `commit` returns after redb's commit did
//! (with `Durability::Immediate`, after fsync).

use redb::{Database, Durability, ReadableDatabase, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// File name of the database inside the data dir.
pub(crate) const DB_FILE_NAME: &str = "raft.redb";

/// Where stores from before the WAL kept the log entries (index -> serde_json of
/// `openraft::Entry`); opening moves them into the WAL (`log_store::move_redb_entries`).
pub(crate) const LOG_TABLE: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

/// Small records of the log store: `vote`, `last_purged` (serde_json each).
pub(crate) const META_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

/// The current snapshot: `meta` (serde_json `SnapshotMeta`) and `data` (the snapshot bytes).
pub(crate) const SNAPSHOT_TABLE: TableDefinition<&str, &[u8]> =
    TableDefinition::new("raft_snapshot");

pub(crate) const META_VOTE: &str = "vote";
pub(crate) const META_LAST_PURGED: &str = "last_purged";
pub(crate) const SNAPSHOT_META: &str = "meta";
pub(crate) const SNAPSHOT_DATA: &str = "data";

/// redb's page cache. The file holds a bounded log plus one snapshot, so redb's 1 GiB default
/// would only ever be a ceiling; this keeps the ceiling modest on small masters.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// How long `open` keeps retrying while the file is locked. openraft stops its tasks
/// asynchronously, so a node dropped or shut down a moment ago in this process may still hold
/// the file; another process holding it fails after this wait with a clear error.
const OPEN_LOCKED_RETRY_MS: u64 = 5_000;
const OPEN_LOCKED_POLL_MS: u64 = 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data dir {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot sync data dir {}: {source}", path.display())]
    SyncDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open raft database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("raft database {} is still locked after {waited_ms} ms (is another master running on this data dir?)", path.display())]
    Locked { path: PathBuf, waited_ms: u64 },
    #[error("raft database: {0}")]
    Db(#[from] redb::Error),
    #[error(transparent)]
    Wal(#[from] crate::wal::WalError),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot decode {what}: {source}")]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("the storage thread failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("inconsistent raft storage: {0}")]
    Inconsistent(String),
    #[error("the in-memory state lock is poisoned: an earlier apply panicked")]
    Poisoned,
}

impl StoreError {
    pub(crate) fn encode(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |source| StoreError::Encode { what, source }
    }

    pub(crate) fn decode(what: &'static str) -> impl FnOnce(serde_json::Error) -> StoreError {
        move |source| StoreError::Decode { what, source }
    }
}

/// Opens (or creates) `<data_dir>/raft.redb` with all tables present, so readers never see a
/// missing table. Blocking: call it from `spawn_blocking` or before serving.
pub(crate) fn open(data_dir: &Path) -> Result<Arc<Database>, StoreError> {
    let ours = !data_dir.exists() || data_dir.join(DB_FILE_NAME).exists();
    std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
        path: data_dir.to_path_buf(),
        source,
    })?;
    // The cluster's state (environment variables of apps included) is for root alone; an
    // older installation's wider mode is tightened (only a directory made here or holding
    // the database: never one the operator shares with others).
    if ours {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| StoreError::CreateDir {
                path: data_dir.to_path_buf(),
                source,
            },
        )?;
    }
    let path = data_dir.join(DB_FILE_NAME);
    let started = Instant::now();
    let db = loop {
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(redb::DatabaseError::from)
            .and_then(|file| crate::space::SpaceWaitingBackend::new(file, &path))
            .and_then(|backend| {
                Database::builder()
                    .set_cache_size(CACHE_BYTES)
                    .create_with_backend(backend)
            });
        match opened {
            Ok(db) => break db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen)
                if started.elapsed() < Duration::from_millis(OPEN_LOCKED_RETRY_MS) =>
            {
                std::thread::sleep(Duration::from_millis(OPEN_LOCKED_POLL_MS));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path,
                    waited_ms: OPEN_LOCKED_RETRY_MS,
                })
            }
            Err(source) => return Err(StoreError::Open { path, source }),
        }
    };
    // A freshly created file is only durable once its directory entry is: without this, a
    // power cut soon after the first start could lose the whole file and every write in it.
    // The same for the directory itself, when it was just made (the vote lives in the file).
    for dir in std::iter::once(data_dir).chain(data_dir.parent()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        std::fs::File::open(dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| StoreError::SyncDir {
                path: dir.to_path_buf(),
                source,
            })?;
    }

    let txn = db.begin_write().map_err(redb::Error::from)?;
    txn.open_table(LOG_TABLE).map_err(redb::Error::from)?;
    txn.open_table(META_TABLE).map_err(redb::Error::from)?;
    txn.open_table(SNAPSHOT_TABLE).map_err(redb::Error::from)?;
    txn.commit().map_err(redb::Error::from)?;
    Ok(Arc::new(db))
}

/// Runs `write` in one write transaction on a blocking thread and commits it with
/// `durability`. With `Durability::Immediate` (redb's default) this returns after fsync.
/// Callers await it before acknowledging anything, so writes stay in call order.
pub(crate) async fn commit<T, F>(
    db: &Arc<Database>,
    durability: Durability,
    write: F,
) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&WriteTransaction) -> Result<T, StoreError> + Send + 'static,
{
    let db = Arc::clone(db);
    tokio::task::spawn_blocking(move || {
        let mut txn = db.begin_write().map_err(redb::Error::from)?;
        if !matches!(durability, Durability::Immediate) {
            txn.set_durability(durability).map_err(redb::Error::from)?;
        }
        let value = write(&txn)?;
        txn.commit().map_err(redb::Error::from)?;
        Ok(value)
    })
    .await?
}

/// Reads and decodes one serde_json value of a `&str`-keyed table.
pub(crate) fn read_json<T: DeserializeOwned>(
    db: &Database,
    table: TableDefinition<&str, &[u8]>,
    key: &'static str,
) -> Result<Option<T>, StoreError> {
    let txn = db.begin_read().map_err(redb::Error::from)?;
    let table = txn.open_table(table).map_err(redb::Error::from)?;
    let Some(bytes) = table.get(key).map_err(redb::Error::from)? else {
        return Ok(None);
    };
    let value = serde_json::from_slice(bytes.value()).map_err(StoreError::decode(key))?;
    Ok(Some(value))
}
