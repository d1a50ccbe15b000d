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
