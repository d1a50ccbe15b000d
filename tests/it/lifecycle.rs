//! Nothing leaks: after 200 container start/stop cycles no cgroup, mount, libcontainer
//! state or process of a task is left behind.

use crate::common::{busybox_image, wait_for, TestCluster};
use dcos_api::ImagesEnvelope;
use dcos_runtime::testimage::TestImageFormat;
use serde_json::json;
use std::time::Duration;

const CYCLES: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaks_after_200_container_start_stop_cycles() {
    let cluster = TestCluster::start().await;
    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:cycle",
        TestImageFormat::DockerSave,
    );
    let _: ImagesEnvelope = cluster
        .client
        .upload(&format!("{}/images", cluster.handle().agent_url), &tarball)
        .await
        .unwrap();
    // Ten instances of a task that ends at once: each end is followed by a new launch.
    cluster
        .deploy(json!({
            "id": "cycle", "cmd": "echo cycle", "cpus": 0.01, "mem": 8, "instances": 10,
            "container": {"docker": {"image": "busybox:cycle"}}
        }))
        .await
        .unwrap();
    let agent = cluster.handle().agent.clone();
    wait_for("200 container cycles", Duration::from_secs(240), || async {
        (agent.launched_total() >= CYCLES).then_some(())
    })
    .await;
    let body = serde_json::to_vec(&json!({"instances": 0})).unwrap();
    let _: serde_json::Value = cluster
        .client
        .send_json(hyper::Method::PUT, "/v2/apps/cycle", &body)
        .await
        .unwrap();
    wait_for("every task to end", Duration::from_secs(30), || async {
        let live = cluster
            .tasks("/cycle")
            .await
            .into_iter()
            .filter(|t| !t.state.is_terminal())
            .count();
        (live == 0 && agent.running_task_count() == 0).then_some(())
    })
    .await;
    let launched = agent.launched_total();
    assert!(launched >= CYCLES);

    let data = cluster.dir.path().join("data");
    let data_text = data.to_string_lossy().to_string();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&data_text),
        "no task mount is left:\n{mounts}"
    );
    let state: Vec<_> = std::fs::read_dir(data.join("agent/containers"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(state.is_empty(), "no libcontainer state is left: {state:?}");
    for controller in ["memory", "cpu", "pids", "freezer"] {
        let parent = std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&cluster.cgroup_parent);
        let left: Vec<_> = std::fs::read_dir(&parent)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "no task cgroup is left in {controller}: {left:?}"
        );
    }
    let processes: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&data_text))
        .collect();
    assert!(
        processes.is_empty(),
        "no shim or task process is left: {processes:?}"
    );
    eprintln!("{launched} container tasks started and stopped without leaks");
    cluster.stop().await;
}
