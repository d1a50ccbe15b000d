//! `make bench-failover`: from a kill -9 of the leading master to the first acknowledged
//! write sent after the kill, over `DCOS_BENCH_TRIALS` trials (default 20; output format: ARCHITECTURE.md, Benchmarks).
//!
//! One cluster of 3 real masters (e2e harness: network namespaces on one bridge, Raft
//! defaults, mutual TLS) serves every trial. In a trial one client writes without pause
//! (`PUT /v2/apps/f {"instances":0}`, a Raft write; 1 s timeout, a redirect followed, a
//! failure answered by trying the next master after 20 ms, as a client that knows the
//! master list would); after `STEADY` the leader gets SIGKILL; the figure is the time from
//! the kill to the answer of the first write sent after it. The killed master is then
//! restarted and the trial ends once all three name the same leader again.
//!
//! Not measured: a paused or partitioned leader (e2e tests cover them), clients that only
//! know one master.
//!
//! Needs root (namespaces).

#[path = "../e2e/net.rs"]
#[allow(dead_code)]
mod net;

#[path = "../e2e/cluster.rs"]
#[allow(dead_code)]
mod cluster;
#[allow(dead_code)] // each benchmark uses part of it
mod common;

use cluster::{master_url, Cluster};
use hyper::{Method, StatusCode};
use serde_json::json;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MASTERS: [u32; 3] = [1, 2, 3];
/// Writes before the kill: the client and the cluster are in their steady state.
const STEADY: Duration = Duration::from_millis(1500);
/// The longest a write waits for its answer before the client tries the next master.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const RETRY_PAUSE: Duration = Duration::from_millis(20);
/// A trial gives up (and the benchmark fails) when no write succeeds within this.
const FAILOVER_MAX: Duration = Duration::from_secs(30);
const APP: &str = "/f";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // A panic unwinds through `run` and drops (kills) the cluster.
    runtime.block_on(run());
}

/// One trial's figures.
struct Trial {
    killed: u32,
    new_leader: u32,
    /// Kill → answer of the first write sent after the kill.
    first_write: Duration,
    /// Kill → the two survivors name the same leader (polled every 50 ms, for reference).
    elected: Duration,
    /// Writes sent after the kill that failed before the first success.
    failed_attempts: usize,
}

async fn run() {
    let trials = common::env_number("DCOS_BENCH_TRIALS", 20);
    assert!(trials >= 1, "DCOS_BENCH_TRIALS must be at least 1");
    let load_before = common::loadavg();
    let mut cluster = Cluster::new(3);
    for host in MASTERS {
        cluster.start_master(host, &MASTERS).await;
    }
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    let app = json!({ "id": APP, "cmd": "true", "cpus": 0.01, "mem": 4, "instances": 0 });
    let created = cluster.write(leader, Method::POST, "/v2/apps", &app).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);

    let mut results = Vec::new();
    for n in 0..trials {
        let trial = trial(&mut cluster).await;
        eprintln!(
            "bench-failover: trial {}/{trials}: killed {} → {} leads; first write {:.0} ms, elected {:.0} ms",
            n + 1,
            trial.killed,
            trial.new_leader,
            common::ms(trial.first_write),
            common::ms(trial.elected)
        );
        results.push(trial);
    }
    drop(cluster);
    let load_after = common::loadavg();

    let mut gaps: Vec<Duration> = results.iter().map(|t| t.first_write).collect();
    gaps.sort();
    let mut elections: Vec<Duration> = results.iter().map(|t| t.elected).collect();
    elections.sort();
    println!(
        "# bench-failover: {trials} trials, 3 masters (Raft defaults: heartbeat 100 ms, election timeout 300-600 ms), \
         one client writing without pause; kill -9 of the leader → first acknowledged write sent after the kill"
    );
    println!(
        "# p99 of {trials} samples by nearest rank{}",
        if trials <= 100 {
            " = the largest sample"
        } else {
            ""
        }
    );
    println!("# load average before: {load_before}; after: {load_after}");
    println!("# trial killed new  first_write_ms  elected_ms  failed_attempts");
    for (n, t) in results.iter().enumerate() {
        println!(
            "# {:>5} {:>6} {:>3} {:>15.0} {:>11.0} {:>16}",
            n + 1,
            t.killed,
            t.new_leader,
            common::ms(t.first_write),
            common::ms(t.elected),
            t.failed_attempts
        );
    }
    println!(
        "# first write: min {:.0} ms, p50 {:.0} ms, max {:.0} ms; election: p50 {:.0} ms, max {:.0} ms",
        common::ms(gaps[0]),
        common::ms(common::rank(&gaps, 50.0)),
        common::ms(gaps[gaps.len() - 1]),
        common::ms(common::rank(&elections, 50.0)),
        common::ms(elections[elections.len() - 1])
    );
    println!(
        "BENCH failover_p50 {:.0} ms",
        common::ms(common::rank(&gaps, 50.0))
    );
    println!(
        "BENCH failover_p99 {:.0} ms",
        common::ms(common::rank(&gaps, 99.0))
    );
}

