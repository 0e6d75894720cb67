//! The only code that calls mount(2) and umount(2), and the checks of what may be mounted
//! or unmounted where: target paths under the kubelet root, and ownership of what is there;
//! the operations the volume orchestration uses sit behind the [`Mounter`] trait.

mod linux;
mod mounter;
pub mod owned;
pub mod table;
pub mod target;

pub use linux::{is_mount_point, mount_tmpfs, unmount};
pub use mounter::{LinuxMounter, Mounter};
pub use owned::{Found, MountError};
pub use target::{KubeletRoot, OpenTarget, Target, TargetError};
