//! The CustomResourceDefinitions of both CRDs, made from the Rust types: what `keymount crd`
//! prints and what the chart and `deploy/` ship (checked in, compared by a test).
//!
//! Shape as upstream: namespaced, `v1` served and stored, `v1alpha1` still served but
//! deprecated, no status subresource (keymount writes SecretProviderClassPodStatus `status`
//! through the main resource), no short names, no printer columns.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, CustomResourceDefinitionNames, CustomResourceDefinitionSpec,
    CustomResourceDefinitionVersion, CustomResourceValidation, JSONSchemaProps,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::CustomResourceExt;
use schemars::JsonSchema;

use super::crd::{GROUP, PodStatusStatus, SecretProviderClass};

/// The version upstream still serves for old manifests.
pub(crate) const DEPRECATED_VERSION: &str = "v1alpha1";
/// The warning the API server returns for `v1alpha1` SecretProviderClass requests (upstream's text).
pub(crate) const DEPRECATION_WARNING: &str =
    "secrets-store.csi.x-k8s.io/v1alpha1 is deprecated. Use secrets-store.csi.x-k8s.io/v1 instead.";

/// Both CRDs, SecretProviderClass first.
pub(crate) fn definitions() -> Vec<CustomResourceDefinition> {
    vec![secret_provider_class(), pod_status()]
}

/// Both CRDs as one multi-document YAML stream, the checked-in form.
pub(crate) fn to_yaml() -> String {
    let mut out = String::from(
        "# SecretProviderClass and SecretProviderClassPodStatus (secrets-store.csi.x-k8s.io).\n\
         # Made from keymount's Rust types by `keymount crd`; do not edit by hand.\n",
    );
    for crd in definitions() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("a CRD always serializes"));
    }
    out
}

/// SecretProviderClass: the derive's `v1`, minus the status subresource, plus `v1alpha1`.
fn secret_provider_class() -> CustomResourceDefinition {
    let mut crd = SecretProviderClass::crd();
    let mut v1 = crd.spec.versions.remove(0);
    v1.subresources = None;
    if let Some(validation) = v1.schema.as_mut()
        && let Some(schema) = validation.open_api_v3_schema.take()
    {
        let mut value = serde_json::to_value(schema).expect("a schema serializes");
        tidy(&mut value);
        // Upstream accepts a class without spec (it fails at mount time, naming the class).
        if let Some(root) = value.as_object_mut() {
            root.remove("required");
            root.insert(
                "description".into(),
                "SecretProviderClass: which provider to call for a volume, and with which parameters."
                    .into(),
            );
        }
        validation.open_api_v3_schema =
            Some(serde_json::from_value(value).expect("a valid JSONSchemaProps"));
    }
    let alpha = CustomResourceDefinitionVersion {
        name: DEPRECATED_VERSION.into(),
        served: true,
        storage: false,
        deprecated: Some(true),
        deprecation_warning: Some(DEPRECATION_WARNING.into()),
        ..v1.clone()
    };
    crd.spec.versions = vec![v1, alpha];
    crd
}

/// SecretProviderClassPodStatus has no spec (upstream objects carry only `status`), so its
/// schema is assembled around the derived schema of [`PodStatusStatus`].
fn pod_status() -> CustomResourceDefinition {
    let status = schema_of::<PodStatusStatus>();
    let schema: JSONSchemaProps = serde_json::from_value(serde_json::json!({
        "description": "SecretProviderClassPodStatus: which objects (and versions) are mounted for one pod.",
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "status": status,
        },
    }))
    .expect("a valid JSONSchemaProps");
    let version = |name: &str, storage: bool| CustomResourceDefinitionVersion {
        name: name.into(),
        served: true,
        storage,
        deprecated: (!storage).then_some(true),
        schema: Some(CustomResourceValidation {
            open_api_v3_schema: Some(schema.clone()),
        }),
        ..Default::default()
    };
    CustomResourceDefinition {
        metadata: ObjectMeta {
            name: Some(format!("secretproviderclasspodstatuses.{GROUP}")),
            ..Default::default()
        },
        spec: CustomResourceDefinitionSpec {
            group: GROUP.into(),
            names: CustomResourceDefinitionNames {
                kind: "SecretProviderClassPodStatus".into(),
                list_kind: Some("SecretProviderClassPodStatusList".into()),
                plural: "secretproviderclasspodstatuses".into(),
                singular: Some("secretproviderclasspodstatus".into()),
                ..Default::default()
            },
            scope: "Namespaced".into(),
            versions: vec![version("v1", true), version(DEPRECATED_VERSION, false)],
            ..Default::default()
        },
        status: None,
    }
}

/// The structural OpenAPI schema of `T`, with the settings kube's derive uses.
fn schema_of<T: JsonSchema>() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(schemars::transform::AddNullable::default())
        .with_transform(kube::core::schema::StructuralSchemaRewriter)
        .into_generator();
    let mut value =
        serde_json::to_value(generator.into_root_schema_for::<T>()).expect("a schema serializes");
    tidy(&mut value);
    value
}

/// Drops what upstream's schemas do not have: `title` (the Rust type's name) and `default`
/// (serde's defaults are for reading, not for the API server to fill in).
/// Removes schemars' titles and defaults (the shipped schemas carry neither).
pub(crate) fn tidy(schema: &mut serde_json::Value) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    object.remove("title");
    object.remove("default");
    if let Some(properties) = object.get_mut("properties").and_then(|p| p.as_object_mut()) {
        properties.values_mut().for_each(tidy);
    }
    for key in ["items", "additionalProperties"] {
        if let Some(sub) = object.get_mut(key) {
            tidy(sub);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_crds_serve_v1_and_a_deprecated_v1alpha1_without_status_subresource() {
        for crd in definitions() {
            let versions: Vec<_> = crd
                .spec
                .versions
                .iter()
                .map(|v| (v.name.as_str(), v.served, v.storage, v.deprecated))
                .collect();
            assert_eq!(
                versions,
                [
                    ("v1", true, true, None),
                    ("v1alpha1", true, false, Some(true))
                ],
                "{:?}",
                crd.metadata.name
            );
            assert!(crd.spec.versions.iter().all(|v| v.subresources.is_none()));
            assert_eq!(crd.spec.scope, "Namespaced");
        }
        let spc = &definitions()[0];
        assert_eq!(
            spc.spec.versions[1].deprecation_warning.as_deref(),
            Some(DEPRECATION_WARNING)
        );
    }

    #[test]
    fn pod_status_schema_has_the_upstream_status_fields() {
        let crd = pod_status();
        let schema = crd.spec.versions[0]
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .unwrap();
        let status = &schema.properties.as_ref().unwrap()["status"];
        let fields: Vec<_> = status.properties.as_ref().unwrap().keys().collect();
        assert_eq!(
            fields,
            [
                "mounted",
                "objects",
                "podName",
                "secretProviderClassName",
                "targetPath"
            ]
        );
    }
}
