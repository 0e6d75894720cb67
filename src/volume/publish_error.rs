//! Why a publish failed, and the metrics `error_type` of each cause.

use super::context::ContextError;
use crate::class::LookupError;
use crate::fs::atomic_writer::WriteError;
use crate::fs::group::{FsGroup, FsGroupError};
use crate::fs::paths::PathError;
use crate::mount::{MountError, TargetError};
use crate::provider::access::OverrideError;
use crate::provider::tokens::TokensError;
use crate::provider::{ProviderError, ResolveError};
use crate::sync::SyncError;

/// Why a publish failed. Messages name the field, class, provider or path; never a value.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("{0} is missing")]
    MissingField(&'static str),
    #[error("block volumes are not supported; use a mount volume")]
    BlockVolume,
    #[error("readonly must be true: secrets volumes are mounted read-only")]
    NotReadonly,
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    #[error(transparent)]
    Context(#[from] ContextError),
    #[error(transparent)]
    Tokens(#[from] TokensError),
    #[error(transparent)]
    FsGroup(#[from] FsGroupError),
    #[error(
        "volume {volume} was published for group {had}; a publish for group {sent} is refused (the files keep group {had})"
    )]
    FsGroupChanged {
        volume: String,
        had: FsGroup,
        sent: FsGroup,
    },
    #[error("read the fsGroup of pod {pod}: {source}")]
    PodFsGroup {
        pod: String,
        #[source]
        source: crate::kube_errors::ApiError,
    },
    #[error("pod {pod}: {why}")]
    PodMismatch { pod: String, why: String },
    #[error("volume {0} is busy with another call; retry")]
    Busy(String),
    #[error("keymount is shutting down; retry")]
    ShuttingDown,
    #[error(transparent)]
    LookupClass(#[from] LookupError),
    #[error("SecretProviderClass {class} has no spec.provider")]
    ClassWithoutProvider { class: String },
    #[error("SecretProviderClass {class} has no spec.parameters")]
    ClassWithoutParameters { class: String },
    #[error("SecretProviderClass {class}: {source}")]
    ResolveProvider {
        class: String,
        #[source]
        source: ResolveError,
    },
    #[error("SecretProviderClass {class}: {source}")]
    VolumeAttribute {
        class: String,
        #[source]
        source: OverrideError,
    },
    #[error("SecretProviderClass {class}: provider {provider:?} failed: {source}")]
    Provider {
        class: String,
        provider: String,
        #[source]
        source: ProviderError,
    },
    #[error("SecretProviderClass {class}: provider {provider:?} did not answer within {seconds}s")]
    ProviderTimeout {
        class: String,
        provider: String,
        seconds: u64,
    },
    #[error(
        "SecretProviderClass {class}: provider {provider:?} returned an unsafe file set: {source}"
    )]
    InvalidFiles {
        class: String,
        provider: String,
        #[source]
        source: PathError,
    },
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("write files: {0}")]
    WriteFiles(#[from] WriteError),
    #[error("update SecretProviderClassPodStatus {name}: {source}")]
    UpdatePodStatus {
        name: String,
        #[source]
        source: crate::kube_errors::ApiError,
    },
    #[error("sync secretObjects of SecretProviderClass {class}: {source}")]
    SyncSecret {
        class: String,
        #[source]
        source: Box<SyncError>,
    },
}

impl PublishError {
    /// The metrics `error_type` label (upstream's names where one exists).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingField(_)
            | Self::BlockVolume
            | Self::NotReadonly
            | Self::Context(_)
            | Self::Tokens(_)
            | Self::FsGroup(_)
            | Self::VolumeAttribute { .. } => "InvalidArgument",
            Self::FsGroupChanged { .. } | Self::PodMismatch { .. } => "FailedPrecondition",
            Self::PodFsGroup { .. } => "FailedToGetPod",
            Self::Busy(_) | Self::ShuttingDown => "Busy",
            Self::LookupClass(_)
            | Self::ClassWithoutProvider { .. }
            | Self::ClassWithoutParameters { .. } => "SecretProviderClassNotFound",
            Self::ResolveProvider { .. } => "FailedToLookupProviderGRPCClient",
            Self::Provider { source, .. } => source.reason(),
            Self::ProviderTimeout { .. } => "GRPCProviderError",
            Self::InvalidFiles { .. } | Self::WriteFiles(_) => "FileWriteError",
            Self::BadTarget(e) | Self::Mount(MountError::Target(e)) if e.is_invalid_path() => {
                "InvalidArgument"
            }
            Self::BadTarget(_) | Self::Mount(MountError::Target(_)) => "FailedToEnsureMountPoint",
            Self::Mount(MountError::Foreign { .. }) => "ForeignMount",
            Self::Mount(MountError::Io { .. }) => "FailedToMount",
            Self::UpdatePodStatus { .. } => "FailedToUpdatePodStatus",
            Self::SyncSecret { source, .. } => source.reason(),
        }
    }
}
