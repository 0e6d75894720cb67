//! Target paths: a volume goes exactly at
//! `<kubelet root>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume name>/mount`, with no
//! symlink below the kubelet root, checked before anything is created or mounted there.
//!
//! The lexical check (`KubeletRoot::parse`) refuses relative paths, `.`/`..`, doubled
//! slashes, anything outside the root and pod uids or volume names of shapes kubelet never
//! makes. The on-disk check (`Target::open`) lstats every existing component below the root,
//! then pins the volume's directory (the target's parent) with an `O_PATH` descriptor and
//! compares the path the kernel resolved for it with the expected one; every later
//! mkdir/mount/umount/rmdir of the target goes through that descriptor, so a symlink swapped
//! in after the check is never followed. The kubelet root itself may be a symlink (the
//! admin's choice, e.g. `/var/lib/kubelet` → `/data/kubelet`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// kubelet's default `--root-dir`.
pub(crate) const DEFAULT_KUBELET_ROOT: &str = "/var/lib/kubelet";
/// The directory of CSI volumes below a pod's directory.
const CSI_VOLUMES: &str = "kubernetes.io~csi";

/// Why a target path is refused. Everything but `Inspect` is the caller's input.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "target path {path:?} must be absolute and clean, of the form {root}/pods/<pod uid>/volumes/kubernetes.io~csi/<volume name>/mount"
    )]
    Shape { path: String, root: String },
    #[error("target path {path:?}: pod uid {uid:?} is not a pod UID (1 to 64 hex digits and '-')")]
    PodUid { path: String, uid: String },
    #[error(
        "target path {path:?}: volume name {name:?} is not a volume name (a DNS-1123 subdomain)"
    )]
    VolumeName { path: String, name: String },
    #[error("target path {path:?}: {component} is a symlink")]
    Symlink { path: String, component: PathBuf },
    #[error("target path {path:?}: {component} is not a directory")]
    NotDirectory { path: String, component: PathBuf },
    #[error("target path {path:?}: its directory resolves to {resolved}, not {expected}")]
    Moved {
        path: String,
        resolved: PathBuf,
        expected: PathBuf,
    },
    #[error("inspect target path component {component}: {source}")]
    Inspect {
        component: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl TargetError {
    /// True when the path itself is refused (INVALID_ARGUMENT), false for an I/O failure.
    pub(crate) fn is_invalid_path(&self) -> bool {
        !matches!(self, Self::Inspect { .. })
    }
}

/// The kubelet's root directory, as the admin configured it (`--kubelet-root-dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletRoot(PathBuf);

impl Default for KubeletRoot {
    fn default() -> Self {
        Self(PathBuf::from(DEFAULT_KUBELET_ROOT))
    }
}

impl KubeletRoot {
    /// The root `dir`: absolute, without `.`/`..` (a trailing slash is dropped).
    pub fn new(dir: impl Into<PathBuf>) -> Result<Self, String> {
        let dir: PathBuf = dir.into();
        let text = dir.to_str().ok_or("the kubelet root must be UTF-8")?;
        let trimmed = text.trim_end_matches('/');
        let clean = text.starts_with('/')
            && trimmed
                .split('/')
                .skip(1)
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean {
            return Err(format!(
                "kubelet root {text:?} must be an absolute path without '.', '..' or '//'"
            ));
        }
        Ok(Self(PathBuf::from(if trimmed.is_empty() {
            "/"
        } else {
            trimmed
        })))
    }

    /// The root directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where kubelet puts `volume` of pod `pod_uid` (not checked: for tools and tests).
    #[cfg(test)]
    pub(crate) fn target_of(&self, pod_uid: &str, volume: &str) -> PathBuf {
        self.0
            .join("pods")
            .join(pod_uid)
            .join("volumes")
            .join(CSI_VOLUMES)
            .join(volume)
            .join("mount")
    }

    /// Checks the shape of `path` (no filesystem access).
    pub(crate) fn parse(&self, path: &str) -> Result<Target, TargetError> {
        let root = self.0.to_string_lossy();
        let shape = || TargetError::Shape {
            path: path.to_owned(),
            root: root.clone().into_owned(),
        };
        let prefix = if root == "/" {
            String::from("/")
        } else {
            format!("{root}/")
        };
        let rest = path.strip_prefix(&prefix).ok_or_else(shape)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [pods, uid, volumes, csi, name, mount] = parts.as_slice() else {
            return Err(shape());
        };
        if (*pods, *volumes, *csi, *mount) != ("pods", "volumes", CSI_VOLUMES, "mount") {
            return Err(shape());
        }
        if !is_pod_uid(uid) {
            return Err(TargetError::PodUid {
                path: path.to_owned(),
                uid: uid.to_string(),
            });
        }
        if !is_volume_name(name) {
            return Err(TargetError::VolumeName {
                path: path.to_owned(),
                name: name.to_string(),
            });
        }
        Ok(Target {
            root: self.0.clone(),
            path: PathBuf::from(path),
            relative: PathBuf::from(rest),
        })
    }
}

/// A pod UID as kubelet names pod directories: the API server's UUIDs, and the 32 hex digits
/// kubelet derives for static pods.
fn is_pod_uid(uid: &str) -> bool {
    (1..=64).contains(&uid.len()) && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

/// A volume name as kubelet names CSI volume directories: the pod's volume name (a DNS-1123
/// label) or a PersistentVolume's name (a DNS-1123 subdomain).
fn is_volume_name(name: &str) -> bool {
    crate::names::subdomain("volume name", name).is_ok()
}

/// A target path of the right shape (not yet checked on disk).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    root: PathBuf,
    path: PathBuf,
    /// `pods/<uid>/volumes/kubernetes.io~csi/<name>/mount`.
    relative: PathBuf,
}

/// The target's directory (`.../<volume name>`), pinned by a descriptor whose resolved path
/// was checked; the target itself is reached as `/proc/self/fd/<n>/mount` from here on.
#[derive(Debug)]
pub(crate) struct OpenTarget {
    parent: File,
    /// The target's path as the mount table shows it (the root resolved).
    resolved: PathBuf,
}

impl Target {
    /// The target path as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, make: impl FnOnce(String) -> TargetError) -> TargetError {
        make(self.path.to_string_lossy().into_owned())
    }

    /// Lstats each component below the root, in order; `create` makes the missing ones
    /// (one mkdir each, never through a symlink). Returns `false` when a component is
    /// missing and `create` is off.
    fn walk(&self, create: bool) -> Result<bool, TargetError> {
        let mut component = self.root.clone();
        for part in self.relative.iter() {
            component.push(part);
            let meta = match std::fs::symlink_metadata(&component) {
                Ok(meta) => meta,
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    match std::fs::create_dir(&component) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(source) => return Err(TargetError::Inspect { component, source }),
                    }
                    std::fs::symlink_metadata(&component).map_err(|source| {
                        TargetError::Inspect {
                            component: component.clone(),
                            source,
                        }
                    })?
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(source) => return Err(TargetError::Inspect { component, source }),
            };
            if meta.file_type().is_symlink() {
                return Err(self.error(|path| TargetError::Symlink { path, component }));
            }
            if !meta.is_dir() {
                return Err(self.error(|path| TargetError::NotDirectory { path, component }));
            }
        }
        Ok(true)
    }

    /// Checks the target on disk without creating anything. `None` when it does not exist
    /// (nothing to unpublish, or a first publish).
    pub(crate) fn open(&self) -> Result<Option<OpenTarget>, TargetError> {
        // Everything in place (the common case): the pin alone proves no component is a
        // symlink. Anything else is walked component by component for the precise answer.
        if let Ok(pinned) = self.pin() {
            return Ok(Some(pinned));
        }
        if !self.walk(false)? {
            return Ok(None);
        }
        self.pin().map(Some)
    }

    /// Checks the target on disk, making the missing directories (the target included).
    pub(crate) fn create(&self) -> Result<OpenTarget, TargetError> {
        if let Ok(pinned) = self.pin() {
            return Ok(pinned);
        }
        self.walk(true)?;
        self.pin()
    }

    /// Opens the target's directory without following a symlink there and compares the
    /// path the kernel resolved with the expected one, so no component was a symlink.
    fn pin(&self) -> Result<OpenTarget, TargetError> {
        let parent_path = self.path.parent().unwrap_or(&self.root);
        let inspect = |component: &Path| {
            let component = component.to_owned();
            move |source| TargetError::Inspect { component, source }
        };
        let parent = open_dir_nofollow(parent_path).map_err(inspect(parent_path))?;
        let resolved_parent = std::fs::read_link(fd_path(&parent)).map_err(inspect(parent_path))?;
        let root = std::fs::canonicalize(&self.root).map_err(inspect(&self.root))?;
        let expected = root.join(self.relative.parent().unwrap_or(Path::new("")));
        if resolved_parent != expected {
            return Err(self.error(|path| TargetError::Moved {
                path,
                resolved: resolved_parent,
                expected,
            }));
        }
        let pinned = OpenTarget {
            resolved: resolved_parent.join("mount"),
            parent,
        };
        let meta = std::fs::symlink_metadata(pinned.via_fd()).map_err(inspect(&self.path))?;
        if meta.file_type().is_symlink() {
            let component = self.path.clone();
            return Err(self.error(|path| TargetError::Symlink { path, component }));
        }
        if !meta.is_dir() {
            let component = self.path.clone();
            return Err(self.error(|path| TargetError::NotDirectory { path, component }));
        }
        Ok(pinned)
    }
}

