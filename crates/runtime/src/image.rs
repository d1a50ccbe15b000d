//! The agent's image store: imports `docker save` tarballs and OCI image layouts (tarball or
//! directory, which is also what a registry pull writes), keeps their blobs
//! content-addressed, unpacks each layer once into a read-only directory shared by every
//! image built on it (a task's root is an overlay of its image's layer directories), and
//! resolves references (`busybox`, `docker.io/library/busybox:latest`, `sha256:...`).
//!
//! Layout under the store root:
//! - `blobs/sha256/<hex>`: configs, manifests and layers as imported, named by digest.
//! - `layers/<chain-id-hex>/`: one layer unpacked in overlayfs's format (see `unpack`), named
//!   by its OCI chain id: the layer together with every layer below it, since how a layer is
//!   unpacked depends on them. Two images from the same base share the base's directories.
//!   Mode 0700 on `layers/` so host users cannot reach setuid binaries inside images.
//! - `layers/mount-targets/`: the mount points every container task gets (`/proc`, `/sys`,
//!   `/dev`, and empty `/etc/hosts` and `/etc/resolv.conf`, see `MOUNT_POINT_DIRS`),
//!   made when the store opens. The top lower layer of a task whose image has a plain `/etc`
//!   (`ResolvedImage::task_layers`): without it each start creates them in the task's upper
//!   layer, and overlayfs copies `/etc` up first (~0.4 ms per start here). Entries are only
//!   ever added to it. A build older than it removes it as garbage: tasks running on it keep
//!   their mounts, and that build does not use it.
//! - `rootfs/<config-hex>/`: whole-image trees written by builds before layers were shared.
//!   Opening such a store unpacks the missing layer directories from the kept blobs; a tree
//!   stays until `remove_flat_trees` is told no task runs from it.
//! - `refs.json`: `reference -> config digest` plus one record per image. It is the commit
//!   point: written to a temporary file, fsynced, renamed. A blob or layer directory it does
//!   not name is garbage, removed when the store opens and after a failed import or a
//!   removal.
//! - `tmp/`: private (0700) staging for imports; emptied when the store opens.
//! - `.lock`: `flock`ed by imports, removals and `open`, so two of them (threads or
//!   processes) never interleave. Reads take no lock: they see one committed `refs.json`.
//!
//! Deliberately absent: network access (the agent's pull client downloads into a staging
//! directory of this store, with `registry` deciding what to fetch, then imports it as an
//! OCI layout: one import path for every source), knowing which tasks use an image
//! (`remove` trusts its caller), and mutating a layer directory after import.

mod archive;
mod blob;
pub mod layers;
mod reference;
pub mod registry;
mod unpack;
/// Entry points for `make fuzz` (fuzz/).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::{unpack, Digest};
    use std::path::Path;

    /// Unpacks `bytes` as one layer (a tar stream, gzip'd or not) into `dir/out`, as the
    /// store does: checked against the digest of its own uncompressed stream, so the paths
    /// and entries are what gets exercised. Must not panic or write outside `dir/out`.
    pub fn unpack_layer_bytes(bytes: &[u8], dir: &Path) {
        let layer = dir.join("layer");
        std::fs::write(&layer, bytes).expect("writing the layer");
        let mut uncompressed = Vec::new();
        let diff_id = match super::blob::open_decompressed(&layer, "layer") {
            Ok(mut reader) => match std::io::Read::read_to_end(&mut reader, &mut uncompressed) {
                Ok(_) => Digest::of_bytes(&uncompressed),
                Err(_) => return,
            },
            Err(_) => return,
        };
        let out = dir.join("out");
        std::fs::create_dir(&out).expect("the output directory");
        let to_unpack = unpack::LayerToUnpack {
            path: &layer,
            diff_id: &diff_id,
            label: "fuzz".into(),
        };
        let _ = unpack::unpack_layer(&to_unpack, &[], &out);
        // Nothing outside `out` but the layer file itself.
        for entry in std::fs::read_dir(dir)
            .expect("listing the directory")
            .flatten()
        {
            let name = entry.file_name();
            assert!(
                name == "layer" || name == "out",
                "wrote {name:?} outside the layer's directory"
            );
        }
    }
}

use archive::{PlannedImage, Transfer};
pub use blob::{BlobVerifier, Digest};
use reference::Reference;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub use archive::MAX_JSON_BYTES;

const INDEX_FILE: &str = "refs.json";
const INDEX_TEMP_FILE: &str = "refs.json.tmp";
const LOCK_FILE: &str = ".lock";
const BLOBS_DIR: &str = "blobs/sha256";
const LAYERS_DIR: &str = "layers";
/// In `layers/`, never a chain id (those are hex).
const MOUNT_TARGETS_DIR: &str = "mount-targets";
/// Whole-image trees of older builds (see the module comment).
const ROOTFS_DIR: &str = "rootfs";
const TMP_DIR: &str = "tmp";
/// Version of `refs.json`; a store written by a newer format is refused, not misread.
/// 2: layers in `layers/` (version 1 stores are read, and get them on open).
const INDEX_VERSION: u32 = 2;
/// Largest `refs.json` read (about 1 KiB per image; this is tens of thousands of images).
const MAX_INDEX_BYTES: u64 = 64 * 1024 * 1024;

