//! Writing one Secret: read the live object, refuse it if keymount does not manage it, skip
//! the write if it already holds what the class asks for, else one server-side apply of the
//! whole desired state with the union of owner references, guarded by its resourceVersion.
//!
//! Owner references form a list keyed by `uid` in server-side apply, and with one field
//! manager every apply replaces the set that manager owns; applying only this pod's owners
//! would drop those of the other pods. So the apply carries the live references plus ours,
//! and the resourceVersion precondition makes a concurrent writer (another node) a conflict
//! that is retried on a fresh read instead of a lost reference.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::desired::{DesiredSecret, MANAGED_LABEL};
use super::{SecretChange, SyncError, SyncTarget};
use crate::names::FIELD_MANAGER;

/// Attempts of one apply that loses the resourceVersion race.
const ATTEMPTS: usize = 5;

/// The owners a synced Secret gets from this pod: the pod's own owners (a ReplicaSet, a
/// StatefulSet, a Job, ...), or the pod itself when it has none.
pub(crate) async fn pod_owners(
    client: &kube::Client,
    target: &SyncTarget<'_>,
) -> Result<Vec<OwnerReference>, SyncError> {
    let pod_id = format!("{}/{}", target.namespace, target.pod_name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), target.namespace);
    let pod = pods
        .get_opt(target.pod_name)
        .await
        .map_err(|source| SyncError::GetPod {
            pod: pod_id.clone(),
            source: source.into(),
        })?
        .filter(|p| p.metadata.uid.as_deref() == Some(target.pod_uid))
        .ok_or_else(|| SyncError::PodGone {
            pod: pod_id.clone(),
            uid: target.pod_uid.to_owned(),
        })?;
    let owners: Vec<OwnerReference> = pod
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| OwnerReference {
            api_version: o.api_version,
            kind: o.kind,
            name: o.name,
            uid: o.uid,
            controller: None,
            block_owner_deletion: None,
        })
        .collect();
    if !owners.is_empty() {
        return Ok(owners);
    }
    Ok(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Pod".into(),
        name: target.pod_name.to_owned(),
        uid: target.pod_uid.to_owned(),
        controller: None,
        block_owner_deletion: None,
    }])
}

/// True when `live` has type `type_` and every one of `labels` and `annotations` (other
/// writers' may be there too): the metadata half of "already holds what is asked".
pub(crate) fn carries(
    live: &Secret,
    type_: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> bool {
    let contains = |have: Option<&BTreeMap<String, String>>, need: &BTreeMap<String, String>| {
        need.iter()
            .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
    };
    live.type_.as_deref().unwrap_or("Opaque") == type_
        && contains(live.metadata.labels.as_ref(), labels)
        && contains(live.metadata.annotations.as_ref(), annotations)
}

/// True when `live` already holds everything `want` asks for.
fn satisfied(live: &Secret, want: &DesiredSecret, owners: &[OwnerReference]) -> bool {
    let live_data = live.data.as_ref();
    let live_owners = live
        .metadata
        .owner_references
        .as_deref()
        .unwrap_or_default();
    carries(live, &want.type_, &want.labels, &want.annotations)
        && want
            .data
            .expose()
            .iter()
            .all(|(k, v)| live_data.and_then(|d| d.get(k)).map(|b| &b.0) == Some(v))
        && owners
            .iter()
            .all(|o| live_owners.iter().any(|l| l.uid == o.uid))
}

/// The union of the live owner references and ours, keyed by uid, live ones first.
fn merged_owners(live: Option<&Secret>, ours: &[OwnerReference]) -> Vec<OwnerReference> {
    let mut all: Vec<OwnerReference> = live
        .and_then(|s| s.metadata.owner_references.clone())
        .unwrap_or_default();
    for owner in ours {
        if !all.iter().any(|o| o.uid == owner.uid) {
            all.push(owner.clone());
        }
    }
    all
}

fn body(
    namespace: &str,
    want: &DesiredSecret,
    owners: &[OwnerReference],
    resource_version: Option<&str>,
) -> serde_json::Value {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data: BTreeMap<&str, String> = want
        .data
        .expose()
        .iter()
        .map(|(k, v)| (k.as_str(), b64.encode(v)))
        .collect();
    let mut metadata = json!({
        "name": want.name,
        "namespace": namespace,
        "labels": want.labels,
        "annotations": want.annotations,
        "ownerReferences": owners,
    });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": want.type_,
        "data": data,
    })
}

