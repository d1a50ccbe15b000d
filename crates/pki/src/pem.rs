//! Reading certificates and keys from PEM files (bounded in size), and the ring provider.

use anyhow::{anyhow, bail, Context};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

/// Largest certificate or key file read (a PEM chain is a few KiB).
const PEM_FILE_MAX_BYTES: u64 = 1024 * 1024;

/// A ring provider, named rather than taken from the process default.
pub fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
pub fn read_bounded(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    let metadata =
        std::fs::metadata(path).with_context(|| format!("reading {what} {}", path.display()))?;
    if metadata.len() > PEM_FILE_MAX_BYTES {
        bail!(
            "{what} {} is {} bytes, more than a PEM file of certificates or keys can be ({PEM_FILE_MAX_BYTES})",
            path.display(),
            metadata.len()
        );
    }
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Every certificate in a PEM file; an error if there is none or one is malformed.
pub fn load_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read_bounded(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{what} {} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{what} {} holds no certificate (no -----BEGIN CERTIFICATE----- block)",
            path.display()
        );
    }
    Ok(certs)
}

pub fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
    let pem = read_bounded(path, "private key")?;
    if let Ok(metadata) = std::fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "private key is readable by other users: chmod 600 it"
            );
        }
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => anyhow!(
            "{} holds no private key (no -----BEGIN PRIVATE KEY----- block)",
            path.display()
        ),
        e => anyhow!("private key {} is not valid PEM: {e}", path.display()),
    })
}

pub fn load_roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    root_store(load_certs(ca, "CA certificate")?, ca)
}

pub fn root_store(
    certs: Vec<CertificateDer<'static>>,
    path: &Path,
) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let (added, ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        bail!(
            "CA certificate {} holds no usable certificate ({ignored} unusable)",
            path.display()
        );
    }
    Ok(roots)
}
