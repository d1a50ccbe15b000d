//! TLS between the nodes of a cluster and towards its users: a cluster CA, node certificates
//! whose subject names a role and a name (`master:m1`, `agent:a1`, `admin:admin`), rustls
//! configurations that trust only that CA, an HTTPS server that tells handlers who called
//! (`serve_tls`), and an HTTPS client for node-to-node calls (`NodeClient`).
//!
//! Everything uses rustls with the ring provider, named explicitly (never the process-wide
//! default), so no behaviour depends on which provider was installed first.
//!
//! Deliberately absent: revocation (CRLs, OCSP; a leaked key is handled by replacing the CA),
//! intermediate CAs, reloading certificates without a restart, RSA keys, HTTP/2, and any
//! authorization decision: this module says who the peer is, callers decide what it may do.

use anyhow::{anyhow, bail, Context};
use axum::extract::ConnectInfo;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::http::Extensions;
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// File of the CA certificate in a CA directory (public: every node and user needs it).
pub const CA_CERT_FILE: &str = "ca.crt";
/// File of the CA's private key (secret: whoever holds it can mint any identity).
pub const CA_KEY_FILE: &str = "ca.key";
/// Validity of a new CA. Certificates it issues stop verifying when it expires.
pub const CA_VALID_DAYS: u32 = 3650;
/// Validity of a node certificate unless the caller asks for another.
pub const CERT_VALID_DAYS_DEFAULT: u32 = 365;
/// Longest validity of a node certificate (the CA's own lifetime).
pub const CERT_VALID_DAYS_MAX: u32 = CA_VALID_DAYS;
/// Certificates start this long before they are made, so a node whose clock is a little
/// behind the issuer's accepts them at once.
const CLOCK_SKEW_ALLOWANCE_SECS: i64 = 3600;
/// Longest node name (it is a file name and part of the certificate's subject).
pub const NODE_NAME_MAX_CHARS: usize = 64;
/// Most subject alternative names in one certificate.
pub const SANS_MAX: usize = 64;
/// Largest certificate or key file read (a PEM chain is a few KiB).
const PEM_FILE_MAX_BYTES: u64 = 1024 * 1024;
/// Longest TLS handshake a server waits for; a client that stalls is dropped.
pub const TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Most connections one `serve_tls` holds at once (handshaking or serving); more are closed
/// as they arrive.
pub const TLS_CONNECTIONS_MAX: usize = 4096;
/// Longest wait for a request's headers, which is also how long an idle keep-alive
/// connection stays open.
pub const HTTP_HEADER_READ_TIMEOUT_MS: u64 = 30_000;
/// Longest wait for in-flight connections to finish after shutdown; then they are dropped.
pub const SHUTDOWN_DRAIN_TIMEOUT_MS: u64 = 10_000;
/// At most one warning about refused certificates per this interval and server.
const HANDSHAKE_WARNING_INTERVAL_MS: u64 = 10_000;
/// Pause after a failed `accept` (e.g. out of file descriptors) before the next one.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;
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

// ---------------------------------------------------------------------------------------
// Identities

/// What a certificate's holder is in the cluster. Encoded as the prefix of the subject's
/// Common Name: `master:<name>`, `agent:<name>`, `admin:<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A master: serves the API and takes part in Raft.
    Master,
    /// An agent: runs tasks, registers with the masters.
    Agent,
    /// A person or tool administering the cluster.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Master, Role::Agent, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Agent => "agent",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Role, IdentityError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| IdentityError::UnknownRole {
                role: text.to_string(),
            })
    }
}

/// Who is on the other end of a TLS connection, read from the certificate it presented
/// (which rustls verified against the cluster CA).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PeerIdentity {
    pub role: Role,
    /// The node's (or admin's) name: `NODE_NAME_MAX_CHARS` of letters, digits, `-`, `_`, `.`.
    pub name: String,
}

impl PeerIdentity {
    /// A checked identity: the name must be a valid node name.
    pub fn new(role: Role, name: &str) -> Result<PeerIdentity, IdentityError> {
        check_node_name(name)?;
        Ok(PeerIdentity {
            role,
            name: name.to_string(),
        })
    }

    /// The certificate subject's Common Name for this identity, e.g. `master:m1`.
    pub fn common_name(&self) -> String {
        format!("{}:{}", self.role, self.name)
    }

