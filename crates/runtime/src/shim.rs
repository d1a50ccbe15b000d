//! `dcos-rs __shim <task-dir>`: the supervisor of one task.
//!
//! It runs in its own single-threaded process (started by the agent, dispatched in `main`
//! before any tokio runtime exists, in its own session so it outlives the agent), creates the
//! container through libcontainer (or a plain process in cgroups when the task has no image),
//! copies the task's stdout/stderr into rotated files in the sandbox, forwards a kill request
//! (SIGTERM to the shim) as the image's StopSignal (default SIGTERM), then SIGKILL after the
//! grace period, and writes `exit.json` once the task is gone. A bridged task's network
//! namespace, veth and port mappings are set up before its container and removed after it.
//! The shim never talks to the agent other than through the task directory.

use crate::bundle::oci_config;
use crate::cgroups;
use crate::logs::{RotatingFile, Stream};
use crate::network;
use crate::task_dir::{write_atomic, write_json_atomic, ShimSpec, TaskDir, TaskExit};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Runs the shim for the task in `dir`; returns the shim's own exit code.
/// Set by a kill request (SIGTERM/SIGINT/SIGHUP): by a signal handler during start-up, so a
/// kill then is never lost, and by the wait loop afterwards; the wait loop acts on it.
static KILL_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn note_kill_request(_signal: libc::c_int) {
    KILL_REQUESTED.store(true, AtomicOrdering::SeqCst);
}

/// Catches kill requests from the first instruction on. A caught signal's handler is reset
/// by exec, so the workload still starts with default dispositions.
fn catch_early_kill_requests() {
    let action = SigAction::new(
        SigHandler::Handler(note_kill_request),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(signal, &action) };
    }
}

pub fn run(dir: &Path) -> i32 {
    catch_early_kill_requests();
    let dir = TaskDir::new(dir);
    // The agent records our pid right after it spawns us; written here too unless it is
    // there already, so an agent that died in between still finds us when it comes back.
    let pid = std::process::id() as i32;
    if TaskDir::read_pid(&dir.shim_pid()) != Some(pid) {
        if let Err(e) = write_atomic(&dir.shim_pid(), pid.to_string().as_bytes()) {
            eprintln!("shim: writing {}: {e}", dir.shim_pid().display());
            return 1;
        }
    }
    let spec = match dir.read_spec() {
        Ok(spec) => spec,
        Err(e) => {
            eprintln!("shim: reading task spec: {e}");
            return finish(&dir, start_failure(0, format!("reading task spec: {e}")));
        }
    };
    // Orphaned grandchildren of plain tasks come to us to be reaped.
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let exit = match supervise(&dir, &spec) {
        Ok(exit) => exit,
        Err(error) => {
            eprintln!("shim: task {} failed to start: {error}", spec.task_id);
            start_failure(spec.mem_limit_bytes, error)
        }
    };
    finish(&dir, exit)
}

fn finish(dir: &TaskDir, exit: TaskExit) -> i32 {
    match write_json_atomic(&dir.exit(), &exit) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shim: writing {}: {e}", dir.exit().display());
            1
        }
    }
}

