//! Mesos's agent endpoints, for the tools that read them (the DC/OS CLI, Mesos's CLI,
//! scripts written against a Mesos agent):
//!
//! - `GET /state` (also `/slave(1)/state`): this agent, its resources, and the tasks whose
//!   sandboxes it keeps, grouped by framework, each as Mesos shows a command task: an
//!   executor of the task's id with the sandbox as its `directory`.
//! - `GET /files/read.json?path=&offset=&length=` (also `/files/read`): `{data, offset}` from
//!   a task's `stdout`, `stderr` (and their rotated files) or a file under its working
//!   directory; `offset=-1` (or none) answers the file's size as `offset` with no data.
//!   Nothing else on the agent is readable: the task's spec (its environment) and the
//!   agent's own files stay private, and no symbolic link is followed (a task could point
//!   one anywhere on the host).
//! - `GET /files/browse.json?path=` (also `/files/browse`): the entries of a directory as
//!   Mesos lists them (`[{path, size, mode, mtime, nlink, uid, gid}]`, `mode` as `ls`
//!   writes it, `mtime` in seconds): a task's directory (only its logs and `sandbox`
//!   shown) or one under its working directory, with the same confinement as reading; at
//!   most `BROWSE_ENTRIES_MAX` entries (`ENTRIES_TRUNCATED_HEADER` says when more were
//!   left out).
//!
//! Both take a sandbox's real path (the `directory` of `/state`) or Mesos's virtual one,
//! `/frameworks/<framework id>/executors/<executor id>/runs/latest[/...]`, which a master
//! builds from the task alone (`crate::link::sandbox_virtual_path`).

use super::Agent;
use dcos_api::ApiError;
use dcos_core::TaskState;
use dcos_runtime::task_dir::TaskDir;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

pub const STATE: &str = "/state";
/// Mesos's agent answers under its process id too.
pub const STATE_OF_SLAVE: &str = "/slave(1)/state";
pub const FILES_READ: &str = dcos_api::routes::agent::FILES_READ;
pub const FILES_READ_PLAIN: &str = "/files/read";
pub const FILES_BROWSE: &str = dcos_api::routes::agent::FILES_BROWSE;
pub const FILES_BROWSE_PLAIN: &str = "/files/browse";
/// Most bytes one `/files/read.json` answers (Mesos's CLI reads in pages of this or less).
pub const FILES_READ_MAX_BYTES: u64 = 1 << 20;
/// Most entries one `/files/browse.json` answers: a directory with more is cut (in the
/// order the directory gives them) and the answer carries `ENTRIES_TRUNCATED_HEADER`.
pub const BROWSE_ENTRIES_MAX: usize = 1000;
/// Set (`true`) on a `/files/browse.json` answer that left entries out.
pub const ENTRIES_TRUNCATED_HEADER: &str = crate::link::ENTRIES_TRUNCATED_HEADER;
/// How Mesos's virtual path of a sandbox starts.
const VIRTUAL_SANDBOX_PREFIX: &str = "/frameworks/";
/// Most sandboxes `/state` lists (the sandbox collector keeps far fewer).
const STATE_SANDBOXES_MAX: usize = 10_000;

/// One task's sandbox as `/state` lists it.
struct Sandbox {
    task_id: String,
    framework_id: String,
    directory: String,
    state: TaskState,
    resources: Value,
}

impl Sandbox {
    fn terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// The task's id as its framework knows it (a Mesos framework's tasks are kept under
    /// `<framework id>.<its id>`).
    fn own_id(&self) -> &str {
        self.task_id
            .strip_prefix(&self.framework_id)
            .and_then(|rest| rest.strip_prefix('.'))
            .unwrap_or(&self.task_id)
    }
}

