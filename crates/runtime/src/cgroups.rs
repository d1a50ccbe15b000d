//! Cgroups for plain-process tasks (container tasks get theirs from libcontainer) and the
//! OOM counter for both, on cgroup v1, v2 and hybrid hosts.
//!
//! Limits are the same ones a container gets: memory, cpu shares + quota, pids.

use crate::task_dir::ShimSpec;
use libcgroups::common::{
    create_cgroup_manager, get_cgroup_setup, AnyCgroupManager, CgroupConfig, CgroupManager,
    CgroupSetup, ControllerOpt,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use std::path::PathBuf;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

pub struct TaskCgroup {
    manager: AnyCgroupManager,
    resources: LinuxResources,
    cgroup_path: String,
}

/// Enforces `devices::ALLOWED` on the task's cgroup, whatever this host's layout (see
/// `devices`). Called once the cgroup exists and before the task's code runs.
pub fn enforce_devices(cgroup_path: &str) -> Result<(), String> {
    let unified = matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified));
    crate::devices::enforce(std::path::Path::new(CGROUP_ROOT), unified, cgroup_path)
        .map_err(|e| format!("restricting the task's devices: {e}"))
}

/// The cgroup resources for a task, shared with the OCI config's `linux.resources`.
pub fn linux_resources(spec: &ShimSpec) -> Result<LinuxResources, String> {
    let period: u64 = 100_000;
    // No swap: a task over its memory limit is OOM-killed rather than swapped (where the
    // host can account swap per cgroup at all).
    let memory = if swap_accounting() {
        serde_json::json!({ "limit": spec.mem_limit_bytes, "swap": spec.mem_limit_bytes })
    } else {
        serde_json::json!({ "limit": spec.mem_limit_bytes })
    };
    serde_json::from_value(serde_json::json!({
        "memory": memory,
        "cpu": {
            "shares": (spec.cpus_milli * 1024 / 1000).max(2),
            "quota": (spec.cpus_milli * period / 1000).max(1000),
            "period": period
        },
        "pids": { "limit": spec.pids_limit },
        "devices": crate::devices::oci_rules()
    }))
    .map_err(|e| format!("building cgroup resources: {e}"))
}

impl TaskCgroup {
    pub fn create(spec: &ShimSpec) -> Result<Self, String> {
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: PathBuf::from(&spec.cgroup_path),
            systemd_cgroup: false,
            container_name: spec.task_id.clone(),
        })
        .map_err(|e| format!("cgroup manager for {}: {e}", spec.cgroup_path))?;
        Ok(TaskCgroup {
            manager,
            resources: linux_resources(spec)?,
            cgroup_path: spec.cgroup_path.clone(),
        })
    }

    /// Puts `pid` into the cgroup and applies the limits, devices included.
    pub fn add(&self, pid: Pid) -> Result<(), String> {
        self.manager
            .add_task(pid)
            .map_err(|e| format!("adding pid {pid} to cgroup: {e}"))?;
        self.manager
            .apply(&ControllerOpt {
                resources: &self.resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| format!("applying cgroup limits: {e}"))?;
        enforce_devices(&self.cgroup_path)
    }

    pub fn kill_all(&self) {
        if let Ok(pids) = self.manager.get_all_pids() {
            for pid in pids {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.manager
            .get_all_pids()
            .map(|p| p.is_empty())
            .unwrap_or(true)
    }

    pub fn remove(&self) {
        if let Err(e) = self.manager.remove() {
            eprintln!("shim: removing cgroup: {e}");
        }
    }
}

/// True if swap can be limited per cgroup: v1 `memsw` files, or v2 with swap in use.
fn swap_accounting() -> bool {
    match get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => std::fs::read_to_string("/proc/swaps")
            .map(|s| s.lines().count() > 1)
            .unwrap_or(false),
        _ => std::path::Path::new(CGROUP_ROOT)
            .join("memory/memory.memsw.limit_in_bytes")
            .exists(),
    }
}

/// How many times the kernel's OOM killer fired in the cgroup at `cgroup_path` (v1
/// `memory.oom_control`, v2 `memory.events`); 0 when unknown.
pub fn oom_kill_count(cgroup_path: &str) -> u64 {
    let relative = cgroup_path.trim_start_matches('/');
    let candidates = match get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => vec![(
            PathBuf::from(CGROUP_ROOT)
                .join(relative)
                .join("memory.events"),
            "oom_kill",
        )],
        _ => vec![
            (
                PathBuf::from(CGROUP_ROOT)
                    .join("memory")
                    .join(relative)
                    .join("memory.oom_control"),
                "oom_kill",
            ),
            (
                PathBuf::from(CGROUP_ROOT)
                    .join("unified")
                    .join(relative)
                    .join("memory.events"),
                "oom_kill",
            ),
        ],
    };
    candidates
        .iter()
        .filter_map(|(path, key)| {
            let text = std::fs::read_to_string(path).ok()?;
            text.lines().find_map(|line| {
                let (k, v) = line.split_once(' ')?;
                (k == *key).then(|| v.trim().parse::<u64>().ok()).flatten()
            })
        })
        .sum()
}

