//! The on-disk contract between the agent and one task's shim: the files in a task's
//! sandbox directory, the spec the agent writes and the exit record the shim writes.
//!
//! The agent and the shim talk only through these files and signals, so a task outlives
//! the agent that started it. Nothing here starts processes.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the shim must run: everything resolved by the agent (argv, env, limits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShimSpec {
    pub task_id: String,
    /// The framework the task belongs to (Mesos's id of it: `marathon`, `metronome` or an
    /// external framework's): for the agent's `/state`; the shim does not read it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub framework_id: String,
    pub args: Vec<String>,
    /// `KEY=VALUE` entries.
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    /// Config digest (`sha256:...`) of the image the task runs in; `None` (with no
    /// `image_rootfs`) runs a plain process on the host filesystem (Mesos's command task).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// The image's read-only layer directories, bottom first (overlayfs's format): the
    /// lower layers of the task's writable root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_layers: Vec<PathBuf>,
    /// The whole-image tree (`<store>/rootfs/<config hex>`) that agents wrote before image
    /// layers were shared; read so tasks they started are still known to use their image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_rootfs: Option<PathBuf>,
    pub hostname: String,
    /// Cgroup path relative to every hierarchy's root, e.g. `/dcos-rs/<task-id>`.
    pub cgroup_path: String,
    pub mem_limit_bytes: u64,
    pub cpus_milli: u64,
    pub pids_limit: i64,
    pub kill_grace_ms: u64,
    /// libcontainer's state directory (one per agent).
    pub container_state_root: PathBuf,
    /// Volumes, resolved by the agent to host paths.
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    /// First signal of a kill (the image's StopSignal, else SIGTERM).
    #[serde(default = "default_stop_signal")]
    pub stop_signal: i32,
    /// Size at which `stdout`/`stderr` are rotated.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Rotated files kept per stream (`stdout.1` .. `stdout.N`).
    #[serde(default = "default_log_files_max")]
    pub log_files_max: u32,
    /// The task's place on the agent's bridge; `None` shares the host's network.
    #[serde(default)]
    pub network: Option<crate::network::TaskNetwork>,
    /// The task's user namespace: its ids `0..size` are host ids from `host_base` (image
    /// tasks only); `None` runs it in the host's user namespace, as before this existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_namespace: Option<crate::userns::IdMap>,
    /// The task's `disk` resource in bytes (0: none asked, not enforced); the agent
    /// measures what the task writes against it.
    #[serde(default)]
    pub disk_limit_bytes: u64,
    /// The agent reports this much of the end of the task's stdout and of its stderr with
    /// its end (0: none; jobs' runs keep it in their history).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_tail_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ShimSpec {
    /// The config digest (`sha256:...`) of the task's image, `None` for a plain process.
    pub fn image(&self) -> Option<String> {
        self.image_digest.clone().or_else(|| {
            let tree = self.image_rootfs.as_ref()?;
            Some(format!("sha256:{}", tree.file_name()?.to_string_lossy()))
        })
    }

    /// The lower layers of the task's root, bottom first; empty for a plain process.
    pub fn image_lowers(&self) -> Vec<PathBuf> {
        if self.image_digest.is_some() {
            self.image_layers.clone()
        } else {
            self.image_rootfs.iter().cloned().collect()
        }
    }
}

fn default_log_max_bytes() -> u64 {
    crate::logs::LOG_MAX_BYTES_DEFAULT
}

fn default_log_files_max() -> u32 {
    crate::logs::LOG_FILES_MAX_DEFAULT
}

fn default_stop_signal() -> i32 {
    libc::SIGTERM
}

/// One volume of a container task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountSpec {
    pub destination: String,
    /// Host directory to bind; `None` for a tmpfs.
    pub source: Option<PathBuf>,
    pub read_only: bool,
    pub tmpfs_size_mib: Option<u64>,
}

/// Parses a StopSignal as images give it: `SIGQUIT`, `QUIT` or `3`.
pub fn parse_signal(text: &str) -> Option<i32> {
    let text = text.trim();
    if let Ok(number) = text.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(number)
            .ok()
            .map(|s| s as i32);
    }
    let name = text.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// How a task ended, written once by its shim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// The kernel's OOM killer killed a process of the task's cgroup.
    pub oom_killed: bool,
    /// The agent asked for the kill (SIGTERM to the shim).
    pub kill_requested: bool,
    /// Memory limit in force, for the OOM message.
    pub mem_limit_bytes: u64,
    /// Set when the task could not be started at all.
    pub start_error: Option<String>,
    pub finished_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Finished,
    Failed,
    Killed,
}

impl TaskExit {
    pub fn kind(&self) -> ExitKind {
        if self.start_error.is_some() || self.oom_killed {
            ExitKind::Failed
        } else if self.kill_requested {
            ExitKind::Killed
        } else if self.exit_code == Some(0) {
            ExitKind::Finished
        } else {
            ExitKind::Failed
        }
    }

