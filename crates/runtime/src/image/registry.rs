//! The OCI distribution API's vocabulary for a pull, without any I/O: the URLs of a
//! reference's manifests and blobs, the `Accept` header, `WWW-Authenticate` challenges, reading
//! a manifest or index (and choosing this host's entry with the same rule as an import), and
//! the OCI image layout a pull writes for `ImageStore::import_staged_layout`.
//!
//! Deliberately absent: HTTP, TLS, tokens and credentials (the agent's async client does the
//! network part and asks this module what to fetch), schema 1 manifests (refused), pushes.

use super::archive::{
    self, OciIndex, OciManifest, CONTAINERD_NAME_ANNOTATION, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST,
    OCI_INDEX, OCI_MANIFEST,
};
use super::blob::Digest;
use super::reference::{self, Reference};
use super::ImageError;
use serde::Deserialize;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

/// Where `docker.io` images are served from.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";
const DOCKER_HUB_DOMAIN: &str = "docker.io";
/// Every manifest type a pull understands, indexes first: a registry then answers a
/// multi-platform tag with its index rather than converting it.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_V1: &str = "application/vnd.docker.distribution.manifest.v1+json";
const DOCKER_MANIFEST_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What one pull fetches: parsed from a reference such as `busybox`,
/// `127.0.0.1:5000/team/app:v1` or `quay.io/x/y@sha256:...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullTarget {
    /// Normalized repository name, e.g. `docker.io/library/busybox`.
    pub name: String,
    /// Host (and port) serving it: `registry-1.docker.io` for `docker.io`.
    pub registry: String,
    /// Repository path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// The tag, or the digest when pulling by digest.
    pub version: PullVersion,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PullVersion {
    Tag(String),
    /// The manifest (or index) fetched must hash to this digest.
    Digest(Digest),
}

impl PullTarget {
    /// Parses and normalizes a reference with docker's rules (default registry `docker.io`,
    /// `library/` for official images, tag `latest`). A bare `sha256:...` names no repository
    /// and is refused.
    pub fn parse(text: &str) -> Result<PullTarget, ImageError> {
        let (name, version) = match reference::parse(text)? {
            Reference::Tagged { name, tag } => (name, PullVersion::Tag(tag)),
            Reference::Pinned { name, digest } => (name, PullVersion::Digest(digest)),
            Reference::Digest(_) => {
                return Err(ImageError::InvalidReference {
                    reference: text.to_string(),
                    reason: "a pull needs a repository name, e.g. name@sha256:...".to_string(),
                })
            }
        };
        let (domain, repository) = name
            .split_once('/')
            .expect("a normalized name always has a domain");
        let registry = if domain == DOCKER_HUB_DOMAIN {
            DOCKER_HUB_REGISTRY
        } else {
            domain
        };
        Ok(PullTarget {
            registry: registry.to_string(),
            repository: repository.to_string(),
            name,
            version,
        })
    }

    /// `https://<registry>`.
    pub fn base_url(&self) -> String {
        format!("https://{}", self.registry)
    }

    /// The URL of a manifest, by tag or digest.
    pub fn manifest_url(&self, tag_or_digest: &str) -> String {
        format!(
            "{}/v2/{}/manifests/{tag_or_digest}",
            self.base_url(),
            self.repository
        )
    }

    /// The URL of the manifest this target names.
    pub fn top_manifest_url(&self) -> String {
        match &self.version {
            PullVersion::Tag(tag) => self.manifest_url(tag),
            PullVersion::Digest(digest) => self.manifest_url(&digest.to_string()),
        }
    }

    pub fn blob_url(&self, digest: &Digest) -> String {
        format!("{}/v2/{}/blobs/{digest}", self.base_url(), self.repository)
    }

    /// The token scope to ask for when a challenge names none.
    pub fn pull_scope(&self) -> String {
        format!("repository:{}:pull", self.repository)
    }

    /// The name the image is stored under: `name:tag`; `None` when pulled by digest (the
    /// image then resolves as `name@sha256:...`).
    pub fn store_name(&self) -> Option<String> {
        match &self.version {
            PullVersion::Tag(tag) => Some(format!("{}:{tag}", self.name)),
            PullVersion::Digest(_) => None,
        }
    }
}

