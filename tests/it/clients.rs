//! The real clients from PyPI against an in-process cluster (`tests/clients/*.py`): their
//! strict models refuse any key they do not know and any other date format, so a passing
//! script is the proof that the answers are what they parse. `.ci/run` installs them.

use crate::common::TestCluster;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_parses_info_apps_tasks_scale_and_delete() {
    let cluster = TestCluster::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/marathon_python.py"
    );
    let url = cluster.handle().master_url.clone();
    let token = cluster.token();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(token)
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'marathon'"),
        "marathon-python is missing: pip install marathon==0.13.0 (.ci/run does)"
    );
    assert!(
        output.status.success(),
        "marathon-python failed:\n{stderr}\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    cluster.stop().await;
}

/// schemathesis (PyPI) against `dcos-rs up` with the API's own description
/// (docs/openapi.json, also served at /openapi.json): a bounded number of generated requests
/// per operation, no 5xx, no answer outside the document, no state change after a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_answer_outside_the_openapi_description() {
    let cluster = TestCluster::start().await;
    let served: serde_json::Value = cluster.client.get("/openapi.json").await.unwrap();
    let kept: serde_json::Value = serde_json::from_str(include_str!("../../docs/openapi.json"))
        .expect("docs/openapi.json is JSON");
    assert_eq!(served, kept, "/openapi.json serves the kept description");
    // What axum refuses before a handler runs is the API's JSON error too.
    let error = cluster
        .client
        .get::<serde_json::Value>("/v2/apps/%FF")
        .await
        .expect_err("an undecodable id");
    assert_eq!(error.status(), Some(400), "{error}");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/schemathesis_master.py"
    );
    let url = cluster.handle().master_url.clone();
    let token = cluster.token();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(url)
            .arg(token)
            .arg("25")
            .output()
            .expect("python3 runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'schemathesis'"),
        "schemathesis is missing: pip install schemathesis==4.32.5 (.ci/run does)"
    );
    assert!(
        output.status.success(),
        "schemathesis found failures:\n{stdout}\n{stderr}"
    );
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("schemathesis: "))
        .unwrap_or_default();
    assert!(summary.contains(", 0 failures"), "{stdout}");
    println!("{summary}");
    cluster.stop().await;
}
