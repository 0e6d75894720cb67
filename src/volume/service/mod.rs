//! The volume service: what NodePublishVolume and NodeUnpublishVolume call. One struct owns
//! the orchestration, its operations one file each: `publish.rs` (check the target, decide,
//! resolve the class and provider), `fill.rs` (mount, fetch, write, report, record: the
//! rest of a publish), `unpublish.rs` and `recover.rs` (start-up). What it works with sits
//! behind seams: the mounts (`mount::Mounter`), what the cluster is told (`report::Reporter`),
//! the classes (`class::ClassSource`) and the providers.

mod fill;
mod publish;
mod recover;
mod unpublish;

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use super::locks::VolumeLocks;
use super::publish::{PublishError, PublishOutcome, PublishRequest};
use super::report::{LocalReporter, Reporter};
use super::state::VolumeStates;
use crate::class::ClassSource;
use crate::fs::paths::Limits;
use crate::metrics::Metrics;
use crate::mount::{KubeletRoot, LinuxMounter, Mounter};
use crate::provider::Providers;
use crate::provider::access::OverridePolicy;

/// Node-wide settings of the volume service.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name (label of the pod status objects).
    pub node_id: String,
    /// kubelet's root directory: every target must be a CSI volume's `mount` below it.
    pub kubelet_root: KubeletRoot,
    /// Size limit of each tmpfs, in bytes.
    pub tmpfs_size: Option<u64>,
    /// Bounds on what a provider may return.
    pub limits: Limits,
    /// Deadline for one provider call.
    pub provider_timeout: Duration,
    /// Republish interval; `None` disables rotation (a republish of a mounted volume is a no-op).
    pub rotation_interval: Option<Duration>,
    /// Which class parameters a pod's volume attributes may override.
    pub overrides: OverridePolicy,
    /// Read the pod's fsGroup from the API server at a volume's first publish when kubelet
    /// does not send `volume_mount_group` (`--fs-group-from-pod`).
    pub fs_group_from_pod: bool,
}

/// Publishes and unpublishes volumes.
pub struct VolumeService {
    config: NodeConfig,
    classes: Arc<dyn ClassSource>,
    providers: Arc<Providers>,
    states: VolumeStates,
    locks: VolumeLocks,
    metrics: Arc<Metrics>,
    mounter: Arc<dyn Mounter>,
    reporter: Arc<dyn Reporter>,
    /// The client `--fs-group-from-pod` reads pods with (none in local mode).
    pods: Option<kube::Client>,
}

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService")
            .field("config", &self.config)
            .field("classes", &self.classes)
            .field("providers", &self.providers)
            .field("mounter", &self.mounter)
            .field("reporter", &self.reporter)
            .field("pod_reads", &self.pods.is_some())
            .field("volumes", &self.states.len())
            .finish()
    }
}

impl VolumeService {
    /// Wires the service with the node's real mounts, reporting nothing to a cluster (local
    /// mode) until [`VolumeService::with_reporter`] says otherwise.
    pub fn new(
        config: NodeConfig,
        classes: Arc<dyn ClassSource>,
        providers: Arc<Providers>,
        states: VolumeStates,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            config,
            classes,
            providers,
            states,
            locks: VolumeLocks::default(),
            metrics,
            mounter: Arc::new(LinuxMounter),
            reporter: Arc::new(LocalReporter),
            pods: None,
        }
    }

    /// Reports pod statuses, events and Secret syncs through `reporter`.
    pub(crate) fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// Reads pods through `client` for `--fs-group-from-pod`.
    pub(crate) fn with_pod_reads(mut self, client: kube::Client) -> Self {
        self.pods = Some(client);
        self
    }

    /// Mounts through `mounter` instead of the node's real mounts.
    #[cfg(test)]
    fn with_mounter(mut self, mounter: Arc<dyn Mounter>) -> Self {
        self.mounter = mounter;
        self
    }

    /// Publishes in a task of its own and waits for it. tonic drops the handler's future when
    /// the caller gives up (kubelet's deadline passed, the call cancelled); the task still
    /// finishes the publish or its cleanup, holding the volume's lock until then (a retry
    /// meanwhile gets ABORTED), so no tmpfs stays mounted with nothing recording it.
    pub(crate) async fn publish_detached(
        self: &Arc<Self>,
        req: PublishRequest,
    ) -> Result<PublishOutcome, PublishError> {
        let service = Arc::clone(self);
        match tokio::spawn(async move { service.publish(req).await }).await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(PublishError::ShuttingDown),
        }
    }

    /// Ready once the class source has synced.
    pub(crate) fn is_ready(&self) -> bool {
        self.classes.is_synced()
    }

    /// The records of published volumes.
    pub(crate) fn states(&self) -> &VolumeStates {
        &self.states
    }

    /// This node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }
}
