//! The Raft log's entries on disk: an append-only write-ahead log of numbered records in
//! preallocated segment files, one `fdatasync` per append.
//!
//! Why not redb, which keeps the vote, the snapshot and the purge marker: a redb commit
//! rewrites several pages spread over its file (leaf, branches, allocator state, header), and
//! syncing those costs about 3× one contiguous append on a virtio disk (0.3-0.35 ms against
//! 0.09-0.1 ms here), on every write of every master.
//!
//! Layout: `<dir>/<first index, 20 digits>.wal`, each preallocated to `SEGMENT_BYTES` (a longer
//! record simply grows its segment). A record is a 16-byte header (payload length u32 LE,
//! CRC-32 of index and payload u32 LE, index u64 LE) and the payload. Unwritten space reads as
//! zeros, and a zero length ends a segment, so opening scans each segment up to its first
//! zero, torn or out-of-order record.
//!
//! Rules that keep a crash from losing synced records or bringing back removed ones:
//! - A full segment is synced before the next one is created, so only the last segment can
//!   end in a torn or unsynced write; a bad record in any other segment is reported as
//!   corruption and the file is left untouched.
//! - Opening clears everything after the last good record of the last segment (a torn
//!   record, or records written but never synced whose header page was lost), so a later
//!   append is never followed by stale records that would parse.
//! - `truncate` unlinks the later segments, highest first, and syncs the directory before
//!   it clears the kept segment's tail and syncs that.
//! - The caller persists the purge point before `purge` unlinks segments, and passes it to
//!   `open`: a gap between segments is tolerated only wholly at or below it.
//! - Clearing uses `fallocate(FALLOC_FL_ZERO_RANGE)` (metadata only on ext4/xfs), else
//!   writes zeros.
//!
//! Blocking I/O: callers run these from a blocking thread. Writes are not concurrent
//! (openraft awaits each log call); reads may run meanwhile behind the caller's lock. An
//! append's sync can run after that lock is released (`write`, then `Unsynced::sync`); the
//! rare slow steps (creating a segment once per `SEGMENT_BYTES`, truncating after a
//! conflict, unlinking a purged segment) keep it, so a reader may wait for them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Space preallocated per segment file.
pub(crate) const SEGMENT_BYTES: u64 = 16 << 20;
/// Largest record payload accepted (an entry holds at most `BATCH_MAX_COMMANDS` commands,
/// each bounded by the API's request limit).
pub(crate) const RECORD_MAX_BYTES: usize = 256 << 20;
const HEADER_BYTES: usize = 16;
const SUFFIX: &str = ".wal";
/// Digits of the first index in a segment's file name.
const NAME_DIGITS: usize = 20;
/// Chunk of zeros written where `FALLOC_FL_ZERO_RANGE` is unsupported.
const ZERO_CHUNK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("raft log {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("raft log {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("raft log: {0}")]
    Order(String),
    #[error("raft log: an earlier write failed ({0}); restart the master to recover the log")]
    Broken(String),
}

/// Why the WAL refuses every call: set once by the first failed write or sync.
type Broken = Arc<std::sync::OnceLock<String>>;

/// Segments written by `write` that still need a sync (`sync`) before the records count.
#[must_use = "the records are not durable until synced"]
pub(crate) struct Unsynced {
    files: Vec<(PathBuf, Arc<File>)>,
    broken: Broken,
}

impl Unsynced {
    /// Makes the written records durable. Blocking; needs no lock on the `Wal`. A failure
    /// breaks the WAL: the pages it held may be gone for good.
    pub(crate) fn sync(self) -> Result<(), WalError> {
        for (path, file) in &self.files {
            if let Err(e) = file.sync_data() {
                let error = io_error(path)(e);
                let _ = self.broken.set(error.to_string());
                return Err(error);
            }
        }
        Ok(())
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Segment {
    path: PathBuf,
    /// Shared so a sync can run after the lock around the `Wal` is released.
    file: Arc<File>,
    /// Index of the first record this segment was created for.
    first: u64,
    /// Offset and payload length of each record, in index order from `first`.
    records: Vec<(u64, u32)>,
    /// Where the next record goes.
    end: u64,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as u64 - 1)
    }
}

pub(crate) struct Wal {
    dir: PathBuf,
    /// Ordered by `first`; contiguous from the first segment on.
    segments: Vec<Segment>,
    /// Records at or below this index are purged: no longer read, and their segments go
    /// once wholly below it.
    purged: Option<u64>,
    /// Set by a failed write or sync: what memory lists may then not be on disk, so every
    /// later call fails (openraft stops on the first storage error anyway).
    broken: Broken,
}

