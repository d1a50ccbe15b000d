//! `dcos-rs __check-exec`: the first process of a COMMAND health check of a container task.
//!
//! It enters the running container as its own processes live there, then runs the check:
//! it waits at a gate until the agent has moved it into the task's cgroup, joins the
//! namespaces of the container's init (the user namespace last), takes the init's root
//! directory and the task's working directory, keeps no capability outside the init's
//! bounding set, becomes the task's user, sets no_new_privs, installs the task's seccomp
//! filter, and runs the check in a child (a pid namespace applies to children only), whose
//! exit status it passes on.
//!
//! It runs single-threaded, dispatched in `main` before any runtime exists: only a process
//! with one thread may join a mount or user namespace. Deliberately absent: it creates no
//! namespace, mount or cgroup, and it never runs the check half inside: any step that fails
//! ends it with status 126 and says which on stderr.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::MetadataExt;

/// The hidden subcommand (`main` dispatches it).
pub const ENTRY: &str = "__check-exec";

/// Exit status when nothing could run (bad arguments, the agent went away), as a shell's.
const EXIT_NOT_RUN: i32 = 127;
/// Exit status when the container could not be entered, as a shell's "cannot execute".
const EXIT_CANNOT_ENTER: i32 = 126;

/// Open files of a container's process (`RLIMIT_NOFILE`, soft and hard), as
/// `bundle::oci_config` gives the task; keep the two in step.
const TASK_OPEN_FILES_MAX: libc::rlim_t = 1024;

/// The namespaces of a container's init, in the order they are joined. The user namespace
/// comes last (as nsenter joins it): the others are joined with the host root's privileges,
/// which joining the task's user namespace gives up.
const NAMESPACES: &[(&str, libc::c_int)] = &[
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("mnt", libc::CLONE_NEWNS),
    ("user", libc::CLONE_NEWUSER),
];

/// `_LINUX_CAPABILITY_VERSION_3` of <linux/capability.h>: 64-bit sets in two halves.
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`: one 32-bit half of each set.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// What the agent tells a check process (`dcos-rs __check-exec <task-pid> <gate-fd> <uid>
/// <gid> <cgroup-path> <cwd> [-e KEY=VALUE]... -- <argv...>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckExecArgs {
    /// The container's init as the host sees it (the task's `task.pid`).
    pub task_pid: i32,
    /// Read end of the gate: one byte arrives once the agent has put this process into the
    /// task's cgroup; nothing of the check runs before.
    pub gate_fd: i32,
    /// The task's user and group, as ids inside its user namespace if it has one.
    pub uid: u32,
    pub gid: u32,
    /// The task's cgroup (`ShimSpec::cgroup_path`): the init must be in it, so a pid reused
    /// after the task ended is never entered.
    pub cgroup_path: String,
    /// The task's working directory, inside the container.
    pub cwd: String,
    /// The check's own deadline (seconds): at it this process's group ends (this process,
    /// the check and what it started), also when the agent that started it is gone.
    pub deadline_s: Option<u32>,
    /// The task's environment (`KEY=VALUE`), given to the check's exec only: this process
    /// starts as root with an empty one.
    pub env: Vec<String>,
    /// What to run there (`/bin/sh -c <command>`).
    pub argv: Vec<String>,
}

