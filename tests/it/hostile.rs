//! A hostile task: real tasks (a plain process and a container, both as root) try to
//! reach their host the ways the hardening issue lists, and every attempt must be refused.
//! Each attempt prints `<name>: refused` or `<name>: DONE`; the test reads the task's log.

use crate::common::{busybox_image, wait_for, TestCluster};
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

/// The task's stdout once it printed `end`.
async fn output_of(cluster: &TestCluster, app_id: &str) -> String {
    let task = cluster.wait_running(app_id, 1).await.remove(0);
    let stdout = cluster
        .dir
        .path()
        .join("data/agent/tasks")
        .join(&task.id)
        .join("stdout");
    let stderr = stdout.with_file_name("stderr");
    let output = wait_for(
        &format!("{app_id} to finish its attempts"),
        Duration::from_secs(20),
        || {
            let stdout = stdout.clone();
            async move {
                let text = std::fs::read_to_string(&stdout).ok()?;
                text.contains("end").then_some(text)
            }
        },
    )
    .await;
    // Its stderr too, for the messages of a failed assertion.
    let stderr = std::fs::read_to_string(stderr).unwrap_or_default();
    format!("{output}--- stderr ---\n{stderr}")
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_task_is_refused_everything() {
    let cluster = TestCluster::start().await;
    let disk = LoopDevice::attach(&cluster.dir.path().join("disk.img")).expect("a loop device");
    // The test itself can read the disk: a refusal below is the task's isolation.
    assert_eq!(std::fs::read(&disk.path).unwrap()[0], 0x5a);

    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:hostile",
        TestImageFormat::DockerSave,
    );
    let url = format!("{}/images", cluster.handle().agent_url);
    let _: dcos_api::ImagesEnvelope = cluster.client.upload(&url, &tarball).await.unwrap();

    let master_url = cluster.handle().master_url.clone();
    let curl = format!(
        "curl -s -o /dev/null -w '%{{http_code}}' -H 'Content-Type: application/json' -d '{SNEAKY_APP}' URL"
    );
    // busybox wget names the status in its error ("server returned error: HTTP/1.1 401 ...").
    let wget = format!(
        "wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '{SNEAKY_APP}' URL 2>&1 | grep -o 'HTTP/1.1 [0-9]*' | grep -o '[0-9]*$'"
    );
    cluster
        .deploy(json!({
            "id": "hostile-plain",
            "cmd": format!(
                "{}{} echo end; sleep 1000",
                device_attempts(&disk, "./disk"),
                api_attempt(&curl, &master_url)
            ),
            "user": "root",
            "cpus": 0.1, "mem": 32
        }))
        .await
        .expect("deploy plain");
    cluster
        .deploy(json!({
            "id": "hostile-container",
            "cmd": format!(
                "{}{} echo end; sleep 1000",
                device_attempts(&disk, "/dev/disk"),
                api_attempt(&wget, &master_url)
            ),
            "cpus": 0.1, "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": "busybox:hostile"}}
        }))
        .await
        .expect("deploy container");

    let plain = output_of(&cluster, "/hostile-plain").await;
    assert_all_refused("the plain task", &plain, &["mknod-disk", "host-dev-disk"]);
    assert!(plain.contains("dev-zero-bytes: 3"), "{plain}");
    assert!(plain.contains("api-post-status: 401"), "{plain}");
    let container = output_of(&cluster, "/hostile-container").await;
    assert_all_refused("the container", &container, &["mknod-disk"]);
    assert!(container.contains("dev-zero-bytes: 3"), "{container}");
    assert!(container.contains("api-post-status: 401"), "{container}");
    let apps: serde_json::Value = cluster.client.get("/v2/apps").await.unwrap();
    let ids: Vec<&str> = apps["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(!ids.contains(&"/sneaky"), "a task launched another: {ids:?}");
    cluster.stop().await;
}
