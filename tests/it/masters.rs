//! Several `dcos-rs master`s in this process, on 127.0.0.1 ports, talking Raft to each other
//! over real HTTPS with mutual TLS: election, redirects from followers, replication of API
//! writes, failover after a leader stops, adding and removing masters at runtime, and the
//! Raft endpoint refusing callers without a master certificate. API calls carry the bearer
//! token of the masters' tokens file (`Masters::token`).
//!
//! Process kills, pauses and network partitions between hosts are e2e/'s (real processes in
//! network namespaces); here the masters stop cleanly.

use dcos_rs::master::config::MasterConfig;
use dcos_rs::master::serve::{self, MasterProcess};
use dcos_rs::tls::{self, NodeClient, Role, TlsFiles};
use hyper::{HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio::net::TcpListener;

const BODY_MAX: usize = 4 << 20;

pub struct Masters {
    pub dir: TempDir,
    pub ca_dir: PathBuf,
    pub urls: BTreeMap<u64, String>,
    listeners: BTreeMap<u64, TcpListener>,
    pub running: BTreeMap<u64, MasterProcess>,
    pub admin: NodeClient,
    /// A token in `tokens_file`, sent by `call`.
    pub token: String,
    /// `<ca_dir>/tokens`, the `[auth] tokens_file` of every master (and remote agent).
    pub tokens_file: PathBuf,
}

impl Masters {
    /// Certificates for masters 1..=n (all on 127.0.0.1), an admin client, and a bound
    /// listener per master so the URLs are known before any master starts.
    pub async fn prepare(n: u64) -> Masters {
        let dir = TempDir::new().unwrap();
        let ca_dir = dir.path().join("ca");
        tls::init_ca(&ca_dir, false).unwrap();
        let mut urls = BTreeMap::new();
        let mut listeners = BTreeMap::new();
        for id in 1..=n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            urls.insert(
                id,
                format!(
                    "https://127.0.0.1:{}",
                    listener.local_addr().unwrap().port()
                ),
            );
            listeners.insert(id, listener);
            tls::issue_cert(
                &ca_dir,
                Role::Master,
                &format!("m{id}"),
                &["127.0.0.1".to_string()],
                &dir.path().join(format!("m{id}")),
                30,
            )
            .unwrap();
        }
        let admin = client(&ca_dir, dir.path(), Role::Admin, "admin");
        let token = dcos_rs::auth::generate_token().unwrap();
        let tokens_file = ca_dir.join("tokens");
        std::fs::write(
            &tokens_file,
            format!("{}\n", dcos_rs::auth::token_line(&token, "test")),
        )
        .unwrap();
        Masters {
            dir,
            ca_dir,
            urls,
            listeners,
            running: BTreeMap::new(),
            admin,
            token,
            tokens_file,
        }
    }

    fn config(&self, id: u64, initial: &[u64]) -> MasterConfig {
        let certs = self.dir.path().join(format!("m{id}"));
        let peers: Vec<String> = initial
            .iter()
            .map(|i| format!("{{ id = {i}, url = \"{}\" }}", self.urls[i]))
            .collect();
        let text = format!(
            r#"
node_id = {id}
listen = "127.0.0.1:0"
advertise_url = "{url}"
data_dir = "{data}"
initial_masters = [{peers}]
[tls]
ca = "{ca}"
cert = "{cert}"
key = "{key}"
[raft]
heartbeat_ms = 50
election_timeout_min_ms = 300
election_timeout_max_ms = 600
[agents]
unreachable_timeout_ms = 2000
[auth]
tokens_file = "{tokens}"
"#,
            url = self.urls[&id],
            data = self.dir.path().join(format!("data-m{id}")).display(),
            peers = peers.join(", "),
            ca = self.ca_dir.join("ca.crt").display(),
            cert = certs.join(format!("m{id}.crt")).display(),
            key = certs.join(format!("m{id}.key")).display(),
            tokens = self.tokens_file.display(),
        );
        MasterConfig::parse(&text).unwrap()
    }

    pub async fn start(&mut self, id: u64, initial: &[u64]) {
        let listener = self.listeners.remove(&id).expect("a listener per master");
        let process = serve::start(self.config(id, initial), listener, false)
            .await
            .unwrap();
        self.running.insert(id, process);
    }

    pub async fn stop(&mut self, id: u64) {
        let process = self.running.remove(&id).unwrap();
        process.stop().await.unwrap();
    }

    /// A call to master `id` with the test token.
    pub async fn call(&self, id: u64, method: Method, path: &str, body: Option<Value>) -> Answer {
        let authorization = format!("Bearer {}", self.token);
        self.call_as(id, Some(&authorization), method, path, body)
            .await
    }

    /// `call` with extra `headers`.
    pub async fn call_with(
        &self,
        id: u64,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: HeaderMap,
    ) -> Answer {
        let url = format!("{}{path}", self.urls[&id]);
        let authorization = format!("Bearer {}", self.token);
        call_with_headers(
            &self.admin,
            &url,
            Some(&authorization),
            method,
            body,
            headers,
        )
        .await
    }

    /// A call to master `id` with this `Authorization` header (or none).
    pub async fn call_as(
        &self,
        id: u64,
        authorization: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}{path}", self.urls[&id]);
        call(&self.admin, &url, authorization, method, body).await
    }

    /// Waits until every running master names the same leader; returns its id.
    pub async fn leader(&self, within: Duration) -> u64 {
        let started = Instant::now();
        loop {
            let leaders: Vec<Option<u64>> = self
                .running
                .values()
                .map(|p| p.master.raft.status().leader_id)
                .collect();
            if let Some(Some(leader)) = leaders.first() {
                if self.running.contains_key(leader) && leaders.iter().all(|l| *l == Some(*leader))
                {
                    return *leader;
                }
            }
            assert!(
                started.elapsed() < within,
                "no common leader within {within:?}: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for id in self.running.keys().copied().collect::<Vec<_>>() {
            self.stop(id).await;
        }
    }
}

