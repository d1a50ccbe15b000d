//! `make bench-scheduling`: how fast the services framework places and starts instances
//! (format: ARCHITECTURE.md, Benchmarks).
//!
//! 1. **Emulated agents.** One master (real Raft, fsync'd on this disk, real HTTP API) and
//!    `DCOS_BENCH_AGENTS` agents (default 1,000) in this process whose tasks run in the fake
//!    runtime (`dcos_rs::agent::fake`): everything above the runtime seam is the real code,
//!    each agent has its own link, sandboxes and reports. `DCOS_BENCH_APPS` apps (default
//!    50) totalling `DCOS_BENCH_INSTANCES` instances (default 50,000) of 0.1 cpu, 32 MiB and
//!    one host port are posted to `/v2/apps` one after another. Printed:
//!    - `placements`: instances recorded (committed launches) per second, from the first
//!      POST until the last instance is in the state (polled every 10 ms);
//!    - `submit_to_running_p99`: per instance, from its app's POST to the RUNNING its agent
//!      reported (`started_at_ms`), 99th percentile;
//!    - `all_running`: from the first POST until every instance runs (polled every 100 ms).
//!
//!    The agents' sandboxes are on a tmpfs (`/dev/shm`): the agents emulate 1,000 machines
//!    on this one's 2 cores, and their file work would otherwise be charged to the master.
//!    They look over their tasks for ends every 5 s instead of every 200 ms, for the same
//!    reason (a task's RUNNING is reported right after its start, so this delays no start;
//!    no task ends here), and their launches share a blocking pool of
//!    `BENCH_BLOCKING_THREADS` threads.
//! 2. **One real agent** (root): `dcos-rs up`'s master and agent in this process, tasks run
//!    by the shim of `DCOS_RS_BIN` (default `target/release/dcos-rs`) as real processes in
//!    cgroups. One app of 100 instances (`sleep`, no image); printed:
//!    `app_100_instances_running`, from the POST until `/v2/apps/{id}` says 100 running
//!    (polled every 10 ms). Skipped with a message when not root.
//!
//! No peer: Marathon needs a JVM and ZooKeeper, which this machine does not have; Nomad's
//! published C1M figure is quoted in docs/PERFORMANCE.md instead.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use common::{env_number, loadavg, ms, rank};
use dcos_rs::agent::fake::FakeRuntime;
use dcos_rs::agent::AgentConfig;
use dcos_rs::cli::client::Client;
use hyper::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

const EMULATED_MONITOR_INTERVAL_MS: u64 = 5_000;
/// The emulated agents share this process's blocking pool (each real agent has its own, on
/// its own machine): tokio's default of 512 threads turned a burst of launches into
/// hundreds of threads switching on the 2 cores the master uses (docs/PERFORMANCE.md).
const BENCH_BLOCKING_THREADS: usize = 8;
const POLL: Duration = Duration::from_millis(10);
const GIVE_UP: Duration = Duration::from_secs(600);

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BENCH_BLOCKING_THREADS)
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        // The real agent first: the emulated agents' work would still load the machine.
        real_agent().await;
        emulated().await;
    });
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