impl Agent {
    /// Mesos's agent state. Blocking: reads every sandbox's spec and exit record.
    pub fn mesos_state(&self) -> Value {
        let mut frameworks: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
        for sandbox in self.sandboxes() {
            let own_id = sandbox.own_id().to_string();
            let task = json!({
                "id": own_id,
                "name": own_id,
                "framework_id": sandbox.framework_id,
                "executor_id": "",
                "slave_id": self.id,
                "state": sandbox.state.as_str(),
                "resources": sandbox.resources,
            });
            let tasks_key = if sandbox.terminal() {
                "completed_tasks"
            } else {
                "tasks"
            };
            let executor = json!({
                "id": own_id,
                "name": format!("Command Executor (Task: {own_id})"),
                "source": own_id,
                "framework_id": sandbox.framework_id,
                "directory": sandbox.directory,
                "resources": sandbox.resources,
                tasks_key: [task],
            });
            let terminal = sandbox.terminal();
            let (live, completed) = frameworks.entry(sandbox.framework_id).or_default();
            if terminal {
                completed.push(executor);
            } else {
                live.push(executor);
            }
        }
        // A framework with a live task is current; one with only ended ones is completed.
        let (mut current, mut completed) = (Vec::new(), Vec::new());
        for (id, (live, ended)) in frameworks {
            let framework = json!({"id": id, "executors": live, "completed_executors": ended});
            if live_count(&framework) > 0 {
                current.push(framework);
            } else {
                completed.push(framework);
            }
        }
        let resources = &self.resources;
        let ports: Vec<String> = self
            .config
            .ports
            .iter()
            .map(|r| format!("{}-{}", r.begin, r.end))
            .collect();
        json!({
            "id": self.id,
            "pid": format!("slave(1)@{}", crate::http_util::url_authority(&self.config.url)),
            "hostname": self.config.hostname,
            "version": crate::frameworks::mesos::MESOS_API_VERSION,
            "resources": {
                "cpus": resources.cpus_milli as f64 / 1000.0,
                "mem": resources.mem_mib as f64,
                "disk": resources.disk_mib as f64,
                "ports": format!("[{}]", ports.join(", ")),
            },
            "attributes": self.config.attributes,
            "frameworks": current,
            "completed_frameworks": completed,
        })
    }

