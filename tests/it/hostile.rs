//! A hostile task: real tasks (a plain process as the agent's default user, a container as
//! root, a plain process as root where the agent allows it) try to reach their host the
//! ways the hardening issue lists, and every attempt must be refused. Each attempt prints
//! `<name>: refused` or `<name>: DONE`; the test reads the task's log. Attempts that the
//! agent refuses before anything runs (a host path, root on the host) are read from the
//! task's failure message.

use crate::common::{busybox_image, TestCluster};
use dcos_runtime::testimage::{LoopDevice, TestImageFormat};
use serde_json::json;
use std::time::Duration;

/// The shell lines of the device attempts: make a node of `disk` (a block device the test
/// itself can read, given by its numbers) and read a byte of it, directly or through the
/// host's own node when the task sees the host's /dev.
fn device_attempts(disk: &LoopDevice, node: &str) -> String {
    format!(
        "mknod {node} b {major} {minor} 2>/dev/null; \
         if head -c1 {node} >/dev/null 2>&1; then echo 'mknod-disk: DONE'; else echo 'mknod-disk: refused'; fi; \
         if head -c1 {path} >/dev/null 2>&1; then echo 'host-dev-disk: DONE'; else echo 'host-dev-disk: refused'; fi; \
         echo \"dev-zero-bytes: $(( $(head -c3 /dev/zero | wc -c) ))\"; ",
        major = disk.major,
        minor = disk.minor,
        path = disk.path.display(),
    )
}

/// The shell line of the API attempt: launch another task (as root, on the host) through
/// the master on loopback without a token; prints `api-post-status: <HTTP status>`.
/// `status_of` is a shell command that prints the status of a POST of `SNEAKY_APP` to `URL`.
fn api_attempt(status_of: &str, master_url: &str) -> String {
    let command = status_of.replace("URL", &format!("'{master_url}/v2/apps'"));
    format!("echo \"api-post-status: $({command})\"; ")
}

const SNEAKY_APP: &str = r#"{"id":"/sneaky","cmd":"id","user":"root"}"#;

/// The shell lines of the attempts on another task's sandbox `other`: its environment
/// (task.json), its logs, and a setuid file it wrote into its writable layer.
fn neighbour_attempts(other: &std::path::Path) -> String {
    let other = other.display();
    format!(
        "for f in task.json stdout stderr overlay/upper/suid; do \
           if head -c1 {other}/$f >/dev/null 2>&1; then echo \"read-$f: DONE\"; else echo \"read-$f: refused\"; fi; \
         done; \
         if {other}/overlay/upper/suid true 2>/dev/null; then echo 'run-suid: DONE'; else echo 'run-suid: refused'; fi; "
    )
}

fn assert_all_refused(what: &str, output: &str, attempts: &[&str]) {
    for attempt in attempts {
        let line = format!("{attempt}: refused");
        assert!(
            output.lines().any(|l| l == line),
            "{what}: expected `{line}` in its output:\n{output}"
        );
    }
    assert!(
        !output.contains("DONE"),
        "{what} reached its host:\n{output}"
    );
}

async fn import_busybox(cluster: &TestCluster) {
    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:hostile",
        TestImageFormat::DockerSave,
    );
    let url = format!("{}/images", cluster.handle().agent_url);
    let _: dcos_api::ImagesEnvelope = cluster.client.upload(&url, &tarball).await.unwrap();
}

