//! Reads an image archive in one streaming pass, then plans the images in it.
//!
//! Staging: the archive (a `docker save` tarball or an OCI image-layout tarball, plain or
//! gzip'd) is read once; a few small metadata files are kept in memory (bounded), every other
//! regular file is copied into a private staging directory while its sha256 is computed, so a
//! multi-GB archive costs disk, not memory. Links inside the archive (old `docker save`
//! versions link duplicate layers) are kept as aliases.
//!
//! Planning: `manifest.json` (docker) or `index.json` (OCI) is read and every blob it names is
//! checked against its digest: OCI blobs by their name, docker configs by their file name when
//! it is a digest. Layer contents are checked against the config's `diff_ids` later, while they
//! are unpacked (`unpack`), because that needs decompression.
//!
//! An OCI layout may also be a directory (`stage_dir`): a user's directory is copied, a
//! layout written by a registry pull into the store's own staging area is moved.
//!
//! Deliberately absent: writing to the store (the caller commits), network access (a pull
//! writes an OCI layout, `registry`), foreign (non-distributable) layers, platforms other than
//! linux on the host's architecture.

use super::blob::{
    copy_hashing, open_decompressed, CopyError, Digest, HashingReader, STREAM_BUFFER_BYTES,
};
use super::reference::{self, Reference};
use super::{ImageConfig, ImageError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Largest metadata JSON (manifest.json, index.json, manifests, image configs) read into
/// memory. Real ones are a few KiB; a config with a long history stays well below this.
pub const MAX_JSON_BYTES: u64 = 4 * 1024 * 1024;
/// Most members in one archive (each costs a map entry while importing).
const MAX_ARCHIVE_MEMBERS: usize = 100_000;
/// Most layers in one image (docker itself stops at 127).
const MAX_LAYERS: usize = 256;
/// Most images in one archive.
const MAX_IMAGES: usize = 1_024;
/// Deepest chain of image indexes followed from index.json.
const MAX_INDEX_DEPTH: usize = 4;
/// Most link hops followed when a member name is a link to another member.
const MAX_LINK_HOPS: usize = 8;
/// Longest member name accepted.
const MAX_MEMBER_NAME_BYTES: usize = 4_096;
/// Members kept in memory rather than staged on disk. Each is bounded by `MAX_JSON_BYTES`.
const METADATA_MEMBERS: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];

pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(crate) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(crate) const DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
/// Full image name as written by containerd and docker >= 25 (`docker.io/library/x:tag`).
pub(crate) const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// OCI's ref name: a tag (`latest`) or, from some tools, a whole reference (`busybox:1`).
const OCI_REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// A member of the archive copied to the staging directory.
#[derive(Debug, Clone)]
pub(crate) struct StagedFile {
    pub(crate) path: PathBuf,
    /// sha256 of the bytes as stored (compressed, for a compressed layer).
    pub(crate) digest: Digest,
    pub(crate) size_bytes: u64,
}

/// The archive after one pass: metadata in memory, everything else on disk.
pub(crate) struct StagedArchive {
    /// Human name of the archive, for messages.
    label: String,
    files: BTreeMap<String, StagedFile>,
    /// Member name -> member it links to (already resolved to an archive-root path).
    links: BTreeMap<String, String>,
    metadata: BTreeMap<String, Vec<u8>>,
}

/// One image found in the archive, with every blob located and checked.
#[derive(Debug)]
pub(crate) struct PlannedImage {
    /// Normalized `name:tag` references; empty for an untagged image.
    pub(crate) names: Vec<String>,
    pub(crate) config_blob: StagedFile,
    pub(crate) config: ImageConfig,
    /// The manifest blob (OCI layouts only; `docker save` has no manifest blob).
    pub(crate) manifest_blob: Option<StagedFile>,
    /// Digests of the image indexes (manifest lists) that led to the manifest, outermost
    /// first, so `name@sha256:<index>` (what a multi-platform pull by digest names) resolves.
    pub(crate) index_digests: Vec<Digest>,
    pub(crate) layers: Vec<PlannedLayer>,
}

impl PlannedImage {
    /// The image's identity: the digest of its config, as docker's image id.
    pub(crate) fn digest(&self) -> &Digest {
        &self.config_blob.digest
    }
}