fn start_failure(mem_limit_bytes: u64, error: String) -> TaskExit {
    TaskExit {
        exit_code: None,
        signal: None,
        oom_killed: false,
        kill_requested: false,
        mem_limit_bytes,
        start_error: Some(error),
        finished_at_ms: now_ms(),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the wait loop needs to know about the running task.
enum Running {
    Container {
        container: Box<Container>,
        pid: Pid,
    },
    Process {
        cgroup: Box<cgroups::TaskCgroup>,
        pid: Pid,
    },
}

impl Running {
    fn pid(&self) -> Pid {
        match self {
            Running::Container { pid, .. } | Running::Process { pid, .. } => *pid,
        }
    }

    fn signal(&self, signal: Signal) {
        match self {
            // Killing a pid namespace's init ends every process in it.
            Running::Container { pid, .. } => {
                let _ = kill(*pid, signal);
            }
            Running::Process { pid, cgroup } => {
                let _ = kill(Pid::from_raw(-pid.as_raw()), signal);
                if signal == Signal::SIGKILL {
                    cgroup.kill_all();
                }
            }
        }
    }
}

/// Runs the task on the bridge when it has a network of its own: attached before its
/// container exists (in the host's mount namespace, where the agent's sweep sees it),
/// detached once the task is gone, also when it failed to start.
fn supervise(dir: &TaskDir, spec: &ShimSpec) -> Result<TaskExit, String> {
    if let Some(network) = &spec.network {
        network::attach(network)?;
    }
    let result = supervise_task(dir, spec);
    if let Some(network) = &spec.network {
        network::detach(network);
    }
    result
}

fn supervise_task(dir: &TaskDir, spec: &ShimSpec) -> Result<TaskExit, String> {
    let (read_ends, stdout, stderr) = output_pipes()?;
    let running = match spec.image() {
        Some(_) => start_container(dir, spec, &spec.image_lowers(), stdout, stderr)?,
        None => start_process(spec, stdout, stderr)?,
    };
    // The log files are created while the task starts up (each file creation costs
    // 0.1-0.15 ms on the agent's disk here; until they exist the output waits in the
    // pipes), then the task's pid, which tells the agent the task runs.
    let recorded = log_streams(dir, spec, read_ends).and_then(|streams| {
        write_atomic(
            &dir.task_pid(),
            running.pid().as_raw().to_string().as_bytes(),
        )
        .map_err(|e| format!("writing task pid: {e}"))?;
        Ok(streams)
    });
    let mut streams = match recorded {
        Ok(streams) => streams,
        Err(e) => {
            // Without its logs, or its pid on record for the agent to adopt it later: end
            // it now rather than leave a task nobody manages.
            running.signal(Signal::SIGKILL);
            let _ = wait_for_exit(&running, &|| 0, Signal::SIGKILL, &mut []);
            cleanup(running, spec);
            return Err(e);
        }
    };
    let stop_signal = Signal::try_from(spec.stop_signal).unwrap_or(Signal::SIGTERM);
    let (status, kill_requested) = wait_for_exit(
        &running,
        &|| dir.kill_grace_ms(spec.kill_grace_ms),
        stop_signal,
        &mut streams,
    );
    let cgroup_path = spec.cgroup_path.clone();
    let oom_killed = cgroups::oom_kill_count(&cgroup_path) > 0;
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (Some(code), None),
        WaitStatus::Signaled(_, signal, _) => (Some(128 + signal as i32), Some(signal as i32)),
        _ => (None, None),
    };
    cleanup(running, spec);
    // Every writer is gone now: what is left in the pipes is the end of the log (bounded,
    // in case a stray writer survived).
    for stream in &mut streams {
        stream.drain(64);
    }
    Ok(TaskExit {
        exit_code,
        signal,
        oom_killed,
        kill_requested,
        mem_limit_bytes: spec.mem_limit_bytes,
        start_error: None,
        finished_at_ms: now_ms(),
    })
}

/// Pipes for the task's stdout and stderr: the write ends go to the task, the read ends
/// (stdout's first) to `log_streams`.
fn output_pipes() -> Result<(Vec<OwnedFd>, OwnedFd, OwnedFd), String> {
    let mut read_ends = Vec::new();
    let mut write_ends = Vec::new();
    for _ in 0..2 {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("creating output pipe: {e}"))?;
        read_ends.push(read_end);
        write_ends.push(write_end);
    }
    let stderr = write_ends.pop().expect("two pipes");
    let stdout = write_ends.pop().expect("two pipes");
    Ok((read_ends, stdout, stderr))
}

/// The shim's pumps from the output pipes' read ends (stdout's, stderr's) into rotating
/// files in the sandbox.
fn log_streams(
    dir: &TaskDir,
    spec: &ShimSpec,
    read_ends: Vec<OwnedFd>,
) -> Result<Vec<Stream>, String> {
    [dir.stdout(), dir.stderr()]
        .into_iter()
        .zip(read_ends)
        .map(|(path, read_end)| {
            let file = RotatingFile::open(&path, spec.log_max_bytes, spec.log_files_max)
                .map_err(|e| format!("opening {}: {e}", path.display()))?;
            Stream::new(read_end, file).map_err(|e| format!("output pipe: {e}"))
        })
        .collect()
}

