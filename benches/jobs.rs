//! `make bench-jobs`: how late cron jobs start and what deciding them costs (format:
//! ARCHITECTURE.md, Benchmarks). Every job is `* * * * *` (UTC, ALLOW), runs `true` with
//! 0.01 cpu and 8 MiB, and never retries.
//!
//! 1. **The planner alone** (`dcos_core::jobs::planner::plan`, no I/O): a cluster state with
//!    `DCOS_BENCH_AGENTS` agents (default 100) and `DCOS_BENCH_JOBS` jobs (default 10,000)
//!    written before a minute at which all of them are due. Two rounds, each timed
//!    `DCOS_BENCH_ROUNDS` times (default 9, median kept): the round at that minute (every
//!    job's instant started), then, with those runs recorded, the next round (every run's
//!    task placed: the jobs framework starts a run in one round and places its task in the
//!    next). Printed: `jobs_tick_cost`, the two medians summed, per due job.
//! 2. **Emulated agents**: one master (real Raft, fsync'd on this disk, real HTTP API) and
//!    `DCOS_BENCH_AGENTS` agents in this process whose tasks run in the fake runtime
//!    (`dcos_rs::agent::fake`), as in `benches/scheduling.rs`. `DCOS_BENCH_JOBS` jobs are
//!    posted to Metronome's `POST /v1/jobs` with their schedule, `DCOS_BENCH_IN_FLIGHT`
//!    (default 64) requests at a time. Measured: the `DCOS_BENCH_MINUTES` (default 2) whole
//!    minutes from the first one at least `SETTLE_MS` after the last job was written (a
//!    minute that passed while jobs were being written is left out, and its runs are out of
//!    the way). Per run of those instants: its first task's staging (`staged_at_ms`, when the
//!    leader built the launch) minus the instant it is for (the run's
//!    `Trigger::Schedule::at_ms`; a task id's `ct.<ms>.` is the launch's time, not the
//!    instant, see `planner::task_id`). Printed: `job_start_lag_p99` and `_p50`, and
//!    `job_instants_skipped` (instants of the window the scheduler skipped: should be 0)
//!    and `job_instants_repeated` (instants of the window run more than once: must be 0);
//!    on stderr the runs measured, those missing, the lag to the run's decision and to the
//!    RUNNING the agent reported.
//!
//!    Runs and tasks are read from the master's applied state in this process: the same
//!    records `GET /cluster/v1/jobs/{id}` (`runs[].scheduledAt`, `tasks`) and
//!    `/cluster/v1/tasks` show, without 10,000 requests loading the master while it is
//!    measured. The fake runtime runs a task until it is told to exit, so every
//!    `ENDER_INTERVAL` each task running on an emulated agent is made to exit 0, as `true`
//!    would: runs succeed and free their resources, as in a real cluster. Agents are sized
//!    for three minutes of runs anyway. Their sandboxes are on a tmpfs (`/dev/shm`) and they
//!    look over their tasks every `EMULATED_MONITOR_INTERVAL_MS` (a RUNNING is reported right
//!    after the start whatever this is; ends are reported at the next look).
//!
//! No peer: Metronome and Chronos need a JVM, Mesos and ZooKeeper, which this machine does
//! not have.

#[allow(dead_code)] // each benchmark uses part of it
mod common;

use common::{env_number, loadavg, ms, rank};
use dcos_core::jobs::planner::{plan, JobAction, JobsInput};
use dcos_core::jobs::policy::Concurrency;
use dcos_core::jobs::state::{JobSpec, ScheduleKind, ScheduleSpec, Trigger};
use dcos_core::{Agent, AgentState, ClusterState, Command, Outcome, Resources};
use dcos_rs::agent::fake::FakeRuntime;
use dcos_rs::agent::AgentConfig;
use dcos_rs::cli::client::Client;
use dcos_rs::link::now_ms;
use hyper::Method;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

const MINUTE_MS: u64 = 60_000;
/// A minute boundary (2027-01-01T00:00:00Z): the planner-alone part's due instant.
const T0_MS: u64 = 1_798_761_600_000;
/// The measured window starts at the first whole minute at least this long after the last
/// job was written.
const SETTLE_MS: u64 = 5_000;
/// How often the tasks running on the emulated agents are made to exit, as `true` would.
const ENDER_INTERVAL: Duration = Duration::from_millis(500);
const EMULATED_MONITOR_INTERVAL_MS: u64 = 1_000;
/// What each run takes (Metronome's `run.cpus` and `run.mem`).
const JOB_CPUS: f64 = 0.01;
const JOB_MEM_MIB: u64 = 8;
/// Minutes of runs an agent has room for, were none of them to end.
const MINUTES_OF_ROOM: usize = 3;
/// How often the state is looked at once the last measured instant has passed.
const POLL: Duration = Duration::from_secs(1);
const GIVE_UP: Duration = Duration::from_secs(600);
/// How long after the last measured instant its runs may take to get their tasks.
const LAST_INSTANT_GIVE_UP_MS: u64 = 120_000;

