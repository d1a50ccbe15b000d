//! Registry pulls: the agent's client of the OCI distribution API over HTTPS (rustls with
//! ring). It fetches a reference's manifest (picking this host's entry of an index), then the
//! config and layers, checking every blob against its digest and size while it streams to
//! disk, and writes them as an OCI image layout into a staging directory of the image store,
//! which imports it like any other layout.
//!
//! Authentication: a 401 with a `Bearer` challenge gets a token from the realm (sending basic
//! credentials when the pull has some) and the request is retried with it; a `Basic`
//! challenge is answered with the credentials. Blobs redirected to other hosts (object
//! storage) are fetched without the registry's `Authorization` header.
//!
//! Deliberately absent: plain-HTTP registries, pushes, mirrors, credential storage (the
//! caller passes credentials per pull and nothing keeps them), reusing blobs already in the
//! store, resuming interrupted downloads.
//!
//! The HTTP layer underneath (`download_client`, `send`, `next_chunk`, `redirect_target`,
//! `TransferError`) is shared with the fetcher of tasks' artifacts (`fetch.rs`).

use bytes::Bytes;
use dcos_runtime::image::registry::{
    self as oci, BlobDescriptor, Challenge, Manifest, PullTarget, PullVersion,
};
use dcos_runtime::image::{BlobVerifier, Digest, ImageError, MAX_JSON_BYTES};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// Debian's bundle of the system's trusted CAs.
pub const SYSTEM_ROOTS_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Longest wait for a TCP connection to a registry.
pub const REGISTRY_CONNECT_TIMEOUT_MS: u64 = 10_000;
/// Longest wait for a response's headers (TLS handshake included).
pub const REGISTRY_RESPONSE_TIMEOUT_MS: u64 = 30_000;
/// Longest silence while a body streams.
pub const REGISTRY_READ_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Longest whole pull (a slow but never silent registry ends here).
pub const PULL_TIMEOUT_MS: u64 = 30 * 60 * 1000;
/// Largest manifest or index read (they are a few KiB; configs share the limit).
pub const MANIFEST_MAX_BYTES: u64 = MAX_JSON_BYTES;
/// Largest token endpoint answer read.
const TOKEN_RESPONSE_MAX_BYTES: u64 = 1024 * 1024;
/// Largest image pulled: config and layers as their descriptors announce them (the same
/// bound as an uploaded tarball).
pub const PULL_MAX_BYTES: u64 = 8 << 30;
/// Most layers in one pulled image (as an import).
const PULL_LAYERS_MAX: usize = 256;
/// Most redirects followed for one request (registries send blobs to object storage once).
pub const REDIRECTS_MAX: usize = 5;
/// Bytes of an error answer quoted in a message.
const ERROR_BODY_QUOTED_MAX_BYTES: usize = 512;
/// Buffer between the network and a blob file.
const BLOB_WRITE_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("registry {registry} requires credentials for {image}")]
    CredentialsRequired { registry: String, image: String },
    #[error("registry {registry} refused credentials for {image}")]
    Unauthorized { registry: String, image: String },
    #[error("no such image {image}")]
    NotFound { image: String },
    #[error("cannot reach registry at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url} did not answer within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("registry {registry} sent an invalid answer for {image}: {reason}")]
    Protocol {
        registry: String,
        image: String,
        reason: String,
    },
    #[error("{what} {expected} of {image} does not match its digest (the registry sent {actual}); pull refused")]
    DigestMismatch {
        what: String,
        image: String,
        expected: String,
        actual: String,
    },
    #[error("{image} has no image for linux/{architecture} (its index has: {platforms})")]
    NoPlatform {
        image: String,
        architecture: String,
        platforms: String,
    },
    #[error("{what} of {image} is larger than {limit_bytes} bytes")]
    TooLarge {
        what: String,
        image: String,
        limit_bytes: u64,
    },
    #[error("registry trust roots: {0}")]
    Trust(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// Basic credentials for one pull (from a pull secret or `--password-stdin`).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    /// Never prints the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What a pull fetched.
#[derive(Debug, Clone)]
pub struct PullReport {
    /// Digest of the manifest (or index) the reference named.
    pub manifest_digest: Digest,
    pub layers: usize,
    /// Config and layer bytes downloaded.
    pub blob_bytes: u64,
    pub elapsed_ms: u64,
}

/// An HTTP/1 client over rustls (ring) with bounded connects: registry pulls' and
/// artifact fetches' (`download_client`).
pub(crate) type DownloadClient = HttpClient<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Why an HTTP exchange failed before an answer could be read: pulls and artifact fetches
/// each turn it into their own error.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("{url} did not answer within {timeout_ms} ms")]
    Timeout { url: String, timeout_ms: u64 },
}

