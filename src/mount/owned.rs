//! What publish and unpublish do at a checked target: find out what is there, mount a fresh
//! tmpfs, take over a tmpfs found there, and unmount only tmpfs. Every call goes through the
//! pinned target directory (`target.rs`), so a symlink swapped in after the check is not
//! followed, and a mount keymount may not take (`table.rs`) is never written into, unmounted
//! or removed.

use std::io;
use std::path::PathBuf;

use super::linux;
use super::table::{self, AtPath};
use super::target::{OpenTarget, Target, TargetError, fd_path};

/// Stacked tmpfs layers unpublish peels at most (a retried publish on an old kubelet).
const MAX_LAYERS: usize = 4;

/// Why a target could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(
        "target path {path} holds a mount of type {fs_type} that keymount does not own ({why}); it is left as it is"
    )]
    Foreign {
        path: PathBuf,
        fs_type: String,
        why: &'static str,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl MountError {
    fn io<'a>(action: &'static str, target: &'a Target) -> impl FnOnce(io::Error) -> Self + 'a {
        move |source| Self::Io {
            action,
            path: target.path().to_owned(),
            source,
        }
    }
}

/// What a checked target holds.
#[derive(Debug)]
pub(crate) enum Found {
    /// The target directory does not exist.
    Absent,
    /// A directory with nothing mounted on it.
    Directory(OpenTarget),
    /// A tmpfs keymount may take (its own, the upstream driver's, or one it lost track of).
    Tmpfs { target: OpenTarget, hardened: bool },
}

/// Checks `target` on disk and reads the mount table for it. A mount keymount may not take
/// is an error; nothing is created or changed.
pub(crate) fn inspect(target: &Target) -> Result<Found, MountError> {
    let Some(open) = target.open()? else {
        return Ok(Found::Absent);
    };
    // A first publish mostly finds a bare directory: statx says so (no mount of any kind at
    // the path) without reading the mount table, whose size grows with every mount on the
    // node. Anything mounted there, or an older kernel, goes through the table.
    if let Ok(Some(false)) = open.is_mount_root() {
        return Ok(Found::Directory(open));
    }
    let at = table::at_path(open.resolved(), open.pods_dir())
        .map_err(MountError::io("read the mount table for", target))?;
    match at {
        AtPath::NotMounted => Ok(Found::Directory(open)),
        AtPath::Tmpfs { hardened } => Ok(Found::Tmpfs {
            target: open,
            hardened,
        }),
        AtPath::Foreign { fs_type, why } => Err(MountError::Foreign {
            path: target.path().to_owned(),
            fs_type,
            why,
        }),
    }
}

/// [`inspect`] for a target keymount holds a record of (a republish): when the pinned target
/// is still the root of a read-write tmpfs with the device number keymount recorded when it
/// filled it, it is that same tmpfs, and the mount table, whose size grows with every mount on
/// the node, is not read. Anything else (not a mount point any more, another filesystem or
/// device, read-only) goes through [`inspect`].
pub(crate) fn inspect_recorded(target: &Target, device: u64) -> Result<Found, MountError> {
    let Some(open) = target.open()? else {
        return Ok(Found::Absent);
    };
    match still_a_tmpfs(&open, device) {
        Ok(Some(hardened)) => Ok(Found::Tmpfs {
            target: open,
            hardened,
        }),
        Ok(None) | Err(_) => inspect(target),
    }
}

/// `Some(hardened)` when the pinned target is the root of a read-write tmpfs on `device`.
fn still_a_tmpfs(open: &OpenTarget, device: u64) -> io::Result<Option<bool>> {
    use nix::sys::statfs::{TMPFS_MAGIC, fstatfs};
    use nix::sys::statvfs::{FsFlags, fstatvfs};
    use std::os::unix::fs::MetadataExt;

    let dir = open.open_dir()?;
    let here = dir.metadata()?.dev();
    if here != device || here == open.parent_metadata()?.dev() {
        return Ok(None);
    }
    if fstatfs(&dir)?.filesystem_type() != TMPFS_MAGIC {
        return Ok(None);
    }
    let flags = fstatvfs(&dir)?.flags();
    if flags.contains(FsFlags::ST_RDONLY) {
        return Ok(None);
    }
    Ok(Some(flags.contains(
        FsFlags::ST_NODEV | FsFlags::ST_NOSUID | FsFlags::ST_NOEXEC,
    )))
}

/// Makes the target directory (and kubelet's missing parents) and mounts a fresh tmpfs on it;
/// a failed mount removes the target directory again.
pub(crate) fn mount_fresh(target: &Target, size: Option<u64>) -> Result<OpenTarget, MountError> {
    let open = target.create()?;
    let mounted = open
        .open_dir()
        .and_then(|dir| linux::mount_tmpfs(&fd_path(&dir), size));
    if let Err(source) = mounted {
        let _ = std::fs::remove_dir(open.via_fd());
        return Err(MountError::Io {
            action: "mount tmpfs at",
            path: target.path().to_owned(),
            source,
        });
    }
    Ok(open)
}

/// Undoes `mount_fresh` after a failed publish: unmounts the top mount if it is a tmpfs
/// and removes the then empty directory.
pub(crate) fn undo_fresh(target: &Target) -> Result<(), MountError> {
    if let Found::Tmpfs { target: open, .. } = inspect(target)? {
        linux::unmount(&open.via_fd()).map_err(MountError::io("unmount", target))?;
    }
    match inspect(target)? {
        Found::Directory(open) => remove_empty(target, &open),
        Found::Absent | Found::Tmpfs { .. } => Ok(()),
    }
}

