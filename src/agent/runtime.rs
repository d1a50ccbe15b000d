//! The seam between the agent and what runs its tasks. The agent decides (launch, kill,
//! report, recover, collect); a `TaskRuntime` acts on one task. Both sides share one
//! contract, the task's sandbox (`dcos_runtime::task_dir::TaskDir`): `task.json` (the spec),
//! `task.pid` once the task runs, `exit.json` once it has ended.
//!
//! `ShimRuntime` is the real one: a `dcos-rs __shim` supervisor per task, containers through
//! libcontainer, plain processes in cgroups, bridge networking (root). `FakeRuntime`
//! (`super::fake`) runs nothing and needs no root: master, agent and framework behaviour
//! can be tested with it, and one process can emulate many agents.

use super::policy::TaskPolicy;
use super::AgentConfig;
use anyhow::Context;
use dcos_core::{LaunchSpec, Task, TaskNetworkMode};
use dcos_runtime::bundle::{resolve_process, resolve_user};
use dcos_runtime::cgroups::TaskStats;
use dcos_runtime::image::{ImageStore, ResolvedImage};
use dcos_runtime::network::{self, BridgeConfig, PortForward, Protocol, TaskNetwork};
use dcos_runtime::task_dir::{write_json_atomic, ShimSpec, TaskDir};
use dcos_runtime::userns::IdMap;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};

/// Processes one task may hold (cgroup pids limit).
const TASK_PIDS_MAX: i64 = 4096;
/// Where a container task with fetched artifacts sees its working directory (Mesos's
/// `MESOS_SANDBOX` in a container).
pub const CONTAINER_SANDBOX: &str = "/mnt/mesos/sandbox";

/// What a start needs of its agent.
pub struct LaunchContext<'a> {
    pub config: &'a AgentConfig,
    pub images: &'a ImageStore,
    /// Bridge addresses held by the agent's other tasks (starts run one at a time, under
    /// the agent's `start_lock`, so this is the whole truth).
    pub used_addresses: BTreeSet<Ipv4Addr>,
}

/// A started task: its supervisor (the process the agent watches and signals) and its
/// place on the bridge, if any.
#[derive(Debug)]
pub struct Started {
    pub supervisor_pid: i32,
    pub network: Option<TaskNetwork>,
}

/// Runs tasks for an agent. Blocking methods (file I/O, process spawns): the agent calls
/// them off its async threads where they can take long (`start`).
pub trait TaskRuntime: Send + Sync {
    /// Starts `task` in its new sandbox `dir` (empty, or holding only the working directory
    /// `prepare_work_dir` made): writes its spec, starts its supervisor. On error the agent
    /// removes the sandbox and reports the launch failed.
    fn start(&self, task: &Task, dir: &TaskDir, ctx: &LaunchContext) -> anyhow::Result<Started>;

    /// Makes the task's working directory (`dir.work()`) before `start`, new and the agent's
    /// own (0700), so artifacts can be fetched into it by root with no other user able to
    /// reach in; returns the host uid and gid the fetch hands it to once done (`start` keeps
    /// it theirs), `None` where it stays the agent's (a runtime that runs nothing). Blocking.
    fn prepare_work_dir(
        &self,
        _task: &Task,
        dir: &TaskDir,
        _config: &AgentConfig,
        _images: &ImageStore,
    ) -> anyhow::Result<Option<(u32, u32)>> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.work())
            .with_context(|| format!("creating {}", dir.work().display()))?;
        Ok(None)
    }

    /// True while `pid` is the live supervisor of the task in `dir` (not a recycled pid).
    fn supervisor_alive(&self, pid: i32, dir: &TaskDir) -> bool;

    /// Asks the supervisor to stop its task (the stop signal, then SIGKILL after the
    /// task's grace period); the end shows up as `exit.json`.
    fn stop(&self, pid: i32, dir: &TaskDir);

    /// Kills whatever is left of a task whose supervisor is gone or stuck (and the
    /// supervisor itself when given), and frees what it held, so it can be reported lost.
    fn force_cleanup(&self, dir: &TaskDir, live_supervisor: Option<i32>);

    /// Removes what gone tasks left on the agent's bridge; returns how many were removed.
    fn sweep_networks(&self, bridge: &BridgeConfig, live: &[TaskNetwork]) -> usize;

    /// Resource usage of a running task (its cgroup), if known.
    fn stats(&self, spec: &ShimSpec) -> Option<TaskStats>;
}

