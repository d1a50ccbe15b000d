//! The jobs framework end to end on `dcos-rs up` (jobs written as the commands its APIs
//! write): a `PT2S` schedule runs a real task every 2 s, each scheduled instant once, with
//! its output kept; a failing job retries then fails, counted; a child runs only after both
//! its parents succeeded.

use crate::common::{wait_for, TestCluster};
use dcos_core::jobs::state::{JobRecord, RunStatus, Trigger};
use dcos_core::{Command, Outcome};
use std::time::Duration;

async fn put(cluster: &TestCluster, job: serde_json::Value) {
    let command = Command::PutJob {
        job: serde_json::from_value(job).expect("a job"),
        create: true,
        at_ms: dcos_rs::link::now_ms(),
        if_version_ms: None,
    };
    let outcome = cluster.handle().master.write(command).await.unwrap();
    assert_eq!(outcome, Outcome::Applied);
}

fn record(cluster: &TestCluster, id: &str) -> JobRecord {
    cluster.handle().master.read(|s| s.jobs.jobs[id].clone())
}

fn schedule(text: &str) -> serde_json::Value {
    serde_json::json!({
        "id": "default", "kind": {"iso8601": text}, "timeZone": "UTC",
        "startingDeadlineSeconds": 60, "concurrency": "ALLOW", "enabled": true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pt2s_job_runs_every_2_s_and_a_failing_one_retries_then_fails() {
    let cluster = TestCluster::start().await;
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 500);
    put(
        &cluster,
        serde_json::json!({
            "id": "tick",
            "run": {"cmd": "echo tick $CHRONOS_JOB_NAME attempt $CHRONOS_JOB_RUN_ATTEMPT", "cpus": 0.1, "mem": 16},
            "schedule": schedule(&format!("R/{start}/PT2S")),
        }),
    )
    .await;
    put(
        &cluster,
        serde_json::json!({
            "id": "flaky", "retries": 2,
            "run": {"cmd": "echo try $CHRONOS_JOB_RUN_ATTEMPT; exit 3", "cpus": 0.1, "mem": 16},
            "schedule": schedule(&format!("R1/{start}/PT1H")),
        }),
    )
    .await;

    let tick = wait_for("3 runs of tick", Duration::from_secs(20), || async {
        let tick = record(&cluster, "tick");
        (tick.history.len() >= 3).then_some(tick)
    })
    .await;
    let instants: Vec<u64> = tick
        .history
        .iter()
        .map(|run| match run.trigger {
            Trigger::Schedule { at_ms } => at_ms,
            ref other => panic!("{other:?}"),
        })
        .collect();
    let gaps: Vec<u64> = instants.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g == 2_000),
        "each instant once, 2 s apart: {instants:?}"
    );
    assert!(
        tick.history.iter().all(|r| r.status == RunStatus::Success),
        "{:?}",
        tick.history
    );
    assert_eq!(tick.stats.success_count as usize, tick.history.len());
    // The run's output is in its history (sent by the agent with the task's end), and in
    // its task's sandbox.
    let output = tick.history[0].output.clone().expect("the run's output");
    assert_eq!(output.stdout.trim(), "tick tick attempt 1");
    let task_id = tick.history[0].task_ids[0].clone();
    let stdout = std::fs::read_to_string(cluster.sandbox(&task_id).join("stdout")).unwrap();
    assert_eq!(stdout, output.stdout);
    let end = &tick.history[0].ends[0];
    assert_eq!(
        (end.task_id.as_str(), end.state, end.exit_code),
        (task_id.as_str(), dcos_core::TaskState::Finished, Some(0))
    );
    assert!(!end.agent_id.is_empty());

    // Three attempts (1 s, then 2 s apart), then the run failed, counted once.
    let flaky = wait_for("flaky to fail", Duration::from_secs(20), || async {
        let flaky = record(&cluster, "flaky");
        (!flaky.history.is_empty()).then_some(flaky)
    })
    .await;
    let run = &flaky.history[0];
    assert_eq!(
        (run.status, run.attempt, run.task_ids.len()),
        (RunStatus::Failed, 3, 3)
    );
    assert_eq!((flaky.stats.error_count, flaky.stats.success_count), (1, 0));
    let last = std::fs::read_to_string(cluster.sandbox(&run.task_ids[2]).join("stdout")).unwrap();
    assert_eq!(last.trim(), "try 3");
    // Each attempt's end is recorded; the output kept is the last attempt's.
    let codes: Vec<_> = run.ends.iter().map(|e| (e.state, e.exit_code)).collect();
    assert_eq!(codes, vec![(dcos_core::TaskState::Failed, Some(3)); 3]);
    assert_eq!(run.output.as_ref().unwrap().stdout.trim(), "try 3");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_runs_only_after_both_parents_succeeded() {
    let cluster = TestCluster::start().await;
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 500);
    let run = |cmd: &str| serde_json::json!({"cmd": cmd, "cpus": 0.1, "mem": 16});
    put(&cluster, serde_json::json!({"id": "fast", "run": run("true"), "schedule": schedule(&format!("R1/{start}/PT1H"))})).await;
    put(&cluster, serde_json::json!({"id": "slow", "run": run("sleep 2"), "schedule": schedule(&format!("R1/{start}/PT1H"))})).await;
    put(
        &cluster,
        serde_json::json!({"id": "child", "run": run("true"), "parents": ["fast", "slow"]}),
    )
    .await;
    let child = wait_for("the child to run", Duration::from_secs(20), || async {
        let child = record(&cluster, "child");
        (!child.history.is_empty()).then_some(child)
    })
    .await;
    let slow = record(&cluster, "slow");
    let slow_done = slow.stats.last_success_ms.expect("slow succeeded");
    assert!(
        child.history[0].created_ms >= slow_done,
        "after the slower parent"
    );
    assert_eq!(child.history[0].trigger, Trigger::Parents);
    assert_eq!(
        child.history[0].workflow_id, slow.history[0].workflow_id,
        "one workflow"
    );
    // It does not run again until both parents succeed again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(record(&cluster, "child").history.len(), 1);
    cluster.stop().await;
}

