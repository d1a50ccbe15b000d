//! What the dashboard reads through a master: one task's log (whole, and followed while it
//! runs), its usage and its sandbox's files, from its agent; the cluster's usage over time;
//! the nodes' attributes. Plain-process tasks on `dcos-rs up` (the agent's API is plain
//! HTTP there, reached with the caller's token).

use crate::common::{wait_for, TestCluster};
use dcos_rs::cli::client::ClientError;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The API error `path` is answered with (it must be one).
async fn refusal(cluster: &TestCluster, path: &str) -> dcos_api::ApiError {
    match cluster.client.get::<Value>(path).await {
        Err(ClientError::Api(error)) => error,
        other => panic!("{path}: expected a refusal, got {other:?}"),
    }
}

/// Reads `reader` into `seen` until it holds `wanted` (panics after `timeout`).
async fn read_until(
    reader: &mut tokio::io::DuplexStream,
    seen: &mut String,
    wanted: &str,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    while !seen.contains(wanted) {
        let n = tokio::time::timeout_at(deadline, reader.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!("{wanted:?} not streamed within {timeout:?}; so far: {seen:?}")
            })
            .expect("reading the followed log");
        assert!(n > 0, "the followed log ended before {wanted:?}: {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_log_usage_and_sandbox_are_read_through_the_master() {
    let cluster = TestCluster::start().await;
    // One line at once; the second, and a file, only once the test says so (`go`).
    let script = "cd \"$MESOS_SANDBOX\"; echo first-line; while [ ! -e go ]; do sleep 0.1; done; \
                  echo second-line; mkdir -p out; echo result > out/result.txt; sleep 3600";
    cluster
        .deploy(json!({"id": "detail", "cmd": script, "cpus": 0.1, "mem": 32, "instances": 1}))
        .await
        .unwrap();
    let task = cluster.wait_running("/detail", 1).await.remove(0);
    let base = format!("/cluster/v1/tasks/{}", task.id);

    // The whole log, once the first line is there.
    let log_path = format!("{base}/logs/stdout");
    let log = wait_for(
        "the first line through the master",
        Duration::from_secs(10),
        || async {
            let text = cluster.client.get_text(&log_path).await.ok()?;
            text.contains("first-line").then_some(text)
        },
    )
    .await;
    assert!(!log.contains("second-line"), "{log}");
    let stderr = cluster
        .client
        .get_text(&format!("{base}/logs/stderr?offset=0&follow=false"))
        .await
        .unwrap();
    assert!(
        !stderr.contains("first-line"),
        "stderr is its own: {stderr}"
    );

    // Followed: a line printed after the request started arrives on the open answer.
    let (mut reader, mut writer) = tokio::io::duplex(64 << 10);
    let client = cluster.client.clone();
    let follow_path = format!("{base}/logs/stdout?follow=true");
    let follow = tokio::spawn(async move { client.stream_to(&follow_path, &mut writer).await });
    let mut seen = String::new();
    read_until(
        &mut reader,
        &mut seen,
        "first-line",
        Duration::from_secs(10),
    )
    .await;
    let working_dir = cluster.sandbox(&task.id).join("sandbox");
    std::fs::write(working_dir.join("go"), b"").unwrap();
    read_until(
        &mut reader,
        &mut seen,
        "second-line",
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !follow.is_finished(),
        "the stream stays open while the task runs"
    );
    follow.abort();

    // Its usage, as the agent measures it.
    let usage: Value = cluster.client.get(&format!("{base}/usage")).await.unwrap();
    assert_eq!(usage["taskId"], task.id.as_str(), "{usage}");
    assert_eq!(usage["agentId"], task.slave_id.as_str(), "{usage}");
    assert!(usage["sampledAt"].is_string(), "{usage}");
    assert_eq!(usage["cpusAllotted"], 0.1, "{usage}");
    assert!(usage["cpuSeconds"].as_f64().is_some(), "{usage}");
    assert!(usage["memoryBytes"].as_u64().is_some(), "{usage}");

    // The sandbox: its logs and working directory, then a file the task wrote, read back.
    let top: Vec<Value> = cluster.client.get(&format!("{base}/files")).await.unwrap();
    fn entry(entries: &[Value], path: &str) -> Value {
        entries
            .iter()
            .find(|e| e["path"] == path)
            .cloned()
            .unwrap_or_else(|| panic!("no {path} in {entries:?}"))
    }
    assert!(entry(&top, "stdout")["mode"]
        .as_str()
        .unwrap()
        .starts_with('-'));
    assert!(entry(&top, "sandbox")["mode"]
        .as_str()
        .unwrap()
        .starts_with('d'));
    assert!(
        top.iter().all(|e| e["path"] != "task.json"),
        "the task's spec is not shown: {top:?}"
    );
    let out_path = format!("{base}/files?path=sandbox/out");
    let out = wait_for("the task's file", Duration::from_secs(10), || async {
        let entries: Vec<Value> = cluster.client.get(&out_path).await.ok()?;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    let result = entry(&out, "sandbox/out/result.txt");
    assert_eq!(result["size"], 7, "{result}");
    let page: Value = cluster
        .client
        .get(&format!(
            "{base}/files/read?path=sandbox/out/result.txt&offset=0"
        ))
        .await
        .unwrap();
    assert_eq!(
        page,
        json!({"path": "sandbox/out/result.txt", "offset": 0, "data": "result\n"})
    );
    let page: Value = cluster
        .client
        .get(&format!("{base}/files/read?path=stdout&offset=0&length=10"))
        .await
        .unwrap();
    assert_eq!(page["data"], "first-line", "{page}");
    let size: Value = cluster
        .client
        .get(&format!("{base}/files/read?path=stdout&offset=-1"))
        .await
        .unwrap();
    assert_eq!(size["offset"], "first-line\nsecond-line\n".len(), "{size}");

    // Refusals name what is wrong.
    for path in [
        format!("{base}/files?path=../x"),
        format!("{base}/files/read?path=../x"),
        format!("{base}/files/read?path=/etc/passwd"),
    ] {
        let error = refusal(&cluster, &path).await;
        assert_eq!(error.status, 400, "{path}: {error:?}");
        assert!(error.message.starts_with("path: "), "{path}: {error:?}");
    }
    let error = refusal(&cluster, &format!("{base}/logs/journal")).await;
    assert_eq!(error.status, 400, "{error:?}");
    assert!(error.message.starts_with("stream: "), "{error:?}");
    let error = refusal(&cluster, &format!("{base}/files/read?path=task.json")).await;
    assert_eq!(
        error.status, 403,
        "the agent's refusal passes through: {error:?}"
    );
    let error = refusal(&cluster, &format!("{base}/files/read?path=sandbox/missing")).await;
    assert_eq!(error.status, 404, "{error:?}");
    for path in [
        "/cluster/v1/tasks/no-such-task/logs/stdout",
        "/cluster/v1/tasks/no-such-task/usage",
        "/cluster/v1/tasks/no-such-task/files",
        "/cluster/v1/tasks/no-such-task/files/read?path=stdout",
    ] {
        let error = refusal(&cluster, path).await;
        assert_eq!(error.status, 404, "{path}: {error:?}");
        assert!(error.message.contains("no-such-task"), "{path}: {error:?}");
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_usage_is_sampled_and_nodes_show_their_attributes() {
    let cluster = TestCluster::start_with(|opts| {
        opts.agent
            .attributes
            .insert("rack".to_string(), "r1".to_string());
    })
    .await;
    cluster
        .deploy(json!({"id": "busy", "cmd": "sleep 3600", "cpus": 0.25, "mem": 32, "instances": 1}))
        .await
        .unwrap();
    cluster.wait_running("/busy", 1).await;
    // The next sample is 30 s away: take one now, as the sampling loop does.
    cluster.handle().master.sample_usage();
    let usage: Value = cluster.client.get("/cluster/v1/usage").await.unwrap();
    assert_eq!(usage["intervalSeconds"], 30, "{usage}");
    let samples = usage["samples"].as_array().unwrap();
    assert!(
        samples.len() >= 2,
        "one taken at the master's start, one now: {usage}"
    );
    let busy = samples
        .iter()
        .chain([&usage["now"]])
        .filter(|s| s["cpus"]["total"].as_f64() > Some(0.0))
        .filter(|s| s["cpus"]["used"].as_f64() >= Some(0.25))
        .count();
    assert!(
        busy >= 2,
        "the sample taken now and `now` show the task: {usage}"
    );
    let now = &usage["now"];
    assert_eq!(now["tasks"]["TASK_RUNNING"], 1, "{now}");
    assert_eq!(now["mem"]["used"], 32, "{now}");
    assert_eq!(now["agents"], 1, "{now}");

    let nodes: Value = cluster.client.get("/cluster/v1/nodes").await.unwrap();
    let agent = &nodes["agents"][0];
    assert_eq!(agent["attributes"], json!({"rack": "r1"}), "{agent}");
    assert_eq!(agent["usedDisk"], 0, "{agent}");
    assert_eq!(agent["usedCpus"], 0.25, "{agent}");
    cluster.stop().await;
}
