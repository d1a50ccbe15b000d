//! Reads an image's layer directories (overlayfs's format, as `unpack` writes them) without
//! mounting them: one file of the merged view (the image's `/etc/passwd`), or the whole view
//! copied into a directory (a task's root where overlayfs cannot be mounted).
//!
//! The layers are the store's own trees, but their symlinks come from images: everything is
//! reached through directory descriptors without following a symlink, so nothing outside the
//! layers and the destination is ever read or written.

use super::unpack::{is_opaque, is_whiteout, open_nofollow};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{readlinkat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, futimens, mkdirat, utimensat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

fn open_directory_at(dir: RawFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    open_nofollow(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
}

fn stat_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => Ok(Some(stat)),
        Err(Errno::ENOENT) => Ok(None),
        Err(errno) => Err(errno),
    }
}

/// Where the merged view of `layers` (bottom first) has the file `relative` (e.g.
/// `etc/passwd`): `Ok(None)` if it has none, an error if the path or the file is a symlink or
/// not a regular file (an image must not make the agent read a host file). The lookup is
/// overlayfs's: the topmost entry wins, directories merge with those below them until one is
/// opaque, a whiteout or non-directory hides everything below it.
pub fn find_file(layers: &[PathBuf], relative: &str) -> Result<Option<PathBuf>, String> {
    let components: Vec<&OsStr> = relative
        .split('/')
        .filter(|c| !c.is_empty())
        .map(OsStr::new)
        .collect();
    let refuse = |what: &str| Err(format!("the image's /{relative} is {what}"));
    let failed = |e: Errno| format!("looking up /{relative} in the image's layers: {e}");
    // The directories that make up the path so far, topmost first, with their layer.
    let mut merged: Vec<(&PathBuf, OwnedFd)> = Vec::new();
    for layer in layers.iter().rev() {
        let root = open_directory_at(libc::AT_FDCWD, layer.as_os_str())
            .map_err(|e| format!("opening {}: {e}", layer.display()))?;
        merged.push((layer, root));
    }
    for (depth, component) in components.iter().enumerate() {
        let last = depth + 1 == components.len();
        let mut next: Vec<(&PathBuf, OwnedFd)> = Vec::new();
        for (layer, dir) in &merged {
            let Some(stat) = stat_at(dir, component).map_err(failed)? else {
                continue;
            };
            if kind(&stat) == SFlag::S_IFDIR {
                if last {
                    return refuse("a directory");
                }
                let child = open_directory_at(dir.as_raw_fd(), component).map_err(failed)?;
                let opaque = is_opaque(&child);
                next.push((layer, child));
                if opaque {
                    break;
                }
                continue;
            }
            // A non-directory below a directory of a higher layer is hidden by it.
            if !next.is_empty() || is_whiteout(&stat) {
                break;
            }
            return match kind(&stat) {
                SFlag::S_IFLNK => refuse("a symlink"),
                // A file where a directory of the path should be: there is no such file.
                _ if !last => Ok(None),
                SFlag::S_IFREG => Ok(Some(
                    components
                        .iter()
                        .fold(layer.to_path_buf(), |p, c| p.join(c)),
                )),
                _ => refuse("not a regular file"),
            };
        }
        if next.is_empty() {
            return Ok(None);
        }
        merged = next;
    }
    refuse("a directory")
}

/// What the merged view of `layers` (bottom first) has at the top-level `name` (`etc`): the
/// topmost layer's entry, not followed if a symlink; `None` where no layer has one or the
/// topmost is a whiteout.
pub fn top_level_entry(layers: &[PathBuf], name: &str) -> Result<Option<FileStat>, String> {
    for layer in layers.iter().rev() {
        let root = open_directory_at(libc::AT_FDCWD, layer.as_os_str())
            .map_err(|e| format!("opening {}: {e}", layer.display()))?;
        match stat_at(&root, OsStr::new(name)) {
            Ok(None) => continue,
            Ok(Some(stat)) if is_whiteout(&stat) => return Ok(None),
            Ok(Some(stat)) => return Ok(Some(stat)),
            Err(e) => return Err(format!("looking up /{name} in {}: {e}", layer.display())),
        }
    }
    Ok(None)
}

/// Copies the merged view of `layers` (bottom first) into `dest`, an existing directory,
/// layer by layer as overlayfs would show them: whiteouts remove, opaque directories hide
/// what is below, owners, modes, mtimes and hard links within a layer are kept. Used where
/// overlayfs cannot be mounted (`dest` is then a task's private copy of its image).
pub fn flatten_layers(layers: &[PathBuf], dest: &Path) -> Result<(), String> {
    let dest_root = open_directory_at(libc::AT_FDCWD, dest.as_os_str())
        .map_err(|e| format!("opening {}: {e}", dest.display()))?;
    for layer in layers {
        let source = open_directory_at(libc::AT_FDCWD, layer.as_os_str())
            .map_err(|e| format!("opening {}: {e}", layer.display()))?;
        let mut copy = LayerCopy {
            layer,
            dest_root: &dest_root,
            links: HashMap::new(),
        };
        copy.merge_directory(&source, &dest_root, &mut Vec::new())?;
    }
    Ok(())
}

