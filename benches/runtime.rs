//! `make bench-runtime`: container start, dcos-rs shim vs runc vs crun (output format: ARCHITECTURE.md, Benchmarks).
//!
//! Starts the same `/bin/true` busybox container `BENCH_RUNS` times (default 200) through
//! each tool, interleaved (shim, runc, crun, shim, ...), after `BENCH_WARMUP` unrecorded
//! rounds (default 3), and times each run from spawn to exit of the tool's process:
//!
//! - ours: `dcos-rs __shim <task-dir>` with a fresh task dir and task.json per run (as the
//!   agent writes them; not timed). The shim mounts an overlay over the image tree, writes
//!   config.json, creates/starts/waits/deletes the container through libcontainer and writes
//!   exit.json, which must say exit code 0.
//! - runc and crun: `<tool> --root <state> run --bundle <bundle> <id>` (create, start, wait,
//!   delete in one foreground process), exit status 0 required. The bundle's config.json
//!   comes from `dcos_runtime::bundle::oci_config` for an equivalent task (same namespaces,
//!   capabilities, mounts, cgroup limits, a fresh cgroupsPath per run) with a READ-ONLY root
//!   on one copy of the image tree made before the loop: the peers do no per-run rootfs
//!   work, our side mounts an overlay per run inside its timing.
//! - crun refuses hybrid cgroup hosts, so on such a host it runs in a private mount namespace
//!   (held by `unshare --mount --propagation private` for the whole benchmark) from which
//!   /sys/fs/cgroup/unified is unmounted; each crun process joins it with setns(2) between
//!   fork and exec. The host's mounts are never changed.
//!
//! Every process is spawned the same way (fork, setsid, exec, stdio to files). A failed run
//! aborts the benchmark with its log instead of being timed. Cgroups under `dcos-rs-bench`,
//! the temporary work dir (image store, task dirs, runtime state) and the namespace holder
//! are removed at the end, also on failure.
//!
//! The shim is the static binary that ships (`make static`); `DCOS_RS_BIN` names another, such
//! as the glibc build `make run` uses, whose dynamic loading and relocations cost it about
//! 1 ms per start here.
//!
//! Env: `DCOS_RS_BIN` (default `<target>/x86_64-unknown-linux-musl/release/dcos-rs`),
//! `BENCH_RUNS`, `BENCH_WARMUP`.
//! Needs root, /bin/busybox (busybox-static), runc and crun.

use dcos_runtime::bundle::{oci_config, DEFAULT_PATH};
use dcos_runtime::image::ImageStore;
use dcos_runtime::task_dir::{write_json_atomic, ShimSpec, TaskDir};
use dcos_runtime::testimage::{build_busybox_image, TestImageFormat};
use serde_json::json;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP_PARENT: &str = "dcos-rs-bench";
const UNIFIED: &str = "/sys/fs/cgroup/unified";
const IMAGE: &str = "busybox:bench";
const MEM_LIMIT_BYTES: u64 = 64 << 20;
const CPUS_MILLI: u64 = 1000;
const PIDS_LIMIT: i64 = 4096;
/// `make static`'s output, under the target directory.
const STATIC_BIN: &str = "x86_64-unknown-linux-musl/release/dcos-rs";

fn main() {
    let result = run();
    // Everything the run created is gone by now (guards dropped inside `run`).
    if let Err(error) = result {
        eprintln!("bench-runtime: FAILED: {error}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Tool {
    Shim,
    Runc,
    Crun,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Shim => "dcos-rs",
            Tool::Runc => "runc",
            Tool::Crun => "crun",
        }
    }
}

struct Bench {
    work: PathBuf,
    shim_exe: PathBuf,
    image_digest: String,
    image_layers: Vec<PathBuf>,
    /// libcontainer's state root for our shim (the agent has one per agent).
    shim_state: PathBuf,
    /// The peers' bundle: config.json (rewritten per run) + rootfs (one read-only copy).
    bundle: PathBuf,
    peer_log: PathBuf,
    /// The mount namespace crun runs in (None where the host is not hybrid).
    crun_ns: Option<File>,
    run_tag: u32,
}