/// The task's writable root: an overlay over the image's read-only layer directories,
/// mounted in a private mount namespace of the shim so it vanishes with the shim and the
/// container (no mount leaks on the host); a merged copy of the layers where overlayfs is
/// unavailable.
///
/// With a user namespace each lower layer is the store's directory through an idmapped mount
/// (the store's files stay as unpacked; the task sees them owned by its own root), and the
/// upper layer's root, which is the task's `/`, belongs to the task's root.
fn prepare_rootfs(dir: &TaskDir, spec: &ShimSpec, image_layers: &[PathBuf]) -> Result<(), String> {
    use nix::mount::{mount, MsFlags};
    use nix::sched::{unshare, CloneFlags};
    let rootfs = dir.rootfs();
    for d in [rootfs.clone(), dir.overlay_upper(), dir.overlay_work()] {
        std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    // What the task writes (a setuid file included) is out of other host users' reach. The
    // upper dir's own mode is the task's `/`, so its parent is the one closed.
    let overlay = dir.overlay_upper().parent().map(Path::to_path_buf);
    if let Some(overlay) = overlay {
        crate::task_dir::set_mode(&overlay, 0o700)
            .map_err(|e| format!("chmod 700 {}: {e}", overlay.display()))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| format!("unshare mount namespace: {e}"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| format!("making / private: {e}"))?;
    let mut lowers = match &spec.user_namespace {
        None => image_layers.to_vec(),
        Some(map) => {
            // libcontainer's init walks these paths as the task's (unprivileged) root.
            crate::userns::check_reachable(&rootfs)?;
            for source in spec.mounts.iter().filter_map(|m| m.source.as_ref()) {
                crate::userns::check_reachable(source)?;
            }
            let mut mapped_layers = Vec::new();
            for (i, layer) in image_layers.iter().enumerate() {
                let mapped = dir.overlay_lower().join(i.to_string());
                std::fs::create_dir_all(&mapped)
                    .map_err(|e| format!("creating {}: {e}", mapped.display()))?;
                crate::userns::idmapped_bind(layer, &mapped, *map)?;
                mapped_layers.push(mapped);
            }
            let root = Some(nix::unistd::Uid::from_raw(map.host_base));
            let root_group = Some(nix::unistd::Gid::from_raw(map.host_base));
            for d in [&rootfs, &dir.overlay_upper()] {
                nix::unistd::chown(d.as_path(), root, root_group)
                    .map_err(|e| format!("chown {}: {e}", d.display()))?;
            }
            mapped_layers
        }
    };
    if lowers.is_empty() {
        // An image without layers: overlayfs needs a lower layer all the same.
        let empty = dir.path.join("overlay/empty");
        std::fs::create_dir_all(&empty)
            .map_err(|e| format!("creating {}: {e}", empty.display()))?;
        lowers.push(empty);
    }
    // Absolute: the mount resolves them from the layers' directory (see `mount_overlay`).
    let absolute = |path: PathBuf| {
        std::path::absolute(&path).map_err(|e| format!("resolving {}: {e}", path.display()))
    };
    let (upper, work) = (
        absolute(dir.overlay_upper())?,
        absolute(dir.overlay_work())?,
    );
    let (lowerdir, relative_to) = overlay_lowerdir(&lowers);
    let options = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    let target = absolute(rootfs.clone())?;
    if let Err(e) = mount_overlay(&target, &options, relative_to.as_deref())? {
        eprintln!("shim: overlay mount failed ({e}), copying the image instead");
        crate::image::layers::flatten_layers(&lowers, &rootfs)?;
    }
    Ok(())
}

/// Mounts an overlay at `target` with `options`, whose `lowerdir` names are relative to
/// `directory` if one is given (the shim's working directory during the mount). The inner
/// error is a mount that did not happen (copy the layers instead); the outer one a working
/// directory that could not be restored.
///
/// `volatile` (Linux 5.10+): the upper layer is thrown away with the task, so overlayfs need
/// not sync it. Without it, freeing the overlay when the shim exits syncs the whole upper
/// filesystem (the agent's data dir's filesystem), once per task, however busy that
/// filesystem is (`perf` showed `ovl_sync_fs` -> `sync_filesystem` and ext4 discards on every
/// bench-runtime start). An older kernel refuses the option: mount without it.
fn mount_overlay(
    target: &Path,
    options: &str,
    directory: Option<&Path>,
) -> Result<Result<(), String>, String> {
    use nix::mount::{mount, MsFlags};
    if options.len() >= MOUNT_DATA_MAX_BYTES {
        return Ok(Err(format!(
            "the layers do not fit one mount's {MOUNT_DATA_MAX_BYTES}-byte options"
        )));
    }
    let previous = match directory {
        Some(directory) => {
            let entered = std::env::current_dir()
                .and_then(|previous| std::env::set_current_dir(directory).map(|()| previous));
            match entered {
                Ok(previous) => Some(previous),
                Err(e) => return Ok(Err(format!("entering {}: {e}", directory.display()))),
            }
        }
        None => None,
    };
    let mount_with = |options: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    };
    let volatile = format!("{options},volatile");
    let mounted = match (volatile.len() < MOUNT_DATA_MAX_BYTES).then(|| mount_with(&volatile)) {
        None | Some(Err(nix::errno::Errno::EINVAL)) => mount_with(options),
        Some(other) => other,
    };
    if let Some(previous) = previous {
        std::env::set_current_dir(&previous)
            .map_err(|e| format!("returning to {}: {e}", previous.display()))?;
    }
    Ok(mounted.map_err(|e| e.to_string()))
}

/// Largest options string a mount takes (one page).
const MOUNT_DATA_MAX_BYTES: usize = 4096;

/// overlayfs's `lowerdir` for `layers` (bottom first): top first, separated by colons. Layers
/// in one directory (the image store's, or the idmapped mounts) are named relative to it, to
/// fit the one page a mount's options may take, and the directory is returned.
fn overlay_lowerdir(layers: &[PathBuf]) -> (String, Option<PathBuf>) {
    let parent = layers[0].parent().map(Path::to_path_buf);
    let shared = parent.as_ref().filter(|parent| {
        layers
            .iter()
            .all(|layer| layer.parent() == Some(parent.as_path()) && layer.file_name().is_some())
    });
    let names: Vec<String> = layers
        .iter()
        .rev()
        .map(|layer| match shared {
            Some(_) => layer
                .file_name()
                .expect("checked")
                .to_string_lossy()
                .into_owned(),
            None => layer.display().to_string(),
        })
        .collect();
    (names.join(":"), shared.cloned())
}

fn start_container(
    dir: &TaskDir,
    spec: &ShimSpec,
    image_layers: &[PathBuf],
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Running, String> {
    prepare_rootfs(dir, spec, image_layers)?;
    let mut config = oci_config(spec)?;
    std::fs::create_dir_all(&spec.container_state_root)
        .map_err(|e| format!("creating {}: {e}", spec.container_state_root.display()))?;
    // libcontainer's state (state.json, the notify socket, ~20 files and directories per
    // start) and the bundle's config.json are needed only while this shim lives: a tmpfs in
    // the shim's private mount namespace keeps them off the agent's disk, where each file
    // creation costs 0.1-0.15 ms on this machine's ext4, and they go with the shim. Where
    // that mount fails, the state directory itself serves and config.json is written to the
    // sandbox.
    let bundle = match nix::mount::mount(
        Some("tmpfs"),
        &spec.container_state_root,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0755,size=4m"),
    ) {
        Ok(()) => {
            let bundle = spec
                .container_state_root
                .join(format!("{}.bundle", spec.task_id));
            std::fs::create_dir(&bundle)
                .map_err(|e| format!("creating {}: {e}", bundle.display()))?;
            let rootfs = std::path::absolute(dir.rootfs())
                .map_err(|e| format!("resolving {}: {e}", dir.rootfs().display()))?;
            let rootfs = rootfs
                .to_str()
                .ok_or_else(|| format!("{} is not UTF-8", rootfs.display()))?;
            config["root"]["path"] = serde_json::Value::from(rootfs);
            bundle
        }
        Err(e) => {
            eprintln!("shim: no tmpfs for the container's state ({e}), writing it to disk");
            dir.bundle()
        }
    };
    write_atomic(
        &bundle.join("config.json"),
        &serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("writing config.json: {e}"))?;
    let devnull = File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    let mut container = ContainerBuilder::new(spec.task_id.clone(), SyscallType::Linux)
        .with_executor(SeccompExecutor {
            programs: crate::seccomp::default_profile()?,
        })
        .with_root_path(&spec.container_state_root)
        .map_err(|e| format!("container state root: {e}"))?
        .with_stdin(devnull)
        .with_stdout(stdout)
        .with_stderr(stderr)
        .validate_id()
        .map_err(|e| format!("container id: {e}"))?
        .as_init(&bundle)
        .with_systemd(false)
        .with_detach(true)
        .build()
        .map_err(|e| format!("creating container: {e}"))?;
    // The init exists now with our (unblocked) signal mask; from here on signals are
    // received synchronously by the wait loop.
    block_signals();
    let pid = container
        .pid()
        .ok_or_else(|| "container has no init pid".to_string())?;
    // The cgroup exists and the init waits for `start`: the device rules are complete
    // before the workload's first instruction.
    if let Err(e) = cgroups::enforce_devices(&spec.cgroup_path) {
        let _ = container.delete(true);
        return Err(e);
    }
    if let Err(e) = container.start() {
        let _ = container.delete(true);
        return Err(format!("starting container: {e}"));
    }
    Ok(Running::Container {
        container: Box::new(container),
        pid,
    })
}

/// libcontainer's default executor behind the default seccomp profile, installed in the
/// container's init as the last step before exec (no_new_privs is already set). If the
/// filter cannot be installed the task does not start: never run unfiltered.
#[derive(Clone)]
struct SeccompExecutor {
    programs: Vec<seccompiler::BpfProgram>,
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorError> {
        crate::seccomp::install(&self.programs).map_err(ExecutorError::Other)?;
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &oci_spec::runtime::Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

fn start_process(spec: &ShimSpec, stdout: OwnedFd, stderr: OwnedFd) -> Result<Running, String> {
    let cgroup = cgroups::TaskCgroup::create(spec)?;
    block_signals();
    // The task starts as `dcos-rs __exec`, which waits on this pipe until it is in the task's
    // cgroup and only then drops privileges and execs the workload: not one instruction of
    // the task runs outside its limits. (A wait inside `pre_exec` would deadlock: `spawn`
    // returns only once the child has exec'd.)
    let (gate_read, gate_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let gate_read_fd = std::os::fd::AsRawFd::as_raw_fd(&gate_read);
    let mut command = std::process::Command::new("/proc/self/exe");
    command
        .arg("__exec")
        .arg(gate_read_fd.to_string())
        .arg(spec.uid.to_string())
        .arg(spec.gid.to_string())
        // The task's environment reaches only the workload's exec: `__exec` itself runs as
        // root and must not start under the task's LD_PRELOAD or glibc tunables.
        .args(env_args(&spec.env))
        .arg("--")
        .args(&spec.args)
        .env_clear()
        .current_dir(&spec.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    // SAFETY: fcntl is async-signal-safe; it keeps the gate's read end open across exec.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(gate_read_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn().map_err(|e| {
        cgroup.remove();
        format!("spawning {}: {e}", spec.args[0])
    })?;
    drop(gate_read);
    let pid = Pid::from_raw(child.id() as i32);
    if let Err(e) = cgroup.add(pid) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        cgroup.remove();
        return Err(e);
    }
    nix::unistd::write(&gate_write, &[1]).map_err(|e| format!("releasing task: {e}"))?;
    drop(gate_write);
    // `child` is dropped without waiting: the wait loop reaps it by pid.
    drop(child);
    Ok(Running::Process {
        cgroup: Box::new(cgroup),
        pid,
    })
}

fn signal_set() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.add(Signal::SIGHUP);
    set
}

fn block_signals() {
    let _ = signal_set().thread_block();
}

/// Waits for the task's main process while copying its output into the log files.
/// SIGTERM/SIGINT/SIGHUP to the shim is a kill request: the
/// task gets `stop_signal` (the image's StopSignal, else SIGTERM), and SIGKILL once `kill_grace_ms` has passed.
fn wait_for_exit(
    running: &Running,
    kill_grace_ms: &dyn Fn() -> u64,
    stop_signal: Signal,
    streams: &mut [Stream],
) -> (WaitStatus, bool) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    let main_pid = running.pid();
    let mut kill_deadline: Option<Instant> = None;
    let mut kill_requested = false;
    // When the stop signal went out, until SIGKILL went out.
    let mut kill_started: Option<Instant> = None;
    // The signals are blocked (block_signals); they arrive here as readable events, next
    // to the task's output pipes, so one poll waits for both.
    let signals = match SignalFd::with_flags(
        &signal_set(),
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    ) {
        Ok(fd) => Some(fd),
        Err(e) => {
            eprintln!("shim: signalfd: {e}; checking for signals every 100 ms instead");
            None
        }
    };
    loop {
        if !kill_requested && KILL_REQUESTED.load(AtomicOrdering::SeqCst) {
            kill_requested = true;
            running.signal(stop_signal);
            let now = Instant::now();
            kill_started = Some(now);
            kill_deadline = Some(now + Duration::from_millis(kill_grace_ms()));
        } else if let (Some(started), Some(deadline)) = (kill_started, kill_deadline) {
            // A kill that came after the first may grant less time (a framework's KILL
            // with its own kill_policy, after the master's own kill of the task).
            let granted = started + Duration::from_millis(kill_grace_ms());
            if granted < deadline {
                kill_deadline = Some(granted);
            }
        }
        // Reap everything that ended; remember the main process's status.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if status.pid() == Some(main_pid) {
                        return (status, kill_requested);
                    }
                }
            }
        }
        let timeout = match kill_deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => Duration::from_secs(1),
        };
        {
            let mut fds: Vec<PollFd> = Vec::with_capacity(3);
            if let Some(signals) = &signals {
                fds.push(PollFd::new(signals.as_fd(), PollFlags::POLLIN));
            }
            for stream in streams.iter() {
                if let Some(fd) = stream.fd() {
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
            }
            let timeout = if signals.is_some() {
                timeout
            } else {
                timeout.min(Duration::from_millis(100))
            };
            let timeout_ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
            let _ = poll(&mut fds, PollTimeout::from(timeout_ms));
        }
        for stream in streams.iter_mut() {
            stream.pump();
        }
        let is_kill = |n: i32| n == libc::SIGTERM || n == libc::SIGINT || n == libc::SIGHUP;
        let mut kill_signal = false;
        match &signals {
            Some(signals) => {
                while let Ok(Some(info)) = signals.read_signal() {
                    kill_signal |= is_kill(info.ssi_signo as i32);
                }
            }
            None => loop {
                let zero = nix::sys::time::TimeSpec::from(Duration::ZERO);
                // SAFETY: sigtimedwait reads the set and the timespec; a null info is allowed.
                let received = unsafe {
                    libc::sigtimedwait(signal_set().as_ref(), std::ptr::null_mut(), zero.as_ref())
                };
                if received <= 0 {
                    break;
                }
                kill_signal |= is_kill(received);
            },
        }
        if kill_signal {
            // Acted on at the top of the next round.
            KILL_REQUESTED.store(true, AtomicOrdering::SeqCst);
        }
        if let Some(deadline) = kill_deadline {
            if Instant::now() >= deadline {
                kill_started = None;
                running.signal(Signal::SIGKILL);
                // Keep escalating each second until the process is reaped.
                kill_deadline = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

fn cleanup(running: Running, spec: &ShimSpec) {
    match running {
        Running::Container { mut container, .. } => {
            // What `container.delete` does for an ended container without hooks (cgroups,
            // state directory), without building libcgroups's manager; `delete` remains the
            // fallback.
            let deadline = Instant::now() + Duration::from_secs(5);
            let removed = cgroups::remove_everywhere(
                Path::new(cgroups::CGROUP_ROOT),
                &spec.cgroup_path,
                deadline,
            )
            .and_then(|()| {
                let state = spec.container_state_root.join(&spec.task_id);
                std::fs::remove_dir_all(&state)
                    .map_err(|e| format!("removing {}: {e}", state.display()))
            });
            if let Err(reason) = removed {
                eprintln!("shim: {reason}; deleting the container through libcontainer");
                if let Err(e) = container.delete(true) {
                    eprintln!("shim: deleting container: {e}");
                }
            }
            // The overlay lives in this process's private mount namespace: it goes away with
            // the namespace when the shim exits, no unmount needed (measured: a lazy unmount
            // here sometimes took 18-95 ms).
        }
        Running::Process { cgroup, .. } => {
            // Mesos semantics: when the main process ends, the rest of its cgroup goes too.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !cgroup.is_empty() && Instant::now() < deadline {
                // Again each round: a process may have forked since the last kill.
                cgroup.kill_all();
                while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                    if status == WaitStatus::StillAlive {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            cgroup.remove();
        }
    }
}

/// `-t <seconds>`: the most a helper's workload may run (a COMMAND check's own deadline,
/// which holds when the agent that started it is gone); SIGALRM ends it then.
pub fn deadline_args(deadline_s: Option<u32>) -> Vec<String> {
    deadline_s
        .map(|s| vec!["-t".to_string(), s.to_string()])
        .unwrap_or_default()
}

/// Splits an optional leading `-t <seconds>` off `args`.
pub fn split_deadline(args: &[std::ffi::OsString]) -> Option<(Option<u32>, &[std::ffi::OsString])> {
    match args {
        [flag, seconds, rest @ ..] if flag == "-t" => {
            let seconds: u32 = seconds.to_str()?.parse().ok().filter(|s| *s > 0)?;
            Some((Some(seconds), rest))
        }
        _ => Some((None, args)),
    }
}

/// `-e KEY=VALUE` arguments for each entry of `env`: how a root helper (`__exec`,
/// `__check-exec`) is told the task's environment without starting under it.
pub fn env_args(env: &[String]) -> Vec<String> {
    env.iter()
        .flat_map(|entry| ["-e".to_string(), entry.clone()])
        .collect()
}

const EXEC_USAGE: &str =
    "usage: dcos-rs __exec <gate-fd> <uid> <gid> [-t SECONDS] [-e KEY=VALUE]... -- <argv...>";

/// Splits `[-e KEY=VALUE]... -- argv...` into the environment and the argument vector
/// (`None` without the `--`, or with anything else before it).
pub fn split_env_args(
    args: &[std::ffi::OsString],
) -> Option<(Vec<std::ffi::CString>, Vec<std::ffi::CString>)> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let mut env = Vec::new();
    let mut rest = args.iter();
    loop {
        match rest.next()?.as_bytes() {
            b"--" => break,
            b"-e" => env.push(CString::new(rest.next()?.as_bytes()).ok()?),
            _ => return None,
        }
    }
    let argv = rest
        .map(|a| CString::new(a.as_bytes()).ok())
        .collect::<Option<Vec<CString>>>()?;
    Some((env, argv))
}

/// Execs `argv` with exactly `env`, searching `argv[0]` in the `PATH` of `env` (the
/// default `/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` without one), as
/// `execvpe` would with that environment. Returns only on error.
pub fn exec_with_env(argv: &[std::ffi::CString], env: &[std::ffi::CString]) -> nix::errno::Errno {
    use std::ffi::CString;
    let Some(program) = argv.first() else {
        return nix::errno::Errno::ENOENT;
    };
    if program.as_bytes().contains(&b'/') {
        return nix::unistd::execve(program, argv, env).unwrap_err();
    }
    let path = env
        .iter()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let mut error = nix::errno::Errno::ENOENT;
    for dir in path.split(|b| *b == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let mut candidate = dir.to_vec();
        candidate.push(b'/');
        candidate.extend_from_slice(program.as_bytes());
        let Ok(candidate) = CString::new(candidate) else {
            continue;
        };
        let failed = nix::unistd::execve(&candidate, argv, env).unwrap_err();
        // As execvp: a file there that cannot be run is the error to report.
        if failed != nix::errno::Errno::ENOENT && failed != nix::errno::Errno::ENOTDIR {
            error = failed;
        }
    }
    error
}

/// At `seconds` from now, SIGKILL this process's whole process group: this process, the
/// command it runs (`run_in_child`) and whatever that started and left in the group. This
/// process first leads a group of its own, so its caller's group is never reached. The
/// handler is ours, not the workload's: a command that traps or ignores signals still ends.
pub fn arm_group_deadline(seconds: u32) {
    extern "C" fn kill_group(_: libc::c_int) {
        // SAFETY: kill is async-signal-safe; 0 is this process's group.
        unsafe { libc::kill(0, libc::SIGKILL) };
    }
    // SAFETY: a new group led by this process (refused, harmlessly, if it leads one already
    // as a session leader); a plain handler with no flags, then the timer.
    unsafe {
        libc::setpgid(0, 0);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = kill_group as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut());
        libc::alarm(seconds);
    }
}

/// Runs `argv` with `env` in a child of this process (which must have one thread) and waits
/// for it: its exit status, or 128 + the signal that ended it. The child dies with this
/// process (`PR_SET_PDEATHSIG`); its own alarm is not inherited.
pub fn run_in_child(argv: &[std::ffi::CString], env: &[std::ffi::CString]) -> Result<i32, String> {
    // SAFETY: this process has one thread; the child only calls prctl and exec before it is
    // the command.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if child == 0 {
        let unused: libc::c_ulong = 0;
        // SAFETY: prctl with integer arguments only.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                unused,
                unused,
                unused,
            )
        };
        let error = exec_with_env(argv, env);
        eprintln!("dcos-rs: cannot run {:?}: {error}", argv[0]);
        let status = if error == nix::errno::Errno::ENOENT {
            127
        } else {
            126
        };
        // SAFETY: ends the child at once, as a failed exec does.
        unsafe { libc::_exit(status) };
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waits for our own child, into a local.
        let waited = unsafe { libc::waitpid(child, &mut status, 0) };
        if waited == child {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(format!("waiting for {:?}: {error}", argv[0]));
        }
    }
    Ok(if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    })
}