impl fmt::Display for PullTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            PullVersion::Tag(tag) => write!(f, "{}:{tag}", self.name),
            PullVersion::Digest(digest) => write!(f, "{}@{digest}", self.name),
        }
    }
}

/// A `WWW-Authenticate` challenge the client can answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Get a token from `realm` (with basic credentials if we have some), then retry with it.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Retry with basic credentials.
    Basic,
}

/// Reads a `WWW-Authenticate` header (`Bearer realm="...",service="...",scope="..."` or
/// `Basic realm="..."`, several challenges possibly in one header). A Bearer challenge is
/// preferred; `None` when no challenge is one we can answer.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = split_challenges(header)?;
    let bearer = challenges.iter().find_map(|(scheme, params)| {
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let param = |key: &str| {
            params
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v.clone())
        };
        Some(Challenge::Bearer {
            realm: param("realm")?,
            service: param("service"),
            scope: param("scope"),
        })
    });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .then_some(Challenge::Basic)
    })
}

type AuthParams = Vec<(String, String)>;

/// RFC 7235: `scheme param=value, param="quoted \" value", other-scheme ...`. `None` if the
/// header is malformed.
fn split_challenges(header: &str) -> Option<Vec<(String, AuthParams)>> {
    let mut challenges: Vec<(String, AuthParams)> = Vec::new();
    let mut rest = header.trim_start();
    let is_token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~/".contains(c);
    while !rest.is_empty() {
        let token_end = rest.find(|c| !is_token_char(c)).unwrap_or(rest.len());
        if token_end == 0 {
            return None;
        }
        let token = &rest[..token_end];
        let after = rest[token_end..].trim_start();
        if let Some(value_start) = after.strip_prefix('=') {
            // An auth-param of the current challenge.
            let value_start = value_start.trim_start();
            let (value, remainder) = if let Some(quoted) = value_start.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => value.push(chars.next()?.1),
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &quoted[end?..])
            } else {
                // Not a token by the RFC, but registries send unquoted URLs: up to a comma.
                let end = value_start
                    .find(|c: char| c == ',' || c.is_whitespace())
                    .unwrap_or(value_start.len());
                (value_start[..end].to_string(), &value_start[end..])
            };
            challenges
                .last_mut()?
                .1
                .push((token.to_ascii_lowercase(), value));
            rest = remainder.trim_start();
            rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
        } else {
            // A new challenge's scheme.
            challenges.push((token.to_string(), Vec::new()));
            rest = after.strip_prefix(',').unwrap_or(after).trim_start();
        }
    }
    (!challenges.is_empty()).then_some(challenges)
}

/// The query string of a token request: `?service=...&scope=...`, percent-encoded.
pub fn token_query(service: Option<&str>, scope: &str) -> String {
    let mut query = String::from("?");
    if let Some(service) = service {
        query.push_str("service=");
        query.push_str(&percent_encode(service));
        query.push('&');
    }
    query.push_str("scope=");
    query.push_str(&percent_encode(scope));
    query
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `Authorization` value for basic credentials.
pub fn basic_authorization(username: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64(format!("{username}:{password}").as_bytes())
    )
}

/// Standard base64 with padding (RFC 4648), for basic credentials (and the etcd benchmark).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A token endpoint's answer (`token`, or OAuth2's `access_token`).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
}

/// The bearer token in a token endpoint's JSON answer.
pub fn parse_token_response(bytes: &[u8]) -> Result<String, ImageError> {
    let response: TokenResponse = serde_json::from_slice(bytes)
        .map_err(|e| ImageError::InvalidManifest(format!("token response: {e}")))?;
    response
        .token
        .or(response.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ImageError::InvalidManifest("token response has no token".to_string()))
}

/// A blob named by a manifest: what to fetch and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobDescriptor {
    pub media_type: Option<String>,
    pub digest: Digest,
    pub size_bytes: u64,
}

