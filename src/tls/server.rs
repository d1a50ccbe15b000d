//! The server of masters and agents: HTTPS with mutual TLS (or plain HTTP for `dcos-rs up` on
//! loopback), bounded connections and handshakes, and the caller's identity (`Peer`) handed
//! to every handler.

use axum::extract::ConnectInfo;
use dcos_pki::PeerIdentity;
use hyper::body::Incoming;
use hyper::http::Extensions;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Longest TLS handshake a server waits for; a client that stalls is dropped.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Most connections one `serve_tls` holds at once (handshaking or serving); more are closed
/// as they arrive.
pub const TLS_CONNECTIONS_MAX: usize = 4096;
/// Most connections one client address holds at once on one server; more from it are
/// closed as they arrive while other clients keep being served. (On loopback every local
/// client shares 127.0.0.1.)
pub const CLIENT_CONNECTIONS_MAX: usize = 1024;
/// Longest wait for a request's headers, which is also how long an idle keep-alive
/// connection stays open.
pub const HTTP_HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// Longest wait for in-flight connections to finish after shutdown; then they are dropped.
pub const SHUTDOWN_DRAIN_TIMEOUT_MS: u64 = 10_000;
/// At most one warning about refused certificates per this interval and server.
const HANDSHAKE_WARNING_INTERVAL_MS: u64 = 10_000;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// The verified identity of the caller of a request served by `serve_tls`, or `None` (no
/// client certificate, or a server not behind `serve_tls`). Handlers take
/// `Extension<Option<PeerIdentity>>` or this extractor, which never rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub Option<PeerIdentity>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut hyper::http::request::Parts,
        _state: &S,
    ) -> Result<Peer, Self::Rejection> {
        Ok(Peer(peer_of(&parts.extensions).cloned()))
    }
}

/// The verified client certificate of a request served over TLS (with `PeerIdentity`):
/// its serial (for revocation) and its DER (for its names).
#[derive(Debug, Clone)]
pub struct PeerCertificate {
    pub serial: String,
    pub der: Arc<rustls_pki_types::CertificateDer<'static>>,
}

impl PeerCertificate {
    /// True when the certificate's subject alternative names cover `host`.
    pub fn names_host(&self, host: &str) -> bool {
        dcos_pki::certificate_names_host(&self.der, host)
    }
}

/// The verified client certificate of a request, if any.
pub fn peer_certificate(extensions: &Extensions) -> Option<&PeerCertificate> {
    extensions.get::<PeerCertificate>()
}

/// The verified identity `serve_tls` attached to a request, if any.
pub fn peer_of(extensions: &Extensions) -> Option<&PeerIdentity> {
    extensions
        .get::<Option<PeerIdentity>>()
        .and_then(Option::as_ref)
}

/// Serves `router` over HTTPS on `listener` until `shutdown` turns true (or its sender is
/// dropped). Every request carries the caller's `Option<PeerIdentity>` (and the
/// `PeerIdentity` itself when there is one) and its `ConnectInfo<SocketAddr>` as extensions.
///
/// Bounds: `TLS_CONNECTIONS_MAX` connections at once (more are closed on arrival), a
/// handshake within `TLS_HANDSHAKE_TIMEOUT_MS` (done in the connection's task, so a slow
/// client never delays accepts), request headers within `HTTP_HEADER_READ_TIMEOUT_MS`.
/// On shutdown it stops accepting, lets in-flight requests finish for up to
/// `SHUTDOWN_DRAIN_TIMEOUT_MS`, then drops what is left.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: axum::Router,
    shutdown: watch::Receiver<bool>,
) {
    serve(listener, Some(config), router, shutdown).await
}

