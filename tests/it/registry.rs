//! Registry pulls against a registry each test starts on 127.0.0.1: HTTPS with a CA made by
//! the test (rcgen), bearer tokens from a token endpoint that checks basic credentials, a
//! multi-platform index with a decoy entry for another architecture, layers redirected to a
//! "storage" host, and a repository that lies about its layer bytes.

use crate::common::{busybox_image, wait_for, TestCluster};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dcos_api::ImagesEnvelope;
use dcos_rs::agent::registry::{Credentials, PullError, RegistryClient};
use dcos_rs::cli::client::ClientError;
use dcos_runtime::image::registry::{host_architecture, PullTarget};
use dcos_runtime::image::Digest;
use dcos_runtime::testimage::TestImageFormat;
use hyper::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USERNAME: &str = "puller";
const PASSWORD: &str = "s3cret";
const SERVICE: &str = "dcos-test-registry";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Serves the busybox image behind an index (`v1`).
const GOOD_REPOSITORY: &str = "test/busybox";
/// Serves the busybox manifest (`v1`, or any digest asked for) but wrong layer bytes.
const LYING_REPOSITORY: &str = "corrupt/busybox";

/// What one repository serves.
#[derive(Default)]
struct Repository {
    /// Tag -> manifest digest.
    tags: BTreeMap<String, String>,
    /// Digest -> (media type, bytes).
    manifests: BTreeMap<String, (&'static str, Vec<u8>)>,
    /// Digest -> bytes as served (not necessarily what hashes to the digest).
    blobs: BTreeMap<String, Vec<u8>>,
    /// Answer any manifest digest with this one's bytes (a registry that lies).
    any_digest: Option<String>,
}

struct RegistryState {
    /// `https://127.0.0.1:<port>`.
    base_url: String,
    /// `https://localhost:<port>`: the same server under another name, playing object storage.
    storage_url: String,
    token: String,
    repositories: BTreeMap<String, Repository>,
    /// Every path requested, in order.
    requests: Mutex<Vec<String>>,
    /// Storage requests that carried an `Authorization` header (a leak of the registry token).
    leaked_authorization: Mutex<Vec<String>>,
}

/// The image the good repository serves, as the test built it.
struct ServedImage {
    index_digest: String,
    manifest_digest: String,
    decoy_digest: String,
    layer_digest: String,
}

struct TestRegistry {
    address: SocketAddr,
    ca_file: PathBuf,
    state: Arc<RegistryState>,
    image: ServedImage,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl TestRegistry {
    /// Builds the busybox test image, a CA and a server certificate for 127.0.0.1 and
    /// localhost, and serves them over HTTPS on an ephemeral port.
    async fn start(dir: &Path) -> TestRegistry {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (ca_pem, tls) = test_pki();
        let ca_file = dir.join("registry-ca.pem");
        std::fs::write(&ca_file, ca_pem).unwrap();

        let blobs = oci_blobs(&busybox_image(
            dir,
            "registry.test/busybox:v1",
            TestImageFormat::OciLayout,
        ));
        let manifest_digest = blobs.manifest_digest.clone();
        let manifest_bytes = blobs.blobs[&manifest_digest].clone();
        let manifest: serde_json::Value = serde_json::from_slice(&manifest_bytes).unwrap();
        let layer_digest = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();

        let other_architecture = if host_architecture() == "arm64" {
            "amd64"
        } else {
            "arm64"
        };
        let decoy = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": format!("sha256:{}", "1".repeat(64)), "size": 2},
            "layers": [],
        }))
        .unwrap();
        let decoy_digest = Digest::of_bytes(&decoy).to_string();
        // The decoy comes first: choosing the first entry would be wrong.
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": decoy_digest, "size": decoy.len(),
                 "platform": {"os": "linux", "architecture": other_architecture}},
                {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": manifest_bytes.len(),
                 "platform": {"os": "linux", "architecture": host_architecture()}},
            ],
        }))
        .unwrap();
        let index_digest = Digest::of_bytes(&index).to_string();

        let mut good = Repository::default();
        good.tags.insert("v1".into(), index_digest.clone());
        good.manifests
            .insert(index_digest.clone(), (OCI_INDEX, index));
        good.manifests.insert(
            manifest_digest.clone(),
            (OCI_MANIFEST, manifest_bytes.clone()),
        );
        good.manifests
            .insert(decoy_digest.clone(), (OCI_MANIFEST, decoy));
        good.blobs = blobs.blobs.clone();

        let mut lying = Repository::default();
        lying.tags.insert("v1".into(), manifest_digest.clone());
        lying
            .manifests
            .insert(manifest_digest.clone(), (OCI_MANIFEST, manifest_bytes));
        lying.any_digest = Some(manifest_digest.clone());
        lying.blobs = blobs.blobs;
        let layer = lying.blobs.get_mut(&layer_digest).unwrap();
        let middle = layer.len() / 2;
        layer[middle] ^= 0xff;

        let state = Arc::new(RegistryState {
            base_url: format!("https://127.0.0.1:{}", address.port()),
            storage_url: format!("https://localhost:{}", address.port()),
            token: format!("token-{}", dcos_rs::link::random_id()),
            repositories: BTreeMap::from([
                (GOOD_REPOSITORY.to_string(), good),
                (LYING_REPOSITORY.to_string(), lying),
            ]),
            requests: Mutex::new(Vec::new()),
            leaked_authorization: Mutex::new(Vec::new()),
        });
        let router = Router::new()
            .route("/token", get(token))
            .route("/v2/{*path}", get(distribution))
            .route("/storage/{*path}", get(storage))
            .with_state(state.clone());
        let server = tokio::spawn(serve_tls(listener, tls, router));
        TestRegistry {
            address,
            ca_file,
            state,
            image: ServedImage {
                index_digest,
                manifest_digest,
                decoy_digest,
                layer_digest,
            },
            server,
        }
    }

    fn reference(&self, repository: &str, version: &str) -> String {
        let separator = if version.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!(
            "127.0.0.1:{}/{repository}{separator}{version}",
            self.address.port()
        )
    }

    fn requested(&self, needle: &str) -> bool {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|path| path.contains(needle))
    }
}

