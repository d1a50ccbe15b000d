//! COMMAND health checks run beside their task and inside its confinement: a plain task's
//! check in its cgroup, as its user, with its environment, in its working directory; a
//! container task's check inside the container (its namespaces, root filesystem, seccomp
//! filter and capabilities), with and without a user namespace. A check that keeps failing
//! gets its task replaced, and one that overruns its timeout is killed and says so.

use crate::common::{busybox_image, TestCluster};
use dcos_api::TaskView;
use dcos_core::TaskState;
use dcos_runtime::testimage::TestImageFormat;
use serde_json::json;
use std::time::{Duration, Instant};

/// A COMMAND check as Marathon takes it, probing every second from the start.
fn command_check(command: &str, grace_seconds: u32, max_failures: u32) -> serde_json::Value {
    json!({
        "protocol": "COMMAND", "command": {"value": command},
        "intervalSeconds": 1, "timeoutSeconds": 1, "gracePeriodSeconds": grace_seconds,
        "maxConsecutiveFailures": max_failures, "delaySeconds": 0
    })
}

/// A check script: each condition in turn; the first that does not hold prints its
/// complaint (which the failure's cause quotes) and fails the check.
fn script(conditions: &[(&str, &str)]) -> String {
    conditions
        .iter()
        .map(|(condition, complaint)| {
            format!("{{ {condition}; }} || {{ echo '{complaint}'; exit 1; }}")
        })
        .collect::<Vec<String>>()
        .join("; ")
}

/// What a container task's check must find inside the container; `marker` is a file on the
/// host it must not see.
fn inside_the_container(marker: &std::path::Path) -> Vec<(String, &'static str)> {
    vec![
        ("test -f /bin/busybox".into(), "not in the image root"),
        (
            format!("! test -e {}", marker.display()),
            "sees the host files",
        ),
        (
            "test -e /proc/self/status".into(),
            "outside the pid namespace",
        ),
        (
            "grep -qx sleep /proc/1/comm".into(),
            "pid 1 is not the task",
        ),
        (
            "grep -q 'NoNewPrivs:.*1' /proc/self/status".into(),
            "no no_new_privs",
        ),
        (
            "grep -q 'Seccomp:.*2' /proc/self/status".into(),
            "no seccomp filter",
        ),
        (
            same(
                "grep CapBnd /proc/self/status",
                "grep CapBnd /proc/1/status",
            ),
            "another bounding set than the task",
        ),
        (
            same(
                "grep CapEff /proc/self/status",
                "grep CapEff /proc/1/status",
            ),
            "other capabilities than the task",
        ),
        (
            same("cat /proc/self/uid_map", "cat /proc/1/uid_map"),
            "another user namespace than the task",
        ),
        (
            "test \"$(hostname)\" = \"$(echo \"$MESOS_TASK_ID\" | cut -c1-63)\"".into(),
            "another hostname than the task",
        ),
        (
            "grep -qF \"/$MESOS_TASK_ID\" /proc/self/cgroup".into(),
            "outside the task cgroup",
        ),
        (
            "test \"$MESOS_TASK_ID\" != ''".into(),
            "without the task environment",
        ),
    ]
}

/// A condition: the two commands print the same.
fn same(one: &str, other: &str) -> String {
    format!("test \"$({one})\" = \"$({other})\"")
}