/// `concurrent: false` (FORBID) through Chronos's API: a run of 2.5 s every second never
/// overlaps another; the instants it covers are skipped, each with the run that held it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_forbids_concurrency_skips_instants_while_it_runs() {
    let cluster = TestCluster::start().await;
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 500);
    let job = serde_json::json!({
        "name": "slow", "command": "sleep 2.5", "owner": "t", "disabled": false,
        "schedule": format!("R/{}Z/PT1S", &start[..19]), "concurrent": false,
        "cpus": 0.1, "mem": 16,
    });
    let _: serde_json::Value = cluster
        .client
        .send_json(
            hyper::Method::POST,
            "/v1/scheduler/iso8601",
            job.to_string().as_bytes(),
        )
        .await
        .unwrap_or(serde_json::Value::Null);
    let slow = wait_for("2 runs of slow", Duration::from_secs(20), || async {
        let slow = record(&cluster, "slow");
        (slow.history.len() >= 2).then_some(slow)
    })
    .await;
    for pair in slow.history.iter().collect::<Vec<_>>().windows(2) {
        assert!(
            pair[1].created_ms >= pair[0].completed_ms.unwrap(),
            "runs overlap: {:?}",
            slow.history
        );
    }
    let stat: serde_json::Value = cluster.client.get("/cluster/v1/jobs/slow").await.unwrap();
    let skipped = stat["skipped"].as_array().unwrap();
    assert!(!skipped.is_empty(), "{stat}");
    assert!(
        skipped.iter().all(|s| s["reason"]
            .as_str()
            .unwrap()
            .contains("still active (concurrencyPolicy FORBID)")),
        "{stat}"
    );
    cluster.stop().await;
}

