//! The only code that calls mount(2) and umount(2).

mod linux;

pub use linux::{is_mount_point, mount_tmpfs, unmount};