/// Tells temporary directories of one process apart.
static NEXT_TEMP_ID: AtomicU64 = AtomicU64::new(0);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {reference} not found")]
    NotFound { reference: String },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} is {actual_bytes} bytes, its descriptor says {expected_bytes}")]
    SizeMismatch {
        digest: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    #[error("invalid manifest: {0}")]
    InvalidManifest(String),
    #[error("layer entry {path:?} escapes the image root")]
    PathEscape { path: String },
    #[error("{what} is larger than {limit_bytes} bytes")]
    TooLarge { what: String, limit_bytes: u64 },
    #[error("image store is corrupt: {0}")]
    StoreCorrupt(String),
    /// The message includes the OS error as well, because callers often format only `{e}`.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// One tag of an imported image (an untagged image is listed under its digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Normalized `domain/path:tag`, e.g. `docker.io/library/busybox:latest`; the digest for an
    /// untagged image.
    pub reference: String,
    /// Config digest (docker's image id), `sha256:...`.
    pub digest: String,
    /// Bytes of the image's blobs as stored (config and layers, compressed if they were).
    pub size_bytes: u64,
    pub layers: usize,
    /// When this image (not this tag) was first imported.
    pub imported_at_ms: u64,
}

#[derive(Debug, Clone)]
pub struct ResolvedImage {
    /// The reference normalized: `domain/path:tag`, `domain/path@sha256:...` or `sha256:...`.
    pub reference: String,
    /// Config digest, `sha256:...`.
    pub digest: String,
    /// The unpacked layer directories, bottom first, in overlayfs's format: the lower layers
    /// of a task's overlay (or `layers::flatten_layers` into a private copy). Shared by every
    /// task and image that uses them: never write to them.
    pub layers: Vec<PathBuf>,
    /// The store's mount-point layer (see the module comment), where it fits this image: its
    /// `/etc` is absent or a directory owned by root with mode 0755, like the layer's own.
    pub mount_targets: Option<PathBuf>,
    pub config: ImageConfig,
}

impl ResolvedImage {
    /// The lower layers of a task's root, bottom first: the image's layers and the mount
    /// points on top. Only the task's own mounts cover what the latter add.
    pub fn task_layers(&self) -> Vec<PathBuf> {
        self.layers
            .iter()
            .chain(self.mount_targets.as_ref())
            .cloned()
            .collect()
    }
}

/// What a task needs from the image config (`config` section of the OCI image config).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `KEY=value` strings.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`, as written in the image.
    pub user: Option<String>,
    /// e.g. `SIGTERM`.
    pub stop_signal: Option<String>,
}

/// Normalizes a reference the way the store keys it: `busybox` ->
/// `docker.io/library/busybox:latest`; digests stay digests.
pub fn normalize_reference(reference: &str) -> Result<String, ImageError> {
    reference::parse(reference).map(|r| r.to_string())
}

/// The contents of `refs.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Index {
    version: u32,
    /// Normalized `name:tag` -> config digest.
    refs: BTreeMap<String, Digest>,
    /// Config digest -> image. An image stays until it is removed, even with no tag left
    /// after a re-tag (a running task may still use its rootfs).
    images: BTreeMap<Digest, ImageRecord>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: INDEX_VERSION,
            refs: BTreeMap::new(),
            images: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ImageRecord {
    /// Manifest digest (OCI layouts only), so `name@sha256:<manifest>` resolves too.
    manifest_digest: Option<Digest>,
    /// Digests of the multi-platform indexes that led to the manifest (not kept as blobs), so
    /// `name@sha256:<index>`, as pulled by digest, resolves too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    index_digests: Vec<Digest>,
    config_size_bytes: u64,
    layers: Vec<LayerRecord>,
    imported_at_ms: u64,
    config: ImageConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    /// Digest of the blob as stored.
    digest: Digest,
    /// Digest of the uncompressed tar.
    diff_id: Digest,
    size_bytes: u64,
}

