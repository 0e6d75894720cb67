//! The `SecretSync` API of secrets-store-sync-controller v0.0.4 (`secret-sync.x-k8s.io/v1alpha1`),
//! field for field, plus what keymount adds to its status: `observedGeneration` and a `Ready`
//! condition that Argo CD's health check reads.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of SecretSync.
pub const GROUP: &str = "secret-sync.x-k8s.io";

/// SecretSync: one Kubernetes Secret, named as the SecretSync, kept filled from a
/// SecretProviderClass with the identity of a ServiceAccount.
#[derive(CustomResource, Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[kube(
    group = "secret-sync.x-k8s.io",
    version = "v1alpha1",
    kind = "SecretSync",
    plural = "secretsyncs",
    namespaced,
    status = "SecretSyncStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncSpec {
    /// The controller that handles this SecretSync (`--secret-sync-controller-name`).
    #[serde(default)]
    pub secret_sync_controller_name: String,
    /// The SecretProviderClass, in the SecretSync's own namespace.
    pub secret_provider_class_name: String,
    /// The ServiceAccount whose token the store is asked with.
    pub service_account_name: String,
    /// The Secret to write.
    pub secret_object: SyncedSecret,
    /// Changing this value syncs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_synchronization: Option<String>,
}

/// The Secret a SecretSync writes.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncedSecret {
    /// Secret type (default `Opaque`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// Which provider file becomes which key.
    pub data: Vec<SyncedKey>,
    /// Labels of the Secret (prefix `secrets-store.sync.x-k8s.io` reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations of the Secret (prefix `secrets-store.sync.x-k8s.io` reserved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// One key of the Secret.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyncedKey {
    /// The path of a file in the provider's answer.
    pub source_path: String,
    /// The key in the Secret's data.
    pub target_key: String,
}

/// What the controller last did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretSyncStatus {
    /// Keyed hash (HMAC-SHA256) of what was last written: the data, class and SecretSync
    /// versions. Never a plain hash of a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_hash: Option<String>,
    /// When the store was last read successfully (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync_time: Option<String>,
    /// The SecretSync generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Create`, `Update` (upstream's) and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A condition, in the shape of `metav1.Condition`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Create`, `Update` or `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word.
    pub reason: String,
    /// What happened, naming objects, never a value.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default)]
    pub last_transition_time: String,
    /// The generation this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The SecretSync CRD as YAML, the checked-in form: `v1alpha1` with the status subresource,
/// without schemars' titles and defaults.
pub fn to_yaml() -> String {
    use kube::CustomResourceExt as _;
    let mut crd = SecretSync::crd();
    for version in &mut crd.spec.versions {
        if let Some(validation) = version.schema.as_mut()
            && let Some(schema) = validation.open_api_v3_schema.take()
        {
            let mut value = serde_json::to_value(schema).expect("a schema serializes");
            crate::class::crd_schema::tidy(&mut value);
            validation.open_api_v3_schema =
                Some(serde_json::from_value(value).expect("a valid JSONSchemaProps"));
        }
    }
    format!(
        "# SecretSync (secret-sync.x-k8s.io), the API of `keymount controller`.\n\
         # Made from keymount's Rust types by `keymount crd --api secret-sync`; do not edit by hand.\n---\n{}",
        serde_yaml::to_string(&crd).expect("a CRD always serializes")
    )
}