    /// Parses `role:name`.
    pub fn from_common_name(common_name: &str) -> Result<PeerIdentity, IdentityError> {
        let Some((role, name)) = common_name.split_once(':') else {
            return Err(IdentityError::NotAnIdentity {
                common_name: common_name.to_string(),
            });
        };
        PeerIdentity::new(role.parse()?, name)
    }

    /// The identity in a DER certificate's subject Common Name. The certificate is parsed,
    /// not verified: call this only on certificates rustls has verified.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<PeerIdentity, IdentityError> {
        PeerIdentity::from_common_name(&certificate_common_name(cert)?)
    }
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.role, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("not a parsable X.509 certificate: {reason}")]
    Certificate { reason: String },
    #[error("malformed subject name: {reason}")]
    MalformedName { reason: &'static str },
    #[error("the subject has no Common Name")]
    NoCommonName,
    #[error("the subject has more than one Common Name")]
    SeveralCommonNames,
    #[error(
        "the subject's Common Name is not a UTF8String or PrintableString (DER tag {tag:#04x})"
    )]
    CommonNameNotText { tag: u8 },
    #[error("Common Name '{common_name}' is not '<role>:<name>'")]
    NotAnIdentity { common_name: String },
    #[error("unknown role '{role}' (expected master, agent or admin)")]
    UnknownRole { role: String },
    #[error("invalid name '{name}': {reason}")]
    InvalidName { name: String, reason: &'static str },
}

/// A node name is a file name (`<name>.crt`) and part of a subject, so it is kept to a safe
/// alphabet: it cannot hold `/`, cannot be `..`, cannot start with `-` or `.`.
pub fn check_node_name(name: &str) -> Result<(), IdentityError> {
    let invalid = |reason| {
        Err(IdentityError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return invalid("empty");
    }
    if name.chars().count() > NODE_NAME_MAX_CHARS {
        return invalid("longer than 64 characters");
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return invalid("must start with a letter or digit");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return invalid("only letters, digits, '-', '_' and '.' are allowed");
    }
    Ok(())
}

/// The subject Common Name of a DER certificate.
pub fn certificate_common_name(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| IdentityError::Certificate {
        reason: e.to_string(),
    })?;
    subject_common_name(parsed.subject())
}

/// DER tags read in a subject.
mod der_tag {
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
}
/// OID 2.5.4.3 (id-at-commonName), DER content bytes.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The Common Name in a subject `Name`, given as the content of its outer SEQUENCE (what
/// webpki's `Cert::subject` returns): a SEQUENCE OF SET OF SEQUENCE { OID, value }.
///
/// Strict: definite minimal lengths only, no trailing bytes anywhere, exactly one CN, and it
/// must be a UTF8String or PrintableString. Every loop consumes at least two bytes of the
/// input per turn, so the input's length bounds the work.
pub fn subject_common_name(name: &[u8]) -> Result<String, IdentityError> {
    let mut common_name = None;
    let mut rdns = name;
    while !rdns.is_empty() {
        let (tag, set, rest) = der_read(rdns)?;
        rdns = rest;
        if tag != der_tag::SET {
            return malformed("a relative distinguished name is not a SET");
        }
        if set.is_empty() {
            return malformed("empty relative distinguished name");
        }
        let mut attributes = set;
        while !attributes.is_empty() {
            let (tag, attribute, rest) = der_read(attributes)?;
            attributes = rest;
            if tag != der_tag::SEQUENCE {
                return malformed("an attribute is not a SEQUENCE");
            }
            let (tag, oid, rest) = der_read(attribute)?;
            if tag != der_tag::OID {
                return malformed("an attribute type is not an OID");
            }
            let (value_tag, value, rest) = der_read(rest)?;
            if !rest.is_empty() {
                return malformed("bytes after an attribute's value");
            }
            if oid != OID_COMMON_NAME {
                continue;
            }
            if common_name.is_some() {
                return Err(IdentityError::SeveralCommonNames);
            }
            common_name = Some(der_text(value_tag, value)?);
        }
    }
    common_name.ok_or(IdentityError::NoCommonName)
}

fn malformed<T>(reason: &'static str) -> Result<T, IdentityError> {
    Err(IdentityError::MalformedName { reason })
}

