//! tmpfs mounts through `nix` (which wraps the syscalls safely).

use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};

/// Mounts a fresh tmpfs at `target` with nodev, nosuid, noexec, a root mode of 0755 and,
/// when given, a size limit in bytes.
pub fn mount_tmpfs(target: &Path, size_limit: Option<u64>) -> io::Result<()> {
    let mut data = String::from("mode=0755");
    if let Some(bytes) = size_limit {
        data.push_str(&format!(",size={bytes}"));
    }
    let flags = MsFlags::MS_NODEV | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(io::Error::from)
}

/// Unmounts the top mount at `target`, never following a symlink there. Returns `false` when
/// nothing was mounted at `target` (or it does not exist), which is not an error.
pub fn unmount(target: &Path) -> io::Result<bool> {
    match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Sets nodev, nosuid and noexec on the mount whose root `root` is open on (a tmpfs keymount
/// took over from the upstream driver, which mounts without them). Per-mount flags only: the
/// tmpfs's size and content stay.
pub(crate) fn harden(root: &std::fs::File) -> io::Result<()> {
    let flags = MsFlags::MS_REMOUNT
        | MsFlags::MS_BIND
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOSUID
        | MsFlags::MS_NOEXEC;
    mount(
        None::<&str>,
        super::target::fd_path(root).as_path(),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(io::Error::from)
}