/// A CA and a server certificate it signed for 127.0.0.1 and localhost: (CA PEM, server TLS).
fn test_pki() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dcos-rs test registry CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_cert = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".into()])
        .unwrap()
        .signed_by(&server_key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls_pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        )
        .unwrap();
    (ca_cert.pem(), Arc::new(config))
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            // A client that refuses our certificate ends its handshake here.
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The blobs of an OCI layout tarball and the digest of its one manifest.
struct OciBlobs {
    manifest_digest: String,
    blobs: BTreeMap<String, Vec<u8>>,
}

fn oci_blobs(tarball: &Path) -> OciBlobs {
    let mut archive = tar::Archive::new(std::fs::File::open(tarball).unwrap());
    let mut blobs = BTreeMap::new();
    let mut index = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            if !hex.is_empty() {
                blobs.insert(format!("sha256:{hex}"), bytes);
            }
        } else if name == "index.json" {
            index = Some(serde_json::from_slice::<serde_json::Value>(&bytes).unwrap());
        }
    }
    let index = index.expect("index.json");
    OciBlobs {
        manifest_digest: index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string(),
        blobs,
    }
}

fn challenge(state: &RegistryState, repository: &str) -> Response {
    let value = format!(
        r#"Bearer realm="{}/token",service="{SERVICE}",scope="repository:{repository}:pull""#,
        state.base_url
    );
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, value)],
        r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
    )
        .into_response()
}

/// `GET /token?service=..&scope=..`: a token for the right basic credentials only.
async fn token(
    State(state): State<Arc<RegistryState>>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state.requests.lock().unwrap().push("/token".into());
    let expected = format!(
        "Basic {}",
        // base64("puller:s3cret")
        "cHVsbGVyOnMzY3JldA=="
    );
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes() == expected.as_bytes());
    let scope_ok = query
        .get("scope")
        .is_some_and(|s| s.starts_with("repository:") && s.ends_with(":pull"));
    if !authorized || query.get("service").map(String::as_str) != Some(SERVICE) || !scope_ok {
        return (StatusCode::UNAUTHORIZED, r#"{"details":"bad credentials"}"#).into_response();
    }
    axum::Json(json!({ "token": state.token, "expires_in": 300 })).into_response()
}