fn curl_status() -> String {
    format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -H 'Content-Type: application/json' -d '{SNEAKY_APP}' URL"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_task_is_refused_everything() {
    let cluster = TestCluster::start().await;
    let disk = LoopDevice::attach(&cluster.dir.path().join("disk.img")).expect("a loop device");
    // The test itself can read the disk: a refusal below is the task's isolation.
    assert_eq!(std::fs::read(&disk.path).unwrap()[0], 0x5a);
    import_busybox(&cluster).await;
    let master_url = cluster.handle().master_url.clone();
    // busybox wget names the status in its error ("server returned error: HTTP/1.1 401 ...").
    let wget = format!(
        "wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '{SNEAKY_APP}' URL 2>&1 | grep -o 'HTTP/1.1 [0-9]*' | grep -o '[0-9]*$'"
    );

    // A container, root inside: devices, the API, and a setuid file left in its layer.
    cluster
        .deploy(json!({
            "id": "hostile-container",
            "cmd": format!(
                "cat /bin/busybox > /suid; chmod 4755 /suid; {}{} echo end; sleep 1000",
                device_attempts(&disk, "/dev/disk"),
                api_attempt(&wget, &master_url)
            ),
            "env": {"SECRET": "container-secret"},
            "cpus": 0.1, "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": "busybox:hostile"}}
        }))
        .await
        .expect("deploy container");
    let container = cluster.output_of("/hostile-container").await;
    assert_all_refused("the container", &container, &["mknod-disk"]);
    assert!(container.contains("dev-zero-bytes: 3"), "{container}");
    assert!(container.contains("api-post-status: 401"), "{container}");
    let container_task = cluster.running("/hostile-container").await.remove(0);
    let neighbour = cluster.sandbox(&container_task.id);
    assert!(
        neighbour.join("overlay/upper/suid").exists(),
        "the container wrote its setuid file"
    );

    // A plain task, as the agent's default user: devices, the API, the neighbour's files.
    cluster
        .deploy(json!({
            "id": "hostile-plain",
            "cmd": format!(
                "echo \"uid: $(id -u)\"; {}{}{} echo end; sleep 1000",
                device_attempts(&disk, "./disk"),
                api_attempt(&curl_status(), &master_url),
                neighbour_attempts(&neighbour)
            ),
            "cpus": 0.1, "mem": 32
        }))
        .await
        .expect("deploy plain");
    let plain = cluster.output_of("/hostile-plain").await;
    assert!(plain.contains("uid: 65534"), "it runs as nobody: {plain}");
    assert_all_refused(
        "the plain task",
        &plain,
        &[
            "mknod-disk",
            "host-dev-disk",
            "read-task.json",
            "read-stdout",
            "read-stderr",
            "read-overlay/upper/suid",
            "run-suid",
        ],
    );
    assert!(plain.contains("api-post-status: 401"), "{plain}");

    // What the agent refuses before anything runs: root on the host, the host's files.
    cluster
        .deploy(json!({"id": "hostile-root", "cmd": "id", "user": "root", "cpus": 0.1, "mem": 16}))
        .await
        .expect("deploy root");
    let message = cluster.failure_of("/hostile-root").await;
    assert!(message.contains("allow_root_tasks"), "{message}");
    for (app, host_path, reason) in [
        ("hostile-etc", "/etc", "host_paths"),
        ("hostile-proc", "/proc", "no task may mount it"),
    ] {
        cluster
            .deploy(json!({
                "id": app, "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
                "container": {"type": "MESOS", "docker": {"image": "busybox:hostile"},
                              "volumes": [{"containerPath": "/host", "hostPath": host_path, "mode": "RW"}]}
            }))
            .await
            .expect("deploy host path");
        let message = cluster.failure_of(&format!("/{app}")).await;
        assert!(message.contains(reason), "{app}: {message}");
    }

    let apps: serde_json::Value = cluster.client.get("/v2/apps").await.unwrap();
    let ids: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(
        !ids.contains(&"/sneaky"),
        "a task launched another: {ids:?}"
    );
    cluster.stop().await;
}

/// Where the agent's operator lets tasks without an image run as root, they hold every
/// capability of the host's root, and still no device but the standard ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_task_where_allowed_still_reaches_no_device() {
    let cluster = TestCluster::start_with(|opts| opts.agent.policy.allow_root_tasks = true).await;
    let disk = LoopDevice::attach(&cluster.dir.path().join("disk.img")).expect("a loop device");
    assert_eq!(std::fs::read(&disk.path).unwrap()[0], 0x5a);
    cluster
        .deploy(json!({
            "id": "root-plain",
            "cmd": format!("echo \"uid: $(id -u)\"; {} echo end; sleep 1000", device_attempts(&disk, "./disk")),
            "user": "root",
            "cpus": 0.1, "mem": 32
        }))
        .await
        .expect("deploy");
    let output = cluster.output_of("/root-plain").await;
    assert!(output.contains("uid: 0"), "{output}");
    assert_all_refused("the root task", &output, &["mknod-disk", "host-dev-disk"]);
    assert!(output.contains("dev-zero-bytes: 3"), "{output}");
    cluster.stop().await;
}

/// The app's `disk` is enforced as Mesos's disk isolator does: a task that writes more than
/// it asked for is killed, and its final status says why; one within its limit runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_over_its_disk_is_killed_with_the_reason() {
    let cluster = TestCluster::start_with(|opts| opts.agent.disk_check_interval_ms = 300).await;
    import_busybox(&cluster).await;
    let fill = "dd if=/dev/zero of=big bs=1048576 count=12 2>/dev/null; echo end; sleep 1000";
    for (id, disk, container) in [
        ("disk-plain", 4, false),
        ("disk-container", 4, true),
        ("disk-within", 64, false),
    ] {
        let mut app = json!({"id": id, "cmd": fill, "cpus": 0.1, "mem": 32, "disk": disk});
        if container {
            app["cmd"] = json!(format!("cd /; {fill}"));
            app["container"] = json!({"type": "MESOS", "docker": {"image": "busybox:hostile"}});
        }
        cluster.deploy(app).await.expect("deploy");
    }
    for app in ["/disk-plain", "/disk-container"] {
        let message = cluster.failure_of(app).await;
        // The check may catch the writer part way through its 12 MiB: any amount over 4 MiB.
        let wrote = message
            .split("wrote ")
            .nth(1)
            .and_then(|rest| rest.split(" MiB").next())
            .and_then(|n| n.parse::<u64>().ok());
        assert!(
            message.contains("over its disk limit of 4 MiB") && wrote.is_some_and(|mib| mib > 4),
            "{app}: {message}"
        );
    }
    let within = cluster.output_of("/disk-within").await;
    assert!(within.contains("end"), "{within}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(cluster.running("/disk-within").await.len(), 1);
    cluster.stop().await;
}
