//! Image reference parsing and normalization with docker's rules: `busybox`,
//! `busybox:latest` and `docker.io/library/busybox:latest` are the same reference.
//!
//! Pure string handling: no lookups, no registries. The grammar is a slightly simplified form
//! of distribution/reference (no IPv6 registry hosts).

use super::blob::Digest;
use super::ImageError;
use std::fmt;

const DEFAULT_DOMAIN: &str = "docker.io";
/// Older spelling of the default registry that docker still accepts.
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
const OFFICIAL_REPOSITORY_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// Docker's limit on a full repository name (domain and path).
const NAME_MAX_BYTES: usize = 255;
const TAG_MAX_BYTES: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    /// `name:tag`, with the default tag filled in.
    Tagged { name: String, tag: String },
    /// `name@sha256:...` (a tag written before the digest is dropped, as docker does).
    Pinned { name: String, digest: Digest },
    /// A bare `sha256:...` digest of a config or manifest.
    Digest(Digest),
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tagged { name, tag } => write!(f, "{name}:{tag}"),
            Reference::Pinned { name, digest } => write!(f, "{name}@{digest}"),
            Reference::Digest(digest) => write!(f, "{digest}"),
        }
    }
}

/// Parses and normalizes `text`.
pub(crate) fn parse(text: &str) -> Result<Reference, ImageError> {
    let invalid = |reason: &str| ImageError::InvalidReference {
        reference: text.to_string(),
        reason: reason.to_string(),
    };
    if text.is_empty() {
        return Err(invalid("empty reference"));
    }
    if text.starts_with("sha256:") {
        return Digest::parse(text)
            .map(Reference::Digest)
            .ok_or_else(|| invalid("a digest is sha256: followed by 64 lowercase hex digits"));
    }
    let (rest, digest) = match text.split_once('@') {
        Some((rest, digest)) => {
            let digest = Digest::parse(digest).ok_or_else(|| {
                invalid("a digest is sha256: followed by 64 lowercase hex digits")
            })?;
            (rest, Some(digest))
        }
        None => (text, None),
    };
    // The tag is after the last ':' that comes after the last '/' ("host:5000/a" has no tag).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    let name = normalize_name(name).map_err(|reason| invalid(&reason))?;
    if let Some(tag) = tag {
        check_tag(tag).map_err(|reason| invalid(&reason))?;
    }
    Ok(match (digest, tag) {
        (Some(digest), _) => Reference::Pinned { name, digest },
        (None, tag) => Reference::Tagged {
            name,
            tag: tag.unwrap_or(DEFAULT_TAG).to_string(),
        },
    })
}

fn normalize_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("empty repository name".to_string());
    }
    // Like docker: the first component is a registry host if it looks like one.
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DEFAULT_DOMAIN, name),
    };
    check_domain(domain)?;
    let domain = if domain == LEGACY_DEFAULT_DOMAIN {
        DEFAULT_DOMAIN
    } else {
        domain
    };
    for component in path.split('/') {
        check_path_component(component)?;
    }
    let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
        format!("{OFFICIAL_REPOSITORY_PREFIX}{path}")
    } else {
        path.to_string()
    };
    let full = format!("{domain}/{path}");
    if full.len() > NAME_MAX_BYTES {
        return Err(format!(
            "repository name is longer than {NAME_MAX_BYTES} bytes"
        ));
    }
    Ok(full)
}

fn check_domain(domain: &str) -> Result<(), String> {
    let (host, port) = match domain.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(format!("invalid registry host {domain:?}"))
    }
}

/// `[a-z0-9]+` separated by `.`, `_`, `__` or runs of `-`.
fn check_path_component(component: &str) -> Result<(), String> {
    if component.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("repository name must be lowercase".to_string());
    }
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let valid_chars = bytes
        .iter()
        .all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-'));
    let ends_ok =
        bytes.first().is_some_and(|&b| alnum(b)) && bytes.last().is_some_and(|&b| alnum(b));
    let separators_ok = component
        .split(|c: char| c.is_ascii_alphanumeric())
        .filter(|sep| !sep.is_empty())
        .all(|sep| sep == "." || sep == "_" || sep == "__" || sep.chars().all(|c| c == '-'));
    if valid_chars && ends_ok && separators_ok {
        Ok(())
    } else {
        Err(format!("invalid repository name component {component:?}"))
    }
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let valid = tag.len() <= TAG_MAX_BYTES
        && tag.chars().next().is_some_and(word)
        && tag.chars().all(|c| word(c) || c == '.' || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!("invalid tag {tag:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        let actual = match parse(input) {
            Ok(reference) => reference.to_string(),
            Err(e) => format!("error: {e}"),
        };
        assert_eq!(actual, expected, "parsing {input:?}");
    }

    #[test]
    fn short_names_normalize_to_docker_hub_library() {
        check("busybox", "docker.io/library/busybox:latest");
        check("busybox:latest", "docker.io/library/busybox:latest");
        check(
            "docker.io/library/busybox:latest",
            "docker.io/library/busybox:latest",
        );
        check(
            "index.docker.io/library/busybox",
            "docker.io/library/busybox:latest",
        );
        check("library/busybox:1.36", "docker.io/library/busybox:1.36");
        check("user/app:v1.2-rc_3", "docker.io/user/app:v1.2-rc_3");
    }

    #[test]
    fn registry_hosts_and_ports_are_kept() {
        check("localhost/app", "localhost/app:latest");
        check("localhost:5000/app:1", "localhost:5000/app:1");
        check("quay.io/coreos/etcd:v3", "quay.io/coreos/etcd:v3");
        check(
            "registry.example.com:443/a/b/c",
            "registry.example.com:443/a/b/c:latest",
        );
    }

    #[test]
    fn digests_pin_and_drop_tags() {
        let hex = "0123456789abcdef".repeat(4);
        check(&format!("sha256:{hex}"), &format!("sha256:{hex}"));
        check(
            &format!("busybox@sha256:{hex}"),
            &format!("docker.io/library/busybox@sha256:{hex}"),
        );
        check(
            &format!("busybox:1@sha256:{hex}"),
            &format!("docker.io/library/busybox@sha256:{hex}"),
        );
    }

    #[test]
    fn malformed_references_are_refused() {
        check("", "error: invalid image reference \"\": empty reference");
        check(
            "Busybox",
            "error: invalid image reference \"Busybox\": repository name must be lowercase",
        );
        check(
            "busybox:",
            "error: invalid image reference \"busybox:\": invalid tag \"\"",
        );
        check(
            "busybox@sha256:abc",
            "error: invalid image reference \"busybox@sha256:abc\": a digest is sha256: followed by 64 lowercase hex digits",
        );
        check(
            "../etc",
            "error: invalid image reference \"../etc\": invalid registry host \"..\"",
        );
        check(
            "a/../b",
            "error: invalid image reference \"a/../b\": invalid repository name component \"..\"",
        );
        check(
            "a//b",
            "error: invalid image reference \"a//b\": invalid repository name component \"\"",
        );
        check(
            "-a",
            "error: invalid image reference \"-a\": invalid repository name component \"-a\"",
        );
    }
}