#[derive(Debug)]
pub(crate) struct PlannedLayer {
    pub(crate) blob: StagedFile,
    /// Digest of the uncompressed layer tar, from the config's `rootfs.diff_ids`.
    pub(crate) diff_id: Digest,
}

/// Reads `tarball` once, staging its members under `staging_dir` (which must exist and be
/// private to this import).
pub(crate) fn stage(tarball: &Path, staging_dir: &Path) -> Result<StagedArchive, ImageError> {
    let label = format!("archive {}", tarball.display());
    let damaged = |e: std::io::Error| ImageError::InvalidArchive(format!("reading {label}: {e}"));
    let mut archive = tar::Archive::new(open_decompressed(tarball, &label)?);
    let mut staged = StagedArchive {
        label: label.clone(),
        files: BTreeMap::new(),
        links: BTreeMap::new(),
        metadata: BTreeMap::new(),
    };
    let mut next_staged_id = 0u64;
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let raw_name = entry.path_bytes().into_owned();
        let Some(name) = member_name(&raw_name, &label)? else {
            continue;
        };
        let kind = entry.header().entry_type();
        if kind.is_file() || kind.is_symlink() || kind.is_hard_link() {
            if staged.files.len() + staged.links.len() + staged.metadata.len()
                >= MAX_ARCHIVE_MEMBERS
            {
                return Err(ImageError::InvalidArchive(format!(
                    "{label} has more than {MAX_ARCHIVE_MEMBERS} members"
                )));
            }
            // A later member with the same name replaces an earlier one, as in `tar x`.
            staged.files.remove(&name);
            staged.links.remove(&name);
            staged.metadata.remove(&name);
        }
        if kind.is_file() {
            if METADATA_MEMBERS.contains(&name.as_str()) {
                let bytes = read_bounded(&mut entry, &name, &label)?;
                staged.metadata.insert(name, bytes);
            } else {
                let path = staging_dir.join(next_staged_id.to_string());
                next_staged_id += 1;
                let file = stage_member(&mut entry, &path, &name, &label)?;
                staged.files.insert(name, file);
            }
        } else if kind.is_symlink() || kind.is_hard_link() {
            let target = entry.link_name_bytes().ok_or_else(|| {
                ImageError::InvalidArchive(format!("{label}: link {name} has no target"))
            })?;
            let target = String::from_utf8(target.into_owned()).map_err(|_| {
                ImageError::InvalidArchive(format!("{label}: link {name} has a non-UTF-8 target"))
            })?;
            // A symlink target is relative to the link's directory, a hard link's to the root.
            let base = if kind.is_symlink() {
                name.rsplit_once('/').map_or("", |(dir, _)| dir)
            } else {
                ""
            };
            let resolved = resolve_member_link(base, &target).ok_or_else(|| {
                ImageError::InvalidArchive(format!(
                    "{label}: link {name} -> {target} points outside the archive"
                ))
            })?;
            staged.links.insert(name, resolved);
        } else {
            // Directories carry nothing we need; other kinds have no place in an image archive.
            tracing::debug!(archive = %label, member = %name, "skipping archive member of kind {kind:?}");
        }
    }
    Ok(staged)
}

/// How `stage_dir` takes the blobs of a layout directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transfer {
    /// The directory belongs to someone else and stays as it was: blobs are copied.
    Copy,
    /// The directory is the store's own staging area (written by a registry pull): blobs are
    /// moved, which costs no second copy of a large image.
    Move,
}