impl CheckExecArgs {
    /// The whole command line after the binary, the subcommand first.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            ENTRY.to_string(),
            self.task_pid.to_string(),
            self.gate_fd.to_string(),
            self.uid.to_string(),
            self.gid.to_string(),
            self.cgroup_path.clone(),
            self.cwd.clone(),
        ];
        args.extend(crate::shim::deadline_args(self.deadline_s));
        args.extend(crate::shim::env_args(&self.env));
        args.push("--".to_string());
        args.extend(self.argv.iter().cloned());
        args
    }

    /// Parses what follows the subcommand.
    pub fn parse(args: &[OsString]) -> Result<CheckExecArgs, String> {
        let usage = || {
            format!(
                "usage: dcos-rs {ENTRY} <task-pid> <gate-fd> <uid> <gid> <cgroup-path> <cwd> [-t SECONDS] [-e KEY=VALUE]... -- <argv...>"
            )
        };
        let [pid, gate, uid, gid, cgroup_path, cwd, rest @ ..] = args else {
            return Err(usage());
        };
        let text = |a: &OsString| a.to_str().map(str::to_string).ok_or_else(usage);
        let (pid, gate, uid, gid) = (text(pid)?, text(gate)?, text(uid)?, text(gid)?);
        let (cgroup_path, cwd) = (text(cgroup_path)?, text(cwd)?);
        let (deadline_s, rest) = crate::shim::split_deadline(rest).ok_or_else(usage)?;
        let (env, argv) = crate::shim::split_env_args(rest).ok_or_else(usage)?;
        let utf8 = |c: std::ffi::CString| c.into_string().map_err(|_| usage());
        let env = env
            .into_iter()
            .map(utf8)
            .collect::<Result<Vec<String>, String>>()?;
        let argv = argv
            .into_iter()
            .map(utf8)
            .collect::<Result<Vec<String>, String>>()?;
        if argv.is_empty() {
            return Err(usage());
        }
        let task_pid: i32 = pid.parse().map_err(|_| usage())?;
        let gate_fd: i32 = gate.parse().map_err(|_| usage())?;
        if task_pid <= 0 || gate_fd < 0 {
            return Err(usage());
        }
        Ok(CheckExecArgs {
            task_pid,
            gate_fd,
            uid: uid.parse().map_err(|_| usage())?,
            gid: gid.parse().map_err(|_| usage())?,
            cgroup_path,
            cwd,
            deadline_s,
            env,
            argv,
        })
    }
}

/// Runs the check described by `args` (what follows the subcommand) inside the container;
/// returns the exit status to end with: the check's own, 128 + the signal that ended it, or
/// 126/127 when it could not run.
pub fn run(args: &[OsString]) -> i32 {
    let args = match CheckExecArgs::parse(args) {
        Ok(args) => args,
        Err(usage) => {
            eprintln!("dcos-rs: {usage}");
            return EXIT_NOT_RUN;
        }
    };
    if let Some(seconds) = args.deadline_s {
        // No check outlives its deadline, agent or not, whatever it does with its signals.
        crate::shim::arm_group_deadline(seconds);
    }
    if !wait_for_gate(args.gate_fd) {
        eprintln!("dcos-rs: the agent went away before the check was in the task's cgroup");
        return EXIT_NOT_RUN;
    }
    match enter_and_run(&args) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("dcos-rs: {error}");
            EXIT_CANNOT_ENTER
        }
    }
}

/// Blocks until the gate's byte arrives (true) or its write end is closed without one.
fn wait_for_gate(fd: i32) -> bool {
    let mut byte = [0u8; 1];
    let n = loop {
        // SAFETY: reads one byte into a local buffer from the descriptor the agent passed.
        let n = unsafe { libc::read(fd, byte.as_mut_ptr().cast(), 1) };
        if n >= 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            break n;
        }
    };
    // SAFETY: the gate is ours alone; nothing else uses the descriptor.
    unsafe { libc::close(fd) };
    n == 1
}

