//! Validation of the file paths a provider returns, before anything is written.
//!
//! A provider is outside keymount's trust boundary: a path like `../x`, `/etc/x` or `..data`
//! must never reach the file system.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use super::atomic_writer::room;

/// Bounds on what one volume may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most files in one volume.
    pub(crate) max_files: usize,
    /// Most path components in one file path.
    pub(crate) max_depth: usize,
    /// Most bytes one set may take on the volume's tmpfs: each file rounded up to whole pages,
    /// plus a page for each top-level name too long for its link to live in the inode
    /// (`--tmpfs-size`). The tmpfs is mounted at twice this, see [`Limits::tmpfs_size`].
    pub(crate) max_total_bytes: u64,
}

impl Limits {
    /// The size to mount a volume's tmpfs with: room for two generations of the largest set
    /// these limits accept, the old one and the new one a rotation writes beside it (with both
    /// sets' top-level links), so a rotation always has room.
    pub fn tmpfs_size(&self) -> u64 {
        self.max_total_bytes.saturating_mul(2)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_files: 1024,
            max_depth: 8,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Why a provider-returned file set was refused. Names the path, never the contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    /// An empty path names no file.
    #[error("file path is empty")]
    Empty,
    /// A NUL byte cannot be in a file name.
    #[error("file path {0:?} contains a NUL byte")]
    Nul(String),
    /// An absolute path would leave the volume.
    #[error("file path {0:?} is absolute; only relative paths are allowed")]
    Absolute(String),
    /// A `..` component would climb out of the volume.
    #[error("file path {0:?} has a '..' component")]
    ParentComponent(String),
    /// `.`, empty or trailing components: two spellings of one file.
    #[error("file path {0:?} is not in clean form (no '.', empty or trailing components)")]
    NotClean(String),
    /// Names starting with `..` are the writer's own (`..data`, generations).
    #[error("file path {0:?} starts with '..', which is reserved for the volume's own layout")]
    Reserved(String),
    /// A path longer than the kernel takes.
    #[error("file path {path:?} is too long ({len} bytes, at most {max})")]
    TooLong {
        /// The path refused.
        path: String,
        /// Its length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// A path nested deeper than the limit.
    #[error("file path {path:?} is too deep ({depth} components, at most {max})")]
    TooDeep {
        /// The path refused.
        path: String,
        /// Its number of components.
        depth: usize,
        /// The most allowed.
        max: usize,
    },
    /// Two files of the set at one path.
    #[error("file path {0:?} appears more than once")]
    Duplicate(String),
    /// A file whose path is also the directory of another file.
    #[error("file path {file:?} is also used as a directory by {other:?}")]
    FileDirConflict {
        /// The file.
        file: String,
        /// The file below it.
        other: String,
    },
    /// More files than the limit.
    #[error("too many files: {count}, at most {max}")]
    TooManyFiles {
        /// Files in the set.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// A set that does not fit the volume's tmpfs.
    #[error(
        "files are too large: they take {total} bytes on the volume's tmpfs (each file rounded \
         up to whole pages), at most {max} (--tmpfs-size)"
    )]
    TooLarge {
        /// Bytes the set takes on the tmpfs.
        total: u64,
        /// The tmpfs size.
        max: u64,
    },
    /// A mode with bits beyond the permission bits (setuid, file type, negative).
    #[error("file {path:?} has mode {mode:o}; only permission bits (0 to 0777) are allowed")]
    BadMode {
        /// The file.
        path: String,
        /// The mode the provider sent.
        mode: i64,
    },
}

const MAX_PATH_BYTES: usize = 4096;
const MAX_COMPONENT_BYTES: usize = 255;

/// Checks one relative path: non-empty, relative, clean, no `..`, not reserved, bounded.
pub(crate) fn validate_path(path: &str, limits: &Limits) -> Result<(), PathError> {
    let owned = || path.to_owned();
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.contains('\0') {
        return Err(PathError::Nul(owned()));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong {
            path: owned(),
            len: path.len(),
            max: MAX_PATH_BYTES,
        });
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(owned()));
    }
    let mut depth = 0;
    for raw in path.split('/') {
        match raw {
            ".." => return Err(PathError::ParentComponent(owned())),
            "" | "." => return Err(PathError::NotClean(owned())),
            _ if raw.len() > MAX_COMPONENT_BYTES => {
                return Err(PathError::TooLong {
                    path: owned(),
                    len: raw.len(),
                    max: MAX_COMPONENT_BYTES,
                });
            }
            _ => depth += 1,
        }
    }
    if path.starts_with("..") {
        return Err(PathError::Reserved(owned()));
    }
    if depth > limits.max_depth {
        return Err(PathError::TooDeep {
            path: owned(),
            depth,
            max: limits.max_depth,
        });
    }
    // Defence in depth: the std view must agree that this is a plain relative path.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Err(PathError::NotClean(owned()));
    }
    Ok(())
}

