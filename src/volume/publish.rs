//! A NodePublishVolume call: the request the CSI layer hands over, its validation (the
//! target under the kubelet root, the capability, the volume context, the tokens, the
//! fsGroup), what a publish did and the provider its metrics are labelled with. The call
//! itself is `service/publish.rs`.

use std::collections::BTreeMap;

use super::context::{RedactedContext, VolumeContext};
use super::state::VolumeRecord;
use crate::fs::group::FsGroup;
use crate::mount::{KubeletRoot, Target};
use crate::provider::ServiceAccountTokens;
use crate::provider::tokens::TOKENS_KEY;
use crate::redact::Redacted;

pub(crate) use super::fetch::{fetch_for_class, mount_attributes};
pub use super::publish_error::PublishError;

/// Default file mode handed to providers (upstream sends "420").
pub(crate) const DEFAULT_PERMISSION: u32 = 0o644;

/// How the CO wants the volume accessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessType {
    /// A file system: the only kind keymount serves.
    Mount,
    /// A raw block device: refused.
    Block,
}

/// A publish call, as the CSI layer hands it over. Its `Debug` hides the tokens in the volume
/// context and the `secrets`.
#[derive(Clone)]
pub struct PublishRequest {
    /// The CSI volume id (one per pod volume).
    pub volume_id: String,
    /// Where kubelet wants the volume, as sent (checked before use).
    pub target_path: String,
    /// The capability's access type; `None` when kubelet sent none.
    pub access: Option<AccessType>,
    /// Must be true: secrets volumes are read-only.
    pub readonly: bool,
    /// Pod identity, class name, tokens and attribute overrides from kubelet.
    pub volume_context: BTreeMap<String, String>,
    /// The `nodePublishSecretRef` Secret's data (credentials for plugins).
    pub secrets: Redacted<BTreeMap<String, String>>,
    /// The CSI `volume_capability.mount.volume_mount_group` as sent: the pod's fsGroup from
    /// a kubelet that delegates it (VOLUME_MOUNT_GROUP), empty otherwise.
    pub mount_group: String,
}

impl std::fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishRequest")
            .field("volume_id", &self.volume_id)
            .field("target_path", &self.target_path)
            .field("access", &self.access)
            .field("readonly", &self.readonly)
            .field("mount_group", &self.mount_group)
            .field("volume_context", &RedactedContext(&self.volume_context))
            .field("secrets", &self.secrets)
            .finish()
    }
}

/// What a successful publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// First mount: tmpfs mounted and files written.
    Mounted,
    /// Republish inside the interval: nothing asked, nothing written.
    Skipped,
    /// Republish that asked the provider; `changed` tells whether files were swapped.
    Rotated {
        /// Whether the files differed and were swapped.
        changed: bool,
    },
    /// Republish that asked the provider and wrote the files (swapped when `changed`), but
    /// whose SecretProviderClassPodStatus or state record could not be written: the status
    /// is stale until the next fetch, which writes it again even if nothing changed.
    RotatedStatusStale {
        /// Whether the files differed and were swapped.
        changed: bool,
    },
    /// Republish whose fetch failed: the old content stays (kubelet would otherwise remove it).
    RotationFailed,
}

/// The provider label of a publish's metrics: the provider the class resolved to, or the one
/// a mounted volume's record names; `unknown` before either is known. Never whatever a class
/// names: only a provider that exists (built in, or a socket the admin installed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum ProviderLabel {
    Unknown,
    Known(String),
}

impl ProviderLabel {
    /// The label of a publish that got as far as finding `record`.
    pub(super) fn of_record(record: Option<&VolumeRecord>) -> Self {
        record.map_or(Self::Unknown, |r| Self::Known(r.provider.clone()))
    }

    /// The metrics `provider` label.
    pub(super) fn as_label(&self) -> &str {
        match self {
            Self::Unknown => "unknown",
            Self::Known(name) => name,
        }
    }
}

/// The validated parts of a request.
pub(super) struct Validated {
    pub(super) target: Target,
    pub(super) context: VolumeContext,
    pub(super) tokens: ServiceAccountTokens,
    /// The pod's fsGroup, when kubelet sent one.
    pub(super) group: Option<FsGroup>,
}

/// Checks every field of `req` before anything is looked up, created or mounted.
pub(super) fn validate(
    req: &PublishRequest,
    root: &KubeletRoot,
) -> Result<Validated, PublishError> {
    if req.volume_id.is_empty() {
        return Err(PublishError::MissingField("volume_id"));
    }
    if req.target_path.is_empty() {
        return Err(PublishError::MissingField("target_path"));
    }
    match req.access {
        None => return Err(PublishError::MissingField("volume_capability")),
        Some(AccessType::Block) => return Err(PublishError::BlockVolume),
        Some(AccessType::Mount) => {}
    }
    if !req.readonly {
        return Err(PublishError::NotReadonly);
    }
    let target = root.parse(&req.target_path)?;
    let group = match req.mount_group.as_str() {
        "" => None,
        text => Some(FsGroup::parse(text)?),
    };
    if req.volume_context.is_empty() {
        return Err(PublishError::MissingField("volume_context"));
    }
    let context = VolumeContext::parse(&req.volume_context)?;
    // KEP-5538: kubelet may send the tokens in `secrets`; read there first.
    let raw_tokens = req
        .secrets
        .expose()
        .get(TOKENS_KEY)
        .or_else(|| req.volume_context.get(TOKENS_KEY))
        .map(String::as_str)
        .unwrap_or_default();
    let tokens = ServiceAccountTokens::parse(raw_tokens)?;
    Ok(Validated {
        target,
        context,
        tokens,
        group,
    })
}
