//! Typed HTTP(S) client for the master's and agents' APIs, used by the CLI and the tests,
//! and the CLI's settings: `cli.toml` (written by `dcos-rs cluster setup`) and environment.
//!
//! Every non-2xx answer becomes `ClientError::Api` carrying the server's `ApiError`. Over
//! HTTPS the client trusts the cluster CA only (never the system's CAs) and presents no
//! certificate; it sends its bearer token on every request and follows 307/308 redirects
//! (a follower master sends writes to the leader). Deliberately absent: cookies, proxies,
//! HTTP/2, and redirects of streamed uploads (their body cannot be sent twice).

use bytes::Bytes;
use dcos_api::ApiError;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

type Body = BoxBody<Bytes, std::io::Error>;

/// Longest wait for a whole request/response (uploads and log streams excepted).
pub const REQUEST_TIMEOUT_MS: u64 = 60_000;
/// Most redirects followed for one request.
pub const REDIRECTS_MAX: usize = 5;
/// The master's URL when neither `--url`, `DCOS_URL` nor cli.toml names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:5050";
/// Largest cli.toml read (it holds three short lines).
const CLI_CONFIG_MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Api(ApiError),
    #[error("cannot reach {url} (is `dcos-rs up` running? set --url or DCOS_URL): {reason}")]
    Connect { url: String, reason: String },
    #[error("unexpected answer from {url}: {reason}")]
    Decode { url: String, reason: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{url} did not answer within {REQUEST_TIMEOUT_MS} ms")]
    Timeout { url: String },
    /// The client's settings cannot work (an https URL without a CA, a bad token or CA file).
    #[error("{0}")]
    Config(String),
    /// A redirect that was not followed: too many, or to a place the token must not go.
    #[error("redirect from {url} not followed: {reason}")]
    Redirect { url: String, reason: String },
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api(e) => Some(e.status),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Client {
    base: String,
    http: HttpClient<HttpsConnector<HttpConnector>, Body>,
    /// `Bearer <token>`, sent with every request (marked sensitive: never logged by hyper).
    authorization: Option<HeaderValue>,
    /// Whether a cluster CA was given: without one, https URLs are refused before dialling.
    trusts_cluster_ca: bool,
    /// For other origins than `base` (agents' APIs, from a task's `agentUrl`): https only,
    /// and the server must present an agent certificate of the cluster CA. `None` without a
    /// CA (then only the loopback `up` case is served, see `token_may_go`).
    agents: Option<HttpClient<HttpsConnector<HttpConnector>, Body>>,
}

fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed()
}

/// A request body, and whether it can be sent again after a redirect.
enum Payload {
    Empty,
    /// In memory: re-sent on each redirect.
    Bytes(Bytes),
    /// Streamed from a file: sent once; a redirect is then answered as an error.
    Stream(Option<Body>),
}

impl Payload {
    fn replayable(&self) -> bool {
        !matches!(self, Payload::Stream(_))
    }

    fn body(&mut self) -> Body {
        match self {
            Payload::Empty => empty(),
            Payload::Bytes(bytes) => full(bytes.clone()),
            Payload::Stream(stream) => stream.take().unwrap_or_else(empty),
        }
    }
}

