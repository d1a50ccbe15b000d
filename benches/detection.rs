//! `make bench-detection`: how long the masters take to mark a dead agent unreachable, and
//! whether a live agent on a lossy network is ever marked so (format: ARCHITECTURE.md, Benchmarks), at the
//! DEFAULT settings: agents unreachable after 4 s of silence, agent heartbeat 500 ms.
//!
//! 3 real masters and one agent (e2e harness: network namespaces on one bridge, mutual
//! TLS), started with `Cluster::with_default_timeouts`, so the built-in defaults apply.
//!
//! - Detection, `DCOS_BENCH_TRIALS` trials (default 10): SIGKILL to the agent, then the
//!   leader's `GET /cluster/v1/nodes` every 100 ms until the agent's state is
//!   `unreachable`; the agent is restarted and active again before the next trial. The kill
//!   comes a different time after the agent is seen active in each trial (spread over one
//!   heartbeat interval), so its phase against the heartbeat varies.
//! - False positives: the healthy agent's host drops 10 % of its frames each way (nftables
//!   `numgen random`, no netem here) for `DCOS_BENCH_LOSS_SECS` (default 600); the leader is
//!   asked for the agent's state every second. A false positive is one marking as
//!   unreachable: counted both as transitions seen by the polls and as the masters'
//!   `agent unreachable` log lines over the run (which also catch a marking shorter than a
//!   poll interval); the larger count is reported.
//!
//! Not measured: detection of a partitioned (rather than dead) agent, which waits for the
//! same timeout; tasks' replacement after the marking.
//!
//! Needs root (namespaces, nftables).

#[path = "../e2e/net.rs"]
#[allow(dead_code)]
mod net;

#[path = "../e2e/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[allow(dead_code)] // each benchmark uses part of it
mod common;

use cluster::{master_url, wait_for, Cluster};
use hyper::{Method, StatusCode};
use serde_json::Value;
use std::time::{Duration, Instant};

const MASTERS: [u32; 3] = [1, 2, 3];
const AGENT: u32 = 4;
/// The agent's default heartbeat (src/agent/remote.rs), over which kill times are spread.
const DEFAULT_HEARTBEAT: Duration =
    Duration::from_millis(dcos_rs::agent::remote::DEFAULT_HEARTBEAT_MS);
const DETECTION_POLL: Duration = Duration::from_millis(100);
/// A trial gives up (and the benchmark fails) when no marking comes within this.
const DETECTION_MAX: Duration = Duration::from_secs(120);
const LOSS_PERCENT: u32 = 10;
const LOSS_POLL: Duration = Duration::from_secs(1);
/// The line a master logs when it marks an agent unreachable (src/master/mod.rs).
const UNREACHABLE_LOG_LINE: &str = "agent unreachable";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // A panic unwinds through `run` and drops (kills) the cluster.
    runtime.block_on(run());
}

