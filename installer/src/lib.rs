//! The installer: `cluster.yaml` (inventory), the facts a probe reads on a node and the
//! preflight checks on them, the files a node gets (configs, units), the install plan, and
//! the SSH client that carries the plan out. Everything but `ssh` is pure: the binary's
//! `install` command (src/install/) is the shell that connects, runs and reports.

pub mod facts;
pub mod inventory;
pub mod plan;
pub mod preflight;
pub mod render;
pub mod ssh;

/// sha256 of `bytes` in lower-case hex, as `sha256sum` prints it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