fn main() {
    // The pure part first: the machine is quiet.
    tick_cost();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(emulated());
}

/// Room on each of `agents` agents for `MINUTES_OF_ROOM` minutes of `jobs` runs, and at
/// least what `benches/scheduling.rs` gives an emulated agent: (cpus in thousandths, MiB).
fn agent_size(jobs: usize, agents: usize) -> (u64, u64) {
    let runs = (jobs * MINUTES_OF_ROOM).div_ceil(agents) as u64;
    let cpus_milli = (runs * (JOB_CPUS * 1000.0).ceil() as u64).max(64_000);
    let mem_mib = (runs * JOB_MEM_MIB).max(256 * 1024);
    (cpus_milli, mem_mib)
}

/// The Metronome job posted to `/v1/jobs` by the emulated part.
fn metronome_job(i: usize) -> Value {
    json!({
        "id": job_id(i),
        "run": {"cmd": "true", "cpus": JOB_CPUS, "mem": JOB_MEM_MIB, "disk": 0},
        "schedules": [{
            "id": "default", "cron": "* * * * *", "timezone": "UTC",
            "concurrencyPolicy": "ALLOW", "enabled": true,
        }],
    })
}

fn job_id(i: usize) -> String {
    format!("bench.job-{i:05}")
}

// ---------------------------------------------------------------------------------------
// 1. The planner alone.

fn tick_cost() {
    let jobs = env_number("DCOS_BENCH_JOBS", 10_000).max(1) as usize;
    let agents = env_number("DCOS_BENCH_AGENTS", 100).max(1) as usize;
    let rounds = env_number("DCOS_BENCH_ROUNDS", 9).max(1) as usize;
    let (cpus_milli, mem_mib) = agent_size(jobs, agents);
    let mut state = ClusterState::default();
    for i in 0..agents {
        let agent = Agent {
            id: format!("agent-{i:04}"),
            hostname: format!("h{i}"),
            url: format!("http://h{i}:5051"),
            resources: Resources {
                cpus_milli,
                mem_mib,
                disk_mib: 1024 * 1024,
            },
            state: AgentState::Active,
            registered_at_ms: 1,
            ports: Vec::new(),
            certificate: None,
            certificate_serial: None,
            version: String::new(),
            images: Default::default(),
            attributes: Default::default(),
        };
        assert_eq!(
            state.apply(&Command::RegisterAgent { agent }),
            Outcome::Applied
        );
    }
    for i in 0..jobs {
        let put = Command::PutJob {
            job: job_spec(i),
            create: true,
            at_ms: T0_MS - 30_000,
            if_version_ms: None,
        };
        assert_eq!(state.apply(&put), Outcome::Applied, "job {i}");
    }
    // The round at the minute: every job's instant is decided (a run started).
    let (decide, actions) = timed_rounds(rounds, || plan(&state, &at(T0_MS)));
    let mut started = 0;
    for action in &actions {
        if let JobAction::Start {
            job_id, trigger, ..
        } = action
        {
            started += 1;
            let run_id = format!("run-{started}");
            let start = Command::StartRun {
                job_id: job_id.clone(),
                workflow_id: run_id.clone(),
                run_id,
                trigger: trigger.clone(),
                arguments: Vec::new(),
                at_ms: T0_MS,
            };
            assert_eq!(state.apply(&start), Outcome::Applied, "{start:?}");
        }
    }
    assert_eq!(started, jobs, "every job is due once at the minute");

    // The next round: every run's task placed.
    let (place, actions) = timed_rounds(rounds, || plan(&state, &at(T0_MS + 100)));
    let launches = actions
        .iter()
        .filter(|a| matches!(a, JobAction::Launch { .. }))
        .count();
    assert_eq!(launches, jobs, "every run's task fits");

    let per_job_us = (decide + place).as_secs_f64() * 1e6 / jobs as f64;
    eprintln!(
        "{jobs} jobs due on {agents} agents: deciding round {:.1} ms, placing round {:.1} ms (medians of {rounds})",
        ms(decide),
        ms(place)
    );
    println!("BENCH jobs_tick_cost {per_job_us:.1} us");
}

/// The planner's input at `now_ms`: every agent reachable, images by their reference.
fn at(now_ms: u64) -> JobsInput<'static> {
    JobsInput {
        now_ms,
        connected: &|_| true,
        image_key: &|image| image.to_string(),
    }
}