pub fn client(ca_dir: &Path, dir: &Path, role: Role, name: &str) -> NodeClient {
    let out = dir.join(format!("client-{name}"));
    let (cert, key) = tls::issue_cert(ca_dir, role, name, &[], &out, 30).unwrap();
    let files = TlsFiles {
        ca: ca_dir.join("ca.crt"),
        cert,
        key,
    };
    NodeClient::new(tls::client_config(&files).unwrap())
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// One HTTPS request through `client` (its certificate, if any), with `authorization` as the
/// `Authorization` header when given.
pub async fn call(
    client: &NodeClient,
    url: &str,
    authorization: Option<&str>,
    method: Method,
    body: Option<Value>,
) -> Answer {
    call_with_headers(client, url, authorization, method, body, HeaderMap::new()).await
}

/// `call` with `headers` besides the content type and authorization.
pub async fn call_with_headers(
    client: &NodeClient,
    url: &str,
    authorization: Option<&str>,
    method: Method,
    body: Option<Value>,
    mut headers: HeaderMap,
) -> Answer {
    headers.insert(
        hyper::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    if let Some(value) = authorization {
        headers.insert(hyper::header::AUTHORIZATION, value.parse().unwrap());
    }
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    let (status, headers, bytes) = client
        .request(
            method,
            url,
            body,
            headers,
            Duration::from_secs(70),
            BODY_MAX,
        )
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn app(id: &str) -> Value {
    json!({ "id": id, "cmd": "sleep 1000", "cpus": 0.1, "mem": 16, "instances": 0 })
}

async fn eventually_has_app(masters: &Masters, id: u64, app_id: &str) {
    let started = Instant::now();
    loop {
        let answer = masters
            .call(id, Method::GET, &format!("/v2/apps{app_id}"), None)
            .await;
        if answer.status == StatusCode::OK {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "master {id} never showed {app_id}: {} {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_masters_over_mutual_tls_elect_redirect_replicate_fail_over_and_change_membership() {
    let mut masters = Masters::prepare(4).await;
    for id in 1..=3 {
        masters.start(id, &[1, 2, 3]).await;
    }
    let leader = masters.leader(Duration::from_secs(15)).await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();

    // A write to a follower is passed on to the leader (as Marathon's followers proxy: an
    // HTTP client would drop its token on a redirect to another host), with the caller's
    // token: the leader's answer comes back, written once, and every master serves it.
    let answer = masters
        .call(follower, Method::POST, "/v2/apps", Some(app("/web")))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert!(answer.headers.contains_key("marathon-deployment-id"));
    let leader_url = &masters.urls[&leader];
    for id in 1..=3 {
        eventually_has_app(&masters, id, "/web").await;
    }
    let again = masters
        .call(follower, Method::POST, "/v2/apps", Some(app("/web")))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);
    // A write that was passed on already and meets a follower is redirected, never passed
    // on again.
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-dcos-proxied-by",
        "https://elsewhere:5050".parse().unwrap(),
    );
    let answer = masters
        .call_with(
            follower,
            Method::POST,
            "/v2/apps",
            Some(app("/api")),
            headers,
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::TEMPORARY_REDIRECT,
        "{}",
        answer.body
    );
    assert_eq!(
        answer.headers["location"].to_str().unwrap(),
        format!("{leader_url}/v2/apps")
    );
    assert_eq!(
        answer.headers["x-dcos-leader"].to_str().unwrap(),
        leader_url
    );
    assert_eq!(answer.body["code"], "not_leader");
    let leader_view = masters
        .call(follower, Method::GET, "/v2/leader", None)
        .await;
    // Marathon's clients read the leader as host:port.
    let leader_host_port = leader_url.trim_start_matches("https://");
    assert_eq!(leader_view.body["leader"], json!(leader_host_port));

    // `node list`'s data: three masters with roles, and lag as the leader sees it.
    let nodes = masters
        .call(leader, Method::GET, "/cluster/v1/nodes", None)
        .await;
    let roles: Vec<&str> = nodes.body["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.len(), 3, "{}", nodes.body);
    assert_eq!(roles.iter().filter(|r| **r == "leader").count(), 1);
    assert!(nodes.body["masters"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["lag"].is_u64()));

    // Raft RPCs only from masters: an admin certificate is refused.
    let refused = masters
        .call(
            follower,
            Method::POST,
            "/internal/raft/vote",
            Some(json!({})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);

    // The leader stops: another takes over and has the acknowledged write.
    let stopped = Instant::now();
    masters.stop(leader).await;
    let new_leader = masters.leader(Duration::from_secs(10)).await;
    let failover = stopped.elapsed();
    assert_ne!(new_leader, leader);
    eprintln!("failover after a clean stop (300-600 ms election timeout): {failover:?}");
    let answer = masters
        .call(new_leader, Method::POST, "/v2/apps", Some(app("/api")))
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    eventually_has_app(&masters, new_leader, "/web").await;

    // Master 4 starts empty, is added (learner, caught up, promoted); the stopped one is removed.
    masters.start(4, &[]).await;
    let added = masters
        .call(
            new_leader,
            Method::POST,
            "/cluster/v1/masters",
            Some(json!({ "id": 4, "url": masters.urls[&4] })),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.body);
    eventually_has_app(&masters, 4, "/api").await;
    let removed = masters
        .call(
            new_leader,
            Method::DELETE,
            &format!("/cluster/v1/masters/{leader}"),
            None,
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.body);
    let members: Vec<u64> = removed.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["node_id"].as_u64().unwrap())
        .collect();
    assert_eq!(members.len(), 3, "{}", removed.body);
    assert!(members.contains(&4) && !members.contains(&leader));
    let final_leader = masters.leader(Duration::from_secs(10)).await;
    for id in masters.running.keys() {
        eventually_has_app(&masters, *id, "/api").await;
    }

    // Bad membership requests name the field.
    let bad = masters
        .call(
            final_leader,
            Method::POST,
            "/cluster/v1/masters",
            Some(json!({ "id": 9, "url": "http://127.0.0.1:1" })),
        )
        .await;
    assert_eq!(bad.status.as_u16(), 422, "{}", bad.body);
    assert!(bad.body.to_string().contains("url"), "{}", bad.body);
    masters.shutdown().await;
}
