//! Bridge networking: tasks with their own address on the agent's bridge, reached from the
//! host through their port mappings, and nothing of them left once they are gone.

use crate::common::{busybox_image, wait_for, TestCluster};
use dcos_api::ImagesEnvelope;
use dcos_runtime::network::BridgeConfig;
use dcos_runtime::testimage::TestImageFormat;
use serde_json::json;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Sends `line` to `address:port` and returns the first line of the answer, if any.
fn ask(address: Ipv4Addr, port: u16, line: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&(address, port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(line.as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.lines().next().map(str::to_string)
}

fn nft_map(table: &str, map: &str) -> String {
    let out = std::process::Command::new("nft")
        .args(["list", "map", "ip", table, map])
        .output()
        .expect("nft runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged_tasks_get_own_addresses_and_port_mappings_and_leave_nothing_behind() {
    let bridge = BridgeConfig::new(&crate::common::unique("dtnet")[..12], "172.30.77.0/24")
        .expect("bridge config");
    let cluster = TestCluster::start_with(|opts| {
        opts.agent.bridge = bridge.clone();
        // Ports no other test's cluster uses: the DNAT rules catch every local address.
        opts.agent.ports = vec![dcos_core::PortRange {
            begin: 31700,
            end: 31709,
        }];
    })
    .await;
    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:net",
        TestImageFormat::OciLayout,
    );
    let url = format!("{}/images", cluster.handle().agent_url);
    let _: ImagesEnvelope = cluster.client.upload(&url, &tarball).await.expect("import");

    // Each instance answers on container port 8080 with its task id, and prints its address.
    let script = "ip -4 -o addr show eth0; \
                  while true; do echo \"hello from $MESOS_TASK_ID\" | nc -l -p 8080; done";
    cluster
        .deploy(json!({
            "id": "web", "cmd": script, "cpus": 0.1, "mem": 32, "instances": 2,
            "container": {
                "docker": {"image": "busybox:net"},
                "portMappings": [{"containerPort": 8080, "hostPort": 0, "name": "http"}]
            },
            "networks": [{"mode": "container/bridge"}]
        }))
        .await
        .expect("deploy");
    let tasks = cluster.wait_running("/web", 2).await;
    let host_ports: Vec<u16> = tasks.iter().map(|t| t.ports[0]).collect();
    assert_ne!(host_ports[0], host_ports[1], "two tasks, two host ports");

    let mut addresses = Vec::new();
    for task in &tasks {
        // Reached from the host on loopback and on the bridge's address, through the map.
        for host in [Ipv4Addr::LOCALHOST, bridge.gateway()] {
            let answer = wait_for(
                "an answer through the port mapping",
                Duration::from_secs(10),
                || async { ask(host, task.ports[0], "hi\n") },
            )
            .await;
            assert_eq!(answer, format!("hello from {}", task.id), "via {host}");
        }
        let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
        let stdout = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
        let address: Ipv4Addr = stdout
            .split_whitespace()
            .find_map(|w| w.strip_suffix("/24"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("an eth0 address in {stdout}"));
        assert_eq!(
            u32::from(address) & 0xffff_ff00,
            u32::from(Ipv4Addr::new(172, 30, 77, 0)),
            "{address} is in the agent's subnet"
        );
        assert_ne!(address, bridge.gateway());
        addresses.push(address);
        let pid: i32 = std::fs::read_to_string(sandbox.join("task.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_ne!(
            std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap(),
            std::fs::read_link("/proc/self/ns/net").unwrap(),
            "the task has its own network namespace"
        );
    }
    assert_ne!(addresses[0], addresses[1], "each task has its own address");
    loopback_stays_out_of_reach(&cluster, &tasks[1].id, bridge.gateway()).await;
    let map = nft_map(&bridge.table(), "ports_tcp");
    for (port, address) in host_ports.iter().zip(&addresses) {
        assert!(
            map.contains(&format!("{port} : {address} . 8080")),
            "mapping {port} → {address}:8080 in {map}"
        );
    }

    // A shim killed with SIGKILL cannot clean up after its task: the agent does, before it
    // reports the task lost, and a replacement takes its place.
    let victim = &tasks[0];
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&victim.id);
    let shim: i32 = std::fs::read_to_string(sandbox.join("shim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let victim_netns = bridge.task_network(&victim.id, addresses[0], vec![]).netns;
    wait_for(
        "the lost task's replacement",
        Duration::from_secs(30),
        || async {
            let tasks = cluster.tasks("/web").await;
            let lost = tasks
                .iter()
                .any(|t| t.id == victim.id && t.state == dcos_core::TaskState::Lost);
            let running = tasks
                .iter()
                .filter(|t| t.state == dcos_core::TaskState::Running)
                .count();
            (lost && running == 2).then_some(())
        },
    )
    .await;
    assert!(
        !Path::new("/run/netns").join(&victim_netns).exists(),
        "the lost task's namespace is gone"
    );
    let map = nft_map(&bridge.table(), "ports_tcp");
    let running = cluster.running("/web").await;
    assert_eq!(
        map.matches(". 8080").count(),
        2,
        "one mapping per running task: {map}"
    );
    for task in &running {
        assert!(map.contains(&format!("{} : ", task.ports[0])), "{map}");
    }

    // A fixed host port is given to one task of the agent at a time.
    cluster
        .deploy(json!({
            "id": "fixed", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2,
            "container": {
                "docker": {"image": "busybox:net"},
                "portMappings": [{"containerPort": 80, "hostPort": 31709}]
            },
            "networks": [{"mode": "container/bridge"}]
        }))
        .await
        .expect("deploy fixed");
    let fixed = cluster.wait_running("/fixed", 1).await;
    assert_eq!(fixed[0].ports, vec![31709]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        cluster.running("/fixed").await.len(),
        1,
        "the second instance waits for the host port"
    );

    // Removing the apps removes every namespace, veth and port mapping of their tasks.
    let netns: Vec<String> = std::fs::read_dir("/run/netns")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&bridge.netns_prefix()))
        .collect();
    assert_eq!(netns.len(), 3, "one namespace per task: {netns:?}");
    for app in ["/web", "/fixed"] {
        cluster
            .client
            .send_json(hyper::Method::DELETE, &format!("/v2/apps{app}"), b"")
            .await
            .map(|_: serde_json::Value| ())
            .expect("remove");
    }
    wait_for(
        "the tasks' namespaces to go",
        Duration::from_secs(30),
        || async {
            netns
                .iter()
                .all(|n| !Path::new("/run/netns").join(n).exists())
                .then_some(())
        },
    )
    .await;
    let map = nft_map(&bridge.table(), "ports_tcp");
    assert!(!map.contains("elements"), "no mapping left: {map}");
    let veths: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::fs::read_link(format!("/sys/class/net/{n}/master"))
                .map(|m| m.ends_with(&bridge.bridge))
                .unwrap_or(false)
        })
        .collect();
    assert!(veths.is_empty(), "no veth left on the bridge: {veths:?}");

    // What a crash of the whole host could leave (a namespace, a port mapping, no task)
    // is removed by the sweep the agent runs when it starts.
    let leftover = format!("{}0123456789ab", bridge.netns_prefix());
    let run = |program: &str, args: &[&str]| {
        let status = std::process::Command::new(program)
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "{program} {args:?}");
    };
    run("ip", &["netns", "add", &leftover]);
    run(
        "nft",
        &[
            "add",
            "element",
            "ip",
            &bridge.table(),
            "ports_tcp",
            "{ 31708 : 172.30.77.200 . 80 }",
        ],
    );
    assert_eq!(dcos_runtime::network::sweep(&bridge, &[]), 2);
    assert!(!Path::new("/run/netns").join(&leftover).exists());
    assert!(!nft_map(&bridge.table(), "ports_tcp").contains("elements"));
    cluster.stop().await;
}