impl From<TransferError> for PullError {
    fn from(error: TransferError) -> PullError {
        match error {
            TransferError::Unreachable { url, reason } => PullError::Unreachable { url, reason },
            TransferError::Tls { url, reason } => PullError::Tls { url, reason },
            TransferError::Timeout { url, timeout_ms } => PullError::Timeout { url, timeout_ms },
        }
    }
}

/// The HTTPS client of pulls. One per agent: it holds the trust roots and a connection pool.
pub struct RegistryClient {
    http: DownloadClient,
}

impl RegistryClient {
    /// Trusts the system's CAs (`SYSTEM_ROOTS_FILE`, if present) plus those in `extra_ca`
    /// (PEM; an unreadable file or one without a certificate is an error).
    pub fn new(extra_ca: Option<&Path>) -> Result<RegistryClient, PullError> {
        let mut roots = system_roots();
        if let Some(path) = extra_ca {
            let pem = std::fs::read(path).map_err(|e| {
                PullError::Trust(format!("reading CA file {}: {e}", path.display()))
            })?;
            let (added, ignored) = roots.add_parsable_certificates(pem_certificates(&pem));
            if added == 0 {
                return Err(PullError::Trust(format!(
                    "{} holds no usable PEM certificate ({ignored} ignored)",
                    path.display()
                )));
            }
        }
        Self::with_roots(roots)
    }

    fn with_roots(roots: rustls::RootCertStore) -> Result<RegistryClient, PullError> {
        Ok(RegistryClient {
            http: download_client(roots, false).map_err(PullError::Trust)?,
        })
    }

    /// Pulls `target` into `layout` (an empty directory, normally a `StagingDir` of the image
    /// store) as an OCI image layout ready for `ImageStore::import_staged_layout`. On error the
    /// directory holds a partial download: drop it, never import it.
    pub async fn pull(
        &self,
        target: &PullTarget,
        credentials: Option<&Credentials>,
        layout: &Path,
    ) -> Result<PullReport, PullError> {
        let started = Instant::now();
        let mut session = Session {
            http: &self.http,
            target,
            image: target.to_string(),
            credentials,
            authorization: None,
        };
        let pulled =
            tokio::time::timeout(Duration::from_millis(PULL_TIMEOUT_MS), session.pull(layout))
                .await
                .map_err(|_| PullError::Timeout {
                    url: target.top_manifest_url(),
                    timeout_ms: PULL_TIMEOUT_MS,
                })??;
        Ok(PullReport {
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..pulled
        })
    }
}

/// The system's trusted CAs (`SYSTEM_ROOTS_FILE`); none, with a warning, where the file is
/// missing. Reads a file: call it off the async threads where that matters.
pub(crate) fn system_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    match std::fs::read(SYSTEM_ROOTS_FILE) {
        Ok(pem) => {
            let (added, _) = roots.add_parsable_certificates(pem_certificates(&pem));
            tracing::debug!(added, file = SYSTEM_ROOTS_FILE, "loaded system trust roots");
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                file = SYSTEM_ROOTS_FILE,
                "no system trust roots (install ca-certificates): only --registry-ca is trusted, and no HTTPS artifact can be fetched"
            )
        }
    }
    roots
}

/// A client trusting `roots`: HTTPS only, or also plain HTTP when `allow_http` (artifact
/// fetches; registries are HTTPS only). TCP connects are bounded by
/// `REGISTRY_CONNECT_TIMEOUT_MS`; the error is the TLS configuration's.
pub(crate) fn download_client(
    roots: rustls::RootCertStore,
    allow_http: bool,
) -> Result<DownloadClient, String> {
    // The provider is named here rather than installed process-wide, so nothing depends
    // on which crate features happen to be unified into the build.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let https = crate::tls::https_connector(&tls, allow_http, Some(REGISTRY_CONNECT_TIMEOUT_MS));
    Ok(HttpClient::builder(TokioExecutor::new()).build(https))
}

fn pem_certificates(pem: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

/// One pull: its target, credentials and the `Authorization` value earned so far.
struct Session<'a> {
    http: &'a DownloadClient,
    target: &'a PullTarget,
    /// The reference as users wrote it, normalized, for messages.
    image: String,
    credentials: Option<&'a Credentials>,
    /// Sent to the registry's own host only, never to a host it redirects to.
    authorization: Option<String>,
}