/// OCI chain ids of layers given bottom first by diff_id: the first layer's is its diff_id,
/// each next one `sha256(<chain id below> + " " + <diff_id>)`.
fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::new();
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(below) => Digest::of_bytes(format!("{below} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

impl ImageRecord {
    fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(self.layers.iter().map(|l| &l.diff_id))
    }

    fn size_bytes(&self) -> u64 {
        self.config_size_bytes + self.layers.iter().map(|l| l.size_bytes).sum::<u64>()
    }

    fn blobs<'a>(&'a self, config_digest: &'a Digest) -> impl Iterator<Item = &'a Digest> {
        std::iter::once(config_digest)
            .chain(self.manifest_digest.as_ref())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

impl Index {
    /// The image whose config or manifest digest is `digest`.
    fn find_by_digest(&self, digest: &Digest) -> Option<&Digest> {
        if let Some((config_digest, _)) = self.images.get_key_value(digest) {
            return Some(config_digest);
        }
        self.images
            .iter()
            .find(|(_, record)| {
                record.manifest_digest.as_ref() == Some(digest)
                    || record.index_digests.contains(digest)
            })
            .map(|(config_digest, _)| config_digest)
    }

    fn check(&self) -> Result<(), ImageError> {
        if !(1..=INDEX_VERSION).contains(&self.version) {
            return Err(ImageError::StoreCorrupt(format!(
                "{INDEX_FILE} has version {}, this build reads version {INDEX_VERSION}",
                self.version
            )));
        }
        for (reference, digest) in &self.refs {
            if !self.images.contains_key(digest) {
                return Err(ImageError::StoreCorrupt(format!(
                    "{reference} points to {digest}, which has no record"
                )));
            }
        }
        Ok(())
    }

    fn summary(&self, reference: String, digest: &Digest) -> ImageSummary {
        let record = &self.images[digest];
        ImageSummary {
            reference,
            digest: digest.to_string(),
            size_bytes: record.size_bytes(),
            layers: record.layers.len(),
            imported_at_ms: record.imported_at_ms,
        }
    }
}

/// Where an import reads from.
#[derive(Clone, Copy)]
enum ImportSource<'a> {
    Tarball(&'a Path),
    LayoutDir(&'a Path, Transfer),
}

/// A private directory under the store's `tmp/` (for a registry pull to write an OCI layout
/// into), removed when dropped, and by the next `open` if the process dies first.
#[derive(Debug)]
pub struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, path = %self.path.display(), "removing staging directory");
            }
        }
    }
}

/// Holds the store's `flock` until dropped.
struct StoreLock {
    _file: File,
}

