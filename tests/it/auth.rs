//! Bearer tokens over real HTTPS on 127.0.0.1: masters and a remote agent refuse calls
//! without a valid token (401 JSON with `WWW-Authenticate`) before anything else, a follower
//! does not reveal its leader to anonymous callers, `dcos-rs up` refuses to listen beyond
//! loopback without a tokens file, and the CLI, set up by `dcos-rs cluster setup`, talks to
//! the masters over HTTPS with only cli.toml (following a follower's redirect).

use crate::common::BIN;
use crate::masters::{call, client, Answer, Masters};
use crate::remote_agents::RemoteAgent;
use dcos_rs::tls::Role;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

fn assert_unauthorized(answer: &Answer, message: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.body["code"], "unauthorized", "{}", answer.body);
    let text = answer.body["message"].as_str().unwrap_or_default();
    assert!(text.contains(message), "expected {message:?} in {text:?}");
    let challenges: Vec<&str> = answer
        .headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        challenges,
        ["Bearer realm=\"dcos-rs\"", "Basic realm=\"dcos-rs\""]
    );
    assert!(!answer.headers.contains_key("location"));
    assert!(!answer.headers.contains_key("x-dcos-leader"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_and_agents_refuse_calls_without_a_valid_bearer_token() {
    let mut masters = Masters::prepare(2).await;
    for id in 1..=2 {
        masters.start(id, &[1, 2]).await;
    }
    let leader = masters.leader(Duration::from_secs(15)).await;
    let follower = if leader == 1 { 2 } else { 1 };
    let token = format!("Bearer {}", masters.token);

    // No header, a wrong token, a malformed header: 401 with the reason, nothing served.
    let get = |authorization: Option<&'static str>| {
        let masters = &masters;
        async move {
            masters
                .call_as(leader, authorization, Method::GET, "/v2/apps", None)
                .await
        }
    };
    assert_unauthorized(&get(None).await, "missing `Authorization: Bearer <token>`");
    assert_unauthorized(&get(Some("Bearer dcos_wrong")).await, "invalid token");
    assert_unauthorized(&get(Some("Basic YWRtaW46YWRtaW4=")).await, "invalid token");
    assert_unauthorized(&get(Some("Digest abc")).await, "malformed `Authorization`");
    // DC/OS's `token=` and Basic with the token as the password are accepted too.
    for presented in [
        format!("token={}", masters.token),
        format!(
            "Basic {}",
            dcos_runtime::image::registry::base64(format!("chronos:{}", masters.token).as_bytes())
        ),
    ] {
        let answer = masters
            .call_as(leader, Some(&presented), Method::GET, "/v2/apps", None)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{presented}: {}",
            answer.body
        );
    }
    let apps = masters
        .call_as(leader, Some(&token), Method::GET, "/v2/apps", None)
        .await;
    assert_eq!(apps.status, StatusCode::OK, "{}", apps.body);
    for path in ["/metrics", "/cluster/v1/nodes", "/no/such/endpoint"] {
        let answer = masters.call_as(leader, None, Method::GET, path, None).await;
        assert_unauthorized(&answer, "missing");
    }
    let metrics = masters.call(leader, Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK);

    // Probes and the dashboard page need no token.
    for path in ["/health", "/ready", "/"] {
        let answer = masters
            .call_as(follower, None, Method::GET, path, None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }

    // A follower answers an anonymous write with 401, not with the leader's address.
    let app = json!({ "id": "/web", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 0 });
    let anonymous = masters
        .call_as(follower, None, Method::POST, "/v2/apps", Some(app.clone()))
        .await;
    assert_unauthorized(&anonymous, "missing");
    let passed_on = masters
        .call(follower, Method::POST, "/v2/apps", Some(app.clone()))
        .await;
    assert_eq!(passed_on.status, StatusCode::CREATED, "{}", passed_on.body);
    // A wrong token is refused by the follower itself: nothing is passed on for it.
    let wrong = masters
        .call_as(
            follower,
            Some("Bearer dcos_0000000000000000000000000000000000000000000"),
            Method::POST,
            "/v2/apps",
            Some(app),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);

    // Raft stays certificate-only: a token does not open it.
    let raft = masters
        .call(
            follower,
            Method::POST,
            "/internal/raft/vote",
            Some(json!({})),
        )
        .await;
    assert_eq!(raft.status, StatusCode::FORBIDDEN, "{}", raft.body);

    // A remote agent's API: a token, or a master's certificate; /health is open.
    let agent = RemoteAgent::new(&masters, "a1").await;
    let agent_url = agent.config.advertise_url.clone();
    let images = format!("{agent_url}/images");
    let answer = call(&masters.admin, &images, None, Method::GET, None).await;
    assert_unauthorized(&answer, "missing");
    let answer = call(
        &masters.admin,
        &images,
        Some("Bearer nope"),
        Method::GET,
        None,
    )
    .await;
    assert_unauthorized(&answer, "invalid token");
    let answer = call(&masters.admin, &images, Some(&token), Method::GET, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let health = call(
        &masters.admin,
        &format!("{agent_url}/health"),
        None,
        Method::GET,
        None,
    )
    .await;
    assert_eq!(health.status, StatusCode::OK);
    let as_master = client(&masters.ca_dir, masters.dir.path(), Role::Master, "m9");
    let answer = call(&as_master, &images, None, Method::GET, None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);

    // The CLI sends its token to another origin than its master's (a task's agentUrl) only
    // when that server proves to be an agent of the cluster CA.
    let cli = dcos_rs::cli::client::Client::with_auth(
        &masters.urls[&leader],
        Some(&masters.token),
        Some(&masters.ca_dir.join("ca.crt")),
    )
    .unwrap();
    cli.get::<Value>(&images).await.expect("an agent's API");
    let error = cli
        .get::<Value>(&format!("{}/v2/apps", masters.urls[&follower]))
        .await
        .expect_err("a master is not an agent");
    assert!(error.to_string().contains("not an agent"), "{error}");
    let error = cli
        .get::<Value>(&format!(
            "http://{}/images",
            agent_url.trim_start_matches("https://")
        ))
        .await
        .expect_err("no token over plain HTTP");
    assert!(error.to_string().contains("not https"), "{error}");

    let mut agent = agent;
    agent.stop().await;
    masters.shutdown().await;
}

#[test]
fn up_refuses_to_listen_beyond_loopback_without_a_tokens_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args([
            "up",
            "--listen",
            "0.0.0.0:0",
            "--agent-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen 0.0.0.0:") && stderr.contains("--tokens-file"),
        "{stderr}"
    );
    assert!(!dir.path().join("data").exists(), "nothing started");
}

/// The CLI with nothing but `DCOS_CONFIG` (and what a test adds) from the environment.
fn dcos(cli_config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env("DCOS_CONFIG", cli_config)
        .env_remove("DCOS_URL")
        .env_remove("DCOS_TOKEN")
        .env_remove("DCOS_CA");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run dcos-rs")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON on stdout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_setup_writes_cli_toml_and_the_cli_works_over_https_with_it_alone() {
    let mut masters = Masters::prepare(2).await;
    let cli_toml = masters.dir.path().join("home/cli.toml");
    let ca_dir = masters.ca_dir.to_str().unwrap().to_string();

    // setup: the CA exists (reused), a token is added to <ca-dir>/tokens, cli.toml written.
    let made = stdout_json(&dcos(
        &cli_toml,
        &[
            "--json",
            "cluster",
            "setup",
            "--ca-dir",
            &ca_dir,
            "--url",
            &masters.urls[&1],
        ],
        &[],
    ));
    assert_eq!(made["caCreated"], false);
    assert_eq!(made["cliConfig"], json!(cli_toml));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&cli_toml), 0o600);
    let settings: toml::Table =
        toml::from_str(&std::fs::read_to_string(&cli_toml).unwrap()).unwrap();
    assert_eq!(settings["url"].as_str(), Some(masters.urls[&1].as_str()));
    assert!(settings["token"].as_str().unwrap().starts_with("dcos_"));
    let tokens = std::fs::read_to_string(&masters.tokens_file).unwrap();
    assert!(
        tokens
            .lines()
            .any(|l| l.starts_with("sha256:") && l.ends_with(" admin")),
        "{tokens}"
    );
    assert!(!tokens.contains(settings["token"].as_str().unwrap()));
    let again = dcos(
        &cli_toml,
        &[
            "cluster",
            "setup",
            "--ca-dir",
            &ca_dir,
            "--url",
            "https://x:1",
        ],
        &[],
    );
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    // The masters start with the tokens file that now holds the admin token.
    for id in 1..=2 {
        masters.start(id, &[1, 2]).await;
    }
    let leader = masters.leader(Duration::from_secs(15)).await;
    let follower = if leader == 1 { 2 } else { 1 };

    // A write through the follower: the CLI follows the 307 to the leader.
    let app = masters.dir.path().join("app.json");
    std::fs::write(
        &app,
        r#"{"id": "/via-follower", "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 0}"#,
    )
    .unwrap();
    let deployed = stdout_json(&dcos(
        &cli_toml,
        &[
            "--json",
            "--url",
            &masters.urls[&follower],
            "app",
            "deploy",
            app.to_str().unwrap(),
        ],
        &[],
    ));
    assert_eq!(deployed["id"], "/via-follower");

    // Only cli.toml: its URL, CA and token.
    let mut listed = Value::Null;
    for _ in 0..50 {
        listed = stdout_json(&dcos(&cli_toml, &["--json", "app", "list"], &[]));
        if listed["apps"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(listed["apps"][0]["id"], "/via-follower", "{listed}");

    // A wrong token: 401, said so, non-zero exit (for people and for scripts).
    let wrong = [("DCOS_TOKEN", "dcos_not-a-token")];
    let out = dcos(&cli_toml, &["app", "list"], &wrong);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid token")
            && stderr.contains("HTTP 401")
            && stderr.contains("DCOS_TOKEN"),
        "{stderr}"
    );
    let out = dcos(&cli_toml, &["--json", "app", "list"], &wrong);
    assert!(!out.status.success());
    let error: Value = serde_json::from_slice(&out.stdout).expect("JSON error");
    assert_eq!(error["code"], "unauthorized");

    // Without the CA, HTTPS is refused before any request, with what to set.
    let no_ca = masters.dir.path().join("no-ca.toml");
    let token = settings["token"].as_str().unwrap();
    let out = dcos(
        &no_ca,
        &["--url", &masters.urls[&1], "app", "list"],
        &[("DCOS_TOKEN", token)],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("DCOS_CA"));
    masters.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_a_tokens_file_requires_a_token_on_both_apis() {
    let tokens = tempfile::tempdir().unwrap();
    let token = dcos_rs::auth::generate_token().unwrap();
    let tokens_file = tokens.path().join("tokens");
    std::fs::write(&tokens_file, dcos_rs::auth::token_line(&token, "admin")).unwrap();
    let cluster = crate::common::TestCluster::start_with(|opts| {
        opts.tokens_file = Some(tokens_file.clone());
    })
    .await;
    let handle = cluster.handle();
    let anonymous = dcos_rs::cli::client::Client::new(&handle.master_url);
    let with_token =
        dcos_rs::cli::client::Client::with_auth(&handle.master_url, Some(&token), None).unwrap();
    for path in ["/v2/apps", &format!("{}/images", handle.agent_url)] {
        let error = anonymous
            .get::<Value>(path)
            .await
            .expect_err("no token, no answer");
        assert_eq!(error.status(), Some(401), "{path}: {error}");
        with_token.get::<Value>(path).await.expect(path);
    }
    assert!(anonymous.get_text("/health").await.is_ok());
    // The dashboard's page and modules are open (they hold no data; the page asks for a
    // token before it calls the API).
    let page = anonymous.get_text("/").await.unwrap();
    assert!(page.contains("/ui/app.js"), "the dashboard page: {page}");
    let app = anonymous.get_text("/ui/app.js").await.unwrap();
    assert!(app.contains("showLogin"), "the dashboard's module: {app}");
    cluster.stop().await;
}

/// One HTTP/1.1 request written by hand (any Host, Origin or Content-Type a browser or a
/// task could send); returns the status code and the body.
pub async fn raw_request(addr: &str, head: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_is_not_an_open_door() {
    let cluster = crate::common::TestCluster::start().await;
    let handle = cluster.handle();
    let admin = handle.admin_token.clone().expect("up made an admin token");
    let (token, file) = (admin.token, admin.file);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    let addr = handle.master_url.trim_start_matches("http://").to_string();
    let app = r#"{"id":"/door","cmd":"sleep 1000","cpus":0.1,"mem":16}"#;
    let post = |host: &str, extra: &str| {
        format!("POST /v2/apps HTTP/1.1\r\nHost: {host}\r\n{extra}")
            .trim_end()
            .to_string()
    };
    let json = "Content-Type: application/json";
    let bearer = format!("Authorization: Bearer {token}");

    // What a task or a script on this host sends without the token.
    let (status, body) = raw_request(&addr, &post(&addr, json), app).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("admin.token"),
        "the refusal says where: {body}"
    );
    // A page on another site, through a rebound DNS name or with its Origin.
    let (status, body) = raw_request(
        &addr,
        &post("evil.example:5050", &format!("{json}\r\n{bearer}")),
        app,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("DNS rebinding"), "{body}");
    let (status, body) = raw_request(
        &addr,
        &post(
            &addr,
            &format!("{json}\r\n{bearer}\r\nOrigin: http://evil.example"),
        ),
        app,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    // A form's body type, even with the token.
    let (status, body) = raw_request(
        &addr,
        &post(&addr, &format!("Content-Type: text/plain\r\n{bearer}")),
        app,
    )
    .await;
    assert_eq!(status, 415, "{body}");
    assert!(body.contains("application/json"), "{body}");
    // The agent's API is guarded the same way.
    let agent = handle.agent_url.trim_start_matches("http://").to_string();
    let (status, _) = raw_request(
        &agent,
        &format!("GET /images HTTP/1.1\r\nHost: {agent}"),
        "",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = raw_request(
        &agent,
        &format!("GET /images HTTP/1.1\r\nHost: rebound.example:5051\r\n{bearer}"),
        "",
    )
    .await;
    assert_eq!(status, 403);
    // Nothing of the refused requests was stored; the token opens the door.
    let apps: Value = cluster.client.get("/v2/apps").await.unwrap();
    assert_eq!(apps["apps"].as_array().unwrap().len(), 0, "{apps}");
    let (status, body) =
        raw_request(&addr, &post(&addr, &format!("{json}\r\n{bearer}")), app).await;
    assert_eq!(status, 201, "{body}");
    // A script's 401 has no Basic challenge (a browser would open its password dialog).
    let (status, _) = raw_request(
        &addr,
        &format!("GET /v2/apps HTTP/1.1\r\nHost: {addr}\r\nX-Requested-With: x"),
        "",
    )
    .await;
    assert_eq!(status, 401);
    cluster.stop().await;
}

/// The real `dcos-rs up` and CLI as the README's tour runs them: the CLI finds the admin
/// token with no flag or variable (through up.toml, next to a cli.toml it leaves alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_on_the_machine_finds_ups_token_and_no_auth_is_explicit_and_loud() {
    crate::common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let cli_toml = dir.path().join("cli.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    // The user's own cli.toml (no token in it) stays as it is.
    let users = format!("url = \"{url}\"\n");
    std::fs::write(&cli_toml, &users).unwrap();
    let cgroup_parent = crate::common::unique("dcos-rs-test");
    let up = |extra: &[&str]| {
        let mut command = Command::new(BIN);
        command
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--agent-listen", "127.0.0.1:0"])
            .args([
                "--cgroup-parent",
                &cgroup_parent,
                "--cpus",
                "1",
                "--mem",
                "512",
            ])
            .args(extra)
            .env("DCOS_CONFIG", &cli_toml)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        command
    };
    let child = up(&[]).spawn().unwrap();
    let listed =
        crate::common::wait_for("the CLI to list apps", Duration::from_secs(30), || async {
            let out = dcos(&cli_toml, &["--json", "app", "list"], &[]);
            out.status.success().then_some(out)
        })
        .await;
    assert!(stdout_json(&listed).is_object() || stdout_json(&listed).is_array());
    assert_eq!(std::fs::read_to_string(&cli_toml).unwrap(), users);
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    // Another URL does not get this token.
    let out = dcos(
        &cli_toml,
        &["--url", "http://127.0.0.1:9", "app", "list"],
        &[],
    );
    assert!(!out.status.success());
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{url}/?token={}", token.trim())),
        "up prints the dashboard's login link:\n{stdout}"
    );

    // --insecure-no-auth: refused beyond loopback, loud on it.
    let refused = Command::new(BIN)
        .args(["up", "--insecure-no-auth", "--listen", "0.0.0.0:0"])
        .arg("--data-dir")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("loopback listeners only"), "{stderr}");
    let child = up(&["--insecure-no-auth"]).spawn().unwrap();
    crate::common::wait_for("up without auth", Duration::from_secs(30), || async {
        let out = dcos(
            &dir.path().join("none.toml"),
            &["--url", &url, "--json", "app", "list"],
            &[],
        );
        out.status.success().then_some(())
    })
    .await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("WARNING: --insecure-no-auth") && stderr.contains("as root"),
        "{stderr}"
    );
    crate::common::remove_cgroup_parent(&cgroup_parent);
}