fn run() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (containers, cgroups, mounts)".into());
    }
    let runs = env_number("BENCH_RUNS", 200)?;
    let warmup = env_number("BENCH_WARMUP", 3)?;
    if runs == 0 {
        return Err("BENCH_RUNS must be at least 1".into());
    }
    let target_tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shim_exe = match std::env::var_os("DCOS_RS_BIN") {
        Some(path) => PathBuf::from(path),
        None => target_tmp
            .parent()
            .unwrap_or(Path::new("target"))
            .join(STATIC_BIN),
    };
    if !shim_exe.is_file() {
        return Err(format!(
            "{} is missing: run `make static` (make bench-runtime does)",
            shim_exe.display()
        ));
    }
    let linkage = match has_interpreter(&shim_exe)? {
        true => "dynamically linked",
        false => "static",
    };
    let runc_version = tool_version("runc")?;
    let crun_version = tool_version("crun")?;
    let busybox = Path::new("/bin/busybox");
    if !busybox.is_file() {
        return Err("/bin/busybox is missing: apt-get install busybox-static".into());
    }

    // The work dir lives on the same filesystem as target/ (a disk, like an agent's work
    // dir), so the shim's fsyncs cost what they cost in production.
    std::fs::create_dir_all(&target_tmp).map_err(|e| format!("creating {target_tmp:?}: {e}"))?;
    let work_dir = tempfile::Builder::new()
        .prefix("bench-runtime-")
        .tempdir_in(&target_tmp)
        .map_err(|e| format!("creating a work dir in {}: {e}", target_tmp.display()))?;
    // Dropped before the work dir (declared after it): cgroups go first.
    let _cgroups = CgroupSweep;
    let work = work_dir.path().to_path_buf();

    // The image, through the same store the agent uses.
    let store = ImageStore::open(&work.join("images")).map_err(|e| e.to_string())?;
    let tarball = work.join("busybox.tar");
    build_busybox_image(busybox, &tarball, IMAGE, TestImageFormat::DockerSave)
        .map_err(|e| format!("building the busybox image: {e}"))?;
    store
        .import(&tarball)
        .map_err(|e| format!("importing the busybox image: {e}"))?;
    let image = store
        .resolve(IMAGE)
        .map_err(|e| format!("resolving {IMAGE}: {e}"))?;

    // The lower layers of each task's root, as the agent gives them.
    let image_layers = image.task_layers();
    // The peers' bundle: one copy of the same tree, mounted read-only by the runtimes.
    let bundle = work.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).map_err(|e| format!("bundle: {e}"))?;
    dcos_runtime::image::layers::flatten_layers(&image_layers, &bundle.join("rootfs"))
        .map_err(|e| format!("copying the image into the bundle: {e}"))?;

    // crun's private mount namespace, held for the whole run.
    let host_hybrid = is_mountpoint(UNIFIED);
    let holder = if host_hybrid {
        Some(NamespaceHolder::start()?)
    } else {
        None
    };
    if host_hybrid && !is_mountpoint(UNIFIED) {
        return Err(format!(
            "{UNIFIED} vanished from the host's mounts: stopping"
        ));
    }
    let crun_ns = match &holder {
        Some(holder) => Some(
            File::open(format!("/proc/{}/ns/mnt", holder.child.id()))
                .map_err(|e| format!("opening the namespace holder's mount namespace: {e}"))?,
        ),
        None => None,
    };

    let bench = Bench {
        shim_state: work.join("containers"),
        peer_log: work.join("peer.log"),
        work: work.clone(),
        shim_exe: shim_exe.clone(),
        image_digest: image.digest,
        image_layers,
        bundle,
        crun_ns,
        run_tag: std::process::id(),
    };
    std::fs::create_dir_all(work.join("tasks")).map_err(|e| format!("task dirs: {e}"))?;

    let tools = [Tool::Shim, Tool::Runc, Tool::Crun];
    let load_before = loadavg();
    for round in 0..warmup {
        for tool in tools {
            bench.run_once(tool, &format!("w{round}"))?;
        }
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(runs); tools.len()];
    for round in 0..runs {
        for (slot, tool) in tools.iter().enumerate() {
            times[slot].push(bench.run_once(*tool, &round.to_string())?);
        }
    }
    let load_after = loadavg();
    drop(holder);
    let leftovers = sweep_cgroups();

    let stats: Vec<Stats> = times.iter().map(|t| Stats::of(t)).collect();
    let (ours, runc, crun) = (&stats[0], &stats[1], &stats[2]);
    println!(
        "# bench-runtime: {runs} interleaved runs of /bin/true per tool (after {warmup} warm-up rounds), wall time from spawn to exit"
    );
    println!(
        "# dcos-rs: {} ({linkage}) __shim <fresh task dir>: overlay over the image tree per run, libcontainer create/start/wait/delete, exit.json checked",
        shim_exe.display()
    );
    println!(
        "# {runc_version} and {crun_version}: `run --bundle`, same oci_config, read-only root on one copy of the image tree (no per-run rootfs work)"
    );
    if host_hybrid {
        println!("# crun ran in a private mount namespace without {UNIFIED} (hybrid host)");
    }
    println!("# load average before: {load_before}; after: {load_after}");
    println!("# tool      min    p50    p90    p99    max   mean (ms)");
    for (tool, s) in tools.iter().zip(&stats) {
        println!(
            "# {:<7} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>6.1}",
            tool.name(),
            ms(s.min),
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            ms(s.mean)
        );
    }
    if leftovers.is_empty() {
        println!("# no cgroup was left behind under {CGROUP_PARENT}");
    } else {
        println!(
            "# cgroups left behind (now removed): {}",
            leftovers.join(", ")
        );
    }
    bench_line("container_start_p50", ours.p50, "runc", runc.p50);
    bench_line("container_start_p99", ours.p99, "runc", runc.p99);
    bench_line("container_start_p50_vs_crun", ours.p50, "crun", crun.p50);
    bench_line("container_start_p99_vs_crun", ours.p99, "crun", crun.p99);
    drop(bench);
    Ok(())
}