/// Reads an OCI image-layout directory: `oci-layout` and `index.json` into memory (bounded),
/// every regular file in `blobs/sha256/` into `staging_dir` with its digest. Symlinks and
/// other entries are skipped, so nothing outside the layout is ever read.
pub(crate) fn stage_dir(
    layout: &Path,
    staging_dir: &Path,
    transfer: Transfer,
) -> Result<StagedArchive, ImageError> {
    let label = format!("image layout {}", layout.display());
    let io_error = |context: String| move |source| ImageError::Io { context, source };
    let mut staged = StagedArchive {
        label: label.clone(),
        files: BTreeMap::new(),
        links: BTreeMap::new(),
        metadata: BTreeMap::new(),
    };
    for name in ["oci-layout", "index.json"] {
        let path = layout.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                let mut file =
                    File::open(&path).map_err(io_error(format!("opening {}", path.display())))?;
                let bytes = read_bounded(&mut file, name, &label)?;
                staged.metadata.insert(name.to_string(), bytes);
            }
            Ok(_) => {
                return Err(ImageError::InvalidArchive(format!(
                    "{label}: {name} is not a regular file"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(format!("inspecting {}", path.display()))(e)),
        }
    }
    if !staged.metadata.contains_key("index.json") {
        return Err(ImageError::InvalidArchive(format!(
            "{label} has no index.json: it is not an OCI image layout"
        )));
    }
    let blobs_dir = layout.join("blobs/sha256");
    let entries = match fs::read_dir(&blobs_dir) {
        Ok(entries) => entries,
        // Planning names the first blob the index needs and does not find.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(staged),
        Err(e) => return Err(io_error(format!("listing {}", blobs_dir.display()))(e)),
    };
    for (staged_id, entry) in entries.enumerate() {
        let entry = entry.map_err(io_error(format!("listing {}", blobs_dir.display())))?;
        if staged.files.len() >= MAX_ARCHIVE_MEMBERS {
            return Err(ImageError::InvalidArchive(format!(
                "{label} has more than {MAX_ARCHIVE_MEMBERS} blobs"
            )));
        }
        let source = entry.path();
        // `DirEntry::metadata` does not follow symlinks.
        let kind = entry
            .metadata()
            .map_err(io_error(format!("inspecting {}", source.display())))?;
        let Some(hex) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !kind.is_file() {
            tracing::debug!(layout = %label, blob = %hex, "skipping a blob that is not a regular file");
            continue;
        }
        let name = format!("blobs/sha256/{hex}");
        let destination = staging_dir.join(staged_id.to_string());
        let file = match transfer {
            Transfer::Copy => {
                let mut reader = BufReader::with_capacity(
                    STREAM_BUFFER_BYTES,
                    File::open(&source)
                        .map_err(io_error(format!("opening {}", source.display())))?,
                );
                stage_member(&mut reader, &destination, &name, &label)?
            }
            Transfer::Move => {
                fs::rename(&source, &destination).map_err(io_error(format!(
                    "moving {} into {}",
                    source.display(),
                    destination.display()
                )))?;
                let file = File::open(&destination)
                    .map_err(io_error(format!("opening {}", destination.display())))?;
                let reader = BufReader::with_capacity(STREAM_BUFFER_BYTES, file);
                let (digest, size_bytes) = HashingReader::new(reader)
                    .finish()
                    .map_err(io_error(format!("reading {}", destination.display())))?;
                StagedFile {
                    path: destination,
                    digest,
                    size_bytes,
                }
            }
        };
        staged.files.insert(name, file);
    }
    Ok(staged)
}

/// Normalizes a member name: `./a//b` -> `a/b`. `None` for the root itself and for non-UTF-8
/// names (nothing in an image archive can refer to those).
fn member_name(raw: &[u8], label: &str) -> Result<Option<String>, ImageError> {
    if raw.len() > MAX_MEMBER_NAME_BYTES {
        return Err(ImageError::InvalidArchive(format!(
            "{label}: a member name is longer than {MAX_MEMBER_NAME_BYTES} bytes"
        )));
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        tracing::debug!(archive = %label, "skipping member with a non-UTF-8 name");
        return Ok(None);
    };
    let mut parts = Vec::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(ImageError::InvalidArchive(format!(
                    "{label}: member name {text:?} contains '..'"
                )))
            }
            part => parts.push(part),
        }
    }
    if text.starts_with('/') {
        return Err(ImageError::InvalidArchive(format!(
            "{label}: member name {text:?} is absolute"
        )));
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Resolves a link target against `base` (a directory inside the archive) lexically; `None` if
/// it climbs above the archive root.
fn resolve_member_link(base: &str, target: &str) -> Option<String> {
    let mut parts: Vec<&str> = if target.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

fn read_bounded(entry: &mut dyn Read, name: &str, label: &str) -> Result<Vec<u8>, ImageError> {
    let mut bytes = Vec::new();
    entry
        .take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImageError::InvalidArchive(format!("reading {name} from {label}: {e}")))?;
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(ImageError::TooLarge {
            what: format!("{name} in {label}"),
            limit_bytes: MAX_JSON_BYTES,
        });
    }
    Ok(bytes)
}

