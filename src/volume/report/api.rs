//! The reporter of a node with an API server: the SecretProviderClassPodStatus with one
//! server-side apply, Events on the pod for rotations and Secret syncs (written in the
//! background), and, when the sync is on, the class's `secretObjects` as Secrets built from
//! the files just fetched.

use std::sync::Arc;

use async_trait::async_trait;

use super::{PodVolume, Reporter, Rotation};
use crate::class::SecretProviderClass;
use crate::class::crd::SecretObject;
use crate::fs::atomic_writer::Payload;
use crate::provider::ObjectVersion;
use crate::restart::{self, Restarter, Setting};
use crate::shutdown::Background;
use crate::sync::{FileLookup, SecretChange, SecretSync, SyncTarget};
use crate::volume::events::{
    PodEvents, ROTATION_COMPLETE, ROTATION_COMPONENT, ROTATION_FAILED, ROTATION_STATUS_STALE,
    SECRET_ROTATION_COMPLETE, SECRET_SYNC_FAILED, SYNC_COMPONENT, Severity,
};
use crate::volume::pod_status::{self, PodStatusInput};
use crate::volume::publish::PublishError;

/// Reports through the node's API client.
pub(crate) struct KubeReporter {
    client: kube::Client,
    /// This node's name (label of the pod status objects, source of the events).
    node_id: String,
    events: PodEvents,
    /// The Secret sync, when enabled.
    secret_sync: Option<SecretSync>,
    /// Restart on change, when enabled (`--enable-restart-on-change`).
    restarter: Option<Arc<Restarter>>,
    /// Where restarts run (joined at shutdown).
    background: Background,
}

impl std::fmt::Debug for KubeReporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeReporter")
            .field("node_id", &self.node_id)
            .field("secret_sync", &self.secret_sync.is_some())
            .finish()
    }
}

impl KubeReporter {
    /// Reports as node `node_id`, with the Secret sync off.
    pub(crate) fn new(client: kube::Client, node_id: impl Into<String>) -> Self {
        let node_id = node_id.into();
        Self {
            events: PodEvents::new(client.clone(), node_id.clone()),
            client,
            node_id,
            secret_sync: None,
            restarter: None,
            background: Background::default(),
        }
    }

    /// Turns on restart on change.
    pub(crate) fn with_restarter(mut self, restarter: Arc<Restarter>) -> Self {
        self.restarter = Some(restarter);
        self
    }

    /// Runs the event writes among `background`, which the node joins at shutdown.
    pub(crate) fn in_background(mut self, background: Background) -> Self {
        self.events = self.events.in_background(background.clone());
        self.background = background;
        self
    }

    /// Turns on the sync of `secretObjects` to Kubernetes Secrets.
    pub(crate) fn with_secret_sync(mut self, sync: SecretSync) -> Self {
        self.secret_sync = Some(sync);
        self
    }
}

#[async_trait]
impl Reporter for KubeReporter {
    async fn pod_status(
        &self,
        volume: &PodVolume,
        versions: &[ObjectVersion],
    ) -> Result<(), PublishError> {
        let (Some(pod_name), Some(pod_uid)) =
            (volume.pod_name.as_deref(), volume.pod_uid.as_deref())
        else {
            return Ok(());
        };
        let input = PodStatusInput {
            node_id: &self.node_id,
            namespace: &volume.namespace,
            pod_name,
            pod_uid,
            class: &volume.class,
            target_path: &volume.target.to_string_lossy(),
            versions,
        };
        pod_status::apply(&self.client, &input)
            .await
            .map_err(|source| PublishError::UpdatePodStatus {
                name: pod_status::object_name(pod_name, &volume.namespace, &volume.class),
                source: source.into(),
            })
    }