/// Reads one DER element: (tag, content, what follows). Only low tag numbers and definite,
/// minimally encoded lengths of up to two bytes (a subject is far below 64 KiB).
fn der_read(input: &[u8]) -> Result<(u8, &[u8], &[u8]), IdentityError> {
    let Some((&tag, rest)) = input.split_first() else {
        return malformed("truncated element");
    };
    if tag & 0x1f == 0x1f {
        return malformed("high tag numbers are not used in names");
    }
    let Some((&first, rest)) = rest.split_first() else {
        return malformed("truncated length");
    };
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let length_bytes = usize::from(first & 0x7f);
        if length_bytes == 0 {
            return malformed("indefinite length");
        }
        if length_bytes > 2 {
            return malformed("length too large");
        }
        let Some((bytes, rest)) = rest.split_at_checked(length_bytes) else {
            return malformed("truncated length");
        };
        if bytes.first() == Some(&0) {
            return malformed("length not minimally encoded");
        }
        let length = bytes
            .iter()
            .fold(0usize, |length, &byte| (length << 8) | usize::from(byte));
        if length < 0x80 {
            return malformed("length not minimally encoded");
        }
        (length, rest)
    };
    let Some((content, rest)) = rest.split_at_checked(length) else {
        return malformed("element longer than its input");
    };
    Ok((tag, content, rest))
}

fn der_text(tag: u8, value: &[u8]) -> Result<String, IdentityError> {
    match tag {
        der_tag::UTF8_STRING => std::str::from_utf8(value)
            .map(str::to_string)
            .or_else(|_| malformed("a UTF8String is not UTF-8")),
        der_tag::PRINTABLE_STRING => {
            let printable = |b: &u8| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(b);
            if !value.iter().all(printable) {
                return malformed("a PrintableString holds a character it may not");
            }
            // Only ASCII passed the check above.
            Ok(value.iter().map(|&b| char::from(b)).collect())
        }
        tag => Err(IdentityError::CommonNameNotText { tag }),
    }
}

// ---------------------------------------------------------------------------------------
// The cluster CA and node certificates

/// Where `init_ca` wrote the CA.
#[derive(Debug, Clone, Serialize)]
pub struct CaPaths {
    /// `ca.crt`: the CA certificate (PEM). Every node and user gets a copy.
    pub cert: PathBuf,
    /// `ca.key`: the CA's private key (PEM, mode 0600). Keep it off the nodes.
    pub key: PathBuf,
}

