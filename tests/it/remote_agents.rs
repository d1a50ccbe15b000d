//! Agents that reach their master over HTTPS with mutual TLS, in this process: registration,
//! launches over the command stream, statuses acknowledged after commit (the outbox empties),
//! an agent that goes silent is marked unreachable and its task replaced on the other agent,
//! and when it returns the replaced copy is killed so no instance runs twice.

use crate::common::{kill_tasks_under, remove_cgroup_parent, unique, BIN};
use crate::masters::Masters;
use dcos_rs::agent::config::{self, AgentFileConfig, AgentProcess};
use dcos_rs::tls::{self, Role};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

pub struct RemoteAgent {
    pub config: AgentFileConfig,
    process: Option<AgentProcess>,
}

impl RemoteAgent {
    pub async fn new(masters: &Masters, name: &str) -> RemoteAgent {
        let dir = masters.dir.path().join(name);
        tls::issue_cert(
            &masters.ca_dir,
            Role::Agent,
            name,
            &["127.0.0.1".to_string()],
            &dir,
            30,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let masters_list: Vec<String> = masters.urls.values().map(|u| format!("\"{u}\"")).collect();
        let text = format!(
            r#"
listen = "127.0.0.1:{port}"
advertise_url = "https://127.0.0.1:{port}"
work_dir = "{work}"
masters = [{masters}]
heartbeat_ms = 300
cpus = 2.0
mem_mib = 1024
cgroup_parent = "{cgroup}"
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[auth]
tokens_file = "{tokens}"
"#,
            work = dir.join("work").display(),
            masters = masters_list.join(", "),
            cgroup = unique("dcos-rs-test"),
            ca = masters.ca_dir.join("ca.crt").display(),
            cert = dir.join(format!("{name}.crt")).display(),
            key = dir.join(format!("{name}.key")).display(),
            tokens = masters.tokens_file.display(),
        );
        let mut agent = RemoteAgent {
            config: AgentFileConfig::parse(&text).unwrap(),
            process: None,
        };
        agent.start().await;
        agent
    }

    async fn start(&mut self) {
        let listener = TcpListener::bind(self.config.listen).await.unwrap();
        let process = config::start(self.config.clone(), listener, PathBuf::from(BIN))
            .await
            .unwrap();
        self.process = Some(process);
    }

    /// Stops the agent process; its tasks keep running.
    pub async fn stop(&mut self) {
        self.process.take().unwrap().stop().await;
    }

    pub fn process(&self) -> &AgentProcess {
        self.process.as_ref().unwrap()
    }
}

impl Drop for RemoteAgent {
    /// A test that panicked leaves tasks behind: end them so nothing outlives the run.
    fn drop(&mut self) {
        kill_tasks_under(&self.config.work_dir.join("tasks"));
        remove_cgroup_parent(&self.config.cgroup_parent);
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn tasks(masters: &Masters) -> Vec<Value> {
    let answer = masters.call(1, Method::GET, "/v2/tasks", None).await;
    answer.body["tasks"].as_array().cloned().unwrap_or_default()
}

fn on_agent<'a>(tasks: &'a [Value], agent_id: &str, state: &str) -> Vec<&'a Value> {
    tasks
        .iter()
        .filter(|t| t["slaveId"] == agent_id && t["state"] == state)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_agents_run_tasks_and_an_unreachable_agents_replaced_task_is_killed_on_return() {
    let mut masters = Masters::prepare(1).await;
    masters.start(1, &[1]).await;
    masters.leader(Duration::from_secs(10)).await;
    let mut a = RemoteAgent::new(&masters, "a1").await;
    let b = RemoteAgent::new(&masters, "a2").await;
    let (a_id, b_id) = (a.process().agent.id.clone(), b.process().agent.id.clone());

    wait_for(
        "both agents registered",
        Duration::from_secs(10),
        async || {
            let nodes = masters
                .call(1, Method::GET, "/cluster/v1/nodes", None)
                .await;
            nodes.body["agents"]
                .as_array()
                .is_some_and(|a| a.iter().filter(|a| a["state"] == "active").count() == 2)
        },
    )
    .await;

    let app =
        json!({ "id": "/sleepy", "cmd": "sleep 1000", "cpus": 0.5, "mem": 300, "instances": 2 });
    let created = masters.call(1, Method::POST, "/v2/apps", Some(app)).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    wait_for(
        "one task running on each agent",
        Duration::from_secs(20),
        async || {
            let all = tasks(&masters).await;
            on_agent(&all, &a_id, "TASK_RUNNING").len() == 1
                && on_agent(&all, &b_id, "TASK_RUNNING").len() == 1
        },
    )
    .await;
    wait_for(
        "every status acknowledged",
        Duration::from_secs(10),
        async || a.process().outbox.is_empty() && b.process().outbox.is_empty(),
    )
    .await;

    // Another agent certificate may not speak for a1: not its heartbeats, not its statuses.
    let intruder =
        crate::masters::client(&masters.ca_dir, masters.dir.path(), Role::Agent, "intruder");
    let a_task = on_agent(&tasks(&masters).await, &a_id, "TASK_RUNNING")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let base = &masters.urls[&1];
    let heartbeat = crate::masters::call(
        &intruder,
        &format!("{base}{}", dcos_rs::link::AGENT_HEARTBEAT_PATH),
        None,
        Method::POST,
        Some(json!({ "agentId": a_id })),
    )
    .await;
    assert_eq!(
        heartbeat.status,
        StatusCode::FORBIDDEN,
        "{}",
        heartbeat.body
    );
    let status = crate::masters::call(
        &intruder,
        &format!("{base}{}", dcos_rs::link::AGENT_STATUS_PATH),
        None,
        Method::POST,
        Some(json!({
            "agentId": a_id,
            "report": { "taskId": a_task, "state": "TASK_FAILED", "atMs": 1 }
        })),
    )
    .await;
    assert_eq!(status.status, StatusCode::FORBIDDEN, "{}", status.body);

    // An agent of the previous protocol (no `protocol` in its connect) is refused with the
    // reason, before anything is registered.
    let old_agent = json!({
        "agent": {
            "id": "old-agent", "hostname": "old", "url": "https://127.0.0.1:1",
            "resources": { "cpus_milli": 1000, "mem_mib": 512, "disk_mib": 0 },
            "state": "active", "registered_at_ms": 1, "ports": []
        },
        "tasks": []
    });
    let refused = crate::masters::call(
        &intruder,
        &format!("{base}{}", dcos_rs::link::AGENT_CONNECT_PATH),
        None,
        Method::POST,
        Some(old_agent),
    )
    .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.body);
    assert_eq!(
        refused.body["code"], "protocol_mismatch",
        "{}",
        refused.body
    );
    assert!(refused.body["message"]
        .as_str()
        .unwrap()
        .contains("upgrade the masters first"));

