//! The real clients from PyPI against an in-process cluster (`tests/clients/*.py`): their
//! strict models refuse any key they do not know and any other date format, so a passing
//! script is the proof that the answers are what they parse. `.ci/run` installs them.

use crate::common::TestCluster;
use std::process::Command;

/// Runs `tests/clients/<script>` with the cluster's URL, its token and `extra` arguments;
/// fails naming the module and how to install it (`module`, `install`) when it is missing, and with the
/// script's output when it does not succeed. Returns its stdout.
async fn run_client_script(
    cluster: &TestCluster,
    script: &str,
    extra: &[&str],
    module: &str,
    install: &str,
) -> String {
    run_client_script_with("python3", cluster, script, extra, module, install).await
}

/// `run_client_script` with the Python interpreter `python` (a client in a venv of its own).
async fn run_client_script_with(
    python: &str,
    cluster: &TestCluster,
    script: &str,
    extra: &[&str],
    module: &str,
    install: &str,
) -> String {
    let script = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(python);
    command
        .arg(script)
        .arg(&cluster.handle().master_url)
        .arg(cluster.token())
        .args(extra);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{python} does not run ({e}): {install} (.ci/run installs it)"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains(&format!("No module named '{module}'")),
        "{module} is missing: {install} (.ci/run does)"
    );
    assert!(
        output.status.success(),
        "{module} failed:\n{stdout}\n{stderr}"
    );
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_python_parses_info_apps_tasks_scale_and_delete() {
    let cluster = TestCluster::start().await;
    run_client_script(
        &cluster,
        "marathon_python.py",
        &[],
        "marathon",
        "pip install marathon==0.13.0",
    )
    .await;
    cluster.stop().await;
}

/// pymesos (PyPI) runs as an external framework through Mesos's v1 scheduler API: offers,
/// two command tasks (one finishes, one runs and is killed), refused launches, implicit and
/// explicit reconciliation, teardown, and failover within and past `failover_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_runs_a_framework_through_offers() {
    let cluster = TestCluster::start().await;
    run_client_script(
        &cluster,
        "pymesos_framework.py",
        &[],
        "pymesos",
        "pip install pymesos==0.3.15 (its http-parser needs its C file made again with cython<3: .ci/run has the lines)",
    )
    .await;
    cluster.stop().await;
}

/// Two pymesos frameworks in roles of weights 1 and 3 (set with Mesos's `PUT /weights`)
/// compete for the agent's 2 cpus with short tasks for a minute: what each holds and what
/// each takes from its offers are in the ratio 1:3 within 10 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymesos_frameworks_share_by_their_roles_weights() {
    let cluster = TestCluster::start().await;
    let stdout = run_client_script(
        &cluster,
        "pymesos_weights.py",
        &["60"],
        "pymesos",
        "pip install pymesos==0.3.15 (its http-parser needs its C file made again with cython<3: .ci/run has the lines)",
    )
    .await;
    println!("{stdout}");
    cluster.stop().await;
}

/// The DC/OS CLI's venv (its pins clash with the other clients): `DCOS_CLI_PYTHON`, else
/// /opt/dcos-cli, which .ci/run makes.
fn dcos_cli_python() -> String {
    std::env::var("DCOS_CLI_PYTHON").unwrap_or_else(|_| "/opt/dcos-cli/bin/python".to_string())
}

/// The DC/OS CLI (PyPI `dcoscli` 0.6.1) runs its `dcos marathon` commands, as typed, against
/// the cluster: apps, versions, tasks, deployments, groups, the queue's debug views, the
/// leader through DC/OS's Mesos-DNS names, from its own venv (`dcos_cli_python`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dcos_cli_drives_marathon() {
    let cluster = TestCluster::start().await;
    let python = dcos_cli_python();
    let stdout = run_client_script_with(
        &python,
        &cluster,
        "dcos_cli.py",
        &[],
        "dcoscli",
        "python3 -m venv /opt/dcos-cli && /opt/dcos-cli/bin/pip install dcos==0.6.1 'docopt>=0.6,<1.0' pkginfo==1.2.1 cryptography 'virtualenv<16' && /opt/dcos-cli/bin/pip install --no-deps dcoscli==0.6.1",
    )
    .await;
    assert!(stdout.contains("every command passed"), "{stdout}");
    cluster.stop().await;
}

/// chronos-python (PyPI) drives the jobs framework through Chronos's API: ISO 8601 and
/// dependent jobs run, list and search, update, run now with retries, stats, the graph,
/// its errors (400 with `message`), kill and delete; with and without the `/v1` prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chronos_python_adds_runs_and_deletes_jobs() {
    let cluster = TestCluster::start().await;
    let stdout = run_client_script(
        &cluster,
        "chronos_python.py",
        &[],
        "chronos",
        "pip install chronos-python==1.2.1",
    )
    .await;
    assert!(stdout.contains("every call passed"), "{stdout}");
    cluster.stop().await;
}

/// Metronome's API through the DC/OS CLI's own Metronome client (`dcos.metronome`, what
/// `dcos job` calls; in the CLI's venv): jobs, a cron schedule, runs, embeds, history, stop,
/// Metronome's 201/404/409/422 answers and dates, and the same jobs through Chronos's API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dcos_clis_metronome_client_manages_jobs_and_runs() {
    let cluster = TestCluster::start().await;
    let python = dcos_cli_python();
    let stdout = run_client_script_with(
        &python,
        &cluster,
        "metronome_dcos.py",
        &[],
        "dcos",
        "python3 -m venv /opt/dcos-cli && /opt/dcos-cli/bin/pip install dcos==0.6.1 (.ci/run has the lines)",
    )
    .await;
    assert!(stdout.contains("every call passed"), "{stdout}");
    cluster.stop().await;
}

/// What marathon-lb reads (not on PyPI: `tests/clients/marathon_lb_reads.py` reads as its
/// source does): apps with tasks indexed directly, Marathon's health-check fields, service
/// ports from 10000-20000 apart from the tasks' host ports, and its three event types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_lb_finds_every_key_it_indexes() {
    let cluster = TestCluster::start().await;
    let stdout = run_client_script(
        &cluster,
        "marathon_lb_reads.py",
        &[],
        "json",
        "python3 (standard library only)",
    )
    .await;
    assert!(stdout.contains("all present"), "{stdout}");
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
    let stdout = run_client_script(
        &cluster,
        "schemathesis_master.py",
        &["25"],
        "schemathesis",
        "pip install schemathesis==4.32.5",
    )
    .await;
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("schemathesis: "))
        .unwrap_or_default();
    assert!(summary.contains(", 0 failures"), "{stdout}");
    println!("{summary}");
    cluster.stop().await;
}