    /// Every task sandbox with a spec: its state from its exit record, else from what this
    /// agent runs (sandboxes of tasks neither ended nor run here are left out).
    fn sandboxes(&self) -> Vec<Sandbox> {
        let live: BTreeMap<String, bool> = self
            .tasks
            .lock()
            .expect("tasks lock")
            .iter()
            .map(|(id, task)| (id.clone(), task.running_reported))
            .collect();
        let Ok(entries) = std::fs::read_dir(self.tasks_dir()) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten().take(STATE_SANDBOXES_MAX) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !super::valid_task_id(&name) {
                continue;
            }
            let dir = TaskDir::new(entry.path());
            let Ok(spec) = dir.read_spec() else { continue };
            let state = match dir.read_exit() {
                Ok(Some(exit)) => super::monitor::end_state(&dir, &exit),
                _ => match live.get(&name) {
                    Some(true) => TaskState::Running,
                    Some(false) => TaskState::Starting,
                    None => continue,
                },
            };
            found.push(Sandbox {
                task_id: name,
                framework_id: spec.framework_id.clone(),
                directory: dir.path.display().to_string(),
                state,
                resources: json!({
                    "cpus": spec.cpus_milli as f64 / 1000.0,
                    "mem": (spec.mem_limit_bytes >> 20) as f64,
                    "disk": (spec.disk_limit_bytes >> 20) as f64,
                }),
            });
        }
        found.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        found
    }

    fn tasks_dir(&self) -> std::path::PathBuf {
        self.config.work_dir.join("tasks")
    }

    /// `path` with Mesos's virtual sandbox prefix
    /// (`/frameworks/<framework id>/executors/<executor id>/runs/latest`) replaced by the
    /// real directory of that task under the tasks dir; any other path as it is. Blocking:
    /// reads the spec of the (at most two) tasks it could name.
    fn resolve_virtual(&self, path: &str) -> Result<String, ApiError> {
        let Some(rest) = path.strip_prefix(VIRTUAL_SANDBOX_PREFIX) else {
            return Ok(path.to_string());
        };
        let not_found = || ApiError::not_found(format!("no sandbox at {path} on this agent"));
        let mut parts = rest.splitn(6, '/');
        let (
            Some(framework_id),
            Some("executors"),
            Some(executor_id),
            Some("runs"),
            Some("latest"),
        ) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        )
        else {
            return Err(not_found());
        };
        let below = parts.next();
        // A registered framework's task is kept as `<framework id>.<its id>`, a built-in
        // framework's under its own id; the spec says which framework it belongs to.
        let names_it = |task_id: &str| {
            super::valid_task_id(task_id)
                && dcos_core::framework_own_task_id(framework_id, task_id) == executor_id
                && TaskDir::new(self.tasks_dir().join(task_id))
                    .read_spec()
                    .is_ok_and(|spec| {
                        spec.framework_id == framework_id
                            // Specs written before they named their framework.
                            || (spec.framework_id.is_empty() && task_id == executor_id)
                    })
        };
        let task_id = [
            format!("{framework_id}.{executor_id}"),
            executor_id.to_string(),
        ]
        .into_iter()
        .find(|candidate| names_it(candidate.as_str()))
        .ok_or_else(not_found)?;
        let mut real = format!("{}/{task_id}", self.tasks_dir().display());
        if let Some(below) = below {
            real.push('/');
            real.push_str(below);
        }
        Ok(real)
    }

    /// `/files/browse.json`. Blocking.
    pub fn browse(&self, query: &BrowseQuery) -> Result<Browse, ApiError> {
        // `dir/` is `dir`, as Mesos takes it.
        let requested = query.path.trim_end_matches('/');
        let real = self.resolve_virtual(requested)?;
        let (relative, task_root) = browsable_path(&self.tasks_dir(), &real)?;
        let listing =
            read_dir_beneath(&self.tasks_dir(), &relative).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) => ApiError::not_found(format!("no directory {requested}")),
                Some(libc::ENOTDIR) => ApiError::bad_request(format!(
                    "path: {requested} is not a directory (read a file with {FILES_READ})"
                )),
                Some(libc::ELOOP) | Some(libc::EXDEV) => ApiError::new(
                    403,
                    "forbidden",
                    format!("{requested}: symbolic links in a sandbox are not followed"),
                ),
                _ => ApiError::internal(format!("listing {requested}: {e}")),
            })?;
        let mut names = Names::default();
        let mut entries = Vec::new();
        let mut truncated = false;
        for entry in listing {
            let Ok(entry) = entry else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            // In a task's directory, only what `read.json` serves: its logs and sandbox.
            if task_root && !(is_log_name(&name) || name == "sandbox") {
                continue;
            }
            if entries.len() == BROWSE_ENTRIES_MAX {
                truncated = true;
                break;
            }
            // Not following a symbolic link (the entry shows as one); gone meanwhile: left out.
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            entries.push(file_info(
                &format!("{requested}/{name}"),
                &metadata,
                &mut names,
            ));
        }
        entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        Ok(Browse { entries, truncated })
    }

    /// `/files/read.json`. Blocking.
    pub fn read_file(&self, query: &FilesQuery) -> Result<Value, ApiError> {
        let path = self.resolve_virtual(&query.path)?;
        let relative = readable_path(&self.tasks_dir(), &path)?;
        let offset = match query.offset {
            None | Some(-1) => None,
            Some(offset) if offset < 0 => {
                return Err(ApiError::bad_request(format!(
                    "offset: {offset} is negative (-1 asks for the file's size)"
                )))
            }
            Some(offset) => Some(offset as u64),
        };
        let file =
            open_beneath(&self.tasks_dir(), &relative).map_err(|e| match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::ENOTDIR) => {
                    ApiError::not_found(format!("no file {}", query.path))
                }
                Some(libc::ELOOP) | Some(libc::EXDEV) => ApiError::new(
                    403,
                    "forbidden",
                    format!(
                        "{}: symbolic links in a sandbox are not followed",
                        query.path
                    ),
                ),
                Some(libc::EINVAL) => ApiError::bad_request(format!(
                    "path: {} is not a regular file of the task's",
                    query.path
                )),
                _ => ApiError::internal(format!("opening {}: {e}", query.path)),
            })?;
        let size = file
            .metadata()
            .map_err(|e| ApiError::internal(format!("reading {}: {e}", query.path)))?
            .len();
        let Some(offset) = offset else {
            return Ok(json!({"data": "", "offset": size}));
        };
        let length = query
            .length
            .unwrap_or(FILES_READ_MAX_BYTES)
            .min(FILES_READ_MAX_BYTES)
            .min(size.saturating_sub(offset));
        let mut data = vec![0u8; length as usize];
        let mut read = 0;
        while read < data.len() {
            use std::os::unix::fs::FileExt;
            match file.read_at(&mut data[read..], offset + read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ApiError::internal(format!("reading {}: {e}", query.path))),
            }
        }
        data.truncate(read);
        // A character cut at the page's end is left for the next page, so `offset` plus the
        // bytes of `data` is where the next read starts (bytes that are no UTF-8 at all
        // show as U+FFFD).
        if let Err(e) = std::str::from_utf8(&data) {
            if e.error_len().is_none() && e.valid_up_to() > 0 {
                data.truncate(e.valid_up_to());
            }
        }
        Ok(json!({"data": String::from_utf8_lossy(&data), "offset": offset}))
    }
}

