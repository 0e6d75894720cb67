//! The SecretProviderClassPodStatus object, written exactly as upstream names and shapes it
//! (users, restart controllers and the sync controller read it).

use kube::Resource as _;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::class::crd::{GROUP, NODE_LABEL, PodStatusObject, SecretProviderClassPodStatus};
use crate::names::FIELD_MANAGER;
use crate::provider::ObjectVersion;

/// What the status object records for one pod and class.
#[derive(Debug)]
pub struct PodStatusInput<'a> {
    /// This node (labelled on the object, as upstream does).
    pub node_id: &'a str,
    /// The pod's namespace, where the object lives.
    pub namespace: &'a str,
    /// The pod's name.
    pub pod_name: &'a str,
    /// The pod's uid (the owner reference).
    pub pod_uid: &'a str,
    /// The SecretProviderClass name.
    pub class: &'a str,
    /// The volume's target path.
    pub target_path: &'a str,
    /// The mounted objects and their versions.
    pub versions: &'a [ObjectVersion],
}

/// Upstream's name: `<pod>-<namespace>-<class>`.
pub fn object_name(pod: &str, namespace: &str, class: &str) -> String {
    format!("{pod}-{namespace}-{class}")
}

/// Creates or updates the object with one server-side apply (owner: the pod; label: the node).
pub async fn apply(client: &kube::Client, input: &PodStatusInput<'_>) -> Result<(), kube::Error> {
    let name = object_name(input.pod_name, input.namespace, input.class);
    let mut objects: Vec<PodStatusObject> = input
        .versions
        .iter()
        .map(|v| PodStatusObject {
            id: v.id.clone(),
            version: v.version.clone(),
        })
        .collect();
    objects.sort();
    let body = json!({
        "apiVersion": format!("{GROUP}/v1"),
        "kind": "SecretProviderClassPodStatus",
        "metadata": {
            "name": name,
            "namespace": input.namespace,
            "labels": { NODE_LABEL: input.node_id },
            "ownerReferences": [{
                "apiVersion": "v1",
                "kind": "Pod",
                "name": input.pod_name,
                "uid": input.pod_uid,
            }],
        },
        "status": {
            "podName": input.pod_name,
            "secretProviderClassName": input.class,
            "mounted": true,
            "targetPath": input.target_path,
            "objects": objects,
        },
    });
    // The API server answers with the whole object; nothing here reads it, so it is drained
    // as text instead of parsed (the request is what `Api::patch` sends).
    let url = SecretProviderClassPodStatus::url_path(&(), Some(input.namespace));
    let request = kube::core::Request::new(url)
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(body),
        )
        .map_err(kube::Error::BuildRequest)?;
    client.request_text(request).await?;
    Ok(())
}
