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
    /// A required request field (named) was empty.
    #[error("{0} is missing")]
    MissingField(&'static str),
    /// A block volume was asked for; secrets need a file system.
    #[error("block volumes are not supported; use a mount volume")]
    BlockVolume,
    /// A writable volume was asked for.
    #[error("readonly must be true: secrets volumes are mounted read-only")]
    NotReadonly,
    /// The target path is not a volume path under the kubelet root.
    #[error(transparent)]
    BadTarget(#[from] TargetError),
    /// The volume context is missing a key or holds a malformed one.
    #[error(transparent)]
    Context(#[from] ContextError),
    /// The ServiceAccount tokens kubelet sent do not parse.
    #[error(transparent)]
    Tokens(#[from] TokensError),
    /// The volume mount group is not a group id.
    #[error(transparent)]
    FsGroup(#[from] FsGroupError),
    /// A republish for another group than the volume's files have.
    #[error(
        "volume {volume} was published for group {had}; a publish for group {sent} is refused (the files keep group {had})"
    )]
    FsGroupChanged {
        /// The volume id.
        volume: String,
        /// The group the files were written for.
        had: FsGroup,
        /// The group this call sent.
        sent: FsGroup,
    },
    /// The pod could not be read for its fsGroup.
    #[error("read the fsGroup of pod {pod}: {source}")]
    PodFsGroup {
        /// `namespace/name` of the pod.
        pod: String,
        /// The API error.
        #[source]
        source: crate::kube_errors::ApiError,
    },
    /// The pod read for its fsGroup is another than kubelet publishes for (it was replaced),
    /// or its fsGroup is not a group id.
    #[error("pod {pod}: {why}")]
    PodMismatch {
        /// `namespace/name` of the pod.
        pod: String,
        /// What did not match.
        why: String,
    },
    /// Another call holds the volume's lock (kubelet retries).
    #[error("volume {0} is busy with another call; retry")]
    Busy(String),
    /// keymount is draining and takes no new work.
    #[error("keymount is shutting down; retry")]
    ShuttingDown,
    /// The SecretProviderClass could not be found or read.
    #[error(transparent)]
    LookupClass(#[from] LookupError),
    /// The class names no provider.
    #[error("SecretProviderClass {class} has no spec.provider")]
    ClassWithoutProvider {
        /// `namespace/name` of the class.
        class: String,
    },
    /// The class has no parameters.
    #[error("SecretProviderClass {class} has no spec.parameters")]
    ClassWithoutParameters {
        /// `namespace/name` of the class.
        class: String,
    },
    /// The class's provider is neither built in nor a plugin socket.
    #[error("SecretProviderClass {class}: {source}")]
    ResolveProvider {
        /// `namespace/name` of the class.
        class: String,
        /// Why it was not found.
        #[source]
        source: ResolveError,
    },
    /// The volume context overrides a class parameter the node does not allow.
    #[error("SecretProviderClass {class}: {source}")]
    VolumeAttribute {
        /// `namespace/name` of the class.
        class: String,
        /// The refused override.
        #[source]
        source: OverrideError,
    },
    /// The provider failed to fetch.
    #[error("SecretProviderClass {class}: provider {provider:?} failed: {source}")]
    Provider {
        /// `namespace/name` of the class.
        class: String,
        /// The provider name.
        provider: String,
        /// The provider's error (carries its gRPC code).
        #[source]
        source: ProviderError,
    },
    /// The provider did not answer within `--provider-timeout`.
    #[error("SecretProviderClass {class}: provider {provider:?} did not answer within {seconds}s")]
    ProviderTimeout {
        /// `namespace/name` of the class.
        class: String,
        /// The provider name.
        provider: String,
        /// The timeout, in seconds.
        seconds: u64,
    },
    /// The provider returned files keymount will not write.
    #[error(
        "SecretProviderClass {class}: provider {provider:?} returned an unsafe file set: {source}"
    )]
    InvalidFiles {
        /// `namespace/name` of the class.
        class: String,
        /// The provider name.
        provider: String,
        /// What is wrong with the set.
        #[source]
        source: PathError,
    },
    /// The class's extract or templates failed.
    #[error(transparent)]
    Transform(#[from] crate::transform::TransformError),
    /// What extract and templates made is not a file set keymount will write.
    #[error("SecretProviderClass {class}: extract and templates made an unsafe file set: {source}")]
    InvalidTransform {
        /// `namespace/name` of the class.
        class: String,
        /// What is wrong with the set.
        #[source]
        source: PathError,
    },
    /// The tmpfs could not be mounted or checked.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// The files could not be written to the volume.
    #[error("write files: {0}")]
    WriteFiles(#[from] WriteError),
    /// The SecretProviderClassPodStatus could not be written.
    #[error("update SecretProviderClassPodStatus {name}: {source}")]
    UpdatePodStatus {
        /// The object's name.
        name: String,
        /// The API error.
        #[source]
        source: crate::kube_errors::ApiError,
    },
    /// The class's `secretObjects` could not be mirrored to Kubernetes Secrets.
    #[error("sync secretObjects of SecretProviderClass {class}: {source}")]
    SyncSecret {
        /// `namespace/name` of the class.
        class: String,
        /// Why the sync failed.
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
            Self::Transform(_) | Self::InvalidTransform { .. } => "InvalidTransform",
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
