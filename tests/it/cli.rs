//! The `dcos-rs` command line against a running cluster, as a user types it: deploy from
//! the README's example files, list, logs, scale, remove, image import, and errors that
//! name the field and exit non-zero (also as JSON); jobs from both formats' files.

use crate::common::{busybox_image, wait_for, TestCluster, BIN};
use dcos_runtime::testimage::TestImageFormat;
use std::process::{Command, Output};
use std::time::Duration;

fn cli(cluster: &TestCluster, args: &[&str]) -> Output {
    cluster
        .cli()
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run dcos-rs")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_tour_deploy_logs_scale_remove_and_errors() {
    let cluster = TestCluster::start().await;
    // Deploy shows the deployment's progress until it ends.
    let out = ok(&cli(&cluster, &["app", "deploy", "examples/hello.json"]));
    assert!(out.contains("deployed /hello"), "{out}");
    assert!(
        out.contains("StartApplication /hello") && out.contains("finished: /hello runs 1/1"),
        "{out}"
    );
    let task = cluster.wait_running("/hello", 1).await.remove(0);

    let list = ok(&cli(&cluster, &["task", "list"]));
    assert!(
        list.contains(&task.id) && list.contains("TASK_RUNNING"),
        "{list}"
    );
    let logs = wait_for(
        "hello's log through the CLI",
        Duration::from_secs(10),
        || async {
            let out = ok(&cli(&cluster, &["task", "logs", "hello"]));
            out.contains("hello from").then_some(out)
        },
    )
    .await;
    assert!(logs.contains("hello from"), "{logs}");

    // A plain-process task gets the same cgroup limits as a container.
    let limit = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(&cluster.cgroup_parent)
        .join(&task.id)
        .join("memory.limit_in_bytes");
    if limit.parent().unwrap().parent().unwrap().exists() {
        assert_eq!(
            std::fs::read_to_string(&limit).unwrap().trim(),
            (16u64 << 20).to_string()
        );
    }

    ok(&cli(&cluster, &["app", "scale", "/hello", "2"]));
    cluster.wait_running("/hello", 2).await;
    let apps: serde_json::Value =
        serde_json::from_str(&ok(&cli(&cluster, &["app", "list", "--json"]))).unwrap();
    assert_eq!(apps["apps"][0]["instances"], 2);
    assert_eq!(apps["apps"][0]["tasksRunning"], 2);

    // Versions, rollback (to the one before: 1 instance) and restart (new tasks).
    let versions = ok(&cli(&cluster, &["app", "versions", "/hello"]));
    assert_eq!(versions.lines().count(), 2, "{versions}");
    assert!(
        versions.lines().next().unwrap().ends_with("(current)"),
        "{versions}"
    );
    let out = ok(&cli(&cluster, &["app", "rollback", "/hello", "--detach"]));
    assert!(out.contains("rolling /hello back to"), "{out}");
    // Done once the other task has ended (it is TASK_KILLING for its grace period first).
    let before = wait_for(
        "the rollback to 1 instance",
        Duration::from_secs(20),
        || async {
            let live = cluster.tasks("/hello").await;
            let live: Vec<_> = live
                .into_iter()
                .filter(|t| !t.state.is_terminal())
                .collect();
            (live.len() == 1 && live[0].state == dcos_core::TaskState::Running).then_some(live)
        },
    )
    .await;
    let out = ok(&cli(&cluster, &["app", "restart", "/hello"]));
    assert!(out.contains("restarting /hello"), "{out}");
    assert!(out.contains("finished: /hello runs 1/1"), "{out}");
    wait_for(
        "a new task after the restart",
        Duration::from_secs(20),
        || async {
            let running = cluster.running("/hello").await;
            (running.len() == 1 && running[0].id != before[0].id).then_some(())
        },
    )
    .await;

    // A group: its apps deploy in dependency order, shown until both run.
    let shop = cluster.dir.path().join("shop.json");
    std::fs::write(
        &shop,
        r#"{"id": "/shop", "apps": [
            {"id": "web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "dependencies": ["db"]},
            {"id": "db", "cmd": "sleep 1001", "cpus": 0.1, "mem": 16}]}"#,
    )
    .unwrap();
    let out = ok(&cli(&cluster, &["group", "deploy", shop.to_str().unwrap()]));
    assert!(out.contains("deploying group /shop"), "{out}");
    assert!(
        out.contains("finished: /shop/db runs 1/1") && out.contains("finished: /shop/web runs 1/1"),
        "{out}"
    );
    let group: serde_json::Value =
        serde_json::from_str(&ok(&cli(&cluster, &["group", "show", "/shop"]))).unwrap();
    assert_eq!(group["apps"].as_array().map(Vec::len), Some(2), "{group}");
    ok(&cli(&cluster, &["group", "remove", "/shop"]));

    // Why an app waits: one no agent can hold (submitted with force), in plain words.
    let _: serde_json::Value = cluster
        .client
        .send_json(
            hyper::Method::POST,
            "/v2/apps?force=true",
            br#"{"id": "/big", "cmd": "sleep 1", "cpus": 0.1, "mem": 1000000}"#,
        )
        .await
        .unwrap();
    let why = wait_for(
        "the planner to pass /big over",
        Duration::from_secs(10),
        || async {
            let out = ok(&cli(&cluster, &["app", "why", "/big"]));
            out.contains("insufficient mem").then_some(out)
        },
    )
    .await;
    assert!(why.starts_with("/big lacks 1 instance(s)"), "{why}");
    ok(&cli(&cluster, &["app", "remove", "/big"]));

    // A field kept but not acted on yet is a warning on stderr, stdout stays clean.
    let kept = cluster.dir.path().join("kept.json");
    std::fs::write(
        &kept,
        r#"{"id": "kept", "cmd": "sleep 100", "cpus": 0.1, "mem": 16, "instances": 0, "acceptedResourceRoles": ["*"]}"#,
    )
    .unwrap();
    let out = cli(&cluster, &["app", "deploy", kept.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning: acceptedResourceRoles: accepted and kept, but not acted on yet"),
        "{stderr}"
    );
    ok(&cli(&cluster, &["app", "remove", "/kept"]));

    let bad = cluster.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"id": "bad", "cmd": "true", "cpus": "many"}"#).unwrap();
    let out = cli(&cluster, &["app", "deploy", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "a refused deploy exits non-zero");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("cpus"),
        "{stderr}"
    );
    let out = cli(
        &cluster,
        &["--json", "app", "deploy", bad.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let error: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(error["code"], "invalid");
    assert_eq!(error["details"][0]["path"], "/cpus");

    let out = cli(&cluster, &["app", "show", "/nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let tarball = busybox_image(
        cluster.dir.path(),
        "busybox:cli",
        TestImageFormat::OciLayout,
    );
    let out = ok(&cli(
        &cluster,
        &["image", "import", tarball.to_str().unwrap()],
    ));
    assert!(
        out.contains("imported docker.io/library/busybox:cli"),
        "{out}"
    );
    let out = ok(&cli(&cluster, &["image", "list"]));
    assert!(out.contains("busybox:cli"), "{out}");

    // `task logs --follow` streams while the task runs and returns once it has ended.
    let short = cluster.dir.path().join("short.json");
    std::fs::write(
        &short,
        r#"{"id": "short", "cmd": "echo first; sleep 2; echo last", "cpus": 0.1, "mem": 16}"#,
    )
    .unwrap();
    // Its task ends and is started again: the deployment never ends, so return at once.
    ok(&cli(
        &cluster,
        &["app", "deploy", short.to_str().unwrap(), "--detach"],
    ));
    let short_task = wait_for(
        "the short task to start",
        Duration::from_secs(20),
        || async { cluster.tasks("/short").await.into_iter().next() },
    )
    .await;
    let started = std::time::Instant::now();
    let followed = ok(&cli(
        &cluster,
        &["task", "logs", &short_task.id, "--follow"],
    ));
    assert!(
        followed.contains("first") && followed.contains("last"),
        "{followed}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "--follow ends with the task"
    );
    ok(&cli(&cluster, &["app", "remove", "/short"]));

    ok(&cli(&cluster, &["app", "remove", "/hello"]));
    wait_for("hello's tasks to end", Duration::from_secs(20), || async {
        cluster.running("/hello").await.is_empty().then_some(())
    })
    .await;
    let out = Command::new(BIN)
        .args(["--url", "http://127.0.0.1:9", "app", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot reach"),
        "unreachable master is explained"
    );
    cluster.stop().await;
}

/// `progressDeadlineSeconds` (dcos-rs's own): a change that cannot finish in time is rolled
/// back by the framework, once, and `app update` says why and exits non-zero; Marathon's
/// objects never carry the key, `/cluster/v1/apps/{id}` and `app show` do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_past_its_progress_deadline_is_rolled_back_and_says_why() {
    let cluster = TestCluster::start().await;
    let bad: dcos_rs::cli::client::ClientError = cluster
        .deploy(
            serde_json::json!({"id": "/late", "cmd": "sleep 1000", "progressDeadlineSeconds": 0}),
        )
        .await
        .expect_err("0 s");
    assert_eq!(bad.status(), Some(422), "{bad}");
    assert!(bad.to_string().contains("progressDeadlineSeconds"), "{bad}");
    cluster
        .deploy(serde_json::json!({
            "id": "/late", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16,
            "progressDeadlineSeconds": 2,
        }))
        .await
        .unwrap();
    cluster.wait_running("/late", 1).await;
    let marathon: serde_json::Value = cluster.client.get("/v2/apps/late").await.unwrap();
    assert!(
        marathon["app"].get("progressDeadlineSeconds").is_none(),
        "{marathon}"
    );
    // The deadline alone changes (no task replaced), and back.
    for seconds in [30, 2] {
        let _: serde_json::Value = cluster
            .client
            .send_json(
                hyper::Method::PUT,
                "/v2/apps/late",
                format!(r#"{{"progressDeadlineSeconds": {seconds}}}"#).as_bytes(),
            )
            .await
            .unwrap();
        let shown: serde_json::Value =
            serde_json::from_str(&ok(&cli(&cluster, &["app", "show", "/late"]))).unwrap();
        assert_eq!(shown["app"]["progressDeadlineSeconds"], seconds, "{shown}");
    }
    assert_eq!(cluster.running("/late").await.len(), 1, "no task replaced");

    // More cpus than the agent has: the new task never starts, so the change is rolled back.
    let change = cluster.dir.path().join("late.json");
    std::fs::write(&change, r#"{"cpus": 1000}"#).unwrap();
    let out = cli(
        &cluster,
        &[
            "app",
            "update",
            "--force",
            "/late",
            change.to_str().unwrap(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "a rolled back change exits non-zero: {stdout}"
    );
    assert!(
        stdout.contains("failed: deployment") && stdout.contains("progressDeadlineSeconds"),
        "{stdout}"
    );
    let extras: serde_json::Value = cluster.client.get("/cluster/v1/apps/late").await.unwrap();
    let rollback = &extras["lastAutomaticRollback"];
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("had not finished 2 s later"),
        "{extras}"
    );
    let app: serde_json::Value = cluster.client.get("/v2/apps/late").await.unwrap();
    assert_eq!(
        app["app"]["cpus"], 0.1,
        "the definition before is back: {app}"
    );
    // As a new version: its task is replaced, start-then-stop, and the rollback finishes.
    wait_for(
        "the rollback to finish",
        Duration::from_secs(20),
        || async {
            let app: serde_json::Value = cluster.client.get("/v2/apps/late").await.unwrap();
            (app["app"]["deployments"] == serde_json::json!([])).then_some(())
        },
    )
    .await;
    let shown: serde_json::Value =
        serde_json::from_str(&ok(&cli(&cluster, &["app", "show", "/late"]))).unwrap();
    assert_eq!(shown["app"]["lastAutomaticRollback"], *rollback);
    cluster.stop().await;
}

/// `dcos-rs job`: the README's Metronome example and a Chronos pair (a PT2S job and one
/// after it) added from files; `list` in words with the next run in the zone asked for;
/// `history` by workflow; `logs` from the history; `graph`; `run` and `kill`; `remove`;
/// errors named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_tour_add_list_history_logs_graph_run_kill_remove() {
    let cluster = TestCluster::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, job: serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, job.to_string()).unwrap();
        path.to_string_lossy().into_owned()
    };
    let start = dcos_core::time::iso8601(dcos_rs::link::now_ms() + 1_000);
    let tick = write(
        "tick.json",
        serde_json::json!({
            "name": "tick", "command": "echo tick $CHRONOS_JOB_RUN_ATTEMPT; echo oops >&2",
            "schedule": format!("R/{}Z/PT2S", &start[..19]), "epsilon": "PT30S",
            "cpus": 0.1, "mem": 16, "owner": "t@example.com",
        }),
    );
    let after = write(
        "after.json",
        serde_json::json!({
            "name": "after", "command": "echo after", "parents": ["tick"],
            "cpus": 0.1, "mem": 16, "owner": "t@example.com",
        }),
    );
    let added = ok(&cli(&cluster, &["job", "add", "examples/job.json"]));
    assert!(
        added.contains("nightly.report added: every day at 02:30 (Europe/Berlin); next run"),
        "{added}"
    );
    ok(&cli(&cluster, &["job", "add", &tick]));
    ok(&cli(&cluster, &["job", "add", &after]));
    let again = cli(&cluster, &["job", "add", &after]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("job after exists already"),
        "{again:?}"
    );

    wait_for("after to run", Duration::from_secs(30), || async {
        let history = ok(&cli(&cluster, &["job", "history", "after"]));
        history.contains("SUCCESS").then_some(())
    })
    .await;
    let list = ok(&cluster
        .cli()
        .args(["job", "list"])
        .env("TZ", "America/New_York")
        .output()
        .unwrap());
    assert!(list.contains("every 2 seconds from"), "{list}");
    assert!(list.contains("after tick"), "{list}");
    assert!(
        list.contains("every day at 02:30 (Europe/Berlin)"),
        "{list}"
    );
    assert!(
        list.contains(" EST") || list.contains(" EDT"),
        "local times: {list}"
    );
    let history = ok(&cli(&cluster, &["job", "history", "tick"]));
    let workflow = history
        .lines()
        .find(|l| l.starts_with("workflow "))
        .unwrap();
    let block: Vec<&str> = history
        .split(workflow)
        .nth(1)
        .unwrap()
        .lines()
        .take_while(|l| !l.starts_with("workflow "))
        .collect();
    assert!(
        block
            .iter()
            .any(|l| l.trim_start().starts_with("tick ") && l.contains("schedule"))
            && block
                .iter()
                .any(|l| l.trim_start().starts_with("after ") && l.contains("parents")),
        "one workflow holds tick's run and the run of after it set off:\n{history}"
    );
    // A finished run's output, from its history (the newest run may be under way).
    let record: serde_json::Value = cluster.client.get("/cluster/v1/jobs/tick").await.unwrap();
    let finished = record["runs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["status"] == "SUCCESS")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        ok(&cli(&cluster, &["job", "logs", "tick", &finished])),
        "tick 1\n"
    );
    assert_eq!(
        ok(&cli(
            &cluster,
            &["job", "logs", "tick", &finished, "--stderr"]
        )),
        "oops\n"
    );
    // Retention: the newest run only (also trimmed at once).
    let kept = ok(&cli(
        &cluster,
        &["job", "retention", "tick", "--runs", "1", "--max-age", "1h"],
    ));
    assert!(
        kept.contains("keeps its newest 1 runs that ended within 3600 s"),
        "{kept}"
    );
    let history = ok(&cli(&cluster, &["job", "history", "tick"]));
    let tick_runs = history
        .lines()
        .filter(|l| l.trim_start().starts_with("tick ") && l.contains("SUCCESS"))
        .count();
    assert_eq!(tick_runs, 1, "{history}");
    let refused = cli(&cluster, &["job", "retention", "tick", "--runs", "0"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("runs must be a whole number from 1 to 100"),
        "{refused:?}"
    );
    let graph = ok(&cli(&cluster, &["job", "graph"]));
    assert!(graph.contains("tick\n  after\n"), "{graph}");
    let dot = ok(&cli(&cluster, &["job", "graph", "--dot"]));
    assert!(dot.contains("\"tick\" -> \"after\""), "{dot}");

    // On demand: run, then kill while it sleeps.
    let long = write(
        "long.json",
        serde_json::json!({"id": "long", "run": {"cmd": "sleep 60", "cpus": 0.1, "mem": 16, "disk": 0}}),
    );
    ok(&cli(&cluster, &["job", "add", &long]));
    let started = ok(&cli(&cluster, &["job", "run", "long"]));
    assert!(
        started.starts_with("run ") && started.contains("of job long started"),
        "{started}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = ok(&cli(&cluster, &["job", "kill", "long"]));
    assert!(killed.contains("stop asked"), "{killed}");
    wait_for("the run to end", Duration::from_secs(20), || async {
        let history = ok(&cli(&cluster, &["job", "history", "long"]));
        history.contains("FAILED").then_some(())
    })
    .await;

    // Errors name what is wrong and exit non-zero.
    let bad = write(
        "bad.json",
        serde_json::json!({"id": "Bad", "run": {"cmd": "x", "cpus": 0.1}}),
    );
    let refused = cli(&cluster, &["job", "add", &bad]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("/id:") && stderr.contains("/run/mem: is required"),
        "{stderr}"
    );
    let parent = cli(&cluster, &["job", "remove", "tick"]);
    assert!(!parent.status.success());
    assert!(
        String::from_utf8_lossy(&parent.stderr).contains("job tick is a parent of after"),
        "{parent:?}"
    );
    ok(&cli(&cluster, &["job", "remove", "after", "--stop-runs"]));
    ok(&cli(&cluster, &["job", "remove", "tick", "--stop-runs"]));
    let list = ok(&cli(&cluster, &["job", "list"]));
    assert!(!list.contains("tick"), "{list}");
    cluster.stop().await;
}

/// `dcos-rs role` and `dcos-rs framework` as an operator types them: weights and quotas set
/// and listed (and through Mesos's `/weights`, `/quota` and operator API), refusals that name
/// the role and exit non-zero, the built-in frameworks listed and shown with their tasks, and
/// teardown refused for them and for an unknown id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_framework_commands() {
    let cluster = TestCluster::start().await;
    let out = ok(&cli(
        &cluster,
        &["role", "set", "analytics", "--weight", "3"],
    ));
    assert!(out.contains("role analytics: weight 3"), "{out}");
    let out = ok(&cli(
        &cluster,
        &[
            "role",
            "set",
            "web",
            "--guarantee",
            "cpus=0.5,mem=128",
            "--limit",
            "cpus=1,mem=512",
        ],
    ));
    assert!(
        out.contains("guarantee 0.5 cpus, 128 MiB, limit 1 cpus, 512 MiB"),
        "{out}"
    );
    let roles: serde_json::Value =
        serde_json::from_str(&ok(&cli(&cluster, &["--json", "role", "list"]))).unwrap();
    let web = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["role"] == "web")
        .unwrap();
    assert_eq!(web["guarantee"]["cpus"], 0.5, "{roles}");
    assert_eq!(web["limit"]["mem"], 512, "{roles}");
    // Mesos's views of the same settings.
    let weights: serde_json::Value = cluster.client.get("/weights").await.unwrap();
    assert_eq!(
        weights,
        serde_json::json!([{ "role": "analytics", "weight": 3.0 }])
    );
    let quota: serde_json::Value = cluster.client.get("/quota").await.unwrap();
    assert_eq!(quota["configs"][0]["role"], "web", "{quota}");
    assert_eq!(
        quota["configs"][0]["limits"]["cpus"]["value"], 1.0,
        "{quota}"
    );
    // Refusals name the role and the reason, and change nothing.
    for (args, reason) in [
        (
            vec!["role", "set", "x", "--weight", "0"],
            "a weight is a number above 0",
        ),
        (
            vec!["role", "set", "a//b", "--weight", "2"],
            "separates non-empty parts",
        ),
        (
            vec![
                "role",
                "set",
                "web",
                "--guarantee",
                "cpus=2",
                "--limit",
                "cpus=1",
            ],
            "above the limit",
        ),
        (
            vec!["role", "set", "big", "--guarantee", "cpus=500,mem=1"],
            "more than the active agents have",
        ),
        (vec!["role", "set", "web"], "nothing to set"),
    ] {
        let output = cli(&cluster, &args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(reason),
            "{args:?}: {stderr}"
        );
    }
    let out = ok(&cli(&cluster, &["role", "set", "web", "--no-quota"]));
    assert!(out.contains("back to the defaults"), "{out}");

    // The built-in frameworks, with the services framework's task.
    cluster
        .deploy(
            serde_json::json!({ "id": "/fw-sleeper", "cmd": "sleep 600", "cpus": 0.1, "mem": 16 }),
        )
        .await
        .unwrap();
    crate::common::wait_for("the app's task runs", Duration::from_secs(30), || async {
        let frameworks: serde_json::Value =
            cluster.client.get("/cluster/v1/frameworks").await.ok()?;
        (frameworks[0]["tasksByState"]["TASK_RUNNING"] == 1).then_some(())
    })
    .await;
    let out = ok(&cli(&cluster, &["framework", "list"]));
    assert!(
        out.contains("dcos-rs-services") && out.contains("marathon"),
        "{out}"
    );
    assert!(
        out.contains("dcos-rs-jobs") && out.contains("metronome"),
        "{out}"
    );
    let out = ok(&cli(&cluster, &["framework", "show", "dcos-rs-services"]));
    assert!(
        out.contains("fw-sleeper") && out.contains("TASK_RUNNING"),
        "{out}"
    );
    let state: serde_json::Value = cluster
        .client
        .send_json(hyper::Method::POST, "/api/v1", br#"{"type": "GET_STATE"}"#)
        .await
        .unwrap();
    assert_eq!(state["type"], "GET_STATE");
    let tasks = &state["get_state"]["get_tasks"]["tasks"];
    assert_eq!(
        tasks[0]["framework_id"]["value"], "dcos-rs-services",
        "{state}"
    );
    assert_eq!(
        state["get_state"]["get_agents"]["agents"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let summary: serde_json::Value = cluster.client.get("/master/state-summary").await.unwrap();
    assert_eq!(summary["frameworks"][0]["TASK_RUNNING"], 1, "{summary}");
    for (id, reason) in [
        ("dcos-rs-services", "built-in framework"),
        ("nonesuch", "not registered"),
    ] {
        let output = cli(&cluster, &["framework", "teardown", id]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(reason),
            "{id}: {stderr}"
        );
    }
    cluster.stop().await;
}

/// The services framework takes its share through the same allocator as external
/// frameworks: another role's guarantee (quota) is held back from it until removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_roles_guarantee_is_held_back_from_the_services_framework() {
    let cluster = TestCluster::start().await;
    // 2 cpus on the agent; 1.5 of them guaranteed to a role no built-in framework is in.
    ok(&cli(
        &cluster,
        &["role", "set", "reserved", "--guarantee", "cpus=1.5,mem=64"],
    ));
    cluster
        .deploy(serde_json::json!({
            "id": "/held", "cmd": "sleep 600", "cpus": 0.2, "mem": 16, "instances": 4
        }))
        .await
        .unwrap();
    let running = || async {
        let tasks = cluster.tasks("/held").await;
        tasks
            .iter()
            .filter(|t| t.state == dcos_core::TaskState::Running)
            .count()
    };
    crate::common::wait_for("two instances run", Duration::from_secs(30), || async {
        (running().await == 2).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        running().await,
        2,
        "the other two wait: 0.5 cpus are left to the role *"
    );
    ok(&cli(&cluster, &["role", "set", "reserved", "--no-quota"]));
    crate::common::wait_for("all four run", Duration::from_secs(30), || async {
        (running().await == 4).then_some(())
    })
    .await;
    cluster.stop().await;
}
