//! The upstream CRD types (`secrets-store.csi.x-k8s.io/v1`), field for field.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of both CRDs.
pub const GROUP: &str = "secrets-store.csi.x-k8s.io";
/// Label that marks SecretProviderClassPodStatus objects of one node.
pub const NODE_LABEL: &str = "internal.secrets-store.csi.k8s.io/node-name";

/// SecretProviderClass: which provider to call and with which parameters.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "secrets-store.csi.x-k8s.io",
    version = "v1",
    kind = "SecretProviderClass",
    plural = "secretproviderclasses",
    namespaced,
    status = "SecretProviderClassStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassSpec {
    /// Provider name, e.g. `vault`, `aws`, or an external plugin's socket name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Provider parameters, opaque to the driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<BTreeMap<String, String>>,
    /// Kubernetes Secrets to mirror the mounted files into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_objects: Option<Vec<SecretObject>>,
}

/// Status of a SecretProviderClass (empty in v1, kept for schema compatibility).
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretProviderClassStatus {
    /// Pods using this class (v1alpha1 only; unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_pod: Option<Vec<ByPodStatus>>,
}

/// One entry of `status.byPod` (unused, kept for compatibility).
#[expect(
    missing_docs,
    reason = "a doc comment on a field becomes its description in the shipped CRD schema"
)]
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
pub struct ByPodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// One Kubernetes Secret to sync from mounted files.
#[expect(
    missing_docs,
    reason = "a doc comment on a field becomes its description in the shipped CRD schema"
)]
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretObject {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<SecretObjectData>>,
}

/// One key of a synced Secret and the mounted file it comes from.
#[expect(
    missing_docs,
    reason = "a doc comment on a field becomes its description in the shipped CRD schema"
)]
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretObjectData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// SecretProviderClassPodStatus: which objects (and versions) are mounted for one pod.
/// Upstream objects have no spec, only status, so the kube derive (which requires a spec)
/// does not fit; the resource is described by hand.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct SecretProviderClassPodStatus {
    /// Named `<pod>-<namespace>-<class>` as upstream does, owned by the pod.
    pub metadata: ObjectMeta,
    /// What is mounted; absent on an object not written yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<PodStatusStatus>,
}

impl kube::Resource for SecretProviderClassPodStatus {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "SecretProviderClassPodStatus".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "secretproviderclasspodstatuses".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The status of a SecretProviderClassPodStatus.
#[expect(
    missing_docs,
    reason = "a doc comment on a field becomes its description in the shipped CRD schema"
)]
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatusStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_provider_class_name: Option<String>,
    #[serde(default)]
    pub mounted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<PodStatusObject>>,
}

/// One mounted object's id and version.
#[expect(
    missing_docs,
    reason = "a doc comment on a field becomes its description in the shipped CRD schema"
)]
#[derive(
    Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq, PartialOrd, Ord,
)]
pub struct PodStatusObject {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub version: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_an_upstream_pod_status_without_spec() {
        let json = serde_json::json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": "web-default-db", "namespace": "default"},
            "status": {"podName": "web", "secretProviderClassName": "db", "mounted": true,
                        "targetPath": "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/v/mount",
                        "objects": [{"id": "a", "version": "1"}]}
        });
        let status: SecretProviderClassPodStatus = serde_json::from_value(json).unwrap();
        let s = status.status.unwrap();
        assert_eq!(s.pod_name.as_deref(), Some("web"));
        assert_eq!(s.objects.unwrap()[0].version, "1");
    }

    #[test]
    fn reads_an_upstream_class() {
        let yaml = r#"
apiVersion: secrets-store.csi.x-k8s.io/v1
kind: SecretProviderClass
metadata: {name: vault-db, namespace: default}
spec:
  provider: vault
  parameters:
    roleName: app
    objects: |
      - objectName: pw
        secretPath: secret/data/db
        secretKey: password
  secretObjects:
  - secretName: db
    type: Opaque
    data: [{objectName: pw, key: password}]
"#;
        let class: SecretProviderClass = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(class.spec.provider.as_deref(), Some("vault"));
        let objects = class.spec.secret_objects.unwrap();
        assert_eq!(objects[0].type_.as_deref(), Some("Opaque"));
    }
}
