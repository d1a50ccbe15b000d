//! Identities read from certificates, CA creation and certificate issuing.

use crate::ca::*;
use crate::identity::*;
use rustls_pki_types::CertificateDer;

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
    assert!(certificate_common_name(&CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01])).is_err());
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