/// Removes the cgroup at `cgroup_path` (relative to each hierarchy's root) from every
/// hierarchy under `root` (`/sys/fs/cgroup`), killing whatever is still in it, until
/// `deadline`. Works on the files alone: libcgroups's manager, which container deletion
/// builds, reads /proc/self/mountinfo once per v1 controller (about 1.3 ms of every
/// container's end). Every hierarchy is a directory under `root` (v1 and hybrid: one per
/// controller mount, symlinked aliases skipped), or `root` itself (v2).
pub fn remove_everywhere(
    root: &std::path::Path,
    cgroup_path: &str,
    deadline: std::time::Instant,
) -> Result<(), String> {
    let relative = cgroup_path.trim_start_matches('/');
    if relative.is_empty() || relative.split('/').any(|c| c == "..") {
        return Err(format!("cgroup path {cgroup_path:?} is not a task's"));
    }
    let mut hierarchies = vec![root.to_path_buf()];
    let listing =
        std::fs::read_dir(root).map_err(|e| format!("listing {}: {e}", root.display()))?;
    for entry in listing.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            hierarchies.push(entry.path());
        }
    }
    for hierarchy in hierarchies {
        let cgroup = hierarchy.join(relative);
        loop {
            match std::fs::remove_dir(&cgroup) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    if std::time::Instant::now() >= deadline {
                        return Err(format!("removing {}: still busy", cgroup.display()));
                    }
                    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs"));
                    for pid in procs.iter().flat_map(|p| p.lines()) {
                        if let Ok(pid) = pid.trim().parse::<i32>() {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(format!("removing {}: {e}", cgroup.display())),
            }
        }
    }
    Ok(())
}

/// Moves `pid` into the existing cgroup at `cgroup_path` (relative to each hierarchy's root)
/// in every hierarchy that has it: a process that must count against a running task's
/// limits (its COMMAND health check). Creates, limits and removes nothing; an error when no
/// hierarchy has the cgroup (the task has ended).
pub fn join_existing(cgroup_path: &str, pid: Pid) -> Result<(), String> {
    let unified = matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified));
    join_existing_under(std::path::Path::new(CGROUP_ROOT), unified, cgroup_path, pid)
}

/// `join_existing` under `root`: the one tree itself when `unified` (v2), else each
/// hierarchy directory in it (v1 controllers, and hybrid's `unified`; symlinked aliases
/// such as `cpu` -> `cpu,cpuacct` skipped).
fn join_existing_under(
    root: &std::path::Path,
    unified: bool,
    cgroup_path: &str,
    pid: Pid,
) -> Result<(), String> {
    use std::io::Write;
    let relative = cgroup_path.trim_start_matches('/');
    if relative.is_empty() || relative.split('/').any(|c| c == "..") {
        return Err(format!("cgroup path {cgroup_path:?} is not a task's"));
    }
    let hierarchies: Vec<PathBuf> = if unified {
        vec![root.to_path_buf()]
    } else {
        std::fs::read_dir(root)
            .map_err(|e| format!("listing {}: {e}", root.display()))?
            .flatten()
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
            .map(|entry| entry.path())
            .collect()
    };
    let mut joined = 0;
    for hierarchy in hierarchies {
        let procs = hierarchy.join(relative).join("cgroup.procs");
        // Opened without O_CREAT: a hierarchy without the task's cgroup is skipped, never
        // given one.
        let written = std::fs::OpenOptions::new()
            .write(true)
            .open(&procs)
            .and_then(|mut file| file.write_all(pid.as_raw().to_string().as_bytes()));
        match written {
            Ok(()) => joined += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("adding pid {pid} to {}: {e}", procs.display())),
        }
    }
    if joined == 0 {
        return Err(format!(
            "the task's cgroup {cgroup_path} is gone (has the task ended?)"
        ));
    }
    Ok(())
}

/// Which cgroup layout this host has, for logs and the agent's info.
pub fn setup_name() -> String {
    match get_cgroup_setup() {
        Ok(setup) => setup.to_string(),
        Err(e) => format!("unknown ({e})"),
    }
}

/// Resource usage of one task's cgroup, read from the cgroup filesystem.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStats {
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub oom_kills: u64,
}

