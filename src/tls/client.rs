//! HTTPS clients: `NodeClient` for calls between nodes (mutual TLS, the cluster CA only),
//! and `https_connector`, the one connector builder of every HTTPS client of the binary
//! (nodes, the CLI, registry pulls).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::ClientConfig;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a TCP connection to another node (the request's own timeout may be
/// shorter and then wins).
pub const NODE_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// Pooled connections to a node close after this much idleness: below the server's
/// `HTTP_HEADER_READ_TIMEOUT_MS`, so the client never reuses one the server is closing.
const NODE_POOL_IDLE_TIMEOUT_MS: u64 = 20_000;
/// Idle pooled connections kept per node.
const NODE_POOL_IDLE_PER_HOST_MAX: usize = 8;
/// Bytes of an error chain quoted in a `NodeClientError`.
const ERROR_REASON_MAX_CHARS: usize = 512;

/// An HTTP/1 connector over rustls with `tls`: HTTPS only, or also plain HTTP when
/// `allow_http` (the CLI talks to `dcos-rs up` on loopback). `connect_timeout_ms` bounds the
/// TCP connect.
pub fn https_connector(
    tls: &ClientConfig,
    allow_http: bool,
    connect_timeout_ms: Option<u64>,
) -> HttpsConnector<HttpConnector> {
    let mut tls = tls.clone();
    // hyper-rustls sets ALPN itself and refuses a configuration that already has one.
    tls.alpn_protocols.clear();
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(connect_timeout_ms.map(Duration::from_millis));
    let builder = HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = match allow_http {
        true => builder.https_or_http(),
        false => builder.https_only(),
    };
    builder.enable_http1().wrap_connector(tcp)
}

/// Why a `NodeClient` request failed. Messages do not repeat the URL: callers add it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeClientError {
    /// The request could not be sent as given (not an `https://` URL, or plain `http://`
    /// to a client not `allowing_http`; a bad header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No connection to send the request on: refused, DNS failure, connect timeout, or TLS
    /// refused by either side (the reason then starts with `TLS handshake failed`: a
    /// certificate from another CA, an expired one, a name mismatch). Not acted on.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The request was sent but no complete answer came back: the connection closed or
    /// reset, the answer broke off, or the timeout passed. The peer may have acted on it.
    #[error("no answer: {0}")]
    NoAnswer(String),
    /// The peer answered something that is not HTTP.
    #[error("invalid response: {0}")]
    Protocol(String),
    /// The answer's body is larger than the caller allowed (the limit in bytes).
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

impl NodeClientError {
    /// True when TLS failed: a configuration problem (certificates) rather than a node down.
    pub fn is_tls(&self) -> bool {
        matches!(self, NodeClientError::Unreachable(reason) if reason.starts_with(TLS_FAILED))
    }
}

/// How the reason of a TLS failure starts.
const TLS_FAILED: &str = "TLS handshake failed";

/// An HTTPS client for calls between nodes: `https://` only (unless built with
/// `allowing_http`), HTTP/1.1, connections pooled per node, trust and client certificate
/// from the `ClientConfig` it is built with.
#[derive(Clone)]
pub struct NodeClient {
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Plain `http://` URLs are sent too: `dcos-rs up`'s master reaching its agent's API on
    /// loopback. Between the nodes of a cluster, never.
    allow_http: bool,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient").finish_non_exhaustive()
    }
}

impl NodeClient {
    /// A client using `config` (from `client_config` or `client_config_ca_only`).
    pub fn new(config: Arc<ClientConfig>) -> NodeClient {
        NodeClient::build(config, false)
    }

    /// A client that also sends plain `http://` requests (`https://` ones still with
    /// `config`): for `dcos-rs up`, whose agent serves plain HTTP on loopback.
    pub fn allowing_http(config: Arc<ClientConfig>) -> NodeClient {
        NodeClient::build(config, true)
    }