/// Creates or updates one Secret (see the module docs).
pub(crate) async fn ensure(
    client: &kube::Client,
    namespace: &str,
    want: &DesiredSecret,
    owners: &[OwnerReference],
) -> Result<SecretChange, SyncError> {
    let id = format!("{namespace}/{}", want.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for _ in 0..ATTEMPTS {
        let live = secrets
            .get_opt(&want.name)
            .await
            .map_err(|source| SyncError::GetSecret {
                secret: id.clone(),
                source: source.into(),
            })?;
        if let Some(live) = &live {
            let managed = live
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(MANAGED_LABEL))
                .is_some_and(|v| v == "true");
            if !managed {
                return Err(SyncError::NotManaged { secret: id });
            }
            if satisfied(live, want, owners) {
                return Ok(SecretChange::Unchanged);
            }
        }
        let all_owners = merged_owners(live.as_ref(), owners);
        let rv = live
            .as_ref()
            .and_then(|s| s.metadata.resource_version.as_deref());
        let patch = Patch::Apply(body(namespace, want, &all_owners, rv));
        match secrets
            .patch(
                &want.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &patch,
            )
            .await
        {
            Ok(_) if live.is_some() => return Ok(SecretChange::Updated),
            Ok(_) => return Ok(SecretChange::Created),
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tracing::debug!(secret = %id, "Secret changed while syncing; reading it again");
            }
            Err(source) => {
                return Err(SyncError::ApplySecret {
                    secret: id,
                    source: source.into(),
                });
            }
        }
    }
    Err(SyncError::Conflict {
        secret: id,
        attempts: ATTEMPTS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redacted;
    use k8s_openapi::ByteString;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            ..Default::default()
        }
    }

    fn want() -> DesiredSecret {
        DesiredSecret {
            name: "db".into(),
            type_: "Opaque".into(),
            labels: [(MANAGED_LABEL.to_string(), "true".to_string())].into(),
            annotations: BTreeMap::new(),
            data: Redacted::new([("pw".to_string(), b"one".to_vec())].into()),
        }
    }

    fn live(owners: &[&str], pw: &[u8]) -> Secret {
        Secret {
            type_: Some("Opaque".into()),
            metadata: kube::api::ObjectMeta {
                labels: Some([(MANAGED_LABEL.to_string(), "true".to_string())].into()),
                owner_references: Some(owners.iter().map(|u| owner(u)).collect()),
                ..Default::default()
            },
            data: Some([("pw".to_string(), ByteString(pw.to_vec()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn owners_are_the_union_keyed_by_uid() {
        let l = live(&["a", "b"], b"one");
        let merged = merged_owners(Some(&l), &[owner("b"), owner("c")]);
        let uids: Vec<_> = merged.iter().map(|o| o.uid.as_str()).collect();
        assert_eq!(uids, ["a", "b", "c"]);
    }

    #[test]
    fn skips_only_when_everything_is_there() {
        assert!(satisfied(&live(&["a"], b"one"), &want(), &[owner("a")]));
        assert!(!satisfied(&live(&["a"], b"two"), &want(), &[owner("a")]));
        assert!(!satisfied(&live(&["a"], b"one"), &want(), &[owner("b")]));
        let mut other_type = live(&["a"], b"one");
        other_type.type_ = Some("kubernetes.io/tls".into());
        assert!(!satisfied(&other_type, &want(), &[owner("a")]));
    }

    #[test]
    fn apply_body_has_precondition_and_base64_data() {
        let b = body("ns", &want(), &[owner("a")], Some("42"));
        assert_eq!(b["metadata"]["resourceVersion"], "42");
        assert_eq!(b["data"]["pw"], "b25l");
        assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "a");
        assert!(
            body("ns", &want(), &[], None)["metadata"]
                .get("resourceVersion")
                .is_none()
        );
    }
}