/// A bridged task cannot reach a service on the host's loopback that no port mapping
/// publishes (CVE-2020-8558): what its network namespace sends through the bridge to
/// 127.0.0.1 is dropped. A task has no capability to route 127.0.0.1 out of its namespace
/// (no CAP_NET_ADMIN, no raw sockets), so the test does it for it, from outside, as a task
/// granted those would. (This machine's kernel already refuses such a packet without the
/// agent's guard; the guard is for kernels that do not.)
async fn loopback_stays_out_of_reach(cluster: &TestCluster, task_id: &str, gateway: Ipv4Addr) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(task_id);
    let pid = std::fs::read_to_string(sandbox.join("task.pid")).unwrap();
    let script = format!(
        "echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet; \
         echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet; \
         ip route del local 127.0.0.1 dev lo table local; \
         ip route del local 127.0.0.0/8 dev lo table local; \
         ip route add 127.0.0.1/32 via {gateway} dev eth0 || exit 3; \
         if timeout 3 bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' 2>/dev/null; \
         then echo reached; else echo refused; fi"
    );
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net=/proc/{}/ns/net", pid.trim()))
        .args(["bash", "-c", &script])
        .output()
        .expect("nsenter (util-linux)");
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        said.trim(),
        "refused",
        "from the task's namespace: {said} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listener.accept().is_err(),
        "the host's loopback listener saw no connection"
    );
}