async fn run() {
    let trials = common::env_number("DCOS_BENCH_TRIALS", 10);
    let loss_secs = common::env_number("DCOS_BENCH_LOSS_SECS", 600);
    assert!(trials >= 1, "DCOS_BENCH_TRIALS must be at least 1");
    let load_before = common::loadavg();
    let mut cluster = Cluster::with_default_timeouts(AGENT);
    for host in MASTERS {
        cluster.start_master(host, &MASTERS).await;
    }
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    cluster.start_agent(AGENT, &MASTERS).await;
    let agent_id = cluster.agent_id(AGENT);
    wait_active(&cluster, leader, &agent_id).await;

    let mut detections = Vec::new();
    for n in 0..trials {
        let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
        wait_active(&cluster, leader, &agent_id).await;
        // Spread the kill over one heartbeat interval, trial by trial.
        let phase = DEFAULT_HEARTBEAT.mul_f64(n as f64 / trials as f64);
        tokio::time::sleep(Duration::from_secs(1) + phase).await;
        cluster.kill(AGENT);
        let killed = Instant::now();
        let detected = loop {
            if agent_state(&cluster, leader, &agent_id).await.as_deref() == Some("unreachable") {
                break killed.elapsed();
            }
            assert!(
                killed.elapsed() < DETECTION_MAX,
                "the killed agent was not marked unreachable within {DETECTION_MAX:?}"
            );
            tokio::time::sleep(DETECTION_POLL).await;
        };
        eprintln!(
            "bench-detection: trial {}/{trials}: marked unreachable {:.1} s after the kill",
            n + 1,
            detected.as_secs_f64()
        );
        detections.push(detected);
        cluster.start(AGENT).await;
    }

    // False positives: a live agent behind 10 % loss each way.
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    wait_active(&cluster, leader, &agent_id).await;
    let logged_before = unreachable_log_lines(&cluster);
    let registered_before = agent_field(&cluster, leader, &agent_id, "registeredAt").await;
    cluster.net().packet_loss(AGENT, LOSS_PERCENT);
    let started = Instant::now();
    let (mut polls, mut failed_polls, mut transitions, mut registrations) = (0, 0, 0, 0);
    let (mut last_state, mut last_registered) = (Some("active".to_string()), registered_before);
    let mut next_poll = Instant::now();
    while started.elapsed() < Duration::from_secs(loss_secs) {
        tokio::time::sleep_until(next_poll.into()).await;
        next_poll += LOSS_POLL;
        polls += 1;
        let Some(agent) = agent_view(&cluster, leader, &agent_id).await else {
            failed_polls += 1;
            continue;
        };
        let state = agent["state"].as_str().map(str::to_string);
        if state.as_deref() == Some("unreachable") && last_state.as_deref() != Some("unreachable") {
            transitions += 1;
            eprintln!(
                "bench-detection: the live agent was marked unreachable {:.0} s into the loss",
                started.elapsed().as_secs_f64()
            );
        }
        let registered = agent["registeredAt"].as_str().map(str::to_string);
        if registered != last_registered {
            registrations += 1;
        }
        (last_state, last_registered) = (state, registered);
    }
    let lossy = started.elapsed();
    cluster.net().heal();
    let logged = unreachable_log_lines(&cluster) - logged_before;
    let false_positives = transitions.max(logged);
    drop(cluster);
    let load_after = common::loadavg();

    let mut sorted = detections.clone();
    sorted.sort();
    println!(
        "# bench-detection: 3 masters, 1 agent, DEFAULT settings (agent unreachable after {} ms \
         of silence, heartbeat {} ms); kill -9 of the agent → the leader reports it unreachable \
         (polled every {} ms)",
        dcos_rs::master::config::DEFAULT_AGENT_UNREACHABLE_TIMEOUT_MS,
        DEFAULT_HEARTBEAT.as_millis(),
        DETECTION_POLL.as_millis()
    );
    println!(
        "# {trials} trials: {} s",
        detections
            .iter()
            .map(|d| format!("{:.1}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "# p99 of {trials} samples by nearest rank{}",
        if trials <= 100 {
            " = the largest sample"
        } else {
            ""
        }
    );
    println!(
        "# loss run: {LOSS_PERCENT} % of the agent host's frames dropped each way for {:.0} s; {polls} polls \
         ({failed_polls} unanswered), {transitions} transitions to unreachable seen, {logged} \
         `{UNREACHABLE_LOG_LINE}` log lines on the masters, {registrations} re-registrations of the agent",
        lossy.as_secs_f64()
    );
    println!(
        "# check of the log count: {logged_before} `{UNREACHABLE_LOG_LINE}` lines during the {trials} kill trials"
    );
    println!("# load average before: {load_before}; after: {load_after}");
    println!(
        "BENCH detection_p50 {:.0} ms",
        common::ms(common::rank(&sorted, 50.0))
    );
    println!(
        "BENCH detection_p99 {:.0} ms",
        common::ms(common::rank(&sorted, 99.0))
    );
    println!(
        "BENCH detection_false_positives {false_positives} count (over {:.0} s at {LOSS_PERCENT} % loss)",
        lossy.as_secs_f64()
    );
}

async fn agent_view(cluster: &Cluster, master: u32, agent_id: &str) -> Option<Value> {
    let answer = cluster
        .try_call(
            &master_url(master),
            Method::GET,
            "/cluster/v1/nodes",
            None,
            Duration::from_secs(5),
        )
        .await
        .ok()
        .filter(|a| a.status == StatusCode::OK)?;
    answer.body["agents"]
        .as_array()?
        .iter()
        .find(|a| a["id"] == agent_id)
        .cloned()
}

async fn agent_state(cluster: &Cluster, master: u32, agent_id: &str) -> Option<String> {
    agent_field(cluster, master, agent_id, "state").await
}

async fn agent_field(
    cluster: &Cluster,
    master: u32,
    agent_id: &str,
    field: &str,
) -> Option<String> {
    let agent = agent_view(cluster, master, agent_id).await?;
    agent[field].as_str().map(str::to_string)
}

async fn wait_active(cluster: &Cluster, leader: u32, agent_id: &str) {
    wait_for("the agent active", Duration::from_secs(60), async || {
        let state = agent_state(cluster, leader, agent_id).await;
        (state.as_deref() == Some("active")).then_some(())
    })
    .await;
}

/// `agent unreachable` lines in all masters' logs so far.
fn unreachable_log_lines(cluster: &Cluster) -> usize {
    MASTERS
        .iter()
        .map(|host| {
            cluster
                .log(*host)
                .lines()
                .filter(|l| l.contains(UNREACHABLE_LOG_LINE))
                .count()
        })
        .sum()
}
