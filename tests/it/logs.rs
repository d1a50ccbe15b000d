//! Task logs: size-based rotation in the shim, and `--follow` streaming across rotations
//! without losing or repeating a line.

use crate::common::{wait_for, TestCluster};
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_at_the_limit_and_follow_streams_across_rotations() {
    let cluster = TestCluster::start_with(|opts| {
        opts.task_log_max_bytes = 4096;
        opts.task_log_files_max = 3;
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
    let task = wait_for("the task to be placed", Duration::from_secs(20), || async {
        cluster.tasks("/chatty").await.into_iter().next()
    })
    .await;
    let url = format!(
        "{}/files/tasks/{}/stdout?follow=true",
        task.agent_url, task.id
    );
    let mut followed: Vec<u8> = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        cluster.client.stream_to(&url, &mut followed),
    )
    .await
    .expect("the follow ends when the task ends")
    .unwrap();
    let text = String::from_utf8(followed).unwrap();
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
    let task = wait_for(
        "the burst task to be placed",
        Duration::from_secs(20),
        || async { cluster.tasks("/bursty").await.into_iter().next() },
    )
    .await;
    let url = format!(
        "{}/files/tasks/{}/stdout?follow=true",
        task.agent_url, task.id
    );
    let mut followed: Vec<u8> = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        cluster.client.stream_to(&url, &mut followed),
    )
    .await
    .expect("the follow ends when the task ends")
    .unwrap();
    let text = String::from_utf8(followed).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, expected, "a burst of rotations loses nothing");
    cluster.stop().await;
}