impl Client {
    /// A client without token or CA: for `dcos-rs up` on loopback (plain HTTP).
    pub fn new(base: &str) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports rustls' default protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        Self::build(base, Arc::new(tls), None, false)
    }

    /// A client that sends `token` (if any) as a bearer token and, over HTTPS, trusts only
    /// the cluster CA certificate in `ca`.
    pub fn with_auth(
        base: &str,
        token: Option<&str>,
        ca: Option<&Path>,
    ) -> Result<Client, ClientError> {
        let authorization = match token {
            None => None,
            Some(token) => {
                let printable = !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic());
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .ok()
                    .filter(|_| printable)
                    .ok_or_else(|| {
                        ClientError::Config(
                            "the API token holds characters a token cannot (spaces, line breaks, non-ASCII): check DCOS_TOKEN or `token` in cli.toml".to_string(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let mut client = match ca {
            None => Client::new(base),
            Some(ca) => {
                let config_error = |e: anyhow::Error| {
                    ClientError::Config(format!("cluster CA (DCOS_CA or `ca` in cli.toml): {e:#}"))
                };
                let tls = crate::tls::client_config_ca_only(ca).map_err(config_error)?;
                let agents = crate::tls::agent_client_config_ca_only(ca).map_err(config_error)?;
                let mut client = Self::build(base, tls, None, true);
                client.agents = Some(
                    HttpClient::builder(TokioExecutor::new())
                        .build(crate::tls::https_connector(&agents, true, None)),
                );
                client
            }
        };
        client.authorization = authorization;
        Ok(client)
    }

    fn build(
        base: &str,
        tls: Arc<rustls::ClientConfig>,
        authorization: Option<HeaderValue>,
        trusts_cluster_ca: bool,
    ) -> Client {
        let connector = crate::tls::https_connector(&tls, true, None);
        Client {
            base: base.trim_end_matches('/').to_string(),
            http: HttpClient::builder(TokioExecutor::new()).build(connector),
            authorization,
            trusts_cluster_ca,
            agents: None,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        }
    }

    /// Sends a request, following up to `REDIRECTS_MAX` 307/308 redirects with the same
    /// method and body; a non-2xx answer is turned into `ClientError::Api`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        mut payload: Payload,
        content_type: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, ClientError> {
        let first = self.url(path);
        // Another origin than the master's is an agent's API (a task's `agentUrl`).
        let other_origin = origin(&first) != origin(&self.base);
        if other_origin && self.authorization.is_some() && !token_may_go(&self.base, &first) {
            return Err(ClientError::Config(format!(
                "{first} is not https: the API token goes to agents only over TLS (plain HTTP only between loopback addresses, for `dcos-rs up`)"
            )));
        }
        let http = match (&self.agents, other_origin && first.starts_with("https://")) {
            (Some(agents), true) => agents,
            _ => &self.http,
        };
        let mut url = first.clone();
        let mut redirects = 0;
        loop {
            if url.starts_with("https://") && !self.trusts_cluster_ca {
                return Err(ClientError::Config(format!(
                    "{url} is HTTPS but no cluster CA is configured: set DCOS_CA to the cluster's ca.crt or `ca` in cli.toml (`dcos-rs cluster setup` writes it)"
                )));
            }
            let mut builder = Request::builder().method(method.clone()).uri(&url);
            if let Some(ct) = content_type {
                builder = builder.header(CONTENT_TYPE, ct);
            }
            if let Some(authorization) = &self.authorization {
                builder = builder.header(AUTHORIZATION, authorization.clone());
            }
            let request = builder
                .body(payload.body())
                .map_err(|e| ClientError::Decode {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
            let response = http
                .request(request)
                .await
                .map_err(|e| ClientError::Connect {
                    url: url.clone(),
                    reason: error_chain(&e),
                })?;
            let status = response.status();
            let redirect = matches!(
                status,
                StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
            );
            if redirect && payload.replayable() {
                let refused = |reason: String| ClientError::Redirect {
                    url: url.clone(),
                    reason,
                };
                redirects += 1;
                if redirects > REDIRECTS_MAX {
                    return Err(refused(format!("more than {REDIRECTS_MAX} redirects")));
                }
                let next =
                    redirect_target(&url, response.headers().get(LOCATION)).map_err(refused)?;
                check_redirect(&first, &url, &next).map_err(refused)?;
                tracing::debug!(from = %url, to = %next, "following a redirect");
                url = next;
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            let bytes = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut error: ApiError = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                ApiError::new(
                    status.as_u16(),
                    "http_error",
                    foreign_error_message(&bytes).unwrap_or_else(|| {
                        format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes))
                    }),
                )
            });
            error.status = status.as_u16();
            return Err(ClientError::Api(error));
        }
    }

    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        payload: Payload,
        content_type: Option<&str>,
    ) -> Result<T, ClientError> {
        let url = self.url(path);
        let response = self.send(method, path, payload, content_type).await?;
        print_warnings(response.headers());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            url,
            reason: e.to_string(),
        })
    }

    async fn bounded<T>(
        &self,
        path: &str,
        request: impl std::future::Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        tokio::time::timeout(
            std::time::Duration::from_millis(REQUEST_TIMEOUT_MS),
            request,
        )
        .await
        .map_err(|_| ClientError::Timeout {
            url: self.url(path),
        })?
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.bounded(path, self.json(Method::GET, path, Payload::Empty, None))
            .await
    }

    pub async fn send_json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        let payload = Payload::Bytes(Bytes::copy_from_slice(body));
        self.json(method, path, payload, Some("application/json"))
            .await
    }

    /// A request with an optional JSON body whose answer is read as text (an empty 204,
    /// Chronos's mutations, or JSON the caller parses itself).
    pub async fn send_text(
        &self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<String, ClientError> {
        let (payload, content_type) = match body {
            Some(body) => (
                Payload::Bytes(Bytes::copy_from_slice(body)),
                Some("application/json"),
            ),
            None => (Payload::Empty, None),
        };
        let url = self.url(path);
        let response = self.send(method, path, payload, content_type).await?;
        print_warnings(response.headers());
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            })?;
        Ok(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
    }

    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let response = self.send(Method::GET, path, Payload::Empty, None).await?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                url: self.url(path),
                reason: e.to_string(),
            })?;
        Ok(String::from_utf8_lossy(&bytes.to_bytes()).into_owned())
    }

    /// Streams a file as the request body (no full copy in memory).
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &Path,
    ) -> Result<T, ClientError> {
        use futures_util::StreamExt;
        let handle = tokio::fs::File::open(file).await?;
        let stream = tokio_util::io::ReaderStream::new(handle).map(|chunk| chunk.map(Frame::data));
        let body: Body = BodyExt::boxed(StreamBody::new(stream));
        let payload = Payload::Stream(Some(body));
        self.json(Method::POST, path, payload, Some("application/x-tar"))
            .await
    }

    /// Copies a (possibly endless) response body to `out` as it arrives.
    pub async fn stream_to(
        &self,
        path: &str,
        out: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let mut body = self
            .send(Method::GET, path, Payload::Empty, None)
            .await?
            .into_body();
        let mut total = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Decode {
                url: self.url(path),
                reason: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data).await?;
                out.flush().await?;
                total += data.len() as u64;
            }
        }
        Ok(total)
    }

    pub async fn status_of(&self, method: Method, path: &str) -> Result<StatusCode, ClientError> {
        match self.send(method, path, Payload::Empty, None).await {
            Ok(r) => Ok(r.status()),
            Err(ClientError::Api(e)) => {
                Ok(StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
            }
            Err(e) => Err(e),
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.dedup();
    parts.join(": ")
}

/// Where a redirect from `current` points: an absolute `http(s)://` URL, or a path on the
/// same origin.
fn redirect_target(current: &str, location: Option<&HeaderValue>) -> Result<String, String> {
    let location = location
        .and_then(|v| v.to_str().ok())
        .ok_or("the answer has no usable Location header")?;
    if location.starts_with("https://") || location.starts_with("http://") {
        Ok(location.to_string())
    } else if location.starts_with('/') {
        Ok(format!("{}{location}", origin(current)))
    } else {
        Err(format!("Location {location:?} is neither a URL nor a path"))
    }
}

/// `scheme://host:port` of a URL.
/// The server's `Warning` headers (`299 dcos-rs "<text>"`: a field kept but not acted on),
/// printed on stderr as kubectl prints its own, so scripts reading stdout are unaffected.
/// The message of an error in Marathon's, Metronome's or Chronos's shape
/// (`{"message": ..., "details": [{"path": ..., "errors": [...]}]}`), with its details.
fn foreign_error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut message = value.get("message")?.as_str()?.to_string();
    for detail in value["details"].as_array().into_iter().flatten() {
        let errors: Vec<&str> = detail["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(serde_json::Value::as_str)
            .collect();
        message.push_str(&format!(
            "; {}: {}",
            detail["path"].as_str().unwrap_or("/"),
            errors.join(", ")
        ));
    }
    Some(message)
}

fn print_warnings(headers: &hyper::HeaderMap) {
    for value in headers.get_all(hyper::header::WARNING) {
        let text = value.to_str().unwrap_or_default();
        let text = text
            .split_once('"')
            .map_or(text, |(_, quoted)| quoted.trim_end_matches('"'));
        eprintln!("warning: {text}");
    }
}

fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find(['/', '?']) {
        Some(end) => &url[..after_scheme + end],
        None => url,
    }
}

/// Whether the token may go to `url`, another origin than the master's `base`: over https
/// (the agent-role check is the TLS config's), or plain HTTP from a loopback master to a
/// loopback address (`dcos-rs up`, whose agent API is on 127.0.0.1).
fn token_may_go(base: &str, url: &str) -> bool {
    fn loopback(url: &str) -> bool {
        crate::node_config::url_host(url).is_some_and(|host| {
            host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    }
    url.starts_with("https://")
        || (url.starts_with("http://")
            && base.starts_with("http://")
            && loopback(base)
            && loopback(url))
}

/// Where the token may follow a redirect: from HTTPS only to HTTPS (servers there proved a
/// cluster certificate, so they are cluster nodes); from plain HTTP only to the same origin
/// (anywhere else the token would cross the network in clear text to a host nobody vouched for).
fn check_redirect(first: &str, current: &str, next: &str) -> Result<(), String> {
    if first.starts_with("https://") {
        if !next.starts_with("https://") {
            return Err(format!(
                "{next} is not HTTPS (the request started as HTTPS; the token is not sent in clear text)"
            ));
        }
    } else if origin(next) != origin(current) {
        return Err(format!(
            "{next} is another host reached over plain HTTP (the token would travel in clear text)"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The CLI's settings

/// `cli.toml`: the client commands' defaults, written by `dcos-rs cluster setup`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// The master's URL (`--url` and `DCOS_URL` win over it).
    pub url: Option<String>,
    /// The cluster CA certificate trusted over HTTPS (`DCOS_CA` wins); relative paths are
    /// relative to the file.
    pub ca: Option<PathBuf>,
    /// The API token (`DCOS_TOKEN` wins). Secret: the file is written with mode 0600.
    pub token: Option<String>,
}

impl CliConfig {
    /// Where cli.toml is: `$DCOS_CONFIG`, else `$XDG_CONFIG_HOME/dcos-rs/cli.toml`, else
    /// `$HOME/.config/dcos-rs/cli.toml` (`None` without any of them). `env` reads a variable.
    pub fn default_path(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        if let Some(path) = set("DCOS_CONFIG") {
            return Some(PathBuf::from(path));
        }
        if let Some(dir) = set("XDG_CONFIG_HOME") {
            return Some(Path::new(&dir).join("dcos-rs/cli.toml"));
        }
        set("HOME").map(|home| Path::new(&home).join(".config/dcos-rs/cli.toml"))
    }

    /// Reads cli.toml; `Ok(None)` if there is no such file. Errors name the file (and key).
    pub fn load(path: &Path) -> Result<Option<CliConfig>, ClientError> {
        let bad = |reason: String| ClientError::Config(format!("{}: {reason}", path.display()));
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad(format!("cannot read: {e}"))),
        };
        if metadata.len() > CLI_CONFIG_MAX_BYTES {
            return Err(bad(format!(
                "{} bytes is more than a cli.toml may be ({CLI_CONFIG_MAX_BYTES})",
                metadata.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let mut config = CliConfig::parse(&text).map_err(bad)?;
        if config.token.is_some() {
            use std::os::unix::fs::PermissionsExt;
            if metadata.permissions().mode() & 0o077 != 0 {
                eprintln!(
                    "warning: {} holds an API token and is readable by other users: chmod 600 it",
                    path.display()
                );
            }
        }
        if let Some(ca) = &mut config.ca {
            if ca.is_relative() {
                *ca = path.parent().unwrap_or(Path::new(".")).join(&*ca);
            }
        }
        Ok(Some(config))
    }

    /// Parses cli.toml's text; errors name the key.
    pub fn parse(text: &str) -> Result<CliConfig, String> {
        let config: CliConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        if let Some(url) = &config.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "url: {url:?} must start with https:// (or http:// for `dcos-rs up`)"
                ));
            }
        }
        if config.token.as_deref() == Some("") {
            return Err("token: empty".to_string());
        }
        Ok(config)
    }
}

/// `up.toml`, next to cli.toml: where `dcos-rs up` on this machine keeps its admin token, so
/// that the CLI finds it with no flag or variable. `up` writes it at every start (its own
/// file: a cli.toml the user has is never touched); the CLI uses it only for `url`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalUp {
    /// The master URL of the local `up`.
    pub url: String,
    /// Its `admin.token` (absolute).
    pub token_file: PathBuf,
}

impl LocalUp {
    /// `up.toml` beside the cli.toml at `cli_toml`.
    pub fn path(cli_toml: &Path) -> PathBuf {
        cli_toml.with_file_name("up.toml")
    }

    /// Writes `path` (mode 0600, its directory made 0700 when missing), replacing it whole.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        // A JSON string is a TOML basic string (same escapes).
        let quoted = |s: &str| serde_json::to_string(s).map_err(std::io::Error::other);
        let text = format!(
            "# Written by `dcos-rs up` at each start: where the CLI on this machine finds its token.\nurl = {}\ntoken_file = {}\n",
            quoted(&self.url)?,
            quoted(&self.token_file.to_string_lossy())?
        );
        let tmp = path.with_extension("toml.tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }

    /// The token of the local `up` when `url` is its URL: `Ok(None)` when there is no
    /// up.toml or it is for another URL; an error when its token file cannot be read.
    pub fn token_for(path: &Path, url: &str) -> Result<Option<(String, PathBuf)>, String> {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Ok(None);
        };
        // Only files of this user: another user's up.toml could point the token elsewhere.
        let own = |file: &Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(file).is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
        };
        if !own(path) {
            return Err(format!(
                "{} is not this user's: ignored (set DCOS_TOKEN)",
                path.display()
            ));
        }
        let local: LocalUp =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if local.url.trim_end_matches('/') != url.trim_end_matches('/') {
            return Ok(None);
        }
        if !own(&local.token_file) && local.token_file.exists() {
            return Err(format!(
                "{} (named by {}) is not this user's: ignored (set DCOS_TOKEN)",
                local.token_file.display(),
                path.display()
            ));
        }
        let token = std::fs::read_to_string(&local.token_file).map_err(|e| {
            format!(
                "the token of the local `dcos-rs up` is in {} and cannot be read ({e}): run as the user who started it, or set DCOS_TOKEN",
                local.token_file.display()
            )
        })?;
        Ok(Some((token.trim().to_string(), local.token_file)))
    }
}

/// Where one of the client's settings came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A flag or an environment variable, by name.
    Given(&'static str),
    /// cli.toml at this path.
    CliConfig(PathBuf),
    /// The local `dcos-rs up`'s admin token file (found through up.toml).
    LocalUp(PathBuf),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Given(name) => f.write_str(name),
            Source::CliConfig(path) | Source::LocalUp(path) => write!(f, "{}", path.display()),
            Source::Default => f.write_str("the default"),
        }
    }
}

