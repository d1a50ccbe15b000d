//! Who a certificate's holder is: `Role` and name, encoded as the subject's Common Name
//! `<role>:<name>`, and the strict DER reading of that name.

use crate::ca::NODE_NAME_MAX_CHARS;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

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

/// The serial number of a DER certificate, as lowercase hex (what a revocation names).
/// The certificate is parsed, not verified.
pub fn certificate_serial(cert: &CertificateDer<'_>) -> Result<String, IdentityError> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| IdentityError::Certificate {
        reason: e.to_string(),
    })?;
    Ok(parsed.serial().iter().map(|b| format!("{b:02x}")).collect())
}

/// True when the certificate's subject alternative names cover `host` (a DNS name or an IP
/// address, as in a URL).
pub fn certificate_names_host(cert: &CertificateDer<'_>, host: &str) -> bool {
    let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let Ok(name) = rustls_pki_types::ServerName::try_from(host) else {
        return false;
    };
    parsed.verify_is_valid_for_subject_name(&name).is_ok()
}