fn stage_member(
    entry: &mut dyn Read,
    path: &Path,
    name: &str,
    label: &str,
) -> Result<StagedFile, ImageError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| ImageError::Io {
            context: format!("creating staging file {}", path.display()),
            source,
        })?;
    let (digest, size_bytes) = copy_hashing(entry, &mut file).map_err(|e| match e {
        CopyError::Read(e) => {
            ImageError::InvalidArchive(format!("reading {name} from {label}: {e}"))
        }
        CopyError::Write(source) => ImageError::Io {
            context: format!("writing staging file {}", path.display()),
            source,
        },
    })?;
    Ok(StagedFile {
        path: path.to_path_buf(),
        digest,
        size_bytes,
    })
}

impl StagedArchive {
    /// The staged member called `name`, following links inside the archive.
    fn member(&self, name: &str) -> Result<&StagedFile, ImageError> {
        let mut current = member_name(name.as_bytes(), &self.label)?.unwrap_or_default();
        for _ in 0..=MAX_LINK_HOPS {
            if let Some(file) = self.files.get(&current) {
                return Ok(file);
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => {
                    return Err(ImageError::InvalidArchive(format!(
                        "{}: {name} is referenced but not in the archive",
                        self.label
                    )))
                }
            }
        }
        Err(ImageError::InvalidArchive(format!(
            "{}: {name} is a chain of more than {MAX_LINK_HOPS} links",
            self.label
        )))
    }

    /// The blob `blobs/sha256/<hex>`, checked against `digest` (and `size_bytes` if known).
    fn blob(&self, digest: &Digest, size_bytes: Option<u64>) -> Result<&StagedFile, ImageError> {
        let file = self.member(&format!("blobs/sha256/{}", digest.hex()))?;
        check_digest(file, digest)?;
        if let Some(expected) = size_bytes {
            if expected != file.size_bytes {
                return Err(ImageError::InvalidArchive(format!(
                    "{}: blob {digest} is {} bytes, its descriptor says {expected}",
                    self.label, file.size_bytes
                )));
            }
        }
        Ok(file)
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        what: &str,
    ) -> Result<T, ImageError> {
        serde_json::from_slice(bytes)
            .map_err(|e| ImageError::InvalidArchive(format!("{}: parsing {what}: {e}", self.label)))
    }

    fn read_staged(&self, file: &StagedFile, what: &str) -> Result<Vec<u8>, ImageError> {
        if file.size_bytes > MAX_JSON_BYTES {
            return Err(ImageError::TooLarge {
                what: format!("{what} in {}", self.label),
                limit_bytes: MAX_JSON_BYTES,
            });
        }
        fs::read(&file.path).map_err(|source| ImageError::Io {
            context: format!("reading staged {what} at {}", file.path.display()),
            source,
        })
    }
}

fn check_digest(file: &StagedFile, expected: &Digest) -> Result<(), ImageError> {
    if &file.digest == expected {
        Ok(())
    } else {
        Err(ImageError::DigestMismatch {
            expected: expected.to_string(),
            actual: file.digest.to_string(),
        })
    }
}

/// Finds the images in a staged archive. `docker save` archives are recognised by
/// `manifest.json` (docker >= 25 writes both that and an OCI layout; either would do, and
/// `manifest.json` carries the tags plainly), OCI layouts by `index.json`.
pub(crate) fn plan(staged: &StagedArchive) -> Result<Vec<PlannedImage>, ImageError> {
    let images = if let Some(manifest) = staged.metadata.get("manifest.json") {
        plan_docker(staged, manifest)?
    } else if let Some(index) = staged.metadata.get("index.json") {
        if !staged.metadata.contains_key("oci-layout") {
            tracing::debug!(archive = %staged.label, "index.json without oci-layout; reading it as an OCI layout anyway");
        }
        plan_oci(staged, index)?
    } else {
        return Err(ImageError::InvalidArchive(format!(
            "{} has neither manifest.json (docker save) nor index.json (OCI layout)",
            staged.label
        )));
    };
    // One image may be listed several times (several tags, or several manifests with the same
    // config); it is imported once with all its names.
    let mut merged: Vec<PlannedImage> = Vec::new();
    for image in images {
        match merged.iter_mut().find(|m| m.digest() == image.digest()) {
            Some(existing) => {
                for name in image.names {
                    if !existing.names.contains(&name) {
                        existing.names.push(name);
                    }
                }
                for digest in image.index_digests {
                    if !existing.index_digests.contains(&digest) {
                        existing.index_digests.push(digest);
                    }
                }
            }
            None => merged.push(image),
        }
    }
    if merged.is_empty() {
        return Err(ImageError::InvalidArchive(format!(
            "{} contains no image for linux/{}",
            staged.label,
            host_architecture()
        )));
    }
    Ok(merged)
}