async fn emulated() {
    let agents = env_number("DCOS_BENCH_AGENTS", 1_000) as usize;
    let instances = env_number("DCOS_BENCH_INSTANCES", 50_000) as usize;
    let apps = env_number("DCOS_BENCH_APPS", 50).max(1) as usize;
    // The master's log on this disk (as in production); the agents' sandboxes in memory.
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

    let started = Instant::now();
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
        config.ports = vec![dcos_core::PortRange {
            begin: 31000,
            end: 32999,
        }];
        config.monitor_interval_ms = EMULATED_MONITOR_INTERVAL_MS;
        let agent = common::start_emulated_agent(
            config,
            Arc::new(FakeRuntime::default()),
            &to_master,
            &shutdown_rx,
        )
        .await;
        ids.push(agent.id.clone());
    }
    wait("every agent registered", || {
        ids.iter().all(|id| master.is_connected(id))
    })
    .await;
    eprintln!(
        "{agents} agents registered in {:.1} s; posting {apps} apps, {instances} instances",
        started.elapsed().as_secs_f64()
    );

    let client = Client::new(&url);
    let first_post = Instant::now();
    let mut posted_at: BTreeMap<String, u64> = BTreeMap::new();
    let mut post_latency = Vec::with_capacity(apps);
    for a in 0..apps {
        let n = instances / apps + usize::from(a < instances % apps);
        let id = format!("/bench/app-{a:03}");
        let app = json!({
            "id": id, "cmd": "sleep 3600", "cpus": 0.1, "mem": 32, "instances": n,
        });
        posted_at.insert(id.clone(), now_ms());
        let post = Instant::now();
        let _: Value = client
            .send_json(Method::POST, "/v2/apps", app.to_string().as_bytes())
            .await
            .unwrap_or_else(|e| panic!("posting {id}: {e}"));
        post_latency.push(post.elapsed());
    }
    post_latency.sort();
    let posted = first_post.elapsed();
    wait("every instance recorded", || {
        master.read(|s| s.tasks.len()) >= instances
    })
    .await;
    let placed = first_post.elapsed();
    // Counting running tasks looks at all of them: not as often as the count above.
    wait_every(Duration::from_millis(100), "every instance running", || {
        master.read(|s| {
            s.tasks
                .values()
                .filter(|t| t.state == dcos_core::TaskState::Running)
                .count()
        }) >= instances
    })
    .await;
    let all_running = first_post.elapsed();
    let mut to_running: Vec<Duration> = master.read(|s| {
        s.tasks
            .values()
            .filter_map(|t| {
                let app = t.owner.service_app()?;
                let running = t.started_at_ms?;
                Some(Duration::from_millis(
                    running.saturating_sub(posted_at[app]),
                ))
            })
            .collect()
    });
    to_running.sort();
    eprintln!(
        "posted in {:.2} s (a POST: p50 {:.0} ms, max {:.0} ms), all recorded after {:.2} s, all running after {:.2} s; to running p50 {:.0} ms, max {:.0} ms; load {}",
        posted.as_secs_f64(),
        ms(rank(&post_latency, 50.0)),
        ms(*post_latency.last().expect("apps")),
        placed.as_secs_f64(),
        all_running.as_secs_f64(),
        ms(rank(&to_running, 50.0)),
        ms(*to_running.last().expect("instances")),
        loadavg()
    );
    println!(
        "BENCH placements {:.0} per_s",
        instances as f64 / placed.as_secs_f64()
    );
    println!(
        "BENCH submit_to_running_p99 {:.0} ms",
        ms(rank(&to_running, 99.0))
    );
    println!("BENCH all_running {:.0} ms", ms(all_running));
    let _ = shutdown.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

async fn real_agent() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("app_100_instances_running skipped: it runs real tasks in cgroups (run as root)");
        return;
    }
    let bin = std::env::var("DCOS_RS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/dcos-rs")
        });
    assert!(
        bin.exists(),
        "{} is missing: `make build` first, or name the binary in DCOS_RS_BIN",
        bin.display()
    );
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("data dir");
    let cgroup_parent = format!("dcos-rs-bench-{}", std::process::id());
    let mut agent = AgentConfig::new(PathBuf::new(), String::new());
    agent.shim_exe = bin;
    agent.cpus = Some(2.0);
    agent.mem_mib = Some(4096);
    agent.cgroup_parent = cgroup_parent;
    agent.ports = vec![dcos_core::PortRange {
        begin: 31000,
        end: 31999,
    }];
    let opts = dcos_rs::up::UpOptions {
        data_dir: dir.path().join("data"),
        keep_tasks: false,
        announce: false,
        tokens_file: None,
        insecure_no_auth: true,
        agent,
    };
    let master_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let handle = dcos_rs::up::start(opts, master_listener, agent_listener)
        .await
        .expect("dcos-rs up starts");
    let client = Client::new(&handle.master_url);
    let app = json!({
        "id": "/bench/hundred", "cmd": "sleep 3600", "cpus": 0.01, "mem": 8, "instances": 100,
    });
    let posted = Instant::now();
    let _: Value = client
        .send_json(Method::POST, "/v2/apps", app.to_string().as_bytes())
        .await
        .expect("posting the app");
    loop {
        let app: Value = client
            .get("/v2/apps/bench/hundred")
            .await
            .expect("reading the app");
        if app["app"]["tasksRunning"].as_u64() == Some(100) {
            break;
        }
        assert!(
            posted.elapsed() < GIVE_UP,
            "100 instances not running: {app}"
        );
        tokio::time::sleep(POLL).await;
    }
    let elapsed = posted.elapsed();
    eprintln!("load {}", loadavg());
    println!("BENCH app_100_instances_running {:.0} ms", ms(elapsed));
    handle.stop(false).await.expect("the cluster stops");
}

async fn wait(what: &str, done: impl FnMut() -> bool) {
    wait_every(POLL, what, done).await
}

async fn wait_every(poll: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        assert!(since.elapsed() < GIVE_UP, "gave up waiting: {what}");
        tokio::time::sleep(poll).await;
    }
}