async fn trial(cluster: &mut Cluster) -> Trial {
    let old = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    let rest: Vec<u32> = MASTERS.into_iter().filter(|h| *h != old).collect();
    let killed_at: Mutex<Option<Instant>> = Mutex::new(None);
    let cluster_ref = &*cluster;
    let (first_write, (elected, new_leader)) = tokio::join!(
        write_until_acknowledged_after_kill(cluster_ref, &killed_at),
        async {
            tokio::time::sleep(STEADY).await;
            let pid = nix::unistd::Pid::from_raw(cluster_ref.pid(old));
            let t0 = Instant::now();
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
            *killed_at.lock().unwrap() = Some(t0);
            let new = cluster_ref.leader(&rest, FAILOVER_MAX).await;
            (t0.elapsed(), new)
        }
    );
    let (first_write, failed_attempts) = first_write;
    cluster.kill(old); // reaps it
    cluster.start(old).await;
    let all = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    assert_eq!(
        all, new_leader,
        "the restarted master disturbed the new leader"
    );
    Trial {
        killed: old,
        new_leader,
        first_write,
        elected,
        failed_attempts,
    }
}

/// Writes one after another; returns kill → answer of the first write sent after the kill
/// that succeeded, and how many attempts sent after the kill failed before it.
async fn write_until_acknowledged_after_kill(
    cluster: &Cluster,
    killed_at: &Mutex<Option<Instant>>,
) -> (Duration, usize) {
    let body = json!({ "instances": 0 });
    let path = format!("/v2/apps{APP}");
    let mut target = 0;
    let mut failed_after_kill = 0;
    loop {
        let sent = Instant::now();
        let base = master_url(MASTERS[target % MASTERS.len()]);
        let mut answer = cluster
            .try_call(&base, Method::PUT, &path, Some(&body), WRITE_TIMEOUT)
            .await;
        if let Ok(redirect) = &answer {
            if redirect.status == StatusCode::TEMPORARY_REDIRECT {
                let location = redirect.headers["location"].to_str().unwrap().to_string();
                answer = cluster
                    .try_call(&location, Method::PUT, "", Some(&body), WRITE_TIMEOUT)
                    .await;
            }
        }
        let answered = Instant::now();
        let killed = *killed_at.lock().unwrap();
        let after_kill = killed.filter(|k| sent >= *k);
        match answer {
            Ok(a) if a.status == StatusCode::OK => {
                if let Some(killed) = after_kill {
                    return (answered - killed, failed_after_kill);
                }
            }
            Ok(a) => {
                // 503 (no leader yet, lost leadership) is expected during the failover;
                // any other refusal is a bug in the benchmark or the cluster.
                assert!(
                    a.status == StatusCode::SERVICE_UNAVAILABLE,
                    "a write was refused: {} {}",
                    a.status,
                    a.body
                );
                failed_after_kill += usize::from(after_kill.is_some());
                target += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            Err(_) => {
                failed_after_kill += usize::from(after_kill.is_some());
                target += 1;
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        if let Some(killed) = killed {
            assert!(
                killed.elapsed() < FAILOVER_MAX,
                "no write succeeded within {FAILOVER_MAX:?} of the kill"
            );
        }
    }
}
