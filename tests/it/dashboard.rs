//! The dashboard in a real browser: Debian's headless chromium driven by Playwright
//! (`tests/clients/dashboard_ui.py`) against a running `dcos-rs up`: log in, deploy from the
//! editor, see it run without a reload, scale, follow a task's log, run a job and read its
//! history, drain the agent; the console stays free of errors. The screenshots it takes go
//! to `$DCOS_RS_SCREENSHOTS` (default `target/screenshots`; `make screenshots` copies the
//! README's three from there).

use crate::common::TestCluster;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_deploys_scales_follows_logs_runs_a_job_and_drains_in_chromium() {
    let cluster = TestCluster::start().await;
    let shots = std::env::var("DCOS_RS_SCREENSHOTS")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/screenshots").into());
    let mut command = Command::new("python3");
    command
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/clients/dashboard_ui.py"
        ))
        .arg(&cluster.handle().master_url)
        .arg(cluster.token())
        .arg(&shots)
        .arg(dcos_rs::build_version());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named 'playwright'"),
        "playwright is missing: pip install playwright==1.65.2 (.ci/run does)"
    );
    assert!(
        output.status.success(),
        "the dashboard test failed:\n{stdout}\n{stderr}"
    );
    cluster.stop().await;
}
