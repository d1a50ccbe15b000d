//! An external Mesos framework on three masters: pymesos (PyPI) keeps its tasks across the
//! loss of the leading master, subscribes again to the new leader through the masters'
//! plain-HTTP scheduler listeners (a follower redirects it), and gets every status update
//! of its tasks once; the operator API's event stream on a surviving follower shows the
//! same (tests/clients/pymesos_failover.py).

use super::cluster::scheduler_addr;
use super::{three_masters_two_agents, MASTERS};
use hyper::Method;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pymesos_framework_keeps_its_tasks_across_a_leader_kill_and_gets_each_update_once() {
    let mut cluster = three_masters_two_agents().await;
    let leader = cluster.leader(&MASTERS, Duration::from_secs(20)).await;
    // A follower first: its redirect takes the framework to the leader.
    let mut order: Vec<u32> = MASTERS.into_iter().filter(|m| *m != leader).collect();
    order.push(leader);
    let masters: Vec<String> = order.iter().map(|m| scheduler_addr(*m)).collect();
    let script = format!(
        "{}/tests/clients/pymesos_failover.py",
        env!("CARGO_MANIFEST_DIR")
    );
    // The operator's event stream is read on the follower the framework starts with.
    let mut child = Command::new("python3")
        .arg(script)
        .arg(masters.join(","))
        .arg(cluster.token())
        .arg(super::master_url(order[0]))
        .arg(cluster.admin_tls().ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        loop {
            line.clear();
            if stdout.read_line(&mut line).unwrap_or(0) == 0 {
                return (None, stdout);
            }
            if let Some(id) = line.strip_prefix("READY ") {
                return (Some(id.trim().to_string()), stdout);
            }
        }
    });
    let (framework_id, mut stdout) = tokio::time::timeout(Duration::from_secs(120), ready)
        .await
        .expect("the framework's tasks run within 120 s")
        .unwrap();
    let stderr_of = |child: &mut std::process::Child| {
        let mut stderr = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            pipe.read_to_string(&mut stderr).ok();
        }
        stderr
    };
    let Some(framework_id) = framework_id else {
        panic!(
            "the framework ended before its tasks ran:\n{}",
            stderr_of(&mut child)
        );
    };

    cluster.kill(leader);

    let output = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).ok();
        let stderr = stderr_of(&mut child);
        (child.wait().unwrap(), rest, stderr)
    });
    let (status, stdout, stderr) = tokio::time::timeout(Duration::from_secs(240), output)
        .await
        .expect("the framework ends within 240 s")
        .unwrap();
    assert!(
        !stderr.contains("No module named 'pymesos'"),
        "pymesos is missing: .ci/run installs it"
    );
    assert!(
        status.success() && stdout.contains("all checks passed"),
        "{stdout}\n{stderr}"
    );
    println!("{stdout}");

    // The new leader's record agrees: the long task still runs, the killed one and the
    // short one ended as the framework was told.
    let survivors: Vec<u32> = MASTERS.into_iter().filter(|m| *m != leader).collect();
    let new_leader = cluster.leader(&survivors, Duration::from_secs(20)).await;
    let tasks = cluster
        .call(new_leader, Method::GET, "/master/tasks", None)
        .await
        .body;
    let state_of = |id: &str| {
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id && t["framework_id"] == framework_id.as_str())
            .map(|t| t["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(
        state_of("keep-2").as_deref(),
        Some("TASK_RUNNING"),
        "{tasks}"
    );
    for (id, ended) in [("keep-1", "TASK_KILLED"), ("ender", "TASK_FINISHED")] {
        assert!(
            state_of(id).is_none_or(|state| state == ended),
            "{id}: {tasks}"
        );
    }
}
