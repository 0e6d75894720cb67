//! The volume context kubelet sends (pod info, tokens, the pod's `volumeAttributes`),
//! parsed with serde so a malformed one gets an error naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::names::{self, NameError};

/// The keys keymount reads from the volume context. Everything else is passed to providers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct VolumeContext {
    /// Name of the SecretProviderClass in the pod's namespace.
    #[serde(rename = "secretProviderClass")]
    pub class: String,
    #[serde(rename = "csi.storage.k8s.io/pod.name", default)]
    pub pod_name: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/pod.namespace")]
    pub(crate) pod_namespace: String,
    #[serde(rename = "csi.storage.k8s.io/pod.uid", default)]
    pub pod_uid: Option<String>,
    #[serde(rename = "csi.storage.k8s.io/serviceAccount.name", default)]
    pub(crate) service_account: Option<String>,
}

/// Shows a volume context with the value of every key that may carry a credential (kubelet's
/// ServiceAccount tokens) replaced: for `Debug` of anything that holds the map.
pub(crate) struct RedactedContext<'a, M>(pub &'a M);

impl<'a, M> std::fmt::Debug for RedactedContext<'a, M>
where
    &'a M: IntoIterator<Item = (&'a String, &'a String)>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.into_iter().map(|(k, v)| {
                let shown: &dyn std::fmt::Debug = if k == crate::provider::tokens::TOKENS_KEY {
                    &"[redacted]"
                } else {
                    v
                };
                (k, shown)
            }))
            .finish()
    }
}

/// The volume context could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error(
        "volume context: {0} (is podInfoOnMount set on the CSIDriver, and secretProviderClass in the pod's volumeAttributes?)"
    )]
    Missing(String),
    /// A name that goes into Kubernetes API paths is not a valid name.
    #[error("volume context: {0}")]
    Name(#[from] NameError),
}

impl VolumeContext {
    /// Reads the typed view of kubelet's map.
    pub(crate) fn parse(map: &BTreeMap<String, String>) -> Result<Self, ContextError> {
        // Every value is a string, so serde can only complain about missing keys; tokens are
        // read elsewhere and are left out so they can never reach an error message.
        let context: Self = crate::parse::from_string_map(
            map.iter()
                .filter(|(k, _)| k.as_str() != crate::provider::tokens::TOKENS_KEY),
        )
        .map_err(|e| ContextError::Missing(e.to_string()))?;
        if context.class.trim().is_empty() {
            return Err(ContextError::Missing("secretProviderClass is empty".into()));
        }
        if context.pod_namespace.trim().is_empty() {
            return Err(ContextError::Missing(
                "csi.storage.k8s.io/pod.namespace is empty".into(),
            ));
        }
        context.check_names()?;
        Ok(context)
    }

    /// Every name here ends up in the path of an API request (the class GET, the pod GET of
    /// the Secret sync, the pod status and events, ServiceAccount lookups): each must be the
    /// DNS name the API server would accept, so `../x` or `a?b` never reach a URL.
    fn check_names(&self) -> Result<(), NameError> {
        names::subdomain("secretProviderClass", &self.class)?;
        names::label("csi.storage.k8s.io/pod.namespace", &self.pod_namespace)?;
        if let Some(pod) = &self.pod_name {
            names::subdomain("csi.storage.k8s.io/pod.name", pod)?;
        }
        if let Some(account) = &self.service_account {
            names::subdomain("csi.storage.k8s.io/serviceAccount.name", account)?;
        }
        Ok(())
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

    #[test]
    fn debug_of_a_publish_request_shows_no_token() {
        use crate::redact::Redacted;
        use crate::volume::{AccessType, PublishRequest};
        let token = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2Vu.sig";
        let tokens = format!(r#"{{"vault":{{"token":"{token}","expirationTimestamp":"x"}}}}"#);
        let req = PublishRequest {
            volume_id: "csi-1".into(),
            target_path: "/t".into(),
            access: Some(AccessType::Mount),
            readonly: true,
            volume_context: map(&[
                ("secretProviderClass", "db"),
                (crate::provider::tokens::TOKENS_KEY, tokens.as_str()),
            ]),
            secrets: Redacted::new(map(&[("clientSecret", "node-publish-secret")])),
            mount_group: String::new(),
        };
        for shown in [format!("{req:?}"), format!("{req:#?}")] {
            assert!(
                !shown.contains("eyJ") && !shown.contains("c2VjcmV0"),
                "{shown}"
            );
            assert!(!shown.contains("node-publish-secret"), "{shown}");
            assert!(
                shown.contains("secretProviderClass") && shown.contains("\"db\""),
                "{shown}"
            );
            assert!(shown.contains("[redacted]"), "{shown}");
        }
    }

    #[test]
    fn names_bound_for_api_paths_are_validated_and_named() {
        let base = [
            ("secretProviderClass", "db"),
            ("csi.storage.k8s.io/pod.name", "web-0"),
            ("csi.storage.k8s.io/pod.namespace", "shop"),
            ("csi.storage.k8s.io/serviceAccount.name", "app"),
        ];
        VolumeContext::parse(&map(&base)).unwrap();
        let long = "a".repeat(254);
        for (key, bad) in [
            ("secretProviderClass", "../kube-system/x"),
            ("secretProviderClass", "db?watch=true"),
            ("secretProviderClass", "a/b"),
            ("secretProviderClass", ".."),
            ("secretProviderClass", "Db"),
            ("secretProviderClass", long.as_str()),
            ("csi.storage.k8s.io/pod.namespace", "a.b"),
            ("csi.storage.k8s.io/pod.namespace", "../x"),
            ("csi.storage.k8s.io/pod.name", "p/../../x"),
            ("csi.storage.k8s.io/serviceAccount.name", "sa?x"),
        ] {
            let mut pairs = base.to_vec();
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, bad));
            let err = VolumeContext::parse(&map(&pairs)).unwrap_err();
            assert!(matches!(err, ContextError::Name(_)), "{key}={bad}: {err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("volume context: {key} ")),
                "{err}"
            );
        }
    }
}