/// `/proc/self/fd/<n>`: the magic link to what `file` is open on.
pub(crate) fn fd_path(file: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Opens `path` as an `O_PATH` directory without following a symlink at its last component.
fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_NOFOLLOW | nix::libc::O_DIRECTORY)
        .open(path)
}

impl OpenTarget {
    /// The target's path as `/proc/self/fd/<directory>/mount`: resolved from the pinned
    /// directory, so only the last component is looked up again.
    pub(crate) fn via_fd(&self) -> PathBuf {
        fd_path(&self.parent).join("mount")
    }

    /// The target's path as the mount table shows it.
    pub(crate) fn resolved(&self) -> &Path {
        &self.resolved
    }

    /// The kubelet's pods directory as the mount table shows it.
    pub(crate) fn pods_dir(&self) -> &Path {
        self.resolved.ancestors().nth(5).unwrap_or(Path::new("/"))
    }

    /// Opens the target directory itself (the root of what is mounted there, if anything)
    /// through the pinned parent, never following a symlink.
    pub(crate) fn open_dir(&self) -> io::Result<File> {
        open_dir_nofollow(&self.via_fd())
    }

    /// Whether the target is the root of a mount, from `statx` through the pinned parent
    /// (`STATX_ATTR_MOUNT_ROOT`: set for any mount, bind mounts of the same filesystem
    /// included). `None` when the kernel does not report the attribute (before 5.8).
    pub(crate) fn is_mount_root(&self) -> io::Result<Option<bool>> {
        use rustix::fs::{AtFlags, StatxAttributes, StatxFlags, statx};
        let st = statx(
            &self.parent,
            "mount",
            AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT,
            StatxFlags::TYPE,
        )?;
        let known = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT);
        Ok(known.then(|| st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)))
    }

    /// The metadata of the pinned parent directory (the volume's directory).
    pub(crate) fn parent_metadata(&self) -> io::Result<std::fs::Metadata> {
        self.parent.metadata()
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