    /// A one-line reason for users, e.g. `OOM-killed: memory limit of 64 MiB exceeded`.
    pub fn describe(&self) -> String {
        if let Some(error) = &self.start_error {
            return format!("failed to start: {error}");
        }
        if self.oom_killed {
            return format!(
                "OOM-killed: memory limit of {} MiB exceeded",
                self.mem_limit_bytes / (1024 * 1024)
            );
        }
        let how = match (self.exit_code, self.signal) {
            (_, Some(signal)) => format!("killed by signal {signal} ({})", signal_name(signal)),
            (Some(code), None) => format!("exited with code {code}"),
            (None, None) => "ended".to_string(),
        };
        if self.kill_requested {
            format!("killed on request, {how}")
        } else {
            how
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGHUP => "SIGHUP",
        _ => "other",
    }
}

/// Paths inside one task's sandbox directory.
#[derive(Debug, Clone)]
pub struct TaskDir {
    pub path: PathBuf,
}

impl TaskDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        TaskDir { path: path.into() }
    }
    pub fn spec(&self) -> PathBuf {
        self.path.join("task.json")
    }
    /// The working directory of a task without an image (`MESOS_SANDBOX`): the only part
    /// of the sandbox the task owns (the rest is its supervisor's).
    pub fn work(&self) -> PathBuf {
        self.path.join("sandbox")
    }
    /// Why the agent killed the task, when it did on its own (its disk limit): the task's
    /// final status says so.
    pub fn kill_reason(&self) -> PathBuf {
        self.path.join("kill_reason")
    }
    /// Where the task itself writes: its working dir (no image), its writable layer and
    /// its sandbox volumes (a container). Logs are not the task's: the agent rotates them.
    pub fn writable(&self) -> [PathBuf; 3] {
        [self.work(), self.overlay_upper(), self.path.join("volumes")]
    }
    /// The shim's pid: the agent signals it to kill the task.
    /// A kill's own grace period in ms (written by the agent before its stop signal; read
    /// by the shim when the signal comes, instead of the spec's `kill_grace_ms`).
    pub fn kill_grace(&self) -> PathBuf {
        self.path.join("kill_grace_ms")
    }

    /// The grace period of a kill: `kill_grace` when written, else `spec_ms`.
    pub fn kill_grace_ms(&self, spec_ms: u64) -> u64 {
        std::fs::read_to_string(self.kill_grace())
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(spec_ms)
    }

    pub fn shim_pid(&self) -> PathBuf {
        self.path.join("shim.pid")
    }
    /// The task's main process, as seen from the host.
    pub fn task_pid(&self) -> PathBuf {
        self.path.join("task.pid")
    }
    pub fn exit(&self) -> PathBuf {
        self.path.join("exit.json")
    }
    pub fn stdout(&self) -> PathBuf {
        self.path.join("stdout")
    }
    pub fn stderr(&self) -> PathBuf {
        self.path.join("stderr")
    }
    pub fn shim_log(&self) -> PathBuf {
        self.path.join("shim.log")
    }
    /// The OCI bundle in the sandbox: rootfs/, and config.json where the shim has no tmpfs
    /// for the container's state (it keeps config.json there otherwise).
    pub fn bundle(&self) -> PathBuf {
        self.path.clone()
    }
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }
    pub fn overlay_upper(&self) -> PathBuf {
        self.path.join("overlay/upper")
    }
    pub fn overlay_work(&self) -> PathBuf {
        self.path.join("overlay/work")
    }
    /// Mount point of the image's tree seen through a user namespace's id mapping (an
    /// idmapped mount in the shim's mount namespace), the overlay's lower layer then.
    pub fn overlay_lower(&self) -> PathBuf {
        self.path.join("overlay/lower")
    }

    pub fn read_spec(&self) -> std::io::Result<ShimSpec> {
        read_json(&self.spec())
    }
    pub fn read_exit(&self) -> std::io::Result<Option<TaskExit>> {
        match read_json(&self.exit()) {
            Ok(exit) => Ok(Some(exit)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    pub fn read_pid(path: &Path) -> Option<i32> {
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }
}

pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> std::io::Result<T> {
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old
/// content or the new, never half. Not fsync'd: the task files (spec, pids, exit record)
/// only matter while the host stays up (a host crash ends the tasks too), and they are on
/// the container-start path, where each fsync costs about 0.3 ms.
/// Sets `path`'s permission bits to `mode` (creation modes pass through the umask, and an
/// older installation may have made it wider).
pub fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_via_rename(path, bytes, false)
}

/// `write_atomic`, plus fsync of the file and its directory before returning: for what must
/// survive a host crash (the agent's id).
pub fn write_durable(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_via_rename(path, bytes, true)
}

fn write_via_rename(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    // A temporary name per file and process: the agent and the shim may both write.
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    // Private: a sandbox's files hold the task's environment (secrets) and pids.
    let mut file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
    };
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
    }
    Ok(())
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: Option<i32>, signal: Option<i32>, oom: bool, kill: bool) -> TaskExit {
        TaskExit {
            exit_code: code,
            signal,
            oom_killed: oom,
            kill_requested: kill,
            mem_limit_bytes: 64 << 20,
            start_error: None,
            finished_at_ms: 0,
        }
    }

    #[test]
    fn stop_signals_parse_in_every_spelling() {
        assert_eq!(parse_signal("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("quit"), Some(libc::SIGQUIT));
        assert_eq!(parse_signal("15"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("999"), None);
    }

    #[test]
    fn exit_kinds_and_reasons() {
        let cases = [
            (
                exit(Some(0), None, false, false),
                ExitKind::Finished,
                "exited with code 0",
            ),
            (
                exit(Some(3), None, false, false),
                ExitKind::Failed,
                "exited with code 3",
            ),
            (
                exit(None, Some(9), true, false),
                ExitKind::Failed,
                "OOM-killed: memory limit of 64 MiB exceeded",
            ),
            (
                exit(None, Some(15), false, true),
                ExitKind::Killed,
                "killed on request, killed by signal 15 (SIGTERM)",
            ),
        ];
        for (exit, kind, reason) in cases {
            assert_eq!(exit.kind(), kind);
            assert_eq!(exit.describe(), reason);
        }
    }
}