    // Agent a1 goes silent (its task keeps running): unreachable, its task replaced on a2.
    let old_task = on_agent(&tasks(&masters).await, &a_id, "TASK_RUNNING")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    a.stop().await;
    let silent = Instant::now();
    wait_for("a1 unreachable", Duration::from_secs(15), async || {
        let all = tasks(&masters).await;
        all.iter()
            .any(|t| t["id"] == old_task.as_str() && t["state"] == "TASK_UNREACHABLE")
    })
    .await;
    eprintln!(
        "agent marked unreachable {:?} after it went silent (timeout 2 s)",
        silent.elapsed()
    );
    wait_for(
        "the replacement running on a2",
        Duration::from_secs(20),
        async || on_agent(&tasks(&masters).await, &b_id, "TASK_RUNNING").len() == 2,
    )
    .await;

    // a1 returns with its task still running: that copy was replaced, so it is killed.
    a.start().await;
    wait_for(
        "the replaced copy killed",
        Duration::from_secs(20),
        async || {
            let all = tasks(&masters).await;
            let old = all.iter().find(|t| t["id"] == old_task.as_str());
            old.is_none_or(|t| t["state"] == "TASK_KILLED")
                && a.process().agent.running_task_count() == 0
        },
    )
    .await;
    let all = tasks(&masters).await;
    let running: Vec<&Value> = all
        .iter()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .collect();
    assert_eq!(running.len(), 2, "{all:#?}");
    assert!(running.iter().all(|t| t["slaveId"] == b_id.as_str()));
    let nodes = masters
        .call(1, Method::GET, "/cluster/v1/nodes", None)
        .await;
    assert!(
        nodes.body["agents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["state"] == "active"),
        "{}",
        nodes.body
    );

    // Clean up: remove the app, wait for its tasks to end, stop everything.
    let removed = masters
        .call(1, Method::DELETE, "/v2/apps/sleepy", None)
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    wait_for("tasks ended", Duration::from_secs(30), async || {
        a.process().agent.running_task_count() == 0 && b.process().agent.running_task_count() == 0
    })
    .await;
    let mut b = b;
    a.stop().await;
    b.stop().await;
    masters.shutdown().await;
    // Dropping the agents removes their cgroup parents.
}

/// An agent registers only its own address (https, a name of its certificate), one
/// certificate registers one agent id, and `node remove` revokes the certificate: every call
/// with it is refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_cannot_impersonate_and_removal_revokes_their_certificate() {
    let mut masters = Masters::prepare(1).await;
    masters.start(1, &[1]).await;
    masters.leader(Duration::from_secs(10)).await;
    let mut a1 = RemoteAgent::new(&masters, "a1").await;
    let a1_id = a1.process().agent.id.clone();
    wait_for("a1 registered", Duration::from_secs(10), async || {
        let nodes = masters
            .call(1, Method::GET, "/cluster/v1/nodes", None)
            .await;
        nodes.body["agents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["id"] == a1_id.as_str()))
    })
    .await;
    let connect = format!("{}/internal/agent/v1/connect", masters.urls[&1]);
    let request = |id: &str, url: &str| {
        json!({
            "protocol": dcos_rs::link::AGENT_PROTOCOL_VERSION,
            "agent": {
                "id": id, "hostname": "h", "url": url,
                "resources": {"cpus_milli": 1000, "mem_mib": 1024, "disk_mib": 0},
                "state": "active", "registered_at_ms": 1
            },
            "tasks": []
        })
    };
    // Another agent's certificate, for 10.9.9.9 only.
    let dir = masters.dir.path().join("evil");
    tls::issue_cert(
        &masters.ca_dir,
        Role::Agent,
        "evil",
        &["10.9.9.9".to_string()],
        &dir,
        30,
    )
    .unwrap();
    let client_of = |dir: &std::path::Path, name: &str| {
        let files = tls::TlsFiles {
            ca: masters.ca_dir.join("ca.crt"),
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        tls::NodeClient::new(tls::client_config(&files).unwrap())
    };
    let evil = client_of(&dir, "evil");
    for (url, reason) in [
        ("https://127.0.0.1:5051", "not among the names"),
        ("http://10.9.9.9:5051", "not https"),
    ] {
        let answer = crate::masters::call(
            &evil,
            &connect,
            None,
            Method::POST,
            Some(request("evil-1", url)),
        )
        .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{url}: {}",
            answer.body
        );
        assert!(
            answer.body["message"].as_str().unwrap().contains(reason),
            "{}",
            answer.body
        );
    }
    // a1's certificate for a second agent id.
    let a1_dir = masters.dir.path().join("a1");
    let a1_client = client_of(&a1_dir, "a1");
    let a1_url = a1.config.advertise_url.clone();
    let answer = crate::masters::call(
        &a1_client,
        &connect,
        None,
        Method::POST,
        Some(request("a1-twin", &a1_url)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert!(
        answer.body["message"]
            .as_str()
            .unwrap()
            .contains("one certificate registers one agent"),
        "{}",
        answer.body
    );

    // Drained and removed: its certificate is refused from now on.
    let drained = masters
        .call(
            1,
            Method::POST,
            &format!("/cluster/v1/agents/{a1_id}/drain"),
            Some(json!({})),
        )
        .await;
    assert!(drained.status.is_success(), "{}", drained.body);
    let removed = masters
        .call(
            1,
            Method::DELETE,
            &format!("/cluster/v1/agents/{a1_id}"),
            None,
        )
        .await;
    assert!(removed.status.is_success(), "{}", removed.body);
    a1.stop().await;
    let answer = crate::masters::call(
        &a1_client,
        &connect,
        None,
        Method::POST,
        Some(request("a1-new", &a1_url)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(
        answer.body["code"], "certificate_revoked",
        "{}",
        answer.body
    );
    masters.shutdown().await;
}