/// The client commands' settings once every source has had its say:
/// URL: `--url`/`DCOS_URL` > cli.toml `url` > `DEFAULT_URL`;
/// token: `DCOS_TOKEN` > cli.toml `token` > the local `up`'s (when the URL is its);
/// CA: `DCOS_CA` > cli.toml `ca`.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientSettings {
    pub url: String,
    pub token: Option<String>,
    pub ca: Option<PathBuf>,
    /// Where the token came from, for the message of a 401 (`None`: no token at all).
    pub token_source: Option<Source>,
}

impl ClientSettings {
    /// `url_flag` is `--url` or `DCOS_URL` (clap reads both); `config` is cli.toml and its
    /// path, if there is one; `env` reads the other variables; `local_up` gives the local
    /// `up`'s token and its file for a URL (`LocalUp::token_for`).
    pub fn resolve(
        url_flag: Option<String>,
        config: Option<(&Path, &CliConfig)>,
        env: impl Fn(&str) -> Option<String>,
        local_up: impl FnOnce(&str) -> Option<(String, PathBuf)>,
    ) -> ClientSettings {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        let from_file = |pick: fn(&CliConfig) -> Option<&str>| {
            config.and_then(|(path, c)| pick(c).map(|v| (v.to_string(), path.to_path_buf())))
        };
        let url = url_flag
            .filter(|u| !u.is_empty())
            .or_else(|| from_file(|c| c.url.as_deref()).map(|(url, _)| url))
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let (token, token_source) = match set("DCOS_TOKEN") {
            Some(token) => (Some(token), Some(Source::Given("DCOS_TOKEN"))),
            None => match from_file(|c| c.token.as_deref()) {
                Some((token, path)) => (Some(token), Some(Source::CliConfig(path))),
                None => match local_up(&url) {
                    Some((token, file)) => (Some(token), Some(Source::LocalUp(file))),
                    None => (None, None),
                },
            },
        };
        let ca = set("DCOS_CA")
            .map(PathBuf::from)
            .or_else(|| config.and_then(|(_, c)| c.ca.clone()));
        ClientSettings {
            url,
            token: token.map(|t| t.trim().to_string()),
            ca,
            token_source,
        }
    }