/// Stats of the cgroup at `cgroup_path` on this host (v1, v2 or hybrid); `None` if it is gone.
pub fn task_stats(cgroup_path: &str) -> Option<TaskStats> {
    let unified = matches!(get_cgroup_setup(), Ok(CgroupSetup::Unified));
    stats_under(std::path::Path::new(CGROUP_ROOT), unified, cgroup_path)
}

fn read_u64(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn keyed_u64(path: &std::path::Path, key: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
}

/// Reads v2 files (`cpu.stat`, `memory.current`, `memory.max`, `memory.events`) when
/// `unified`, else v1 ones (`cpuacct.usage`, `memory.usage_in_bytes`, ...), under `root`.
fn stats_under(root: &std::path::Path, unified: bool, cgroup_path: &str) -> Option<TaskStats> {
    let relative = cgroup_path.trim_start_matches('/');
    if unified {
        let dir = root.join(relative);
        let memory_limit_bytes = match std::fs::read_to_string(dir.join("memory.max")).ok()?.trim()
        {
            "max" => 0,
            value => value.parse().ok()?,
        };
        Some(TaskStats {
            cpu_seconds: keyed_u64(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0) as f64 / 1e6,
            memory_bytes: read_u64(&dir.join("memory.current")).unwrap_or(0),
            memory_limit_bytes,
            oom_kills: keyed_u64(&dir.join("memory.events"), "oom_kill").unwrap_or(0),
        })
    } else {
        let memory = root.join("memory").join(relative);
        let cpuacct = root.join("cpuacct").join(relative);
        Some(TaskStats {
            cpu_seconds: read_u64(&cpuacct.join("cpuacct.usage")).unwrap_or(0) as f64 / 1e9,
            memory_bytes: read_u64(&memory.join("memory.usage_in_bytes"))?,
            memory_limit_bytes: read_u64(&memory.join("memory.limit_in_bytes")).unwrap_or(0),
            oom_kills: keyed_u64(&memory.join("memory.oom_control"), "oom_kill").unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &std::path::Path, file: &str, text: &str) {
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_process_joins_only_the_hierarchies_that_have_the_task_cgroup() {
        let pid = Pid::from_raw(42);
        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "memory/p/t/cgroup.procs", "");
        write(v1.path(), "cpu,cpuacct/p/t/cgroup.procs", "");
        std::fs::create_dir_all(v1.path().join("pids/p")).unwrap();
        join_existing_under(v1.path(), false, "/p/t", pid).unwrap();
        for hierarchy in ["memory", "cpu,cpuacct"] {
            let procs = v1.path().join(hierarchy).join("p/t/cgroup.procs");
            assert_eq!(std::fs::read_to_string(procs).unwrap(), "42", "{hierarchy}");
        }
        assert!(!v1.path().join("pids/p/t").exists(), "nothing is created");

        let v2 = tempfile::tempdir().unwrap();
        write(v2.path(), "p/t/cgroup.procs", "");
        join_existing_under(v2.path(), true, "/p/t", pid).unwrap();
        let procs = v2.path().join("p/t/cgroup.procs");
        assert_eq!(std::fs::read_to_string(procs).unwrap(), "42");
        let gone = join_existing_under(v2.path(), true, "/p/gone", pid).unwrap_err();
        assert!(gone.contains("is gone"), "{gone}");
        assert!(!v2.path().join("p/gone").exists(), "nothing is created");
        for bad in ["/", "/p/../t"] {
            assert!(
                join_existing_under(v2.path(), true, bad, pid).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn stats_from_v1_and_v2_files() {
        let v1 = tempfile::tempdir().unwrap();
        write(v1.path(), "cpuacct/p/t/cpuacct.usage", "2500000000\n");
        write(v1.path(), "memory/p/t/memory.usage_in_bytes", "1048576\n");
        write(v1.path(), "memory/p/t/memory.limit_in_bytes", "67108864\n");
        write(
            v1.path(),
            "memory/p/t/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        assert_eq!(
            stats_under(v1.path(), false, "/p/t"),
            Some(TaskStats {
                cpu_seconds: 2.5,
                memory_bytes: 1 << 20,
                memory_limit_bytes: 64 << 20,
                oom_kills: 2
            })
        );
        let v2 = tempfile::tempdir().unwrap();
        write(
            v2.path(),
            "p/t/cpu.stat",
            "usage_usec 1500000\nuser_usec 1000000\n",
        );
        write(v2.path(), "p/t/memory.current", "4096\n");
        write(v2.path(), "p/t/memory.max", "max\n");
        write(
            v2.path(),
            "p/t/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        assert_eq!(
            stats_under(v2.path(), true, "/p/t"),
            Some(TaskStats {
                cpu_seconds: 1.5,
                memory_bytes: 4096,
                memory_limit_bytes: 0,
                oom_kills: 1
            })
        );
        assert_eq!(stats_under(v1.path(), false, "/p/gone"), None);
    }
}
