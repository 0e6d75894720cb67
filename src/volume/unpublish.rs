//! NodeUnpublishVolume: check the target, unmount the tmpfs there, remove the directory,
//! forget the volume. Idempotent. A target that is not a valid path under the kubelet root
//! is refused before anything is touched, and a mount keymount may not take (not a whole,
//! unshared, read-write tmpfs) is neither unmounted nor removed.

use super::VolumeService;
use super::blocking::off_runtime;
use crate::mount::{MountError, TargetError, owned};

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
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    #[error(transparent)]
    Mount(#[from] MountError),
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
        let target = self.config.kubelet_root.parse(&req.target_path)?;
        let _guard = self
            .locks
            .try_lock(&req.volume_id)
            .ok_or_else(|| UnpublishError::Busy(req.volume_id.clone()))?;
        off_runtime(move || owned::unmount_and_remove(&target)).await?;
        self.states.remove(&req.volume_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::mount::{self, KubeletRoot, MountError, TargetError, owned};

    const UID: &str = "0b2e1f4c-0000-4000-8000-000000000001";

    fn tmpfs_at(path: &std::path::Path) {
        std::fs::create_dir_all(path).unwrap();
        mount::mount_tmpfs(path, Some(1 << 20)).expect("mount tmpfs (the tests run as root)");
    }

    #[test]
    fn stacked_mounts_are_peeled_and_the_directory_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubeletRoot::new(dir.path()).unwrap();
        let path = root.target_of(UID, "secrets");
        tmpfs_at(&path);
        tmpfs_at(&path);
        let target = root.parse(path.to_str().unwrap()).unwrap();
        owned::unmount_and_remove(&target).unwrap();
        assert!(!path.exists());
        // Again, and on a path never published: nothing to do.
        owned::unmount_and_remove(&target).unwrap();
    }

    #[test]
    fn a_symlink_at_the_target_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = KubeletRoot::new(dir.path()).unwrap();
        let elsewhere = dir.path().join("elsewhere");
        tmpfs_at(&elsewhere);
        let path = root.target_of(UID, "secrets");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &path).unwrap();

        let target = root.parse(path.to_str().unwrap()).unwrap();
        let error = owned::unmount_and_remove(&target).unwrap_err();
        assert!(
            matches!(error, MountError::Target(TargetError::Symlink { .. })),
            "{error}"
        );
        assert!(
            mount::is_mount_point(&elsewhere).unwrap(),
            "the mount the symlink points at is untouched"
        );
        assert!(path.is_symlink(), "the symlink stays");
        assert!(mount::unmount(&elsewhere).unwrap());
    }
}