/// Makes a new cluster CA in `dir` (created if missing, mode 0700 then): a self-signed
/// ECDSA P-256 certificate valid for `CA_VALID_DAYS` that may sign node certificates only
/// (path length 0), and its key. Refuses to replace an existing CA unless `force`: every
/// certificate the old one issued would stop verifying.
pub fn init_ca(dir: &Path, force: bool) -> anyhow::Result<CaPaths> {
    let paths = CaPaths {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    if !force {
        for path in [&paths.key, &paths.cert] {
            if path.symlink_metadata().is_ok() {
                bail!(
                    "{} already exists: a CA is there; replacing it invalidates every certificate it issued (use --force to do so anyway)",
                    path.display()
                );
            }
        }
    }
    create_private_dir(dir)?;

    let provider = ring_provider();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the CA key")?;
    let mut params = rcgen::CertificateParams::default();
    // A random suffix makes each cluster's CA a distinct issuer name, so a certificate from
    // another cluster's CA is reported as unknown rather than as a bad signature.
    let suffix = random_bytes::<4>(&provider)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    params.distinguished_name = ca_distinguished_name(&format!("dcos-rs cluster CA {suffix}"));
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    (params.not_before, params.not_after) = validity(CA_VALID_DAYS)?;
    params.serial_number = Some(random_serial(&provider)?);
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;

    // The key first: a crash between the two leaves a key without a certificate, which the
    // next `init_ca` refuses to overwrite silently and `issue_cert` reports as missing.
    write_atomically(&paths.key, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&paths.cert, cert.pem().as_bytes(), 0o644)?;
    Ok(paths)
}

/// Issues a certificate for `role:name`, signed by the CA in `ca_dir`, into
/// `out_dir/<name>.crt` and `out_dir/<name>.key` (mode 0600), replacing earlier ones of that
/// name. Returns (certificate path, key path).
///
/// `sans` are the addresses others use to reach the holder: IP addresses or DNS names
/// (needed for a node that serves; a client-only certificate may have none). The certificate
/// is good for both serving (serverAuth) and dialling (clientAuth), since a master does both.
pub fn issue_cert(
    ca_dir: &Path,
    role: Role,
    name: &str,
    sans: &[String],
    out_dir: &Path,
    valid_days: u32,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let identity = PeerIdentity::new(role, name)?;
    let subject_alt_names = parse_sans(sans)?;
    if valid_days == 0 || valid_days > CERT_VALID_DAYS_MAX {
        bail!("validity of {valid_days} days: give 1 to {CERT_VALID_DAYS_MAX} days");
    }

    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_cert = load_certs(&ca_cert_path, "CA certificate")?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{} holds no certificate", ca_cert_path.display()))?;
    let ca_key_pem = String::from_utf8(read_bounded(&ca_key_path, "CA key")?)
        .map_err(|_| anyhow!("{} is not a PEM file", ca_key_path.display()))?;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| anyhow!("{} holds no usable private key: {e}", ca_key_path.display()))?;
    let parsed_ca = webpki::EndEntityCert::try_from(&ca_cert)
        .map_err(|e| anyhow!("{} is not a valid certificate: {e}", ca_cert_path.display()))?;
    if parsed_ca.subject_public_key_info().as_ref()
        != rcgen::PublicKeyData::subject_public_key_info(&ca_key).as_slice()
    {
        bail!(
            "{} does not belong to {}: they come from different CAs",
            ca_key_path.display(),
            ca_cert_path.display()
        );
    }
    // The issuer is rebuilt from the CA's subject; the check after signing proves that it
    // matches byte for byte (it does for CAs made by `init_ca`).
    let ca_common_name = subject_common_name(parsed_ca.subject())
        .with_context(|| format!("reading the subject of {}", ca_cert_path.display()))?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.distinguished_name = ca_distinguished_name(&ca_common_name);
    ca_params.key_usages = ca_key_usages();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let provider = ring_provider();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating the certificate's key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, identity.common_name());
    params.subject_alt_names = subject_alt_names;
    params.is_ca = rcgen::IsCa::ExplicitNoCa;
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(valid_days)?;
    params.serial_number = Some(random_serial(&provider)?);
    let cert = params
        .signed_by(&key, &issuer)
        .with_context(|| format!("signing the certificate of {identity}"))?;

    let roots = Arc::new(root_store(vec![ca_cert], &ca_cert_path)?);
    check_issued_by(cert.der(), &roots, &provider).with_context(|| {
        format!(
            "the new certificate does not verify against {} (was it made by `dcos-rs cluster init-ca`?)",
            ca_cert_path.display()
        )
    })?;

    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let cert_path = out_dir.join(format!("{name}.crt"));
    let key_path = out_dir.join(format!("{name}.key"));
    write_atomically(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Subject alternative names from the user's words: an IP address, else a DNS name.
fn parse_sans(sans: &[String]) -> anyhow::Result<Vec<rcgen::SanType>> {
    if sans.len() > SANS_MAX {
        bail!(
            "{} subject alternative names: at most {SANS_MAX}",
            sans.len()
        );
    }
    let mut parsed = Vec::new();
    for san in sans {
        let entry = match san.parse::<IpAddr>() {
            Ok(ip) => rcgen::SanType::IpAddress(ip),
            Err(_) => match dns_name_problem(san) {
                None => rcgen::SanType::DnsName(
                    rcgen::string::Ia5String::try_from(san.as_str())
                        .map_err(|e| anyhow!("subject alternative name '{san}': {e}"))?,
                ),
                Some(problem) => bail!(
                    "subject alternative name '{san}' is neither an IP address nor a DNS name ({problem}); e.g. 10.0.0.5 or m1.example.com"
                ),
            },
        };
        if !parsed.contains(&entry) {
            parsed.push(entry);
        }
    }
    Ok(parsed)
}

/// Why `name` is not a host name a client could dial (RFC 1123 labels), if it is not one.
/// Stricter than what webpki accepts (underscores, wildcards): a SAN names a node.
fn dns_name_problem(name: &str) -> Option<&'static str> {
    const NAME_MAX_CHARS: usize = 253;
    const LABEL_MAX_CHARS: usize = 63;
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > NAME_MAX_CHARS {
        return Some("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("empty label");
        }
        if label.len() > LABEL_MAX_CHARS {
            return Some("a label is longer than 63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Some("only letters, digits, '-' and '.' are allowed");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some("a label starts or ends with '-'");
        }
    }
    // `10.0.0.256` is a mistyped address, not a host name.
    if name
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Some("its last label is all digits");
    }
    None
}

fn ca_distinguished_name(common_name: &str) -> rcgen::DistinguishedName {
    let mut name = rcgen::DistinguishedName::new();
    name.push(rcgen::DnType::CommonName, common_name);
    name
}

fn ca_key_usages() -> Vec<rcgen::KeyUsagePurpose> {
    vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ]
}

