//! Nothing leaks: after 200 container start/stop cycles (half of them on the bridge) no
//! cgroup, mount, libcontainer state, process, network namespace, veth or port mapping of a
//! task is left behind.

use crate::common::{busybox_image, wait_for, TestCluster};
use dcos_api::ImagesEnvelope;
use dcos_runtime::testimage::TestImageFormat;
use serde_json::json;
use std::time::Duration;

const CYCLES: u64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_leaks_after_200_container_start_stop_cycles() {
    let cluster = TestCluster::start_with(|opts| {
        opts.agent.bridge =
            dcos_runtime::network::BridgeConfig::new(&opts.agent.bridge.bridge, "172.30.78.0/24")
                .unwrap();
        // Ports no other test's cluster uses: the DNAT rules catch every local address.
        opts.agent.ports = vec![dcos_core::PortRange {
            begin: 31800,
            end: 31809,
        }];
    })
    .await;
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
    // Ten instances of tasks that end at once: each end is followed by a new launch. Five
    // share the host's network, five are bridged with a port mapping.
    cluster
        .deploy(json!({
            "id": "cycle", "cmd": "echo cycle", "cpus": 0.01, "mem": 8, "instances": 5,
            "container": {"docker": {"image": "busybox:cycle"}}
        }))
        .await
        .unwrap();
    cluster
        .deploy(json!({
            "id": "cycle-net", "cmd": "echo cycle", "cpus": 0.01, "mem": 8, "instances": 5,
            "container": {
                "docker": {"image": "busybox:cycle"},
                "portMappings": [{"containerPort": 80}]
            },
            "networks": [{"mode": "container/bridge"}]
        }))
        .await
        .unwrap();
    let agent = cluster.handle().agent.clone();
    wait_for("200 container cycles", Duration::from_secs(240), || async {
        (agent.launched_total() >= CYCLES).then_some(())
    })
    .await;
    let body = serde_json::to_vec(&json!({"instances": 0})).unwrap();
    // Forced: the apps never converge (their tasks end by design), so they stay locked.
    for app in ["/v2/apps/cycle?force=true", "/v2/apps/cycle-net?force=true"] {
        let _: serde_json::Value = cluster
            .client
            .send_json(hyper::Method::PUT, app, &body)
            .await
            .unwrap();
    }
    wait_for("every task to end", Duration::from_secs(30), || async {
        let mut live = 0;
        for app in ["/cycle", "/cycle-net"] {
            live += cluster
                .tasks(app)
                .await
                .into_iter()
                .filter(|t| !t.state.is_terminal())
                .count();
        }
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
    let bridge = &cluster.bridge;
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&bridge.netns_prefix()))
                .collect()
        })
        .unwrap_or_default();
    assert!(netns.is_empty(), "no network namespace is left: {netns:?}");
    let on_bridge: Vec<String> =
        std::fs::read_dir(format!("/sys/class/net/{}/brif", bridge.bridge))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
    assert!(on_bridge.is_empty(), "no veth is left: {on_bridge:?}");
    let map = std::process::Command::new("nft")
        .args(["list", "map", "ip", &bridge.table(), "ports_tcp"])
        .output()
        .unwrap();
    let map = String::from_utf8_lossy(&map.stdout);
    assert!(
        map.contains("ports_tcp") && !map.contains("elements"),
        "no port mapping is left: {map}"
    );
    eprintln!("{launched} container tasks started and stopped without leaks");
    cluster.stop().await;
}
