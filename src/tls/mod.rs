//! TLS between the nodes of a cluster and towards its users: rustls configurations that
//! trust only the cluster CA (`configs`), an HTTPS server that tells handlers who called
//! (`server`), and HTTPS clients (`client`: `NodeClient` between nodes, and the one
//! connector builder every HTTPS client of the binary uses). Identities, the CA and
//! certificate issuing are the `dcos-pki` crate's (re-exported here).
//!
//! Deliberately absent: reloading certificates without a restart, HTTP/2, and any
//! authorization decision: this module says who the peer is, callers decide what it may do.

pub mod client;
pub mod configs;
pub mod server;

pub use client::{https_connector, NodeClient, NodeClientError, NODE_CONNECT_TIMEOUT_MS};
pub use configs::{
    agent_client_config_ca_only, client_config, client_config_ca_only, client_config_trusting_none,
    master_to_agent_client_config, probe_client_config, server_config, TlsFiles,
};
pub use dcos_pki::{
    certificate_common_name, check_node_name, init_ca, issue_cert, subject_common_name,
    write_atomically, CaPaths, IdentityError, PeerIdentity, Role, CA_CERT_FILE, CA_KEY_FILE,
    CA_VALID_DAYS, CERT_VALID_DAYS_DEFAULT, CERT_VALID_DAYS_MAX, NODE_NAME_MAX_CHARS, SANS_MAX,
};
pub use server::{
    connections_max, open_file_limit, peer_certificate, peer_of, raise_open_file_limit, serve,
    serve_tls, Peer, PeerCertificate, CLIENT_CONNECTIONS_MAX, HTTP_HEADER_READ_TIMEOUT_MS,
    SHUTDOWN_DRAIN_TIMEOUT_MS, TLS_CONNECTIONS_MAX, TLS_HANDSHAKE_TIMEOUT_MS,
};

#[cfg(test)]
mod tests;
