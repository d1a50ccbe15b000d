//! Container tasks through the shim and libcontainer: image import, namespaces, cgroup
//! limits, logs, and the OOM killer reported as such.

use crate::common::{busybox_image, wait_for, TestCluster};
use dcos_api::ImagesEnvelope;
use dcos_runtime::testimage::TestImageFormat;
use serde_json::json;
use std::time::Duration;

async fn import(cluster: &TestCluster, format: TestImageFormat, reference: &str) {
    let tarball = busybox_image(cluster.dir.path(), reference, format);
    let url = format!("{}/images", cluster.handle().agent_url);
    let imported: ImagesEnvelope = cluster.client.upload(&url, &tarball).await.expect("import");
    assert_eq!(imported.images.len(), 1, "{imported:?}");
}

fn cgroup_file(parent: &str, task_id: &str, controller: &str, file: &str) -> std::path::PathBuf {
    std::path::Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(parent)
        .join(task_id)
        .join(file)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_task_runs_isolated_with_limits_and_logs() {
    let cluster = TestCluster::start().await;
    import(&cluster, TestImageFormat::DockerSave, "busybox:test").await;
    cluster
        .deploy(json!({
            "id": "boxed",
            "cmd": "unshare -U true 2>/dev/null || echo unshare-refused; \
                    echo from-container $(hostname); echo to-stderr >&2; sleep 1000",
            "cpus": 0.5, "mem": 64,
            "container": {"type": "MESOS", "docker": {"image": "busybox:test"}}
        }))
        .await
        .expect("deploy");
    let task = cluster.wait_running("/boxed", 1).await.remove(0);
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
    let pid: i32 = std::fs::read_to_string(sandbox.join("task.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for ns in ["pid", "mnt", "uts", "ipc"] {
        let inside = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        let outside = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        assert_ne!(inside, outside, "the task has its own {ns} namespace");
    }
    let passwd = std::fs::read_to_string(format!("/proc/{pid}/root/etc/passwd")).unwrap();
    assert_eq!(
        passwd.lines().count(),
        2,
        "the task sees its image's root, not the host's: {passwd}"
    );
    assert!(std::path::Path::new(&format!("/proc/{pid}/root/bin/busybox")).exists());
    // Its root is the shim's overlay, marked volatile: the writable layer dies with the task,
    // so its end does not sync the agent's filesystem.
    let root = root_mount(pid);
    assert!(
        // `,volatile`, or `fsync=volatile` on newer kernels
        root.contains(" - overlay ") && root.contains("volatile"),
        "root mount: {root}"
    );
    // The mount points came from the image store's layer: the start wrote nothing of /etc
    // into the writable layer, and the host's files are bound over them.
    assert!(
        !sandbox.join("overlay/upper/etc").exists(),
        "/etc was copied up"
    );
    let hosts = std::fs::read_to_string(format!("/proc/{pid}/root/etc/hosts")).unwrap();
    assert_eq!(hosts, std::fs::read_to_string("/etc/hosts").unwrap());
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        let limit = std::fs::read_to_string(cgroup_file(
            &cluster.cgroup_parent,
            &task.id,
            "memory",
            "memory.limit_in_bytes",
        ))
        .unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
        let quota = std::fs::read_to_string(cgroup_file(
            &cluster.cgroup_parent,
            &task.id,
            "cpu",
            "cpu.cfs_quota_us",
        ))
        .unwrap();
        assert_eq!(quota.trim(), "50000");
    } else {
        let limit = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/{}/{}/memory.max",
            cluster.cgroup_parent, task.id
        ))
        .unwrap();
        assert_eq!(limit.trim(), (64u64 << 20).to_string());
    }
    let containers: serde_json::Value = cluster
        .client
        .get(&format!("{}/containers", task.agent_url))
        .await
        .unwrap();
    let listed = &containers["containers"][0];
    assert_eq!(listed["taskId"], task.id.as_str());
    assert_eq!(listed["stats"]["memoryLimitBytes"], 64u64 << 20);
    assert!(
        listed["stats"]["memoryBytes"].as_u64().unwrap() > 0,
        "{containers}"
    );
    let metrics = cluster
        .client
        .get_text(&format!("{}/metrics", task.agent_url))
        .await
        .unwrap();
    let limit_line = format!(
        "dcos_task_memory_limit_bytes{{task=\"{}\"}} {}",
        task.id,
        64u64 << 20
    );
    assert!(metrics.contains(&limit_line), "{metrics}");
    assert!(metrics.contains("dcos_task_cpu_seconds{"), "{metrics}");
    let stdout_url = format!("{}/files/tasks/{}/stdout", task.agent_url, task.id);
    let stderr_url = format!("{}/files/tasks/{}/stderr", task.agent_url, task.id);
    let out = wait_for("container stdout", Duration::from_secs(10), || async {
        let text = cluster.client.get_text(&stdout_url).await.ok()?;
        text.contains("from-container").then_some(text)
    })
    .await;
    assert!(
        out.contains(&task.id[..20]),
        "hostname is the task id: {out}"
    );
    // The default seccomp profile: the workload runs filtered, and a user namespace (which
    // root outside may create) is refused inside.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(out.contains("unshare-refused"), "unshare is denied: {out}");
    let err = cluster.client.get_text(&stderr_url).await.unwrap();
    assert!(err.contains("to-stderr"), "{err}");
    assert!(
        !err.contains("WARN"),
        "the runtime's own warnings stay out of the task's stderr: {err}"
    );
    let parent = cluster.cgroup_parent.clone();
    cluster.stop().await;
    assert!(
        !crate::common::pid_alive(pid),
        "stopping `up` stops its tasks"
    );
    assert!(
        !cgroup_file(&parent, &task.id, "memory", "").exists(),
        "the task's cgroup is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_over_its_memory_limit_is_oom_killed_and_reported_failed() {
    let cluster = TestCluster::start().await;
    import(&cluster, TestImageFormat::OciLayout, "busybox:oom").await;
    cluster
        .deploy(json!({
            "id": "hog", "cmd": "echo allocating; exec dd if=/dev/zero of=/dev/null bs=256M count=1",
            "cpus": 0.1, "mem": 64,
            "container": {"docker": {"image": "busybox:oom"}}
        }))
        .await
        .expect("deploy");
    let failed = wait_for("the OOM-killed task", Duration::from_secs(30), || async {
        cluster
            .tasks("/hog")
            .await
            .into_iter()
            .find(|t| t.state == dcos_core::TaskState::Failed)
    })
    .await;
    let message = failed.message.clone().unwrap_or_default();
    assert!(
        message.contains("OOM-killed") && message.contains("64 MiB"),
        "reason says OOM: {message}"
    );
    let out = cluster
        .client
        .get_text(&format!(
            "{}/files/tasks/{}/stdout",
            failed.agent_url, failed.id
        ))
        .await
        .unwrap();
    assert!(out.contains("allocating"), "{out}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_mount_and_a_kill_uses_the_images_stop_signal() {
    use dcos_runtime::image::ImageConfig;
    use dcos_runtime::testimage::{busybox_layer, write_image_archive};
    // The agent's operator allows this one host directory.
    let host = tempfile::tempdir().unwrap();
    let host_dir = host.path().join("host-data");
    std::fs::create_dir_all(&host_dir).unwrap();
    let allowed = dcos_rs::agent::policy::TaskPolicy::default()
        .with_host_paths(std::slice::from_ref(&host_dir), "host_paths")
        .unwrap();
    let cluster = TestCluster::start_with(|opts| opts.agent.policy = allowed).await;
    let tarball = cluster.dir.path().join("stop-image.tar");
    let config = ImageConfig {
        cmd: vec!["sh".into()],
        env: vec![dcos_runtime::bundle::DEFAULT_PATH.into()],
        stop_signal: Some("SIGUSR1".into()),
        ..ImageConfig::default()
    };
    let layer = busybox_layer(std::path::Path::new("/bin/busybox")).unwrap();
    // A second layer: the task's root is an overlay of both layer directories.
    let mut top = dcos_runtime::testimage::LayerTar::new();
    top.file("etc/motd", 0o644, b"from-layer-two\n").unwrap();
    top.file("etc/.wh.group", 0o644, b"").unwrap();
    let top = top.finish().unwrap();
    write_image_archive(
        &tarball,
        "busybox:stop",
        &[layer, top],
        &config,
        TestImageFormat::DockerSave,
    )
    .unwrap();
    let url = format!("{}/images", cluster.handle().agent_url);
    let _: ImagesEnvelope = cluster.client.upload(&url, &tarball).await.expect("import");

    std::fs::write(host_dir.join("hello.txt"), "from-host\n").unwrap();
    let script = "trap 'echo got-usr1; exit 0' USR1; cat /data/hello.txt; cat /etc/motd; \
                  test -e /etc/passwd && test ! -e /etc/group && echo group-hidden; \
                  echo written > /scratch/out.txt; \
                  busybox touch /data/nope 2>/dev/null || echo ro-refused; \
                  busybox mount | grep ' /cache '; \
                  while true; do sleep 0.2; done";
    cluster
        .deploy(json!({
            "id": "volumes", "cmd": script, "cpus": 0.1, "mem": 64,
            "taskKillGracePeriodSeconds": 60,
            "container": {
                "docker": {"image": "busybox:stop"},
                "volumes": [
                    {"containerPath": "/data", "hostPath": host_dir, "mode": "RO"},
                    {"containerPath": "/scratch", "hostPath": "scratch", "mode": "RW"},
                    {"containerPath": "/cache", "tmpfs": {"sizeMiB": 8}}
                ]
            }
        }))
        .await
        .expect("deploy");
    let task = cluster.wait_running("/volumes", 1).await.remove(0);
    let stdout_url = format!("{}/files/tasks/{}/stdout", task.agent_url, task.id);
    let out = wait_for("the volume checks", Duration::from_secs(10), || async {
        let text = cluster.client.get_text(&stdout_url).await.ok()?;
        text.contains("tmpfs").then_some(text)
    })
    .await;
    assert!(out.contains("from-host"), "the host path is mounted: {out}");
    assert!(
        out.contains("from-layer-two"),
        "the upper layer shows: {out}"
    );
    assert!(
        out.contains("group-hidden"),
        "its whiteout hides a lower file: {out}"
    );
    let pid = read_pid(&cluster, &task.id);
    let root = root_mount(pid);
    assert!(
        root.contains(" - overlay "),
        "the root is an overlay of the layers, not a copy: {root}"
    );
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
    let shim_log = std::fs::read_to_string(sandbox.join("shim.log")).unwrap();
    assert!(
        !shim_log.contains("shim:"),
        "no fallback was needed (overlay, tmpfs for the state): {shim_log}"
    );
    assert!(
        out.contains("ro-refused"),
        "RO volumes refuse writes: {out}"
    );
    assert!(!host_dir.join("nope").exists());
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
    assert_eq!(
        std::fs::read_to_string(sandbox.join("volumes/scratch/out.txt")).unwrap(),
        "written\n"
    );

    // The kill uses the image's StopSignal (SIGUSR1), which the task handles at once; with
    // SIGTERM (ignored by a shell as pid 1) it would take the 60 s grace period.
    let started = std::time::Instant::now();
    // Scale to 0 (not remove): ended tasks of a removed app are forgotten at once.
    let body = serde_json::to_vec(&json!({"instances": 0})).unwrap();
    let _: serde_json::Value = cluster
        .client
        .send_json(hyper::Method::PUT, "/v2/apps/volumes", &body)
        .await
        .unwrap();
    let ended = wait_for("the killed task", Duration::from_secs(20), || async {
        cluster
            .tasks("/volumes")
            .await
            .into_iter()
            .find(|t| t.state.is_terminal())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(ended.state, dcos_core::TaskState::Killed);
    assert_eq!(
        ended.message.as_deref(),
        Some("killed on request, exited with code 0")
    );
    let out = cluster.client.get_text(&stdout_url).await.unwrap();
    assert!(out.contains("got-usr1"), "{out}");
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_that_lost_its_tag_is_collected_once_no_task_uses_it() {
    use dcos_runtime::image::ImageConfig;
    use dcos_runtime::testimage::{busybox_layer, write_image_archive};
    let cluster = TestCluster::start().await;
    let agent = cluster.handle().agent.clone();
    let import = |env: &str| {
        let tarball = cluster.dir.path().join(format!("gc-{env}.tar"));
        let config = ImageConfig {
            cmd: vec!["sh".into()],
            env: vec![
                dcos_runtime::bundle::DEFAULT_PATH.into(),
                format!("VARIANT={env}"),
            ],
            ..ImageConfig::default()
        };
        let layer = busybox_layer(std::path::Path::new("/bin/busybox")).unwrap();
        write_image_archive(
            &tarball,
            "busybox:gc",
            &[layer],
            &config,
            TestImageFormat::OciLayout,
        )
        .unwrap();
        let url = format!("{}/images", cluster.handle().agent_url);
        let client = cluster.client.clone();
        async move {
            let imported: ImagesEnvelope = client.upload(&url, &tarball).await.expect("import");
            imported.images[0].digest.clone()
        }
    };
    let first = import("one").await;
    cluster
        .deploy(
            json!({"id": "gc", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
                       "container": {"docker": {"image": "busybox:gc"}}}),
        )
        .await
        .unwrap();
    cluster.wait_running("/gc", 1).await;
    let second = import("two").await;
    assert_ne!(first, second);
    let untagged = |images: &ImagesEnvelope| {
        images
            .images
            .iter()
            .filter(|i| i.reference == i.digest)
            .count()
    };
    let images: ImagesEnvelope = cluster
        .client
        .get(&format!("{}/images", cluster.handle().agent_url))
        .await
        .unwrap();
    assert_eq!(
        untagged(&images),
        1,
        "the first image lost its tag: {images:?}"
    );
    assert_eq!(
        agent.gc_images(),
        0,
        "a running task still uses the untagged image"
    );

    let body = serde_json::to_vec(&json!({"instances": 0})).unwrap();
    let _: serde_json::Value = cluster
        .client
        .send_json(hyper::Method::PUT, "/v2/apps/gc", &body)
        .await
        .unwrap();
    wait_for("the task to end", Duration::from_secs(20), || async {
        (agent.running_task_count() == 0).then_some(())
    })
    .await;
    assert_eq!(agent.gc_images(), 1, "now nothing uses it");
    let images: ImagesEnvelope = cluster
        .client
        .get(&format!("{}/images", cluster.handle().agent_url))
        .await
        .unwrap();
    assert_eq!(untagged(&images), 0);
    assert_eq!(images.images.len(), 1, "the tagged image stays: {images:?}");
    cluster.stop().await;
}

/// The line of `/proc/<pid>/mountinfo` for the process's root.
fn root_mount(pid: i32) -> String {
    let mounts = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    mounts
        .lines()
        .find(|line| line.split(' ').nth(4) == Some("/"))
        .unwrap_or_else(|| panic!("no root mount in {mounts}"))
        .to_string()
}

fn read_pid(cluster: &TestCluster, task_id: &str) -> i32 {
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(task_id);
    std::fs::read_to_string(sandbox.join("task.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// The `Uid:` line of a process: real, effective, saved, filesystem uid as the host sees them.
fn host_uids(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_task_is_root_inside_and_an_unprivileged_id_outside() {
    use dcos_runtime::userns::USERNS_HOST_ID_BASE;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let cluster = TestCluster::start().await;
    // The task's root is an unprivileged host id: it walks to its sandbox only through
    // directories searchable by others, whatever the umask the tests run under.
    std::fs::set_permissions(cluster.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    import(&cluster, TestImageFormat::DockerSave, "busybox:userns").await;
    let script = "echo uid=$(id -u) gid=$(id -g); cat /proc/self/uid_map; \
                  echo x > /root/x && echo wrote-root; echo x > /tmp/x && echo wrote-tmp; \
                  echo x > /scratch/x && echo wrote-volume; mkdir /new && echo made-dir; \
                  echo done; sleep 1000";
    cluster
        .deploy(json!({
            "id": "userns", "cmd": script, "cpus": 0.1, "mem": 48,
            "container": {
                "type": "MESOS", "docker": {"image": "busybox:userns"}, "userNamespace": true,
                "volumes": [{"containerPath": "/scratch", "hostPath": "scratch", "mode": "RW"}]
            }
        }))
        .await
        .expect("deploy");
    cluster
        .deploy(json!({
            "id": "plain", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
            "container": {"type": "MESOS", "docker": {"image": "busybox:userns"}}
        }))
        .await
        .expect("deploy");
    let task = cluster.wait_running("/userns", 1).await.remove(0);
    let stdout_url = format!("{}/files/tasks/{}/stdout", task.agent_url, task.id);
    let stderr_url = format!("{}/files/tasks/{}/stderr", task.agent_url, task.id);
    let out = wait_for(
        "the user namespace checks",
        Duration::from_secs(10),
        || async {
            let text = cluster.client.get_text(&stdout_url).await.ok()?;
            text.contains("done").then_some(text)
        },
    )
    .await;
    let err = cluster.client.get_text(&stderr_url).await.unwrap();
    assert!(out.contains("uid=0 gid=0"), "root inside: {out} {err}");
    let map_line = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some("0"))
        .unwrap_or_else(|| panic!("uid_map printed: {out}"));
    assert_eq!(
        map_line.split_whitespace().collect::<Vec<_>>(),
        ["0", &USERNS_HOST_ID_BASE.to_string(), "65536"],
        "{out}"
    );
    for wrote in ["wrote-root", "wrote-tmp", "wrote-volume", "made-dir"] {
        assert!(out.contains(wrote), "{wrote}: {out} {err}");
    }

    let pid = read_pid(&cluster, &task.id);
    let base = USERNS_HOST_ID_BASE.to_string();
    assert_eq!(
        host_uids(pid),
        format!("Uid:\t{base}\t{base}\t{base}\t{base}"),
        "the host sees the mapped id"
    );
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap(),
        "the task has its own user namespace"
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(status.contains("Seccomp:\t2"), "still filtered: {status}");
    let sandbox = cluster.dir.path().join("data/agent/tasks").join(&task.id);
    let written = std::fs::metadata(sandbox.join("volumes/scratch/x")).unwrap();
    assert_eq!(
        written.uid(),
        USERNS_HOST_ID_BASE,
        "volume files belong to the mapped root"
    );
    // The task sees its image's files as its own root's; the image store's layers stay as
    // unpacked (the shifted view is an idmapped mount of the task's alone).
    assert_eq!(
        std::fs::metadata(format!("/proc/{pid}/root/bin/busybox"))
            .unwrap()
            .uid(),
        USERNS_HOST_ID_BASE
    );
    for tree in std::fs::read_dir(cluster.dir.path().join("data/agent/images/layers")).unwrap() {
        // The image's layer, and the store's mount points that go on top of it.
        let tree = tree.unwrap().path();
        let file = match tree.ends_with("mount-targets") {
            true => tree.join("etc/hosts"),
            false => tree.join("bin/busybox"),
        };
        assert_eq!(
            std::fs::metadata(&file).unwrap().uid(),
            0,
            "{}",
            file.display()
        );
    }

    // Still limited by the task's cgroup.
    if std::path::Path::new("/sys/fs/cgroup/memory").exists() {
        let procs = std::fs::read_to_string(cgroup_file(
            &cluster.cgroup_parent,
            &task.id,
            "memory",
            "cgroup.procs",
        ))
        .unwrap();
        assert!(
            procs.lines().any(|l| l.trim() == pid.to_string()),
            "{pid} in {procs}"
        );
        let limit = std::fs::read_to_string(cgroup_file(
            &cluster.cgroup_parent,
            &task.id,
            "memory",
            "memory.limit_in_bytes",
        ))
        .unwrap();
        assert_eq!(limit.trim(), (48u64 << 20).to_string());
    } else {
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(cgroup.contains(&task.id), "{cgroup}");
    }

    let plain = cluster.wait_running("/plain", 1).await.remove(0);
    let plain_pid = read_pid(&cluster, &plain.id);
    assert_eq!(
        std::fs::read_link(format!("/proc/{plain_pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap(),
        "without the option a task stays in the host's user namespace"
    );
    assert_eq!(host_uids(plain_pid), "Uid:\t0\t0\t0\t0");
    cluster.stop().await;
}
