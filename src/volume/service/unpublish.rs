//! NodeUnpublishVolume: check the target, unmount the tmpfs there, remove the directory,
//! forget the volume. The tmpfs keymount recorded there is recognised by its device without
//! reading the node's mount table. Idempotent. A target that is not a valid path under the kubelet root
//! is refused before anything is touched, and a mount keymount may not take (not a whole,
//! unshared, read-write tmpfs) is neither unmounted nor removed.

use std::sync::Arc;

use super::VolumeService;
use crate::volume::blocking::off_runtime;
use crate::volume::unpublish::{UnpublishError, UnpublishRequest};

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
        let _lock = self
            .locks
            .try_lock(&req.volume_id)
            .ok_or_else(|| UnpublishError::Busy(req.volume_id.clone()))?;
        // The volume keymount recorded at this target: its tmpfs is known by its device.
        let device = (self.states.get(&req.volume_id)).and_then(|r| r.device_at(target.path()));
        let mounter = Arc::clone(&self.mounter);
        off_runtime(move || mounter.unmount_and_remove(&target, device)).await?;
        self.states.remove(&req.volume_id).await;
        Ok(())
    }
}