fn io_error(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |source| ImageError::Io { context, source }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`, discards what interrupted imports left
    /// in `tmp/`, and removes blobs and trees that `refs.json` does not name.
    pub fn open(root: &Path) -> Result<Self, ImageError> {
        let store = ImageStore {
            root: root.to_path_buf(),
        };
        fs::create_dir_all(root.join(BLOBS_DIR)).map_err(io_error(format!(
            "creating {}",
            root.join(BLOBS_DIR).display()
        )))?;
        for private in [LAYERS_DIR, TMP_DIR] {
            let path = root.join(private);
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(io_error(format!("creating {}", path.display())))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                .map_err(io_error(format!("setting mode of {}", path.display())))?;
        }
        let _lock = store.lock()?;
        let index = store.load_index()?;
        store.empty_tmp()?;
        store.collect_garbage(&index)?;
        if let Err(e) = store.create_mount_targets() {
            // Tasks then create their mount points in their own upper layer, as before.
            tracing::warn!(error = %e, "could not make the mount-point layer");
        }
        store.unpack_missing_layers(&index);
        if index.version < INDEX_VERSION {
            // So an older build refuses the store rather than find its trees gone.
            store.write_index(&index)?;
        }
        Ok(store)
    }

    /// Makes `layers/mount-targets/` if it is not there (in `tmp/`, synced, then renamed into
    /// place), or adds what an existing one lacks (one made by a build with fewer mount
    /// points): entries are only ever added, never changed, since running tasks have it as a
    /// lower layer. Callers hold the lock.
    fn create_mount_targets(&self) -> Result<(), ImageError> {
        let destination = self.mount_targets_path();
        if destination.is_dir() {
            return fill_mount_targets(&destination);
        }
        let staging = self.create_temp_dir("mount-targets")?;
        let tree = staging.join("tree");
        fill_mount_targets(&tree)?;
        self.sync_filesystem()?;
        fs::rename(&tree, &destination).map_err(io_error(format!(
            "moving mount points into {}",
            destination.display()
        )))?;
        fs::remove_dir(&staging).map_err(io_error(format!("removing {}", staging.display())))
    }

    fn mount_targets_path(&self) -> PathBuf {
        self.root.join(LAYERS_DIR).join(MOUNT_TARGETS_DIR)
    }

    /// The mount-point layer if it may go on top of `layers`: the image's `/etc` is absent or
    /// a directory like the layer's own, which then shows in its place (a symlink or another
    /// owner or mode would be hidden). Lookup errors count as not fitting.
    fn mount_targets_for(&self, layers: &[PathBuf]) -> Option<PathBuf> {
        let path = self.mount_targets_path();
        let own_etc = fs::symlink_metadata(path.join("etc")).ok()?;
        let fits = match layers::top_level_entry(layers, "etc") {
            Ok(None) => true,
            Ok(Some(stat)) => {
                stat.st_mode == own_etc.mode()
                    && stat.st_uid == own_etc.uid()
                    && stat.st_gid == own_etc.gid()
            }
            Err(e) => {
                tracing::warn!(error = %e, "looking up the image's /etc");
                false
            }
        };
        fits.then_some(path)
    }

    /// Unpacks, from the kept blobs, the layer directories that images of `index` lack: those
    /// of a store written before layers were shared. Best effort, image by image: one that
    /// fails (a layer this build refuses, a full disk) is logged and keeps running from its
    /// whole-image tree. Callers hold the lock.
    fn unpack_missing_layers(&self, index: &Index) {
        let lacking: Vec<(&Digest, &ImageRecord)> = index
            .images
            .iter()
            .filter(|(_, record)| {
                record
                    .chain_ids()
                    .iter()
                    .any(|chain| !self.layer_path(chain).is_dir())
            })
            .collect();
        for (digest, record) in lacking {
            tracing::info!(image = %digest, "unpacking the image's layers for sharing");
            if let Err(e) = self.unpack_record_layers(record) {
                tracing::warn!(image = %digest, error = %e, "could not unpack the image's layers; it keeps its whole-image tree");
            }
        }
    }

    /// Unpacks the layers of one stored image that the store lacks, from its blobs.
    fn unpack_record_layers(&self, record: &ImageRecord) -> Result<(), ImageError> {
        let staging = self.create_temp_dir("layers")?;
        let result = (|| {
            let paths: Vec<PathBuf> = record
                .layers
                .iter()
                .map(|l| self.blob_path(&l.digest))
                .collect();
            let layers: Vec<unpack::LayerToUnpack<'_>> = record
                .layers
                .iter()
                .zip(&paths)
                .map(|(layer, path)| unpack::LayerToUnpack {
                    path,
                    diff_id: &layer.diff_id,
                    label: layer.digest.to_string(),
                })
                .collect();
            let mut staged = BTreeMap::new();
            self.unpack_new_layers(&layers, &staging, &mut staged)?;
            // The index names these layers already: they must be on disk before they are
            // in place, where their presence alone makes them trusted.
            self.sync_filesystem()?;
            self.move_layers_into_place(&staged)?;
            self.sync_filesystem()
        })();
        if let Err(e) = fs::remove_dir_all(&staging) {
            tracing::warn!(error = %e, path = %staging.display(), "removing layer staging directory");
        }
        result
    }

    /// Unpacks the layers of one image (bottom first) that neither the store nor `staged` (what
    /// this operation unpacked so far, chain id -> directory) has, each into `staging` over the
    /// ones below it, and adds them to `staged`.
    fn unpack_new_layers(
        &self,
        layers: &[unpack::LayerToUnpack<'_>],
        staging: &Path,
        staged: &mut BTreeMap<Digest, PathBuf>,
    ) -> Result<(), ImageError> {
        let chains = chain_ids(layers.iter().map(|l| l.diff_id));
        let mut below: Vec<PathBuf> = Vec::new();
        for (layer, chain) in layers.iter().zip(&chains) {
            let stored = self.layer_path(chain);
            let reused = staged
                .get(chain)
                .cloned()
                .or(stored.is_dir().then_some(stored));
            let directory = match reused {
                // Unpacked already, from another blob: this one must still match its
                // diff_id, or an image could claim another's layers with any blob at all.
                Some(directory) => {
                    unpack::verify_layer(layer)?;
                    directory
                }
                None => {
                    let directory = staging.join(format!("layer-{}", chain.hex()));
                    DirBuilder::new()
                        .mode(0o755)
                        .create(&directory)
                        .and_then(|()| {
                            fs::set_permissions(&directory, fs::Permissions::from_mode(0o755))
                        })
                        .map_err(io_error(format!("creating {}", directory.display())))?;
                    let lowers: Vec<&Path> = below.iter().map(PathBuf::as_path).collect();
                    unpack::unpack_layer(layer, &lowers, &directory)?;
                    staged.insert(chain.clone(), directory.clone());
                    directory
                }
            };
            below.push(directory);
        }
        Ok(())
    }

    /// Renames unpacked layer directories from staging to their place in `layers/`.
    fn move_layers_into_place(&self, staged: &BTreeMap<Digest, PathBuf>) -> Result<(), ImageError> {
        for (chain, directory) in staged {
            let destination = self.layer_path(chain);
            fs::rename(directory, &destination).map_err(io_error(format!(
                "moving unpacked layer into {}",
                destination.display()
            )))?;
        }
        Ok(())
    }

    /// Removes the whole-image trees of older builds (see the module comment) except those of
    /// `in_use` (config digests, `sha256:...`: images tasks still run from). Returns how many
    /// were removed.
    pub fn remove_flat_trees(&self, in_use: &BTreeSet<String>) -> Result<usize, ImageError> {
        let rootfs_dir = self.root.join(ROOTFS_DIR);
        if !rootfs_dir.is_dir() {
            return Ok(0);
        }
        let _lock = self.lock()?;
        let entries = match fs::read_dir(&rootfs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(format!("listing {}", rootfs_dir.display()))(e)),
        };
        let index = self.load_index()?;
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(io_error(format!("listing {}", rootfs_dir.display())))?;
            let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
            // An image whose layers could not be unpacked still runs from its tree.
            let lacks_layers = Digest::parse(&digest)
                .and_then(|d| index.images.get(&d))
                .is_some_and(|record| {
                    record
                        .chain_ids()
                        .iter()
                        .any(|chain| !self.layer_path(chain).is_dir())
                });
            if !in_use.contains(&digest) && !lacks_layers {
                tracing::info!(tree = %entry.path().display(), "removing a whole-image tree no task uses");
                self.discard_tree(&entry.path())?;
                removed += 1;
            }
        }
        // Gone once empty, so later calls return at once.
        let _ = fs::remove_dir(&rootfs_dir);
        Ok(removed)
    }

    /// Imports a `docker save` tarball or an OCI image-layout tarball (the whole tarball and
    /// each layer may be gzip'd). Every blob is checked against its digest and every layer
    /// against its diff_id. Returns one summary per tag (per image if untagged). All or
    /// nothing: on error no reference, record, blob or tree of this import remains.
    /// Re-importing an image already in the store only updates its tags.
    pub fn import(&self, tarball: &Path) -> Result<Vec<ImageSummary>, ImageError> {
        self.import_from(ImportSource::Tarball(tarball))
    }

    /// Imports an OCI image-layout directory (left as it was: its blobs are copied), with the
    /// same checks and all-or-nothing rule as `import`.
    pub fn import_layout_dir(&self, layout: &Path) -> Result<Vec<ImageSummary>, ImageError> {
        self.import_from(ImportSource::LayoutDir(layout, Transfer::Copy))
    }

    /// Imports the OCI image layout written into `staging` (from `staging_dir`; a registry
    /// pull) by moving its blobs, then removes the directory, imported or not.
    pub fn import_staged_layout(
        &self,
        staging: StagingDir,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        self.import_from(ImportSource::LayoutDir(staging.path(), Transfer::Move))
    }

    /// A new private directory inside the store (same filesystem, so its files can be moved
    /// into place), e.g. for a registry pull to write an OCI layout into.
    pub fn staging_dir(&self, purpose: &str) -> Result<StagingDir, ImageError> {
        Ok(StagingDir {
            path: self.create_temp_dir(purpose)?,
        })
    }

    fn import_from(&self, source: ImportSource<'_>) -> Result<Vec<ImageSummary>, ImageError> {
        let _lock = self.lock()?;
        let staging = self.create_temp_dir("import")?;
        let result = self.import_locked(source, &staging);
        if result.is_err() {
            // Whatever this import moved into place is not in the committed index, so it is
            // garbage now. If the index did get committed, nothing is removed.
            match self.load_index() {
                Ok(index) => {
                    if let Err(e) = self.collect_garbage(&index) {
                        tracing::warn!(error = %e, "cleaning up after a failed import");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cleaning up after a failed import"),
            }
        }
        if let Err(e) = fs::remove_dir_all(&staging) {
            tracing::warn!(error = %e, path = %staging.display(), "removing import staging directory");
        }
        result
    }

    fn import_locked(
        &self,
        source: ImportSource<'_>,
        staging: &Path,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let members_dir = staging.join("members");
        fs::create_dir(&members_dir)
            .map_err(io_error(format!("creating {}", members_dir.display())))?;
        let staged = match source {
            ImportSource::Tarball(tarball) => archive::stage(tarball, &members_dir)?,
            ImportSource::LayoutDir(layout, transfer) => {
                archive::stage_dir(layout, &members_dir, transfer)?
            }
        };
        let plans = archive::plan(&staged)?;
        let mut index = self.load_index()?;

        // Unpack the layers that are new, inside the staging directory, before touching the
        // store.
        let mut staged_layers = BTreeMap::new();
        for plan in &plans {
            let layers: Vec<unpack::LayerToUnpack<'_>> = plan
                .layers
                .iter()
                .map(|layer| unpack::LayerToUnpack {
                    path: &layer.blob.path,
                    diff_id: &layer.diff_id,
                    label: layer.blob.digest.to_string(),
                })
                .collect();
            self.unpack_new_layers(&layers, staging, &mut staged_layers)?;
        }

        // Commit: blobs and layers into place, everything onto disk, then the index.
        for plan in &plans {
            let blobs = std::iter::once(&plan.config_blob)
                .chain(plan.manifest_blob.as_ref())
                .chain(plan.layers.iter().map(|l| &l.blob));
            for blob in blobs {
                self.store_blob(blob)?;
            }
        }
        self.move_layers_into_place(&staged_layers)?;
        self.sync_filesystem()?;
        let now = now_ms();
        let mut summaries = Vec::new();
        for plan in &plans {
            let digest = plan.digest().clone();
            match index.images.get_mut(&digest) {
                // Known image reached another way (another index, or a manifest where a
                // `docker save` had none): it answers to those digests too from now on.
                Some(record) => {
                    if record.manifest_digest.is_none() {
                        record.manifest_digest =
                            plan.manifest_blob.as_ref().map(|m| m.digest.clone());
                    }
                    for index_digest in &plan.index_digests {
                        if !record.index_digests.contains(index_digest) {
                            record.index_digests.push(index_digest.clone());
                        }
                    }
                }
                None => {
                    index.images.insert(digest.clone(), record_of(plan, now));
                }
            }
            for name in &plan.names {
                if let Some(previous) = index.refs.insert(name.clone(), digest.clone()) {
                    if previous != digest {
                        tracing::info!(reference = %name, from = %previous, to = %digest, "re-tagged image");
                    }
                }
            }
        }
        self.write_index(&index)?;
        for plan in &plans {
            let digest = plan.digest();
            if plan.names.is_empty() {
                summaries.push(index.summary(digest.to_string(), digest));
            }
            for name in &plan.names {
                summaries.push(index.summary(name.clone(), digest));
            }
            tracing::info!(image = %digest, names = ?plan.names, layers = plan.layers.len(), "imported image");
        }
        Ok(summaries)
    }

    /// Every tag of every image, sorted by reference, then untagged images by digest.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let index = self.load_index()?;
        let mut summaries: Vec<ImageSummary> = index
            .refs
            .iter()
            .map(|(reference, digest)| index.summary(reference.clone(), digest))
            .collect();
        let tagged: BTreeSet<&Digest> = index.refs.values().collect();
        for digest in index.images.keys().filter(|d| !tagged.contains(d)) {
            summaries.push(index.summary(digest.to_string(), digest));
        }
        Ok(summaries)
    }

    /// What the store holds, as the presence keys the master places tasks by: every tag
    /// (normalized, `docker.io/library/busybox:latest`) and every digest an image answers to
    /// (config, manifest, index). `presence_key(r)` is in this set exactly when `resolve(r)`
    /// finds an image.
    pub fn presence_keys(&self) -> Result<BTreeSet<String>, ImageError> {
        let index = self.load_index()?;
        let mut keys: BTreeSet<String> = index.refs.keys().cloned().collect();
        for (config_digest, record) in &index.images {
            keys.insert(config_digest.to_string());
            keys.extend(record.manifest_digest.iter().map(|d| d.to_string()));
            keys.extend(record.index_digests.iter().map(|d| d.to_string()));
        }
        Ok(keys)
    }

    /// Resolves `busybox`, `busybox:latest`, `docker.io/library/busybox:latest`,
    /// `name@sha256:<config or manifest digest>` or a bare `sha256:...` to an image.
    pub fn resolve(&self, reference: &str) -> Result<ResolvedImage, ImageError> {
        let parsed = reference::parse(reference)?;
        let index = self.load_index()?;
        let digest = lookup(&index, &parsed).ok_or_else(|| ImageError::NotFound {
            reference: reference.to_string(),
        })?;
        let record = &index.images[&digest];
        let layers: Vec<PathBuf> = record
            .chain_ids()
            .iter()
            .map(|chain| self.layer_path(chain))
            .collect();
        let layers = match layers.iter().find(|layer| !layer.is_dir()) {
            None => layers,
            // Not unpacked into layers (see `unpack_missing_layers`): its whole-image tree
            // is a lower layer just as well.
            Some(_) if self.flat_tree_path(&digest).is_dir() => vec![self.flat_tree_path(&digest)],
            Some(missing) => {
                return Err(ImageError::StoreCorrupt(format!(
                    "an unpacked layer of {digest} is missing at {}",
                    missing.display()
                )))
            }
        };
        Ok(ResolvedImage {
            reference: parsed.to_string(),
            digest: digest.to_string(),
            mount_targets: self.mount_targets_for(&layers),
            layers,
            config: record.config.clone(),
        })
    }

    /// Removes a reference. A tag (`busybox:1`) is untagged, and the image goes when it has no
    /// tag left (as `docker rmi`); a digest (`sha256:...`, `name@sha256:...`) removes the image
    /// with all its tags. Its blobs and the layer directories no other image uses are deleted:
    /// the caller must make sure no task still runs from the image.
    pub fn remove(&self, reference: &str) -> Result<(), ImageError> {
        let parsed = reference::parse(reference)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let not_found = || ImageError::NotFound {
            reference: reference.to_string(),
        };
        let digest = lookup(&index, &parsed).ok_or_else(not_found)?;
        let remove_image = match &parsed {
            Reference::Tagged { .. } => {
                index.refs.remove(&parsed.to_string());
                !index.refs.values().any(|d| *d == digest)
            }
            Reference::Pinned { .. } | Reference::Digest(_) => true,
        };
        if remove_image {
            index.refs.retain(|_, d| *d != digest);
            index.images.remove(&digest);
        }
        self.write_index(&index)?;
        tracing::info!(reference, image = %digest, image_removed = remove_image, "removed image reference");
        self.collect_garbage(&index)
    }

    fn lock(&self) -> Result<StoreLock, ImageError> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is involved.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(StoreLock { _file: file });
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(io_error(format!("locking {}", path.display()))(error));
            }
        }
    }

    fn load_index(&self) -> Result<Index, ImageError> {
        let path = self.root.join(INDEX_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(io_error(format!("opening {}", path.display()))(e)),
        };
        let size_bytes = file
            .metadata()
            .map_err(io_error(format!("inspecting {}", path.display())))?
            .len();
        if size_bytes > MAX_INDEX_BYTES {
            return Err(ImageError::TooLarge {
                what: path.display().to_string(),
                limit_bytes: MAX_INDEX_BYTES,
            });
        }
        let index: Index = serde_json::from_reader(io::BufReader::new(file))
            .map_err(|e| ImageError::StoreCorrupt(format!("parsing {}: {e}", path.display())))?;
        index.check()?;
        Ok(index)
    }

    /// Atomically replaces `refs.json`: temporary file, fsync, rename, fsync of the directory.
    /// Callers hold the lock, so one temporary name is enough.
    fn write_index(&self, index: &Index) -> Result<(), ImageError> {
        index.check()?;
        let index = &Index {
            version: INDEX_VERSION,
            ..index.clone()
        };
        let temp = self.root.join(INDEX_TEMP_FILE);
        let path = self.root.join(INDEX_FILE);
        let mut bytes = serde_json::to_vec_pretty(index).expect("the index serializes");
        bytes.push(b'\n');
        let mut file =
            File::create(&temp).map_err(io_error(format!("creating {}", temp.display())))?;
        file.write_all(&bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_error(format!("writing {}", temp.display())))?;
        drop(file);
        fs::rename(&temp, &path).map_err(io_error(format!("replacing {}", path.display())))?;
        File::open(&self.root)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error(format!("syncing {}", self.root.display())))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(BLOBS_DIR).join(digest.hex())
    }

    fn flat_tree_path(&self, digest: &Digest) -> PathBuf {
        self.root.join(ROOTFS_DIR).join(digest.hex())
    }

    fn layer_path(&self, chain_id: &Digest) -> PathBuf {
        self.root.join(LAYERS_DIR).join(chain_id.hex())
    }

    /// Moves a staged, verified blob to its content address (unless it is already there).
    fn store_blob(&self, staged: &archive::StagedFile) -> Result<(), ImageError> {
        let destination = self.blob_path(&staged.digest);
        if destination.exists() {
            return Ok(());
        }
        fs::rename(&staged.path, &destination).map_err(io_error(format!(
            "moving blob {} into {}",
            staged.digest,
            destination.display()
        )))
    }

    /// One `syncfs` makes every blob and layer written by this import durable before the index
    /// names them (cheaper than an fsync per file of an unpacked layer).
    fn sync_filesystem(&self) -> Result<(), ImageError> {
        let root =
            File::open(&self.root).map_err(io_error(format!("opening {}", self.root.display())))?;
        // SAFETY: syncfs on a descriptor we own; no memory is involved.
        if unsafe { libc::syncfs(root.as_raw_fd()) } != 0 {
            return Err(io_error(format!(
                "syncing the filesystem of {}",
                self.root.display()
            ))(io::Error::last_os_error()));
        }
        Ok(())
    }

    fn create_temp_dir(&self, purpose: &str) -> Result<PathBuf, ImageError> {
        let id = NEXT_TEMP_ID.fetch_add(1, Ordering::Relaxed);
        let path = self
            .root
            .join(TMP_DIR)
            .join(format!("{purpose}-{}-{id}", std::process::id()));
        DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_error(format!("creating {}", path.display())))?;
        Ok(path)
    }

    /// Removes a tree: first renamed into `tmp/` (so it disappears from `rootfs/` at once,
    /// never half-deleted), then deleted.
    fn discard_tree(&self, tree: &Path) -> Result<(), ImageError> {
        let trash = self.create_temp_dir("trash")?;
        let moved = trash.join("tree");
        fs::rename(tree, &moved).map_err(io_error(format!("moving {} away", tree.display())))?;
        fs::remove_dir_all(&trash).map_err(io_error(format!("removing {}", trash.display())))
    }

    fn empty_tmp(&self) -> Result<(), ImageError> {
        let tmp = self.root.join(TMP_DIR);
        for entry in fs::read_dir(&tmp).map_err(io_error(format!("listing {}", tmp.display())))? {
            let path = entry
                .map_err(io_error(format!("listing {}", tmp.display())))?
                .path();
            tracing::info!(path = %path.display(), "removing leftovers of an interrupted import");
            let removed = if path.is_dir() && !path.is_symlink() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_error(format!("removing {}", path.display())))?;
        }
        Ok(())
    }

    /// Deletes blobs and trees that `index` does not name. Callers hold the lock.
    fn collect_garbage(&self, index: &Index) -> Result<(), ImageError> {
        let live_blobs: BTreeSet<&Digest> = index
            .images
            .iter()
            .flat_map(|(digest, record)| record.blobs(digest))
            .collect();
        let blobs_dir = self.root.join(BLOBS_DIR);
        for entry in fs::read_dir(&blobs_dir)
            .map_err(io_error(format!("listing {}", blobs_dir.display())))?
        {
            let entry = entry.map_err(io_error(format!("listing {}", blobs_dir.display())))?;
            let name = entry.file_name();
            let live = name
                .to_str()
                .and_then(Digest::from_hex)
                .is_some_and(|digest| live_blobs.contains(&digest));
            if !live {
                tracing::debug!(blob = ?name, "removing unreferenced blob");
                fs::remove_file(entry.path())
                    .map_err(io_error(format!("removing {}", entry.path().display())))?;
            }
        }
        let live_layers: BTreeSet<Digest> = index
            .images
            .values()
            .flat_map(ImageRecord::chain_ids)
            .collect();
        let layers_dir = self.root.join(LAYERS_DIR);
        for entry in fs::read_dir(&layers_dir)
            .map_err(io_error(format!("listing {}", layers_dir.display())))?
        {
            let entry = entry.map_err(io_error(format!("listing {}", layers_dir.display())))?;
            let name = entry.file_name();
            let live = name == MOUNT_TARGETS_DIR
                || name
                    .to_str()
                    .and_then(Digest::from_hex)
                    .is_some_and(|chain| live_layers.contains(&chain));
            if !live {
                tracing::debug!(layer = ?name, "removing unreferenced layer");
                self.discard_tree(&entry.path())?;
            }
        }
        // Whole-image trees of older builds go with their image (and earlier, see
        // `remove_flat_trees`).
        let rootfs_dir = self.root.join(ROOTFS_DIR);
        let trees = match fs::read_dir(&rootfs_dir) {
            Ok(trees) => trees,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(format!("listing {}", rootfs_dir.display()))(e)),
        };
        for entry in trees {
            let entry = entry.map_err(io_error(format!("listing {}", rootfs_dir.display())))?;
            let name = entry.file_name();
            let live = name
                .to_str()
                .and_then(Digest::from_hex)
                .is_some_and(|digest| index.images.contains_key(&digest));
            if !live {
                tracing::debug!(rootfs = ?name, "removing unreferenced rootfs");
                self.discard_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Creates in `tree` what of the mount points (directories 0755, empty files 0644) it lacks.
fn fill_mount_targets(tree: &Path) -> Result<(), ImageError> {
    let directories = std::iter::once(tree.to_path_buf())
        .chain(MOUNT_POINT_DIRS.iter().map(|d| tree.join(d)))
        .chain(
            MOUNT_POINT_FILES
                .iter()
                .filter_map(|f| Path::new(f).parent().map(|p| tree.join(p))),
        );
    for directory in directories {
        if directory.is_dir() {
            continue;
        }
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&directory)
            .and_then(|()| fs::set_permissions(&directory, fs::Permissions::from_mode(0o755)))
            .map_err(io_error(format!("creating {}", directory.display())))?;
    }
    for file in MOUNT_POINT_FILES {
        let path = tree.join(file);
        let created = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
            .and_then(|f| f.set_permissions(fs::Permissions::from_mode(0o644)));
        match created {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error(format!("creating {}", path.display()))(e)),
        }
    }
    Ok(())
}

/// The key under which a store that holds `reference` lists it in `presence_keys`: the
/// normalized `name:tag`, or the digest of a pinned or bare digest reference.
pub fn presence_key(reference: &str) -> Result<String, ImageError> {
    Ok(match reference::parse(reference)? {
        tagged @ Reference::Tagged { .. } => tagged.to_string(),
        Reference::Pinned { digest, .. } | Reference::Digest(digest) => digest.to_string(),
    })
}

/// Top-level directories every container task mounts over (`/proc`, `/sys`, `/dev`).
/// The image store provides them and `MOUNT_POINT_FILES` in one layer that goes on top of
/// a task's image (`ResolvedImage::task_layers`); the bundle binds the host's files onto them.
pub const MOUNT_POINT_DIRS: [&str; 3] = ["proc", "sys", "dev"];

/// Files every container task has the host's copy of bound onto, relative to its root.
pub const MOUNT_POINT_FILES: [&str; 2] = ["etc/resolv.conf", "etc/hosts"];

fn lookup(index: &Index, reference: &Reference) -> Option<Digest> {
    match reference {
        Reference::Tagged { .. } => index.refs.get(&reference.to_string()).cloned(),
        Reference::Pinned { digest, .. } | Reference::Digest(digest) => {
            index.find_by_digest(digest).cloned()
        }
    }
}

fn record_of(plan: &PlannedImage, imported_at_ms: u64) -> ImageRecord {
    ImageRecord {
        manifest_digest: plan.manifest_blob.as_ref().map(|m| m.digest.clone()),
        index_digests: plan.index_digests.clone(),
        config_size_bytes: plan.config_blob.size_bytes,
        layers: plan
            .layers
            .iter()
            .map(|layer| LayerRecord {
                digest: layer.blob.digest.clone(),
                diff_id: layer.diff_id.clone(),
                size_bytes: layer.blob.size_bytes,
            })
            .collect(),
        imported_at_ms,
        config: plan.config.clone(),
    }
}

#[cfg(test)]
mod tests;