#[derive(Deserialize)]
struct DockerManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

fn plan_docker(staged: &StagedArchive, manifest: &[u8]) -> Result<Vec<PlannedImage>, ImageError> {
    let entries: Vec<DockerManifestEntry> = staged.json(manifest, "manifest.json")?;
    if entries.len() > MAX_IMAGES {
        return Err(ImageError::InvalidArchive(format!(
            "{} lists more than {MAX_IMAGES} images",
            staged.label
        )));
    }
    let mut images = Vec::new();
    for entry in entries {
        let config_blob = staged.member(&entry.config)?;
        if let Some(claimed) = digest_in_member_name(&entry.config) {
            check_digest(config_blob, &claimed)?;
        }
        let parsed = parse_config(staged, config_blob)?;
        if entry.layers.len() != parsed.diff_ids.len() {
            return Err(ImageError::InvalidArchive(format!(
                "{}: image {} lists {} layers but its config has {} diff_ids",
                staged.label,
                config_blob.digest,
                entry.layers.len(),
                parsed.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in entry.layers.iter().zip(parsed.diff_ids) {
            let blob = staged.member(name)?;
            if let Some(claimed) = digest_in_member_name(name) {
                check_digest(blob, &claimed)?;
            }
            layers.push(PlannedLayer {
                blob: blob.clone(),
                diff_id,
            });
        }
        let mut names = Vec::new();
        for tag in entry.repo_tags.unwrap_or_default() {
            names.push(tagged_name(&tag, staged)?);
        }
        if let Some(os) = parsed.os.as_deref().filter(|os| *os != "linux") {
            return Err(ImageError::InvalidArchive(format!(
                "{}: image {} is for {os}, not linux",
                staged.label, config_blob.digest
            )));
        }
        images.push(PlannedImage {
            names,
            config_blob: config_blob.clone(),
            config: parsed.config,
            manifest_blob: None,
            index_digests: Vec::new(),
            layers,
        });
    }
    Ok(images)
}

/// The digest a member name claims, if it is content-addressed: `blobs/sha256/<hex>` (docker
/// >= 25, OCI) or `<hex>.json` (configs in older `docker save`).
fn digest_in_member_name(name: &str) -> Option<Digest> {
    if let Some(hex) = name.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex);
    }
    name.strip_suffix(".json").and_then(Digest::from_hex)
}

fn tagged_name(text: &str, staged: &StagedArchive) -> Result<String, ImageError> {
    match reference::parse(text) {
        Ok(reference @ Reference::Tagged { .. }) => Ok(reference.to_string()),
        Ok(_) => Err(ImageError::InvalidArchive(format!(
            "{}: image name {text:?} is not a name:tag",
            staged.label
        ))),
        Err(e) => Err(ImageError::InvalidArchive(format!("{}: {e}", staged.label))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub(crate) media_type: Option<String>,
    pub(crate) digest: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) platform: Option<Platform>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Platform {
    pub(crate) architecture: String,
    pub(crate) os: String,
}

/// An OCI image index or a docker manifest list (the same shape).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OciIndex {
    #[serde(default)]
    pub(crate) manifests: Vec<Descriptor>,
}

/// An OCI image manifest or a docker schema 2 manifest (the same shape).
#[derive(Debug, Deserialize)]
pub(crate) struct OciManifest {
    pub(crate) config: Descriptor,
    #[serde(default)]
    pub(crate) layers: Vec<Descriptor>,
}

fn plan_oci(staged: &StagedArchive, index: &[u8]) -> Result<Vec<PlannedImage>, ImageError> {
    let index: OciIndex = staged.json(index, "index.json")?;
    if index.manifests.len() > MAX_IMAGES {
        return Err(ImageError::InvalidArchive(format!(
            "{}: index.json lists more than {MAX_IMAGES} manifests",
            staged.label
        )));
    }
    let mut images = Vec::new();
    for descriptor in &index.manifests {
        if !platform_matches(descriptor) {
            continue;
        }
        let names = names_from_annotations(&descriptor.annotations, staged)?;
        if let Some(mut image) = plan_oci_descriptor(staged, descriptor, 1)? {
            image.names = names;
            images.push(image);
        }
    }
    Ok(images)
}

fn platform_matches(descriptor: &Descriptor) -> bool {
    descriptor
        .platform
        .as_ref()
        .is_none_or(|p| p.os == "linux" && p.architecture == host_architecture())
}

/// The entry of a multi-platform index to use for `os`/`architecture`: the first one whose
/// platform is exactly that (entries without a platform, such as attestations, never are).
/// Registry pulls choose with the same rule, so a pulled layout plans to the manifest that
/// was downloaded.
pub(crate) fn pick_platform<'a>(
    manifests: &'a [Descriptor],
    os: &str,
    architecture: &str,
) -> Option<&'a Descriptor> {
    manifests.iter().find(|d| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == architecture)
    })
}