/// A manifest as fetched.
#[derive(Debug)]
pub enum Manifest {
    /// An OCI index or docker manifest list.
    Index(ImageIndex),
    /// An OCI image manifest or docker schema 2 manifest.
    Image(ImageManifest),
}

impl Manifest {
    pub fn media_type(&self) -> &str {
        match self {
            Manifest::Index(index) => &index.media_type,
            Manifest::Image(image) => &image.media_type,
        }
    }
}

#[derive(Debug)]
pub struct ImageIndex {
    pub media_type: String,
    entries: OciIndex,
}

impl ImageIndex {
    /// The manifest for `os`/`architecture` (the first entry with exactly that platform, as an
    /// import chooses).
    pub fn for_platform(
        &self,
        os: &str,
        architecture: &str,
    ) -> Result<Option<BlobDescriptor>, ImageError> {
        archive::pick_platform(&self.entries.manifests, os, architecture)
            .map(descriptor)
            .transpose()
    }

    /// The manifest for this host: linux on this host's architecture.
    pub fn for_host(&self) -> Result<Option<BlobDescriptor>, ImageError> {
        self.for_platform("linux", host_architecture())
    }

    /// `os/architecture` of every entry that has a platform, for error messages.
    pub fn platforms(&self) -> Vec<String> {
        self.entries
            .manifests
            .iter()
            .filter_map(|d| d.platform.as_ref())
            .map(|p| format!("{}/{}", p.os, p.architecture))
            .collect()
    }
}

#[derive(Debug)]
pub struct ImageManifest {
    pub media_type: String,
    pub config: BlobDescriptor,
    pub layers: Vec<BlobDescriptor>,
}

/// This host's platform as registries spell it (`amd64`, `arm64`, ...).
pub fn host_architecture() -> &'static str {
    archive::host_architecture()
}

/// Just enough of any manifest to tell what it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestHead {
    #[serde(default)]
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

/// Reads a manifest. Its type comes from its own `mediaType` field, else from the response's
/// `Content-Type`, else from its shape; schema 1 and unknown types are refused.
pub fn parse_manifest(content_type: Option<&str>, bytes: &[u8]) -> Result<Manifest, ImageError> {
    let invalid = |reason: String| ImageError::InvalidManifest(reason);
    let head: ManifestHead =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a JSON manifest: {e}")))?;
    let content_type = content_type
        .map(|c| c.split(';').next().unwrap_or("").trim())
        .filter(|c| !c.is_empty() && *c != "application/json");
    let media_type = match (head.media_type.as_deref(), content_type) {
        (Some(own), _) => own.to_string(),
        (None, Some(header)) => header.to_string(),
        (None, None) if head.manifests.is_some() => OCI_INDEX.to_string(),
        (None, None) if head.config.is_some() => OCI_MANIFEST.to_string(),
        (None, None) => return Err(invalid("it has no mediaType and no known shape".into())),
    };
    if head.schema_version == Some(1)
        || media_type == DOCKER_MANIFEST_V1
        || media_type == DOCKER_MANIFEST_V1_SIGNED
    {
        return Err(invalid(
            "docker schema 1 manifests are not supported (push the image again with a current docker, podman or skopeo)"
                .into(),
        ));
    }
    match media_type.as_str() {
        OCI_INDEX | DOCKER_MANIFEST_LIST => {
            let entries: OciIndex =
                serde_json::from_slice(bytes).map_err(|e| invalid(format!("index: {e}")))?;
            Ok(Manifest::Index(ImageIndex {
                media_type,
                entries,
            }))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let manifest: OciManifest = serde_json::from_slice(bytes)
                .map_err(|e| invalid(format!("image manifest: {e}")))?;
            Ok(Manifest::Image(ImageManifest {
                media_type,
                config: descriptor(&manifest.config)?,
                layers: manifest
                    .layers
                    .iter()
                    .map(descriptor)
                    .collect::<Result<_, _>>()?,
            }))
        }
        other => Err(invalid(format!(
            "media type {other:?} is not an image manifest or index"
        ))),
    }
}

