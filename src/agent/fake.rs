//! A runtime that runs nothing (`TaskRuntime` for tests and benchmarks): a task "runs" from
//! its start until it is stopped or told to exit, through the same sandbox files the shim
//! writes (`task.json`, `task.pid`, `exit.json`), so the agent above it behaves exactly as
//! with real tasks. Needs no root, no cgroups and no images; one process can hold many
//! agents with it.
//!
//! Not faked: the agent's work dir, its image store and its reports; the master and the
//! frameworks above see a real agent.

use super::runtime::{LaunchContext, Started, TaskRuntime};
use crate::link::now_ms;
use dcos_core::Task;
use dcos_runtime::cgroups::TaskStats;
use dcos_runtime::network::{BridgeConfig, TaskNetwork};
use dcos_runtime::task_dir::{write_atomic, write_json_atomic, ShimSpec, TaskDir, TaskExit};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Fake supervisor pids start above Linux's largest pid (2^22), so none is ever a real
/// process.
const FAKE_PID_BASE: i32 = 1 << 23;

#[derive(Default)]
pub struct FakeRuntime {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    next_pid: i32,
    /// Tasks that have not ended, by fake supervisor pid.
    running: BTreeMap<i32, TaskDir>,
    /// Every task started, by id (tests look them up to end them).
    pids: BTreeMap<String, i32>,
}

impl FakeRuntime {
    /// Ends a running task as if its process exited with `exit_code`; false if no such
    /// task runs here.
    pub fn exit(&self, task_id: &str, exit_code: i32) -> bool {
        let mut state = self.state.lock().expect("fake runtime lock");
        let Some(pid) = state.pids.get(task_id).copied() else {
            return false;
        };
        let Some(dir) = state.running.remove(&pid) else {
            return false;
        };
        write_exit(&dir, Some(exit_code), None, false).is_ok()
    }

    /// Ids of the tasks running now, sorted.
    pub fn running(&self) -> Vec<String> {
        let state = self.state.lock().expect("fake runtime lock");
        // `pids` is keyed by task id, so this is sorted.
        state
            .pids
            .iter()
            .filter(|(_, pid)| state.running.contains_key(pid))
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn write_exit(
    dir: &TaskDir,
    exit_code: Option<i32>,
    signal: Option<i32>,
    kill_requested: bool,
) -> std::io::Result<()> {
    let exit = TaskExit {
        exit_code,
        signal,
        oom_killed: false,
        kill_requested,
        mem_limit_bytes: 0,
        start_error: None,
        finished_at_ms: now_ms(),
    };
    write_json_atomic(&dir.exit(), &exit)
}

impl TaskRuntime for FakeRuntime {
    fn start(&self, task: &Task, dir: &TaskDir, ctx: &LaunchContext) -> anyhow::Result<Started> {
        // The spec the shim would get, minus what only a real start resolves (the image,
        // users, volumes, the network): the agent reads it for recovery and kill graces.
        let spec = ShimSpec {
            task_id: task.id.clone(),
            framework_id: dcos_core::mesos::state::framework_of(&task.owner).to_string(),
            args: match &task.launch.cmd {
                Some(cmd) => vec!["/bin/sh".into(), "-c".into(), cmd.clone()],
                None => task.launch.args.clone().unwrap_or_default(),
            },
            env: task
                .launch
                .env
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            image_digest: None,
            image_layers: vec![],
            image_rootfs: None,
            hostname: task.id.chars().take(63).collect(),
            cgroup_path: format!("/{}/{}", ctx.config.cgroup_parent, task.id),
            mem_limit_bytes: task.resources.mem_mib * 1024 * 1024,
            cpus_milli: task.resources.cpus_milli,
            pids_limit: 0,
            kill_grace_ms: task.launch.kill_grace_period_ms,
            container_state_root: ctx.config.work_dir.join("containers"),
            mounts: vec![],
            log_max_bytes: ctx.config.task_log_max_bytes,
            log_files_max: ctx.config.task_log_files_max,
            stop_signal: libc::SIGTERM,
            network: None,
            user_namespace: None,
            disk_limit_bytes: task.resources.disk_mib << 20,
            output_tail_bytes: task.launch.output_tail_bytes,
        };
        write_json_atomic(&dir.spec(), &spec)?;
        let pid = {
            let mut state = self.state.lock().expect("fake runtime lock");
            state.next_pid += 1;
            let pid = FAKE_PID_BASE + state.next_pid;
            state.running.insert(pid, dir.clone());
            state.pids.insert(task.id.clone(), pid);
            pid
        };
        write_atomic(&dir.shim_pid(), pid.to_string().as_bytes())?;
        // Running at once, as a task whose process started.
        write_atomic(&dir.task_pid(), pid.to_string().as_bytes())?;
        Ok(Started {
            supervisor_pid: pid,
            network: None,
        })
    }

    fn supervisor_alive(&self, pid: i32, _dir: &TaskDir) -> bool {
        let state = self.state.lock().expect("fake runtime lock");
        state.running.contains_key(&pid)
    }

    fn stop(&self, pid: i32, _dir: &TaskDir) {
        let dir = self
            .state
            .lock()
            .expect("fake runtime lock")
            .running
            .remove(&pid);
        if let Some(dir) = dir {
            let _ = write_exit(&dir, None, Some(libc::SIGTERM), true);
        }
    }

    fn force_cleanup(&self, _dir: &TaskDir, live_supervisor: Option<i32>) {
        if let Some(pid) = live_supervisor {
            self.state
                .lock()
                .expect("fake runtime lock")
                .running
                .remove(&pid);
        }
    }

    fn sweep_networks(&self, _bridge: &BridgeConfig, _live: &[TaskNetwork]) -> usize {
        0
    }

    fn stats(&self, _spec: &ShimSpec) -> Option<TaskStats> {
        None
    }
}
