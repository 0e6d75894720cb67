//! The volume service: what NodePublishVolume and NodeUnpublishVolume call.

use std::sync::Arc;
use std::time::Duration;

use crate::class::ClassSource;
use crate::fs::paths::Limits;
use crate::metrics::Metrics;
use crate::mount::KubeletRoot;
use crate::provider::Providers;
use crate::provider::access::OverridePolicy;
use crate::shutdown::Background;
use crate::sync::SecretSync;

use super::events::PodEvents;

use super::locks::VolumeLocks;
use super::publish::{PublishError, PublishOutcome, PublishRequest};
use super::state::VolumeStates;

/// Class annotation that overrides the rotation interval for one class (e.g. `30s`, `1h`).
pub const ROTATION_INTERVAL_ANNOTATION: &str = "keymount.io/rotation-poll-interval";
/// The least time between two fetches of one mounted volume, whatever a class's annotation or
/// a store's lease says (a value below is raised to it, with a warning): a class must not make
/// every republish call the store.
pub const MIN_ROTATION_INTERVAL: Duration = Duration::from_secs(1);
/// Class annotation whose change makes the next republish fetch at once (on-demand refresh).
pub const REFRESH_ANNOTATION: &str = "keymount.io/refresh-at";

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
    pub(crate) config: NodeConfig,
    pub(crate) classes: Arc<dyn ClassSource>,
    pub(crate) providers: Arc<Providers>,
    pub(crate) kube: Option<kube::Client>,
    pub(crate) states: VolumeStates,
    pub(crate) locks: VolumeLocks,
    pub(crate) metrics: Arc<Metrics>,
    /// Pod events (API server mode only).
    pub(crate) events: Option<PodEvents>,
    /// The Secret sync, when enabled.
    pub(crate) secret_sync: Option<Arc<SecretSync>>,
}

impl std::fmt::Debug for VolumeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeService")
            .field("config", &self.config)
            .field("classes", &self.classes)
            .field("providers", &self.providers)
            .field("api_server", &self.kube.is_some())
            .field("secret_sync", &self.secret_sync.is_some())
            .field("volumes", &self.states.len())
            .finish()
    }
}

impl VolumeService {
    /// Wires the service. `kube` is `None` in local mode (no pod status objects).
    pub fn new(
        config: NodeConfig,
        classes: Arc<dyn ClassSource>,
        providers: Arc<Providers>,
        kube: Option<kube::Client>,
        states: VolumeStates,
        metrics: Arc<Metrics>,
    ) -> Self {
        let events = kube
            .clone()
            .map(|client| PodEvents::new(client, config.node_id.clone()));
        Self {
            config,
            classes,
            providers,
            kube,
            states,
            locks: VolumeLocks::default(),
            metrics,
            events,
            secret_sync: None,
        }
    }

    /// Publishes in a task of its own and waits for it. tonic drops the handler's future when
    /// the caller gives up (kubelet's deadline passed, the call cancelled); the task still
    /// finishes the publish or its cleanup, holding the volume's lock until then (a retry
    /// meanwhile gets ABORTED), so no tmpfs stays mounted with nothing recording it.
    pub async fn publish_detached(
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

    /// Runs the service's background work (pod event writes) among `background`, which the
    /// node joins at shutdown.
    pub fn with_background(mut self, background: Background) -> Self {
        self.events = self.events.map(|e| e.in_background(background));
        self
    }

    /// Turns on the sync of `secretObjects` to Kubernetes Secrets.
    pub fn with_secret_sync(mut self, sync: SecretSync) -> Self {
        self.secret_sync = Some(Arc::new(sync));
        self
    }

    /// Ready once the class source has synced.
    pub fn is_ready(&self) -> bool {
        self.classes.is_synced()
    }

    /// The records of published volumes.
    pub fn states(&self) -> &VolumeStates {
        &self.states
    }

    /// This node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }
}
