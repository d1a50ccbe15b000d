//! `make bench-dashboard`: how fast the dashboard's pages render with 1,000 tasks (format:
//! ARCHITECTURE.md, Benchmarks).
//!
//! One master (real Raft on this disk, real HTTP API, the embedded dashboard) and
//! `DCOS_BENCH_AGENTS` agents (default 10) in this process whose tasks run in the fake
//! runtime (`dcos_rs::agent::fake`); `DCOS_BENCH_TASKS` instances (default 1,000) in 10
//! apps, all running. Then `benches/dashboard_render.py` opens each page in Debian's headless
//! chromium (Playwright) `DCOS_BENCH_ROUNDS` times (default 5), each in a fresh tab, and
//! takes the time from the navigation's start until the page's data is on screen. Printed
//! per page: the median, as `dashboard_<page>_1000_tasks`.
//!
//! No peer: the DC/OS UI needs DC/OS (Mesos, Marathon, adminrouter), which this machine
//! does not run.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use common::env_number;
use dcos_rs::agent::fake::FakeRuntime;
use dcos_rs::agent::AgentConfig;
use dcos_rs::cli::client::Client;
use hyper::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const GIVE_UP: Duration = Duration::from_secs(300);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    let agents = env_number("DCOS_BENCH_AGENTS", 10) as usize;
    let tasks = env_number("DCOS_BENCH_TASKS", 1_000) as usize;
    let rounds = env_number("DCOS_BENCH_ROUNDS", 5);
    let master_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("master dir");
    let agents_dir = tempfile::tempdir_in("/dev/shm").expect("a tmpfs for the agents");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (master, to_master) = dcos_rs::master::start_local(
        master_dir.path().join("master"),
        listener,
        shutdown_rx.clone(),
    )
    .await
    .expect("the master starts");
    let mut ids = Vec::with_capacity(agents);
    for i in 0..agents {
        let mut config = AgentConfig::new(
            agents_dir.path().join(format!("a{i}")),
            format!("http://a{i}"),
        );
        config.hostname = format!("emulated-{i}");
        config.cpus = Some(64.0);
        config.mem_mib = Some(256 * 1024);
        config.disk_mib = Some(1024 * 1024);
        let agent = common::start_emulated_agent(
            config,
            Arc::new(FakeRuntime::default()),
            &to_master,
            &shutdown_rx,
        )
        .await;
        ids.push(agent.id.clone());
    }
    let client = Client::new(&url);
    const APPS: usize = 10;
    for a in 0..APPS {
        let n = tasks / APPS + usize::from(a < tasks % APPS);
        let app = json!({"id": format!("/bench/app-{a}"), "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "instances": n});
        let _: Value = client
            .send_json(Method::POST, "/v2/apps", app.to_string().as_bytes())
            .await
            .expect("posting an app");
    }
    let since = Instant::now();
    while master.read(|s| {
        s.tasks
            .values()
            .filter(|t| t.state == dcos_core::TaskState::Running)
            .count()
    }) < tasks
    {
        assert!(
            since.elapsed() < GIVE_UP,
            "gave up waiting for {tasks} running tasks"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "{tasks} tasks running on {} agents after {:.1} s; rendering in chromium",
        ids.len(),
        since.elapsed().as_secs_f64()
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/dashboard_render.py");
    let output = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&url)
        .arg(tasks.to_string())
        .arg(rounds.to_string())
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{script} failed (pip install playwright==1.65.2; apt-get install chromium):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{}", String::from_utf8_lossy(&output.stdout));
    let _ = shutdown.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
}