impl Session<'_> {
    async fn pull(&mut self, layout: &Path) -> Result<PullReport, PullError> {
        oci::prepare_layout(layout).map_err(|e| self.local(e))?;
        let url = self.target.top_manifest_url();
        let (bytes, content_type) = self.fetch_manifest(&url).await?;
        let top_digest = Digest::of_bytes(&bytes);
        if let PullVersion::Digest(pinned) = &self.target.version {
            if *pinned != top_digest {
                return Err(self.digest_mismatch("manifest", pinned, &top_digest));
            }
        }
        let top = oci::parse_manifest(content_type.as_deref(), &bytes)
            .map_err(|e| self.protocol(format!("manifest: {e}")))?;
        let top_descriptor = BlobDescriptor {
            media_type: Some(top.media_type().to_string()),
            digest: top_digest.clone(),
            size_bytes: bytes.len() as u64,
        };
        self.write_blob(layout, &top_digest, &bytes).await?;
        let manifest = match top {
            Manifest::Image(manifest) => manifest,
            Manifest::Index(index) => {
                let chosen = index
                    .for_host()
                    .map_err(|e| self.protocol(format!("index: {e}")))?
                    .ok_or_else(|| PullError::NoPlatform {
                        image: self.image.clone(),
                        architecture: oci::host_architecture().to_string(),
                        platforms: index.platforms().join(", "),
                    })?;
                self.fetch_platform_manifest(layout, &chosen).await?
            }
        };
        if manifest.layers.len() > PULL_LAYERS_MAX {
            return Err(self.protocol(format!(
                "the manifest lists {} layers, more than {PULL_LAYERS_MAX}",
                manifest.layers.len()
            )));
        }
        if manifest.config.size_bytes > MANIFEST_MAX_BYTES {
            return Err(self.too_large("image config", MANIFEST_MAX_BYTES));
        }
        let blobs: Vec<(&str, &BlobDescriptor)> = std::iter::once(("config", &manifest.config))
            .chain(manifest.layers.iter().map(|layer| ("layer", layer)))
            .collect();
        let announced_bytes = blobs
            .iter()
            .try_fold(0u64, |total, (_, blob)| total.checked_add(blob.size_bytes));
        if announced_bytes.is_none_or(|total| total > PULL_MAX_BYTES) {
            return Err(self.too_large("the image (config and layers)", PULL_MAX_BYTES));
        }
        let mut blob_bytes = 0;
        for (what, blob) in blobs {
            if oci::layout_blob_path(layout, &blob.digest).exists() {
                continue; // the same layer listed twice
            }
            self.fetch_blob(layout, what, blob).await?;
            blob_bytes += blob.size_bytes;
        }
        let store_name = self.target.store_name();
        oci::write_layout_index(layout, &top_descriptor, store_name.as_deref())
            .map_err(|e| self.local(e))?;
        Ok(PullReport {
            manifest_digest: top_digest,
            layers: manifest.layers.len(),
            blob_bytes,
            elapsed_ms: 0,
        })
    }

    /// Fetches the image manifest an index chose, by digest, and checks it against the entry.
    async fn fetch_platform_manifest(
        &mut self,
        layout: &Path,
        chosen: &BlobDescriptor,
    ) -> Result<oci::ImageManifest, PullError> {
        let url = self.target.manifest_url(&chosen.digest.to_string());
        let (bytes, content_type) = self.fetch_manifest(&url).await?;
        let digest = Digest::of_bytes(&bytes);
        if digest != chosen.digest {
            return Err(self.digest_mismatch("manifest", &chosen.digest, &digest));
        }
        if bytes.len() as u64 != chosen.size_bytes {
            return Err(self.protocol(format!(
                "manifest {digest} is {} bytes, its index entry says {}",
                bytes.len(),
                chosen.size_bytes
            )));
        }
        // The import follows the index entry's media type, so it must name a manifest.
        let content_type = chosen.media_type.as_deref().or(content_type.as_deref());
        match oci::parse_manifest(content_type, &bytes)
            .map_err(|e| self.protocol(format!("manifest {digest}: {e}")))?
        {
            Manifest::Image(manifest) => {
                self.write_blob(layout, &digest, &bytes).await?;
                Ok(manifest)
            }
            Manifest::Index(_) => Err(self.protocol(format!(
                "the index entry for linux/{} is another index; nested indexes are not pulled",
                oci::host_architecture()
            ))),
        }
    }

    /// GETs a manifest with every type we read in `Accept`: its bytes and `Content-Type`.
    async fn fetch_manifest(&mut self, url: &str) -> Result<(Bytes, Option<String>), PullError> {
        let response = self.get(url, Some(oci::MANIFEST_ACCEPT)).await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                return Err(PullError::NotFound {
                    image: self.image.clone(),
                })
            }
            _ => return Err(status_error(url, response).await),
        }
        let content_type = response
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_bounded(response, url, MANIFEST_MAX_BYTES)
            .await?
            .ok_or_else(|| self.too_large("manifest", MANIFEST_MAX_BYTES))?;
        Ok((bytes, content_type))
    }

    /// Streams a blob into the layout, checking its size as it arrives and its digest at the
    /// end. The file keeps its final name even when the check fails: a failed pull's whole
    /// directory is discarded, never imported.
    async fn fetch_blob(
        &mut self,
        layout: &Path,
        what: &str,
        blob: &BlobDescriptor,
    ) -> Result<(), PullError> {
        let url = self.target.blob_url(&blob.digest);
        let response = self.get(&url, None).await?;
        if response.status() != StatusCode::OK {
            return Err(status_error(&url, response).await);
        }
        if content_length(&response).is_some_and(|n| n > blob.size_bytes) {
            return Err(self.protocol(format!(
                "{what} {} is announced as {} bytes, its descriptor says {}",
                blob.digest,
                content_length(&response).unwrap_or_default(),
                blob.size_bytes
            )));
        }
        let path = oci::layout_blob_path(layout, &blob.digest);
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(io_error(format!("creating {}", path.display())))?;
        let mut file = tokio::io::BufWriter::with_capacity(BLOB_WRITE_BUFFER_BYTES, file);
        let mut verifier = BlobVerifier::new(blob.digest.clone(), blob.size_bytes);
        let mut body = response.into_body();
        while let Some(chunk) = next_chunk(&mut body, &url).await? {
            verifier
                .update(&chunk)
                .map_err(|e| self.blob_error(what, e))?;
            file.write_all(&chunk)
                .await
                .map_err(io_error(format!("writing {}", path.display())))?;
        }
        verifier.finish().map_err(|e| self.blob_error(what, e))?;
        file.flush()
            .await
            .map_err(io_error(format!("writing {}", path.display())))?;
        Ok(())
    }

    async fn write_blob(
        &self,
        layout: &Path,
        digest: &Digest,
        bytes: &[u8],
    ) -> Result<(), PullError> {
        let path = oci::layout_blob_path(layout, digest);
        tokio::fs::write(&path, bytes)
            .await
            .map_err(io_error(format!("writing {}", path.display())))
    }

    /// GETs `url`, following redirects (at most `REDIRECTS_MAX`) and answering one
    /// authentication challenge from the registry. Any other status is the caller's.
    async fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<Response<Incoming>, PullError> {
        let mut url = url.to_string();
        let mut redirects = 0;
        let mut challenge_answered = false;
        loop {
            let to_registry = authority_of(&url).as_deref() == Some(self.target.registry.as_str());
            let authorization = self.authorization.as_deref().filter(|_| to_registry);
            let response = send(self.http, &url, accept, authorization).await?;
            let status = response.status();
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                redirects += 1;
                if redirects > REDIRECTS_MAX {
                    return Err(self.protocol(format!("more than {REDIRECTS_MAX} redirects")));
                }
                url = redirect_target(&url, &response).ok_or_else(|| {
                    self.protocol(format!("a redirect from {url} has no usable Location"))
                })?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && to_registry {
                if challenge_answered {
                    return Err(self.refused());
                }
                let header = response
                    .headers()
                    .get(hyper::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.authenticate(&header).await?;
                challenge_answered = true;
                continue;
            }
            return Ok(response);
        }
    }

    /// Earns an `Authorization` value for the challenge in `header`.
    async fn authenticate(&mut self, header: &str) -> Result<(), PullError> {
        let basic = self
            .credentials
            .map(|c| oci::basic_authorization(&c.username, &c.password));
        match oci::parse_challenge(header) {
            Some(Challenge::Basic) => {
                self.authorization = Some(basic.ok_or_else(|| self.refused())?);
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope = scope.unwrap_or_else(|| self.target.pull_scope());
                let query = oci::token_query(service.as_deref(), &scope);
                let url = match query.strip_prefix('?') {
                    Some(params) if realm.contains('?') => format!("{realm}&{params}"),
                    _ => format!("{realm}{query}"),
                };
                if authority_of(&url).is_none() || !url.starts_with("https://") {
                    return Err(self.protocol(format!("token realm {realm:?} is not an HTTPS URL")));
                }
                let response = send(self.http, &url, None, basic.as_deref()).await?;
                match response.status() {
                    StatusCode::OK => {}
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => return Err(self.refused()),
                    _ => return Err(status_error(&url, response).await),
                }
                let bytes = read_bounded(response, &url, TOKEN_RESPONSE_MAX_BYTES)
                    .await?
                    .ok_or_else(|| self.too_large("token answer", TOKEN_RESPONSE_MAX_BYTES))?;
                let token =
                    oci::parse_token_response(&bytes).map_err(|e| self.protocol(e.to_string()))?;
                self.authorization = Some(format!("Bearer {token}"));
                Ok(())
            }
            None => Err(self.protocol(format!(
                "it asks for authentication with a challenge this client cannot answer: {header:?}"
            ))),
        }
    }

    /// Authentication failed: with credentials they were refused, without them needed.
    fn refused(&self) -> PullError {
        let registry = self.target.registry.clone();
        let image = self.image.clone();
        if self.credentials.is_some() {
            PullError::Unauthorized { registry, image }
        } else {
            PullError::CredentialsRequired { registry, image }
        }
    }

    fn protocol(&self, reason: String) -> PullError {
        PullError::Protocol {
            registry: self.target.registry.clone(),
            image: self.image.clone(),
            reason,
        }
    }

    fn too_large(&self, what: &str, limit_bytes: u64) -> PullError {
        PullError::TooLarge {
            what: what.to_string(),
            image: self.image.clone(),
            limit_bytes,
        }
    }

    fn digest_mismatch(&self, what: &str, expected: &Digest, actual: &Digest) -> PullError {
        PullError::DigestMismatch {
            what: what.to_string(),
            image: self.image.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    fn blob_error(&self, what: &str, error: ImageError) -> PullError {
        match error {
            ImageError::DigestMismatch { expected, actual } => PullError::DigestMismatch {
                what: what.to_string(),
                image: self.image.clone(),
                expected,
                actual,
            },
            other => self.protocol(format!("{what}: {other}")),
        }
    }

    fn local(&self, error: ImageError) -> PullError {
        match error {
            ImageError::Io { context, source } => PullError::Io { context, source },
            other => self.protocol(other.to_string()),
        }
    }
}

/// Sends one GET and waits (bounded by `REGISTRY_RESPONSE_TIMEOUT_MS`) for its response
/// headers.
pub(crate) async fn send(
    http: &DownloadClient,
    url: &str,
    accept: Option<&str>,
    authorization: Option<&str>,
) -> Result<Response<Incoming>, TransferError> {
    let mut request = Request::get(url).header(
        hyper::header::USER_AGENT,
        concat!("dcos-rs/", env!("CARGO_PKG_VERSION")),
    );
    if let Some(accept) = accept {
        request = request.header(hyper::header::ACCEPT, accept);
    }
    if let Some(authorization) = authorization {
        request = request.header(hyper::header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| TransferError::Unreachable {
            url: url.to_string(),
            reason: format!("invalid request: {e}"),
        })?;
    match tokio::time::timeout(
        Duration::from_millis(REGISTRY_RESPONSE_TIMEOUT_MS),
        http.request(request),
    )
    .await
    {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(e)) => Err(connect_error(url, &e)),
        Err(_) => Err(TransferError::Timeout {
            url: url.to_string(),
            timeout_ms: REGISTRY_RESPONSE_TIMEOUT_MS,
        }),
    }
}

/// Tells TLS failures (unknown CA, wrong name) apart from unreachable hosts.
fn connect_error(url: &str, error: &(dyn std::error::Error + 'static)) -> TransferError {
    let mut tls = false;
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        tls |= crate::tls::client::is_rustls_error(e, 0);
        let text = e.to_string();
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        current = e.source();
    }
    let reason = parts.join(": ");
    if tls {
        TransferError::Tls {
            url: url.to_string(),
            reason,
        }
    } else {
        TransferError::Unreachable {
            url: url.to_string(),
            reason,
        }
    }
}

/// The next chunk of a body, waiting at most `REGISTRY_READ_IDLE_TIMEOUT_MS` for it.
pub(crate) async fn next_chunk(
    body: &mut Incoming,
    url: &str,
) -> Result<Option<Bytes>, TransferError> {
    loop {
        let frame = tokio::time::timeout(
            Duration::from_millis(REGISTRY_READ_IDLE_TIMEOUT_MS),
            body.frame(),
        )
        .await
        .map_err(|_| TransferError::Timeout {
            url: url.to_string(),
            timeout_ms: REGISTRY_READ_IDLE_TIMEOUT_MS,
        })?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(connect_error(url, &e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
                // Trailers carry nothing we need.
            }
        }
    }
}

/// The whole body if it is at most `limit_bytes`; `None` if it is larger.
async fn read_bounded(
    response: Response<Incoming>,
    url: &str,
    limit_bytes: u64,
) -> Result<Option<Bytes>, PullError> {
    if content_length(&response).is_some_and(|n| n > limit_bytes) {
        return Ok(None);
    }
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut body, url).await? {
        if (bytes.len() + chunk.len()) as u64 > limit_bytes {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(Bytes::from(bytes)))
}

/// The body's announced size, if the answer gives one.
pub(crate) fn content_length(response: &Response<Incoming>) -> Option<u64> {
    response
        .headers()
        .get(hyper::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// An unexpected status, with the start of the registry's explanation.
async fn status_error(url: &str, response: Response<Incoming>) -> PullError {
    let status = response.status().as_u16();
    let body = read_bounded(response, url, 64 * 1024)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut body = String::from_utf8_lossy(&body).trim().to_string();
    if body.len() > ERROR_BODY_QUOTED_MAX_BYTES {
        let mut end = ERROR_BODY_QUOTED_MAX_BYTES;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
        body.push('…');
    }
    PullError::Status {
        url: url.to_string(),
        status,
        body,
    }
}

/// `host[:port]` of an absolute URL.
fn authority_of(url: &str) -> Option<String> {
    url.parse::<Uri>()
        .ok()?
        .authority()
        .map(|a| a.as_str().to_string())
}

/// Where a redirect points: an absolute URL, or a path on the same host.
pub(crate) fn redirect_target(current: &str, response: &Response<Incoming>) -> Option<String> {
    let location = response
        .headers()
        .get(hyper::header::LOCATION)?
        .to_str()
        .ok()?;
    resolve_location(current, location)
}

fn resolve_location(current: &str, location: &str) -> Option<String> {
    if location.starts_with("https://") || location.starts_with("http://") {
        // For a registry, an http:// target fails in its connector (https only) with a clear
        // error; an artifact fetch may follow it.
        return Some(location.to_string());
    }
    let current: Uri = current.parse().ok()?;
    let origin = format!("{}://{}", current.scheme_str()?, current.authority()?);
    if location.starts_with("//") {
        return Some(format!("{}:{location}", current.scheme_str()?));
    }
    if location.starts_with('/') {
        return Some(format!("{origin}{location}"));
    }
    let path = current.path();
    let directory = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{origin}{directory}{location}"))
}

fn io_error(context: String) -> impl FnOnce(std::io::Error) -> PullError {
    move |source| PullError::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_locations_resolve_against_the_current_url() {
        let current = "https://registry.test:5000/v2/app/blobs/sha256:abc";
        for (location, expected) in [
            (
                "https://storage.test/b?sig=1",
                "https://storage.test/b?sig=1",
            ),
            (
                "/storage/b?sig=1",
                "https://registry.test:5000/storage/b?sig=1",
            ),
            ("//cdn.test/b", "https://cdn.test/b"),
            (
                "sha256:def",
                "https://registry.test:5000/v2/app/blobs/sha256:def",
            ),
        ] {
            assert_eq!(
                resolve_location(current, location).as_deref(),
                Some(expected),
                "{location}"
            );
        }
        assert_eq!(
            authority_of("https://127.0.0.1:5000/v2/").as_deref(),
            Some("127.0.0.1:5000")
        );
    }

    #[test]
    fn credentials_never_print_the_password() {
        let credentials = Credentials {
            username: "ci".into(),
            password: "hunter2".into(),
        };
        let printed = format!("{credentials:?}");
        assert!(
            printed.contains("ci") && !printed.contains("hunter2"),
            "{printed}"
        );
    }

    #[test]
    fn an_extra_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = RegistryClient::new(Some(&empty)).err().expect("refused");
        assert!(
            error.to_string().contains("no usable PEM certificate"),
            "{error}"
        );
        let missing = dir.path().join("missing.pem");
        let error = RegistryClient::new(Some(&missing)).err().expect("refused");
        assert!(error.to_string().contains("missing.pem"), "{error}");
    }
}