/// `dcos-rs __exec <gate-fd> <uid> <gid> [-t SECONDS] [-e KEY=VALUE]... -- <argv...>`: the
/// first process of a plain task (or of a COMMAND check of one, with its deadline). Started
/// as root with an empty environment; waits until the shim has put it into the task's
/// cgroup (a byte on the gate), drops to the task's user and execs the workload with the
/// task's environment. Returns only on error (the exit code to use).
pub fn exec_after_gate(args: &[std::ffi::OsString]) -> i32 {
    let parse = |i: usize| {
        args.get(i)
            .and_then(|a| a.to_str())
            .and_then(|a| a.parse::<u32>().ok())
    };
    let (Some(fd), Some(uid), Some(gid)) = (parse(0), parse(1), parse(2)) else {
        eprintln!("{EXEC_USAGE}");
        return 127;
    };
    let Some((deadline_s, rest)) = split_deadline(args.get(3..).unwrap_or_default()) else {
        eprintln!("{EXEC_USAGE}");
        return 127;
    };
    let Some((env, argv)) = split_env_args(rest) else {
        eprintln!("{EXEC_USAGE}");
        return 127;
    };
    if argv.is_empty() {
        eprintln!("dcos-rs: nothing to run");
        return 127;
    }
    let mut byte = [0u8; 1];
    // SAFETY: reading one byte into a local buffer from an inherited descriptor.
    let n = unsafe { libc::read(fd as i32, byte.as_mut_ptr().cast(), 1) };
    // SAFETY: closing our own descriptor.
    unsafe { libc::close(fd as i32) };
    if n != 1 {
        eprintln!("dcos-rs: the task's supervisor went away before starting it");
        return 127;
    }
    if uid != 0 || gid != 0 {
        let gid = nix::unistd::Gid::from_raw(gid);
        if let Err(e) = nix::unistd::setgroups(&[gid])
            .and_then(|_| nix::unistd::setgid(gid))
            .and_then(|_| nix::unistd::setuid(nix::unistd::Uid::from_raw(uid)))
        {
            eprintln!("dcos-rs: switching to uid {uid}: {e}");
            return 126;
        }
    }
    // The Rust runtime ignores SIGPIPE and an ignored signal stays ignored across exec:
    // the workload gets the default, as any process started from a shell.
    // SAFETY: resets one signal's disposition in this single-threaded process.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    if let Some(seconds) = deadline_s {
        // A check: it runs in a child, so that at the deadline this process kills it and
        // whatever it started, even with nobody left to kill them and whatever the
        // workload does with its own signals.
        arm_group_deadline(seconds);
        return match run_in_child(&argv, &env) {
            Ok(status) => status,
            Err(error) => {
                eprintln!("dcos-rs: {error}");
                126
            }
        };
    }
    let error = exec_with_env(&argv, &env);
    eprintln!("dcos-rs: cannot run {:?}: {error}", argv[0]);
    if error == nix::errno::Errno::ENOENT {
        127
    } else {
        126
    }
}

