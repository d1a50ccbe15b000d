//! Readiness checks end to end with a real task: the agent probes the task's named port, the
//! deployment shows each result (Marathon's `readinessCheckResults`) and ends only once the
//! task is ready; the app shows the results with `embed=app.readiness`.

use crate::common::{wait_for, TestCluster};
use serde_json::{json, Value};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_waits_for_the_readiness_check_and_shows_its_results() {
    let cluster = TestCluster::start().await;
    // Serves its sandbox at once, and `/ready` only after 3 s.
    cluster
        .deploy(json!({
            "id": "ready-web",
            "cmd": "python3 -m http.server $PORT0 --bind 127.0.0.1 & sleep 3; echo ok > ready; wait",
            "cpus": 0.1, "mem": 64,
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{
                "path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1,
                "preserveLastResponse": true
            }]
        }))
        .await
        .map(drop)
        .unwrap_or_else(|e| panic!("deploy: {e}"));
    // `timeoutSeconds` must be below `intervalSeconds`, as in Marathon.
    let refused = cluster
        .deploy(json!({
            "id": "ready-bad", "cmd": "sleep 100", "cpus": 0.1, "mem": 16,
            "portDefinitions": [{"port": 0, "name": "http-api"}],
            "readinessChecks": [{"intervalSeconds": 1, "timeoutSeconds": 1}]
        }))
        .await
        .unwrap_err();
    let refused = format!("{refused:?}");
    assert!(
        refused.contains("readinessChecks") && refused.contains("less than intervalSeconds"),
        "{refused}"
    );

    let not_ready = wait_for(
        "a not-ready result in the deployment",
        Duration::from_secs(20),
        || async {
            let deployments: Vec<Value> = cluster.client.get("/v2/deployments").await.ok()?;
            let action = deployments
                .iter()
                .flat_map(|d| d["currentActions"].as_array().cloned().unwrap_or_default())
                .find(|a| a["app"] == "/ready-web")?;
            let result = action["readinessCheckResults"].get(0)?.clone();
            (result["lastResponse"]["status"] == 404).then_some(result)
        },
    )
    .await;
    assert_eq!(not_ready["name"], "readinessCheck");
    assert_eq!(not_ready["ready"], false);
    assert!(not_ready["taskId"]
        .as_str()
        .is_some_and(|id| id.starts_with("ready-web")));

    wait_for(
        "the deployment to end once ready",
        Duration::from_secs(20),
        || async {
            let deployments: Vec<Value> = cluster.client.get("/v2/deployments").await.ok()?;
            deployments.is_empty().then_some(())
        },
    )
    .await;
    let app: Value = cluster
        .client
        .get("/v2/apps/ready-web?embed=app.readiness")
        .await
        .unwrap();
    let result = &app["app"]["readinessCheckResults"][0];
    assert_eq!(result["ready"], true, "{app}");
    assert_eq!(result["lastResponse"]["status"], 200);
    assert_eq!(result["lastResponse"]["body"], "ok\n");
    let plain: Value = cluster.client.get("/v2/apps/ready-web").await.unwrap();
    assert!(
        plain["app"].get("readinessCheckResults").is_none(),
        "only when embedded"
    );
    cluster.stop().await;
}
