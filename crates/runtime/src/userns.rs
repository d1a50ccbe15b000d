//! User namespaces for container tasks: the agent's fixed id mapping, and the idmapped
//! mount through which a task's root owns the image's files without a copy or a chown of
//! the image store's tree.
//!
//! Does not create the container's user namespace: libcontainer does that from the OCI
//! config (`bundle::oci_config`). The helper namespace made here only carries the mapping
//! for `mount_setattr(MOUNT_ATTR_IDMAP)` and is gone once the mount exists.

use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// First host uid/gid of the range a task in a user namespace runs as: container id `n` is
/// host id `USERNS_HOST_ID_BASE + n`. Far above the ids distributions hand out to users
/// (1000..60000), to subordinate ranges (/etc/subuid starts at 100000) and to systemd's
/// dynamic users (61184..65519), and below 2^31 (signed 32-bit id bugs). Every such task
/// on an agent shares it: tasks are kept apart by their other namespaces, cgroups and
/// seccomp, not by distinct ids.
pub const USERNS_HOST_ID_BASE: u32 = 1_000_000_000;

/// Container ids mapped (0..65535), the range images use, `nobody` (65534) included.
pub const USERNS_ID_COUNT: u32 = 65_536;

/// Container ids `0..size` are host ids `host_base..host_base + size` (uids and gids alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    pub host_base: u32,
    pub size: u32,
}

impl IdMap {
    /// The mapping every user-namespaced task of an agent gets.
    pub fn agent_default() -> Self {
        IdMap {
            host_base: USERNS_HOST_ID_BASE,
            size: USERNS_ID_COUNT,
        }
    }

    /// The host id of a container id; `None` when it is outside the mapping.
    pub fn host_id(&self, container_id: u32) -> Option<u32> {
        (container_id < self.size).then(|| self.host_base + container_id)
    }
}

/// `struct mount_attr` of <linux/mount.h> (MOUNT_ATTR_SIZE_VER0).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const OPEN_TREE_CLONE: libc::c_uint = 0x01;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x04;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

fn c_path(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| format!("{} contains NUL", path.display()))
}

/// Mounts `source` at `target` with its ids shifted by `map`: a file of host uid `n` shows
/// as `host_base + n`. Must run in a private mount namespace (the shim's): the mount is
/// meant to disappear with it. The source filesystem must support idmapped mounts
/// (ext4, xfs, btrfs, tmpfs on current kernels).
pub fn idmapped_bind(source: &Path, target: &Path, map: IdMap) -> Result<(), String> {
    let userns = mapping_namespace(map)?;
    let source_c = c_path(source)?;
    let target_c = c_path(target)?;
    // SAFETY: open_tree takes a NUL-terminated path and flags; it returns a new descriptor.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            source_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(format!(
            "open_tree {}: {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: open_tree returned a descriptor we own from here on.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the attr struct outlives the call and its size is passed with it.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set < 0 {
        return Err(format!(
            "idmapping {} (mount_setattr): {}",
            source.display(),
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: attaches the detached tree at a NUL-terminated target path.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved < 0 {
        return Err(format!(
            "mounting idmapped {} at {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A user namespace with `map` as its uid and gid mapping, held by a descriptor: a child
/// made only to own it unshares, the mapping is written from here, and the child is killed
/// once the namespace is open (the descriptor keeps it alive).
fn mapping_namespace(map: IdMap) -> Result<OwnedFd, String> {
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the caller (the shim) is single-threaded; the child only makes raw syscalls
    // and never returns.
    let child = match unsafe { nix::unistd::fork() }.map_err(|e| format!("fork: {e}"))? {
        nix::unistd::ForkResult::Child => unsafe {
            let ok: u8 = (libc::unshare(libc::CLONE_NEWUSER) == 0).into();
            libc::write(ready_write.as_raw_fd(), (&ok as *const u8).cast(), 1);
            loop {
                libc::pause();
            }
        },
        nix::unistd::ForkResult::Parent { child } => child,
    };
    drop(ready_write);
    let result = (|| {
        let mut ok = [0u8; 1];
        let n = nix::unistd::read(ready_read.as_raw_fd(), &mut ok)
            .map_err(|e| format!("waiting for the helper namespace: {e}"))?;
        if n != 1 || ok[0] != 1 {
            return Err("unshare(CLONE_NEWUSER) failed in the helper process".to_string());
        }
        let line = format!("0 {} {}\n", map.host_base, map.size);
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{child}/{file}"), &line)
                .map_err(|e| format!("writing {file} of the helper namespace: {e}"))?;
        }
        let ns = std::fs::File::open(format!("/proc/{child}/ns/user"))
            .map_err(|e| format!("opening the helper namespace: {e}"))?;
        Ok(OwnedFd::from(ns))
    })();
    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(child, None);
    result
}

/// A user-namespaced container's root is an unprivileged host id: the kernel lets it walk
/// only into directories searchable by others. Names the first directory above `path`
/// that is not, so a launch fails saying what to change instead of with EACCES in the
/// container's init.
pub fn check_reachable(path: &Path) -> Result<(), String> {
    for dir in path.ancestors().skip(1) {
        if dir.as_os_str().is_empty() {
            continue;
        }
        let mode = std::fs::metadata(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .permissions()
            .mode();
        if mode & 0o001 == 0 {
            return Err(format!(
                "a user namespace's root cannot reach {}: {} is mode {:o}, not searchable by others (chmod o+x)",
                path.display(),
                dir.display(),
                mode & 0o7777
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_outside_the_mapping_have_no_host_id() {
        let map = IdMap::agent_default();
        assert_eq!(map.host_id(0), Some(USERNS_HOST_ID_BASE));
        assert_eq!(map.host_id(65_534), Some(USERNS_HOST_ID_BASE + 65_534));
        assert_eq!(map.host_id(65_536), None);
    }

    #[test]
    fn an_unsearchable_directory_above_is_named() {
        let root = tempfile::tempdir().unwrap();
        let closed = root.path().join("closed");
        std::fs::create_dir_all(closed.join("open")).unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let error = check_reachable(&closed.join("open/rootfs")).unwrap_err();
        assert!(error.contains("closed is mode 700"), "{error}");
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_reachable(&closed.join("open/rootfs")).is_ok());
    }
}