/// `inside_the_container` as one script.
fn joined(conditions: &[(String, &'static str)]) -> String {
    let borrowed: Vec<(&str, &str)> = conditions
        .iter()
        .map(|(condition, complaint)| (condition.as_str(), *complaint))
        .collect();
    script(&borrowed)
}

/// Polls the app's tasks until `wanted` picks one; panics after 30 s with what the checks
/// reported.
async fn wait_for_task(
    cluster: &TestCluster,
    app_id: &str,
    what: &str,
    wanted: impl Fn(&TaskView) -> bool,
) -> TaskView {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tasks = cluster.tasks(app_id).await;
        if let Some(task) = tasks.iter().find(|t| wanted(t)) {
            return task.clone();
        }
        if Instant::now() > deadline {
            let seen: Vec<String> = tasks
                .iter()
                .map(|t| {
                    format!(
                        "{} {:?} {:?} {:?}",
                        t.id, t.state, t.message, t.health_check_results
                    )
                })
                .collect();
            panic!("timed out waiting for {what} of {app_id}; tasks: {seen:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn healthy(task: &TaskView) -> bool {
    task.state == TaskState::Running
        && task
            .health_check_results
            .as_ref()
            .is_some_and(|results| !results.is_empty() && results.iter().all(|r| r.alive))
}

fn failure_cause(task: &TaskView) -> Option<String> {
    task.health_check_results
        .as_ref()?
        .iter()
        .find_map(|r| r.last_failure_cause.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_checks_run_inside_their_task_and_a_failing_one_replaces_it() {
    use std::os::unix::fs::PermissionsExt;
    let cluster = TestCluster::start().await;
    // The user-namespaced task's root walks to its sandbox as an unprivileged host id.
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    // A file only the host has (removed with the cluster's directory).
    let marker = cluster.dir.path().join("host-marker");
    std::fs::write(&marker, "the host's\n").unwrap();
    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:checks",
        TestImageFormat::DockerSave,
    );
    let url = format!("{}/images", cluster.handle().agent_url);
    let _: dcos_api::ImagesEnvelope = cluster.client.upload(&url, &tarball).await.unwrap();

    let plain_check = script(&[
        ("test -f ok", "not in the task working directory"),
        (
            "test \"$MESOS_TASK_ID\" != ''",
            "without the task environment",
        ),
        (
            "grep -qF \"/$MESOS_TASK_ID\" /proc/self/cgroup",
            "outside the task cgroup",
        ),
        (
            "test \"$(id -u)\" = \"$(stat -c %u .)\"",
            "not as the task user",
        ),
    ]);
    let container_check = joined(&inside_the_container(&marker));
    let apps = [
        json!({
            "id": "cmd-ok", "cmd": "echo up > ok; sleep 1000", "cpus": 0.1, "mem": 32,
            "healthChecks": [command_check(&plain_check, 5, 3)]
        }),
        json!({
            "id": "cmd-container", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": "busybox:checks"}},
            "healthChecks": [command_check(&container_check, 5, 3)]
        }),
        json!({
            "id": "cmd-userns", "cmd": "exec sleep 1000", "cpus": 0.1, "mem": 32,
            "container": {
                "type": "MESOS", "docker": {"image": "busybox:checks"}, "userNamespace": true
            },
            "healthChecks": [command_check(&container_check, 5, 3)]
        }),
        json!({
            "id": "cmd-failing", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
            "healthChecks": [command_check("echo nope >&2; exit 3", 0, 2)]
        }),
        json!({
            "id": "cmd-slow", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
            "healthChecks": [command_check("sleep 30", 0, 100)]
        }),
    ];
    for app in apps {
        cluster.deploy(app).await.expect("deploy");
    }

    for app_id in ["/cmd-ok", "/cmd-container", "/cmd-userns"] {
        wait_for_task(&cluster, app_id, "a healthy task", healthy).await;
    }

    let failing = wait_for_task(&cluster, "/cmd-failing", "a failed check", |t| {
        failure_cause(t).is_some()
    })
    .await;
    assert_eq!(
        failure_cause(&failing).as_deref(),
        Some("exited with status 3: nope"),
        "{failing:?}"
    );
    wait_for_task(&cluster, "/cmd-failing", "a replacement task", |t| {
        t.state == TaskState::Running && t.id != failing.id
    })
    .await;

    let slow = wait_for_task(&cluster, "/cmd-slow", "a check that timed out", |t| {
        failure_cause(t).is_some()
    })
    .await;
    assert_eq!(
        failure_cause(&slow).as_deref(),
        Some("timed out after 1 s"),
        "{slow:?}"
    );
    cluster.stop().await;
}

/// A check's own deadline (`-t`): with nobody left to kill it (an agent restarted
/// meanwhile), what `dcos-rs __exec` started ends at it, also a workload that ignores
/// SIGALRM, and what that workload started in the background.
#[test]
fn a_check_ends_at_its_own_deadline_without_the_agent() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    crate::common::require_root();
    let dir = tempfile::TempDir::new().unwrap();
    let pid_file = dir.path().join("background.pid");
    let (gate_read, gate_write) = nix::unistd::pipe().unwrap();
    let gate_fd = gate_read.as_raw_fd();
    let mut command = std::process::Command::new(crate::common::BIN);
    // In a group of its own, as the agent starts a check.
    command.process_group(0);
    command.args([
        "__exec",
        &gate_fd.to_string(),
        "0",
        "0",
        "-t",
        "1",
        "--",
        "sh",
        "-c",
        &format!(
            "trap '' ALRM TERM; sleep 30 & echo $! > {}; wait; wait",
            pid_file.display()
        ),
    ]);
    // SAFETY: fcntl is async-signal-safe; it keeps the gate open across the exec.
    unsafe {
        command.pre_exec(move || {
            if libc::fcntl(gate_fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    drop(gate_read);
    nix::unistd::write(&gate_write, &[1]).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let background = std::fs::read_to_string(&pid_file).unwrap();
    let background = background.trim();
    assert!(!background.is_empty());
    // Killed with the group; reparented, it is reaped by init in a moment.
    let gone = (0..100).any(|_| {
        let stat = std::fs::read_to_string(format!("/proc/{background}/stat"));
        let zombie = stat.as_ref().is_ok_and(|s| s.contains(") Z "));
        if stat.is_err() || zombie {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
        false
    });
    assert!(
        gone,
        "the background sleep {background} outlived the deadline"
    );
}
