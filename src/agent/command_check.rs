//! COMMAND health checks, run beside their task and inside its confinement, as Mesos runs
//! them: `/bin/sh -c <command>` with the task's environment, as the task's user, in the
//! task's cgroup (what the check uses counts against the task's limits), and for a container
//! task inside the container (`dcos_runtime::check_exec`: its namespaces, root filesystem,
//! seccomp filter, and no more capabilities than the task). Healthy on exit 0; a non-zero
//! exit, a signal or the timeout is a failure whose cause says which, with the start of
//! what the check printed.
//!
//! The check's process starts held at a gate (a pipe) until the agent has moved it into
//! the task's cgroup, as the shim starts a plain task. At the timeout its whole process group
//! is killed and reaped. Deliberately absent: the timing and bookkeeping of checks
//! (`health.rs`), and anything of the agent's own environment in the check's.

use dcos_runtime::check_exec::CheckExecArgs;
use dcos_runtime::task_dir::{ShimSpec, TaskDir};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;

/// Command checks running at once on this agent, all tasks together (each is one process,
/// two for a container task): a burst of due checks waits its turn instead of forking
/// hundreds of shells beside the tasks. A check that does not get its turn within its own
/// timeout fails.
const COMMAND_CHECKS_MAX: usize = 16;
/// A check ends on its own this long after its timeout (the agent kills it at the timeout).
const CHECK_DEADLINE_MARGIN_S: u32 = 5;

/// The turns of `COMMAND_CHECKS_MAX` (one per agent process; agents emulated in one
/// process share it).
static CHECK_TURNS: Semaphore = Semaphore::const_new(COMMAND_CHECKS_MAX);

/// Output kept of each of a check's streams; the rest is read and dropped, so the check
/// never blocks on a full pipe.
const OUTPUT_KEPT_MAX_BYTES: usize = 4096;

/// Output quoted in a failure's cause.
const CAUSE_OUTPUT_MAX_BYTES: usize = 200;

/// How long the output is still read once the check has exited: a process it left behind
/// may hold the pipes open.
const OUTPUT_DRAIN_MS: u64 = 100;

/// How long a killed check is waited for; one stuck in the kernel is left to tokio's reaper
/// (`kill_on_drop`).
const REAP_WAIT_MS: u64 = 5_000;