impl Bench {
    fn run_once(&self, tool: Tool, round: &str) -> Result<Duration, String> {
        let id = format!("{}-{}-{round}", tool.name(), self.run_tag);
        match tool {
            Tool::Shim => self.run_shim(&id),
            Tool::Runc | Tool::Crun => self.run_peer(tool, &id),
        }
    }

    /// The spec the agent would write for a `/bin/true` task of this image.
    fn spec(&self, id: &str) -> Result<ShimSpec, String> {
        // Through JSON so that fields added to ShimSpec with serde defaults need no change here.
        serde_json::from_value(json!({
            "task_id": id,
            "args": ["/bin/true"],
            "env": [DEFAULT_PATH],
            "cwd": "/",
            "uid": 0,
            "gid": 0,
            "image_digest": self.image_digest,
            "image_layers": self.image_layers,
            "hostname": id,
            "cgroup_path": format!("/{CGROUP_PARENT}/{id}"),
            "mem_limit_bytes": MEM_LIMIT_BYTES,
            "cpus_milli": CPUS_MILLI,
            "pids_limit": PIDS_LIMIT,
            "kill_grace_ms": 3000,
            "container_state_root": self.shim_state,
        }))
        .map_err(|e| format!("building the task spec: {e}"))
    }

    fn run_shim(&self, id: &str) -> Result<Duration, String> {
        let dir = TaskDir::new(self.work.join("tasks").join(id));
        std::fs::create_dir_all(&dir.path).map_err(|e| format!("creating task dir: {e}"))?;
        write_json_atomic(&dir.spec(), &self.spec(id)?)
            .map_err(|e| format!("writing task.json: {e}"))?;
        let log = File::create(dir.shim_log()).map_err(|e| format!("shim.log: {e}"))?;
        let mut command = Command::new(&self.shim_exe);
        command
            .arg("__shim")
            .arg(&dir.path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let (status, elapsed) = timed(command, None)?;
        let shim_log = || std::fs::read_to_string(dir.shim_log()).unwrap_or_default();
        if !status.success() {
            return Err(format!(
                "shim for {id} exited {status}; shim.log:\n{}",
                shim_log()
            ));
        }
        match dir.read_exit() {
            Ok(Some(exit)) if exit.exit_code == Some(0) && exit.start_error.is_none() => {}
            other => {
                return Err(format!(
                    "task {id} did not exit 0: {other:?}; shim.log:\n{}",
                    shim_log()
                ))
            }
        }
        if self.shim_state.join(id).exists() {
            return Err(format!("libcontainer state of {id} was left behind"));
        }
        std::fs::remove_dir_all(&dir.path)
            .map_err(|e| format!("removing {}: {e}", dir.path.display()))?;
        Ok(elapsed)
    }

    fn run_peer(&self, tool: Tool, id: &str) -> Result<Duration, String> {
        let mut config = oci_config(&self.spec(id)?)?;
        config["root"] = json!({ "path": "rootfs", "readonly": true });
        std::fs::write(
            self.bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?,
        )
        .map_err(|e| format!("writing config.json: {e}"))?;
        let state = self.work.join(format!("{}-state", tool.name()));
        let log = File::create(&self.peer_log).map_err(|e| format!("peer log: {e}"))?;
        let mut command = Command::new(tool.name());
        command
            .arg("--root")
            .arg(&state)
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let ns = match tool {
            Tool::Crun => self.crun_ns.as_ref().map(|f| f.as_raw_fd()),
            _ => None,
        };
        let (status, elapsed) = timed(command, ns)?;
        if !status.success() {
            return Err(format!(
                "{} run {id} exited {status}; its output:\n{}",
                tool.name(),
                std::fs::read_to_string(&self.peer_log).unwrap_or_default()
            ));
        }
        if state.join(id).exists() {
            return Err(format!("{} left its state of {id} behind", tool.name()));
        }
        Ok(elapsed)
    }
}

/// Spawns `command` in its own session (as the agent spawns shims), joining the mount
/// namespace `mount_ns` first if given, and returns its exit status and the wall time from
/// just before the fork to the reaping of the process.
fn timed(
    mut command: Command,
    mount_ns: Option<std::os::fd::RawFd>,
) -> Result<(std::process::ExitStatus, Duration), String> {
    // SAFETY: setsid and setns are async-signal-safe system calls on plain integers.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            if let Some(fd) = mount_ns {
                if libc::setns(fd, libc::CLONE_NEWNS) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let program = command.get_program().to_string_lossy().to_string();
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {program}: {e}"))?;
    let status = child
        .wait()
        .map_err(|e| format!("waiting for {program}: {e}"))?;
    Ok((status, start.elapsed()))
}

/// `unshare --mount --propagation private` holding a mount namespace without the cgroup2
/// mount for crun; it lives until its stdin closes (also if the benchmark dies).
struct NamespaceHolder {
    child: Child,
}

impl NamespaceHolder {
    fn start() -> Result<Self, String> {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "umount {UNIFIED} && echo ready && exec cat >/dev/null"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting unshare: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        let holder = NamespaceHolder { child };
        if line.trim() != "ready" {
            return Err(format!(
                "could not prepare crun's private mount namespace (umount {UNIFIED} failed)"
            ));
        }
        Ok(holder)
    }
}

impl Drop for NamespaceHolder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Removes everything under `<hierarchy>/dcos-rs-bench` when dropped.
struct CgroupSweep;

impl Drop for CgroupSweep {
    fn drop(&mut self) {
        let left = sweep_cgroups();
        if !left.is_empty() {
            eprintln!(
                "bench-runtime: removed leftover cgroups: {}",
                left.join(", ")
            );
        }
    }
}

/// Removes the benchmark's cgroups in every hierarchy; returns the names of leaf cgroups
/// that were still there (leaks), each once. Removing the parents themselves is expected.
fn sweep_cgroups() -> Vec<String> {
    let mut leaked = std::collections::BTreeSet::new();
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return Vec::new();
    };
    for hierarchy in hierarchies.flatten() {
        let parent = hierarchy.path().join(CGROUP_PARENT);
        if !parent.is_dir() {
            continue;
        }
        if let Ok(children) = std::fs::read_dir(&parent) {
            for child in children.flatten() {
                if child.path().is_dir() {
                    leaked.insert(child.file_name().to_string_lossy().to_string());
                    remove_cgroup_tree(&child.path());
                }
            }
        }
        remove_cgroup_tree(&parent);
    }
    leaked.into_iter().collect()
}