impl Wal {
    /// Opens (creating `dir` if needed) and scans every segment. `purged`: the highest index
    /// the caller has durably purged; segments wholly at or below it are removed.
    pub(crate) fn open(dir: &Path, purged: Option<u64>) -> Result<Wal, WalError> {
        if !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
            // The new directory's entry must be durable before records in it count.
            if let Some(parent) = dir.parent() {
                sync_dir(parent)?;
            }
        }
        let mut firsts = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let name = entry.map_err(io_error(dir))?.file_name();
            if let Some(first) = name.to_str().and_then(parse_segment_name) {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut wal = Wal {
            dir: dir.to_path_buf(),
            segments: Vec::new(),
            purged,
            broken: Broken::default(),
        };
        let count = firsts.len();
        for (i, first) in firsts.into_iter().enumerate() {
            let (segment, bad_record_at) = wal.scan(first)?;
            if let (Some(offset), false) = (bad_record_at, i + 1 == count) {
                return Err(WalError::Corrupt {
                    path: segment.path,
                    reason: format!(
                        "a bad record at offset {offset} in a segment that is not the last (media corruption?); the file is left as it is"
                    ),
                });
            }
            if let Some(previous) = wal.segments.last() {
                let expected = previous.last().map_or(previous.first, |last| last + 1);
                if segment.first != expected {
                    // Only a purged prefix may end in a gap: everything before it at or below
                    // the purge point, and this segment going on from there.
                    let tolerated = purged.is_some_and(|purged| {
                        previous.last().is_none_or(|last| last <= purged)
                            && segment.first <= purged + 1
                    });
                    if !tolerated {
                        return Err(WalError::Corrupt {
                            path: segment.path,
                            reason: format!(
                                "starts at index {} but the segment before ends before index {expected} (purged up to {purged:?})",
                                segment.first
                            ),
                        });
                    }
                    wal.remove_segments(..wal.segments.len())?;
                }
            }
            wal.segments.push(segment);
        }
        if let Some(last) = wal.segments.last() {
            crate::space::retry_while_full(&last.path, || clear_from(&last.file, last.end))
                .map_err(io_error(&last.path))?;
            last.file.sync_data().map_err(io_error(&last.path))?;
        }
        // Segments with nothing above the purge point are no longer needed, except the last,
        // which appends continue.
        if let Some(purged) = purged {
            wal.purge(purged)?;
        }
        Ok(wal)
    }

    fn segment_path(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{first:020}{SUFFIX}"))
    }

    /// Reads one segment's records up to the first zero header or bad record; returns the
    /// bad record's offset too (what follows the records is cleared by `open`, and only in
    /// the last segment).
    fn scan(&self, first: u64) -> Result<(Segment, Option<u64>), WalError> {
        let path = self.segment_path(first);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let size = file.metadata().map_err(io_error(&path))?.len();
        let mut records = Vec::new();
        let mut offset = 0u64;
        let mut header = [0u8; HEADER_BYTES];
        let torn = loop {
            if offset + HEADER_BYTES as u64 > size {
                break false;
            }
            file.read_exact_at(&mut header, offset)
                .map_err(io_error(&path))?;
            let (len, crc, index) = parse_header(&header);
            if len == 0 && crc == 0 && index == 0 {
                break false;
            }
            let expected = first + records.len() as u64;
            if len == 0
                || len as usize > RECORD_MAX_BYTES
                || index != expected
                || offset + (HEADER_BYTES + len as usize) as u64 > size
            {
                break true;
            }
            let mut payload = vec![0u8; len as usize];
            file.read_exact_at(&mut payload, offset + HEADER_BYTES as u64)
                .map_err(io_error(&path))?;
            if checksum(index, &payload) != crc {
                break true;
            }
            records.push((offset, len));
            offset += (HEADER_BYTES + len as usize) as u64;
        };
        if torn {
            tracing::warn!(path = %path.display(), offset, records = records.len(), "raft log segment ends in a torn record (a crash during a write)");
        }
        let segment = Segment {
            path,
            file: Arc::new(file),
            first,
            records,
            end: offset,
        };
        Ok((segment, torn.then_some(offset)))
    }

