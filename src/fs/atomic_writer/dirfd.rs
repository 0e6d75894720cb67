//! No-follow file operations relative to the volume's directory fd: nothing here resolves a
//! path through a symlink or descends into another mount, so a link planted in the volume
//! cannot redirect a read, a write or a removal outside it.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::NixPath;
use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, UnlinkatFlags, fchown, fchownat, symlinkat, unlinkat};

/// A single path component: `str` or `OsStr` (names read back may not be UTF-8).
pub(crate) trait Name: NixPath + AsRef<Path> {}
impl<T: ?Sized + NixPath + AsRef<Path>> Name for T {}

/// What an entry is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// A directory opened without following a symlink, with the device it lives on.
#[derive(Debug)]
pub(crate) struct DirFd {
    fd: OwnedFd,
    dev: u64,
    /// For error messages only; never used to reach the file system.
    pub path: PathBuf,
}

fn open_dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn kind_of(stat: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFDIR => Kind::Dir,
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl DirFd {
    /// Opens `path` as a directory; a symlink as its last component is refused.
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        let fd = openat(nix::fcntl::AT_FDCWD, path, open_dir_flags(), Mode::empty())?;
        let dev = fstat(&fd)?.st_dev;
        Ok(Self {
            fd,
            dev,
            path: path.to_owned(),
        })
    }

    /// Opens the child directory `name` (one component), refusing a symlink and a directory
    /// on another device (a mount inside the volume is never entered).
    pub(super) fn child<N: ?Sized + Name>(&self, name: &N) -> io::Result<Self> {
        let fd = openat(&self.fd, name, open_dir_flags(), Mode::empty())?;
        let dev = fstat(&fd)?.st_dev;
        if dev != self.dev {
            return Err(io::Error::other(format!(
                "{} is on another file system (a mount inside the volume); not entered",
                self.path.join(name.as_ref()).display()
            )));
        }
        Ok(Self {
            fd,
            dev,
            path: self.path.join(name.as_ref()),
        })
    }

    /// Opens the directory at a relative path, one component at a time, no symlink followed.
    pub(crate) fn descend(&self, rel: &str) -> io::Result<Self> {
        let mut parts = rel.split('/');
        let first = parts.next().unwrap_or(".");
        let mut dir = self.child(first)?;
        for part in parts {
            dir = dir.child(part)?;
        }
        Ok(dir)
    }

    /// The entry `name`, not followed; `None` when it does not exist.
    pub(super) fn kind<N: ?Sized + Name>(&self, name: &N) -> io::Result<Option<Kind>> {
        match fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => Ok(Some(kind_of(&stat))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Names and kinds of the entries, without `.` and `..` (never followed).
    pub(super) fn list(&self) -> io::Result<Vec<(OsString, Kind)>> {
        // A fresh open file description: its own offset, whatever other listings did.
        let mut dir = Dir::openat(&self.fd, ".", open_dir_flags(), Mode::empty())?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name = OsStr::from_bytes(bytes).to_owned();
            let kind = match entry.file_type() {
                Some(Type::Directory) => Kind::Dir,
                Some(Type::File) => Kind::File,
                Some(Type::Symlink) => Kind::Symlink,
                Some(_) => Kind::Other,
                None => match self.kind(name.as_os_str())? {
                    Some(kind) => kind,
                    None => continue,
                },
            };
            out.push((name, kind));
        }
        Ok(out)
    }

    /// The target of the symlink `name`, read without following it.
    pub(super) fn read_link<N: ?Sized + Name>(&self, name: &N) -> io::Result<OsString> {
        Ok(readlinkat(&self.fd, name)?)
    }

    /// Creates the symlink `name` -> `dest`.
    pub(super) fn symlink(&self, dest: &str, name: &str) -> io::Result<()> {
        Ok(symlinkat(dest, &self.fd, name)?)
    }

    /// Creates the directory `name` with exactly `mode`.
    pub(super) fn mkdir(&self, name: &str, mode: u32) -> io::Result<Self> {
        mkdirat(&self.fd, name, Mode::from_bits_truncate(mode))?;
        let dir = self.child(name)?;
        // The umask may have narrowed the mode.
        fchmod(&dir.fd, Mode::from_bits_truncate(mode))?;
        Ok(dir)
    }

    /// The group of this directory.
    pub(super) fn group(&self) -> io::Result<u32> {
        Ok(fstat(&self.fd)?.st_gid)
    }

    /// Gives this directory (the open one, never a path) to group `gid`; nothing is
    /// changed when it has that group already.
    pub(crate) fn set_group(&self, gid: u32) -> io::Result<()> {
        if self.group()? != gid {
            fchown(&self.fd, None, Some(Gid::from_raw(gid)))?;
        }
        Ok(())
    }

    /// Gives the entry `name` of this directory to group `gid`, without following it (a
    /// symlink's own group is changed, never its target's).
    pub(crate) fn set_entry_group<N: ?Sized + Name>(&self, name: &N, gid: u32) -> io::Result<()> {
        Ok(fchownat(
            &self.fd,
            name,
            None,
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?)
    }

    /// The group of the entry `name`, not followed.
    pub(crate) fn entry_group<N: ?Sized + Name>(&self, name: &N) -> io::Result<u32> {
        Ok(fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?.st_gid)
    }

    /// Creates the regular file `name` (it must not exist) for writing, mode 0600 until the
    /// caller sets the final mode.
    pub(crate) fn create_file(&self, name: &str) -> io::Result<File> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600))?;
        Ok(File::from(fd))
    }

    /// Opens the regular file `name` for reading; a symlink or anything else is refused.
    pub(crate) fn open_file(&self, name: &str) -> io::Result<File> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = openat(&self.fd, name, flags, Mode::empty())?;
        let stat = fstat(&fd)?;
        if kind_of(&stat) != Kind::File {
            return Err(io::Error::other("not a regular file"));
        }
        Ok(File::from(fd))
    }

    /// Renames `from` to `to` in this directory (replacing `to` when it is a file or link).
    pub(super) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        Ok(renameat(&self.fd, from, &self.fd, to)?)
    }

    /// Atomically exchanges the entries `a` and `b` (both must exist).
    pub(crate) fn exchange(&self, a: &str, b: &str) -> io::Result<()> {
        // renameat2(2) through rustix's raw syscall: nix wraps it for glibc only, and the
        // image's binary is built for musl.
        rustix::fs::renameat_with(&self.fd, a, &self.fd, b, rustix::fs::RenameFlags::EXCHANGE)?;
        Ok(())
    }

    /// Removes the entry `name` and, if it is a directory, everything below it. Symlinks are
    /// removed, never followed; a directory on another device (a mount) is refused. A missing
    /// entry is not an error.
    pub(crate) fn remove_tree<N: ?Sized + Name>(&self, name: &N) -> io::Result<()> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(()),
            // Linux answers EISDIR for unlink(2) of a directory.
            Err(Errno::EISDIR) | Err(Errno::EPERM) => {}
            Err(e) => return Err(e.into()),
        }
        let dir = match self.child(name) {
            Ok(dir) => dir,
            Err(e) if e.raw_os_error() == Some(Errno::ENOENT as i32) => return Ok(()),
            Err(e) => return Err(e),
        };
        for (entry, _) in dir.list()? {
            dir.remove_tree(entry.as_os_str())?;
        }
        match unlinkat(&self.fd, name, UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Room on the file system: bytes and inodes.
    pub(super) fn space(&self) -> io::Result<Space> {
        let stat = nix::sys::statvfs::fstatvfs(&self.fd)?;
        let block = stat.fragment_size().max(1) as u64;
        Ok(Space {
            available: stat.blocks_available() as u64 * block,
            total: stat.blocks() as u64 * block,
            block: stat.block_size().max(1) as u64,
            inodes_free: stat.files_available() as u64,
            inodes_total: stat.files() as u64,
        })
    }
}

/// Room on a volume's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Space {
    pub(crate) available: u64,
    /// 0 when the file system has no size limit.
    pub total: u64,
    pub block: u64,
    pub(crate) inodes_free: u64,
    /// 0 when the file system has no inode limit.
    pub(crate) inodes_total: u64,
}