/// The real runtime: one `dcos-rs __shim` per task.
#[derive(Default)]
pub struct ShimRuntime {
    /// Set once the bridge and its nftables table are known to exist.
    bridge_ready: AtomicBool,
}

impl TaskRuntime for ShimRuntime {
    fn start(&self, task: &Task, dir: &TaskDir, ctx: &LaunchContext) -> anyhow::Result<Started> {
        let launch = &task.launch;
        let image = resolve_image(launch, ctx.images)?;
        let sandbox = dir.work().to_string_lossy().to_string();
        // Fetched artifacts are in the working dir: a container gets it where Mesos puts it.
        // Only then, so other container starts create no mount point in their upper layer.
        let mount_sandbox = image.is_some() && !launch.fetch.is_empty();
        // What only the agent knows, as a Mesos agent gives it; the framework put its own
        // variables (Marathon's PORT0, ...) into the launch already.
        let mut extra_env = BTreeMap::new();
        extra_env.insert("MESOS_TASK_ID".to_string(), task.id.clone());
        extra_env.insert("HOST".to_string(), ctx.config.hostname.clone());
        if image.is_none() {
            extra_env.insert("MESOS_SANDBOX".to_string(), sandbox.clone());
        } else if mount_sandbox {
            extra_env.insert("MESOS_SANDBOX".to_string(), CONTAINER_SANDBOX.to_string());
        }
        let network = match &launch.network {
            TaskNetworkMode::Host => None,
            TaskNetworkMode::Bridge { port_mappings } => {
                Some(self.bridge_network(ctx, task, port_mappings)?)
            }
        };
        let process = resolve_process(
            image.as_ref().map(|i| &i.config),
            launch.cmd.as_deref(),
            launch.args.as_deref(),
            &launch.env,
            &extra_env,
            if image.is_some() { "/" } else { &sandbox },
        )
        .map_err(anyhow::Error::msg)?;
        let policy = &ctx.config.policy;
        let identity = TaskIdentity::resolve(launch, image.as_ref(), policy)?;
        let user_namespace = identity.user_namespace;
        if image.is_none() || mount_sandbox {
            let (uid, gid) = identity.host_owner();
            make_work_dir(&dir.work(), uid, gid)?;
        }
        let mut mounts = resolve_volumes(&launch.volumes, dir, user_namespace, policy)?;
        if mount_sandbox {
            mounts.push(dcos_runtime::task_dir::MountSpec {
                destination: CONTAINER_SANDBOX.to_string(),
                source: Some(dir.work()),
                read_only: false,
                tmpfs_size_mib: None,
            });
        }
        let spec = ShimSpec {
            task_id: task.id.clone(),
            framework_id: dcos_core::mesos::state::framework_of(&task.owner).to_string(),
            args: process.args,
            env: process.env,
            cwd: process.cwd,
            uid: identity.uid,
            gid: identity.gid,
            image_digest: image.as_ref().map(|i| i.digest.clone()),
            image_layers: image.as_ref().map(|i| i.task_layers()).unwrap_or_default(),
            image_rootfs: None,
            hostname: short_hostname(&task.id),
            cgroup_path: format!("/{}/{}", ctx.config.cgroup_parent, task.id),
            mem_limit_bytes: task.resources.mem_mib * 1024 * 1024,
            cpus_milli: task.resources.cpus_milli,
            pids_limit: TASK_PIDS_MAX,
            kill_grace_ms: launch.kill_grace_period_ms,
            container_state_root: ctx.config.work_dir.join("containers"),
            mounts,
            log_max_bytes: ctx.config.task_log_max_bytes,
            log_files_max: ctx.config.task_log_files_max,
            stop_signal: image
                .as_ref()
                .and_then(|i| i.config.stop_signal.as_deref())
                .and_then(dcos_runtime::task_dir::parse_signal)
                .unwrap_or(libc::SIGTERM),
            network,
            user_namespace,
            disk_limit_bytes: task.resources.disk_mib << 20,
            output_tail_bytes: task.launch.output_tail_bytes,
        };
        write_json_atomic(&dir.spec(), &spec).context("writing task.json")?;
        let shim_pid = spawn_shim(&ctx.config.shim_exe, dir)?;
        // Recorded by us too (the shim writes the same): a crash of the agent right now
        // must not leave a shim nobody can find.
        dcos_runtime::task_dir::write_atomic(&dir.shim_pid(), shim_pid.to_string().as_bytes())
            .context("writing shim.pid")?;
        Ok(Started {
            supervisor_pid: shim_pid,
            network: spec.network,
        })
    }