fn enter_and_run(args: &CheckExecArgs) -> Result<i32, String> {
    let argv = args
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("argument {a:?} contains NUL")))
        .collect::<Result<Vec<CString>, String>>()?;
    let cwd = CString::new(args.cwd.as_str())
        .map_err(|_| format!("working directory {:?} contains NUL", args.cwd))?;
    // Compiled before anything changes: a profile that cannot be built stops the check early.
    let programs = crate::seccomp::default_profile()?;
    let target = Target::open(args.task_pid, &args.cgroup_path)?;
    let bounding = target.bounding;
    // While still the host's root: lowering is always allowed, raising a hard limit needs
    // CAP_SYS_RESOURCE in the host's user namespace.
    limit_open_files()?;
    target.enter()?;
    // SAFETY: chdir reads a NUL-terminated path.
    if unsafe { libc::chdir(cwd.as_ptr()) } != 0 {
        return Err(format!(
            "entering the working directory {}: {}",
            args.cwd,
            std::io::Error::last_os_error()
        ));
    }
    drop_privileges(args.uid, args.gid, bounding)?;
    if prctl(libc::PR_SET_NO_NEW_PRIVS, 1) != 0 {
        return Err(format!(
            "setting no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The Rust runtime ignores SIGPIPE, and an ignored signal stays ignored across exec: the
    // check gets the default, as the task's processes have it.
    // SAFETY: resets one signal's disposition.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    crate::seccomp::install(&programs)?;
    let env = args
        .env
        .iter()
        .map(|e| CString::new(e.as_str()).map_err(|_| format!("variable {e:?} contains NUL")))
        .collect::<Result<Vec<CString>, String>>()?;
    // The check is the first process of this one in the task's pid namespace.
    crate::shim::run_in_child(&argv, &env)
}

/// The task's init, held open before anything is joined: its namespaces, its root directory
/// and its capability bounding set.
struct Target {
    /// The init's namespaces this process is not in already, in `NAMESPACES` order.
    namespaces: Vec<(&'static str, libc::c_int, File)>,
    /// The init's root directory: the container's root filesystem.
    root: File,
    /// The init's capability bounding set: the most the check may hold.
    bounding: u64,
}

impl Target {
    /// Opens what the check joins, all through one `/proc/<pid>` directory: if the init ends
    /// and its pid is reused meanwhile, the reads fail instead of reaching another process.
    fn open(pid: i32, cgroup_path: &str) -> Result<Target, String> {
        let proc_dir = File::open(format!("/proc/{pid}"))
            .map_err(|e| format!("the task's process {pid}: {e} (has the task ended?)"))?;
        let cgroups = read_at(&proc_dir, pid, "cgroup")?;
        if !in_cgroup(&cgroups, cgroup_path) {
            return Err(format!(
                "process {pid} is not in the task's cgroup {cgroup_path} (has the task ended?)"
            ));
        }
        let status = read_at(&proc_dir, pid, "status")?;
        let bounding = capability_bounding(&status)
            .ok_or_else(|| format!("no capability bounding set in /proc/{pid}/status"))?;
        let mut namespaces = Vec::new();
        for &(name, flag) in NAMESPACES {
            let theirs = open_at(&proc_dir, pid, &format!("ns/{name}"), libc::O_RDONLY)?;
            let their_id = theirs
                .metadata()
                .map_err(|e| format!("/proc/{pid}/ns/{name}: {e}"))?;
            let our_id = std::fs::metadata(format!("/proc/self/ns/{name}"))
                .map_err(|e| format!("/proc/self/ns/{name}: {e}"))?;
            // Joining one's own user namespace is refused (EINVAL); the others would be no-ops.
            if (their_id.dev(), their_id.ino()) != (our_id.dev(), our_id.ino()) {
                namespaces.push((name, flag, theirs));
            }
        }
        // A container's init has a mount and a pid namespace of its own: a pid shared with
        // this host's (reused after the task ended, perhaps by this very process once it
        // joined the task's cgroup) is never taken for it.
        let own = |wanted: &str| namespaces.iter().any(|(name, _, _)| *name == wanted);
        if pid == std::process::id() as i32 || !own("mnt") || !own("pid") {
            return Err(format!(
                "process {pid} shares this host's mount or pid namespace: not the task's container (has the task ended?)"
            ));
        }
        let root = open_at(&proc_dir, pid, "root", libc::O_RDONLY | libc::O_DIRECTORY)?;
        Ok(Target {
            namespaces,
            root,
            bounding,
        })
    }

    /// Joins the namespaces and takes the init's root as this process's root and working
    /// directory. Joining a mount namespace already sets both to that namespace's root (the
    /// container's root filesystem once its init has pivoted into it); the init's own root
    /// is taken all the same, however it got there.
    fn enter(self) -> Result<(), String> {
        let (user, others): (Vec<_>, Vec<_>) = self
            .namespaces
            .iter()
            .partition(|entry| entry.1 == libc::CLONE_NEWUSER);
        for (name, flag, file) in others {
            join_namespace(name, *flag, file)?;
        }
        // SAFETY: fchdir to a directory descriptor we hold, then chroot to ".".
        let rooted =
            unsafe { libc::fchdir(self.root.as_raw_fd()) == 0 && libc::chroot(c".".as_ptr()) == 0 };
        if !rooted {
            return Err(format!(
                "entering the container's root directory: {}",
                std::io::Error::last_os_error()
            ));
        }
        for (name, flag, file) in user {
            join_namespace(name, *flag, file)?;
        }
        Ok(())
    }
}

fn join_namespace(name: &str, flag: libc::c_int, file: &File) -> Result<(), String> {
    // SAFETY: setns takes a namespace descriptor we hold open and its type.
    if unsafe { libc::setns(file.as_raw_fd(), flag) } != 0 {
        return Err(format!(
            "entering the task's {name} namespace: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Opens `path` under the `/proc/<pid>` directory `dir`.
fn open_at(dir: &File, pid: i32, path: &str, flags: libc::c_int) -> Result<File, String> {
    let c_path = CString::new(path).map_err(|_| format!("{path:?} contains NUL"))?;
    // SAFETY: openat reads a NUL-terminated path relative to a directory descriptor we hold.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c_path.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(format!(
            "opening /proc/{pid}/{path}: {} (has the task ended?)",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: openat returned a new descriptor, owned by the File from here on.
    Ok(unsafe { File::from_raw_fd(fd) })
}

fn read_at(dir: &File, pid: i32, path: &str) -> Result<String, String> {
    let mut text = String::new();
    open_at(dir, pid, path, libc::O_RDONLY)?
        .read_to_string(&mut text)
        .map_err(|e| format!("reading /proc/{pid}/{path}: {e}"))?;
    Ok(text)
}

/// True if a `/proc/<pid>/cgroup` listing puts the process in `cgroup_path` in some
/// hierarchy (`<id>:<controllers>:<path>` lines).
fn in_cgroup(proc_cgroup: &str, cgroup_path: &str) -> bool {
    !cgroup_path.trim_matches('/').is_empty()
        && proc_cgroup.lines().any(|line| {
            line.splitn(3, ':')
                .nth(2)
                .is_some_and(|path| path.ends_with(cgroup_path))
        })
}

/// The `CapBnd:` mask of a `/proc/<pid>/status`.
fn capability_bounding(status: &str) -> Option<u64> {
    let value = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(value.trim(), 16).ok()
}

fn limit_open_files() -> Result<(), String> {
    let limit = libc::rlimit {
        rlim_cur: TASK_OPEN_FILES_MAX,
        rlim_max: TASK_OPEN_FILES_MAX,
    };
    // SAFETY: setrlimit reads the struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(format!(
            "limiting open files: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Becomes the task's user with no more capabilities than the task's processes have once
/// they exec: the bounding set cut to the init's, no ambient or inheritable ones, and
/// permitted and effective ones only for the task's root (uid 0), within that bounding set.
fn drop_privileges(uid: u32, gid: u32, bounding: u64) -> Result<(), String> {
    let os_error = std::io::Error::last_os_error;
    for cap in 0..64u32 {
        if bounding & (1u64 << cap) != 0 {
            continue;
        }
        if prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap)) != 0 {
            let error = os_error();
            // Past the kernel's last capability: the rest do not exist either.
            if error.raw_os_error() == Some(libc::EINVAL) {
                break;
            }
            return Err(format!("dropping capability {cap}: {error}"));
        }
    }
    // Kernels before 4.3 have no ambient set (EINVAL): nothing to clear there.
    let _ = prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    let groups: [libc::gid_t; 1] = [gid];
    // SAFETY: setgroups reads one gid; setresgid/setresuid take integers. One thread: the
    // ids change for the whole process.
    unsafe {
        if libc::setgroups(1, groups.as_ptr()) != 0 {
            return Err(format!("setting groups to [{gid}]: {}", os_error()));
        }
        if libc::setresgid(gid, gid, gid) != 0 {
            return Err(format!("switching to gid {gid}: {}", os_error()));
        }
        if libc::setresuid(uid, uid, uid) != 0 {
            return Err(format!("switching to uid {uid}: {}", os_error()));
        }
    }
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut current = [CapData::default(); 2];
    // SAFETY: capget writes two data structs for version 3; both outlive the call.
    let got = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut header as *mut CapHeader,
            current.as_mut_ptr(),
        )
    };
    if got != 0 {
        return Err(format!("reading capabilities: {}", os_error()));
    }
    let permitted = (u64::from(current[1].permitted) << 32) | u64::from(current[0].permitted);
    let keep = if uid == 0 { permitted & bounding } else { 0 };
    let halves = [keep as u32, (keep >> 32) as u32];
    let wanted = halves.map(|half| CapData {
        effective: half,
        permitted: half,
        inheritable: 0,
    });
    header.version = LINUX_CAPABILITY_VERSION_3;
    header.pid = 0;
    // SAFETY: capset reads the header and two data structs, which outlive the call.
    let set = unsafe {
        libc::syscall(
            libc::SYS_capset,
            &mut header as *mut CapHeader,
            wanted.as_ptr(),
        )
    };
    if set != 0 {
        return Err(format!("setting capabilities: {}", os_error()));
    }
    Ok(())
}

/// `prctl(option, arg, 0, 0, 0)`: some options refuse anything but 0 in the unused arguments.
fn prctl(option: libc::c_int, arg: libc::c_ulong) -> libc::c_int {
    let unused: libc::c_ulong = 0;
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(option, arg, unused, unused, unused) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> CheckExecArgs {
        CheckExecArgs {
            task_pid: 4242,
            gate_fd: 7,
            uid: 1000,
            gid: 1001,
            cgroup_path: "/dcos-rs/web.1".into(),
            cwd: "/app".into(),
            deadline_s: Some(25),
            env: vec!["PORT0=31000".into(), "EMPTY=".into(), "A=-e".into()],
            argv: vec!["/bin/sh".into(), "-c".into(), "test -f /ok -- x".into()],
        }
    }

    fn os(args: &[String]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_survive_the_command_line() {
        let line = args().to_args();
        assert_eq!(line[0], ENTRY);
        assert_eq!(CheckExecArgs::parse(&os(&line[1..])), Ok(args()));
    }

    #[test]
    fn malformed_arguments_are_refused() {
        let good = args().to_args();
        let cases: Vec<(&str, Vec<String>)> = vec![
            ("no command", good[1..8].to_vec()),
            ("no separator", {
                let mut line = good[1..].to_vec();
                line[6] = "x".into();
                line
            }),
            ("bad pid", {
                let mut line = good[1..].to_vec();
                line[0] = "-1".into();
                line
            }),
            ("bad uid", {
                let mut line = good[1..].to_vec();
                line[2] = "root".into();
                line
            }),
            ("too short", good[1..4].to_vec()),
        ];
        for (what, line) in cases {
            assert!(
                CheckExecArgs::parse(&os(&line)).is_err(),
                "{what}: {line:?}"
            );
        }
    }

    #[test]
    fn the_init_must_be_in_the_task_cgroup() {
        let v1 = "12:pids:/dcos-rs/web.1\n4:memory:/dcos-rs/web.1\n1:name=systemd:/user.slice\n";
        let v2 = "0::/dcos-rs/web.1\n";
        let cases = [
            (v1, "/dcos-rs/web.1", true),
            (v2, "/dcos-rs/web.1", true),
            (v2, "/dcos-rs/web.2", false),
            ("0::/dcos-rs/xweb.1\n", "/web.1", false),
            ("0::/\n", "/", false),
            (v1, "", false),
        ];
        for (listing, path, expected) in cases {
            assert_eq!(in_cgroup(listing, path), expected, "{path} in {listing:?}");
        }
    }

    #[test]
    fn the_bounding_set_is_read_from_status() {
        let status = "Name:\tsleep\nCapInh:\t0000000000000000\nCapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n";
        assert_eq!(capability_bounding(status), Some(0xa804_25fb));
        assert_eq!(capability_bounding("Name:\tsleep\n"), None);
    }
}