    /// Lowest and highest index held above the purge point, if any.
    pub(crate) fn bounds(&self) -> Option<(u64, u64)> {
        let first = self.segments.iter().find(|s| !s.records.is_empty())?.first;
        let last = self.segments.iter().rev().find_map(Segment::last)?;
        let first = self.purged.map_or(first, |purged| first.max(purged + 1));
        (first <= last).then_some((first, last))
    }

    fn check_broken(&self) -> Result<(), WalError> {
        match self.broken.get() {
            Some(reason) => Err(WalError::Broken(reason.clone())),
            None => Ok(()),
        }
    }

    fn is_purged(&self, index: u64) -> bool {
        self.purged.is_some_and(|purged| index <= purged)
    }

    /// Writes `records` (consecutive indexes following the last held one, or any start if the
    /// log holds nothing) and syncs them: durable when this returns.
    pub(crate) fn append(&mut self, records: &[(u64, Vec<u8>)]) -> Result<(), WalError> {
        self.write(records)?.sync()
    }

    /// Writes `records` like `append` but leaves the sync to the caller, so it can release
    /// its lock first: readers of earlier records need not wait for the disk.
    pub(crate) fn write(&mut self, records: &[(u64, Vec<u8>)]) -> Result<Unsynced, WalError> {
        self.check_broken()?;
        let mut unsynced = Unsynced {
            files: Vec::new(),
            broken: Arc::clone(&self.broken),
        };
        let Some((start, _)) = records.first() else {
            return Ok(unsynced);
        };
        if let Some((index, payload)) = records.iter().find(|(_, p)| p.len() > RECORD_MAX_BYTES) {
            return Err(WalError::Order(format!(
                "entry {index} is {} bytes, more than the {RECORD_MAX_BYTES} a record may hold",
                payload.len()
            )));
        }
        if let Some(pair) = records.windows(2).find(|pair| pair[1].0 != pair[0].0 + 1) {
            return Err(WalError::Order(format!(
                "append of index {} right after index {}",
                pair[1].0, pair[0].0
            )));
        }
        let last_written = self.segments.iter().rev().find_map(Segment::last);
        let continues = match last_written {
            Some(last) => *start == last + 1,
            None => self.segments.last().is_some_and(|s| s.first == *start),
        };
        if !continues && self.bounds().is_some() {
            return Err(WalError::Order(format!(
                "append of index {start} after index {}",
                last_written.map_or("none".to_string(), |l| l.to_string())
            )));
        }
        let written = self.write_records(records, !continues, &mut unsynced);
        if let Err(e) = &written {
            let _ = self.broken.set(e.to_string());
        }
        written.map(|()| unsynced)
    }

    fn write_records(
        &mut self,
        records: &[(u64, Vec<u8>)],
        start_over: bool,
        unsynced: &mut Unsynced,
    ) -> Result<(), WalError> {
        if start_over {
            // Nothing held above the purge point (a new log, or a snapshot moved the log
            // past it): start over where the records start.
            self.remove_segments(..self.segments.len())?;
            self.new_segment(records[0].0)?;
        }
        let mut buffer = Vec::new();
        for (index, payload) in records {
            let segment = self.segments.last().expect("a segment exists");
            let full =
                segment.end + (buffer.len() + HEADER_BYTES + payload.len()) as u64 > SEGMENT_BYTES;
            if full && (segment.end > 0 || !buffer.is_empty()) {
                self.write_buffer(&mut buffer, unsynced)?;
                // Synced before the next segment exists: only the last one may end short.
                let full = self.segments.last().expect("a segment exists");
                full.file.sync_data().map_err(io_error(&full.path))?;
                self.new_segment(*index)?;
            }
            let segment = self.segments.last_mut().expect("a segment exists");
            segment
                .records
                .push((segment.end + buffer.len() as u64, payload.len() as u32));
            buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buffer.extend_from_slice(&checksum(*index, payload).to_le_bytes());
            buffer.extend_from_slice(&index.to_le_bytes());
            buffer.extend_from_slice(payload);
        }
        self.write_buffer(&mut buffer, unsynced)
    }