    fn prepare_work_dir(
        &self,
        task: &Task,
        dir: &TaskDir,
        config: &AgentConfig,
        images: &ImageStore,
    ) -> anyhow::Result<Option<(u32, u32)>> {
        use std::os::unix::fs::DirBuilderExt;
        let image = resolve_image(&task.launch, images)?;
        let identity = TaskIdentity::resolve(&task.launch, image.as_ref(), &config.policy)?;
        // Root's own until the fetch ends (not `make_work_dir`, which gives it to the task
        // now): a task of the same user could otherwise swap what root writes in it for a
        // link. New, never one left behind.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(dir.work())
            .with_context(|| format!("creating {}", dir.work().display()))?;
        Ok(Some(identity.host_owner()))
    }

    fn supervisor_alive(&self, pid: i32, dir: &TaskDir) -> bool {
        shim_alive(pid, dir)
    }

    fn stop(&self, pid: i32, _dir: &TaskDir) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }

    fn force_cleanup(&self, dir: &TaskDir, live_supervisor: Option<i32>) {
        dcos_runtime::shim::force_cleanup(dir, live_supervisor);
    }

    fn sweep_networks(&self, bridge: &BridgeConfig, live: &[TaskNetwork]) -> usize {
        network::sweep(bridge, live)
    }

    fn stats(&self, spec: &ShimSpec) -> Option<TaskStats> {
        dcos_runtime::cgroups::task_stats(&spec.cgroup_path)
    }
}

impl ShimRuntime {
    /// Chooses the task's address on the bridge (making sure the bridge exists) and its
    /// port forwards: the n-th mapping gets the n-th host port the master gave the task.
    fn bridge_network(
        &self,
        ctx: &LaunchContext,
        task: &Task,
        mappings: &[dcos_core::PortMapping],
    ) -> anyhow::Result<TaskNetwork> {
        let bridge = &ctx.config.bridge;
        let exists = std::path::Path::new("/sys/class/net")
            .join(&bridge.bridge)
            .exists();
        if !self.bridge_ready.load(Ordering::SeqCst) || !exists {
            network::setup_host(bridge)
                .map_err(|e| anyhow::anyhow!("setting up bridge {}: {e}", bridge.bridge))?;
            self.bridge_ready.store(true, Ordering::SeqCst);
        }
        anyhow::ensure!(
            task.ports.len() == mappings.len(),
            "the task has {} host ports for {} port mappings",
            task.ports.len(),
            mappings.len()
        );
        let mut forwards = Vec::new();
        for (mapping, host_port) in mappings.iter().zip(&task.ports) {
            for protocol in mapping.protocol.split(',') {
                forwards.push(PortForward {
                    host_port: *host_port,
                    container_port: mapping.container_port,
                    protocol: match protocol {
                        "udp" => Protocol::Udp,
                        _ => Protocol::Tcp,
                    },
                });
            }
        }
        let address = bridge.allocate(&ctx.used_addresses).ok_or_else(|| {
            anyhow::anyhow!(
                "no free address left in {}/{} on bridge {}",
                bridge.subnet,
                bridge.prefix_len,
                bridge.bridge
            )
        })?;
        Ok(bridge.task_network(&task.id, address, forwards))
    }
}

/// The task's image from the store, `None` for a plain process.
fn resolve_image(
    launch: &LaunchSpec,
    images: &ImageStore,
) -> anyhow::Result<Option<ResolvedImage>> {
    launch
        .image
        .as_ref()
        .map(|reference| {
            images
                .resolve(reference)
                .with_context(|| format!("image {reference}"))
        })
        .transpose()
}

