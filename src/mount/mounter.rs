//! The mount operations of publish, unpublish and start-up behind one trait, so the volume
//! orchestration can run against a fake in its unit tests (no root, no tmpfs).
//! [`LinuxMounter`] is the real one: the syscalls and ownership checks of `owned.rs`.

use std::io;

use super::owned::{self, Found, MountError};
use super::target::{OpenTarget, Target};

/// What the volume orchestration does to a target. Every call may sleep in the kernel
/// (mkdir and rmdir on the kubelet's disk, mount(2), umount(2)): callers run it off the
/// async runtime.
pub(crate) trait Mounter: Send + Sync + std::fmt::Debug {
    /// What `target` holds; a mount keymount may not take is an error. `device` is the one
    /// keymount recorded when it filled the volume: the same tmpfs is then recognised without
    /// reading the node's mount table.
    fn inspect(&self, target: &Target, device: Option<u64>) -> Result<Found, MountError>;

    /// Makes the target directory and mounts a fresh tmpfs of at most `size` bytes on it.
    fn mount_fresh(&self, target: &Target, size: Option<u64>) -> Result<OpenTarget, MountError>;

    /// Undoes [`Mounter::mount_fresh`] after a failed publish: unmounts and removes.
    fn undo_fresh(&self, target: &Target) -> Result<(), MountError>;

    /// Sets nodev, nosuid and noexec on a tmpfs keymount took over.
    fn harden(&self, open: &OpenTarget) -> io::Result<()>;

    /// Unmounts keymount's tmpfs layers at `target` and removes the then empty directory.
    /// `device`, as for [`Mounter::inspect`], spares the mount table's read for the top layer.
    fn unmount_and_remove(&self, target: &Target, device: Option<u64>) -> Result<(), MountError>;
}

/// The node's real mounts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LinuxMounter;

impl Mounter for LinuxMounter {
    fn inspect(&self, target: &Target, device: Option<u64>) -> Result<Found, MountError> {
        match device {
            Some(device) => owned::inspect_recorded(target, device),
            None => owned::inspect(target),
        }
    }

    fn mount_fresh(&self, target: &Target, size: Option<u64>) -> Result<OpenTarget, MountError> {
        owned::mount_fresh(target, size)
    }

    fn undo_fresh(&self, target: &Target) -> Result<(), MountError> {
        owned::undo_fresh(target)
    }

    fn harden(&self, open: &OpenTarget) -> io::Result<()> {
        owned::harden(open)
    }

    fn unmount_and_remove(&self, target: &Target, device: Option<u64>) -> Result<(), MountError> {
        owned::unmount_and_remove(target, device)
    }
}
