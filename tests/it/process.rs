//! The real `dcos-rs up` process: state survives SIGKILL right after an acknowledged
//! deploy, Ctrl-C stops tasks, and `--keep-tasks` leaves them for the next start to adopt.

use crate::common::{pid_alive, remove_cgroup_parent, require_root, unique, wait_for, BIN};
use dcos_api::{AppEnvelope, TaskView, TasksEnvelope};
use dcos_rs::cli::client::Client;
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct UpProcess {
    child: Child,
    client: Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn spawn_up(data_dir: &Path, cgroup_parent: &str, extra: &[&str]) -> UpProcess {
    spawn_up_from(Path::new(BIN), data_dir, cgroup_parent, extra).await
}

async fn spawn_up_from(
    binary: &Path,
    data_dir: &Path,
    cgroup_parent: &str,
    extra: &[&str],
) -> UpProcess {
    let (port, agent_port) = (free_port(), free_port());
    let child = Command::new(binary)
        .arg("up")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--agent-listen", &format!("127.0.0.1:{agent_port}")])
        .args([
            "--cgroup-parent",
            cgroup_parent,
            "--cpus",
            "1",
            "--mem",
            "1024",
        ])
        .args(extra)
        // up.toml goes beside this cli.toml, not into the machine user's config.
        .env("DCOS_CONFIG", data_dir.with_file_name("cli.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start dcos-rs up");
    let token_file = data_dir.join(dcos_rs::auth::ADMIN_TOKEN_FILE);
    let token = wait_for("up's admin token", Duration::from_secs(30), || async {
        let token = std::fs::read_to_string(&token_file).ok()?;
        (!token.trim().is_empty()).then(|| token.trim().to_string())
    })
    .await;
    let client =
        Client::with_auth(&format!("http://127.0.0.1:{port}"), Some(&token), None).unwrap();
    wait_for("dcos-rs up to answer", Duration::from_secs(30), || async {
        let nodes: dcos_api::NodesView = client.get("/cluster/v1/nodes").await.ok()?;
        nodes
            .agents
            .iter()
            .any(|a| a.state == "active")
            .then_some(())
    })
    .await;
    UpProcess { child, client }
}

impl Drop for UpProcess {
    /// A failed test must not leave `up` running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Ends every task of a test's data dir and removes its cgroup parent when the test ends,
/// also when it fails half-way.
struct TasksGuard {
    tasks_dir: std::path::PathBuf,
    cgroup_parent: String,
}

impl TasksGuard {
    fn new(data: &Path, cgroup_parent: &str) -> Self {
        TasksGuard {
            tasks_dir: data.join("agent/tasks"),
            cgroup_parent: cgroup_parent.to_string(),
        }
    }
}

impl Drop for TasksGuard {
    fn drop(&mut self) {
        crate::common::kill_tasks_under(&self.tasks_dir);
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

impl UpProcess {
    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dcos-rs up did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    async fn deploy(&self, app: &serde_json::Value) {
        let body = serde_json::to_vec(app).unwrap();
        let _: serde_json::Value = self
            .client
            .send_json(hyper::Method::POST, "/v2/apps", &body)
            .await
            .unwrap();
    }

    /// Waits until exactly `n` tasks of `app` run.
    async fn wait_running(&self, app: &str, n: usize, timeout: Duration) -> Vec<TaskView> {
        wait_for(
            &format!("{n} running task(s) of {app}"),
            timeout,
            || async {
                let running = self.running(app).await;
                (running.len() == n).then_some(running)
            },
        )
        .await
    }

    async fn running(&self, app: &str) -> Vec<TaskView> {
        let tasks: TasksEnvelope = match self.client.get("/cluster/v1/tasks").await {
            Ok(t) => t,
            Err(_) => return vec![],
        };
        tasks
            .tasks
            .into_iter()
            .filter(|t| t.app_id == app && t.state == dcos_core::TaskState::Running)
            .collect()
    }
}

fn task_pid(data_dir: &Path, task_id: &str) -> i32 {
    std::fs::read_to_string(data_dir.join("agent/tasks").join(task_id).join("task.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deploy_survives_sigkill_and_restart_adopts_the_task() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cgroup_parent = unique("dcos-rs-test");
    let _guard = TasksGuard::new(&data, &cgroup_parent);
    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    // A stream of acknowledged writes, then SIGKILL right after the last acknowledgement:
    // every one of them must be on disk already.
    for i in 0..20 {
        let app =
            json!({"id": format!("burst/app-{i}"), "cmd": "sleep 1", "mem": 16, "instances": 0});
        up.deploy(&app).await;
    }
    up.deploy(&json!({"id": "durable", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}))
        .await;
    up.signal(nix::sys::signal::Signal::SIGKILL);
    up.wait_exit(Duration::from_secs(5));

    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    let app: AppEnvelope = up
        .client
        .get("/v2/apps/durable")
        .await
        .expect("the app survived SIGKILL");
    let apps: dcos_api::AppsEnvelope = up.client.get("/v2/apps").await.unwrap();
    assert_eq!(
        apps.apps.len(),
        21,
        "every acknowledged deploy survived SIGKILL"
    );
    assert_eq!(app.app.spec.cmd.as_deref(), Some("sleep 1000"));
    let first = up
        .wait_running("/durable", 1, Duration::from_secs(30))
        .await
        .remove(0);
    let pid = task_pid(&data, &first.id);

    // SIGKILL with a running task: the task keeps running and the restart adopts it.
    up.signal(nix::sys::signal::Signal::SIGKILL);
    up.wait_exit(Duration::from_secs(5));
    assert!(pid_alive(pid), "a crash of `up` leaves tasks running");
    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    let adopted = up
        .wait_running("/durable", 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(adopted.id, first.id, "the same task, not a replacement");
    assert_eq!(task_pid(&data, &adopted.id), pid);

    // Ctrl-C (SIGINT) stops the tasks: SIGTERM, then SIGKILL after the grace period.
    up.signal(nix::sys::signal::Signal::SIGINT);
    let status = up.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "clean exit on Ctrl-C: {status:?}");
    assert!(!pid_alive(pid), "Ctrl-C stops the tasks");
    remove_cgroup_parent(&cgroup_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_tasks_leaves_tasks_running_for_the_next_start() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cgroup_parent = unique("dcos-rs-test");
    let _guard = TasksGuard::new(&data, &cgroup_parent);
    let mut up = spawn_up(&data, &cgroup_parent, &["--keep-tasks"]).await;
    up.deploy(&json!({"id": "kept", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2}))
        .await;
    let before = up.wait_running("/kept", 2, Duration::from_secs(30)).await;
    up.signal(nix::sys::signal::Signal::SIGINT);
    assert!(up.wait_exit(Duration::from_secs(30)).success());
    for t in &before {
        assert!(
            pid_alive(task_pid(&data, &t.id)),
            "--keep-tasks leaves {} running",
            t.id
        );
    }
    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    let after = up.wait_running("/kept", 2, Duration::from_secs(30)).await;
    let mut ids_before: Vec<_> = before.iter().map(|t| t.id.clone()).collect();
    let mut ids_after: Vec<_> = after.iter().map(|t| t.id.clone()).collect();
    ids_before.sort();
    ids_after.sort();
    assert_eq!(ids_before, ids_after);
    up.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(up.wait_exit(Duration::from_secs(30)).success());
    for t in &before {
        assert!(!pid_alive(task_pid(&data, &t.id)));
    }
    remove_cgroup_parent(&cgroup_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_survive_an_agent_crash_with_the_same_pids() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cgroup_parent = unique("dcos-rs-test");
    let _guard = TasksGuard::new(&data, &cgroup_parent);
    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    let app = json!({"id": "twenty", "cmd": "sleep 1000", "cpus": 0.01, "mem": 8, "instances": 20});
    up.deploy(&app).await;
    let before = up
        .wait_running("/twenty", 20, Duration::from_secs(60))
        .await;
    let pids: Vec<(String, i32)> = before
        .iter()
        .map(|t| (t.id.clone(), task_pid(&data, &t.id)))
        .collect();
    up.signal(nix::sys::signal::Signal::SIGKILL);
    up.wait_exit(Duration::from_secs(5));
    for (id, pid) in &pids {
        assert!(pid_alive(*pid), "{id} survives the crash");
    }
    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    let after = up
        .wait_running("/twenty", 20, Duration::from_secs(30))
        .await;
    for (id, pid) in &pids {
        assert!(
            after.iter().any(|t| &t.id == id),
            "{id} is adopted, not replaced"
        );
        assert_eq!(task_pid(&data, id), *pid);
        assert!(pid_alive(*pid));
    }
    up.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(up.wait_exit(Duration::from_secs(60)).success());
    for (id, pid) in &pids {
        assert!(!pid_alive(*pid), "{id} is stopped with `up`");
    }
    remove_cgroup_parent(&cgroup_parent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_and_their_logs_survive_an_upgrade_of_the_binary() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cgroup_parent = unique("dcos-rs-test");
    let _guard = TasksGuard::new(&data, &cgroup_parent);
    let installed = dir.path().join("bin/dcos-rs");
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::copy(BIN, &installed).unwrap();
    let mut up = spawn_up_from(&installed, &data, &cgroup_parent, &["--keep-tasks"]).await;
    let app = json!({"id": "ticker", "cmd": "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.1; done",
                     "cpus": 0.1, "mem": 16});
    up.deploy(&app).await;
    let task = up
        .wait_running("/ticker", 1, Duration::from_secs(30))
        .await
        .remove(0);
    let pid = task_pid(&data, &task.id);
    up.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(up.wait_exit(Duration::from_secs(30)).success());

    // "Upgrade": a different binary file takes the old one's place (new inode, new bytes),
    // as a package manager would do it, while the task's shim still runs the old one.
    let staged = dir.path().join("bin/dcos-rs.new");
    std::fs::copy(BIN, &staged).unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&staged)
        .unwrap()
        .write_all(b"upgrade")
        .unwrap();
    std::fs::rename(&staged, &installed).unwrap();
    let stdout = data.join("agent/tasks").join(&task.id).join("stdout");
    let ticks_before = std::fs::read_to_string(&stdout).unwrap().lines().count();

    let mut up = spawn_up_from(&installed, &data, &cgroup_parent, &[]).await;
    let adopted = up
        .wait_running("/ticker", 1, Duration::from_secs(30))
        .await
        .remove(0);
    assert_eq!(adopted.id, task.id);
    assert_eq!(
        task_pid(&data, &task.id),
        pid,
        "the task's pid is unchanged"
    );
    wait_for(
        "the log to go on after the upgrade",
        Duration::from_secs(10),
        || async {
            let lines: Vec<String> = std::fs::read_to_string(&stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect();
            let in_order = lines
                .iter()
                .enumerate()
                .all(|(i, l)| *l == format!("tick-{i}"));
            assert!(
                in_order,
                "no line lost or repeated: {:?}",
                &lines[..lines.len().min(50)]
            );
            (lines.len() > ticks_before + 10).then_some(())
        },
    )
    .await;
    up.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(up.wait_exit(Duration::from_secs(30)).success());
    assert!(!pid_alive(pid));
    remove_cgroup_parent(&cgroup_parent);
}

/// A job every second through Chronos's API, and `up` killed with SIGKILL in the middle of
/// its schedule, then started again: every scheduled instant from the first to the last ran
/// exactly once (those missed while it was down start late, within epsilon), none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_scheduled_instant_runs_once_across_a_sigkill_of_the_master() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cgroup_parent = unique("dcos-rs-test");
    let _guard = TasksGuard::new(&data, &cgroup_parent);
    let mut up = spawn_up(&data, &cgroup_parent, &[]).await;
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 1_000);
    let start = format!("{}Z", &start[..19]);
    let job = json!({
        "name": "tick", "command": "true", "owner": "test", "disabled": false,
        "schedule": format!("R/{start}/PT1S"), "epsilon": "PT60S", "concurrent": true,
        "cpus": 0.1, "mem": 16,
    });
    let post = |up: &UpProcess, job: serde_json::Value| {
        let client = up.client.clone();
        async move {
            let _: serde_json::Value = client
                .send_json(
                    hyper::Method::POST,
                    "/v1/scheduler/iso8601",
                    job.to_string().as_bytes(),
                )
                .await
                .unwrap_or(serde_json::Value::Null);
        }
    };
    post(&up, job.clone()).await;
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    up.signal(nix::sys::signal::Signal::SIGKILL);
    up.wait_exit(Duration::from_secs(5));
    // Down for a while: these instants are missed, and start late after the restart.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let up = spawn_up(&data, &cgroup_parent, &[]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Stop the schedule, and let the runs under way end.
    let mut off = job.clone();
    off["disabled"] = json!(true);
    post(&up, off).await;
    let stat: serde_json::Value = wait_for("the runs to end", Duration::from_secs(20), || async {
        let summary: serde_json::Value = up.client.get("/v1/scheduler/jobs/summary").await.ok()?;
        (summary["jobs"][0]["state"] == "idle").then_some(())?;
        up.client.get("/cluster/v1/jobs/tick").await.ok()
    })
    .await;
    let mut instants: Vec<String> = stat["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["scheduledAt"].as_str().unwrap().to_string())
        .collect();
    let all = instants.len();
    instants.sort();
    instants.dedup();
    assert_eq!(instants.len(), all, "an instant ran twice: {stat}");
    let millis: Vec<u64> = instants
        .iter()
        .map(|i| dcos_core::time::parse_iso8601(i).expect("an instant"))
        .collect();
    let first = dcos_core::time::parse_iso8601(&format!("{}.000Z", &start[..19])).unwrap();
    assert_eq!(millis[0], first, "the first instant ran: {instants:?}");
    assert!(
        millis.windows(2).all(|w| w[1] - w[0] == 1_000),
        "every instant between the first and the last ran: {instants:?}"
    );
    assert!(
        millis.len() >= 7,
        "runs before, during and after the kill: {instants:?}"
    );
}