/// Runs `command` once for the task in `dir` with `exe` (the `dcos-rs` binary, the agent's
/// `shim_exe`), killed at `timeout`: `Ok` when it exited 0, else the cause of the failure.
pub(super) async fn run(
    exe: &Path,
    dir: &TaskDir,
    command: &str,
    timeout: Duration,
) -> Result<(), String> {
    let _turn = match tokio::time::timeout(timeout, CHECK_TURNS.acquire()).await {
        Ok(Ok(turn)) => turn,
        // The semaphore is never closed.
        Ok(Err(_)) => return Err("the agent is stopping".to_string()),
        Err(_) => {
            return Err(format!(
            "not started within {}: {COMMAND_CHECKS_MAX} command checks were running on the agent",
            seconds(timeout)
        ))
        }
    };
    let (spec, task_pid) = read_task(dir).await?;
    let (gate_read, gate_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("creating the check's gate: {e}"))?;
    let gate_fd = gate_read.as_raw_fd();
    // The check's own deadline, a little after the agent's kill: it holds when the agent is
    // gone (restarted) before the check ends.
    let deadline_s = u32::try_from(timeout.as_secs())
        .unwrap_or(u32::MAX)
        .saturating_add(CHECK_DEADLINE_MARGIN_S);
    let args = check_args(&spec, task_pid, gate_fd, command, deadline_s)?;
    let mut process = tokio::process::Command::new(exe);
    process
        .args(&args)
        // Root until it drops to the task's user: the task's environment (its LD_PRELOAD
        // too) is handed over in the arguments and reaches only the check's own exec.
        .env_clear()
        .current_dir(working_dir(&spec))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: fcntl is async-signal-safe; it keeps the gate's read end open across exec, in
    // this child only (every other process the agent starts meanwhile has it closed).
    unsafe {
        process.pre_exec(move || {
            if libc::fcntl(gate_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = process
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    drop(gate_read);
    let Some(pid) = child.id() else {
        return Err("the check ended before it started".to_string());
    };
    let pid = Pid::from_raw(pid as i32);
    // Declared after `child`, so dropped before it: the group is killed while its leader is
    // not reaped yet.
    let mut group = GroupKill { leader: Some(pid) };
    let stdout = OutputReader::start(child.stdout.take());
    let stderr = OutputReader::start(child.stderr.take());
    let cgroup_path = spec.cgroup_path.clone();
    let joined = tokio::task::spawn_blocking(move || {
        dcos_runtime::cgroups::join_existing(&cgroup_path, pid)
    })
    .await;
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(format!("moving the check into the task's cgroup: {e}")),
    }
    nix::unistd::write(&gate_write, &[1]).map_err(|e| format!("starting the check: {e}"))?;
    drop(gate_write);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("waiting for the check: {e}")),
        Err(_) => {
            group.kill();
            let reaped = tokio::time::timeout(Duration::from_millis(REAP_WAIT_MS), child.wait());
            if let Ok(Ok(_)) = reaped.await {
                group.disarm();
            }
            return Err(format!("timed out after {}", seconds(timeout)));
        }
    };
    // Reaped: the leader's pid may be reused from now on.
    group.disarm();
    let stdout = stdout.finish().await;
    let stderr = stderr.finish().await;
    verdict(status.code(), status.signal(), &stderr, &stdout)
}

/// The task's spec and, once it runs, its main process as the host sees it; an error once
/// the task has ended.
async fn read_task(dir: &TaskDir) -> Result<(ShimSpec, Option<i32>), String> {
    if tokio::fs::try_exists(dir.exit()).await.unwrap_or(false) {
        return Err("the task has ended".to_string());
    }
    let spec_path = dir.spec();
    let bytes = tokio::fs::read(&spec_path)
        .await
        .map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let spec: ShimSpec = serde_json::from_slice(&bytes)
        .map_err(|e| format!("reading {}: {e}", spec_path.display()))?;
    let task_pid = tokio::fs::read_to_string(dir.task_pid())
        .await
        .ok()
        .and_then(|text| text.trim().parse().ok());
    Ok((spec, task_pid))
}

/// The arguments of `dcos-rs` for one check of the task `spec`: `__exec` for a plain task
/// (in the host's namespaces as the task's user, as the task itself started), `__check-exec`
/// into the container for a container task (whose init is `task_pid`). `gate_fd` is the
/// read end of the pipe that holds the check until it is in the task's cgroup.
fn check_args(
    spec: &ShimSpec,
    task_pid: Option<i32>,
    gate_fd: i32,
    command: &str,
    deadline_s: u32,
) -> Result<Vec<String>, String> {
    let shell = vec!["/bin/sh".to_string(), "-c".to_string(), command.to_string()];
    if spec.image().is_none() {
        let mut args = vec![
            "__exec".to_string(),
            gate_fd.to_string(),
            spec.uid.to_string(),
            spec.gid.to_string(),
        ];
        args.extend(dcos_runtime::shim::deadline_args(Some(deadline_s)));
        args.extend(dcos_runtime::shim::env_args(&spec.env));
        args.push("--".to_string());
        args.extend(shell);
        return Ok(args);
    }
    let task_pid = task_pid.ok_or("the task has not started yet")?;
    Ok(CheckExecArgs {
        task_pid,
        gate_fd,
        uid: spec.uid,
        gid: spec.gid,
        cgroup_path: spec.cgroup_path.clone(),
        cwd: spec.cwd.clone(),
        deadline_s: Some(deadline_s),
        env: spec.env.clone(),
        argv: shell,
    }
    .to_args())
}

/// Where the check process starts: a plain task's working directory; `/` for a container
/// task's, which goes to the task's own directory once inside the container.
fn working_dir(spec: &ShimSpec) -> &str {
    if spec.image().is_none() {
        spec.cwd.as_str()
    } else {
        "/"
    }
}

/// `timeout` for a cause: `1 s`, `1.5 s`.
fn seconds(timeout: Duration) -> String {
    format!("{} s", timeout.as_secs_f64())
}

/// The verdict on a check that ended: healthy on exit 0, else how it ended and the start of
/// what it printed (stderr, else stdout).
fn verdict(
    code: Option<i32>,
    signal: Option<i32>,
    stderr: &[u8],
    stdout: &[u8],
) -> Result<(), String> {
    let how = match (code, signal) {
        (Some(0), _) => return Ok(()),
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended without an exit status".to_string(),
    };
    match excerpt(stderr).or_else(|| excerpt(stdout)) {
        Some(output) => Err(format!("{how}: {output}")),
        None => Err(how),
    }
}

/// The start of a check's output on one line: control characters and runs of white space
/// folded to one space, at most `CAUSE_OUTPUT_MAX_BYTES` (cut at a character boundary and
/// marked `…`); `None` for output that is only white space.
fn excerpt(output: &[u8]) -> Option<String> {
    let text: String = String::from_utf8_lossy(output)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let folded = text.split_whitespace().collect::<Vec<&str>>().join(" ");
    if folded.is_empty() {
        return None;
    }
    if folded.len() <= CAUSE_OUTPUT_MAX_BYTES {
        return Some(folded);
    }
    let mut end = CAUSE_OUTPUT_MAX_BYTES;
    while !folded.is_char_boundary(end) {
        end -= 1;
    }
    Some(format!("{}…", &folded[..end]))
}

/// SIGKILLs the check's process group when dropped armed: a check abandoned at its timeout,
/// on an error, or with the agent's runtime leaves nothing running. Disarmed once the
/// group's leader is reaped, after which its pid (the group's id) may be reused.
struct GroupKill {
    leader: Option<Pid>,
}

impl GroupKill {
    fn kill(&self) {
        if let Some(leader) = self.leader {
            let _ = killpg(leader, Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.leader = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads one of the check's output pipes, keeping its first `OUTPUT_KEPT_MAX_BYTES`;
/// stopped when dropped.
struct OutputReader(Option<tokio::task::JoinHandle<Vec<u8>>>);

impl OutputReader {
    fn start<R>(pipe: Option<R>) -> OutputReader
    where
        R: tokio::io::AsyncRead + Unpin + Send + 'static,
    {
        OutputReader(pipe.map(|pipe| tokio::spawn(read_bounded(pipe))))
    }

    /// What was read, once the pipe is closed or `OUTPUT_DRAIN_MS` have passed.
    async fn finish(mut self) -> Vec<u8> {
        let Some(reader) = self.0.as_mut() else {
            return Vec::new();
        };
        match tokio::time::timeout(Duration::from_millis(OUTPUT_DRAIN_MS), reader).await {
            Ok(Ok(output)) => output,
            _ => Vec::new(),
        }
    }
}

impl Drop for OutputReader {
    fn drop(&mut self) {
        if let Some(reader) = &self.0 {
            reader.abort();
        }
    }
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(mut pipe: R) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        match pipe.read(&mut buffer).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = OUTPUT_KEPT_MAX_BYTES.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn spec(image: bool) -> ShimSpec {
        let mut spec = serde_json::json!({
            "task_id": "web.1",
            "args": ["/bin/sh", "-c", "serve"],
            "env": ["PORT0=31000", "MESOS_TASK_ID=web.1", "EMPTY=", "A=b=c"],
            "cwd": "/work/sandbox",
            "uid": 65534,
            "gid": 65533,
            "hostname": "web.1",
            "cgroup_path": "/dcos-rs/web.1",
            "mem_limit_bytes": 33554432u64,
            "cpus_milli": 100,
            "pids_limit": 4096,
            "kill_grace_ms": 3000,
            "container_state_root": "/state"
        });
        if image {
            spec["image_digest"] = format!("sha256:{}", "0".repeat(64)).into();
            spec["cwd"] = "/app".into();
        }
        serde_json::from_value(spec).expect("a valid spec")
    }

    #[test]
    fn a_plain_task_is_checked_through_exec_as_its_user() {
        let spec = spec(false);
        assert_eq!(
            check_args(&spec, None, 7, "test -f ok", 6).unwrap(),
            [
                "__exec",
                "7",
                "65534",
                "65533",
                "-t",
                "6",
                "-e",
                "PORT0=31000",
                "-e",
                "MESOS_TASK_ID=web.1",
                "-e",
                "EMPTY=",
                "-e",
                "A=b=c",
                "--",
                "/bin/sh",
                "-c",
                "test -f ok"
            ]
        );
        assert_eq!(working_dir(&spec), "/work/sandbox");
    }

    #[test]
    fn a_container_task_is_checked_inside_its_init() {
        let spec = spec(true);
        let args = check_args(&spec, Some(4242), 7, "curl -f localhost", 6).unwrap();
        assert_eq!(args[0], dcos_runtime::check_exec::ENTRY);
        let rest: Vec<OsString> = args[1..].iter().map(OsString::from).collect();
        assert_eq!(
            CheckExecArgs::parse(&rest).unwrap(),
            CheckExecArgs {
                task_pid: 4242,
                gate_fd: 7,
                uid: 65534,
                gid: 65533,
                cgroup_path: "/dcos-rs/web.1".into(),
                cwd: "/app".into(),
                deadline_s: Some(6),
                env: spec.env.clone(),
                argv: vec!["/bin/sh".into(), "-c".into(), "curl -f localhost".into()],
            }
        );
        assert_eq!(working_dir(&spec), "/");
        let error = check_args(&spec, None, 7, "true", 6).unwrap_err();
        assert!(error.contains("not started"), "{error}");
    }

    #[test]
    fn causes_name_how_the_check_ended_and_quote_its_output() {
        let long = "x".repeat(300);
        let accents = "é".repeat(150);
        type Case<'a> = (
            Option<i32>,
            Option<i32>,
            &'a str,
            &'a str,
            Result<(), String>,
        );
        let cases: Vec<Case> = vec![
            (Some(0), None, "noise", "", Ok(())),
            (Some(3), None, "", "", Err("exited with status 3".into())),
            (
                Some(1),
                None,
                "curl: (7) Failed\n to connect\n",
                "ignored",
                Err("exited with status 1: curl: (7) Failed to connect".into()),
            ),
            (
                Some(2),
                None,
                " \n\t",
                "only\r\nstdout\u{1b}[0m",
                Err("exited with status 2: only stdout [0m".into()),
            ),
            (None, Some(9), "", "", Err("killed by signal 9".into())),
            (
                None,
                None,
                "",
                "",
                Err("ended without an exit status".into()),
            ),
            (
                Some(1),
                None,
                long.as_str(),
                "",
                Err(format!("exited with status 1: {}…", "x".repeat(200))),
            ),
            (
                Some(1),
                None,
                accents.as_str(),
                "",
                Err(format!("exited with status 1: {}…", "é".repeat(100))),
            ),
        ];
        for (code, signal, stderr, stdout, expected) in cases {
            assert_eq!(
                verdict(code, signal, stderr.as_bytes(), stdout.as_bytes()),
                expected,
                "{code:?} {signal:?} {stderr:?} {stdout:?}"
            );
        }
        assert_eq!(excerpt(&[0xff, b'o', b'k']).as_deref(), Some("\u{fffd}ok"));
    }

    #[test]
    fn timeouts_read_in_seconds() {
        assert_eq!(seconds(Duration::from_secs(1)), "1 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
    }

    #[tokio::test]
    async fn output_is_kept_up_to_its_bound() {
        let (mut writer, reader) = tokio::io::duplex(64);
        let reading = OutputReader::start(Some(reader));
        tokio::io::AsyncWriteExt::write_all(&mut writer, &vec![b'a'; 3 * OUTPUT_KEPT_MAX_BYTES])
            .await
            .unwrap();
        drop(writer);
        // Not bounded by the drain time: the pipe is closed.
        let kept = tokio::time::timeout(Duration::from_secs(5), async {
            let Some(reader) = reading.0.as_ref() else {
                unreachable!()
            };
            while !reader.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(kept.is_ok(), "the reader ends at the end of the output");
        assert_eq!(reading.finish().await, vec![b'a'; OUTPUT_KEPT_MAX_BYTES]);
    }
}
