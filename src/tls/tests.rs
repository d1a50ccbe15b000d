//! Certificates issued by the cluster CA load into the node's rustls configurations, and
//! mismatched or foreign files are refused with the file named.

use super::*;
use dcos_pki::load_certs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

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
