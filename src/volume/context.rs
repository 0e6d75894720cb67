//! The volume context kubelet sends (pod info, tokens, the pod's `volumeAttributes`),
//! parsed with serde so a malformed one gets an error naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The keys keymount reads from the volume context. Everything else is passed to providers.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumeContext {
    /// Name of the SecretProviderClass in the pod's namespace.
    #[serde(rename = "secretProviderClass")]
    pub class: String,
    #[serde(rename = "csi.storage.k8s.io/pod.name", default)]
    pub pod_name: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    pub pod_namespace: String,
    #[serde(rename = "csi.storage.k8s.io/pod.uid", default)]
    pub pod_uid: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/serviceAccount.name", default)]
    pub service_account: Option<String>,
}

/// The volume context could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "volume context: {0} (is podInfoOnMount set on the CSIDriver, and secretProviderClass in the pod's volumeAttributes?)"
)]
pub struct ContextError(String);

impl VolumeContext {
    /// Reads the typed view of kubelet's map.
    pub fn parse(map: &BTreeMap<String, String>) -> Result<Self, ContextError> {
        // Every value is a string, so serde can only complain about missing keys; tokens are
        // read elsewhere and are left out so they can never reach an error message.
        let object = map
            .iter()
            .filter(|(k, _)| k.as_str() != crate::provider::tokens::TOKENS_KEY)
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let context = Self::deserialize(serde_json::Value::Object(object))
            .map_err(|e| ContextError(e.to_string()))?;
        if context.class.trim().is_empty() {
            return Err(ContextError("secretProviderClass is empty".into()));
        }
        if context.pod_namespace.trim().is_empty() {
            return Err(ContextError(
                "csi.storage.k8s.io/pod.namespace is empty".into(),
            ));
        }
        Ok(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn reads_kubelet_keys() {
        let ctx = VolumeContext::parse(&map(&[
            ("secretProviderClass", "db"),
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            ("csi.storage.k8s.io/pod.uid", "u-1"),
            ("csi.storage.k8s.io/ephemeral", "true"),
            ("extra", "kept for providers"),
        ]))
        .unwrap();
        assert_eq!(ctx.class, "db");
        assert_eq!(ctx.pod_namespace, "shop");
        assert_eq!(ctx.pod_uid.as_deref(), Some("u-1"));
    }

    #[test]
    fn missing_keys_are_named() {
        let err =
            VolumeContext::parse(&map(&[("csi.storage.k8s.io/pod.namespace", "a")])).unwrap_err();
        assert!(err.to_string().contains("secretProviderClass"), "{err}");
        let err = VolumeContext::parse(&map(&[("secretProviderClass", "db")])).unwrap_err();
        assert!(
            err.to_string().contains("csi.storage.k8s.io/pod.namespace"),
            "{err}"
        );
        let err = VolumeContext::parse(&map(&[
            ("secretProviderClass", " "),
            ("csi.storage.k8s.io/pod.namespace", "a"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }
}