/// Follows a descriptor from an index down to an image manifest. `None` for descriptors that
/// are not images (attestations, signatures) or that have no manifest for this platform.
fn plan_oci_descriptor(
    staged: &StagedArchive,
    descriptor: &Descriptor,
    depth: usize,
) -> Result<Option<PlannedImage>, ImageError> {
    let digest = Digest::parse_in_archive(&descriptor.digest, &staged.label)?;
    match descriptor.media_type.as_deref() {
        Some(OCI_MANIFEST | DOCKER_MANIFEST) => {
            let blob = staged.blob(&digest, Some(descriptor.size))?;
            let manifest: OciManifest = staged.json(
                &staged.read_staged(blob, "manifest")?,
                &format!("manifest {digest}"),
            )?;
            plan_oci_manifest(staged, blob, manifest).map(Some)
        }
        Some(OCI_INDEX | DOCKER_MANIFEST_LIST) => {
            if depth >= MAX_INDEX_DEPTH {
                return Err(ImageError::InvalidArchive(format!(
                    "{}: image indexes nest deeper than {MAX_INDEX_DEPTH}",
                    staged.label
                )));
            }
            let blob = staged.blob(&digest, Some(descriptor.size))?;
            let index: OciIndex = staged.json(
                &staged.read_staged(blob, "index")?,
                &format!("index {digest}"),
            )?;
            // A multi-platform index: take the first manifest for this platform.
            if let Some(child) = pick_platform(&index.manifests, "linux", host_architecture()) {
                let planned = plan_oci_descriptor(staged, child, depth + 1)?;
                return Ok(planned.map(|mut image| {
                    image.index_digests.insert(0, digest);
                    image
                }));
            }
            tracing::debug!(archive = %staged.label, index = %digest, "no manifest for linux/{}", host_architecture());
            Ok(None)
        }
        other => {
            tracing::debug!(archive = %staged.label, descriptor = %digest, "skipping descriptor of media type {other:?}");
            Ok(None)
        }
    }
}

fn plan_oci_manifest(
    staged: &StagedArchive,
    manifest_blob: &StagedFile,
    manifest: OciManifest,
) -> Result<PlannedImage, ImageError> {
    let config_digest = Digest::parse_in_archive(&manifest.config.digest, &staged.label)?;
    let config_blob = staged.blob(&config_digest, Some(manifest.config.size))?;
    let parsed = parse_config(staged, config_blob)?;
    if manifest.layers.len() != parsed.diff_ids.len() {
        return Err(ImageError::InvalidArchive(format!(
            "{}: manifest {} lists {} layers but its config has {} diff_ids",
            staged.label,
            manifest_blob.digest,
            manifest.layers.len(),
            parsed.diff_ids.len()
        )));
    }
    if let Some(os) = parsed.os.as_deref().filter(|os| *os != "linux") {
        return Err(ImageError::InvalidArchive(format!(
            "{}: image {config_digest} is for {os}, not linux",
            staged.label
        )));
    }
    let mut layers = Vec::new();
    for (descriptor, diff_id) in manifest.layers.iter().zip(parsed.diff_ids) {
        let digest = Digest::parse_in_archive(&descriptor.digest, &staged.label)?;
        layers.push(PlannedLayer {
            blob: staged.blob(&digest, Some(descriptor.size))?.clone(),
            diff_id,
        });
    }
    Ok(PlannedImage {
        names: Vec::new(),
        config_blob: config_blob.clone(),
        config: parsed.config,
        manifest_blob: Some(manifest_blob.clone()),
        index_digests: Vec::new(),
        layers,
    })
}