/// REPLACE: a run still going at the next instant is stopped (its task killed) and the new
/// one starts; every replaced run ends failed by the kill, and the instants all ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_replaces_kills_the_running_one_at_the_next_instant() {
    let cluster = TestCluster::start().await;
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 500);
    let mut schedule = schedule(&format!("R/{start}/PT2S"));
    schedule["concurrency"] = "REPLACE".into();
    put(
        &cluster,
        serde_json::json!({
            "id": "long", "run": {"cmd": "echo started; exec sleep 60", "cpus": 0.1, "mem": 16},
            "schedule": schedule,
        }),
    )
    .await;
    let long = wait_for("2 replaced runs", Duration::from_secs(30), || async {
        let long = record(&cluster, "long");
        (long.history.len() >= 2).then_some(long)
    })
    .await;
    for run in &long.history {
        assert_eq!(run.status, RunStatus::Failed, "{run:?}");
        assert!(run.stop_requested, "{run:?}");
        let end = run.ends.last().expect("its task's end");
        assert_eq!(end.state, dcos_core::TaskState::Killed, "{run:?}");
        // Killed at the next instant, 2 s after its own.
        let Trigger::Schedule { at_ms } = run.trigger else {
            panic!("{run:?}")
        };
        let lived = run.completed_ms.unwrap() - at_ms;
        assert!((2_000..6_000).contains(&lived), "{lived} ms: {run:?}");
        assert_eq!(run.output.as_ref().unwrap().stdout, "started\n");
    }
    let instants: Vec<u64> = long
        .history
        .iter()
        .map(|run| match run.trigger {
            Trigger::Schedule { at_ms } => at_ms,
            ref other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        instants.windows(2).all(|w| w[1] - w[0] == 2_000),
        "{instants:?}"
    );
    cluster.stop().await;
}

/// What a server-sent event stream sends in its first 8 s.
fn read_stream(cluster: &TestCluster, path: &str) -> tokio::task::JoinHandle<String> {
    let client = cluster.client.clone();
    let path = path.to_string();
    tokio::spawn(async move {
        let (mut write, mut read) = tokio::io::duplex(1 << 20);
        let streaming = tokio::spawn(async move {
            let _ = client.stream_to(&path, &mut write).await;
        });
        let mut text = Vec::new();
        let _ = tokio::time::timeout(
            Duration::from_secs(8),
            tokio::io::AsyncReadExt::read_to_end(&mut read, &mut text),
        )
        .await;
        streaming.abort();
        String::from_utf8_lossy(&text).into_owned()
    })
}

/// A job's life on our own event stream, `/cluster/v1/events`: created, its run started,
/// its task launched, retried after a failure, finished; and none of it on Marathon's
/// `/v2/events`, whose clients know only Marathon's event types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_events_are_on_our_stream_and_not_on_marathons() {
    let cluster = TestCluster::start().await;
    let ours = read_stream(&cluster, "/cluster/v1/events");
    let marathons = read_stream(&cluster, "/v2/events");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 500);
    put(
        &cluster,
        serde_json::json!({
            "id": "twice", "retries": 1,
            "run": {"cmd": "test $CHRONOS_JOB_RUN_ATTEMPT = 2", "cpus": 0.1, "mem": 16},
            "schedule": schedule(&format!("R1/{start}/PT1H")),
        }),
    )
    .await;
    let ours = ours.await.unwrap();
    let marathons = marathons.await.unwrap();
    let types: Vec<&str> = ours
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .filter(|t| t.starts_with("job_"))
        .collect();
    assert_eq!(
        types,
        [
            "job_created",
            "job_run_started",
            "job_run_task_launched",
            "job_run_retrying",
            "job_run_task_launched",
            "job_run_finished"
        ],
        "{ours}"
    );
    let finished: serde_json::Value = ours
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap())
        .find(|e| e["eventType"] == "job_run_finished")
        .unwrap();
    assert_eq!(
        (
            &finished["jobId"],
            &finished["attempt"],
            &finished["exitCode"]
        ),
        (&"twice".into(), &2.into(), &0.into()),
        "{finished}"
    );
    assert!(marathons.contains("event_stream_attached"), "{marathons}");
    assert!(!marathons.contains("job_"), "{marathons}");
    cluster.stop().await;
}

