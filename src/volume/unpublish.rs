//! A NodeUnpublishVolume call: the request the CSI layer hands over and why it can fail. The
//! call itself (check the target, unmount, forget) is `service/unpublish.rs`.

use crate::mount::{MountError, TargetError};

/// A validated unpublish call.
#[derive(Debug, Clone)]
pub struct UnpublishRequest {
    /// The CSI volume id.
    pub volume_id: String,
    /// The target path, as sent (checked before anything is unmounted).
    pub target_path: String,
}

/// Why an unpublish failed.
#[derive(Debug, thiserror::Error)]
pub enum UnpublishError {
    /// A required request field (named) was empty.
    #[error("{0} is missing")]
    MissingField(&'static str),
    /// Another call holds the volume's lock (kubelet retries).
    #[error("volume {0} is busy with another call; retry")]
    Busy(String),
    /// The target path is not a volume path under the kubelet root.
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// Unmounting or removing the target failed.
    #[error(transparent)]
    Mount(#[from] MountError),
}
