//! The cluster's public-key infrastructure: who a certificate's holder is (`Role`,
//! `PeerIdentity`, read from the subject's Common Name `<role>:<name>`), the cluster CA
//! (`init_ca`) and the certificates it issues (`issue_cert`), and reading PEM files. Used by
//! the binary (`dcos-rs cluster init-ca|issue-cert`, its TLS configs) and by the installer.
//!
//! Everything uses rustls's ring provider, named explicitly (never the process-wide default).
//!
//! Deliberately absent: revocation (CRLs, OCSP; a leaked key is handled by replacing the CA),
//! intermediate CAs, RSA keys, and any authorization decision: this crate says who the
//! holder is, callers decide what it may do. No network, no TLS sessions (`src/tls/` in the
//! binary builds those).

mod ca;
mod identity;
mod pem;

pub use ca::{
    check_issued_by, init_ca, issue_cert, write_atomically, CaPaths, CA_CERT_FILE, CA_KEY_FILE,
    CA_VALID_DAYS, CERT_VALID_DAYS_DEFAULT, CERT_VALID_DAYS_MAX, NODE_NAME_MAX_CHARS, SANS_MAX,
};
pub use identity::{
    certificate_common_name, certificate_names_host, certificate_serial, check_node_name,
    subject_common_name, IdentityError, PeerIdentity, Role,
};
pub use pem::{load_certs, load_key, load_roots, read_bounded, ring_provider, root_store};

#[cfg(test)]
mod tests;