    fn build(config: Arc<ClientConfig>, allow_http: bool) -> NodeClient {
        let https = https_connector(&config, allow_http, Some(NODE_CONNECT_TIMEOUT_MS));
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(NODE_POOL_IDLE_TIMEOUT_MS))
            .pool_max_idle_per_host(NODE_POOL_IDLE_PER_HOST_MAX)
            .build(https);
        NodeClient { http, allow_http }
    }

    /// Sends one request and reads the whole answer, all within `timeout`; a body larger
    /// than `max_response_bytes` is refused (`TooLarge`) without reading the rest.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        body: Vec<u8>,
        headers: HeaderMap,
        timeout: Duration,
        max_response_bytes: usize,
    ) -> Result<(StatusCode, HeaderMap, Bytes), NodeClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = |what: &str| {
            NodeClientError::NoAnswer(format!("{what} within {} ms", timeout.as_millis()))
        };
        let response = self
            .send(method, url, body, headers, deadline, timeout)
            .await?;
        let (parts, mut body) = response.into_parts();
        let too_large = || NodeClientError::TooLarge(max_response_bytes);
        let announced = parts
            .headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if announced.is_some_and(|n| n > max_response_bytes as u64) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(timed_out("the response did not complete")),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Err(body_error(&e)),
                Ok(Some(Ok(frame))) => frame,
            };
            // Trailers carry nothing callers need.
            if let Ok(data) = frame.into_data() {
                if bytes.len().saturating_add(data.len()) > max_response_bytes {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok((parts.status, parts.headers, Bytes::from(bytes)))
    }

    /// Sends one request and returns as soon as the answer's head arrived (within `timeout`),
    /// with the body still streaming: for long-lived responses such as the agents' command
    /// stream. The caller bounds what it reads, and for how long.
    pub async fn open_stream(
        &self,
        method: Method,
        url: &str,
        body: Vec<u8>,
        headers: HeaderMap,
        timeout: Duration,
    ) -> Result<(StatusCode, HeaderMap, Incoming), NodeClientError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let response = self
            .send(method, url, body, headers, deadline, timeout)
            .await?;
        let (parts, body) = response.into_parts();
        Ok((parts.status, parts.headers, body))
    }

    /// Sends a request and waits until `deadline` for the answer's head (`timeout` is the
    /// same bound, for the message).
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Vec<u8>,
        headers: HeaderMap,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<hyper::Response<Incoming>, NodeClientError> {
        let invalid = NodeClientError::InvalidRequest;
        let uri: Uri = url.parse().map_err(|e| invalid(format!("{e}")))?;
        let allowed = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => self.allow_http,
            _ => false,
        };
        if !allowed {
            return Err(invalid(match self.allow_http {
                true => "only http:// and https:// URLs are sent".into(),
                false => "only https:// URLs are used between nodes".into(),
            }));
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(format!("{e}")))?;
        request.headers_mut().extend(headers);
        match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            // The connector's own timeout is shorter: past this one the request was sent.
            Err(_) => Err(NodeClientError::NoAnswer(format!(
                "no response within {} ms",
                timeout.as_millis()
            ))),
            Ok(Err(e)) => Err(request_error(&e)),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Classifies a failure before the response head: a head that is not HTTP is `Protocol`,
/// no connection or TLS is `Unreachable`, anything after the request went out `NoAnswer`.
fn request_error(error: &hyper_util::client::legacy::Error) -> NodeClientError {
    let (mut reason, tls, parse) = describe(error);
    if parse && !tls && !error.is_connect() {
        return NodeClientError::Protocol(reason);
    }
    // With TLS 1.3 a client's handshake is over before the server has checked the client
    // certificate; a refusal then arrives as a connection closed before any answer, and
    // hyper keeps only that. Say what it most likely means.
    let closed_early = !tls
        && !error.is_connect()
        && chain(error).any(|e| {
            e.downcast_ref::<hyper::Error>()
                .is_some_and(|h| h.is_canceled() || h.is_incomplete_message())
        });
    if closed_early {
        reason.push_str(
            " (the server closed the connection without answering: it may have refused our client certificate)",
        );
    }
    if tls || error.is_connect() {
        NodeClientError::Unreachable(reason)
    } else {
        NodeClientError::NoAnswer(reason)
    }
}

/// The errors of a chain, `error` first (bounded: chains here are three or four deep).
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    const CHAIN_MAX: usize = 16;
    std::iter::successors(Some(error), |e| e.source()).take(CHAIN_MAX)
}

fn body_error(error: &hyper::Error) -> NodeClientError {
    let (reason, tls, parse) = describe(error);
    if parse && !tls {
        NodeClientError::Protocol(format!("response body: {reason}"))
    } else if tls {
        NodeClientError::Unreachable(reason)
    } else {
        NodeClientError::NoAnswer(format!("the response broke off: {reason}"))
    }
}

/// (the error chain as text, whether rustls is in it, whether hyper failed to parse).
fn describe(error: &(dyn std::error::Error + 'static)) -> (String, bool, bool) {
    let mut tls = false;
    let mut parse = false;
    let mut parts: Vec<String> = Vec::new();
    for e in chain(error) {
        tls |= is_rustls_error(e, 0);
        parse |= e
            .downcast_ref::<hyper::Error>()
            .is_some_and(|h| h.is_parse());
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    let mut reason = parts.join(": ");
    if tls {
        reason = format!("{TLS_FAILED}: {reason}");
    }
    if reason.chars().count() > ERROR_REASON_MAX_CHARS {
        reason = reason
            .chars()
            .take(ERROR_REASON_MAX_CHARS)
            .collect::<String>()
            + "…";
    }
    (reason, tls, parse)
}

/// True if `error` is a rustls error, possibly inside the io::Errors that tokio-rustls and
/// hyper-rustls put around it (an io::Error's `source` skips the error it wraps).
pub(crate) fn is_rustls_error(error: &(dyn std::error::Error + 'static), depth: usize) -> bool {
    const WRAPPERS_MAX: usize = 4;
    if error.is::<rustls::Error>() {
        return true;
    }
    if depth >= WRAPPERS_MAX {
        return false;
    }
    let inner = error
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        .map(|inner| inner as &(dyn std::error::Error + 'static));
    inner.is_some_and(|inner| is_rustls_error(inner, depth + 1))
}
