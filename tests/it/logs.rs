//! Task logs: size-based rotation in the shim, and `--follow` streaming across rotations
//! without losing or repeating a line.

use crate::common::{wait_for, TestCluster};
use serde_json::json;
use std::time::Duration;

/// Follows the stdout of the app's first task from its start until the task ends.
async fn follow_first_task(cluster: &TestCluster, app_id: &str) -> (dcos_api::TaskView, String) {
    let task = wait_for("the task to be placed", Duration::from_secs(20), || async {
        cluster.tasks(app_id).await.into_iter().next()
    })
    .await;
    let mut followed: Vec<u8> = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        dcos_rs::cli::stream_task_log(&cluster.client, &task, "stdout", true, &mut followed),
    )
    .await
    .expect("the follow ends when the task ends")
    .unwrap();
    (task, String::from_utf8(followed).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_at_the_limit_and_follow_streams_across_rotations() {
    let cluster = TestCluster::start_with(|opts| {
        opts.agent.task_log_max_bytes = 4096;
        opts.agent.task_log_files_max = 3;
    })
    .await;
    // ~300 lines of 45 bytes, written over ~1.5 s: three rotations of 4 KiB files.
    let script =
        "i=0; while [ $i -lt 300 ]; do echo \"line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; \
                  i=$((i+1)); [ $((i % 20)) = 0 ] && sleep 0.1; done; exit 0";
    cluster
        .deploy(json!({"id": "chatty", "cmd": script, "cpus": 0.1, "mem": 16, "instances": 1}))
        .await
        .unwrap();
    let (task, text) = follow_first_task(&cluster, "/chatty").await;
    let lines: Vec<&str> = text.lines().collect();
    let expected: Vec<String> = (0..300)
        .map(|i| format!("line-{i}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"))
        .collect();
    assert_eq!(
        lines, expected,
        "every line exactly once, in order, across rotations"
    );

    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
    for name in ["stdout", "stdout.1", "stdout.2", "stdout.3"] {
        let size = std::fs::metadata(sandbox.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(size <= 4096, "{name} is {size} bytes, over the 4096 limit");
    }
    assert!(
        !sandbox.join("stdout.4").exists(),
        "only 3 rotated files are kept"
    );

    // A burst: three rotations between two polls of the follower, which must still read
    // stdout.2 and stdout.1 before stdout.
    let burst = "sleep 1; i=0; while [ $i -lt 300 ]; do echo \"line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"; \
                 i=$((i+1)); done; sleep 1; exit 0";
    cluster
        .deploy(json!({"id": "bursty", "cmd": burst, "cpus": 0.1, "mem": 16, "instances": 1}))
        .await
        .unwrap();
    let (_, text) = follow_first_task(&cluster, "/bursty").await;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, expected, "a burst of rotations loses nothing");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_writes_without_pause_is_still_killed_promptly() {
    let cluster = TestCluster::start_with(|opts| {
        opts.agent.task_log_max_bytes = 1 << 20;
        opts.agent.task_log_files_max = 1;
    })
    .await;
    cluster
        .deploy(json!({"id": "yes", "cmd": "exec yes", "cpus": 0.5, "mem": 16}))
        .await
        .unwrap();
    let task = cluster.wait_running("/yes", 1).await.remove(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let body = serde_json::to_vec(&json!({"instances": 0})).unwrap();
    let _: serde_json::Value = cluster
        .client
        .send_json(hyper::Method::PUT, "/v2/apps/yes", &body)
        .await
        .unwrap();
    let ended = wait_for(
        "the chatty task to end",
        Duration::from_secs(20),
        || async {
            cluster
                .tasks("/yes")
                .await
                .into_iter()
                .find(|t| t.id == task.id && t.state.is_terminal())
        },
    )
    .await;
    assert_eq!(ended.state, dcos_core::TaskState::Killed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
    let size = std::fs::metadata(sandbox.join("stdout")).unwrap().len();
    assert!(size <= 1 << 20, "rotation bounds the log: {size}");
    cluster.stop().await;
}