/// One layer being copied onto the destination.
struct LayerCopy<'a> {
    layer: &'a Path,
    dest_root: &'a OwnedFd,
    /// Files of this layer with several links: (device, inode) -> where the first landed.
    links: HashMap<(u64, u64), Vec<OsString>>,
}

impl LayerCopy<'_> {
    fn error(&self, path: &[OsString], what: &str) -> impl Fn(Errno) -> String {
        let path: PathBuf = path.iter().collect();
        let message = format!(
            "{what} {} of layer {}",
            path.display(),
            self.layer.display()
        );
        move |errno| format!("{message}: {errno}")
    }

    fn merge_directory(
        &mut self,
        source: &OwnedFd,
        dest: &OwnedFd,
        path: &mut Vec<OsString>,
    ) -> Result<(), String> {
        if is_opaque(source) {
            let names = list(dest).map_err(self.error(path, "listing the copy of"))?;
            for name in names {
                remove_at(dest, &name).map_err(self.error(path, "emptying the copy of"))?;
            }
        }
        for name in list(source).map_err(self.error(path, "listing"))? {
            path.push(name.clone());
            let result = self.merge_entry(source, dest, &name, path);
            path.pop();
            result?;
        }
        Ok(())
    }

    fn merge_entry(
        &mut self,
        source: &OwnedFd,
        dest: &OwnedFd,
        name: &OsStr,
        path: &mut Vec<OsString>,
    ) -> Result<(), String> {
        let stat = stat_at(source, name)
            .map_err(self.error(path, "inspecting"))?
            .ok_or_else(|| format!("{} vanished from {}", lossy(path), self.layer.display()))?;
        let existing = stat_at(dest, name).map_err(self.error(path, "inspecting the copy of"))?;
        let keep_directory =
            kind(&stat) == SFlag::S_IFDIR && existing.is_some_and(|e| kind(&e) == SFlag::S_IFDIR);
        if existing.is_some() && !keep_directory {
            remove_at(dest, name).map_err(self.error(path, "replacing"))?;
        }
        if is_whiteout(&stat) {
            return Ok(());
        }
        let mtime = TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec);
        match kind(&stat) {
            SFlag::S_IFDIR => {
                if !keep_directory {
                    mkdirat(
                        Some(dest.as_raw_fd()),
                        name,
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(self.error(path, "creating"))?;
                }
                let child_source = open_directory_at(source.as_raw_fd(), name)
                    .map_err(self.error(path, "opening"))?;
                let child_dest = open_directory_at(dest.as_raw_fd(), name)
                    .map_err(self.error(path, "opening the copy of"))?;
                self.merge_directory(&child_source, &child_dest, path)?;
                set_metadata(child_dest.as_raw_fd(), &stat, &mtime)
                    .map_err(self.error(path, "setting metadata of"))
            }
            SFlag::S_IFREG => {
                let key = (stat.st_dev, stat.st_ino);
                if stat.st_nlink > 1 {
                    if let Some(first) = self.links.get(&key) {
                        let (first_dir, first_name) = self.open_parent(first)?;
                        return linkat(
                            Some(first_dir.as_raw_fd()),
                            first_name.as_os_str(),
                            Some(dest.as_raw_fd()),
                            name,
                            AtFlags::empty(),
                        )
                        .map_err(self.error(path, "linking"));
                    }
                    self.links.insert(key, path.clone());
                }
                let from = open_nofollow(source.as_raw_fd(), name, OFlag::O_RDONLY)
                    .map_err(self.error(path, "opening"))?;
                let to = open_nofollow(
                    dest.as_raw_fd(),
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                )
                .map_err(self.error(path, "creating"))?;
                let (mut from, mut to) = (File::from(from), File::from(to));
                std::io::copy(&mut from, &mut to)
                    .map_err(|e| format!("copying {}: {e}", lossy(path)))?;
                set_metadata(to.as_raw_fd(), &stat, &mtime)
                    .map_err(self.error(path, "setting metadata of"))
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(Some(source.as_raw_fd()), name)
                    .map_err(self.error(path, "reading"))?;
                symlinkat(target.as_os_str(), Some(dest.as_raw_fd()), name)
                    .map_err(self.error(path, "creating"))?;
                fchownat(
                    Some(dest.as_raw_fd()),
                    name,
                    Some(Uid::from_raw(stat.st_uid)),
                    Some(Gid::from_raw(stat.st_gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(self.error(path, "setting the owner of"))?;
                utimensat(
                    Some(dest.as_raw_fd()),
                    name,
                    &mtime,
                    &mtime,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .map_err(self.error(path, "setting the mtime of"))
            }
            // `unpack` writes no other kind; a task gets its devices from the runtime.
            _ => Ok(()),
        }
    }

    /// The directory holding the already copied `path`, and its name in it.
    fn open_parent<'p>(&self, path: &'p [OsString]) -> Result<(OwnedFd, &'p OsString), String> {
        let (name, parents) = path.split_last().expect("entries have a name");
        let mut current = open_directory_at(self.dest_root.as_raw_fd(), OsStr::new("."))
            .map_err(self.error(path, "opening the copy's root for"))?;
        for parent in parents {
            current = open_directory_at(current.as_raw_fd(), parent)
                .map_err(self.error(path, "opening the directory of"))?;
        }
        Ok((current, name))
    }
}

fn lossy(path: &[OsString]) -> String {
    path.iter().collect::<PathBuf>().display().to_string()
}

/// Owner first: changing it clears setuid/setgid, which the mode then restores.
fn set_metadata(fd: RawFd, stat: &FileStat, mtime: &TimeSpec) -> Result<(), Errno> {
    fchown(
        fd,
        Some(Uid::from_raw(stat.st_uid)),
        Some(Gid::from_raw(stat.st_gid)),
    )?;
    fchmod(fd, Mode::from_bits_truncate(stat.st_mode & 0o7777))?;
    futimens(fd, mtime, mtime)
}

/// The names in a directory, without `.` and `..`.
fn list(dir: &OwnedFd) -> Result<Vec<OsString>, Errno> {
    let mut listing = Dir::openat(
        Some(dir.as_raw_fd()),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(&name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `name` from `dir`, a directory with everything in it, never following a symlink.
fn remove_at(dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    match unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(Errno::EISDIR) => {
            let child = open_directory_at(dir.as_raw_fd(), name)?;
            for grandchild in list(&child)? {
                remove_at(&child, &grandchild)?;
            }
            unlinkat(Some(dir.as_raw_fd()), name, UnlinkatFlags::RemoveDir)
        }
        Err(errno) => Err(errno),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn opaque(dir: &Path) {
        let value = b"y";
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a buffer that outlive the call.
        let result = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                value.as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(result, 0, "{}", std::io::Error::last_os_error());
    }

    #[test]
    fn files_are_found_as_overlayfs_would_show_them() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: opaque markers and whiteouts need root");
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let (lower, upper) = (root.path().join("lower"), root.path().join("upper"));
        fs::create_dir_all(lower.join("etc/sub")).unwrap();
        fs::write(lower.join("etc/passwd"), "root").unwrap();
        fs::write(lower.join("etc/group"), "root").unwrap();
        fs::write(lower.join("etc/sub/x"), "x").unwrap();
        fs::write(lower.join("var"), "a file").unwrap();
        fs::create_dir_all(upper.join("etc/sub")).unwrap();
        fs::create_dir_all(upper.join("var")).unwrap();
        let layers = vec![lower.clone(), upper.clone()];
        let find = |relative: &str| find_file(&layers, relative);

        assert_eq!(find("etc/passwd").unwrap(), Some(lower.join("etc/passwd")));
        assert_eq!(find("etc/sub/x").unwrap(), Some(lower.join("etc/sub/x")));
        assert_eq!(find("etc/none").unwrap(), None);
        assert_eq!(
            find("var/x").unwrap(),
            None,
            "the upper directory hides the file"
        );
        assert!(find("etc").unwrap_err().contains("a directory"));

        nix::sys::stat::mknod(&upper.join("etc/group"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        assert_eq!(find("etc/group").unwrap(), None, "whited out");
        opaque(&upper.join("etc"));
        assert_eq!(
            find("etc/passwd").unwrap(),
            None,
            "hidden by the opaque etc"
        );
        assert_eq!(
            find("etc/sub/x").unwrap(),
            None,
            "hidden by the opaque etc above"
        );

        fs::write(upper.join("etc/passwd"), "mine").unwrap();
        assert_eq!(find("etc/passwd").unwrap(), Some(upper.join("etc/passwd")));
        let top = root.path().join("top");
        fs::create_dir(&top).unwrap();
        std::os::unix::fs::symlink("/etc", top.join("etc")).unwrap();
        let with_symlink = vec![lower, upper, top];
        assert!(find_file(&with_symlink, "etc/passwd")
            .unwrap_err()
            .contains("symlink"));
    }
}