/// Ends whatever is left of a task whose shim is gone without an exit record (or stuck in
/// start-up): kills its processes, removes its cgroup and libcontainer state. `shim_pid`
/// must be a verified live shim of this task (or `None`). Best effort;
/// called by the agent before it reports such a task lost, so a replacement never runs
/// beside a forgotten copy.
pub fn force_cleanup(dir: &TaskDir, shim_pid: Option<i32>) {
    if let Some(pid) = shim_pid {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let Ok(spec) = dir.read_spec() else { return };
    // The recorded pid may be stale (a reboot, a reused pid): kill it only if it still sits
    // in the task's cgroup. The cgroup kill below reaches the rest.
    if let Some(pid) = TaskDir::read_pid(&dir.task_pid()) {
        let in_task_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|c| c.lines().any(|l| l.ends_with(&spec.cgroup_path)))
            .unwrap_or(false);
        if in_task_cgroup {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if let Ok(cgroup) = cgroups::TaskCgroup::create(&spec) {
        let deadline = Instant::now() + Duration::from_secs(2);
        while !cgroup.is_empty() && Instant::now() < deadline {
            cgroup.kill_all();
            std::thread::sleep(Duration::from_millis(10));
        }
        cgroup.remove();
    }
    let _ = std::fs::remove_dir_all(spec.container_state_root.join(&spec.task_id));
    if let Some(network) = &spec.network {
        network::detach(network);
    }
    // Record the end so later agent starts do not treat the task as unaccounted for.
    if !dir.exit().exists() {
        let _ = write_json_atomic(
            &dir.exit(),
            &start_failure(
                spec.mem_limit_bytes,
                "the task's supervisor ended without recording how the task ended".into(),
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_travels_in_arguments_up_to_the_separator() {
        let env = vec![
            "PATH=/bin".to_string(),
            "A=-e".to_string(),
            "EMPTY=".to_string(),
        ];
        let mut line = env_args(&env);
        line.extend(["--", "/bin/sh", "-c", "echo -e --"].map(String::from));
        let os: Vec<std::ffi::OsString> = line.iter().map(Into::into).collect();
        let (got_env, argv) = split_env_args(&os).expect("well formed");
        let text = |v: Vec<std::ffi::CString>| -> Vec<String> {
            v.into_iter().map(|c| c.into_string().unwrap()).collect()
        };
        assert_eq!(text(got_env), env);
        assert_eq!(text(argv), ["/bin/sh", "-c", "echo -e --"]);
        let os = |v: &[&str]| -> Vec<std::ffi::OsString> { v.iter().map(Into::into).collect() };
        let with = os(&["-t", "25", "-e", "A=1", "--", "true"]);
        let (deadline, rest) = split_deadline(&with).unwrap();
        assert_eq!((deadline, rest.len()), (Some(25), 4));
        assert_eq!(deadline_args(Some(25)), ["-t", "25"]);
        let without = os(&["--", "true"]);
        assert_eq!(split_deadline(&without).unwrap(), (None, &without[..]));
        assert!(split_deadline(&os(&["-t", "0", "--", "x"])).is_none());
        assert!(split_deadline(&os(&["-t", "soon", "--", "x"])).is_none());
        for bad in [&["-e"][..], &["x", "--", "true"], &["-e", "A=1"]] {
            let os: Vec<std::ffi::OsString> = bad.iter().map(Into::into).collect();
            assert!(split_env_args(&os).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn overlay_lower_layers_are_listed_top_first_relative_to_their_directory() {
        let layers = vec![
            PathBuf::from("/store/layers/aa"),
            PathBuf::from("/store/layers/bb"),
        ];
        assert_eq!(
            overlay_lowerdir(&layers),
            ("bb:aa".to_string(), Some(PathBuf::from("/store/layers")))
        );
        let apart = vec![PathBuf::from("/a/x"), PathBuf::from("/b/y")];
        assert_eq!(overlay_lowerdir(&apart), ("/b/y:/a/x".to_string(), None));
    }
}