/// A workflow's failed step is run again in the same workflow (`POST
/// /cluster/v1/jobs/{id}/runs` with its `workflowId`): its succeeded parent does not run
/// again, and the job after it continues that workflow. Chronos's "mark successful" counts
/// a success without a run and sets off the jobs after it. Metronome's queue, info, ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_runs_again_in_its_workflow_and_a_marked_success_sets_off_children() {
    let cluster = TestCluster::start().await;
    let marker = tempfile::Builder::new()
        .prefix("dcos-rs-step")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        marker.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ok_file = marker.path().join("ok");
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 500);
    let run = |cmd: &str| serde_json::json!({"cmd": cmd, "cpus": 0.1, "mem": 16});
    put(&cluster, serde_json::json!({"id": "extract", "run": run("true"), "schedule": schedule(&format!("R1/{start}/PT1H"))})).await;
    let check = format!("test -e {}", ok_file.display());
    put(
        &cluster,
        serde_json::json!({"id": "load", "run": run(&check), "parents": ["extract"]}),
    )
    .await;
    put(
        &cluster,
        serde_json::json!({"id": "report", "run": run("true"), "parents": ["load"]}),
    )
    .await;
    let failed = wait_for("load to fail", Duration::from_secs(20), || async {
        record(&cluster, "load").history.front().cloned()
    })
    .await;
    assert_eq!(failed.status, RunStatus::Failed);
    let workflow = failed.workflow_id.clone();
    assert_eq!(record(&cluster, "extract").history[0].workflow_id, workflow);

    // A workflow the job never ran in is refused, naming it.
    let refused = cluster
        .client
        .send_json::<serde_json::Value>(
            hyper::Method::POST,
            "/cluster/v1/jobs/load/runs",
            br#"{"workflowId": "nope"}"#,
        )
        .await
        .unwrap_err();
    assert!(
        refused
            .to_string()
            .contains("no finished run in workflow nope"),
        "{refused}"
    );

    std::fs::write(&ok_file, "").unwrap();
    let body = serde_json::json!({ "workflowId": workflow }).to_string();
    let rerun: serde_json::Value = cluster
        .client
        .send_json(
            hyper::Method::POST,
            "/cluster/v1/jobs/load/runs",
            body.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(rerun["workflowId"], workflow.as_str());
    let report = wait_for("report to run", Duration::from_secs(20), || async {
        record(&cluster, "report").history.front().cloned()
    })
    .await;
    assert_eq!(report.status, RunStatus::Success);
    assert_eq!(
        report.workflow_id, workflow,
        "the chain continued its workflow"
    );
    let load = record(&cluster, "load");
    assert_eq!(load.history.len(), 2);
    assert_eq!(load.history[1].status, RunStatus::Success);
    assert_eq!(load.history[1].workflow_id, workflow);
    assert_eq!(
        record(&cluster, "extract").history.len(),
        1,
        "the parent ran once"
    );

    // Marked successful through Chronos's API (bodiless PUT, as its clients send): report's
    // parent counts a success without running, and report runs again.
    let status = cluster
        .client
        .status_of(hyper::Method::PUT, "/scheduler/job/success/load")
        .await
        .unwrap();
    assert_eq!(status, 204);
    assert_eq!(record(&cluster, "load").stats.success_count, 2);
    wait_for("report to run again", Duration::from_secs(20), || async {
        (record(&cluster, "report").history.len() == 2).then_some(())
    })
    .await;
    assert_eq!(record(&cluster, "load").history.len(), 2, "no run of load");

    let queue: serde_json::Value = cluster.client.get("/v1/queue").await.unwrap();
    assert_eq!(queue, serde_json::json!([]));
    let info: serde_json::Value = cluster.client.get("/service/metronome/info").await.unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let pong = cluster
        .client
        .get_text("/service/metronome/ping")
        .await
        .unwrap();
    assert_eq!(pong, "pong");
    cluster.stop().await;
}