/// Sets nodev, nosuid and noexec on a tmpfs keymount took over.
pub(crate) fn harden(open: &OpenTarget) -> io::Result<()> {
    linux::harden(&open.open_dir()?)
}

/// Unmounts the tmpfs layers at `target` and removes the then empty directory; an absent
/// target is fine. A mount that is not a tmpfs keymount may take is refused and left, and so
/// is everything below it. `device` is the one keymount recorded when it filled the volume:
/// the top layer is then recognised as in [`inspect_recorded`], without reading the mount
/// table; every layer below it, and a top that is not that tmpfs any more, go through it.
pub(crate) fn unmount_and_remove(target: &Target, device: Option<u64>) -> Result<(), MountError> {
    let mut recorded = device;
    for _ in 0..MAX_LAYERS {
        let found = match recorded.take() {
            Some(device) => inspect_recorded(target, device)?,
            None => inspect(target)?,
        };
        match found {
            Found::Absent => return Ok(()),
            Found::Directory(open) => return remove_empty(target, &open),
            Found::Tmpfs { target: open, .. } => {
                // UMOUNT_NOFOLLOW, from the pinned parent: exactly the mount inspected.
                linux::unmount(&open.via_fd()).map_err(MountError::io("unmount", target))?;
            }
        }
    }
    Err(MountError::Io {
        action: "unmount",
        path: target.path().to_owned(),
        source: io::Error::other(format!("still mounted after {MAX_LAYERS} unmounts")),
    })
}

/// Removes the target directory, just found with nothing mounted on it, if it is empty
/// (rmdir, never recursive, never through a symlink).
fn remove_empty(target: &Target, open: &OpenTarget) -> Result<(), MountError> {
    match std::fs::remove_dir(open.via_fd()) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(MountError::Io {
            action: "remove",
            path: target.path().to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::mount::{self, KubeletRoot};

    /// True when `target` is the root of a mount: its device differs from its parent's, or it
    /// is the same inode as its parent (the root). A missing path is not a mount point.
    fn is_mount_point(target: &std::path::Path) -> std::io::Result<bool> {
        let meta = match std::fs::symlink_metadata(target) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let parent = target.parent().unwrap_or(std::path::Path::new("/"));
        let parent_meta = std::fs::metadata(parent)?;
        Ok(meta.dev() != parent_meta.dev() || meta.ino() == parent_meta.ino())
    }

    const UID: &str = "0b2e1f4c-0000-4000-8000-000000000001";

    fn tmpfs_at(path: &std::path::Path) {
        std::fs::create_dir_all(path).unwrap();
        mount::mount_tmpfs(path, Some(1 << 20)).expect("mount tmpfs (the tests run as root)");
    }

    /// A pod's target under `dir` with `layers` tmpfs mounted on it, as a path and parsed.
    fn mounted_target(dir: &std::path::Path, layers: usize) -> (std::path::PathBuf, Target) {
        let root = KubeletRoot::new(dir).unwrap();
        let path = root.target_of(UID, "secrets");
        for _ in 0..layers {
            tmpfs_at(&path);
        }
        let target = root.parse(path.to_str().unwrap()).unwrap();
        (path, target)
    }

    #[test]
    fn stacked_mounts_are_peeled_and_the_directory_removed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, target) = mounted_target(dir.path(), 2);
        unmount_and_remove(&target, None).unwrap();
        assert!(!path.exists());
        // Again, and on a path never published: nothing to do.
        unmount_and_remove(&target, None).unwrap();
    }

    #[test]
    fn a_recorded_tmpfs_is_unmounted_and_the_layers_below_it_peeled() {
        let dir = tempfile::tempdir().unwrap();
        let (path, target) = mounted_target(dir.path(), 2);
        let device = std::fs::metadata(&path).unwrap().dev();
        unmount_and_remove(&target, Some(device)).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_recorded_device_does_not_let_a_read_only_tmpfs_be_unmounted() {
        use nix::mount::{MsFlags, mount};

        let dir = tempfile::tempdir().unwrap();
        let (path, target) = mounted_target(dir.path(), 1);
        mount(
            None::<&str>,
            &path,
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .unwrap();
        let device = std::fs::metadata(&path).unwrap().dev();
        let error = unmount_and_remove(&target, Some(device)).unwrap_err();
        assert!(
            matches!(error, MountError::Foreign { .. }),
            "the read-only tmpfs goes through the mount table and is refused: {error}"
        );
        assert!(is_mount_point(&path).unwrap(), "it stays mounted");
        assert!(mount::unmount(&path).unwrap());
    }

    #[test]
    fn a_symlink_at_the_target_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubeletRoot::new(dir.path()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        tmpfs_at(&elsewhere);
        let path = root.target_of(UID, "secrets");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();

        let target = root.parse(path.to_str().unwrap()).unwrap();
        let error = unmount_and_remove(&target, None).unwrap_err();
        assert!(
            matches!(error, MountError::Target(TargetError::Symlink { .. })),
            "{error}"
        );
        assert!(
            is_mount_point(&elsewhere).unwrap(),
            "the mount the symlink points at is untouched"
        );
        assert!(path.is_symlink(), "the symlink stays");
        assert!(mount::unmount(&elsewhere).unwrap());
    }
}
