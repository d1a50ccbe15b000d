//! The dashboard in a real browser: headless Debian chromium loads `/`, runs its script
//! against the API, and the rendered page lists the node, the app, the frameworks with their
//! tasks and shares, and the running task.

use crate::common::TestCluster;
use serde_json::json;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_lists_node_app_and_running_task_in_chromium() {
    let cluster = TestCluster::start().await;
    cluster
        .deploy(json!({"id": "shown", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16}))
        .await
        .unwrap();
    let task = cluster.wait_running("/shown", 1).await.remove(0);
    let token = cluster.token();
    // The login link `up` prints.
    let dom = dump_dom(format!("{}/?token={token}", cluster.handle().master_url)).await;
    assert!(dom.contains("/shown"), "the app is listed:\n{dom}");
    assert!(dom.contains(&task.id), "the task is listed:\n{dom}");
    assert!(dom.contains("TASK_RUNNING"), "its state is shown:\n{dom}");
    assert!(
        dom.contains(&cluster.handle().agent.id),
        "the agent node is listed:\n{dom}"
    );
    // Each node's build (`dcos-rs --version`), as the dashboard shows it.
    let build = dcos_rs::build_version();
    assert!(
        dom.contains(&format!("<td>{build}</td>")),
        "the build {build} is shown:\n{dom}"
    );
    // The frameworks: the built-in services framework with its task and its share.
    let frameworks = element(&dom, "frameworks", "</table>");
    assert!(
        frameworks.contains("<td>marathon</td><td>dcos-rs-services</td>")
            && frameworks.contains("<td>running 1</td>")
            && frameworks.contains("<td>metronome</td>")
            && frameworks.contains(" %</td>"),
        "the frameworks are listed with their tasks and shares:\n{frameworks}"
    );
    let error_span = element(&dom, "error", "</span>");
    assert!(
        error_span.ends_with('>'),
        "the page shows no API error: {error_span}"
    );
    assert!(
        !dom.contains(&token),
        "the token is not left in the page or its links:\n{dom}"
    );
    // Without the link: nothing of the cluster, a request for the token instead.
    let dom = dump_dom(format!("{}/", cluster.handle().master_url)).await;
    assert!(!dom.contains("/shown"), "no data without a token:\n{dom}");
    assert!(dom.contains("an API token is needed"), "{dom}");
    assert!(
        dom.contains(r#"<section id="login" style="display: block;">"#),
        "the login form is shown:\n{dom}"
    );
    cluster.stop().await;
}

/// What the page holds between the element of id `id` and the first `end` after it.
fn element<'a>(dom: &'a str, id: &str, end: &str) -> &'a str {
    dom.split(&format!("id=\"{id}\""))
        .nth(1)
        .and_then(|rest| rest.split(end).next())
        .unwrap_or_else(|| panic!("the page has no element {id}:\n{dom}"))
}

/// The DOM of `url` after 5 s of (virtual) time in headless chromium, with a fresh profile.
async fn dump_dom(url: String) -> String {
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromium is missing: apt-get install chromium (.ci/run does)");
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::task::spawn_blocking({
        let profile = profile.path().to_path_buf();
        move || {
            Command::new(chromium)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--virtual-time-budget=5000",
                    "--dump-dom",
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg(url)
                .output()
                .expect("run chromium")
        }
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
