//! NodeUnpublishVolume: unmount, remove the directory, forget the volume. Idempotent.

use std::path::PathBuf;

use super::VolumeService;
use super::blocking::off_runtime;
use crate::mount;

/// A validated unpublish call.
#[derive(Debug, Clone)]
pub struct UnpublishRequest {
    pub volume_id: String,
    pub target_path: String,
}

/// Why an unpublish failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpublishError {
    #[error("{0} is missing")]
    MissingField(&'static str),
    #[error("volume {0} is busy with another call; retry")]
    Busy(String),
    #[error("unmount {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("remove {path}: {source}")]
    RemoveDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl VolumeService {
    /// Unmounts and removes the target; absent or unmounted targets are fine.
    #[tracing::instrument(skip_all, fields(volume.id = %req.volume_id))]
    pub async fn unpublish(&self, req: UnpublishRequest) -> Result<(), UnpublishError> {
        let result = self.unpublish_inner(&req).await;
        self.metrics.unpublish(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(target.path = %req.target_path, "volume unpublished"),
            Err(error) => tracing::warn!(%error, "unpublish failed"),
        }
        result
    }

    async fn unpublish_inner(&self, req: &UnpublishRequest) -> Result<(), UnpublishError> {
        if req.volume_id.is_empty() {
            return Err(UnpublishError::MissingField("volume_id"));
        }
        if req.target_path.is_empty() {
            return Err(UnpublishError::MissingField("target_path"));
        }
        let _guard = self
            .locks
            .try_lock(&req.volume_id)
            .ok_or_else(|| UnpublishError::Busy(req.volume_id.clone()))?;
        let target = PathBuf::from(&req.target_path);
        off_runtime(move || remove_target(&target)).await?;
        self.states.remove(&req.volume_id);
        Ok(())
    }
}

/// Unmounts `target` if mounted (repeatedly, in case of stacked mounts) and removes the
/// now-empty directory. Missing is fine.
pub(crate) fn remove_target(target: &std::path::Path) -> Result<(), UnpublishError> {
    let unmount_err = |source| UnpublishError::Unmount {
        path: target.to_owned(),
        source,
    };
    // Stacked mounts are possible (a retried publish on an old kubelet); peel a few layers.
    // umount(2) itself says when nothing is left (EINVAL), so no stat is needed first.
    for _ in 0..4 {
        if !mount::unmount(target).map_err(unmount_err)? {
            break;
        }
    }
    match std::fs::remove_dir(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UnpublishError::RemoveDir {
            path: target.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpfs_at(path: &std::path::Path) {
        std::fs::create_dir_all(path).unwrap();
        mount::mount_tmpfs(path, Some(1 << 20)).expect("mount tmpfs (the tests run as root)");
    }

    #[test]
    fn stacked_mounts_are_peeled_and_the_directory_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("mount");
        tmpfs_at(&target);
        tmpfs_at(&target);
        remove_target(&target).unwrap();
        assert!(!target.exists());
        // Again, and on a path never published: nothing to do.
        remove_target(&target).unwrap();
    }

    #[test]
    fn a_symlink_at_the_target_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let elsewhere = dir.path().join("elsewhere");
        tmpfs_at(&elsewhere);
        let target = dir.path().join("mount");
        std::os::unix::fs::symlink(&elsewhere, &target).unwrap();

        let error = remove_target(&target).unwrap_err();
        assert!(matches!(error, UnpublishError::RemoveDir { .. }), "{error}");
        assert!(
            mount::is_mount_point(&elsewhere).unwrap(),
            "the mount the symlink points at is untouched"
        );
        assert!(mount::unmount(&elsewhere).unwrap());
    }
}
