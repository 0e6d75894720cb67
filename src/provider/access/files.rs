//! Node files a parameter names (a CA bundle, a client certificate and key): opened only
//! beneath a directory the admin lists (`--allowed-file-dirs`), resolved by the kernel with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` so no symbolic link or `..` leads out
//! of it, only regular files, and never more than a bounded number of bytes. Errors name the
//! path, never what the file holds.

use std::io::Read as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat};

/// Largest file read for a parameter (a CA bundle of a few hundred certificates is < 1 MiB).
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;
/// Most entries of a CA directory looked at.
pub(crate) const MAX_DIR_ENTRIES: usize = 1024;
/// Most bytes read from one CA directory, all files together.
pub(crate) const MAX_DIR_BYTES: u64 = 16 << 20;

/// Why a file named by a parameter was not read. Never holds file contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FileError {
    #[error("{0:?} is not an absolute path")]
    NotAbsolute(PathBuf),
    #[error(
        "{0:?} is not beneath a directory this node allows for file parameters \
         (keymount node --allowed-file-dirs)"
    )]
    NotAllowed(PathBuf),
    #[error("{0:?} leads out of the allowed directory (through a symbolic link or `..`)")]
    Escapes(PathBuf),
    #[error("{0:?} is not a regular file")]
    NotRegular(PathBuf),
    #[error("{0:?} is not a directory")]
    NotDirectory(PathBuf),
    #[error("{path:?} is larger than {max} bytes")]
    TooLarge { path: PathBuf, max: u64 },
    #[error("{path:?} holds more than {max} entries")]
    TooManyEntries { path: PathBuf, max: usize },
    #[error("{path:?}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error(
        "this kernel has no openat2(2) (Linux 5.6 or later), which keymount needs to open \
         file parameters beneath --allowed-file-dirs safely"
    )]
    NoOpenat2,
}

/// The directories beneath which parameters may name files. Empty: no file parameter at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowedDirs {
    dirs: Vec<PathBuf>,
}

/// Where a file lies: an allowed directory and the path below it.
#[derive(Debug)]
struct Beneath<'a> {
    root: &'a Path,
    rest: PathBuf,
}

impl AllowedDirs {
    /// The admin's list; empty entries are dropped, relative ones refused.
    pub(crate) fn new(dirs: &[PathBuf]) -> Result<Self, String> {
        let mut out = Vec::new();
        for dir in dirs.iter().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_absolute() {
                return Err(format!("--allowed-file-dirs: {dir:?} is not absolute"));
            }
            out.push(dir.clone());
        }
        // The most specific directory first.
        out.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        Ok(Self { dirs: out })
    }

    /// True when no directory is allowed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The allowed directory `path` names something beneath (lexically; the kernel checks
    /// links and `..` when opening).
    fn locate<'a>(&'a self, path: &Path) -> Result<Beneath<'a>, FileError> {
        if !path.is_absolute() {
            return Err(FileError::NotAbsolute(path.to_owned()));
        }
        for root in &self.dirs {
            if let Ok(rest) = path.strip_prefix(root) {
                let rest = if rest.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    rest.to_owned()
                };
                return Ok(Beneath { root, rest });
            }
        }
        Err(FileError::NotAllowed(path.to_owned()))
    }

    /// Reads the regular file `path` (at most [`MAX_FILE_BYTES`]) if it lies beneath an
    /// allowed directory.
    pub(crate) fn read_file(&self, path: &Path) -> Result<Vec<u8>, FileError> {
        let at = self.locate(path)?;
        let root = open_root(at.root, path)?;
        let file = open_beneath(&root, &at.rest, path, OFlag::empty())?;
        read_regular(file, path, MAX_FILE_BYTES)
    }

    /// Reads every regular file directly in the directory `path` (at most
    /// [`MAX_DIR_ENTRIES`] entries and [`MAX_DIR_BYTES`] together), each resolved beneath
    /// the allowed directory; entries that lead out of it, or are not regular files, are
    /// skipped. Returned in name order.
    pub(crate) fn read_dir(&self, path: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, FileError> {
        let at = self.locate(path)?;
        let root = open_root(at.root, path)?;
        let dir = open_beneath(&root, &at.rest, path, OFlag::O_DIRECTORY)?;
        let mut names = Vec::new();
        let mut dir = nix::dir::Dir::from_fd(dir).map_err(|e| io_error(path, e))?;
        for entry in dir.iter() {
            let entry = entry.map_err(|e| io_error(path, e))?;
            let name = std::ffi::OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if names.len() == MAX_DIR_ENTRIES {
                return Err(FileError::TooManyEntries {
                    path: path.to_owned(),
                    max: MAX_DIR_ENTRIES,
                });
            }
            names.push(PathBuf::from(name));
        }
        read_entries(path, names, |name, shown| {
            open_beneath(&root, &at.rest.join(name), shown, OFlag::empty())
                .and_then(|fd| read_regular(fd, shown, MAX_FILE_BYTES))
        })
    }
}

