//! Mutual TLS between nodes with certificates from the cluster CA, through the real
//! functions: `init_ca`/`issue_cert` files, `serve_tls` on 127.0.0.1 with a router that echoes
//! who called, and `NodeClient`. Also the `dcos-rs cluster` commands of the real binary.

use crate::common::BIN;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use dcos_rs::tls::{self, NodeClient, NodeClientError, Peer, PeerIdentity, Role, TlsFiles};
use hyper::header::HeaderMap;
use hyper::{Method, StatusCode};
use rustls_pki_types::pem::PemObject;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// A cluster CA in a temporary directory with a master certificate (m1, for 127.0.0.1) and
/// an agent certificate (a1, no address: it only dials).
struct Pki {
    dir: tempfile::TempDir,
    ca_dir: PathBuf,
    m1: TlsFiles,
    a1: TlsFiles,
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    pki_in(dir)
}

fn pki_in(dir: tempfile::TempDir) -> Pki {
    let ca_dir = dir.path().join("ca");
    let ca = tls::init_ca(&ca_dir, false).unwrap();
    let out = dir.path().join("certs");
    let issue = |role, name: &str, sans: &[String]| {
        let (cert, key) = tls::issue_cert(&ca_dir, role, name, sans, &out, 30).unwrap();
        TlsFiles {
            ca: ca.cert.clone(),
            cert,
            key,
        }
    };
    let m1 = issue(Role::Master, "m1", &["127.0.0.1".to_string()]);
    let a1 = issue(Role::Agent, "a1", &[]);
    Pki {
        dir,
        ca_dir,
        m1,
        a1,
    }
}

/// `serve_tls` on an ephemeral port of 127.0.0.1, stopped when dropped.
struct TestServer {
    /// `https://127.0.0.1:<port>`.
    url: String,
    port: u16,
    shutdown: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The identity as each of the three ways a handler can take it, which must agree.
async fn whoami(
    Peer(peer): Peer,
    Extension(option): Extension<Option<PeerIdentity>>,
    extension: Option<Extension<PeerIdentity>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
) -> String {
    let extension = extension.map(|Extension(identity)| identity);
    if peer != option || peer != extension || !remote.ip().is_loopback() {
        return format!("inconsistent: {peer:?} {option:?} {extension:?} {remote}");
    }
    peer.map(|p| p.to_string())
        .unwrap_or_else(|| "anonymous".into())
}

fn router() -> Router {
    Router::new()
        .route("/whoami", get(whoami))
        .route("/big", get(|| async { vec![b'x'; 100 * 1024] }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "done"
            }),
        )
}

async fn start_server(config: Arc<rustls::ServerConfig>) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (shutdown, shutdown_rx) = watch::channel(false);
    let task = tokio::spawn(tls::serve_tls(listener, config, router(), shutdown_rx));
    TestServer {
        url: format!("https://127.0.0.1:{port}"),
        port,
        shutdown,
        task: Some(task),
    }
}

