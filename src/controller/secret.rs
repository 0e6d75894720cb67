//! Writing the Secret of a SecretSync: whose it is, whether it already holds what is asked,
//! and one server-side apply of the whole desired state when it does not.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::crd::SecretSync;
use super::desired::DesiredSecret;
use super::outcome::{Failure, Reason};

/// Field manager of the Secrets the controller writes.
pub(crate) const FIELD_MANAGER: &str = "keymount-controller";

/// True when `secret` is this SecretSync's: an owner reference names this very SecretSync (its
/// uid). Upstream's sync controller sets no `controller: true`, so its Secrets are adopted
/// as they are when keymount replaces it; a Secret of anyone else is never written.
pub(crate) fn owned_by(secret: &Secret, sync: &SecretSync) -> bool {
    let Some(uid) = sync.metadata.uid.as_deref() else {
        return false;
    };
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.kind == "SecretSync")
}

/// True when `live` already holds everything `want` asks for (other managers' labels and
/// annotations may be there too).
pub(crate) fn holds(live: &Secret, want: &DesiredSecret) -> bool {
    let data_same = live.data.as_ref().is_some_and(|data| {
        data.len() == want.data.len()
            && want
                .data
                .iter()
                .all(|(k, v)| data.get(k).is_some_and(|have| have.0 == *v.expose()))
    });
    data_same && crate::sync::apply::carries(live, &want.type_, &want.labels, &want.annotations)
}

/// One server-side apply of the whole Secret, owned by the SecretSync. When it exists, its
/// resourceVersion is a precondition: a concurrent change makes a conflict, retried later.
pub(crate) async fn apply(
    client: &kube::Client,
    sync: &SecretSync,
    want: &DesiredSecret,
    live: Option<&Secret>,
) -> Result<(), Failure> {
    let namespace = sync.metadata.namespace.as_deref().unwrap_or_default();
    let name = sync.metadata.name.as_deref().unwrap_or_default();
    let engine = base64::engine::general_purpose::STANDARD;
    let data: serde_json::Map<String, serde_json::Value> = want
        .data
        .iter()
        .map(|(k, v)| (k.clone(), engine.encode(v.expose()).into()))
        .collect();
    let mut metadata = json!({
        "name": name,
        "namespace": namespace,
        "labels": want.labels,
        "annotations": want.annotations,
        "ownerReferences": [{
            "apiVersion": "secret-sync.x-k8s.io/v1alpha1",
            "kind": "SecretSync",
            "name": name,
            "uid": sync.metadata.uid.as_deref().unwrap_or_default(),
            "controller": true,
        }],
    });
    if let Some(version) = live.and_then(|l| l.metadata.resource_version.as_deref()) {
        metadata["resourceVersion"] = version.into();
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": want.type_,
        "data": data,
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    secrets
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map(drop)
        .map_err(|e| {
            let (reason, what) = match &e {
                kube::Error::Api(s) if s.code == 409 => (
                    Reason::ControllerInternalError,
                    "changed by another writer meanwhile; will retry".to_owned(),
                ),
                kube::Error::Api(s) if s.code == 422 || s.code == 400 => (
                    Reason::UserInputValidationFailed,
                    crate::kube_errors::describe(&e),
                ),
                _ => (
                    Reason::ControllerInternalError,
                    crate::kube_errors::describe(&e),
                ),
            };
            Failure {
                reason,
                message: format!("apply Secret {namespace}/{name}: {what}"),
            }
        })
}