/// A run's artifacts are fetched into its sandbox and its placement constraints are met
/// (Metronome's `artifacts` and `placement`); a run no agent may take waits in Metronome's
/// queue. Fields kept but not acted on are named in warnings (the CLI prints them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_artifacts_are_fetched_and_its_constraints_met() {
    let cluster = TestCluster::start_with(|opts| opts.agent.policy.allow_local_fetch = true).await;
    let (base, _server) =
        crate::fetch::serve(vec![("/tool.sh", b"#!/bin/sh\necho tool ran\n".to_vec())]).await;
    let hostname = cluster
        .handle()
        .master
        .read(|s| s.agents.values().next().unwrap().hostname.clone());
    let job = |id: &str, host: &str| {
        serde_json::json!({
            "id": id,
            "run": {
                "cmd": "./tool.sh", "cpus": 0.1, "mem": 16, "disk": 0,
                "artifacts": [{"uri": format!("{base}/tool.sh"), "executable": true, "extract": false}],
                "placement": {"constraints": [{"attribute": "hostname", "operator": "EQ", "value": host}]},
            },
        })
    };
    for (id, host) in [("here", hostname.as_str()), ("nowhere", "no-such-host")] {
        let created: serde_json::Value = cluster
            .client
            .send_json(
                hyper::Method::POST,
                "/v1/jobs",
                job(id, host).to_string().as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(
            created["run"]["placement"]["constraints"][0]["operator"], "IS",
            "{created}"
        );
        assert_eq!(
            created["run"]["artifacts"][0]["executable"], true,
            "{created}"
        );
        let _: serde_json::Value = cluster
            .client
            .send_json(hyper::Method::POST, &format!("/v1/jobs/{id}/runs"), b"{}")
            .await
            .unwrap();
    }
    let here = wait_for("here's run", Duration::from_secs(30), || async {
        record(&cluster, "here").history.front().cloned()
    })
    .await;
    assert_eq!(here.status, RunStatus::Success, "{here:?}");
    assert_eq!(here.output.unwrap().stdout, "tool ran\n");
    let queue: serde_json::Value = cluster.client.get("/v1/queue").await.unwrap();
    assert_eq!(queue[0]["jobId"], "nowhere", "{queue}");
    assert_eq!(queue.as_array().unwrap().len(), 1, "{queue}");

    // A bad pattern or URI is refused, named.
    let mut bad = job("bad", "(");
    bad["run"]["placement"]["constraints"][0]["operator"] = "LIKE".into();
    bad["run"]["artifacts"][0]["uri"] = "ftp://x/y".into();
    bad["description"] = 5.into();
    bad["labels"] = serde_json::json!({"team": 1});
    let refused = cluster
        .client
        .send_json::<serde_json::Value>(hyper::Method::POST, "/v1/jobs", bad.to_string().as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("/run/placement/constraints/0: \"(\" is not a regular expression")
            && refused.contains("/run/artifacts/0: uri: must be an http://")
            && refused.contains("/description: must be a string")
            && refused.contains("/labels/team: must be a string"),
        "{refused}"
    );
    let chronos = serde_json::json!({
        "name": "typed", "command": "true", "owner": "t", "schedule": "R/2030-01-01T00:00:00Z/P1D",
        "scheduleTimeZone": 5,
    });
    let refused = cluster
        .client
        .send_json::<serde_json::Value>(
            hyper::Method::POST,
            "/scheduler/iso8601",
            chronos.to_string().as_bytes(),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("scheduleTimeZone must be a string"),
        "{refused}"
    );

    // Kept, not acted on: said so.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpu.json");
    let mut gpu = job("gpu", &hostname);
    gpu["run"]["gpus"] = 1.into();
    std::fs::write(&file, gpu.to_string()).unwrap();
    let added = cluster
        .cli()
        .args(["job", "add"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(added.status.success(), "{added:?}");
    let stderr = String::from_utf8_lossy(&added.stderr);
    assert!(
        stderr.contains("run.gpus is kept but not acted on"),
        "{stderr}"
    );
    cluster.stop().await;
}