/// Checks a whole file set: every path, modes, duplicates, file/dir clashes, count and size.
pub(crate) fn validate_set<'a>(
    files: impl IntoIterator<Item = (&'a str, i64, u64)>,
    limits: &Limits,
) -> Result<(), PathError> {
    let mut seen = BTreeSet::new();
    let mut top_level = BTreeSet::new();
    let mut sizes = Vec::new();
    let mut total: u64 = 0;
    for (path, mode, size) in files {
        validate_path(path, limits)?;
        if !(0..=0o777).contains(&mode) {
            return Err(PathError::BadMode {
                path: path.to_owned(),
                mode,
            });
        }
        if !seen.insert(path) {
            return Err(PathError::Duplicate(path.to_owned()));
        }
        if seen.len() > limits.max_files {
            return Err(PathError::TooManyFiles {
                count: seen.len(),
                max: limits.max_files,
            });
        }
        top_level.insert(path.split('/').next().unwrap_or(path));
        sizes.push(size);
        total = total.saturating_add(size);
        if total > limits.max_total_bytes {
            return Err(PathError::TooLarge {
                total,
                max: limits.max_total_bytes,
            });
        }
    }
    // What the set takes on tmpfs (pages, long links), so that two generations fit in a
    // tmpfs of `Limits::tmpfs_size`.
    let footprint = room::footprint(sizes, top_level.iter().copied(), room::page_size());
    if footprint > limits.max_total_bytes {
        return Err(PathError::TooLarge {
            total: footprint,
            max: limits.max_total_bytes,
        });
    }
    // A path may not be both a file and a parent directory of another file ("a" and "a/b").
    for path in &seen {
        let prefix = format!("{path}/");
        if let Some(other) = seen.range::<&str, _>(prefix.as_str()..).next()
            && other.starts_with(&prefix)
        {
            return Err(PathError::FileDirConflict {
                file: (*path).to_owned(),
                other: (*other).to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str) -> Result<(), PathError> {
        validate_path(path, &Limits::default())
    }

    #[test]
    fn accepts_plain_and_nested_relative_paths() {
        for ok in [
            "password", "db/user", "a.b-c_d", "tls.crt", "x/..y", "x/y..z",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn refuses_escapes_and_reserved_names() {
        assert!(matches!(check("../x"), Err(PathError::ParentComponent(_))));
        assert!(matches!(
            check("a/../../x"),
            Err(PathError::ParentComponent(_))
        ));
        assert!(matches!(check("/etc/x"), Err(PathError::Absolute(_))));
        assert!(matches!(check(""), Err(PathError::Empty)));
        assert!(matches!(check("a\0b"), Err(PathError::Nul(_))));
        assert!(matches!(check("..data"), Err(PathError::Reserved(_))));
        assert!(matches!(
            check("..2026_01_01_00_00_00.1"),
            Err(PathError::Reserved(_))
        ));
        assert!(matches!(check("./a"), Err(PathError::NotClean(_))));
        assert!(matches!(check("a//b"), Err(PathError::NotClean(_))));
        assert!(matches!(check("a/"), Err(PathError::NotClean(_))));
        assert!(matches!(check(".."), Err(PathError::ParentComponent(_))));
    }

    #[test]
    fn refuses_oversized_and_deep_paths() {
        let long = "a".repeat(256);
        assert!(matches!(check(&long), Err(PathError::TooLong { .. })));
        let deep = ["d"; 9].join("/");
        assert!(matches!(check(&deep), Err(PathError::TooDeep { .. })));
    }

    #[test]
    fn set_refuses_duplicates_conflicts_counts_sizes_and_modes() {
        let page = room::page_size();
        let limits = Limits {
            max_files: 2,
            max_depth: 8,
            max_total_bytes: 2 * page,
        };
        assert!(matches!(
            validate_set([("a", 0o644, 1), ("a", 0o644, 1)], &limits),
            Err(PathError::Duplicate(_))
        ));
        assert!(matches!(
            validate_set([("a", 0o644, 1), ("a/b", 0o644, 1)], &limits),
            Err(PathError::FileDirConflict { .. })
        ));
        assert!(matches!(
            validate_set([("a", 0o644, 1), ("b", 0o644, 1), ("c", 0o644, 1)], &limits),
            Err(PathError::TooManyFiles { .. })
        ));
        assert!(matches!(
            validate_set([("a", 0o644, 2 * page + 1)], &limits),
            Err(PathError::TooLarge { .. })
        ));
        // Counted as tmpfs takes it: whole pages per file, a page for a long top-level name.
        assert_eq!(
            validate_set([("a", 0o644, page), ("b", 0o644, 1)], &limits),
            Ok(())
        );
        assert_eq!(
            validate_set([("a", 0o644, page + 1), ("b", 0o644, 1)], &limits),
            Err(PathError::TooLarge {
                total: 3 * page,
                max: 2 * page
            })
        );
        let long = "l".repeat(200);
        assert!(matches!(
            validate_set([(long.as_str(), 0o644, page)], &limits),
            Ok(())
        ));
        let long_nested = format!("{long}/x");
        assert_eq!(
            validate_set(
                [(long_nested.as_str(), 0o644, page), ("b", 0o644, 1)],
                &limits
            ),
            Err(PathError::TooLarge {
                total: 3 * page,
                max: 2 * page
            })
        );
        assert!(matches!(
            validate_set([("a", 0o4755, 1)], &limits),
            Err(PathError::BadMode { .. })
        ));
        assert_eq!(
            validate_set([("a", 0o600, 5), ("ab/c", 0o644, 5)], &limits),
            Ok(())
        );
    }
}
