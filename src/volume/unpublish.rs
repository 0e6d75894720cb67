//! NodeUnpublishVolume: unmount, remove the directory, forget the volume. Idempotent.

use std::path::PathBuf;

use super::VolumeService;
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
    #[error(transparent)]
    ForgetState(#[from] super::state::StateError),
}

impl VolumeService {
    /// Unmounts and removes the target; absent or unmounted targets are fine.
    #[tracing::instrument(skip_all, fields(volume.id = %req.volume_id))]
    pub async fn unpublish(&self, req: UnpublishRequest) -> Result<(), UnpublishError> {
        let result = self.unpublish_inner(&req);
        self.metrics.unpublish(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(target.path = %req.target_path, "volume unpublished"),
            Err(error) => tracing::warn!(%error, "unpublish failed"),
        }
        result
    }

    fn unpublish_inner(&self, req: &UnpublishRequest) -> Result<(), UnpublishError> {
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
        remove_target(&target)?;
        self.states.remove(&req.volume_id)?;
        drop(_guard);
        self.locks.forget(&req.volume_id);
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
    for _ in 0..4 {
        if !mount::is_mount_point(target).map_err(unmount_err)? {
            break;
        }
        mount::unmount(target).map_err(unmount_err)?;
    }
    match std::fs::remove_dir(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(UnpublishError::RemoveDir {
            path: target.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}
