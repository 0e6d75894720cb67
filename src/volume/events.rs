//! Kubernetes Events on the pod of a volume (what `kubectl describe pod` shows): rotations
//! that swapped content or failed (a failed rotation answers kubelet with success, so without
//! an Event nobody would see it), and Secret syncs. core/v1 Events with upstream's reasons and
//! source components, written in the background so a slow API server never delays kubelet.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;

use crate::shutdown::Background;

/// Source component of rotation events (upstream's rotation reconciler).
pub(crate) const ROTATION_COMPONENT: &str = "csi-secrets-store-rotation";
/// Source component of Secret sync events (upstream's sync controller).
pub(crate) const SYNC_COMPONENT: &str = "csi-secrets-store-controller";

/// Rotation swapped in new content.
pub(crate) const ROTATION_COMPLETE: &str = "MountRotationComplete";
/// Rotation failed; the old content stays (upstream's reason for a failed mount rotation).
pub const ROTATION_FAILED: &str = "MountRotationFailed";
/// A rotation fetched and wrote the files, but the SecretProviderClassPodStatus (or the
/// volume's state record) could not be written: the status is stale until the next fetch.
pub(crate) const ROTATION_STATUS_STALE: &str = "MountRotationStatusStale";
/// A rotation changed a synced Secret.
pub(crate) const SECRET_ROTATION_COMPLETE: &str = "SecretRotationComplete";
/// A Secret could not be synced (e.g. one keymount does not manage).
pub(crate) const SECRET_SYNC_FAILED: &str = "FailedToCreateSecret";

/// How long one event write may take before it is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server's limit on an event message.
const MAX_MESSAGE: usize = 1024;

/// The pod an event is about.
#[derive(Debug, Clone)]
pub struct PodRef {
    /// The pod's namespace (where the event is created).
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The pod's uid, so the event names this pod and not a successor of the same name.
    pub uid: String,
}

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Normal,
    Warning,
}

/// Writes events through the node's API client.
#[derive(Clone)]
pub(crate) struct PodEvents {
    client: kube::Client,
    node: String,
    /// Where the writes run, so shutdown waits for them.
    background: Background,
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodEvents")
            .field("node", &self.node)
            .finish()
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        message.truncate(end);
        message.push_str("...");
    }
    message
}

impl PodEvents {
    /// Events reported as coming from `node`.
    pub(crate) fn new(client: kube::Client, node: impl Into<String>) -> Self {
        Self {
            client,
            node: node.into(),
            background: Background::default(),
        }
    }

    /// Runs the event writes among `background`, which shutdown joins.
    pub(crate) fn in_background(mut self, background: Background) -> Self {
        self.background = background;
        self
    }

    /// The event object (exposed for tests of its shape).
    pub(crate) fn event(
        &self,
        pod: &PodRef,
        component: &str,
        severity: Severity,
        reason: &str,
        message: String,
    ) -> Event {
        let now = Timestamp::now();
        Event {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}.", pod.name)),
                namespace: Some(pod.namespace.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name.clone()),
                namespace: Some(pod.namespace.clone()),
                uid: Some(pod.uid.clone()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(truncate(message)),
            type_: Some(format!("{severity:?}")),
            source: Some(EventSource {
                component: Some(component.into()),
                host: Some(self.node.clone()),
            }),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            count: Some(1),
            reporting_component: Some(component.into()),
            reporting_instance: Some(self.node.clone()),
            ..Default::default()
        }
    }

    /// Writes the event in the background; a failure is logged, never returned.
    pub(crate) fn emit(
        &self,
        pod: &PodRef,
        component: &str,
        severity: Severity,
        reason: &str,
        message: String,
    ) {
        let event = self.event(pod, component, severity, reason, message);
        let api: Api<Event> = Api::namespaced(self.client.clone(), &pod.namespace);
        let pod_id = format!("{}/{}", pod.namespace, pod.name);
        let reason = reason.to_owned();
        self.background.spawn(async move {
            let params = PostParams::default();
            match tokio::time::timeout(WRITE_TIMEOUT, api.create(&params, &event)).await {
                Ok(Ok(_)) => tracing::debug!(pod = %pod_id, %reason, "event recorded"),
                Ok(Err(error)) => {
                    let error = crate::kube_errors::describe(&error);
                    tracing::warn!(pod = %pod_id, %reason, %error, "event not recorded")
                }
                Err(_) => {
                    tracing::warn!(pod = %pod_id, %reason, "event not recorded: API server too slow")
                }
            }
        });
    }
}

/// Records a Warning Event on `pod` now, with source component `keymount`. `message` is an
/// error's text (which never holds a secret value); `node` names the reporting node.
pub async fn warn(
    client: &kube::Client,
    pod: &PodRef,
    reason: &str,
    message: &str,
    node: &str,
) -> Result<Event, kube::Error> {
    let event = PodEvents::new(client.clone(), node).event(
        pod,
        "keymount",
        Severity::Warning,
        reason,
        message.to_owned(),
    );
    Api::<Event>::namespaced(client.clone(), &pod.namespace)
        .create(&PostParams::default(), &event)
        .await
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let cut = truncate("é".repeat(600));
        assert!(cut.len() <= 1024 && cut.ends_with("..."), "{}", cut.len());
        assert_eq!(truncate("short".into()), "short");
    }
}