    /// Writes `buffer` at the last segment's end (its records are already listed) and notes
    /// the segment as needing a sync.
    fn write_buffer(
        &mut self,
        buffer: &mut Vec<u8>,
        unsynced: &mut Unsynced,
    ) -> Result<(), WalError> {
        if buffer.is_empty() {
            return Ok(());
        }
        let segment = self.segments.last_mut().expect("a segment exists");
        crate::space::retry_while_full(&segment.path, || {
            segment.file.write_all_at(buffer, segment.end)
        })
        .map_err(io_error(&segment.path))?;
        segment.end += buffer.len() as u64;
        buffer.clear();
        if !unsynced.files.iter().any(|(path, _)| *path == segment.path) {
            unsynced
                .files
                .push((segment.path.clone(), Arc::clone(&segment.file)));
        }
        Ok(())
    }

    fn new_segment(&mut self, first: u64) -> Result<(), WalError> {
        let path = self.segment_path(first);
        // A full disk makes this wait for space (`crate::space`), never fail: records already
        // listed in memory must reach the disk for the log to stay usable.
        let file = crate::space::retry_while_full(&path, || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            preallocate(&file, SEGMENT_BYTES)?;
            Ok(file)
        })
        .map_err(io_error(&path))?;
        file.sync_all().map_err(io_error(&path))?;
        self.sync_dir()?;
        self.segments.push(Segment {
            path,
            file: Arc::new(file),
            first,
            records: Vec::new(),
            end: 0,
        });
        Ok(())
    }

    /// The payload of record `index`, if held.
    pub(crate) fn read(&self, index: u64) -> Result<Option<Vec<u8>>, WalError> {
        self.check_broken()?;
        if self.is_purged(index) {
            return Ok(None);
        }
        let at = self.segments.partition_point(|s| s.first <= index);
        let Some(segment) = at.checked_sub(1).map(|i| &self.segments[i]) else {
            return Ok(None);
        };
        let Some(&(offset, len)) = segment.records.get((index - segment.first) as usize) else {
            return Ok(None);
        };
        let mut payload = vec![0u8; len as usize];
        segment
            .file
            .read_exact_at(&mut payload, offset + HEADER_BYTES as u64)
            .map_err(io_error(&segment.path))?;
        Ok(Some(payload))
    }

    /// Removes the records at `index` and above, durably.
    pub(crate) fn truncate(&mut self, index: u64) -> Result<(), WalError> {
        self.check_broken()?;
        let keep = self.segments.partition_point(|s| s.first < index);
        // Later segments go first (highest first): a crash in between leaves a shorter
        // prefix, never a record that was removed behind one that was kept.
        self.remove_segments(keep..self.segments.len())?;
        if let Some(segment) = self.segments.last_mut() {
            let from = (index - segment.first) as usize;
            if from < segment.records.len() {
                let offset = segment.records[from].0;
                crate::space::retry_while_full(&segment.path, || clear_from(&segment.file, offset))
                    .map_err(io_error(&segment.path))?;
                segment.file.sync_data().map_err(io_error(&segment.path))?;
                segment.records.truncate(from);
                segment.end = offset;
            }
        }
        Ok(())
    }

    /// Removes every segment (the caller is about to write the whole log again).
    pub(crate) fn reset(&mut self) -> Result<(), WalError> {
        self.check_broken()?;
        self.remove_segments(..self.segments.len())
    }

    /// Forgets records at or below `index` and drops whole segments that hold nothing above
    /// it (the caller has durably recorded the purge). The last segment stays: appends
    /// continue in it.
    pub(crate) fn purge(&mut self, index: u64) -> Result<(), WalError> {
        self.check_broken()?;
        self.purged = self.purged.max(Some(index));
        let below = self
            .segments
            .iter()
            .take(self.segments.len().saturating_sub(1))
            .take_while(|s| s.last().is_none_or(|last| last <= index))
            .count();
        self.remove_segments(..below)
    }

    fn remove_segments(
        &mut self,
        range: impl std::ops::RangeBounds<usize>,
    ) -> Result<(), WalError> {
        let removed: Vec<Segment> = self.segments.drain(range).collect();
        if removed.is_empty() {
            return Ok(());
        }
        // Highest first, so a crash in between never leaves a gap above what remains.
        for segment in removed.iter().rev() {
            std::fs::remove_file(&segment.path).map_err(io_error(&segment.path))?;
        }
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), WalError> {
        sync_dir(&self.dir)
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

fn parse_header(header: &[u8; HEADER_BYTES]) -> (u32, u32, u64) {
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    (len, crc, index)
}

fn checksum(index: u64, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&index.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// `name` is a segment's file name: the first index in `NAME_DIGITS` digits and `SUFFIX`.
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Makes `file` read as zeros from `from` to its end, without changing its size.
fn clear_from(file: &File, from: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let size = file.metadata()?.len();
    if from >= size {
        return Ok(());
    }
    // SAFETY: fallocate on an fd we own, with plain integer arguments.
    let result = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_ZERO_RANGE,
            from as libc::off_t,
            (size - from) as libc::off_t,
        )
    };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(error);
    }
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut offset = from;
    while offset < size {
        let len = ZERO_CHUNK_BYTES.min((size - offset) as usize);
        file.write_all_at(&zeros[..len], offset)?;
        offset += len as u64;
    }
    Ok(())
}