/// (not before, not after) for a certificate made now and valid for `days`.
fn validity(days: u32) -> anyhow::Result<(time::OffsetDateTime, time::OffsetDateTime)> {
    let now_secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    let now_secs = i64::try_from(now_secs).context("the system clock is out of range")?;
    let not_before =
        time::OffsetDateTime::from_unix_timestamp(now_secs - CLOCK_SKEW_ALLOWANCE_SECS)
            .context("the system clock is out of range")?;
    let not_after = time::OffsetDateTime::from_unix_timestamp(now_secs)
        .context("the system clock is out of range")?
        + time::Duration::days(i64::from(days));
    Ok((not_before, not_after))
}

/// A random positive 127-bit serial number (RFC 5280 asks for unpredictable serials).
fn random_serial(provider: &rustls::crypto::CryptoProvider) -> anyhow::Result<rcgen::SerialNumber> {
    let mut bytes = random_bytes::<16>(provider)?;
    bytes[0] &= 0x7f;
    // A leading zero byte would make the DER integer non-minimal.
    bytes[0] |= 0x01;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

fn random_bytes<const N: usize>(
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    provider
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| anyhow!("the system's random number generator failed"))?;
    Ok(bytes)
}

/// Proves `cert` chains to `roots` and is valid now for client authentication (which every
/// certificate of `issue_cert` is, besides serving).
fn check_issued_by(
    cert: &CertificateDer<'_>,
    roots: &Arc<RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> anyhow::Result<()> {
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .context("building a certificate verifier")?;
    verifier
        .verify_client_cert(cert, &[], UnixTime::now())
        .map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} private (mode 0700)", dir.display()))
}

/// Writes `contents` to `path` with `mode` so that readers see the old file or the whole new
/// one, never a part: a temporary file beside it, fsync, rename, fsync of the directory.
pub(crate) fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file path", path.display()))?
        .to_string_lossy();
    let temporary = dir.join(format!(
        ".{file_name}.{}-{}.tmp",
        std::process::id(),
        &crate::link::random_id()[..8]
    ));
    let written = (|| -> std::io::Result<()> {
        // Created with its final mode: the secret is never readable by others, not even
        // between creation and a chmod.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)?;
        // The umask may have narrowed the mode; make it exactly what was asked.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(e).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

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

/// A ring provider, named rather than taken from the process default.
fn ring_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
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

fn read_bounded(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
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
fn load_certs(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
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

fn load_key(path: &Path) -> anyhow::Result<PrivateKeyDer<'static>> {
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

fn load_roots(ca: &Path) -> anyhow::Result<RootCertStore> {
    root_store(load_certs(ca, "CA certificate")?, ca)
}

fn root_store(certs: Vec<CertificateDer<'static>>, path: &Path) -> anyhow::Result<RootCertStore> {
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

// ---------------------------------------------------------------------------------------
// HTTPS server

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
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(TLS_CONNECTIONS_MAX));
    let mut connections = JoinSet::new();
    let warnings = Arc::new(WarnLimiter::new());
    // Logged once per episode of saturation, not once per refused connection.
    let mut saturated = false;
    loop {
        let accepted = tokio::select! {
            _ = stop_requested(&mut shutdown) => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::error!(error = %e, "an HTTPS connection task failed");
                }
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        let (tcp, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: pause instead of spinning.
                tracing::warn!(error = %e, "accepting a TLS connection failed");
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
                    limit = TLS_CONNECTIONS_MAX,
                    "too many connections: closing new ones until some end"
                );
                saturated = true;
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
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    router: axum::Router,
    mut shutdown: watch::Receiver<bool>,
    warnings: Arc<WarnLimiter>,
) {
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
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| match PeerIdentity::from_certificate(cert) {
            Ok(identity) => Some(identity),
            Err(e) => {
                tracing::warn!(%remote, error = %e, "client certificate names no cluster identity: serving it as anonymous");
                None
            }
        });
    let service = hyper_util::service::TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        // Both shapes, so handlers may take `Extension<Option<PeerIdentity>>`,
        // `Option<Extension<PeerIdentity>>` or `Peer`.
        if let Some(identity) = &identity {
            request.extensions_mut().insert(identity.clone());
        }
        request.extensions_mut().insert(identity.clone());
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
        tracing::debug!(%remote, error = %e, "HTTPS connection ended with an error");
    }
}

// ---------------------------------------------------------------------------------------
// HTTPS client between nodes

/// Why a `NodeClient` request failed. Messages do not repeat the URL: callers add it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeClientError {
    /// The request could not be sent as given (not an `https://` URL, bad header).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// No complete answer: connection refused or reset, DNS failure, TLS refused by either
    /// side (the reason then starts with `TLS handshake failed`: a certificate from another
    /// CA, an expired one, a name mismatch), or the timeout passed. The peer may or may not
    /// have acted on the request, as with any network failure.
    #[error("unreachable: {0}")]
    Unreachable(String),
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

/// An HTTPS client for calls between nodes: `https://` only, HTTP/1.1, connections pooled
/// per node, trust and client certificate from the `ClientConfig` it is built with.
#[derive(Clone)]
pub struct NodeClient {
    http: HttpClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for NodeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeClient").finish_non_exhaustive()
    }
}

impl NodeClient {
    /// A client using `config` (from `client_config` or `client_config_ca_only`).
    pub fn new(config: Arc<ClientConfig>) -> NodeClient {
        let mut tls = (*config).clone();
        // hyper-rustls sets ALPN itself and refuses a configuration that already has one.
        tls.alpn_protocols.clear();
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(Duration::from_millis(NODE_CONNECT_TIMEOUT_MS)));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(tcp);
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_millis(NODE_POOL_IDLE_TIMEOUT_MS))
            .pool_max_idle_per_host(NODE_POOL_IDLE_PER_HOST_MAX)
            .build(https);
        NodeClient { http }
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
            NodeClientError::Unreachable(format!("{what} within {} ms", timeout.as_millis()))
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
        if uri.scheme_str() != Some("https") {
            return Err(invalid("only https:// URLs are used between nodes".into()));
        }
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| invalid(format!("{e}")))?;
        request.headers_mut().extend(headers);
        match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            Err(_) => Err(NodeClientError::Unreachable(format!(
                "no response within {} ms",
                timeout.as_millis()
            ))),
            Ok(Err(e)) => Err(request_error(&e)),
            Ok(Ok(response)) => Ok(response),
        }
    }
}