    /// A volume context without the pod fails a first mount (the sync needs the pod as the
    /// Secrets' owner) and skips the sync after a rotation. Every failure is a Warning event
    /// on the pod; after a rotation, each Secret the sync changed is a Normal one.
    async fn sync_secrets(
        &self,
        volume: &PodVolume,
        objects: &[SecretObject],
        file: FileLookup<'_>,
        first: bool,
    ) -> Result<(), PublishError> {
        let Some(sync) = self.secret_sync.as_ref() else {
            return Ok(());
        };
        let (Some(pod_name), Some(pod_uid)) =
            (volume.pod_name.as_deref(), volume.pod_uid.as_deref())
        else {
            if first {
                return Err(PublishError::MissingField(
                    "csi.storage.k8s.io/pod.name and pod.uid in the volume context (secretObjects need the pod; set podInfoOnMount on the CSIDriver)",
                ));
            }
            return Ok(());
        };
        let class_id = volume.class_id();
        let target = SyncTarget {
            namespace: &volume.namespace,
            pod_name,
            pod_uid,
            class: &class_id,
            provider: &volume.provider,
        };
        let result = sync.sync(&target, objects, file).await;
        let pod = volume.pod();
        match result {
            Ok(done) => {
                if let Some(pod) = pod.as_ref().filter(|_| !first) {
                    for secret in done.iter().filter(|s| s.change == SecretChange::Updated) {
                        self.events.emit(
                            pod,
                            SYNC_COMPONENT,
                            Severity::Normal,
                            SECRET_ROTATION_COMPLETE,
                            format!(
                                "successfully rotated Secret {}/{}",
                                target.namespace, secret.name
                            ),
                        );
                    }
                }
                Ok(())
            }
            Err(source) => {
                if let Some(pod) = &pod {
                    self.events.emit(
                        pod,
                        SYNC_COMPONENT,
                        Severity::Warning,
                        SECRET_SYNC_FAILED,
                        source.to_string(),
                    );
                }
                Err(PublishError::SyncSecret {
                    class: class_id,
                    source: Box::new(source),
                })
            }
        }
    }

    /// A rotation that swapped content is a Normal event; one that failed, or whose pod
    /// status or record could not be written, a Warning (the MountRotationComplete event, if
    /// any, tells that the files changed).
    fn content_changed(&self, volume: &PodVolume, class: &SecretProviderClass, files: &[Payload]) {
        let Some(restarter) = self.restarter.clone() else {
            return;
        };
        let class_id = volume.class_id();
        let setting = match restart::setting(class.metadata.annotations.as_ref()) {
            Ok(Some(setting)) => setting,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(class = %class_id, %error, "no restart");
                return;
            }
        };
        // The token of this content: the same on every node for the same files.
        let mut parts: Vec<&[u8]> = vec![class_id.as_bytes()];
        for file in files {
            parts.push(file.path.as_bytes());
            parts.push(file.contents.expose());
        }
        let token = restarter.token(&parts);
        let volume = volume.clone();
        self.background.spawn(async move {
            let namespace = volume.namespace.clone();
            let target = match setting {
                Setting::Named(kind, name) => Some((kind, name)),
                Setting::Owner => match (volume.pod_name.as_deref(), volume.pod_uid.as_deref()) {
                    (Some(pod), Some(uid)) => match restarter.owner_of(&namespace, pod, uid).await {
                        Ok(owner) => owner,
                        Err(error) => {
                            tracing::warn!(class = %class_id, %error, "no restart: the pod's owner was not found");
                            None
                        }
                    },
                    _ => None,
                },
            };
            let Some((kind, name)) = target else {
                tracing::info!(class = %class_id, pod = volume.pod_name.as_deref().unwrap_or("?"), "no restart: the pod has no Deployment, StatefulSet or DaemonSet");
                return;
            };
            let cause = format!("new content of SecretProviderClass {class_id}");
            match restarter.restart(&namespace, kind, &name, &token, &cause).await {
                Ok(done) => tracing::info!(workload = %format!("{} {namespace}/{name}", kind.as_str()), class = %class_id, result = ?done, "restart on change"),
                Err(error) => tracing::warn!(class = %class_id, %error, "restart on change failed"),
            }
        });
    }

    fn rotation(&self, volume: &PodVolume, rotation: Rotation<'_>) {
        let Some(pod) = volume.pod() else {
            return;
        };
        let class_id = volume.class_id();
        if rotation.changed() {
            self.events.emit(
                &pod,
                ROTATION_COMPONENT,
                Severity::Normal,
                ROTATION_COMPLETE,
                format!("successfully rotated mounted contents for SecretProviderClass {class_id}"),
            );
        }
        match rotation {
            Rotation::Done { .. } => {}
            Rotation::StatusStale { changed, error } => {
                let files = if changed {
                    "files rotated"
                } else {
                    "files unchanged"
                };
                self.events.emit(
                    &pod,
                    ROTATION_COMPONENT,
                    Severity::Warning,
                    ROTATION_STATUS_STALE,
                    format!(
                        "{files} for SecretProviderClass {class_id}, but the status is stale ({error}); the next fetch writes it again"
                    ),
                );
            }
            Rotation::Failed(error) => self.events.emit(
                &pod,
                ROTATION_COMPONENT,
                Severity::Warning,
                ROTATION_FAILED,
                format!("rotation failed, previous contents kept: {error}"),
            ),
        }
    }
}