/// Reserves `bytes` of disk for `file` so appends neither allocate blocks nor hit a full
/// disk halfway through a record.
fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fallocate on an fd we own, with plain integer arguments.
    let result = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, bytes as libc::off_t) };
    if result == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    // Filesystems without fallocate (tmpfs before 3.x, some FUSE): a sparse file works too.
    if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
        return file.set_len(bytes);
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(index: u64) -> Vec<u8> {
        format!("entry {index} {}", "x".repeat((index % 7) as usize * 10)).into_bytes()
    }

    fn records(range: std::ops::RangeInclusive<u64>) -> Vec<(u64, Vec<u8>)> {
        range.map(|i| (i, payload(i))).collect()
    }

    fn held(wal: &Wal) -> Vec<u64> {
        let Some((first, last)) = wal.bounds() else {
            return Vec::new();
        };
        (first..=last)
            .inspect(|i| assert_eq!(wal.read(*i).unwrap().unwrap(), payload(*i), "record {i}"))
            .collect()
    }

    #[test]
    fn appends_survive_reopen_and_reads_see_each_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(wal.bounds(), None);
        wal.append(&records(1..=3)).unwrap();
        wal.append(&records(4..=10)).unwrap();
        assert_eq!(wal.read(11).unwrap(), None);
        assert_eq!(wal.read(0).unwrap(), None);
        drop(wal);
        let wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(held(&wal), (1..=10).collect::<Vec<_>>());
    }

    #[test]
    fn out_of_order_appends_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(5..=6)).unwrap();
        assert!(matches!(
            wal.append(&records(8..=8)),
            Err(WalError::Order(_))
        ));
        assert!(matches!(
            wal.append(&records(6..=6)),
            Err(WalError::Order(_))
        ));
        let gap = vec![(7, payload(7)), (9, payload(9))];
        assert!(matches!(wal.append(&gap), Err(WalError::Order(_))));
        assert_eq!(held(&wal), vec![5, 6]);
        wal.append(&records(7..=7)).unwrap();
    }

    #[test]
    fn truncation_is_durable_and_never_resurrects_a_removed_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..=8)).unwrap();
        wal.truncate(5).unwrap();
        assert_eq!(held(&wal), vec![1, 2, 3, 4]);
        // A new record 5 of the same length as the old one: the old 6.. must stay gone.
        wal.append(&records(5..=5)).unwrap();
        drop(wal);
        let mut wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(held(&wal), vec![1, 2, 3, 4, 5]);
        wal.truncate(1).unwrap();
        assert_eq!(wal.bounds(), None);
        drop(wal);
        assert_eq!(Wal::open(dir.path(), None).unwrap().bounds(), None);
    }

    #[test]
    fn a_torn_tail_is_dropped_and_zeroed() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..=4)).unwrap();
        let path = wal.segments[0].path.clone();
        let (offset, len) = wal.segments[0].records[3];
        drop(wal);
        // Corrupt record 4's payload: a crash in the middle of its write.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"garbage", offset + HEADER_BYTES as u64 + len as u64 / 2)
            .unwrap();
        drop(file);
        let mut wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(held(&wal), vec![1, 2, 3]);
        let mut tail = vec![0u8; 64];
        wal.segments[0]
            .file
            .read_exact_at(&mut tail, offset)
            .unwrap();
        assert!(tail.iter().all(|b| *b == 0), "the torn record was zeroed");
        wal.append(&records(4..=5)).unwrap();
        drop(wal);
        assert_eq!(
            held(&Wal::open(dir.path(), None).unwrap()),
            vec![1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn records_after_a_lost_header_never_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..=5)).unwrap();
        let path = wal.segments[0].path.clone();
        let (offset, _) = wal.segments[0].records[3];
        drop(wal);
        // Power cut: record 4's header never reached the disk, record 5 did.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0u8; HEADER_BYTES], offset).unwrap();
        drop(file);
        let mut wal = Wal::open(dir.path(), None).unwrap();
        assert_eq!(held(&wal), vec![1, 2, 3]);
        // A new record 4 of the same length: the old 5 must not follow it.
        wal.append(&records(4..=4)).unwrap();
        drop(wal);
        assert_eq!(
            held(&Wal::open(dir.path(), None).unwrap()),
            vec![1, 2, 3, 4]
        );
    }

    #[test]
    fn a_bad_record_in_an_earlier_segment_is_corruption_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        let big = |i: u64| (i, vec![7u8; 6 << 20]);
        wal.append(&[big(1), big(2)]).unwrap();
        wal.append(&[big(3)]).unwrap();
        assert_eq!(wal.segments.len(), 2);
        let path = wal.segments[0].path.clone();
        drop(wal);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(b"rot", (HEADER_BYTES + 100) as u64)
            .unwrap();
        drop(file);
        assert!(matches!(
            Wal::open(dir.path(), None),
            Err(WalError::Corrupt { .. })
        ));
        let mut rot = [0u8; 3];
        File::open(&path)
            .unwrap()
            .read_exact_at(&mut rot, (HEADER_BYTES + 100) as u64)
            .unwrap();
        assert_eq!(&rot, b"rot", "the damaged file is not rewritten");
    }

    #[test]
    fn segments_roll_over_and_purge_removes_whole_old_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        // Records of 1 MiB: 15 fit in a 16 MiB segment.
        let big = |i: u64| (i, vec![(i % 251) as u8 + 1; 1 << 20]);
        let all: Vec<_> = (1..=40).map(big).collect();
        for chunk in all.chunks(7) {
            wal.append(chunk).unwrap();
        }
        assert_eq!(wal.segments.len(), 3);
        assert_eq!(wal.bounds(), Some((1, 40)));
        assert_eq!(wal.read(17).unwrap().unwrap(), big(17).1);
        wal.purge(20).unwrap();
        assert_eq!(
            wal.segments.len(),
            2,
            "only the segment wholly below 20 goes"
        );
        drop(wal);
        let mut wal = Wal::open(dir.path(), Some(35)).unwrap();
        assert_eq!(
            wal.segments.len(),
            1,
            "reopening with a later purge point drops more"
        );
        assert_eq!(wal.read(36).unwrap().unwrap(), big(36).1);
        // Truncating into an earlier segment removes the later ones.
        wal.truncate(38).unwrap();
        assert_eq!(wal.bounds().unwrap().1, 37);
    }

    #[test]
    fn after_everything_is_purged_appends_may_start_anywhere() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..=3)).unwrap();
        wal.truncate(1).unwrap();
        // A snapshot moved the log to 100 (the caller purged up to 99).
        wal.append(&records(100..=102)).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), Some(99)).unwrap();
        assert_eq!(held(&wal), vec![100, 101, 102]);
        assert_eq!(wal.segments.len(), 1);
    }

    #[test]
    fn a_purge_past_the_last_record_lets_the_log_go_on_from_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..=50)).unwrap();
        // A snapshot up to 100 arrived from the leader (the caller recorded the purge).
        wal.purge(100).unwrap();
        assert_eq!(wal.bounds(), None);
        assert_eq!(wal.read(50).unwrap(), None);
        wal.append(&records(101..=102)).unwrap();
        drop(wal);
        let wal = Wal::open(dir.path(), Some(100)).unwrap();
        assert_eq!(held(&wal), vec![101, 102]);
    }

    #[test]
    fn a_gap_above_the_purge_point_is_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let mut wal = Wal::open(dir.path(), None).unwrap();
        wal.append(&records(1..=3)).unwrap();
        drop(wal);
        let mut other = Wal {
            dir: dir.path().to_path_buf(),
            segments: Vec::new(),
            purged: None,
            broken: Broken::default(),
        };
        other.new_segment(10).unwrap();
        other.append(&records(10..=11)).unwrap();
        drop(other);
        assert!(matches!(
            Wal::open(dir.path(), None),
            Err(WalError::Corrupt { .. })
        ));
        // A hole 4..9 above the purge point is corruption too; once purged up to 9 it is not.
        assert!(matches!(
            Wal::open(dir.path(), Some(3)),
            Err(WalError::Corrupt { .. })
        ));
        let wal = Wal::open(dir.path(), Some(9)).unwrap();
        assert_eq!(held(&wal), vec![10, 11]);
    }
}