/// A `* * * * *` job as the Metronome API stores it.
fn job_spec(i: usize) -> JobSpec {
    let mut spec: JobSpec = serde_json::from_value(json!({
        "id": job_id(i),
        "run": {"cmd": "true", "cpus": JOB_CPUS, "mem": JOB_MEM_MIB, "disk": 0},
    }))
    .expect("a valid job");
    spec.schedule = Some(ScheduleSpec {
        id: "default".into(),
        kind: ScheduleKind::Cron("* * * * *".into()),
        time_zone: "UTC".into(),
        // Metronome's default.
        starting_deadline_seconds: 900,
        concurrency: Concurrency::Allow,
        enabled: true,
    });
    spec
}

/// `round` run `rounds` times: the median time, and the last round's actions (every round
/// plans on the same state, so all are the same).
fn timed_rounds(rounds: usize, round: impl Fn() -> Vec<JobAction>) -> (Duration, Vec<JobAction>) {
    let mut times = Vec::with_capacity(rounds);
    let mut actions = Vec::new();
    for _ in 0..rounds {
        let started = Instant::now();
        let planned = round();
        times.push(started.elapsed());
        // The previous round's actions are freed outside the time.
        actions = planned;
    }
    times.sort();
    (rank(&times, 50.0), actions)
}

// ---------------------------------------------------------------------------------------
// 2. Emulated agents.