/// `GET /v2/<repository>/manifests/<reference>` and `GET /v2/<repository>/blobs/<digest>`,
/// for bearer tokens only. Blobs are redirected to the storage name of the server.
async fn distribution(
    State(state): State<Arc<RegistryState>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    state.requests.lock().unwrap().push(format!("/v2/{path}"));
    let (repository, kind, reference) = match path
        .rsplit_once("/manifests/")
        .map(|(r, x)| (r, "manifests", x))
        .or_else(|| path.rsplit_once("/blobs/").map(|(r, x)| (r, "blobs", x)))
    {
        Some(parts) => parts,
        None => return StatusCode::NOT_FOUND.into_response(),
    };
    let bearer = format!("Bearer {}", state.token);
    if headers
        .get(header::AUTHORIZATION)
        .is_none_or(|v| v.as_bytes() != bearer.as_bytes())
    {
        return challenge(&state, repository);
    }
    let not_found = (
        StatusCode::NOT_FOUND,
        r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
    );
    let Some(repo) = state.repositories.get(repository) else {
        return not_found.into_response();
    };
    if kind == "blobs" {
        if !repo.blobs.contains_key(reference) {
            return StatusCode::NOT_FOUND.into_response();
        }
        let location = format!(
            "{}/storage/{repository}/{reference}?sig=x",
            state.storage_url
        );
        return (
            StatusCode::TEMPORARY_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response();
    }
    let digest = repo
        .tags
        .get(reference)
        .cloned()
        .or_else(|| {
            repo.manifests
                .contains_key(reference)
                .then(|| reference.to_string())
        })
        .or_else(|| {
            reference
                .starts_with("sha256:")
                .then(|| repo.any_digest.clone())
                .flatten()
        });
    match digest.and_then(|d| repo.manifests.get(&d)) {
        Some((media_type, bytes)) => {
            ([(header::CONTENT_TYPE, *media_type)], bytes.clone()).into_response()
        }
        None => not_found.into_response(),
    }
}

/// `GET /storage/<repository>/<digest>`: blob bytes, as a pre-signed object store URL would
/// serve them (no registry credentials expected).
async fn storage(
    State(state): State<Arc<RegistryState>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("/storage/{path}"));
    if headers.contains_key(header::AUTHORIZATION) {
        state
            .leaked_authorization
            .lock()
            .unwrap()
            .push(path.clone());
    }
    let Some((repository, digest)) = path.rsplit_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match state
        .repositories
        .get(repository)
        .and_then(|r| r.blobs.get(digest))
    {
        Some(bytes) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn pull_body(reference: &str, password: Option<&str>) -> Vec<u8> {
    let mut body = json!({ "reference": reference });
    if let Some(password) = password {
        body["auth"] = json!({ "username": USERNAME, "password": password });
    }
    serde_json::to_vec(&body).unwrap()
}

async fn pull(
    cluster: &TestCluster,
    reference: &str,
    password: Option<&str>,
) -> Result<ImagesEnvelope, ClientError> {
    let url = format!("{}/images/pull", cluster.handle().agent_url);
    cluster
        .client
        .send_json(Method::POST, &url, &pull_body(reference, password))
        .await
}

async fn listed_images(cluster: &TestCluster) -> Vec<String> {
    let url = format!("{}/images", cluster.handle().agent_url);
    let images: ImagesEnvelope = cluster.client.get(&url).await.unwrap();
    images.images.into_iter().map(|i| i.reference).collect()
}

fn api_error(result: Result<ImagesEnvelope, ClientError>) -> dcos_api::ApiError {
    match result {
        Err(ClientError::Api(error)) => error,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

async fn start_cluster(registry: &TestRegistry) -> TestCluster {
    let ca = registry.ca_file.clone();
    TestCluster::start_with(move |opts| opts.agent.registry_ca = Some(ca)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_image_with_bearer_auth_runs_a_task() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(work.path()).await;
    let cluster = start_cluster(&registry).await;
    let reference = registry.reference(GOOD_REPOSITORY, "v1");

    let started = Instant::now();
    let pulled = pull(&cluster, &reference, Some(PASSWORD))
        .await
        .expect("pull");
    eprintln!(
        "pulled the busybox test image through the agent in {} ms",
        started.elapsed().as_millis()
    );
    assert_eq!(pulled.images.len(), 1, "{pulled:?}");
    assert_eq!(pulled.images[0].reference, reference);
    assert_eq!(pulled.images[0].layers, 1);
    assert!(registry.requested(&format!("/manifests/{}", registry.image.manifest_digest)));
    assert!(
        !registry.requested(&registry.image.decoy_digest),
        "the other architecture's manifest is never fetched"
    );
    assert!(registry.requested(&format!(
        "/storage/{GOOD_REPOSITORY}/{}",
        registry.image.layer_digest
    )));
    assert!(
        registry
            .state
            .leaked_authorization
            .lock()
            .unwrap()
            .is_empty(),
        "the registry token is not sent to the storage host"
    );
    assert_eq!(listed_images(&cluster).await, vec![reference.clone()]);

    cluster
        .deploy(json!({
            "id": "pulled", "cmd": "echo pulled-image-runs; sleep 1000",
            "cpus": 0.1, "mem": 32,
            "container": {"type": "MESOS", "docker": {"image": reference}}
        }))
        .await
        .expect("deploy");
    let task = cluster.wait_running("/pulled", 1).await.remove(0);
    let stdout_url = format!("{}/files/tasks/{}/stdout", task.agent_url, task.id);
    wait_for(
        "the pulled image's task output",
        Duration::from_secs(10),
        || async {
            let text = cluster.client.get_text(&stdout_url).await.ok()?;
            text.contains("pulled-image-runs").then_some(())
        },
    )
    .await;

    // The CLI, pinned to the index digest: the same image, which then resolves by it too.
    let pinned = registry.reference(GOOD_REPOSITORY, &registry.image.index_digest);
    let output = cli_with_stdin(
        &cluster,
        &[
            "image",
            "pull",
            &pinned,
            "--username",
            USERNAME,
            "--password-stdin",
        ],
        &format!("{PASSWORD}\n"),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("pulling") && stdout.contains("pulled"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains(&pulled.images[0].digest), "{stdout}");
    let resolved = cluster
        .handle()
        .agent
        .images
        .resolve(&pinned)
        .expect("resolves by the index digest");
    assert_eq!(resolved.digest, pulled.images[0].digest);
    cluster.stop().await;
}

fn cli_with_stdin(cluster: &TestCluster, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cluster
        .cli()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run dcos-rs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_and_bad_requests_are_refused_and_nothing_is_stored() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(work.path()).await;
    let cluster = start_cluster(&registry).await;
    let reference = registry.reference(GOOD_REPOSITORY, "v1");

    let refused = api_error(pull(&cluster, &reference, Some("wrong")).await);
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (502, "registry_unauthorized"),
        "{refused:?}"
    );
    assert!(
        refused
            .message
            .contains(&format!("refused credentials for {reference}")),
        "{}",
        refused.message
    );
    let anonymous = api_error(pull(&cluster, &reference, None).await);
    assert_eq!(anonymous.code, "registry_unauthorized");
    assert!(
        anonymous.message.contains("requires credentials"),
        "{}",
        anonymous.message
    );
    assert!(
        !registry.requested("/storage/"),
        "no blob is fetched without a token"
    );

    let missing = registry.reference(GOOD_REPOSITORY, "no-such-tag");
    let not_found = api_error(pull(&cluster, &missing, Some(PASSWORD)).await);
    assert_eq!(not_found.code, "image_not_found");
    assert!(
        not_found
            .message
            .contains(&format!("no such image {missing}")),
        "{}",
        not_found.message
    );

    // Requests are checked before anything is fetched, naming the field.
    let url = format!("{}/images/pull", cluster.handle().agent_url);
    for (body, field) in [
        (json!({ "reference": "Not A Reference" }), "reference"),
        (
            json!({ "reference": format!("sha256:{}", "a".repeat(64)) }),
            "reference",
        ),
        (json!({ "image": "busybox" }), "image"),
        (
            json!({ "reference": reference, "auth": { "username": USERNAME } }),
            "auth",
        ),
        (
            json!({ "reference": reference, "auth": { "username": "", "password": "x" } }),
            "auth.username",
        ),
    ] {
        let result: Result<ImagesEnvelope, _> = cluster
            .client
            .send_json(Method::POST, &url, &serde_json::to_vec(&body).unwrap())
            .await;
        let error = api_error(result);
        assert_eq!(error.status, 400, "{body}: {error:?}");
        assert!(
            error.details["errors"][0]["field"]
                .as_str()
                .is_some_and(|f| f.starts_with(field)),
            "{body}: {error:?}"
        );
    }

    // The CLI: exit 1 and the registry's refusal, as text and as JSON.
    let output = cli_with_stdin(
        &cluster,
        &[
            "image",
            "pull",
            &reference,
            "--username",
            USERNAME,
            "--password-stdin",
        ],
        "wrong\n",
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("error: ") && stderr.contains("refused credentials"),
        "{stderr}"
    );
    let output = cli_with_stdin(
        &cluster,
        &[
            "--json",
            "image",
            "pull",
            &reference,
            "--username",
            USERNAME,
            "--password-stdin",
        ],
        "wrong\n",
    );
    assert_eq!(output.status.code(), Some(1));
    let error: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(error["code"], "registry_unauthorized", "{error}");
    let output = cli_with_stdin(
        &cluster,
        &["image", "pull", &reference, "--username", USERNAME],
        "",
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--password-stdin"));

    assert!(listed_images(&cluster).await.is_empty());
    let store = cluster.dir.path().join("data/agent/images");
    assert!(
        entries(&store.join("tmp")).is_empty(),
        "{:?}",
        entries(&store.join("tmp"))
    );
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_not_matching_its_digest_is_refused_and_nothing_is_left() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(work.path()).await;
    let cluster = start_cluster(&registry).await;
    let reference = registry.reference(LYING_REPOSITORY, "v1");

    let refused = api_error(pull(&cluster, &reference, Some(PASSWORD)).await);
    assert_eq!(
        (refused.status, refused.code.as_str()),
        (502, "digest_mismatch"),
        "{refused:?}"
    );
    assert!(
        refused
            .message
            .contains(&format!("layer {}", registry.image.layer_digest))
            && refused.message.contains("does not match its digest"),
        "{}",
        refused.message
    );
    assert!(registry.requested(&format!(
        "/storage/{LYING_REPOSITORY}/{}",
        registry.image.layer_digest
    )));
    assert!(listed_images(&cluster).await.is_empty());
    let store = cluster.dir.path().join("data/agent/images");
    for dir in ["tmp", "blobs/sha256", "rootfs"] {
        assert!(
            entries(&store.join(dir)).is_empty(),
            "{dir}: {:?}",
            entries(&store.join(dir))
        );
    }
    let error = cluster
        .client
        .send_json::<serde_json::Value>(
            Method::POST,
            "/v2/apps",
            &serde_json::to_vec(&json!({
                "id": "lying", "cmd": "true", "cpus": 0.1, "mem": 16,
                "container": {"type": "MESOS", "docker": {"image": reference}}
            }))
            .unwrap(),
        )
        .await;
    assert!(error.is_err(), "an app cannot use the refused image");
    cluster.stop().await;
}

/// The pull client on its own (no agent, no root): trust and pinned digests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_client_refuses_unknown_cas_and_manifests_not_matching_a_pinned_digest() {
    let work = tempfile::tempdir().unwrap();
    let registry = TestRegistry::start(work.path()).await;
    let credentials = Credentials {
        username: USERNAME.into(),
        password: PASSWORD.into(),
    };
    let layout = work.path().join("layout");

    let target = PullTarget::parse(&registry.reference(GOOD_REPOSITORY, "v1")).unwrap();
    std::fs::create_dir(&layout).unwrap();
    let untrusting = RegistryClient::new(None).unwrap();
    let error = untrusting
        .pull(&target, Some(&credentials), &layout)
        .await
        .unwrap_err();
    assert!(matches!(error, PullError::Tls { .. }), "{error}");
    assert!(error.to_string().contains("certificate"), "{error}");

    let client = RegistryClient::new(Some(&registry.ca_file)).unwrap();
    let wrong = format!("sha256:{}", "0".repeat(64));
    let target = PullTarget::parse(&registry.reference(LYING_REPOSITORY, &wrong)).unwrap();
    std::fs::remove_dir_all(&layout).unwrap();
    std::fs::create_dir(&layout).unwrap();
    let error = client
        .pull(&target, Some(&credentials), &layout)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PullError::DigestMismatch { what, expected, .. } if what == "manifest" && *expected == wrong),
        "{error}"
    );

    // The honest repository by digest writes a complete layout.
    let target =
        PullTarget::parse(&registry.reference(GOOD_REPOSITORY, &registry.image.manifest_digest))
            .unwrap();
    std::fs::remove_dir_all(&layout).unwrap();
    std::fs::create_dir(&layout).unwrap();
    let report = client
        .pull(&target, Some(&credentials), &layout)
        .await
        .unwrap();
    assert_eq!(
        report.manifest_digest.to_string(),
        registry.image.manifest_digest
    );
    assert_eq!(report.layers, 1);
    assert!(layout.join("index.json").is_file() && layout.join("oci-layout").is_file());
    let store = dcos_runtime::image::ImageStore::open(&work.path().join("store")).unwrap();
    let imported = store.import_layout_dir(&layout).unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(
        imported[0].reference, imported[0].digest,
        "pulled by digest: untagged"
    );
    store
        .resolve(&registry.reference(GOOD_REPOSITORY, &registry.image.manifest_digest))
        .unwrap();
}