fn remove_cgroup_tree(path: &Path) {
    if let Ok(children) = std::fs::read_dir(path) {
        for child in children.flatten() {
            if child.path().is_dir() {
                remove_cgroup_tree(&child.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(path) {
        eprintln!(
            "bench-runtime: cannot remove cgroup {}: {e}",
            path.display()
        );
    }
}

struct Stats {
    min: Duration,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort();
        // Nearest rank: the smallest value with at least p% of the samples at or below it.
        let rank = |p: f64| {
            let k = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
            sorted[k.clamp(1, sorted.len()) - 1]
        };
        Stats {
            min: sorted[0],
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: sorted[sorted.len() - 1],
            mean: sorted.iter().sum::<Duration>() / sorted.len() as u32,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_line(name: &str, ours: Duration, peer: &str, theirs: Duration) {
    println!(
        "BENCH {name} {:.1} ms peer={peer}:{:.1} ratio={:.2}",
        ms(ours),
        ms(theirs),
        ms(ours) / ms(theirs)
    );
}

/// Whether the ELF executable at `path` names a program interpreter (`PT_INTERP`): a
/// dynamically linked one does, a static one does not.
fn has_interpreter(path: &Path) -> Result<bool, String> {
    const PT_INTERP: u32 = 3;
    // The program headers follow the ELF header, well within the first page.
    let mut elf = Vec::new();
    File::open(path)
        .and_then(|f| f.take(64 * 1024).read_to_end(&mut elf))
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let not_elf = || format!("{} is not a 64-bit ELF executable", path.display());
    let at = |offset: usize, len: usize| elf.get(offset..offset + len).ok_or_else(not_elf);
    if at(0, 5)? != b"\x7fELF\x02" {
        return Err(not_elf());
    }
    let phoff = u64::from_le_bytes(at(0x20, 8)?.try_into().expect("8 bytes")) as usize;
    let phentsize = u16::from_le_bytes(at(0x36, 2)?.try_into().expect("2 bytes")) as usize;
    let phnum = u16::from_le_bytes(at(0x38, 2)?.try_into().expect("2 bytes")) as usize;
    for header in 0..phnum {
        let p_type = at(phoff + header * phentsize, 4)?;
        if u32::from_le_bytes(p_type.try_into().expect("4 bytes")) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

fn env_number(name: &str, default: usize) -> Result<usize, String> {
    match std::env::var(name) {
        Ok(value) => value
            .trim()
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a number")),
        Err(_) => Ok(default),
    }
}

fn tool_version(tool: &str) -> Result<String, String> {
    let output = Command::new(tool)
        .arg("--version")
        .output()
        .map_err(|e| format!("{tool} is not runnable ({e}): apt-get install -y runc crun"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .next()
        .unwrap_or(tool)
        .replace(" version ", " ")
        .trim()
        .to_string())
}

fn is_mountpoint(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|info| {
            info.lines()
                .any(|line| line.split(' ').nth(4) == Some(path))
        })
        .unwrap_or(false)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