fn descriptor(d: &archive::Descriptor) -> Result<BlobDescriptor, ImageError> {
    Ok(BlobDescriptor {
        media_type: d.media_type.clone(),
        digest: Digest::parse(&d.digest).ok_or_else(|| {
            ImageError::InvalidManifest(format!(
                "{:?} is not a sha256 digest (only sha256 is supported)",
                d.digest
            ))
        })?,
        size_bytes: d.size,
    })
}

/// Where a pull writes the blob `digest` inside an OCI layout directory.
pub fn layout_blob_path(layout: &Path, digest: &Digest) -> PathBuf {
    layout.join("blobs/sha256").join(digest.hex())
}

/// Creates the skeleton of an OCI layout in `layout` (an existing, empty directory).
pub fn prepare_layout(layout: &Path) -> Result<(), ImageError> {
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|source| ImageError::Io {
        context: format!("creating {}", blobs.display()),
        source,
    })
}

/// Finishes an OCI layout whose blobs are written: `oci-layout`, and `index.json` pointing at
/// the manifest (or index) fetched first, named `name` (a `name:tag`) if given.
pub fn write_layout_index(
    layout: &Path,
    top: &BlobDescriptor,
    name: Option<&str>,
) -> Result<(), ImageError> {
    let mut entry = serde_json::json!({
        "mediaType": top.media_type,
        "digest": top.digest.to_string(),
        "size": top.size_bytes,
    });
    if let Some(name) = name {
        entry["annotations"] = serde_json::json!({ CONTAINERD_NAME_ANNOTATION: name });
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry],
    });
    let files = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        (
            "index.json",
            serde_json::to_vec(&index).expect("json values serialize"),
        ),
    ];
    for (file, bytes) in files {
        let path = layout.join(file);
        fs::write(&path, bytes).map_err(|source| ImageError::Io {
            context: format!("writing {}", path.display()),
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_target(input: &str, manifest_url: &str, store_name: Option<&str>) {
        let target = PullTarget::parse(input).unwrap();
        assert_eq!(target.top_manifest_url(), manifest_url, "{input}");
        assert_eq!(target.store_name().as_deref(), store_name, "{input}");
    }

    #[test]
    fn references_map_to_registry_urls() {
        check_target(
            "busybox",
            "https://registry-1.docker.io/v2/library/busybox/manifests/latest",
            Some("docker.io/library/busybox:latest"),
        );
        check_target(
            "index.docker.io/user/app:1.2",
            "https://registry-1.docker.io/v2/user/app/manifests/1.2",
            Some("docker.io/user/app:1.2"),
        );
        check_target(
            "127.0.0.1:5000/team/app:v1",
            "https://127.0.0.1:5000/v2/team/app/manifests/v1",
            Some("127.0.0.1:5000/team/app:v1"),
        );
        let hex = "ab".repeat(32);
        check_target(
            &format!("quay.io/a/b:ignored@sha256:{hex}"),
            &format!("https://quay.io/v2/a/b/manifests/sha256:{hex}"),
            None,
        );
        let target = PullTarget::parse("localhost:5000/app").unwrap();
        assert_eq!(target.repository, "app");
        assert_eq!(target.pull_scope(), "repository:app:pull");
        assert_eq!(
            target.blob_url(&Digest::parse(&format!("sha256:{hex}")).unwrap()),
            format!("https://localhost:5000/v2/app/blobs/sha256:{hex}")
        );
        assert_eq!(target.to_string(), "localhost:5000/app:latest");
        assert!(PullTarget::parse(&format!("sha256:{hex}")).is_err());
        assert!(PullTarget::parse("UPPER").is_err());
    }

    #[test]
    fn bearer_and_basic_challenges_are_read() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            })
        );
        // Spaces, unquoted values, escapes, commas inside quotes, parameter names in any case.
        assert_eq!(
            parse_challenge(
                r#"bearer  Realm=https://r/t , scope="repository:a:pull,push", service="s\"q""#
            ),
            Some(Challenge::Bearer {
                realm: "https://r/t".into(),
                service: Some("s\"q".into()),
                scope: Some("repository:a:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        // Bearer wins over Basic when a registry offers both.
        assert!(matches!(
            parse_challenge(r#"Basic realm="x", Bearer realm="https://t""#),
            Some(Challenge::Bearer { .. })
        ));
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge(r#"Bearer service="no realm""#), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn token_requests_and_basic_credentials_are_encoded() {
        assert_eq!(
            token_query(
                Some("registry.docker.io"),
                "repository:library/busybox:pull"
            ),
            "?service=registry.docker.io&scope=repository%3Alibrary%2Fbusybox%3Apull"
        );
        assert_eq!(token_query(None, "a b"), "?scope=a%20b");
        // RFC 4648 test vectors, then a typical credential.
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected, "{input}");
        }
        assert_eq!(basic_authorization("user", "pass"), "Basic dXNlcjpwYXNz");
        assert_eq!(parse_token_response(br#"{"token":"t1"}"#).unwrap(), "t1");
        assert_eq!(
            parse_token_response(br#"{"access_token":"t2","expires_in":300}"#).unwrap(),
            "t2"
        );
        assert!(parse_token_response(br#"{"token":""}"#).is_err());
    }

    fn hex_digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn the_index_entry_for_the_platform_is_chosen() {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex_digest('a'),
                 "size": 1, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex_digest('b'),
                 "size": 2, "platform": {"os": "unknown", "architecture": "unknown"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex_digest('c'),
                 "size": 3, "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": hex_digest('d'),
                 "size": 4, "platform": {"os": "linux", "architecture": "amd64"}},
            ],
        });
        let Manifest::Index(index) =
            parse_manifest(None, &serde_json::to_vec(&index).unwrap()).unwrap()
        else {
            panic!("an index");
        };
        let chosen = index.for_platform("linux", "amd64").unwrap().unwrap();
        assert_eq!(chosen.digest.to_string(), hex_digest('c'));
        assert_eq!(chosen.size_bytes, 3);
        let arm = index.for_platform("linux", "arm64").unwrap().unwrap();
        assert_eq!(arm.digest.to_string(), hex_digest('a'));
        assert_eq!(index.for_platform("linux", "s390x").unwrap(), None);
        assert_eq!(
            index.platforms(),
            [
                "linux/arm64",
                "unknown/unknown",
                "linux/amd64",
                "linux/amd64"
            ]
        );
    }

    #[test]
    fn manifest_types_come_from_the_body_then_the_header_then_the_shape() {
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": hex_digest('1'), "size": 10},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": hex_digest('2'), "size": 20}],
        });
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let parsed = parse_manifest(Some(DOCKER_MANIFEST), &bytes).unwrap();
        assert_eq!(parsed.media_type(), DOCKER_MANIFEST);
        let Manifest::Image(image) = parsed else {
            panic!("an image manifest");
        };
        assert_eq!(image.config.digest.to_string(), hex_digest('1'));
        assert_eq!(image.layers.len(), 1);
        assert_eq!(image.layers[0].size_bytes, 20);
        // No header, no mediaType: the shape says manifest.
        assert_eq!(
            parse_manifest(None, &bytes).unwrap().media_type(),
            OCI_MANIFEST
        );
        // `application/json` says nothing.
        assert_eq!(
            parse_manifest(Some("application/json; charset=utf-8"), &bytes)
                .unwrap()
                .media_type(),
            OCI_MANIFEST
        );

        let schema1 = br#"{"schemaVersion":1,"name":"x","tag":"latest","fsLayers":[]}"#;
        let error = parse_manifest(Some(DOCKER_MANIFEST_V1_SIGNED), schema1).unwrap_err();
        assert!(error.to_string().contains("schema 1"), "{error}");
        let error = parse_manifest(Some("text/html"), b"{}").unwrap_err();
        assert!(error.to_string().contains("text/html"), "{error}");
        let bad_digest = br#"{"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "config":{"digest":"md5:abc","size":1},"layers":[]}"#;
        assert!(parse_manifest(None, bad_digest).is_err());
    }
}