fn live_count(framework: &Value) -> usize {
    framework["executors"].as_array().map_or(0, Vec::len)
}

#[derive(Deserialize)]
pub struct FilesQuery {
    pub path: String,
    pub offset: Option<i64>,
    pub length: Option<u64>,
}

/// `/files/browse.json`'s query: the directory, by its real or Mesos's virtual path.
#[derive(Deserialize)]
pub struct BrowseQuery {
    pub path: String,
}

/// What `/files/browse.json` answers: the entries (Mesos's shape, by path), and whether
/// some were left out (`BROWSE_ENTRIES_MAX`).
pub struct Browse {
    /// `{path, size, mode, mtime, nlink, uid, gid}` each, by path.
    pub entries: Vec<Value>,
    /// The directory held more than `BROWSE_ENTRIES_MAX` entries.
    pub truncated: bool,
}

/// User and group names by id, looked up once per listing.
#[derive(Default)]
struct Names {
    users: BTreeMap<u32, String>,
    groups: BTreeMap<u32, String>,
}

impl Names {
    /// The user's name, or its id as text when it has none on this host (as Mesos does).
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |user| user.name)
            })
            .clone()
    }

    /// The group's name, or its id as text.
    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .ok()
                    .flatten()
                    .map_or_else(|| gid.to_string(), |group| group.name)
            })
            .clone()
    }
}

/// One entry as Mesos's `/files/browse.json` shows it.
fn file_info(path: &str, metadata: &std::fs::Metadata, names: &mut Names) -> Value {
    use std::os::unix::fs::MetadataExt;
    json!({
        "path": path,
        "size": metadata.size(),
        "mode": mode_string(metadata),
        "mtime": metadata.mtime(),
        "nlink": metadata.nlink(),
        "uid": names.user(metadata.uid()),
        "gid": names.group(metadata.gid()),
    })
}

/// The type and permissions as `ls -l` writes them (`drwxr-xr-x`, `-rw-r--r--`), as Mesos
/// shows them (no setuid, setgid or sticky letters).
fn mode_string(metadata: &std::fs::Metadata) -> String {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let kind = metadata.file_type();
    let type_letter = if kind.is_dir() {
        'd'
    } else if kind.is_symlink() {
        'l'
    } else if kind.is_char_device() {
        'c'
    } else if kind.is_block_device() {
        'b'
    } else if kind.is_fifo() {
        'p'
    } else if kind.is_socket() {
        's'
    } else {
        '-'
    };
    let mode = metadata.mode();
    let mut text = String::with_capacity(10);
    text.push(type_letter);
    for (bit, letter) in [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ] {
        text.push(if mode & bit != 0 { letter } else { '-' });
    }
    text
}

