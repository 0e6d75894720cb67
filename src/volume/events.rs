//! Events on the pod for what kubelet cannot show: a failed rotation answers kubelet with
//! success (the old content stays mounted), so without an Event nobody would see it in
//! `kubectl describe pod`. Upstream's reason name is kept.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::PostParams;

/// Upstream's reason for a failed rotation.
pub const ROTATION_FAILED: &str = "SecretRotationFailed";

/// The pod an Event is about.
#[derive(Debug, Clone)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// Records a Warning Event on `pod`. `message` is an error's text (which never holds a
/// secret value); `node` names the reporting node.
pub async fn warn(
    client: &kube::Client,
    pod: &PodRef,
    reason: &str,
    message: &str,
    node: &str,
) -> Result<Event, kube::Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
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
        message: Some(message.into()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("keymount".into()),
            host: Some(node.into()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    Api::<Event>::namespaced(client.clone(), &pod.namespace)
        .create(&PostParams::default(), &event)
        .await
}

/// [`warn`] in the background: an Event must never delay or fail a publish.
pub fn warn_in_background(
    client: kube::Client,
    pod: PodRef,
    reason: &'static str,
    message: String,
    node: String,
) {
    tokio::spawn(async move {
        if let Err(error) = warn(&client, &pod, reason, &message, &node).await {
            tracing::debug!(%error, pod = %format!("{}/{}", pod.namespace, pod.name), "could not record an Event");
        }
    });
}
