//! Unpacks one image layer into its own directory in overlayfs's format, so a task's root is
//! an overlay of the image's layer directories and images built on the same base share them.
//!
//! - An OCI whiteout (`dir/.wh.name`) becomes a 0/0 character device at `dir/name`, an opaque
//!   marker (`dir/.wh..wh..opq`) the xattr `trusted.overlay.opaque=y` on `dir`: what overlayfs
//!   itself writes to an upper layer. Only what exists below is marked; a whiteout of a name
//!   the layer itself has is dropped (the layer's entry hides the lower one anyway), or, for
//!   a directory of the layer, makes it opaque.
//! - A layer depends on the layers below it: a directory it implies but does not list (a
//!   parent of one of its entries) takes the owner, mode and mtime the directory has below,
//!   as overlayfs would show the lower directory. So the store keys a layer directory by its
//!   chain id (the layer with everything below it), not by its diff_id.
//!
//! Layers are hostile input. The rules, and how they are kept:
//! - An entry path (or hard-link target) that is absolute or has a `..` component is refused
//!   with `PathEscape`.
//! - Nothing is ever written through a symlink: paths are walked one component at a time with
//!   `openat(O_NOFOLLOW | O_DIRECTORY)` from a descriptor of the tree's root, and the last
//!   component is created with `O_EXCL | O_NOFOLLOW` (or `*at` calls that do not follow). An
//!   entry below a symlink (`a/b` where `a` is a symlink) is refused with `PathEscape`.
//! - A hard link must name an existing non-directory of the same layer, reached the same way
//!   (as docker's overlay2 driver, a link into a lower layer is refused).
//! - A layer is read twice: a first pass hashes the uncompressed stream against the config's
//!   `diff_id` (before anything of it touches the tree), checks every path and collects its
//!   whiteouts; the second pass writes the entries, then the whiteouts are marked. Memory
//!   grows with the number of whiteouts and directories, never with file sizes.
//! - Device nodes of the archive are never created (see below), nor are xattrs restored, so
//!   a layer cannot forge a whiteout or an opaque marker of its own.
//!
//! Assumption: the tree is private to this process while it is built (the store's tmp
//! directory, mode 0700). The one path-based operation (recursive removal of a directory an
//! entry replaces) relies on nobody else changing it underneath. The lower layers are the
//! store's own, read through descriptors without following symlinks.
//!
//! Deliberately not done: device nodes, FIFOs and sockets are skipped (the runtime provides
//! /dev); extended attributes (file capabilities, ACLs, SELinux labels) are not restored;
//! zstd layers are refused.

use super::blob::{open_decompressed, Digest, HashingReader};
use super::ImageError;
use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstatat, futimens, mkdirat, utimensat, FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Longest entry path (or link target) accepted; PATH_MAX on Linux.
const MAX_ENTRY_PATH_BYTES: usize = 4_096;
/// Most whiteouts in one layer (they are held in memory between the two passes).
const MAX_WHITEOUTS_PER_LAYER: usize = 100_000;
/// Most entries in one layer (files, directories, links, whiteouts).
pub(crate) const MAX_ENTRIES_PER_LAYER: u64 = 2_000_000;
/// Most uncompressed bytes of one layer (its tar stream): a small gzip that inflates
/// without end (a decompression bomb) is refused before anything is written.
pub(crate) const MAX_LAYER_UNCOMPRESSED_BYTES: u64 = 16 << 30;
/// Most directories whose metadata is held until the end of the unpack.
const MAX_TRACKED_DIRECTORIES: usize = 500_000;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Marks a directory whose lower-layer contents are hidden.
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";
/// Mode of directories that a layer implies but does not list (like docker).
const IMPLICIT_DIRECTORY_MODE: u32 = 0o755;

/// One layer to unpack.
pub(crate) struct LayerToUnpack<'a> {
    pub(crate) path: &'a Path,
    /// Digest of the uncompressed tar stream, from the image config.
    pub(crate) diff_id: &'a Digest,
    /// Names the layer in messages (its blob digest).
    pub(crate) label: String,
}

/// Unpacks `layer` into `dest`, an existing empty directory, over `lowers`: the directories
/// of the layers below it as this module wrote them, bottom first.
pub(crate) fn unpack_layer(
    layer: &LayerToUnpack<'_>,
    lowers: &[&Path],
    dest: &Path,
) -> Result<(), ImageError> {
    let whiteouts = scan_layer(layer)?;
    let mut tree = Tree::open(dest, lowers)?;
    for whiteout in &whiteouts {
        match whiteout {
            Whiteout::Remove { dir, name } => {
                let mut target = dir.clone();
                target.push(name.clone());
                tree.removed.insert(target);
            }
            Whiteout::Opaque { dir } => {
                tree.opaque.insert(dir.clone());
            }
            Whiteout::Ignored => {}
        }
    }
    extract_layer(&mut tree, layer)?;
    for whiteout in &whiteouts {
        tree.mark_whiteout(whiteout)?;
    }
    tree.finish_directories()
}

/// Checks `layer` against its diff_id and its paths, as unpacking it would, writing nothing:
/// for a layer whose directory the store has already.
pub(crate) fn verify_layer(layer: &LayerToUnpack<'_>) -> Result<(), ImageError> {
    scan_layer(layer).map(drop)
}

