//! Task log capture in the shim: the task's stdout and stderr are pipes that the shim copies
//! into files in the sandbox, rotating each file when it reaches a size limit
//! (`stdout` -> `stdout.1` -> ... -> `stdout.<files_max>`, the oldest dropped).
//!
//! Synchronous and single-threaded (it runs inside the shim's wait loop); it never blocks:
//! the read ends are non-blocking, and one `pump` copies at most `PUMP_MAX_BYTES` so a task
//! that writes without pause cannot keep the shim from its other duties (kills, reaping).

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Default size at which a log file is rotated.
pub const LOG_MAX_BYTES_DEFAULT: u64 = 10 << 20;
/// Default number of rotated files kept per stream.
pub const LOG_FILES_MAX_DEFAULT: u32 = 5;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// Most bytes one `pump` copies; the wait loop comes back for the rest.
pub const PUMP_MAX_BYTES: usize = 1 << 20;

/// One log file with size-based rotation.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    written: u64,
    max_bytes: u64,
    files_max: u32,
}

/// The name of the `n`th rotated file of `path` (`stdout` -> `stdout.n`).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// The last `max_bytes` a stream wrote (`path`, then its newest rotated file when `path`
/// holds less), lossily as UTF-8; empty when nothing was written or the files are gone.
pub fn tail(path: &Path, max_bytes: u64) -> String {
    use std::io::{Seek, SeekFrom};
    let read_end = |path: &Path, max: u64| -> Vec<u8> {
        let Ok(mut file) = File::open(path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(max);
        let mut bytes = Vec::new();
        if file.seek(SeekFrom::Start(start)).is_ok() {
            let _ = file.take(max).read_to_end(&mut bytes);
        }
        bytes
    };
    let mut bytes = read_end(path, max_bytes);
    let missing = max_bytes.saturating_sub(bytes.len() as u64);
    if missing > 0 {
        let mut older = read_end(&rotated_path(path, 1), missing);
        older.append(&mut bytes);
        bytes = older;
    }
    // A cut through a multi-byte character loses that character, not the rest.
    let text = String::from_utf8_lossy(&bytes);
    text.trim_start_matches('\u{FFFD}').to_string()
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, files_max: u32) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)?;
        let written = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            written,
            max_bytes: max_bytes.max(1),
            files_max,
        })
    }

    pub fn write(&mut self, mut bytes: &[u8]) -> std::io::Result<()> {
        while !bytes.is_empty() {
            if self.written >= self.max_bytes {
                self.rotate()?;
            }
            let room = (self.max_bytes - self.written) as usize;
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.file.write_all(now)?;
            self.written += now.len() as u64;
            bytes = later;
        }
        Ok(())
    }

    /// Shifts `path.N` to `path.N+1` (dropping the oldest), `path` to `path.1`, and starts a
    /// new `path`. Readers that follow the file notice the new inode and switch over.
    fn rotate(&mut self) -> std::io::Result<()> {
        if self.files_max == 0 {
            // No history kept: start over in place.
            self.file.set_len(0)?;
            self.written = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated_path(&self.path, self.files_max));
        for n in (1..self.files_max).rev() {
            let from = rotated_path(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated_path(&self.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)?;
        self.written = 0;
        Ok(())
    }
}

/// The read end of one output pipe and where its bytes go.
pub struct Stream {
    pipe: File,
    out: RotatingFile,
    open: bool,
    buf: Vec<u8>,
    /// A write to the log file failed (e.g. disk full) and was reported; reported again only
    /// after a write succeeds.
    write_failing: bool,
}

impl Stream {
    pub fn new(read_end: OwnedFd, out: RotatingFile) -> std::io::Result<Self> {
        set_nonblocking(&read_end)?;
        Ok(Stream {
            pipe: File::from(read_end),
            out,
            open: true,
            buf: vec![0u8; READ_CHUNK_BYTES],
            write_failing: false,
        })
    }

    /// The pipe to poll, while the task may still write to it.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.open.then(|| self.pipe.as_fd())
    }

    /// Copies what is available now, at most `PUMP_MAX_BYTES`. Returns false once the
    /// writers are all gone.
    pub fn pump(&mut self) -> bool {
        let mut copied = 0;
        while self.open && copied < PUMP_MAX_BYTES {
            match self.pipe.read(&mut self.buf) {
                Ok(0) => self.open = false,
                Ok(n) => {
                    copied += n;
                    match self.out.write(&self.buf[..n]) {
                        Ok(()) => self.write_failing = false,
                        // Output is dropped rather than the task blocked; said once (stderr
                        // may be on the same full disk, so its own failure is ignored).
                        Err(e) if !self.write_failing => {
                            self.write_failing = true;
                            let _ = writeln!(
                                std::io::stderr(),
                                "shim: writing {}: {e}; dropping output until writes succeed",
                                self.out.path.display()
                            );
                        }
                        Err(_) => {}
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "shim: reading task output: {e}");
                    self.open = false;
                }
            }
        }
        self.open
    }

    /// Copies until the pipe is empty or closed (bounded by `rounds` pumps), for the end.
    pub fn drain(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let before = self.out.written;
            if !self.pump() || self.out.written == before {
                break;
            }
        }
    }
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), FcntlArg::F_GETFL)
        .map_err(std::io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        FcntlArg::F_SETFL(flags),
    )
    .map_err(std::io::Error::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_at_the_limit_and_keeps_files_max() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let mut log = RotatingFile::open(&path, 10, 2).unwrap();
        log.write(b"0123456789abcdefghij").unwrap();
        assert_eq!(read(&path), "abcdefghij");
        assert_eq!(read(&rotated_path(&path, 1)), "0123456789");
        log.write(b"KLMNOPQRSTuv").unwrap();
        assert_eq!(read(&path), "uv");
        assert_eq!(read(&rotated_path(&path, 1)), "KLMNOPQRST");
        assert_eq!(read(&rotated_path(&path, 2)), "abcdefghij");
        assert!(
            !rotated_path(&path, 3).exists(),
            "only files_max rotated files are kept"
        );
    }

    #[test]
    fn the_tail_reaches_into_the_newest_rotated_file_and_drops_a_cut_character() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        assert_eq!(tail(&path, 8), "", "nothing written");
        let mut log = RotatingFile::open(&path, 10, 2).unwrap();
        log.write(b"0123456789abc").unwrap();
        assert_eq!(tail(&path, 2), "bc");
        assert_eq!(tail(&path, 5), "89abc");
        assert_eq!(tail(&path, 100), "0123456789abc");
        std::fs::write(&path, "x\u{e9}y").unwrap();
        assert_eq!(tail(&path, 3), "\u{e9}y");
        assert_eq!(tail(&path, 2), "y", "half of a character is dropped");
    }

    #[test]
    fn pumps_a_pipe_until_its_writers_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        let (read_end, write_end) = nix::unistd::pipe().unwrap();
        let mut stream =
            Stream::new(read_end, RotatingFile::open(&path, 1 << 20, 1).unwrap()).unwrap();
        let mut writer = File::from(write_end);
        writer.write_all(b"hello ").unwrap();
        assert!(stream.pump());
        writer.write_all(b"world").unwrap();
        drop(writer);
        assert!(!stream.pump());
        assert!(stream.fd().is_none());
        assert_eq!(read(&path), "hello world");
    }
}
