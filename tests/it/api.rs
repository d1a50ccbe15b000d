//! The services API end to end with plain-process tasks: Marathon shapes, scaling, removal,
//! logs, metrics, and every bad-input case refused with a named field and nothing left behind.

use crate::common::{wait_for, TestCluster};
use dcos_api::{AppEnvelope, AppsEnvelope, TasksEnvelope};
use dcos_rs::cli::client::ClientError;
use hyper::Method;
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployed_app_runs_and_answers_in_marathon_shapes() {
    let cluster = TestCluster::start().await;
    let app = cluster
        .deploy(json!({"id": "web", "cmd": "echo hello from $MESOS_TASK_ID; sleep 1000", "cpus": 0.1, "mem": 32, "instances": 1, "env": {"GREETING": "hi"}}))
        .await
        .expect("deploy");
    assert_eq!(app.spec.id, "/web");
    let running = cluster.wait_running("/web", 1).await;
    let task = &running[0];
    assert!(task.started_at.is_some());
    assert_eq!(task.cpus, 0.1);
    assert_eq!(task.mem, 32);

    let raw: Value = cluster.client.get("/v2/apps/web").await.unwrap();
    let app = &raw["app"];
    for field in [
        "id",
        "cmd",
        "cpus",
        "mem",
        "instances",
        "env",
        "tasksRunning",
        "tasksStaged",
        "tasksHealthy",
        "tasksUnhealthy",
        "deployments",
        "version",
    ] {
        assert!(app.get(field).is_some(), "app JSON lacks {field}: {app}");
    }
    assert_eq!(app["tasksRunning"], 1);
    let raw_tasks: Value = cluster.client.get("/v2/apps/web/tasks").await.unwrap();
    let t = &raw_tasks["tasks"][0];
    for field in [
        "id",
        "appId",
        "host",
        "state",
        "startedAt",
        "stagedAt",
        "slaveId",
    ] {
        assert!(t.get(field).is_some(), "task JSON lacks {field}: {t}");
    }
    assert_eq!(t["state"], "TASK_RUNNING");

    let log_url = format!("{}/files/tasks/{}/stdout", task.agent_url, task.id);
    let log = wait_for("the task's stdout", Duration::from_secs(10), || async {
        let text = cluster.client.get_text(&log_url).await.ok()?;
        text.contains("hello from").then_some(text)
    })
    .await;
    assert!(log.contains(&task.id), "MESOS_TASK_ID is set: {log}");

    // Mesos's agent endpoints: the task as the services framework's command task, and its
    // stdout through /files/read.json from the `directory` /state gives (nothing else of
    // the sandbox's top: the spec holds the task's environment).
    let state: Value = cluster
        .client
        .get(&format!("{}/state", task.agent_url))
        .await
        .unwrap();
    let framework = state["frameworks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == dcos_core::mesos::state::SERVICES_FRAMEWORK_ID)
        .unwrap_or_else(|| panic!("the services framework in {state}"));
    let executor = &framework["executors"][0];
    assert_eq!(executor["tasks"][0]["id"], task.id.as_str(), "{state}");
    assert_eq!(executor["tasks"][0]["state"], "TASK_RUNNING", "{state}");
    assert_eq!(state["id"], task.slave_id.as_str(), "{state}");
    let directory = executor["directory"].as_str().unwrap();
    let client = &cluster.client;
    let read = async |query: &str| {
        let url = format!(
            "{}/files/read.json?path={directory}/{query}",
            task.agent_url
        );
        client.get::<Value>(&url).await
    };
    let size = read("stdout&offset=-1").await.unwrap()["offset"]
        .as_u64()
        .unwrap();
    assert!(size > 0);
    let page = read(&format!("stdout&offset=0&length={size}"))
        .await
        .unwrap();
    assert!(
        page["data"].as_str().unwrap().contains("hello from"),
        "{page}"
    );
    assert_eq!(page["offset"], 0);
    let refused = api_error(read("task.json&offset=0").await);
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (403, "forbidden"),
        "{refused:?}"
    );
    let missing = api_error(read("sandbox/nothing&offset=0").await);
    assert_eq!(missing.status, 404, "{missing:?}");

    let metrics = cluster.client.get_text("/metrics").await.unwrap();
    for needle in [
        "dcos_tasks{state=\"TASK_RUNNING\"} 1",
        "dcos_agents{state=\"active\"} 1",
        "dcos_raft_term",
        "dcos_raft_commit_index",
        "dcos_api_requests_total{route=\"/v2/apps/{*id}\",method=\"GET\",status=\"200\"}",
        "dcos_api_request_duration_seconds_bucket",
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_up_and_down_and_removing() {
    let cluster = TestCluster::start().await;
    cluster
        .deploy(
            json!({"id": "/scaled", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 1}),
        )
        .await
        .unwrap();
    cluster.wait_running("/scaled", 1).await;
    let body = serde_json::to_vec(&json!({"instances": 3})).unwrap();
    let _: Value = cluster
        .client
        .send_json(Method::PUT, "/v2/apps/scaled", &body)
        .await
        .unwrap();
    cluster.wait_running("/scaled", 3).await;
    let body = serde_json::to_vec(&json!({"instances": 1})).unwrap();
    let _: Value = cluster
        .client
        .send_json(Method::PUT, "/v2/apps/scaled", &body)
        .await
        .unwrap();
    let survivors = cluster.wait_running("/scaled", 1).await;
    let killed = cluster
        .tasks("/scaled")
        .await
        .into_iter()
        .filter(|t| t.state == dcos_core::TaskState::Killed)
        .count();
    assert_eq!(killed, 2, "the two extra tasks end as TASK_KILLED");
    let app: AppEnvelope = cluster.client.get("/v2/apps/scaled").await.unwrap();
    assert_eq!(app.app.spec.instances, 1);
    assert_eq!(app.app.tasks_running, 1);

    let _: Value = cluster
        .client
        .send_json(Method::DELETE, "/v2/apps/scaled", b"")
        .await
        .unwrap();
    wait_for(
        "the removed app's tasks to end",
        Duration::from_secs(20),
        || async {
            let tasks = cluster.tasks("/scaled").await;
            tasks.iter().all(|t| t.state.is_terminal()).then_some(())
        },
    )
    .await;
    let pid_file = cluster
        .dir
        .path()
        .join(format!("data/agent/tasks/{}/task.pid", survivors[0].id));
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!crate::common::pid_alive(pid), "the task's process is gone");
    let apps: AppsEnvelope = cluster.client.get("/v2/apps").await.unwrap();
    assert!(apps.apps.is_empty());
    cluster.stop().await;
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> dcos_api::ApiError {
    match result {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The fields a `/v2` 422 names, as Marathon's `details[].path` (`/container/docker/image`).
fn field_errors(e: &dcos_api::ApiError) -> Vec<String> {
    e.details
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x["path"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_with_the_field_and_nothing_is_created() {
    let cluster = TestCluster::start().await;
    let post = |body: &'static [u8]| {
        let client = cluster.client.clone();
        async move {
            client
                .send_json::<Value>(Method::POST, "/v2/apps", body)
                .await
        }
    };

    let e = api_error(post(b"{\"id\": \"web\", \"cmd\": ").await);
    assert_eq!((e.status, e.code.as_str()), (400, "bad_request"));
    assert!(e.message.contains("malformed JSON"), "{}", e.message);

    let e = api_error(post(br#"{"id": "web", "cmd": "true", "cpus": "lots"}"#).await);
    assert_eq!(e.status, 422);
    assert_eq!(field_errors(&e), vec!["/cpus"]);

    let e = api_error(post(br#"{"id": "web", "cmd": "true", "env": {"A": 5}}"#).await);
    assert_eq!(e.status, 422);
    assert_eq!(field_errors(&e), vec!["/env/A"]);

    let e = api_error(post(br#"{"id": "Bad_Id", "cmd": "true", "mem": 1}"#).await);
    assert_eq!(e.status, 422);
    assert_eq!(
        field_errors(&e),
        vec!["/id", "/mem"],
        "every invalid field is named"
    );

    let e = api_error(post(br#"{"id": "big", "cmd": "true", "mem": 4096000}"#).await);
    assert_eq!(e.status, 422);
    assert_eq!(field_errors(&e), vec!["/mem"]);
    assert!(
        e.message.contains("more than any agent offers"),
        "{}",
        e.message
    );

    let e = api_error(
        post(br#"{"id": "img", "container": {"docker": {"image": "no-such-image:1"}}}"#).await,
    );
    assert_eq!(e.status, 422);
    assert_eq!(field_errors(&e), vec!["/container/docker/image"]);

    let e = api_error(post(b"[1, 2]").await);
    assert_eq!(e.status, 400);

    let apps: AppsEnvelope = cluster.client.get("/v2/apps").await.unwrap();
    assert!(apps.apps.is_empty(), "no refused app was created: {apps:?}");
    let tasks: TasksEnvelope = cluster.client.get("/cluster/v1/tasks").await.unwrap();
    assert!(tasks.tasks.is_empty());

    post(br#"{"id": "dup", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}"#)
        .await
        .unwrap();
    let e = api_error(post(br#"{"id": "dup", "cmd": "sleep 5", "cpus": 0.1, "mem": 16}"#).await);
    assert_eq!((e.status, e.code.as_str()), (409, "conflict"));
    let app: AppEnvelope = cluster.client.get("/v2/apps/dup").await.unwrap();
    assert_eq!(
        app.app.spec.cmd.as_deref(),
        Some("sleep 1000"),
        "the duplicate changed nothing"
    );

    let e = api_error(cluster.client.get::<Value>("/v2/apps/missing").await);
    assert_eq!(e.status, 404);
    let huge = vec![b' '; 2 << 20];
    let e = api_error(
        cluster
            .client
            .send_json::<Value>(Method::POST, "/v2/apps", &huge)
            .await,
    );
    assert_eq!(
        (e.status, e.code.as_str()),
        (413, "too_large"),
        "bodies over the limit are refused as JSON"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_task_fails_with_exit_code_and_is_relaunched_with_backoff() {
    let cluster = TestCluster::start().await;
    cluster
        .deploy(json!({"id": "crash", "cmd": "echo bye >&2; exit 3", "cpus": 0.1, "mem": 16}))
        .await
        .unwrap();
    let failed = wait_for("two failed attempts", Duration::from_secs(20), || async {
        let failed: Vec<_> = cluster
            .tasks("/crash")
            .await
            .into_iter()
            .filter(|t| t.state == dcos_core::TaskState::Failed)
            .collect();
        (failed.len() >= 2).then_some(failed)
    })
    .await;
    assert_eq!(failed[0].exit_code, Some(3));
    assert_eq!(failed[0].message.as_deref(), Some("exited with code 3"));
    let app: AppEnvelope = cluster.client.get("/v2/apps/crash").await.unwrap();
    // Not in Marathon's app JSON (its clients refuse unknown keys): read from the state.
    let consecutive_failures = cluster
        .handle()
        .master
        .read(|s| s.services.apps["/crash"].consecutive_failures);
    assert!(consecutive_failures >= 2);
    assert!(
        !app.app.deployments.is_empty(),
        "a crash-looping app is still deploying"
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_get_distinct_host_ports_in_their_environment() {
    let cluster = TestCluster::start().await;
    cluster
        .deploy(json!({
            "id": "ported", "cmd": "echo \"ports=$PORTS p0=$PORT0 p1=$PORT1 p=$PORT\"; sleep 1000",
            "cpus": 0.1, "mem": 16, "instances": 2,
            "portDefinitions": [{"port": 0, "name": "http"}, {"port": 0}]
        }))
        .await
        .unwrap();
    let tasks = cluster.wait_running("/ported", 2).await;
    let mut all: Vec<u16> = tasks.iter().flat_map(|t| t.ports.clone()).collect();
    all.sort();
    assert_eq!(
        all,
        vec![31000, 31001, 31002, 31003],
        "four distinct ports from the agent's range"
    );
    for task in &tasks {
        let url = format!("{}/files/tasks/{}/stdout", task.agent_url, task.id);
        let expected = format!(
            "ports={},{} p0={} p1={} p={}",
            task.ports[0], task.ports[1], task.ports[0], task.ports[1], task.ports[0]
        );
        wait_for("the port variables", Duration::from_secs(10), || async {
            let text = cluster.client.get_text(&url).await.ok()?;
            text.contains(&expected).then_some(())
        })
        .await;
    }

    // A fixed port exists once per agent: the second instance waits.
    cluster
        .deploy(
            json!({"id": "fixed", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 2,
                       "portDefinitions": [{"port": 31009}], "requirePorts": true}),
        )
        .await
        .unwrap();
    wait_for("one fixed-port task", Duration::from_secs(20), || async {
        (cluster.running("/fixed").await.len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        cluster.tasks("/fixed").await.len(),
        1,
        "no second task on the same port"
    );
    let app: AppEnvelope = cluster.client.get("/v2/apps/fixed").await.unwrap();
    assert!(!app.app.deployments.is_empty(), "the app waits for room");

    let e = api_error(
        cluster
            .client
            .send_json::<Value>(
                Method::POST,
                "/v2/apps",
                br#"{"id": "low", "cmd": "true", "portDefinitions": [{"port": 80}], "requirePorts": true}"#,
            )
            .await,
    );
    assert_eq!(e.status, 422);
    assert_eq!(field_errors(&e), vec!["/portDefinitions(0)/port"]);
    cluster.stop().await;
}