/// A task's log file: `stdout`, `stderr`, or one of their rotated files (`stdout.3`).
fn is_log_name(name: &str) -> bool {
    ["stdout", "stderr"].iter().any(|stream| {
        name == *stream
            || name
                .strip_prefix(stream)
                .and_then(|n| n.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The part of `path` below `tasks_dir` and its parts, when it is under a task's directory
/// (a valid task id first) with no empty, `.` or `..` part.
fn task_parts<'p>(tasks_dir: &Path, path: &'p str) -> Option<(&'p str, Vec<&'p str>)> {
    let relative = path.strip_prefix(&format!("{}/", tasks_dir.display()))?;
    let parts: Vec<&str> = relative.split('/').collect();
    let clean = parts
        .iter()
        .all(|p| !p.is_empty() && *p != "." && *p != "..");
    (clean && super::valid_task_id(parts[0])).then_some((relative, parts))
}

/// The part of `path` below `tasks_dir` when it names a directory a caller may list: a
/// task's directory (then `true`: only its logs and `sandbox` are shown) or one under its
/// `sandbox/`.
fn browsable_path(tasks_dir: &Path, path: &str) -> Result<(String, bool), ApiError> {
    let refused = || {
        ApiError::new(
            403,
            "forbidden",
            format!("path: {path} cannot be listed: only a task's directory (the `directory` of /state: its logs and sandbox) and what is under its sandbox directory"),
        )
    };
    let (relative, parts) = task_parts(tasks_dir, path).ok_or_else(refused)?;
    match parts.as_slice() {
        [_] => Ok((relative.to_string(), true)),
        [_, "sandbox", ..] => Ok((relative.to_string(), false)),
        _ => Err(refused()),
    }
}

/// The part of `path` below `tasks_dir` when it names something a caller may read: a
/// task's `stdout`/`stderr` (or `stdout.N`) or anything under its `sandbox/`.
fn readable_path(tasks_dir: &Path, path: &str) -> Result<String, ApiError> {
    let refused = || {
        ApiError::new(
            403,
            "forbidden",
            format!("path: {path} is not readable: only a task's stdout, stderr (and their rotated files) and what is under its sandbox directory (the `directory` of /state)"),
        )
    };
    let (relative, parts) = task_parts(tasks_dir, path).ok_or_else(refused)?;
    let allowed = match parts.as_slice() {
        [_, name] => is_log_name(name),
        [_, "sandbox", _, ..] => true,
        _ => false,
    };
    if allowed {
        Ok(relative.to_string())
    } else {
        Err(refused())
    }
}

/// Opens `relative` for reading below `dir` without following any symbolic link and
/// without leaving `dir` (`openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`); a FIFO
/// does not block the open.
fn open_beneath(dir: &Path, relative: &str) -> std::io::Result<std::fs::File> {
    let path_fd = path_beneath(dir, relative, false)?;
    // SAFETY: fstat fills a zeroed stat for a valid fd.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(path_fd.as_raw_fd(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // A hard link to a file elsewhere on the host (a task could make one where hard links
    // are not protected) is not the task's file.
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG || stat.st_nlink != 1 {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // Opened for reading through the very file found above.
    std::fs::File::open(format!("/proc/self/fd/{}", path_fd.as_raw_fd()))
}

/// The entries of the directory `relative` below `dir`, found as `open_beneath` finds a
/// file (no symbolic link followed, `dir` never left; ENOTDIR for anything but a
/// directory). The entries' metadata is read relative to that very directory.
fn read_dir_beneath(dir: &Path, relative: &str) -> std::io::Result<std::fs::ReadDir> {
    let path_fd = path_beneath(dir, relative, true)?;
    std::fs::read_dir(format!("/proc/self/fd/{}", path_fd.as_raw_fd()))
}

/// An `O_PATH` descriptor of `relative` below `dir` (nothing of it opened yet: a device's
/// driver is not called), resolved with `openat2` and `RESOLVE_BENEATH |
/// RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`; with `directory`, only a directory.
fn path_beneath(dir: &Path, relative: &str, directory: bool) -> std::io::Result<OwnedFd> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let dir_c = CString::new(dir.as_os_str().as_bytes())?;
    let path_c = CString::new(relative)?;
    // SAFETY: a plain open of a directory path; the fd is owned below.
    let dir_fd = unsafe {
        libc::open(
            dir_c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir_fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dir_fd was just opened and is owned only here.
    let dir_fd = unsafe { OwnedFd::from_raw_fd(dir_fd) };
    // SAFETY: open_how is plain integers (non-exhaustive: built from zeroes).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    // O_PATH: nothing of the file is opened yet (a device's driver is not called) until the
    // caller knows what it is.
    let only_directory = if directory { libc::O_DIRECTORY } else { 0 };
    how.flags = (libc::O_PATH | libc::O_CLOEXEC | only_directory) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: openat2 with a valid dir fd, a NUL-terminated path and a filled open_how of
    // the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir_fd.as_raw_fd(),
            path_c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_logs_and_the_working_dir_are_readable() {
        let tasks = Path::new("/var/lib/dcos-rs/agent/tasks");
        for ok in [
            "/var/lib/dcos-rs/agent/tasks/t1/stdout",
            "/var/lib/dcos-rs/agent/tasks/t1/stderr.3",
            "/var/lib/dcos-rs/agent/tasks/f.t-1/sandbox/out/result.txt",
        ] {
            assert!(readable_path(tasks, ok).is_ok(), "{ok}");
        }
        for refused in [
            "/var/lib/dcos-rs/agent/tasks/t1/task.json",
            "/var/lib/dcos-rs/agent/tasks/t1/shim.log",
            "/var/lib/dcos-rs/agent/tasks/t1/stdout.x",
            "/var/lib/dcos-rs/agent/tasks/t1/sandbox",
            "/var/lib/dcos-rs/agent/tasks/t1/sandbox/../task.json",
            "/var/lib/dcos-rs/agent/tasks/../agent.toml",
            "/var/lib/dcos-rs/agent/tasks/t1//stdout",
            "/etc/shadow",
            "/var/lib/dcos-rs/agent/tasksx/t1/stdout",
        ] {
            let error = readable_path(tasks, refused).unwrap_err();
            assert_eq!(error.code, "forbidden", "{refused}");
        }
    }

    #[test]
    fn only_a_tasks_directory_and_what_is_under_its_sandbox_can_be_listed() {
        let tasks = Path::new("/var/lib/dcos-rs/agent/tasks");
        assert_eq!(
            browsable_path(tasks, "/var/lib/dcos-rs/agent/tasks/t1").unwrap(),
            ("t1".to_string(), true)
        );
        assert_eq!(
            browsable_path(tasks, "/var/lib/dcos-rs/agent/tasks/t1/sandbox/out").unwrap(),
            ("t1/sandbox/out".to_string(), false)
        );
        for refused in [
            "/var/lib/dcos-rs/agent/tasks",
            "/var/lib/dcos-rs/agent/tasks/t1/other",
            "/var/lib/dcos-rs/agent/tasks/t1/sandbox/../..",
            "/var/lib/dcos-rs/agent/tasks/t1//sandbox",
            "/var/lib/dcos-rs/agent/tasks/../agent",
            "/etc",
        ] {
            let error = browsable_path(tasks, refused).unwrap_err();
            assert_eq!(error.code, "forbidden", "{refused}");
        }
        for (name, log) in [
            ("stdout", true),
            ("stderr.12", true),
            ("stdout.", false),
            ("task.json", false),
        ] {
            assert_eq!(is_log_name(name), log, "{name}");
        }
    }

    #[test]
    fn a_listing_follows_no_symbolic_link_and_shows_modes_as_ls_does() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let tasks = root.path().join("tasks");
        let sandbox = tasks.join("t1/sandbox");
        std::fs::create_dir_all(sandbox.join("dir")).unwrap();
        std::fs::write(sandbox.join("file"), "x").unwrap();
        std::fs::set_permissions(sandbox.join("file"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::set_permissions(sandbox.join("dir"), std::fs::Permissions::from_mode(0o750))
            .unwrap();
        std::os::unix::fs::symlink(root.path(), sandbox.join("link")).unwrap();
        let mut listed: Vec<(String, String)> = read_dir_beneath(&tasks, "t1/sandbox")
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let mode = mode_string(&entry.metadata().unwrap());
                (entry.file_name().to_string_lossy().into_owned(), mode)
            })
            .collect();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("dir".to_string(), "drwxr-x---".to_string()),
                ("file".to_string(), "-rw-r--r--".to_string()),
                ("link".to_string(), "lrwxrwxrwx".to_string()),
            ]
        );
        let error = |relative: &str| {
            read_dir_beneath(&tasks, relative)
                .unwrap_err()
                .raw_os_error()
        };
        assert_eq!(error("t1/sandbox/link"), Some(libc::ELOOP));
        assert_eq!(error("t1/sandbox/file"), Some(libc::ENOTDIR));
        assert_eq!(error("t1/sandbox/missing"), Some(libc::ENOENT));
        assert!(read_dir_beneath(&tasks, "../tasks").is_err());
    }

    #[test]
    fn no_symbolic_link_is_followed_out_of_a_sandbox() {
        let root = tempfile::tempdir().unwrap();
        let secret = root.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        let tasks = root.path().join("tasks");
        let sandbox = tasks.join("t1/sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(sandbox.join("ok.txt"), "mine").unwrap();
        std::os::unix::fs::symlink(&secret, sandbox.join("link")).unwrap();
        std::os::unix::fs::symlink(root.path(), sandbox.join("dir")).unwrap();
        let read = |relative: &str| {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut open_beneath(&tasks, relative)?, &mut text)?;
            Ok::<_, std::io::Error>(text)
        };
        assert_eq!(read("t1/sandbox/ok.txt").unwrap(), "mine");
        assert_eq!(
            read("t1/sandbox/link").unwrap_err().raw_os_error(),
            Some(libc::ELOOP)
        );
        assert!(read("t1/sandbox/dir/secret").is_err());
        assert!(read("../secret").is_err());
        // A second name of a host file, and what is not a regular file, are refused.
        std::fs::hard_link(&secret, sandbox.join("hard")).unwrap();
        assert_eq!(
            read("t1/sandbox/hard").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        nix::unistd::mkfifo(&sandbox.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_eq!(
            read("t1/sandbox/fifo").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
        assert_eq!(
            read("t1/sandbox").unwrap_err().raw_os_error(),
            Some(libc::EINVAL)
        );
    }
}
