//! The cluster CA (`init_ca`) and the node certificates it issues (`issue_cert`), written
//! atomically with private modes.

use crate::identity::subject_common_name;
use crate::identity::{PeerIdentity, Role};
use crate::pem::{load_certs, read_bounded, ring_provider, root_store};
use anyhow::{anyhow, bail, Context};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
pub(crate) fn parse_sans(sans: &[String]) -> anyhow::Result<Vec<rcgen::SanType>> {
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
pub fn check_issued_by(
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
pub fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> anyhow::Result<()> {
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
        random_bytes::<4>(&ring_provider())?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
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