/// `serve_tls`, or plain HTTP when `tls` is `None` (`dcos-rs up` on loopback): the same
/// connection cap, header timeout and shutdown drain either way; handlers see no
/// `PeerIdentity` over plain HTTP.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let limit = connections_max(open_file_limit());
    let permits = Arc::new(Semaphore::new(limit));
    let clients = Arc::new(PerClient::new(CLIENT_CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    let warnings = Arc::new(WarnLimiter::new());
    // Logged once per episode of saturation, not once per refused connection.
    let mut saturated = false;
    loop {
        let accepted = tokio::select! {
            _ = stop_requested(&mut shutdown) => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::error!(error = %e, "a connection task failed");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::select! {
                    _ = stop_requested(&mut shutdown) => break,
                    _ = tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)) => {}
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !saturated {
                tracing::warn!(
                    limit,
                    "too many connections: closing new ones until some end"
                );
                saturated = true;
            }
            drop(tcp);
            continue;
        };
        let Some(slot) = clients.take(remote.ip()) else {
            if warnings.allow() {
                tracing::warn!(
                    %remote,
                    limit = CLIENT_CONNECTIONS_MAX,
                    "too many connections from one client: closing its new ones until some end"
                );
            }
            drop(tcp);
            continue;
        };
        saturated = false;
        let acceptor = acceptor.clone();
        let router = router.clone();
        let shutdown = shutdown.clone();
        let warnings = warnings.clone();
        connections.spawn(async move {
            serve_connection(acceptor, tcp, remote, router, shutdown, warnings).await;
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(Duration::from_millis(SHUTDOWN_DRAIN_TIMEOUT_MS), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "connections still open after the shutdown drain: dropping them"
        );
        connections.shutdown().await;
    }
}

/// The connection cap of one server: `TLS_CONNECTIONS_MAX`, or a quarter of the process's
/// open-file limit when that is lower (a process may serve two APIs, and needs files for
/// its state and tasks besides).
pub fn connections_max(open_file_limit: u64) -> usize {
    let quarter = usize::try_from(open_file_limit / 4).unwrap_or(usize::MAX);
    TLS_CONNECTIONS_MAX.min(quarter).max(16)
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`).
pub fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024)
}

/// Raises the soft open-file limit to the hard one (often 1024 of 524288): called once at
/// start by the commands that serve, so the connection cap is not 256. Returns the limit.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, soft, hard, "raising the open-file limit failed");
            }
        }
    }
    open_file_limit()
}

/// Open connections per client address, for `CLIENT_CONNECTIONS_MAX`.
struct PerClient {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in its client's count, given back when dropped.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: std::net::IpAddr,
}

impl PerClient {
    fn new(max: usize) -> PerClient {
        PerClient {
            max,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A slot for one more connection of `ip`, or `None` when it has `max` already.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().expect("per-client lock");
        let count = open.entry(ip).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn open_of(&self, ip: std::net::IpAddr) -> usize {
        self.open
            .lock()
            .expect("per-client lock")
            .get(&ip)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.clients.open.lock().expect("per-client lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Lets one warning through per `HANDSHAKE_WARNING_INTERVAL_MS`: a misconfigured peer that
/// retries every few milliseconds must not flood the log (the rest go to debug).
struct WarnLimiter {
    started: std::time::Instant,
    /// Milliseconds after `started` before which no warning is let through.
    next_allowed_ms: std::sync::atomic::AtomicU64,
}

impl WarnLimiter {
    fn new() -> WarnLimiter {
        WarnLimiter {
            started: std::time::Instant::now(),
            next_allowed_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next_ms = self.next_allowed_ms.load(Ordering::Relaxed);
        now_ms >= next_ms
            && self
                .next_allowed_ms
                .compare_exchange(
                    next_ms,
                    now_ms.saturating_add(HANDSHAKE_WARNING_INTERVAL_MS),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// Resolves once shutdown is asked for, or nobody can ask any more (sender dropped).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// One connection: handshake (bounded), identity, HTTP/1.1 with keep-alive until the client
/// leaves or shutdown asks it to finish its current request.
async fn serve_connection(
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    warnings: Arc<WarnLimiter>,
) {
    let Some(acceptor) = acceptor else {
        return serve_http(tcp, None, None, remote, router, shutdown).await;
    };
    let handshake = tokio::time::timeout(
        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
        acceptor.accept(tcp),
    );
    let stream = tokio::select! {
        _ = stop_requested(&mut shutdown) => return,
        handshake = handshake => match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                // A certificate refused either way is a configuration problem worth a
                // warning; anything else (scanners, clients leaving) is noise.
                let certificate_refused = e
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .is_some_and(|e| {
                        matches!(
                            e,
                            rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
                        )
                    });
                if certificate_refused && warnings.allow() {
                    tracing::warn!(%remote, error = %e, "TLS handshake failed: certificate refused");
                } else {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                }
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
    };
    // rustls verified any certificate the client presented against the cluster CA before
    // the handshake completed; one it could not verify ended the handshake above.
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .cloned();
    let identity = leaf
        .as_ref()
        .and_then(|cert| match PeerIdentity::from_certificate(cert) {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::warn!(%remote, error = %e, "client certificate names no cluster identity: serving it as anonymous");
                None
            }
        });
    let certificate = match (&identity, leaf) {
        (Some(_), Some(der)) => {
            dcos_pki::certificate_serial(&der)
                .ok()
                .map(|serial| PeerCertificate {
                    serial,
                    der: Arc::new(der.into_owned()),
                })
        }
        _ => None,
    };
    serve_http(stream, identity, certificate, remote, router, shutdown).await
}

/// HTTP/1 on an accepted stream (TLS or not), with the caller's identity and address in
/// every request's extensions.
async fn serve_http<S>(
    stream: S,
    identity: Option<PeerIdentity>,
    certificate: Option<PeerCertificate>,
    remote: SocketAddr,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // Both shapes, so handlers may take `Extension<Option<PeerIdentity>>`,
        // `Option<Extension<PeerIdentity>>` or `Peer`.
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        request.extensions_mut().insert(identity.clone());
        if let Some(certificate) = &certificate {
            request.extensions_mut().insert(certificate.clone());
        }
        request.extensions_mut().insert(ConnectInfo(remote));
        hyper::service::Service::call(&service, request)
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(HTTP_HEADER_READ_TIMEOUT_MS))
        .keep_alive(true);
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let served = tokio::select! {
        served = connection.as_mut() => served,
        _ = stop_requested(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = served {
        tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn one_client_cannot_take_every_connection() {
        let clients = Arc::new(PerClient::new(2));
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = clients.take(a).unwrap();
        let _second = clients.take(a).unwrap();
        assert!(clients.take(a).is_none(), "a third from the same address");
        assert!(clients.take(b).is_some(), "another client is served");
        drop(first);
        assert_eq!(clients.open_of(a), 1);
        assert!(clients.take(a).is_some(), "a slot came back");
    }

    #[test]
    fn the_connection_cap_stays_below_the_open_file_limit() {
        assert_eq!(connections_max(1024), 256);
        assert_eq!(connections_max(1 << 20), TLS_CONNECTIONS_MAX);
        assert_eq!(connections_max(0), 16);
        // What this process got.
        assert!(raise_open_file_limit() >= open_file_limit());
    }
}