/// An entry path split into checked components (never empty, `.` or `..`).
type Components = Vec<OsString>;

fn split_entry_path(raw: &[u8]) -> Result<Components, ImageError> {
    if raw.len() > MAX_ENTRY_PATH_BYTES {
        return Err(ImageError::InvalidArchive(format!(
            "entry path {} is longer than {MAX_ENTRY_PATH_BYTES} bytes",
            String::from_utf8_lossy(&raw[..64])
        )));
    }
    if raw.starts_with(b"/") {
        return Err(path_escape(raw));
    }
    let mut components = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(path_escape(raw)),
            component => components.push(OsStr::from_bytes(component).to_os_string()),
        }
    }
    Ok(components)
}

fn path_escape(raw: &[u8]) -> ImageError {
    ImageError::PathEscape {
        path: String::from_utf8_lossy(raw).into_owned(),
    }
}

fn lossy(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[derive(Debug)]
enum Whiteout {
    /// `dir/.wh.name`: delete `dir/name` from the lower layers.
    Remove { dir: Components, name: OsString },
    /// `dir/.wh..wh..opq`: delete everything the lower layers put in `dir`.
    Opaque { dir: Components },
    /// Other `.wh..wh.*` names are aufs bookkeeping with no meaning here.
    Ignored,
}

/// `Some` if the entry is a whiteout (which is never written to the tree itself).
fn whiteout_of(components: &[OsString], raw: &[u8]) -> Result<Option<Whiteout>, ImageError> {
    let Some((name, dir)) = components.split_last() else {
        return Ok(None);
    };
    let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    let dir = dir.to_vec();
    if name.as_bytes() == OPAQUE_WHITEOUT {
        return Ok(Some(Whiteout::Opaque { dir }));
    }
    if hidden.starts_with(WHITEOUT_PREFIX) {
        return Ok(Some(Whiteout::Ignored));
    }
    match hidden {
        b"" => Err(ImageError::InvalidArchive(format!(
            "whiteout {} names nothing",
            lossy(raw)
        ))),
        b"." | b".." => Err(path_escape(raw)),
        hidden => Ok(Some(Whiteout::Remove {
            dir,
            name: OsStr::from_bytes(hidden).to_os_string(),
        })),
    }
}

/// Owner, permissions and modification time of an entry.
#[derive(Debug, Clone, Copy)]
struct Metadata {
    /// Permission bits including setuid, setgid and sticky.
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
}

fn entry_metadata<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    raw: &[u8],
) -> Result<Metadata, ImageError> {
    let damaged = |e: io::Error| ImageError::InvalidArchive(format!("entry {}: {e}", lossy(raw)));
    let header = entry.header();
    let mode = header.mode().map_err(damaged)? & 0o7777;
    let mut uid = header.uid().map_err(damaged)?;
    let mut gid = header.gid().map_err(damaged)?;
    let mut mtime_secs = header.mtime().map_err(damaged)? as i64;
    let mut mtime_nanos = 0i64;
    // PAX records carry ids and times that do not fit the header fields.
    if let Some(extensions) = entry.pax_extensions().map_err(damaged)? {
        for extension in extensions {
            let extension = extension.map_err(damaged)?;
            let value = extension.value().unwrap_or("");
            match extension.key().unwrap_or("") {
                "uid" => uid = value.parse().map_err(|_| bad_pax(raw, "uid", value))?,
                "gid" => gid = value.parse().map_err(|_| bad_pax(raw, "gid", value))?,
                "mtime" => {
                    (mtime_secs, mtime_nanos) =
                        parse_pax_time(value).ok_or_else(|| bad_pax(raw, "mtime", value))?
                }
                _ => {}
            }
        }
    }
    let id = |value: u64, what: &str| {
        u32::try_from(value).map_err(|_| {
            ImageError::InvalidArchive(format!(
                "entry {}: {what} {value} is out of range",
                lossy(raw)
            ))
        })
    };
    Ok(Metadata {
        mode,
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        mtime: TimeSpec::new(mtime_secs, mtime_nanos),
    })
}

fn bad_pax(raw: &[u8], key: &str, value: &str) -> ImageError {
    ImageError::InvalidArchive(format!("entry {}: bad PAX {key} {value:?}", lossy(raw)))
}

/// PAX times are decimal seconds with an optional fraction: `1700000000.25`.
fn parse_pax_time(value: &str) -> Option<(i64, i64)> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = whole.parse().ok()?;
    let nanos: i64 = format!("{fraction:0<9}")[..9].parse().ok()?;
    // "-1.25" is 1.25 s before the epoch: -2 s plus 0.75 s.
    if whole.starts_with('-') && nanos > 0 {
        Some((secs - 1, 1_000_000_000 - nanos))
    } else {
        Some((secs, nanos))
    }
}

fn tar_error<'a>(layer: &'a LayerToUnpack<'_>) -> impl Fn(io::Error) -> ImageError + 'a {
    move |e| ImageError::InvalidArchive(format!("reading layer {}: {e}", layer.label))
}

/// The bounds of one layer's scan.
#[derive(Debug, Clone, Copy)]
struct LayerLimits {
    entries: u64,
    uncompressed_bytes: u64,
}