    pub fn client(&self) -> Result<Client, ClientError> {
        Client::with_auth(&self.url, self.token.as_deref(), self.ca.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn cli_toml_is_found_by_dcos_config_then_xdg_then_home() {
        let path = |vars: &[(&str, &str)]| CliConfig::default_path(env_of(vars));
        assert_eq!(
            path(&[("DCOS_CONFIG", "/x/c.toml"), ("HOME", "/root")]),
            Some(PathBuf::from("/x/c.toml"))
        );
        assert_eq!(
            path(&[("XDG_CONFIG_HOME", "/xdg"), ("HOME", "/root")]),
            Some(PathBuf::from("/xdg/dcos-rs/cli.toml"))
        );
        assert_eq!(
            path(&[("DCOS_CONFIG", ""), ("HOME", "/root")]),
            Some(PathBuf::from("/root/.config/dcos-rs/cli.toml"))
        );
        assert_eq!(path(&[]), None);
    }

    #[test]
    fn flags_and_environment_win_over_cli_toml_which_wins_over_defaults() {
        let file = Path::new("/etc/cli.toml");
        let config = CliConfig {
            url: Some("https://m1:5050".into()),
            ca: Some("/etc/ca.crt".into()),
            token: Some("dcos_file".into()),
        };
        let no_local = |_: &str| -> Option<(String, PathBuf)> { panic!("not asked") };
        let resolved = ClientSettings::resolve(None, Some((file, &config)), env_of(&[]), no_local);
        assert_eq!(resolved.url, "https://m1:5050");
        assert_eq!(resolved.token.as_deref(), Some("dcos_file"));
        assert_eq!(resolved.ca, Some(PathBuf::from("/etc/ca.crt")));
        assert_eq!(resolved.token_source, Some(Source::CliConfig(file.into())));

        let env = env_of(&[("DCOS_TOKEN", "dcos_env"), ("DCOS_CA", "/tmp/ca.crt")]);
        let resolved = ClientSettings::resolve(
            Some("https://m2:5050".into()),
            Some((file, &config)),
            env,
            no_local,
        );
        assert_eq!(resolved.url, "https://m2:5050");
        assert_eq!(resolved.token.as_deref(), Some("dcos_env"));
        assert_eq!(resolved.ca, Some(PathBuf::from("/tmp/ca.crt")));
        assert_eq!(resolved.token_source, Some(Source::Given("DCOS_TOKEN")));

        let resolved = ClientSettings::resolve(None, None, env_of(&[("DCOS_TOKEN", "")]), |_| None);
        assert_eq!(resolved.url, DEFAULT_URL);
        assert_eq!(
            (resolved.token, resolved.ca, resolved.token_source),
            (None, None, None)
        );
        // Nothing else names a token: the local `up`'s, asked for the URL in use.
        let local = PathBuf::from("/data/admin.token");
        let resolved = ClientSettings::resolve(None, None, env_of(&[]), |url| {
            assert_eq!(url, DEFAULT_URL);
            Some(("dcos_local".to_string(), local.clone()))
        });
        assert_eq!(resolved.token.as_deref(), Some("dcos_local"));
        assert_eq!(resolved.token_source, Some(Source::LocalUp(local)));
    }

    #[test]
    fn the_token_goes_to_agents_over_https_or_between_loopback_addresses_only() {
        assert!(token_may_go("https://m1:5050", "https://a1:5051/files"));
        assert!(token_may_go(
            "http://127.0.0.1:5050",
            "http://127.0.0.1:5051/files"
        ));
        assert!(token_may_go(
            "http://localhost:5050",
            "http://[::1]:5051/images"
        ));
        assert!(!token_may_go("https://m1:5050", "http://a1:5051/files"));
        assert!(!token_may_go(
            "http://127.0.0.1:5050",
            "http://10.0.0.5:5051/files"
        ));
        assert!(!token_may_go(
            "http://10.0.0.1:5050",
            "http://127.0.0.1:5051/files"
        ));
        assert!(!token_may_go(
            "http://127.0.0.1:5050",
            "http://127.0.0.1.evil.example/"
        ));
        assert!(!token_may_go(
            "http://127.0.0.1:5050",
            "http://127.0.0.1:5051@evil.example/"
        ));
    }

    #[test]
    fn up_toml_gives_the_token_only_for_its_url() {
        let dir = tempfile::tempdir().unwrap();
        let cli_toml = dir.path().join("conf/dcos-rs/cli.toml");
        let path = LocalUp::path(&cli_toml);
        assert_eq!(LocalUp::token_for(&path, DEFAULT_URL), Ok(None));
        let token_file = dir.path().join("admin.token");
        std::fs::write(&token_file, "dcos_abc\n").unwrap();
        LocalUp {
            url: "http://127.0.0.1:5050".into(),
            token_file: token_file.clone(),
        }
        .write(&path)
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            LocalUp::token_for(&path, "http://127.0.0.1:5050/"),
            Ok(Some(("dcos_abc".to_string(), token_file.clone())))
        );
        assert_eq!(LocalUp::token_for(&path, "https://m1:5050"), Ok(None));
        std::fs::remove_file(&token_file).unwrap();
        let error = LocalUp::token_for(&path, "http://127.0.0.1:5050").unwrap_err();
        assert!(error.contains("DCOS_TOKEN"), "{error}");
    }

    #[test]
    fn cli_toml_errors_name_the_key() {
        assert!(CliConfig::parse("url = \"m1:5050\"")
            .unwrap_err()
            .starts_with("url:"));
        assert!(CliConfig::parse("token = \"\"")
            .unwrap_err()
            .starts_with("token:"));
        assert!(CliConfig::parse("tokn = \"x\"")
            .unwrap_err()
            .contains("tokn"));
        assert_eq!(CliConfig::parse("").unwrap(), CliConfig::default());
    }

    #[test]
    fn redirects_resolve_and_keep_the_token_on_safe_paths() {
        let location = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(
            redirect_target("https://m1:5050/v2/apps", Some(&location("/v2/apps?x=1"))),
            Ok("https://m1:5050/v2/apps?x=1".to_string())
        );
        assert_eq!(
            redirect_target(
                "https://m1:5050/v2/apps",
                Some(&location("https://m2:5050/v2/apps"))
            ),
            Ok("https://m2:5050/v2/apps".to_string())
        );
        assert!(redirect_target("https://m1:5050/a", Some(&location("b"))).is_err());
        assert!(redirect_target("https://m1:5050/a", None).is_err());
        assert_eq!(origin("https://m1:5050"), "https://m1:5050");
        assert_eq!(origin("http://m1:5050?x"), "http://m1:5050");

        let first = "https://m1:5050/v2/apps";
        assert!(check_redirect(first, first, "https://m2:5050/v2/apps").is_ok());
        assert!(check_redirect(first, first, "http://m2:5050/v2/apps").is_err());
        let plain = "http://127.0.0.1:5050/v2/apps";
        assert!(check_redirect(plain, plain, "http://127.0.0.1:5050/v2/other").is_ok());
        assert!(check_redirect(plain, plain, "http://10.0.0.1:5050/v2/apps").is_err());
    }

    #[tokio::test]
    async fn https_without_a_cluster_ca_is_refused_before_dialling() {
        let client = Client::with_auth("https://127.0.0.1:1", Some("dcos_x"), None).unwrap();
        let error = client
            .get::<serde_json::Value>("/v2/apps")
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ClientError::Config(m) if m.contains("DCOS_CA")),
            "{error}"
        );
        assert!(Client::with_auth("http://x", Some("a b"), None).is_err());
        assert!(Client::with_auth("http://x", Some("dcos_é"), None).is_err());
    }
}
