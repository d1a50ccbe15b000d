//! dcos-rs: wiring and I/O shells around the pure core. The binary's `main` is thin; this
//! library holds the master, the agent, `dcos-rs up`, the CLI and the HTTP client so the
//! integration tests drive the same code.

pub mod agent;
pub mod auth;
pub mod cli;
pub mod dashboard;
pub mod frameworks;
pub mod http_guard;
pub mod http_util;
pub mod install;
pub mod link;
pub mod master;
pub mod node_config;
pub mod tls;
pub mod up;

/// This build: the package version and the first 12 hex digits of the sha256 of the running
/// executable, e.g. `0.1.0+3f9a1c0b7d2e`. Two binaries with the same version number but a
/// different build tell apart, which upgrades rely on. Computed once (a read of the
/// executable: under a second); `0.1.0+unknown` if it cannot be read.
pub fn build_version() -> &'static str {
    BUILD_VERSION.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let digest = std::env::current_exe()
            .and_then(std::fs::File::open)
            .and_then(|mut file| {
                let mut hasher = Sha256::new();
                std::io::copy(&mut file, &mut hasher)?;
                Ok(hasher.finalize())
            });
        match digest {
            Ok(digest) => {
                let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
                format!("{}+{hex}", env!("CARGO_PKG_VERSION"))
            }
            Err(_) => format!("{}+unknown", env!("CARGO_PKG_VERSION")),
        }
    })
}

static BUILD_VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// `build_version` if it is known yet, without reading the executable.
pub fn build_version_if_known() -> Option<&'static str> {
    BUILD_VERSION.get().map(String::as_str)
}

/// Starts computing `build_version` on a thread of its own (servers call it at start, so
/// their status answers never wait for it).
pub fn prefetch_build_version() {
    std::thread::spawn(|| {
        build_version();
    });
}
