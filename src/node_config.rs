//! What the config files of masters and agents share (`master.toml`, `agent.toml`): the
//! `[tls]` and `[auth]` sections and the check of master URLs. Both `master/` and `agent/`
//! build on this; neither imports the other.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// The cluster CA certificate (PEM): the only CA trusted for peers.
    pub ca: PathBuf,
    /// This node's certificate and key (`dcos-rs cluster issue-cert --role master|agent`).
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[auth]` of master.toml and agent.toml. Parsed as optional so that its absence is
/// reported with the key's full name (`auth.tokens_file`) instead of serde's "missing field".
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The tokens file: `sha256:<hex> <name>` per line (`dcos-rs cluster setup` appends to
    /// `<ca-dir>/tokens`). Every API call but `/health` (and `/`, `/ready` on masters) needs
    /// a bearer token whose sha256 is listed.
    pub tokens_file: Option<PathBuf>,
}

impl AuthSection {
    /// `auth.tokens_file`, or why it is missing.
    pub fn tokens_file(&self) -> Result<&Path, String> {
        self.tokens_file.as_deref().ok_or_else(|| {
            "auth.tokens_file: required: add `[auth]` with `tokens_file = \"tokens\"`, the file of API token hashes that `dcos-rs cluster setup` writes next to ca.crt".to_string()
        })
    }

    /// Reads the tokens file; errors start with `auth.tokens_file`.
    pub fn load_tokens(&self) -> Result<crate::auth::TokenSet, String> {
        crate::auth::TokenSet::load(self.tokens_file()?)
            .map_err(|e| format!("auth.tokens_file: {e}"))
    }

    /// Makes a relative tokens file relative to `base` (the config file's directory).
    pub fn relative_to(&mut self, base: &Path) {
        if let Some(path) = &mut self.tokens_file {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// Masters talk HTTPS only: an `https://host:port` URL without a path.
/// The host of an `http(s)://` URL, without brackets or port; `None` when the URL has no
/// host or carries user information (`user@host`: what the URL seems to name and where it
/// connects would differ).
pub fn url_host(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return None;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then_some(host)
}

pub fn check_url(key: &str, url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(format!(
            "{key}: {url:?} must start with https:// (masters only speak HTTPS)"
        ));
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') || authority.contains('?') {
        return Err(format!(
            "{key}: {url:?} must be https://host:port without a path"
        ));
    }
    Ok(())
}
