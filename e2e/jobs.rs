//! The jobs framework on three masters: each scheduled instant of a job runs exactly once,
//! or is recorded as skipped with the reason, while the leading master is killed again and
//! again (the instant is decided inside a Raft command, and a new leader's repeat of it is
//! refused by the job's cursor).

use super::cluster::wait_for;
use super::{three_masters_two_agents, MASTERS};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const PERIOD_MS: u64 = 2_000;
/// Chronos's `epsilon` of the job: an instant missed by up to this much still runs.
const EPSILON_MS: u64 = 30_000;

fn ms(text: &Value) -> u64 {
    dcos_core::time::parse_iso8601(text.as_str().expect("a time"))
        .unwrap_or_else(|| panic!("not a time: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_every_2s_runs_each_instant_once_while_the_leader_is_killed_3_times() {
    let mut cluster = three_masters_two_agents().await;
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    // Through Chronos's API, the schedule starting on a whole second a little ahead.
    let start_ms = (dcos_rs::link::now_ms() / 1_000 + 5) * 1_000;
    let start = dcos_core::time::iso8601(start_ms);
    let job = json!({
        "name": "tick", "command": "echo $DCOS_JOB_SCHEDULED_AT", "owner": "e2e",
        "schedule": format!("R/{}Z/PT2S", &start[..19]), "epsilon": "PT30S",
        "concurrent": true, "cpus": 0.1, "mem": 16,
    });
    let created = cluster
        .write(leader, Method::POST, "/v1/scheduler/iso8601", &job)
        .await;
    assert_eq!(created.status, StatusCode::NO_CONTENT, "{:?}", created.body);

    // Three times: let it run a while, kill the leader (SIGKILL), wait for the next one,
    // let the job run under it on two masters, then bring the old one back.
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_secs(33)).await;
        let old = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
        cluster.kill(old);
        let rest: Vec<u32> = MASTERS.into_iter().filter(|h| *h != old).collect();
        let new = cluster.leader(&rest, Duration::from_secs(20)).await;
        eprintln!("round {round}: leader {old} killed, {new} leads");
        tokio::time::sleep(Duration::from_secs(5)).await;
        cluster.start(old).await;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;

    // Disabled (its next instants are skipped, "disabled"), so its runs come to an end.
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    let mut disabled = job.clone();
    disabled["disabled"] = true.into();
    let answer = cluster
        .write(leader, Method::POST, "/v1/scheduler/iso8601", &disabled)
        .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT, "{:?}", answer.body);

    // The record as the leader has it once the last decided instant's run has ended.
    let record = wait_for(
        "the job's runs to end",
        Duration::from_secs(60),
        async || {
            let answer = cluster
                .call(leader, Method::GET, "/cluster/v1/jobs/tick", None)
                .await;
            let runs = answer.body["runs"].as_array()?;
            runs.iter()
                .all(|r| r["status"] == "SUCCESS" || r["status"] == "FAILED")
                .then_some(answer.body)
        },
    )
    .await;
    let runs = record["runs"].as_array().unwrap();
    let skipped = record["skipped"].as_array().unwrap();

    // No instant ran twice.
    let mut ran: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for run in runs {
        ran.entry(ms(&run["scheduledAt"]))
            .or_default()
            .push(run["id"].as_str().unwrap().to_string());
    }
    let twice: Vec<_> = ran.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "instants run more than once: {twice:?}");

    // Every instant from the first to the last decided ran or was skipped with a reason.
    let mut skipped_at: BTreeMap<u64, String> = BTreeMap::new();
    for range in skipped {
        let reason = range["reason"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "a skip without a reason: {range}");
        let (first, last) = (ms(&range["first"]), ms(&range["last"]));
        let mut at = first;
        while at <= last {
            assert!(
                !ran.contains_key(&at),
                "instant {at} both ran and was skipped"
            );
            skipped_at.insert(at, reason.to_string());
            at += PERIOD_MS;
        }
    }
    let last = ran.keys().chain(skipped_at.keys()).max().copied().unwrap();
    let mut missing = Vec::new();
    let mut at = start_ms;
    while at <= last {
        if !ran.contains_key(&at) && !skipped_at.contains_key(&at) {
            missing.push(at);
        }
        at += PERIOD_MS;
    }
    assert!(
        missing.is_empty(),
        "instants neither run nor skipped: {missing:?}"
    );

    // Runs started late (while no master led) started within the window.
    let lateness: Vec<u64> = runs
        .iter()
        .map(|r| ms(&r["createdAt"]).saturating_sub(ms(&r["scheduledAt"])))
        .collect();
    let late = lateness.iter().filter(|l| **l > 1_000).count();
    let latest = lateness.iter().max().copied().unwrap_or(0);
    assert!(latest <= EPSILON_MS + 5_000, "a run {latest} ms late");
    eprintln!(
        "{} instants from {start}: {} ran once ({late} more than 1 s late, the latest {latest} ms), {} skipped {:?}",
        (last - start_ms) / PERIOD_MS + 1,
        ran.len(),
        skipped_at.len(),
        skipped_at.values().collect::<std::collections::BTreeSet<_>>()
    );
    // About two minutes at one every 2 s.
    assert!(ran.len() >= 40, "only {} instants ran", ran.len());
}
