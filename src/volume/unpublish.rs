//! A NodeUnpublishVolume call: the request the CSI layer hands over and why it can fail. The
//! call itself (check the target, unmount, forget) is `service/unpublish.rs`.

use crate::mount::{MountError, TargetError};

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
