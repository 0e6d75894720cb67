//! The only code that calls mount(2) and umount(2), and the checks of what may be mounted
//! or unmounted where: target paths under the kubelet root, and ownership of what is there;
//! the operations the volume orchestration uses sit behind the [`Mounter`] trait.

mod linux;
mod mounter;
pub(crate) mod owned;
pub(crate) mod table;
pub(crate) mod target;

pub use linux::{mount_tmpfs, unmount};
pub(crate) use mounter::{LinuxMounter, Mounter};
pub(crate) use owned::{Found, MountError};
pub use target::KubeletRoot;
pub(crate) use target::{Target, TargetError};
