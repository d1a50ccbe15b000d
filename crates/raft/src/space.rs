//! A full disk under a master's data dir: writes are refused while it lasts and the stores
//! are never broken by it, so the master goes on by itself once space returns.
//!
//! Two layers:
//! - Before proposing, the leader checks the free space of its data dir's filesystem
//!   (`check_free`): under `RaftOptions::min_free_bytes` a write is refused at once with
//!   `RaftError::DiskFull`, which names the directory and the figures. Nothing is proposed, so
//!   nothing is half-written.
//! - Below that, a write that still finds no space (another process filled the disk between
//!   the check and the write, a follower's disk, a snapshot) waits and retries
//!   (`retry_while_full`) instead of failing: a failed write would stop openraft for good
//!   (every storage error is fatal to it), and redb latches any failed write until the
//!   database is reopened. Only writes are retried, never `fsync`: after a failed `fsync`
//!   the kernel may have dropped the dirty pages, and a retry that succeeds would lie.
//!
//! The WAL preallocates its segments (`wal.rs`), so appends need new space only once per
//! segment; redb grows its file now and then, and a snapshot rewrites its pages.

use std::io;
use std::path::Path;
use std::time::Duration;

/// Default of `RaftOptions::min_free_bytes`: room for the next WAL segment (16 MiB) and a
/// snapshot rewrite in redb, with a margin.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 64 << 20;
/// How often a write waiting for space tries again.
const RETRY_MS: u64 = 1_000;

/// Whether `error` means the filesystem (or the user's quota) has no room left.
pub(crate) fn is_out_of_space(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT)
    )
}

/// Bytes an unprivileged writer may still allocate on the filesystem holding `path`.
pub(crate) fn available_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs fills the zeroed struct we own from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
}

/// Why a write is refused for lack of space: `Some(message)` when `dir`'s filesystem has less
/// than `min_free` bytes available. A failed `statvfs` refuses nothing (the writes themselves
/// will tell).
pub(crate) fn check_free(dir: &Path, min_free: u64) -> Option<String> {
    if min_free == 0 {
        return None;
    }
    let available = available_bytes(dir).ok()?;
    (available < min_free).then(|| {
        format!(
            "the disk holding {} is full: {} MiB free, the master needs {} MiB to accept writes; free space there and writes resume by themselves",
            dir.display(),
            available >> 20,
            min_free.div_ceil(1 << 20),
        )
    })
}

/// Data dirs whose master is shutting down: a write waiting for space there gives up (with
/// its ENOSPC), so a stop never hangs on a full disk.
static STOPPING: std::sync::Mutex<Vec<std::path::PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Writes under `dir` that wait for space give up from now on (`ReplicatedState::shutdown`).
pub(crate) fn stop_waiting(dir: &Path) {
    let mut stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
    if !stopping.iter().any(|d| d == dir) {
        stopping.push(dir.to_path_buf());
    }
}

/// Writes under `dir` wait for space again (a master opening it).
pub(crate) fn resume_waiting(dir: &Path) {
    let mut stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
    stopping.retain(|d| d != dir);
}

fn stopping(path: &Path) -> bool {
    let stopping = STOPPING.lock().unwrap_or_else(|e| e.into_inner());
    stopping.iter().any(|d| path.starts_with(d))
}

/// Runs `write` until it does not fail for lack of space, waiting `RETRY_MS` between tries and
/// logging once when it starts waiting and once when it goes on. Other errors return at once,
/// and so does the lack of space once the master holding the file stops (`stop_waiting`).
/// Blocking: call it from a blocking thread. `what` names the file, for the log.
pub(crate) fn retry_while_full<T>(
    what: &Path,
    mut write: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let mut waited = false;
    loop {
        match write() {
            Err(e) if is_out_of_space(&e) && !stopping(what) => {
                if !waited {
                    tracing::error!(
                        file = %what.display(),
                        error = %e,
                        "disk full: this write waits until space is freed (new writes are refused meanwhile)"
                    );
                    waited = true;
                }
                std::thread::sleep(Duration::from_millis(RETRY_MS));
            }
            result => {
                if waited && result.is_ok() {
                    tracing::warn!(file = %what.display(), "space returned: the waiting write went through");
                }
                return result;
            }
        }
    }
}

/// redb's file backend with writes and growth that wait for space instead of failing (redb
/// would otherwise refuse every later call with `PreviousIo` until reopened).
#[derive(Debug)]
pub(crate) struct SpaceWaitingBackend {
    inner: redb::backends::FileBackend,
    path: std::path::PathBuf,
}

impl SpaceWaitingBackend {
    pub(crate) fn new(file: std::fs::File, path: &Path) -> Result<Self, redb::DatabaseError> {
        Ok(Self {
            inner: redb::backends::FileBackend::new(file)?,
            path: path.to_path_buf(),
        })
    }
}

type Range = std::ops::Bound<u64>;

impl redb::StorageBackend for SpaceWaitingBackend {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        retry_while_full(&self.path, || self.inner.set_len(len))
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        retry_while_full(&self.path, || self.inner.write(offset, data))
    }

    fn close(&self) -> io::Result<()> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Range, end: Range) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Range, end: Range) -> Result<bool, redb::BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Range, end: Range) -> Result<(), redb::BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Range, end: Range) -> Result<(), redb::BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Range, end: Range) -> Result<(), redb::BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Range, end: Range) -> Result<bool, redb::BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_write_without_space_is_retried_until_it_goes_through() {
        let tries = AtomicU32::new(0);
        let result = retry_while_full(Path::new("/x"), || {
            match tries.fetch_add(1, Ordering::SeqCst) {
                0 => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
                _ => Ok(7),
            }
        });
        assert_eq!(result.expect("went through"), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_stopping_master_stops_waiting_for_space() {
        stop_waiting(Path::new("/stopping-master"));
        let result: io::Result<()> =
            retry_while_full(Path::new("/stopping-master/raft.redb"), || {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            });
        assert!(is_out_of_space(&result.unwrap_err()));
        resume_waiting(Path::new("/stopping-master"));
    }

    #[test]
    fn other_errors_are_not_retried() {
        let tries = AtomicU32::new(0);
        let result: io::Result<()> = retry_while_full(Path::new("/x"), || {
            tries.fetch_add(1, Ordering::SeqCst);
            Err(io::Error::from_raw_os_error(libc::EIO))
        });
        assert_eq!(result.expect_err("failed").raw_os_error(), Some(libc::EIO));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn free_space_is_checked_against_the_minimum() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check_free(dir.path(), 0), None);
        assert_eq!(check_free(dir.path(), 1), None);
        let refusal = check_free(dir.path(), u64::MAX).expect("refused");
        assert!(refusal.contains("is full"), "{refusal}");
        assert!(
            refusal.contains(&dir.path().display().to_string()),
            "{refusal}"
        );
    }
}