async fn get_with(
    client: &NodeClient,
    url: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(StatusCode, String), NodeClientError> {
    let (status, _, body) = client
        .request(
            Method::GET,
            url,
            Vec::new(),
            HeaderMap::new(),
            timeout,
            max_bytes,
        )
        .await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn whoami_of(client: &NodeClient, server: &TestServer) -> Result<String, NodeClientError> {
    let (status, body) = get_with(
        client,
        &format!("{}/whoami", server.url),
        Duration::from_secs(5),
        1024,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    Ok(body)
}

fn client_of(files: &TlsFiles) -> NodeClient {
    NodeClient::new(tls::client_config(files).unwrap())
}

fn assert_tls_refused(result: Result<String, NodeClientError>, what: &str) {
    match result {
        Err(e @ NodeClientError::Unreachable(_)) => {
            assert!(e.is_tls(), "{what}: refused, but not by TLS: {e}")
        }
        other => panic!("{what}: expected a TLS refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_peers_are_seen_as_their_certificates_identity() {
    let pki = pki();
    let server = start_server(tls::server_config(&pki.m1).unwrap()).await;
    assert_eq!(
        whoami_of(&client_of(&pki.m1), &server).await.unwrap(),
        "master:m1"
    );
    // A certificate without addresses still dials.
    let agent = client_of(&pki.a1);
    assert_eq!(whoami_of(&agent, &server).await.unwrap(), "agent:a1");
    // Pooled: the second request on the same client works as well.
    assert_eq!(whoami_of(&agent, &server).await.unwrap(), "agent:a1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_served_without_identity() {
    let pki = pki();
    let server = start_server(tls::server_config(&pki.m1).unwrap()).await;
    let anonymous = NodeClient::new(tls::client_config_ca_only(&pki.m1.ca).unwrap());
    assert_eq!(whoami_of(&anonymous, &server).await.unwrap(), "anonymous");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_of_another_ca_fails_the_handshake() {
    let pki = pki();
    let other = pki_in(tempfile::tempdir().unwrap());
    let server = start_server(tls::server_config(&pki.m1).unwrap()).await;

    // Trusts our CA (so it accepts the server) but presents a master:m1 certificate of
    // another CA. `client_config` refuses such files, so the configuration is built by hand.
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(pem_certs(&pki.m1.ca));
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(
        pem_certs(&other.m1.cert),
        rustls_pki_types::PrivateKeyDer::from_pem_file(&other.m1.key).unwrap(),
    )
    .unwrap();
    let impostor = NodeClient::new(Arc::new(config));
    // TLS 1.3: the client's side of the handshake is done before the server checks the
    // certificate, so the refusal shows as a connection closed without an answer.
    match whoami_of(&impostor, &server).await {
        Err(NodeClientError::Unreachable(reason) | NodeClientError::NoAnswer(reason)) => assert!(
            reason.contains("TLS") || reason.contains("refused our client certificate"),
            "{reason}"
        ),
        other => panic!("a client certificate of another CA: {other:?}"),
    }
    // The server is unharmed.
    assert_eq!(
        whoami_of(&client_of(&pki.m1), &server).await.unwrap(),
        "master:m1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_certificate_of_another_ca_or_for_another_name_is_refused() {
    let pki = pki();
    let other = pki_in(tempfile::tempdir().unwrap());
    let client = client_of(&pki.m1);

    let foreign = start_server(tls::server_config(&other.m1).unwrap()).await;
    assert_tls_refused(
        whoami_of(&client, &foreign).await,
        "a server certificate of another CA",
    );

    // Our CA, but the certificate lists 127.0.0.1, not localhost.
    let ours = start_server(tls::server_config(&pki.m1).unwrap()).await;
    let result = get_with(
        &client,
        &format!("https://localhost:{}/whoami", ours.port),
        Duration::from_secs(5),
        1024,
    )
    .await
    .map(|(_, body)| body);
    assert_tls_refused(result, "a server certificate for another name");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_errors_are_classified_and_bounded() {
    let pki = pki();
    let client = client_of(&pki.m1);
    let server = start_server(tls::server_config(&pki.m1).unwrap()).await;

    // Nothing listens on a port just freed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    match get_with(
        &client,
        &format!("https://127.0.0.1:{closed}/"),
        Duration::from_secs(5),
        1024,
    )
    .await
    {
        Err(e @ NodeClientError::Unreachable(_)) => assert!(!e.is_tls(), "{e}"),
        other => panic!("closed port: {other:?}"),
    }

    let result = get_with(&client, "http://127.0.0.1:1/", Duration::from_secs(1), 1024).await;
    assert!(
        matches!(result, Err(NodeClientError::InvalidRequest(_))),
        "{result:?}"
    );

    let big = format!("{}/big", server.url);
    let result = get_with(&client, &big, Duration::from_secs(5), 1024).await;
    assert_eq!(result, Err(NodeClientError::TooLarge(1024)));
    let (_, body) = get_with(&client, &big, Duration::from_secs(5), 200 * 1024)
        .await
        .unwrap();
    assert_eq!(body.len(), 100 * 1024);

    let started = Instant::now();
    let result = get_with(
        &client,
        &format!("{}/slow", server.url),
        Duration::from_millis(300),
        1024,
    )
    .await;
    match result {
        Err(NodeClientError::NoAnswer(reason)) => {
            assert!(reason.contains("within 300 ms"), "{reason}")
        }
        other => panic!("slow answer: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_handshake_does_not_block_other_clients() {
    let pki = pki();
    let server = start_server(tls::server_config(&pki.m1).unwrap()).await;
    // Connected, never says anything: its handshake waits in its own task.
    let _stalled = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let started = Instant::now();
    assert_eq!(
        whoami_of(&client_of(&pki.m1), &server).await.unwrap(),
        "master:m1"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_request_in_flight_finish_then_stops_accepting() {
    let pki = pki();
    let mut server = start_server(tls::server_config(&pki.m1).unwrap()).await;
    let client = client_of(&pki.m1);
    let slow_url = format!("{}/slow", server.url);
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move { get_with(&client, &slow_url, Duration::from_secs(10), 1024).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown.send(true).unwrap();
    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "done"));
    let task = server.task.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("serve_tls returns after the drain")
        .unwrap();
    let fresh = client_of(&pki.m1);
    assert!(matches!(
        whoami_of(&fresh, &server).await,
        Err(NodeClientError::Unreachable(_))
    ));
}

#[test]
fn init_ca_refuses_to_overwrite_an_existing_ca_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let first = tls::init_ca(dir.path(), false).unwrap();
    let key_before = std::fs::read(&first.key).unwrap();
    let error = format!("{:#}", tls::init_ca(dir.path(), false).unwrap_err());
    assert!(
        error.contains("ca.key already exists") && error.contains("--force"),
        "{error}"
    );
    assert_eq!(std::fs::read(&first.key).unwrap(), key_before, "untouched");
    tls::init_ca(dir.path(), true).unwrap();
    assert_ne!(std::fs::read(&first.key).unwrap(), key_before, "replaced");
}

#[test]
fn issue_cert_names_the_bad_subject_alternative_name() {
    let pki = pki();
    let error = tls::issue_cert(
        &pki.ca_dir,
        Role::Master,
        "m2",
        &["10.0.0.2".into(), "not a host".into()],
        pki.dir.path(),
        30,
    )
    .unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("'not a host'") && error.contains("neither an IP address nor a DNS name"),
        "{error}"
    );
    assert!(!pki.dir.path().join("m2.crt").exists());
}

fn pem_certs(path: &Path) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    rustls_pki_types::CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run dcos-rs")
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "command failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn cluster_commands_make_a_ca_and_certificates_that_load() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    let ca = ca_dir.to_str().unwrap();
    let out = stdout_of(&run(&["cluster", "init-ca", "--dir", ca]));
    assert!(
        out.contains("ca.crt") && out.contains("ca.key") && out.contains("issue-cert"),
        "{out}"
    );

    let again = run(&["cluster", "init-ca", "--dir", ca]);
    assert!(
        !again.status.success(),
        "a second init-ca without --force fails"
    );
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("--force"),
        "{stderr}"
    );

    let certs = dir.path().join("certs");
    let out = stdout_of(&run(&[
        "--json",
        "cluster",
        "issue-cert",
        "--role",
        "master",
        "--name",
        "m1",
        "--san",
        "127.0.0.1",
        "--san",
        "m1.example.com",
        "--ca-dir",
        ca,
        "--out",
        certs.to_str().unwrap(),
        "--days",
        "7",
    ]));
    let issued: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(issued["identity"], "master:m1");
    let files = TlsFiles {
        ca: PathBuf::from(issued["ca"].as_str().unwrap()),
        cert: PathBuf::from(issued["cert"].as_str().unwrap()),
        key: PathBuf::from(issued["key"].as_str().unwrap()),
    };
    assert_eq!(files.cert, certs.join("m1.crt"));
    tls::server_config(&files).expect("the issued files load");

    let bad = run(&[
        "cluster",
        "issue-cert",
        "--role",
        "agent",
        "--name",
        "a1",
        "--san",
        "bad_host!",
        "--ca-dir",
        ca,
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("'bad_host!'"), "{stderr}");

    let bad_role = run(&["cluster", "issue-cert", "--role", "root", "--name", "x"]);
    assert!(!bad_role.status.success());
    let stderr = String::from_utf8_lossy(&bad_role.stderr);
    assert!(
        stderr.contains("master") && stderr.contains("admin"),
        "{stderr}"
    );

    let help = stdout_of(&run(&["cluster", "issue-cert", "--help"]));
    assert!(help.contains("--san") && help.contains("Example"), "{help}");
}
