//! rustls configurations of a node: serve and dial with its certificate, trust only the
//! cluster CA (or, for users, the CA alone).

use anyhow::{anyhow, bail, Context};
use dcos_pki::{check_issued_by, load_certs, load_key, load_roots, ring_provider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;

// ---------------------------------------------------------------------------------------
// rustls configurations

/// The files a node presents and trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA certificate: the only issuer trusted for peers.
    pub ca: PathBuf,
    /// This node's certificate (PEM; the first one is ours, any more form its chain).
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
}

/// The TLS configuration of a node's HTTPS server: presents `files.cert`, accepts client
/// certificates issued by `files.ca` only, and also serves clients without one (users with
/// a bearer token): handlers see `None` as their `PeerIdentity` then. HTTP/1.1 only.
pub fn server_config(files: &TlsFiles) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = ring_provider();
    let roots = Arc::new(load_roots(&files.ca)?);
    let (chain, key) = load_own(files, &roots, &provider)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| key_error(e, files))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The TLS configuration of a node dialling another: trusts `files.ca` only and presents
/// `files.cert` (mutual TLS).
pub fn client_config(files: &TlsFiles) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = ring_provider();
    let roots = Arc::new(load_roots(&files.ca)?);
    let (chain, key) = load_own(files, &roots, &provider)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| key_error(e, files))?;
    Ok(Arc::new(config))
}

/// `client_config` for a master calling agents' APIs (a task's log, usage and files for
/// the dashboard): presents the master's certificate, and the server must present one
/// with the agent role, so these calls reach no other holder of a cluster certificate.
pub fn master_to_agent_client_config(files: &TlsFiles) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = ring_provider();
    let roots = Arc::new(load_roots(&files.ca)?);
    let (chain, key) = load_own(files, &roots, &provider)?;
    let verifier = AgentRoleVerifier::new(roots, &provider)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| key_error(e, files))?;
    Ok(Arc::new(config))
}

/// The TLS configuration of a user without a certificate (a CLI with a bearer token): trusts
/// the cluster CA in `ca` only and presents nothing.
pub fn client_config_ca_only(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(load_roots(ca)?)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A TLS configuration that trusts no server at all, for a client that speaks only plain
/// HTTP (`dcos-rs up`'s master calling its agent on loopback): an `https://` URL then fails
/// instead of reaching a server nobody vouched for.
pub fn client_config_trusting_none() -> Arc<ClientConfig> {
    let config = ClientConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(RootCertStore::empty())
        .with_no_client_auth();
    Arc::new(config)
}

/// `client_config_ca_only`, for agents' endpoints: the server must also present a
/// certificate with the agent role (`agent:<name>`), so a token meant for an agent's API
/// reaches no master, admin or other holder of a cluster certificate.
pub fn agent_client_config_ca_only(ca: &Path) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = ring_provider();
    let verifier = AgentRoleVerifier::new(Arc::new(load_roots(ca)?), &provider)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The CA's verification, then the agent role in the certificate's subject.
#[derive(Debug)]
struct AgentRoleVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
}

impl AgentRoleVerifier {
    /// Verifies against `roots` (the cluster CA) with `provider`'s algorithms.
    fn new(
        roots: Arc<RootCertStore>,
        provider: &Arc<rustls::crypto::CryptoProvider>,
    ) -> anyhow::Result<Arc<AgentRoleVerifier>> {
        let inner =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .context("building the certificate verifier")?;
        Ok(Arc::new(AgentRoleVerifier { inner }))
    }
}

impl rustls::client::danger::ServerCertVerifier for AgentRoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match dcos_pki::PeerIdentity::from_certificate(end_entity) {
            Ok(identity) if identity.role == dcos_pki::Role::Agent => Ok(verified),
            Ok(identity) => Err(rustls::Error::General(format!(
                "the server is {identity}, not an agent: the API token is not sent to it"
            ))),
            Err(e) => Err(rustls::Error::General(format!(
                "the server's certificate names no agent ({e})"
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The TLS client of the agent's HTTPS health and readiness probes: any certificate is
/// accepted (its signature on the handshake is still checked), as Mesos's HTTPS checks do.
/// Only for a task's own port on the agent's loopback: no secret is ever sent over it, and
/// what it learns is one status code.
pub fn probe_client_config() -> Arc<ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = ring_provider();
            let verifier = AnyCertificate {
                algorithms: provider.signature_verification_algorithms,
            };
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// Accepts any server certificate (see `probe_client_config`).
#[derive(Debug)]
struct AnyCertificate {
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Our certificate chain and key, after checking that the certificate was issued by the
/// cluster CA and is valid now: a mixed-up or expired file fails at start, with its name,
/// rather than as an unexplained handshake failure on every connection.
fn load_own(
    files: &TlsFiles,
    roots: &Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = load_certs(&files.cert, "certificate")?;
    let key = load_key(&files.key)?;
    let Some(own) = chain.first() else {
        bail!("{} holds no certificate", files.cert.display());
    };
    check_issued_by(own, roots, provider).with_context(|| {
        format!(
            "{} is not a valid certificate of the cluster CA {}",
            files.cert.display(),
            files.ca.display()
        )
    })?;
    Ok((chain, key))
}

fn key_error(error: rustls::Error, files: &TlsFiles) -> anyhow::Error {
    match error {
        rustls::Error::InconsistentKeys(_) => anyhow!(
            "{} is not the key of the certificate in {}",
            files.key.display(),
            files.cert.display()
        ),
        other => anyhow!(
            "using {} with {}: {other}",
            files.cert.display(),
            files.key.display()
        ),
    }
}