/// Who a task runs as: its uid and gid (inside its container, for an image task) and the
/// user namespace that maps them, if any.
struct TaskIdentity {
    uid: u32,
    gid: u32,
    user_namespace: Option<IdMap>,
}

impl TaskIdentity {
    fn resolve(
        launch: &LaunchSpec,
        image: Option<&ResolvedImage>,
        policy: &TaskPolicy,
    ) -> anyhow::Result<TaskIdentity> {
        let (uid, gid) = match image {
            Some(image) => {
                let user = launch.user.as_deref().or(image.config.user.as_deref());
                resolve_user(user, Some(image.layers.as_slice())).map_err(anyhow::Error::msg)?
            }
            // On the host itself: the agent's default user unless the app names one, and
            // root only where the agent allows it.
            None => {
                let user = policy.plain_task_user(launch.user.as_deref());
                let (uid, gid) = resolve_user(Some(user), None).map_err(anyhow::Error::msg)?;
                policy
                    .check_plain_uid(user, uid)
                    .map_err(anyhow::Error::msg)?;
                (uid, gid)
            }
        };
        // Validation allows it only with an image; a log entry from elsewhere is checked too.
        let user_namespace = match (launch.user_namespace, image) {
            (false, _) => None,
            (true, None) => anyhow::bail!("a user namespace needs an image"),
            (true, Some(_)) => {
                let map = IdMap::agent_default();
                anyhow::ensure!(
                    map.host_id(uid).is_some() && map.host_id(gid).is_some(),
                    "user {uid}:{gid} is outside the user namespace's ids (0..{})",
                    map.size
                );
                Some(map)
            }
        };
        Ok(TaskIdentity {
            uid,
            gid,
            user_namespace,
        })
    }

    /// The task's user as the host sees it (mapped, in a user namespace): what owns its
    /// working directory.
    fn host_owner(&self) -> (u32, u32) {
        match self.user_namespace {
            Some(map) => (
                map.host_id(self.uid).expect("checked by resolve"),
                map.host_id(self.gid).expect("checked by resolve"),
            ),
            None => (self.uid, self.gid),
        }
    }
}

/// Volumes to host paths: an absolute `hostPath` must be under the agent's allowed
/// `host_paths` (resolved, see `policy`); a relative one is a directory created in the
/// task's sandbox (owned by the task's root when it runs in a user namespace, so it can
/// write there); `tmpfs` needs no source.
fn resolve_volumes(
    volumes: &[dcos_core::VolumeSpec],
    dir: &TaskDir,
    user_namespace: Option<IdMap>,
    policy: &TaskPolicy,
) -> anyhow::Result<Vec<dcos_runtime::task_dir::MountSpec>> {
    volumes
        .iter()
        .enumerate()
        .map(|(i, volume)| {
            let source = match &volume.host_path {
                Some(host) if host.starts_with('/') => Some(
                    policy
                        .host_path(&format!("container.volumes[{i}].hostPath"), host)
                        .map_err(anyhow::Error::msg)?,
                ),
                Some(relative) => {
                    let path = dir.path.join("volumes").join(relative);
                    std::fs::create_dir_all(&path)
                        .with_context(|| format!("creating sandbox volume {}", path.display()))?;
                    if let Some(map) = user_namespace {
                        std::os::unix::fs::chown(&path, Some(map.host_base), Some(map.host_base))
                            .with_context(|| format!("chown {}", path.display()))?;
                    }
                    Some(path)
                }
                None => None,
            };
            Ok(dcos_runtime::task_dir::MountSpec {
                destination: volume.container_path.clone(),
                source,
                read_only: volume.read_only(),
                tmpfs_size_mib: volume.tmpfs.as_ref().map(|t| t.size_mib),
            })
        })
        .collect()
}

