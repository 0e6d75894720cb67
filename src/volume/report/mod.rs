//! What a publish tells the cluster besides the files: the SecretProviderClassPodStatus,
//! Events on the pod and (with `--enable-secret-sync`) the class's `secretObjects` as
//! Secrets. One trait, [`Reporter`]: [`KubeReporter`] writes through the API server,
//! [`LocalReporter`] (local mode, no API server) writes nothing. A reporter only reports;
//! the orchestration decides what a failure means (a first mount fails, a rotation goes on).

mod api;

use std::path::PathBuf;

use async_trait::async_trait;

use super::events::PodRef;
use super::publish::PublishError;
use crate::class::SecretProviderClass;
use crate::class::crd::SecretObject;
use crate::fs::atomic_writer::Payload;
use crate::provider::ObjectVersion;
use crate::sync::FileLookup;

pub(crate) use api::KubeReporter;

/// The volume a report is about: the pod it is mounted for, its class and provider, and
/// where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodVolume {
    pub volume_id: String,
    /// The target path, as kubelet sent it.
    pub target: PathBuf,
    pub namespace: String,
    /// The pod's name and UID, when kubelet sends them (`podInfoOnMount`).
    pub pod_name: Option<String>,
    pub pod_uid: Option<String>,
    /// The class's name, in the pod's namespace.
    pub class: String,
    /// The provider the class resolved to.
    pub provider: String,
}

impl PodVolume {
    /// `namespace/name` of the class, for messages.
    pub(crate) fn class_id(&self) -> String {
        format!("{}/{}", self.namespace, self.class)
    }

    /// The pod, when kubelet named it.
    pub(crate) fn pod(&self) -> Option<PodRef> {
        Some(PodRef {
            namespace: self.namespace.clone(),
            name: self.pod_name.clone()?,
            uid: self.pod_uid.clone()?,
        })
    }
}

/// What a republish that asked the provider did.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Rotation<'a> {
    /// The files were written; `changed` when new content was swapped in.
    Done { changed: bool },
    /// The files were written, but the pod status or the state record was not: the status
    /// is stale until the next fetch, which writes it again.
    StatusStale {
        changed: bool,
        error: &'a PublishError,
    },
    /// The fetch or the write failed; the old content stays.
    Failed(&'a PublishError),
}

impl Rotation<'_> {
    /// True when new content was swapped in.
    pub(crate) fn changed(&self) -> bool {
        match self {
            Self::Done { changed } | Self::StatusStale { changed, .. } => *changed,
            Self::Failed(_) => false,
        }
    }

    /// What went wrong, if anything did.
    pub(crate) fn error(&self) -> Option<&PublishError> {
        match self {
            Self::Done { .. } => None,
            Self::StatusStale { error, .. } | Self::Failed(error) => Some(error),
        }
    }
}

/// Tells the cluster about published volumes.
#[async_trait]
pub(crate) trait Reporter: Send + Sync + std::fmt::Debug {
    /// Writes the volume's SecretProviderClassPodStatus with the object `versions` now
    /// mounted; nothing when the volume context does not name the pod.
    async fn pod_status(
        &self,
        volume: &PodVolume,
        versions: &[ObjectVersion],
    ) -> Result<(), PublishError>;

    /// Mirrors `objects` (the class's `secretObjects`, not empty) into Secrets of the pod's
    /// namespace, reading the mounted files through `file`; nothing when the sync is off.
    /// `first` is true at a volume's first mount, false after a rotation.
    async fn sync_secrets(
        &self,
        volume: &PodVolume,
        objects: &[SecretObject],
        file: FileLookup<'_>,
        first: bool,
    ) -> Result<(), PublishError>;

    /// Tells what a rotation did (Events on the pod). Never fails the rotation.
    fn rotation(&self, volume: &PodVolume, rotation: Rotation<'_>);

    /// A rotation swapped in new `files` for a class that may ask for its workload's restart
    /// (`keymount.io/restart-on-change`): restart it, in the background. Never fails the
    /// rotation.
    fn content_changed(
        &self,
        _volume: &PodVolume,
        _class: &SecretProviderClass,
        _files: &[Payload],
    ) {
    }
}

/// The reporter of local mode: there is no API server to tell.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LocalReporter;

#[async_trait]
impl Reporter for LocalReporter {
    async fn pod_status(&self, _: &PodVolume, _: &[ObjectVersion]) -> Result<(), PublishError> {
        Ok(())
    }

    async fn sync_secrets(
        &self,
        _: &PodVolume,
        _: &[SecretObject],
        _: FileLookup<'_>,
        _: bool,
    ) -> Result<(), PublishError> {
        Ok(())
    }

    fn rotation(&self, _: &PodVolume, _: Rotation<'_>) {}
}
