//! A fresh ext4 on a loop device for the benchmarks: figures that do not depend on how many
//! files the machine's own disk has seen come and go.

use std::path::PathBuf;

/// A fresh ext4 on a loop device, unmounted when dropped.
pub(crate) struct FreshDisk {
    base: tempfile::TempDir,
}

impl FreshDisk {
    pub(crate) fn make() -> Self {
        let base = tempfile::tempdir().unwrap();
        let image = base.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(4 << 30)
            .unwrap();
        let run = |program: &str, args: &[&std::ffi::OsStr]| {
            let status = std::process::Command::new(program)
                .args(args)
                .status()
                .unwrap_or_else(|e| panic!("{program}: {e}"));
            assert!(status.success(), "{program} {args:?}: {status}");
        };
        run(
            "mkfs.ext4",
            &["-q".as_ref(), "-F".as_ref(), image.as_os_str()],
        );
        let mnt = base.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        run(
            "mount",
            &[
                "-o".as_ref(),
                "loop".as_ref(),
                image.as_os_str(),
                mnt.as_os_str(),
            ],
        );
        Self { base }
    }

    pub(crate) fn root(&self) -> PathBuf {
        self.base.path().join("mnt")
    }
}

impl Drop for FreshDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.root())
            .status();
    }
}