async fn emulated() {
    let agents = env_number("DCOS_BENCH_AGENTS", 100).max(1) as usize;
    let jobs = env_number("DCOS_BENCH_JOBS", 10_000).max(1) as usize;
    let minutes = env_number("DCOS_BENCH_MINUTES", 2).max(1);
    let in_flight = env_number("DCOS_BENCH_IN_FLIGHT", 64).max(1) as usize;
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

    let (cpus_milli, mem_mib) = agent_size(jobs, agents);
    let mut ids = Vec::with_capacity(agents);
    let mut runtimes = Vec::with_capacity(agents);
    for i in 0..agents {
        let mut config = AgentConfig::new(
            agents_dir.path().join(format!("a{i}")),
            format!("http://a{i}"),
        );
        config.hostname = format!("emulated-{i}");
        config.cpus = Some(cpus_milli as f64 / 1000.0);
        config.mem_mib = Some(mem_mib);
        config.disk_mib = Some(1024 * 1024);
        config.monitor_interval_ms = EMULATED_MONITOR_INTERVAL_MS;
        let runtime = Arc::new(FakeRuntime::default());
        let agent =
            common::start_emulated_agent(config, runtime.clone(), &to_master, &shutdown_rx).await;
        ids.push(agent.id.clone());
        runtimes.push(runtime);
    }
    let since = Instant::now();
    while !ids.iter().all(|id| master.is_connected(id)) {
        assert!(since.elapsed() < GIVE_UP, "gave up waiting for the agents");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ender = tokio::spawn(end_tasks(runtimes));

    // The jobs, `in_flight` POSTs at a time.
    let client = Client::new(&url);
    let next = Arc::new(AtomicUsize::new(0));
    let posting = Instant::now();
    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let (client, next) = (client.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= jobs {
                    break;
                }
                let body = metronome_job(i).to_string();
                let _: Value = client
                    .send_json(Method::POST, "/v1/jobs", body.as_bytes())
                    .await
                    .unwrap_or_else(|e| panic!("posting job {}: {e}", job_id(i)));
            }
        }));
    }
    for worker in workers {
        worker.await.expect("a posting worker panicked");
    }
    let posted = posting.elapsed();
    let first_ms = (now_ms() + SETTLE_MS) / MINUTE_MS * MINUTE_MS + MINUTE_MS;
    let last_ms = first_ms + (minutes - 1) * MINUTE_MS;
    let expected = jobs as u64 * minutes;
    eprintln!(
        "{jobs} jobs posted in {:.1} s ({in_flight} at a time) on {agents} agents; measuring {minutes} minute(s) from {}",
        posted.as_secs_f64(),
        dcos_core::time::iso8601(first_ms)
    );

    // Until every run of the window has its task (or was skipped), or it is given up.
    let settled_ms = last_ms + SETTLE_MS;
    tokio::time::sleep(Duration::from_millis(settled_ms.saturating_sub(now_ms()))).await;
    let observed = loop {
        let observed = master.read(|s| observe(s, first_ms, last_ms));
        let accounted = observed.lags.len() as u64 + observed.skipped;
        if accounted >= expected || now_ms() > last_ms + LAST_INSTANT_GIVE_UP_MS {
            break observed;
        }
        tokio::time::sleep(POLL).await;
    };
    ender.abort();

    let Observed {
        mut lags,
        mut decided,
        mut to_running,
        started,
        skipped,
        repeated,
    } = observed;
    assert!(
        !lags.is_empty(),
        "no run of {} to {} got its task",
        dcos_core::time::iso8601(first_ms),
        dcos_core::time::iso8601(last_ms)
    );
    lags.sort();
    decided.sort();
    to_running.sort();
    let measured = lags.len() as u64;
    eprintln!(
        "{measured} runs measured of {expected} instants ({jobs} jobs x {minutes} minutes): {started} started, {skipped} skipped, {} not launched; to the run's decision p50 {:.0} ms p99 {:.0} ms; to RUNNING p50 {:.0} ms p99 {:.0} ms ({} reported); load {}",
        expected.saturating_sub(measured + skipped),
        ms(rank(&decided, 50.0)),
        ms(rank(&decided, 99.0)),
        to_running.first().map_or(0.0, |_| ms(rank(&to_running, 50.0))),
        to_running.first().map_or(0.0, |_| ms(rank(&to_running, 99.0))),
        to_running.len(),
        loadavg()
    );
    println!("BENCH job_start_lag_p99 {:.0} ms", ms(rank(&lags, 99.0)));
    println!("BENCH job_start_lag_p50 {:.0} ms", ms(rank(&lags, 50.0)));
    println!("BENCH job_instants_skipped {skipped} instants");
    println!("BENCH job_instants_repeated {repeated} instants");
    let _ = shutdown.send(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// Makes every task running on the emulated agents exit 0 every `ENDER_INTERVAL`, as
/// `true` would (the fake runtime runs a task until told otherwise). Until aborted.
async fn end_tasks(runtimes: Vec<Arc<FakeRuntime>>) {
    let runtimes = Arc::new(runtimes);
    loop {
        tokio::time::sleep(ENDER_INTERVAL).await;
        let runtimes = runtimes.clone();
        // Each exit writes the task's exit record: file work, off the async workers.
        let _ = tokio::task::spawn_blocking(move || {
            for runtime in runtimes.iter() {
                for task_id in runtime.running() {
                    runtime.exit(&task_id, 0);
                }
            }
        })
        .await;
    }
}

/// What the state says of the runs for the scheduled instants `first_ms..=last_ms`.
struct Observed {
    /// Per run with a task: the task's staging minus the instant.
    lags: Vec<Duration>,
    /// Per run: its creation (the `StartRun`'s time) minus the instant.
    decided: Vec<Duration>,
    /// Per run whose task was reported RUNNING: that report minus the instant.
    to_running: Vec<Duration>,
    /// Runs of the window, with a task or not yet.
    started: u64,
    /// Instants of the window the scheduler skipped.
    skipped: u64,
    /// Instants of the window run more than once (exactly-once says 0).
    repeated: u64,
}

fn observe(state: &ClusterState, first_ms: u64, last_ms: u64) -> Observed {
    let mut observed = Observed {
        lags: Vec::new(),
        decided: Vec::new(),
        to_running: Vec::new(),
        started: 0,
        skipped: 0,
        repeated: 0,
    };
    let mut seen = std::collections::BTreeSet::new();
    let since = |at_ms: u64, later_ms: u64| Duration::from_millis(later_ms.saturating_sub(at_ms));
    // Finished runs are in their job's history, the others in `runs`.
    let runs = state
        .jobs
        .jobs
        .values()
        .flat_map(|record| record.history.iter())
        .chain(state.jobs.runs.values());
    for run in runs {
        let Trigger::Schedule { at_ms } = run.trigger else {
            continue;
        };
        if !(first_ms..=last_ms).contains(&at_ms) {
            continue;
        }
        if !seen.insert((run.job_id.as_str(), at_ms)) {
            observed.repeated += 1;
            continue;
        }
        observed.started += 1;
        observed.decided.push(since(at_ms, run.created_ms));
        let Some(task_id) = run.task_ids.first() else {
            continue;
        };
        let task = state.tasks.get(task_id);
        // An expunged task (more than `TASKS_KEPT_PER_JOB` ended) still names its staging
        // time: `ct.<staged ms>.<attempt>.<job>.<run>`.
        let staged_ms = task
            .map(|t| t.staged_at_ms)
            .or_else(|| task_id.split('.').nth(1).and_then(|s| s.parse().ok()));
        if let Some(staged_ms) = staged_ms {
            observed.lags.push(since(at_ms, staged_ms));
        }
        if let Some(running_ms) = task.and_then(|t| t.started_at_ms) {
            observed.to_running.push(since(at_ms, running_ms));
        }
    }
    // Every instant of `* * * * *` is a whole minute.
    for record in state.jobs.jobs.values() {
        for skip in &record.skipped {
            let (from, to) = (skip.first_ms.max(first_ms), skip.last_ms.min(last_ms));
            if from <= to {
                observed.skipped += (to - from) / MINUTE_MS + 1;
            }
        }
    }
    observed
}