/// Classifies a failure before the response head: a head that is not HTTP is `Protocol`,
/// everything else (connect, TLS, reset) is `Unreachable`.
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
    NodeClientError::Unreachable(reason)
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
        NodeClientError::Unreachable(format!("the response broke off: {reason}"))
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
fn is_rustls_error(error: &(dyn std::error::Error + 'static), depth: usize) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate whose subject is `name`.
    fn cert_with_subject(name: rcgen::DistinguishedName) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = name;
        params.self_signed(&key).unwrap().der().clone()
    }

    fn subject_of(cert: &CertificateDer<'_>) -> Vec<u8> {
        webpki::EndEntityCert::try_from(cert)
            .unwrap()
            .subject()
            .to_vec()
    }

    #[test]
    fn common_name_is_read_from_rcgen_certificates() {
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::OrganizationName, "dcos-rs");
        name.push(rcgen::DnType::CommonName, "master:m1");
        name.push(rcgen::DnType::CountryName, "NL");
        let cert = cert_with_subject(name);
        assert_eq!(certificate_common_name(&cert).unwrap(), "master:m1");
        assert_eq!(
            PeerIdentity::from_certificate(&cert).unwrap(),
            PeerIdentity {
                role: Role::Master,
                name: "m1".into()
            }
        );

        let mut name = rcgen::DistinguishedName::new();
        name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::PrintableString("agent:a-1.b".try_into().unwrap()),
        );
        let cert = cert_with_subject(name);
        let identity = PeerIdentity::from_certificate(&cert).unwrap();
        assert_eq!(
            (identity.role, identity.name.as_str()),
            (Role::Agent, "a-1.b")
        );
    }

    #[test]
    fn subject_without_or_with_unusable_common_name_is_refused() {
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::OrganizationName, "no cn");
        let cert = cert_with_subject(name);
        assert_eq!(
            certificate_common_name(&cert),
            Err(IdentityError::NoCommonName)
        );

        let mut name = rcgen::DistinguishedName::new();
        name.push(
            rcgen::DnType::CommonName,
            rcgen::DnValue::Ia5String("admin:x".try_into().unwrap()),
        );
        let cert = cert_with_subject(name);
        assert_eq!(
            certificate_common_name(&cert),
            Err(IdentityError::CommonNameNotText { tag: 0x16 })
        );

        for (common_name, expected) in [
            ("m1", "is not '<role>:<name>'"),
            ("root:m1", "unknown role 'root'"),
            ("master:", "empty"),
            ("master:../etc", "must start with"),
            ("master:a/b", "only letters"),
            ("master:a:b", "only letters"),
        ] {
            let error = PeerIdentity::from_common_name(common_name).unwrap_err();
            assert!(
                error.to_string().contains(expected),
                "{common_name}: {error}"
            );
        }
        assert!(PeerIdentity::from_common_name(&format!("agent:{}", "a".repeat(65))).is_err());
        assert!(PeerIdentity::from_common_name(&format!("agent:{}", "a".repeat(64))).is_ok());
    }

    #[test]
    fn two_common_names_are_refused() {
        // SET { SEQ { OID cn, UTF8 "a" } } twice.
        let rdn = [
            0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, b'a',
        ];
        let mut name = rdn.to_vec();
        assert_eq!(subject_common_name(&name).unwrap(), "a");
        name.extend_from_slice(&rdn);
        assert_eq!(
            subject_common_name(&name),
            Err(IdentityError::SeveralCommonNames)
        );
    }

    #[test]
    fn malformed_subjects_are_errors() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x31], "truncated length"),
            (&[0x31, 0x80], "indefinite length"),
            (&[0x31, 0x83, 0x01, 0x00, 0x00], "length too large"),
            (&[0x31, 0x81, 0x05], "not minimally encoded"),
            (&[0x31, 0x82, 0x00, 0x80], "not minimally encoded"),
            (&[0x31, 0x05, 0x30], "longer than its input"),
            (&[0x30, 0x00], "not a SET"),
            (&[0x31, 0x00], "empty relative"),
            (&[0x31, 0x02, 0x04, 0x00], "not a SEQUENCE"),
            (&[0x31, 0x04, 0x30, 0x02, 0x04, 0x00], "not an OID"),
            (
                &[
                    0x31, 0x09, 0x30, 0x07, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02,
                ],
                "longer than its input",
            ),
            (
                &[
                    0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x00, 0x00,
                ],
                "bytes after",
            ),
            (
                &[
                    0x31, 0x09, 0x30, 0x07, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x00, 0xff,
                ],
                "high tag",
            ),
            (
                &[
                    0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x01, 0xff,
                ],
                "not UTF-8",
            ),
            (
                &[
                    0x31, 0x0a, 0x30, 0x08, 0x06, 0x03, 0x55, 0x04, 0x03, 0x13, 0x01, b'*',
                ],
                "PrintableString",
            ),
            (&[0x1f, 0x01, 0x00], "high tag"),
        ];
        for (input, expected) in cases {
            let error = subject_common_name(input).unwrap_err().to_string();
            assert!(error.contains(expected), "{input:02x?}: {error}");
        }
        assert_eq!(subject_common_name(&[]), Err(IdentityError::NoCommonName));
        assert!(
            certificate_common_name(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01])).is_err()
        );
    }

    /// Every truncation and every single-byte change of a real subject is handled without a
    /// panic (an error or some name, never a crash).
    #[test]
    fn mangled_subjects_never_panic() {
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::OrganizationName, "dcos-rs");
        name.push(rcgen::DnType::CommonName, "agent:a1");
        let subject = subject_of(&cert_with_subject(name));
        assert_eq!(subject_common_name(&subject).unwrap(), "agent:a1");
        for end in 0..subject.len() {
            let _ = subject_common_name(&subject[..end]);
        }
        for at in 0..subject.len() {
            for byte in [0x00, 0x01, 0x7f, 0x80, 0x81, 0x82, 0xff, 0x31, 0x30, 0x0c] {
                let mut mangled = subject.clone();
                mangled[at] = byte;
                let _ = subject_common_name(&mangled);
            }
        }
    }

    #[test]
    fn sans_are_ip_addresses_or_dns_names() {
        let parsed = parse_sans(&[
            "127.0.0.1".into(),
            "::1".into(),
            "m1.example.com".into(),
            "localhost".into(),
            "127.0.0.1".into(),
        ])
        .unwrap();
        assert_eq!(parsed.len(), 4, "duplicates are dropped: {parsed:?}");
        for bad in [
            "under_score",
            "*.example.com",
            "10.0.0.256",
            &format!("{}.example", "a".repeat(64)),
            "exa mple",
            "",
            "m1..example",
            "-bad-.com",
            "example.com.",
            "ü.example",
        ] {
            let error = parse_sans(&[bad.to_string()]).unwrap_err().to_string();
            assert!(error.contains(&format!("'{bad}'")), "{bad}: {error}");
        }
        let many: Vec<String> = (0..=SANS_MAX).map(|i| format!("n{i}.example")).collect();
        assert!(parse_sans(&many).is_err());
    }

    #[test]
    fn issued_certificates_chain_to_the_ca_and_carry_the_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_ca(&dir.path().join("ca"), false).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&dir.path().join("ca")), 0o700);
        let (cert, key) = issue_cert(
            &dir.path().join("ca"),
            Role::Master,
            "m1",
            &["127.0.0.1".into(), "m1.example.com".into()],
            &dir.path().join("out"),
            30,
        )
        .unwrap();
        assert_eq!(cert, dir.path().join("out/m1.crt"));
        assert_eq!(mode(&key), 0o600);
        let der = load_certs(&cert, "certificate").unwrap().remove(0);
        assert_eq!(
            PeerIdentity::from_certificate(&der).unwrap().to_string(),
            "master:m1"
        );
        let files = TlsFiles {
            ca: ca.cert.clone(),
            cert: cert.clone(),
            key: key.clone(),
        };
        server_config(&files).unwrap();
        client_config(&files).unwrap();
        client_config_ca_only(&ca.cert).unwrap();

        // A key of another certificate is named as such.
        let (_, other_key) = issue_cert(
            &dir.path().join("ca"),
            Role::Agent,
            "a1",
            &[],
            &dir.path().join("out"),
            30,
        )
        .unwrap();
        let mixed = TlsFiles {
            key: other_key,
            ..files.clone()
        };
        let error = format!("{:#}", server_config(&mixed).unwrap_err());
        assert!(
            error.contains("is not the key of the certificate"),
            "{error}"
        );

        // A certificate of another CA is refused at load.
        init_ca(&dir.path().join("other"), false).unwrap();
        let foreign = TlsFiles {
            ca: dir.path().join("other/ca.crt"),
            ..files.clone()
        };
        let error = format!("{:#}", client_config(&foreign).unwrap_err());
        assert!(
            error.contains("is not a valid certificate of the cluster CA"),
            "{error}"
        );

        // Files without what they should hold.
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let error = format!("{:#}", client_config_ca_only(&empty).unwrap_err());
        assert!(error.contains("holds no certificate"), "{error}");
        let no_key = TlsFiles {
            key: empty.clone(),
            ..files.clone()
        };
        let error = format!("{:#}", server_config(&no_key).unwrap_err());
        assert!(error.contains("holds no private key"), "{error}");
        let missing = TlsFiles {
            cert: dir.path().join("missing.crt"),
            ..files
        };
        let error = format!("{:#}", server_config(&missing).unwrap_err());
        assert!(
            error.contains("missing.crt") && error.contains("No such file"),
            "{error}"
        );
    }

    #[test]
    fn issue_cert_refuses_bad_input_and_mismatched_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        init_ca(&ca_dir, false).unwrap();
        let out = dir.path().join("out");
        let issue = |name: &str, days: u32| issue_cert(&ca_dir, Role::Agent, name, &[], &out, days);
        assert!(format!("{:#}", issue("../x", 1).unwrap_err()).contains("invalid name"));
        assert!(format!("{:#}", issue("a1", 0).unwrap_err()).contains("1 to 3650 days"));
        assert!(format!("{:#}", issue("a1", 3651).unwrap_err()).contains("1 to 3650 days"));

        let other = dir.path().join("other");
        init_ca(&other, false).unwrap();
        std::fs::copy(other.join(CA_KEY_FILE), ca_dir.join(CA_KEY_FILE)).unwrap();
        let error = format!("{:#}", issue("a1", 1).unwrap_err());
        assert!(error.contains("does not belong to"), "{error}");

        let error = format!(
            "{:#}",
            issue_cert(&dir.path().join("none"), Role::Agent, "a1", &[], &out, 1).unwrap_err()
        );
        assert!(error.contains("none/ca.crt"), "{error}");
    }
}