/// The working directory of a task without an image (or of a container task with fetched
/// artifacts, bound at `CONTAINER_SANDBOX`): its own (mode 0700), inside a task directory it
/// may only traverse. It may exist already: `prepare_work_dir` made it for the fetch, which
/// handed it and its contents to the task (this chown then changes nothing). Never through
/// a link (lchown; the task directory is root's, so nothing else can put one there).
fn make_work_dir(path: &std::path::Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e)
            if e.kind() == std::io::ErrorKind::AlreadyExists
                && path.symlink_metadata().is_ok_and(|m| m.is_dir()) => {}
        Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
    }
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {uid}:{gid} {}", path.display()))
}

fn short_hostname(task_id: &str) -> String {
    task_id.chars().take(63).collect()
}

/// Starts `dcos-rs __shim <dir>` in its own session (so Ctrl-C in a terminal and the
/// agent's death do not reach it), with its diagnostics in `shim.log`.
fn spawn_shim(exe: &std::path::Path, dir: &TaskDir) -> anyhow::Result<i32> {
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(dir.shim_log())
            .context("creating shim.log")?
    };
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("__shim")
        .arg(&dir.path)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().context("cloning shim.log handle")?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("starting shim {}", exe.display()))?;
    let pid = child.id().context("shim has no pid")? as i32;
    // Reap the shim when it exits (it is our child until we exit).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(pid)
}

/// True if `pid` is the live `dcos-rs __shim` of the task in `dir` (not a recycled pid).
fn shim_alive(pid: i32, dir: &TaskDir) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    // After the command name: the state, then six numbers, then the flags.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
    let zombie = fields
        .next()
        .is_none_or(|state| state == "Z" || state == "X");
    if zombie {
        return false;
    }
    if cmdline.is_empty() {
        // A process in the middle of its exec has no arguments yet (the kernel sets them
        // after it closed the close-on-exec pipe that let the spawn return): a shim just
        // started looks like this for a moment (seen in about 7 % of reads made at once).
        // Only a child of this agent can be in that moment (a shim found after a restart
        // is long past it), and not a kernel thread (PF_KTHREAD), which has no arguments
        // either.
        const PF_KTHREAD: u64 = 0x0020_0000;
        let ppid: Option<u32> = fields.next().and_then(|f| f.parse().ok());
        let flags: u64 = fields
            .nth(4)
            .and_then(|f| f.parse().ok())
            .unwrap_or(PF_KTHREAD);
        return ppid == Some(std::process::id()) && flags & PF_KTHREAD == 0;
    }
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let same_task = args
        .get(2)
        .is_some_and(|a| *a == dir.path.as_os_str().as_encoded_bytes());
    args.get(1).is_some_and(|a| *a == b"__shim") && same_task
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_live_shim_of_the_task_counts_as_its_supervisor() {
        let dir = TaskDir::new("/nonexistent/task");
        // Kernel threads have no arguments (kthreadd is pid 2).
        assert!(!shim_alive(2, &dir));
        // A live process that is not a shim (this test).
        assert!(!shim_alive(std::process::id() as i32, &dir));
        // No such process.
        assert!(!shim_alive(i32::MAX, &dir));
    }

    /// A shim is alive from the moment its spawn returns, also while the kernel is still
    /// in its exec (no arguments yet): it was taken for gone and its task reported lost.
    #[test]
    fn a_shim_is_alive_from_its_spawn_on() {
        let scratch = tempfile::tempdir().unwrap();
        // Runs as `sh __shim <dir>`, which is what shim_alive looks for.
        std::fs::write(scratch.path().join("__shim"), "sleep 30\n").unwrap();
        let dir = TaskDir::new(scratch.path().join("task"));
        let spawn = || {
            std::process::Command::new("/bin/sh")
                .arg("__shim")
                .arg(&dir.path)
                .current_dir(scratch.path())
                .spawn()
                .unwrap()
        };
        let mut mistaken = 0;
        for _ in 0..300 {
            let mut child = spawn();
            if !shim_alive(child.id() as i32, &dir) {
                mistaken += 1;
            }
            child.kill().unwrap();
            child.wait().unwrap();
        }
        assert_eq!(mistaken, 0, "live shims taken for gone");
        // Once its exec is done, a shim of another task is not this task's.
        let mut child = spawn();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(shim_alive(child.id() as i32, &dir));
        assert!(!shim_alive(
            child.id() as i32,
            &TaskDir::new("/another/task")
        ));
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