/// Reads the entries `names` of the directory `dir` in name order with `read`, skipping the
/// ones it refuses, within [`MAX_DIR_BYTES`].
fn read_entries(
    dir: &Path,
    mut names: Vec<PathBuf>,
    read: impl Fn(&Path, &Path) -> Result<Vec<u8>, FileError>,
) -> Result<Vec<(PathBuf, Vec<u8>)>, FileError> {
    names.sort();
    let mut total = 0u64;
    let mut files = Vec::new();
    for name in names {
        let shown = dir.join(&name);
        match read(&name, &shown) {
            Ok(bytes) => {
                total += bytes.len() as u64;
                if total > MAX_DIR_BYTES {
                    return Err(FileError::TooLarge {
                        path: dir.to_owned(),
                        max: MAX_DIR_BYTES,
                    });
                }
                files.push((shown, bytes));
            }
            Err(FileError::NoOpenat2) => return Err(FileError::NoOpenat2),
            Err(skipped) => tracing::debug!(%skipped, "CA directory entry skipped"),
        }
    }
    Ok(files)
}

fn io_error(path: &Path, errno: Errno) -> FileError {
    FileError::Open {
        path: path.to_owned(),
        reason: errno.desc().to_owned(),
    }
}

/// The allowed directory itself (the admin's path: opened normally).
fn open_root(root: &Path, shown: &Path) -> Result<OwnedFd, FileError> {
    nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(shown, e))
}

/// Opens `rest` beneath `root` for reading: the kernel refuses any step out of `root`
/// (absolute links, `..` above it, `/proc` magic links). `O_NONBLOCK` so a FIFO cannot stall
/// the open; the caller checks the file type with `fstat`.
fn open_beneath(
    root: &OwnedFd,
    rest: &Path,
    shown: &Path,
    extra: OFlag,
) -> Result<OwnedFd, FileError> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | extra)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(root.as_fd(), rest, how).map_err(|errno| match errno {
        Errno::EXDEV | Errno::ELOOP => FileError::Escapes(shown.to_owned()),
        Errno::ENOSYS => FileError::NoOpenat2,
        Errno::ENOTDIR if extra.contains(OFlag::O_DIRECTORY) => {
            FileError::NotDirectory(shown.to_owned())
        }
        other => io_error(shown, other),
    })
}

/// Reads an open file if it is a regular one, at most `max` bytes.
fn read_regular(fd: OwnedFd, shown: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let stat = fstat(fd.as_fd()).map_err(|e| io_error(shown, e))?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(FileError::NotRegular(shown.to_owned()));
    }
    let too_large = || FileError::TooLarge {
        path: shown.to_owned(),
        max,
    };
    if u64::try_from(stat.st_size).unwrap_or(u64::MAX) > max {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| FileError::Open {
            path: shown.to_owned(),
            reason: e.kind().to_string(),
        })?;
    if bytes.len() as u64 > max {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Reads a file the admin named with a flag (trusted: no directory restriction), still only
/// a regular file and at most [`MAX_FILE_BYTES`].
pub(crate) fn read_admin_file(path: &Path) -> Result<Vec<u8>, FileError> {
    let fd = nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_error(path, e))?;
    read_regular(fd, path, MAX_FILE_BYTES)
}

/// Reads the regular files of a directory the admin named with a flag, following links as
/// given (e.g. `/etc/ssl/certs`, whose entries link elsewhere), with the same bounds.
pub(crate) fn read_admin_dir(path: &Path) -> Result<Vec<(PathBuf, Vec<u8>)>, FileError> {
    let failed = |e: std::io::Error| FileError::Open {
        path: path.to_owned(),
        reason: e.kind().to_string(),
    };
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path).map_err(failed)? {
        if names.len() == MAX_DIR_ENTRIES {
            return Err(FileError::TooManyEntries {
                path: path.to_owned(),
                max: MAX_DIR_ENTRIES,
            });
        }
        names.push(PathBuf::from(entry.map_err(failed)?.file_name()));
    }
    read_entries(path, names, |_, shown| read_admin_file(shown))
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