/// The image name in an index entry. A bare tag with no repository (`latest`) names nothing
/// we can resolve, so such an image is imported untagged.
fn names_from_annotations(
    annotations: &BTreeMap<String, String>,
    staged: &StagedArchive,
) -> Result<Vec<String>, ImageError> {
    if let Some(full) = annotations.get(CONTAINERD_NAME_ANNOTATION) {
        return Ok(vec![tagged_name(full, staged)?]);
    }
    match annotations.get(OCI_REF_NAME_ANNOTATION) {
        Some(name) if name.contains(['/', ':']) => Ok(vec![tagged_name(name, staged)?]),
        Some(tag) => {
            tracing::warn!(archive = %staged.label, "image ref name {tag:?} has no repository; importing it untagged");
            Ok(Vec::new())
        }
        None => Ok(Vec::new()),
    }
}

/// What the store keeps from an image config.
struct ParsedConfig {
    config: ImageConfig,
    diff_ids: Vec<Digest>,
    os: Option<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    os: Option<String>,
    #[serde(default)]
    config: Option<RawContainerConfig>,
    rootfs: RawRootfs,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawContainerConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    stop_signal: Option<String>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(rename = "type")]
    kind: String,
    diff_ids: Vec<String>,
}

fn parse_config(staged: &StagedArchive, blob: &StagedFile) -> Result<ParsedConfig, ImageError> {
    let what = format!("config {}", blob.digest);
    let raw: RawConfig = staged.json(&staged.read_staged(blob, &what)?, &what)?;
    if raw.rootfs.kind != "layers" {
        return Err(ImageError::InvalidArchive(format!(
            "{}: {what} has rootfs type {:?}, expected \"layers\"",
            staged.label, raw.rootfs.kind
        )));
    }
    if raw.rootfs.diff_ids.len() > MAX_LAYERS {
        return Err(ImageError::InvalidArchive(format!(
            "{}: {what} has more than {MAX_LAYERS} layers",
            staged.label
        )));
    }
    let diff_ids = raw
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse_in_archive(d, &staged.label))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(arch) = raw
        .architecture
        .as_deref()
        .filter(|a| *a != host_architecture())
    {
        tracing::warn!(archive = %staged.label, image = %blob.digest, "image is for {arch}, this host is {}", host_architecture());
    }
    let container = raw.config.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    Ok(ParsedConfig {
        config: ImageConfig {
            entrypoint: container.entrypoint.unwrap_or_default(),
            cmd: container.cmd.unwrap_or_default(),
            env: container.env.unwrap_or_default(),
            working_dir: non_empty(container.working_dir),
            user: non_empty(container.user),
            stop_signal: non_empty(container.stop_signal),
        },
        diff_ids,
        os: raw.os,
    })
}

/// This host's architecture in OCI/GOARCH spelling.
pub(crate) fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_are_normalized_and_escapes_refused() {
        assert_eq!(
            member_name(b"./a//b/", "t").unwrap().as_deref(),
            Some("a/b")
        );
        assert_eq!(member_name(b"./", "t").unwrap(), None);
        assert!(member_name(b"a/../b", "t").is_err());
        assert!(member_name(b"/etc/passwd", "t").is_err());
    }

    #[test]
    fn member_links_resolve_inside_the_archive_only() {
        assert_eq!(
            resolve_member_link("aaa", "../bbb/layer.tar").as_deref(),
            Some("bbb/layer.tar")
        );
        assert_eq!(resolve_member_link("", "/x/y").as_deref(), Some("x/y"));
        assert_eq!(resolve_member_link("aaa", "../../x"), None);
    }

    #[test]
    fn digest_claims_are_read_from_content_addressed_names_only() {
        let hex = "ab".repeat(32);
        assert!(digest_in_member_name(&format!("blobs/sha256/{hex}")).is_some());
        assert!(digest_in_member_name(&format!("{hex}.json")).is_some());
        assert!(digest_in_member_name(&format!("{hex}/layer.tar")).is_none());
    }
}