const LAYER_LIMITS: LayerLimits = LayerLimits {
    entries: MAX_ENTRIES_PER_LAYER,
    uncompressed_bytes: MAX_LAYER_UNCOMPRESSED_BYTES,
};

/// A reader that fails once more than `left` bytes came through.
struct CappedReader<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(io::Error::other(format!(
                "more than {} bytes uncompressed (a decompression bomb?)",
                self.cap
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// First pass: hashes the uncompressed layer against its diff_id, checks every path and
/// collects the whiteouts. A digest mismatch is reported in preference to a bad path: a
/// damaged layer's paths mean nothing.
fn scan_layer(layer: &LayerToUnpack<'_>) -> Result<Vec<Whiteout>, ImageError> {
    scan_layer_within(layer, LAYER_LIMITS)
}

fn scan_layer_within(
    layer: &LayerToUnpack<'_>,
    limits: LayerLimits,
) -> Result<Vec<Whiteout>, ImageError> {
    let damaged = tar_error(layer);
    let stream = HashingReader::new(CappedReader {
        inner: open_decompressed(layer.path, &format!("layer {}", layer.label))?,
        left: limits.uncompressed_bytes,
        cap: limits.uncompressed_bytes,
    });
    let mut archive = tar::Archive::new(stream);
    let mut whiteouts = Vec::new();
    let mut first_refusal = None;
    for (index, entry) in archive.entries().map_err(&damaged)?.enumerate() {
        if index as u64 >= limits.entries {
            return Err(ImageError::InvalidArchive(format!(
                "layer {} has more than {} entries",
                layer.label, limits.entries
            )));
        }
        let entry = entry.map_err(&damaged)?;
        let raw = entry.path_bytes().into_owned();
        let checked = split_entry_path(&raw).and_then(|components| {
            if entry.header().entry_type().is_hard_link() {
                let target = entry.link_name_bytes().unwrap_or_default();
                split_entry_path(&target)?;
            }
            whiteout_of(&components, &raw)
        });
        match checked {
            Ok(Some(Whiteout::Ignored)) | Ok(None) => {}
            Ok(Some(whiteout)) => {
                if whiteouts.len() >= MAX_WHITEOUTS_PER_LAYER {
                    return Err(ImageError::InvalidArchive(format!(
                        "layer {} has more than {MAX_WHITEOUTS_PER_LAYER} whiteouts",
                        layer.label
                    )));
                }
                whiteouts.push(whiteout);
            }
            Err(refusal) => {
                first_refusal.get_or_insert(refusal);
            }
        }
    }
    let (actual, _) = archive.into_inner().finish().map_err(&damaged)?;
    if &actual != layer.diff_id {
        return Err(ImageError::DigestMismatch {
            expected: layer.diff_id.to_string(),
            actual: actual.to_string(),
        });
    }
    match first_refusal {
        Some(refusal) => Err(refusal),
        None => Ok(whiteouts),
    }
}

/// Second pass: writes every entry that is not a whiteout.
fn extract_layer(tree: &mut Tree, layer: &LayerToUnpack<'_>) -> Result<(), ImageError> {
    let damaged = tar_error(layer);
    let mut archive = tar::Archive::new(open_decompressed(
        layer.path,
        &format!("layer {}", layer.label),
    )?);
    for entry in archive.entries().map_err(&damaged)? {
        let mut entry = entry.map_err(&damaged)?;
        let raw = entry.path_bytes().into_owned();
        let components = split_entry_path(&raw)?;
        if whiteout_of(&components, &raw)?.is_some() {
            continue;
        }
        let kind = entry.header().entry_type();
        let is_root = components.is_empty();
        match kind {
            tar::EntryType::Directory => {
                let metadata = entry_metadata(&mut entry, &raw)?;
                tree.make_directory(&components, &raw, metadata)?;
            }
            _ if is_root => {
                return Err(ImageError::InvalidArchive(format!(
                    "layer {}: entry {:?} of kind {kind:?} names the root",
                    layer.label,
                    lossy(&raw)
                )));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let metadata = entry_metadata(&mut entry, &raw)?;
                tree.write_file(&components, &raw, &mut entry, metadata)?;
            }
            tar::EntryType::Symlink => {
                let metadata = entry_metadata(&mut entry, &raw)?;
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                tree.make_symlink(&components, &raw, &target, metadata)?;
            }
            tar::EntryType::Link => {
                let target = entry.link_name_bytes().unwrap_or_default().into_owned();
                tree.make_hard_link(&components, &raw, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                tracing::debug!(layer = %layer.label, entry = %lossy(&raw), "skipping {kind:?} entry");
            }
            other => {
                tracing::debug!(layer = %layer.label, entry = %lossy(&raw), "skipping entry of unknown kind {other:?}");
            }
        }
    }
    Ok(())
}

/// How `Tree::open_directory` treats a component that is missing, a symlink or a file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Create missing directories; refuse symlinks (`PathEscape`) and files.
    Create,
    /// Everything must exist; refuse symlinks (`PathEscape`), missing paths and files.
    Existing,
    /// Return `None` unless the whole path is real directories.
    IfPresent,
}

/// The tree being built, reached only through a descriptor of its root.
struct Tree {
    root: OwnedFd,
    /// The root's path, for the path-based operations (see the module comment).
    root_path: PathBuf,
    /// Ownership can only be given away as root; unprivileged test runs keep their own ids.
    chown: bool,
    /// Metadata of directories, applied once the layer is in: entries created later would
    /// change a directory's mtime, and a read-only mode could block later writes.
    directories: BTreeMap<PathBuf, Metadata>,
    /// Roots of the layers below, topmost first.
    lowers: Vec<OwnedFd>,
    /// Targets of this layer's `.wh.name` whiteouts: hidden with everything below them.
    removed: BTreeSet<Components>,
    /// Directories with this layer's `.wh..wh..opq`: everything below them is hidden.
    opaque: BTreeSet<Components>,
}

/// What the layers below show at a path: overlayfs's merged view of them.
#[derive(Debug, Clone, Copy)]
enum Lower {
    /// Nothing, a whiteout, or a path through a non-directory.
    Missing,
    /// A directory, with the metadata of its topmost copy (the one overlayfs shows).
    Directory(Metadata),
    /// A file, symlink or other non-directory.
    Other,
}

/// What the layer being unpacked has at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Own {
    Missing,
    Directory,
    /// A non-directory at the path or above it: it hides whatever is below.
    NotDirectory,
}

/// Overlayfs's marker of a directory that hides the lower layers' contents.
const OPAQUE_XATTR: &std::ffi::CStr = c"trusted.overlay.opaque";

fn io_error(context: String) -> impl FnOnce(Errno) -> ImageError {
    move |errno| ImageError::Io {
        context,
        source: io::Error::from(errno),
    }
}

fn is_directory(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

fn is_symlink(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

/// Opens `name` in the directory `dir` without following a symlink (close-on-exec).
pub(crate) fn open_nofollow(dir: RawFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
    let fd = openat(
        Some(dir),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `openat` just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Overlayfs's whiteout: a character device with device number 0/0.
pub(crate) fn is_whiteout(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR && stat.st_rdev == 0
}

/// Whether the directory `fd` carries overlayfs's opaque marker.
pub(crate) fn is_opaque(fd: &OwnedFd) -> bool {
    let mut value = [0u8; 1];
    // SAFETY: a descriptor we own, a NUL-terminated name and a buffer of the given length,
    // all alive for the call.
    let length = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            OPAQUE_XATTR.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    length == 1 && value[0] == b'y'
}

fn metadata_of(stat: &FileStat) -> Metadata {
    Metadata {
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        mtime: TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec),
    }
}

/// Looks `components` up in the merged view of `lowers` (topmost first), as overlayfs does:
/// the topmost entry wins; directories merge with the directories below them until one is
/// opaque; a whiteout or non-directory hides everything below it.
fn lower_entry(lowers: &[OwnedFd], components: &[OsString]) -> Result<Lower, ImageError> {
    let raw = relative_path(components).into_os_string().into_vec();
    let error = |errno| io_error(format!("looking up {} in the layers below", lossy(&raw)))(errno);
    let directory_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let mut merged = Vec::new();
    for lower in lowers {
        let root =
            Tree::open_at(lower.as_raw_fd(), OsStr::new("."), directory_flags).map_err(error)?;
        let opaque = is_opaque(&root);
        merged.push(root);
        if opaque {
            break;
        }
    }
    let Some(top) = merged.first() else {
        return Ok(Lower::Missing);
    };
    let mut metadata = metadata_of(&nix::sys::stat::fstat(top.as_raw_fd()).map_err(error)?);
    for (depth, component) in components.iter().enumerate() {
        let last = depth + 1 == components.len();
        let mut next: Vec<OwnedFd> = Vec::new();
        for dir in &merged {
            let stat = match fstatat(
                Some(dir.as_raw_fd()),
                component.as_os_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            ) {
                Ok(stat) => stat,
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(error(errno)),
            };
            if !is_directory(&stat) {
                if next.is_empty() {
                    return Ok(if last && !is_whiteout(&stat) {
                        Lower::Other
                    } else {
                        Lower::Missing
                    });
                }
                break;
            }
            if next.is_empty() {
                metadata = metadata_of(&stat);
            }
            let fd = Tree::open_at(dir.as_raw_fd(), component, directory_flags).map_err(error)?;
            let opaque = is_opaque(&fd);
            next.push(fd);
            if opaque {
                break;
            }
        }
        if next.is_empty() {
            return Ok(Lower::Missing);
        }
        merged = next;
    }
    Ok(Lower::Directory(metadata))
}

fn relative_path(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

impl Tree {
    fn open(root_path: &Path, lowers: &[&Path]) -> Result<Tree, ImageError> {
        let open_root = |path: &Path| {
            let fd = openat(
                None,
                path,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_error(format!("opening {}", path.display())))?;
            // SAFETY: `openat` just returned this descriptor and nothing else owns it.
            Ok::<_, ImageError>(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        Ok(Tree {
            root: open_root(root_path)?,
            root_path: root_path.to_path_buf(),
            chown: nix::unistd::geteuid().is_root(),
            directories: BTreeMap::new(),
            removed: BTreeSet::new(),
            opaque: BTreeSet::new(),
            lowers: lowers
                .iter()
                .rev()
                .map(|lower| open_root(lower))
                .collect::<Result<_, _>>()?,
        })
    }

    fn open_at(dir: RawFd, name: &OsStr, flags: OFlag) -> Result<OwnedFd, Errno> {
        open_nofollow(dir, name, flags)
    }

    /// Opens the directory `components` (the root if empty) without following any symlink.
    /// A directory created on the way takes the metadata it has in the layers below, if any.
    fn open_directory(
        &mut self,
        components: &[OsString],
        walk: Walk,
        raw: &[u8],
    ) -> Result<Option<OwnedFd>, ImageError> {
        let directory_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let mut current = Tree::open_at(self.root.as_raw_fd(), OsStr::new("."), directory_flags)
            .map_err(io_error(format!("opening {}", self.root_path.display())))?;
        for (depth, component) in components.iter().enumerate() {
            let opened = match Tree::open_at(current.as_raw_fd(), component, directory_flags) {
                Err(Errno::ENOENT) if walk == Walk::Create => {
                    mkdirat(
                        Some(current.as_raw_fd()),
                        component.as_os_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(io_error(format!("creating directory for {}", lossy(raw))))?;
                    let created = Tree::open_at(current.as_raw_fd(), component, directory_flags)
                        .map_err(io_error(format!("opening directory for {}", lossy(raw))))?;
                    // Explicitly, so the umask does not decide what the image's users can see.
                    fchmod(
                        created.as_raw_fd(),
                        Mode::from_bits_truncate(IMPLICIT_DIRECTORY_MODE),
                    )
                    .map_err(io_error(format!(
                        "setting mode of a directory for {}",
                        lossy(raw)
                    )))?;
                    // Not if this layer's whiteouts hide the lower one: the flat view had
                    // removed it before the layer made this one.
                    let implied = &components[..=depth];
                    if !self.hidden_by_own_whiteout(implied, true) {
                        if let Lower::Directory(metadata) = lower_entry(&self.lowers, implied)? {
                            self.track_directory(relative_path(implied), metadata)?;
                        }
                    }
                    Ok(created)
                }
                other => other,
            };
            current = match opened {
                Ok(fd) => fd,
                Err(Errno::ENOENT | Errno::ELOOP | Errno::ENOTDIR) if walk == Walk::IfPresent => {
                    return Ok(None)
                }
                Err(Errno::ENOENT) => {
                    return Err(ImageError::InvalidArchive(format!(
                        "{}: {} does not exist",
                        lossy(raw),
                        relative_path(&components[..=depth]).display()
                    )))
                }
                Err(Errno::ELOOP | Errno::ENOTDIR) => {
                    let stat = fstatat(
                        Some(current.as_raw_fd()),
                        component.as_os_str(),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    );
                    if stat.is_ok_and(|s| is_symlink(&s)) {
                        return Err(path_escape(raw));
                    }
                    return Err(ImageError::InvalidArchive(format!(
                        "{}: {} is not a directory",
                        lossy(raw),
                        relative_path(&components[..=depth]).display()
                    )));
                }
                Err(errno) => {
                    return Err(io_error(format!("opening directory for {}", lossy(raw)))(
                        errno,
                    ))
                }
            };
        }
        Ok(Some(current))
    }

    /// The parent directory of an entry (created as needed) and the entry's own name.
    fn open_parent<'c>(
        &mut self,
        components: &'c [OsString],
        raw: &[u8],
    ) -> Result<(OwnedFd, &'c OsStr), ImageError> {
        let (name, parent) = components.split_last().ok_or_else(|| {
            ImageError::InvalidArchive(format!("entry {:?} has no name", lossy(raw)))
        })?;
        let parent = self
            .open_directory(parent, Walk::Create, raw)?
            .expect("Walk::Create opens or fails");
        Ok((parent, name.as_os_str()))
    }

    fn stat_at(parent: &OwnedFd, name: &OsStr, raw: &[u8]) -> Result<Option<FileStat>, ImageError> {
        match fstatat(Some(parent.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(stat)),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(io_error(format!("inspecting {}", lossy(raw)))(errno)),
        }
    }

    /// Makes room for a new entry `name` in `parent`: removes a non-directory that is there,
    /// and a directory too unless `keep_directory`. Returns whether a directory was kept.
    fn clear(
        &mut self,
        parent: &OwnedFd,
        components: &[OsString],
        raw: &[u8],
        keep_directory: bool,
    ) -> Result<bool, ImageError> {
        let name = components.last().expect("entries have a name").as_os_str();
        match Tree::stat_at(parent, name, raw)? {
            None => Ok(false),
            Some(stat) if is_directory(&stat) => {
                if keep_directory {
                    return Ok(true);
                }
                self.remove_directory_tree(&relative_path(components), raw)?;
                Ok(false)
            }
            Some(_) => {
                unlinkat(Some(parent.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir)
                    .map_err(io_error(format!("replacing {}", lossy(raw))))?;
                Ok(false)
            }
        }
    }

    /// Removes the directory at `relative` and everything in it. `std::fs::remove_dir_all`
    /// never follows symlinks inside the tree; the parents of `relative` were just reached
    /// without following any.
    fn remove_directory_tree(&mut self, relative: &Path, raw: &[u8]) -> Result<(), ImageError> {
        let path = self.root_path.join(relative);
        fs::remove_dir_all(&path).map_err(|source| ImageError::Io {
            context: format!("removing {} for {}", path.display(), lossy(raw)),
            source,
        })?;
        self.forget_directories_under(relative, true);
        Ok(())
    }

    /// Drops the pending metadata of directories under `relative` (and of `relative` itself
    /// if `including_self`), which no longer exist.
    fn forget_directories_under(&mut self, relative: &Path, including_self: bool) {
        // Keys are compared component-wise, so a directory's descendants follow it directly.
        let doomed: Vec<PathBuf> = self
            .directories
            .range(relative.to_path_buf()..)
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(relative))
            .filter(|path| including_self || path.as_path() != relative)
            .cloned()
            .collect();
        for path in doomed {
            self.directories.remove(&path);
        }
    }

    /// What this layer has at `components`, walked without following symlinks.
    fn own_entry(&self, components: &[OsString], raw: &[u8]) -> Result<Own, ImageError> {
        let directory_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
        let mut current = Tree::open_at(self.root.as_raw_fd(), OsStr::new("."), directory_flags)
            .map_err(io_error(format!("opening {}", self.root_path.display())))?;
        for component in components {
            match Tree::stat_at(&current, component, raw)? {
                None => return Ok(Own::Missing),
                Some(stat) if !is_directory(&stat) => return Ok(Own::NotDirectory),
                Some(_) => {}
            }
            current = Tree::open_at(current.as_raw_fd(), component, directory_flags)
                .map_err(io_error(format!("opening directory for {}", lossy(raw))))?;
        }
        Ok(Own::Directory)
    }

    /// Whether this layer's whiteouts hide what the layers below have at `path`: a `.wh.`
    /// of the path or of a directory above it (of the path itself only if `including_self`),
    /// or an opaque marker of a directory above it.
    fn hidden_by_own_whiteout(&self, path: &[OsString], including_self: bool) -> bool {
        let removed_above = (1..path.len()).any(|n| self.removed.contains(&path[..n]));
        let opaque_above = (0..path.len()).any(|n| self.opaque.contains(&path[..n]));
        removed_above || opaque_above || (including_self && self.removed.contains(path))
    }

    /// Writes a whiteout in overlayfs's format, once the layer's own entries are in. One that
    /// another whiteout of the layer covers is dropped: the flat view had nothing left there.
    fn mark_whiteout(&mut self, whiteout: &Whiteout) -> Result<(), ImageError> {
        let (target, opaque) = match whiteout {
            Whiteout::Ignored => return Ok(()),
            Whiteout::Remove { dir, name } => {
                let mut target = dir.clone();
                target.push(name.clone());
                if self.hidden_by_own_whiteout(&target, false) {
                    return Ok(());
                }
                (target, false)
            }
            Whiteout::Opaque { dir } => {
                if self.hidden_by_own_whiteout(dir, true) {
                    return Ok(());
                }
                if dir.is_empty() {
                    return self.mark_root_opaque();
                }
                (dir.clone(), true)
            }
        };
        let raw = relative_path(&target).into_os_string().into_vec();
        match self.own_entry(&target, &raw)? {
            // The layer's own non-directory hides whatever is below it.
            Own::NotDirectory => Ok(()),
            // The layer's own directory: it replaces the lower one (`.wh.name` next to a
            // directory `name`) or hides its contents (`.wh..wh..opq`): both are opaque.
            Own::Directory => self.set_opaque(&target, &raw),
            Own::Missing => match (lower_entry(&self.lowers, &target)?, opaque) {
                (Lower::Missing, _) | (Lower::Other, true) => Ok(()),
                (Lower::Directory(_), true) => {
                    self.open_directory(&target, Walk::Create, &raw)?;
                    self.set_opaque(&target, &raw)
                }
                (_, false) => {
                    let (parent, name) = self.open_parent(&target, &raw)?;
                    nix::sys::stat::mknodat(
                        Some(parent.as_raw_fd()),
                        name,
                        SFlag::S_IFCHR,
                        Mode::empty(),
                        0,
                    )
                    .map_err(io_error(format!(
                        "creating the whiteout of {}",
                        lossy(&raw)
                    )))
                }
            },
        }
    }

    /// `.wh..wh..opq` at the top: overlayfs ignores an opaque marker on a layer's root, so
    /// every top-level name below gets a whiteout and the layer's own top-level directories
    /// the marker.
    fn mark_root_opaque(&mut self) -> Result<(), ImageError> {
        let mut below = BTreeSet::new();
        for lower in &self.lowers {
            let mut listing = nix::dir::Dir::openat(
                Some(lower.as_raw_fd()),
                ".",
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(io_error("listing a lower layer's root".to_string()))?;
            for entry in listing.iter() {
                let entry = entry.map_err(io_error("listing a lower layer's root".to_string()))?;
                let name = entry.file_name().to_bytes();
                if name != b"." && name != b".." {
                    below.insert(OsStr::from_bytes(name).to_os_string());
                }
            }
        }
        for name in below {
            let components = vec![name];
            let raw = components[0].as_bytes().to_vec();
            match self.own_entry(&components, &raw)? {
                Own::NotDirectory => {}
                Own::Directory => self.set_opaque(&components, &raw)?,
                Own::Missing => nix::sys::stat::mknodat(
                    Some(self.root.as_raw_fd()),
                    components[0].as_os_str(),
                    SFlag::S_IFCHR,
                    Mode::empty(),
                    0,
                )
                .map_err(io_error(format!(
                    "creating the whiteout of {}",
                    lossy(&raw)
                )))?,
            }
        }
        Ok(())
    }

    fn set_opaque(&mut self, components: &[OsString], raw: &[u8]) -> Result<(), ImageError> {
        let fd = self
            .open_directory(components, Walk::Existing, raw)?
            .expect("Walk::Existing opens or fails");
        // SAFETY: a descriptor we own, a NUL-terminated name and a one-byte value, all alive
        // for the call.
        let result = unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                OPAQUE_XATTR.as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        if result != 0 {
            return Err(ImageError::Io {
                context: format!("marking {} opaque", lossy(raw)),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn make_directory(
        &mut self,
        components: &[OsString],
        raw: &[u8],
        metadata: Metadata,
    ) -> Result<(), ImageError> {
        if !components.is_empty() {
            let (parent, name) = self.open_parent(components, raw)?;
            if !self.clear(&parent, components, raw, true)? {
                // Private until `finish_directories` gives it its real mode.
                mkdirat(
                    Some(parent.as_raw_fd()),
                    name,
                    Mode::from_bits_truncate(0o700),
                )
                .map_err(io_error(format!("creating directory {}", lossy(raw))))?;
            }
        }
        // A later entry for the same directory wins.
        self.track_directory(relative_path(components), metadata)
    }

    /// Records the metadata `finish_directories` gives the directory at `relative`.
    fn track_directory(&mut self, relative: PathBuf, metadata: Metadata) -> Result<(), ImageError> {
        if !self.directories.contains_key(&relative)
            && self.directories.len() >= MAX_TRACKED_DIRECTORIES
        {
            return Err(ImageError::InvalidArchive(format!(
                "layer has more than {MAX_TRACKED_DIRECTORIES} directories"
            )));
        }
        self.directories.insert(relative, metadata);
        Ok(())
    }

    fn write_file(
        &mut self,
        components: &[OsString],
        raw: &[u8],
        contents: &mut dyn Read,
        metadata: Metadata,
    ) -> Result<(), ImageError> {
        let (parent, name) = self.open_parent(components, raw)?;
        self.clear(&parent, components, raw, false)?;
        let fd = Tree::open_at(
            parent.as_raw_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
        )
        .map_err(io_error(format!("creating {}", lossy(raw))))?;
        let mut file = File::from(fd);
        io::copy(contents, &mut file).map_err(|source| ImageError::Io {
            context: format!("writing {}", lossy(raw)),
            source,
        })?;
        self.set_metadata(file.as_raw_fd(), &metadata, raw)
    }

    fn make_symlink(
        &mut self,
        components: &[OsString],
        raw: &[u8],
        target: &[u8],
        metadata: Metadata,
    ) -> Result<(), ImageError> {
        if target.is_empty() {
            return Err(ImageError::InvalidArchive(format!(
                "symlink {} has no target",
                lossy(raw)
            )));
        }
        let (parent, name) = self.open_parent(components, raw)?;
        self.clear(&parent, components, raw, false)?;
        // The target is stored as is: it is resolved inside the container, never here.
        symlinkat(OsStr::from_bytes(target), Some(parent.as_raw_fd()), name)
            .map_err(io_error(format!("creating symlink {}", lossy(raw))))?;
        if self.chown {
            fchownat(
                Some(parent.as_raw_fd()),
                name,
                Some(Uid::from_raw(metadata.uid)),
                Some(Gid::from_raw(metadata.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io_error(format!("setting owner of symlink {}", lossy(raw))))?;
        }
        utimensat(
            Some(parent.as_raw_fd()),
            name,
            &metadata.mtime,
            &metadata.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(io_error(format!("setting mtime of symlink {}", lossy(raw))))
    }

    fn make_hard_link(
        &mut self,
        components: &[OsString],
        raw: &[u8],
        target: &[u8],
    ) -> Result<(), ImageError> {
        let target_components = split_entry_path(target)?;
        let (target_name, target_dir) = target_components.split_last().ok_or_else(|| {
            ImageError::InvalidArchive(format!("hard link {} has no target", lossy(raw)))
        })?;
        let not_in_layer = || {
            ImageError::InvalidArchive(format!(
                "hard link {} -> {}: the target is not in this layer",
                lossy(raw),
                lossy(target)
            ))
        };
        let target_parent = match self.open_directory(target_dir, Walk::Existing, target) {
            Ok(parent) => parent.expect("Walk::Existing opens or fails"),
            Err(ImageError::InvalidArchive(_))
                if self.own_entry(target_dir, target)? == Own::Missing =>
            {
                return Err(not_in_layer())
            }
            Err(e) => return Err(e),
        };
        match Tree::stat_at(&target_parent, target_name, target)? {
            None => return Err(not_in_layer()),
            Some(stat) if is_directory(&stat) => {
                return Err(ImageError::InvalidArchive(format!(
                    "hard link {} -> {}: the target is a directory",
                    lossy(raw),
                    lossy(target)
                )))
            }
            Some(_) => {}
        }
        if target_components.as_slice() == components {
            return Ok(());
        }
        let (parent, name) = self.open_parent(components, raw)?;
        self.clear(&parent, components, raw, false)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(
            Some(target_parent.as_raw_fd()),
            target_name.as_os_str(),
            Some(parent.as_raw_fd()),
            name,
            AtFlags::empty(),
        )
        .map_err(io_error(format!("creating hard link {}", lossy(raw))))
    }

    /// Owner first: changing it clears setuid/setgid, which the mode then restores.
    fn set_metadata(&self, fd: RawFd, metadata: &Metadata, raw: &[u8]) -> Result<(), ImageError> {
        if self.chown {
            fchown(
                fd,
                Some(Uid::from_raw(metadata.uid)),
                Some(Gid::from_raw(metadata.gid)),
            )
            .map_err(io_error(format!("setting owner of {}", lossy(raw))))?;
        }
        fchmod(fd, Mode::from_bits_truncate(metadata.mode))
            .map_err(io_error(format!("setting mode of {}", lossy(raw))))?;
        futimens(fd, &metadata.mtime, &metadata.mtime)
            .map_err(io_error(format!("setting mtime of {}", lossy(raw))))
    }

    /// Applies the directories' own metadata, deepest first, to those that still exist as
    /// real directories.
    fn finish_directories(mut self) -> Result<(), ImageError> {
        let directories = std::mem::take(&mut self.directories);
        for (relative, metadata) in directories.iter().rev() {
            let components: Components = relative.iter().map(OsStr::to_os_string).collect();
            let raw = relative.as_os_str().as_bytes();
            if let Some(fd) = self.open_directory(&components, Walk::IfPresent, raw)? {
                self.set_metadata(fd.as_raw_fd(), metadata, raw)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_are_split_and_escapes_refused() {
        let names = |raw: &[u8]| -> Vec<String> {
            split_entry_path(raw)
                .unwrap()
                .iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names(b"./bin//busybox"), ["bin", "busybox"]);
        assert!(names(b"./").is_empty());
        assert!(matches!(
            split_entry_path(b"a/../../etc"),
            Err(ImageError::PathEscape { .. })
        ));
        assert!(matches!(
            split_entry_path(b"/etc/passwd"),
            Err(ImageError::PathEscape { .. })
        ));
    }

    #[test]
    fn whiteout_names_are_classified() {
        let classify = |raw: &[u8]| whiteout_of(&split_entry_path(raw).unwrap(), raw);
        assert!(matches!(
            classify(b"a/.wh.b"),
            Ok(Some(Whiteout::Remove { .. }))
        ));
        assert!(matches!(
            classify(b"a/.wh..wh..opq"),
            Ok(Some(Whiteout::Opaque { .. }))
        ));
        assert!(matches!(
            classify(b".wh..wh.plnk"),
            Ok(Some(Whiteout::Ignored))
        ));
        assert!(matches!(
            classify(b"a/.wh..."),
            Err(ImageError::PathEscape { .. })
        ));
        assert!(matches!(classify(b"a/b"), Ok(None)));
    }

    /// Writes `entries` empty files (gzip'd) to a layer file; returns it with its diff_id.
    fn layer_file(dir: &Path, entries: usize, file_bytes: usize) -> (PathBuf, Digest) {
        let mut tar = crate::testimage::LayerTar::new();
        let content = vec![0u8; file_bytes];
        for i in 0..entries {
            tar.file(&format!("f{i}"), 0o644, &content).unwrap();
        }
        let bytes = tar.finish().unwrap();
        let diff_id = Digest::of_bytes(&bytes);
        let path = dir.join("layer.tar.gz");
        let mut gz = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::best(),
        );
        io::Write::write_all(&mut gz, &bytes).unwrap();
        gz.finish().unwrap();
        (path, diff_id)
    }

    #[test]
    fn a_layer_over_its_entry_or_byte_limit_is_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        // 1 MiB of zeros: a few KiB of gzip.
        let (path, diff_id) = layer_file(dir.path(), 4, 256 << 10);
        assert!(std::fs::metadata(&path).unwrap().len() < 16 << 10);
        let layer = LayerToUnpack {
            path: &path,
            diff_id: &diff_id,
            label: "sha256:test".into(),
        };
        let limits = |entries, uncompressed_bytes| LayerLimits {
            entries,
            uncompressed_bytes,
        };
        assert!(scan_layer_within(&layer, limits(4, 2 << 20)).is_ok());
        let error = scan_layer_within(&layer, limits(3, 2 << 20)).unwrap_err();
        assert!(error.to_string().contains("more than 3 entries"), "{error}");
        let error = scan_layer_within(&layer, limits(4, 512 << 10)).unwrap_err();
        assert!(error.to_string().contains("decompression bomb"), "{error}");
    }

    #[test]
    fn pax_times_keep_fractions() {
        assert_eq!(parse_pax_time("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_pax_time("1700000000.25"),
            Some((1_700_000_000, 250_000_000))
        );
        assert_eq!(parse_pax_time("-1.25"), Some((-2, 750_000_000)));
        assert_eq!(parse_pax_time("x"), None);
    }
}
