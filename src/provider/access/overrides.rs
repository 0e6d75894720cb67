//! Which class parameters a pod's `volumeAttributes` may override. Upstream overlays every
//! volume attribute on the class parameters; keymount does so for external plugins (their
//! own pods act on them) and for the harmless parameters of the built-in providers, but a
//! security-relevant one (address, TLS, file paths, auth mount, role, namespace, audience,
//! AWS region, role and credential source) comes from the class unless the admin opts in.

use std::collections::{BTreeMap, BTreeSet};

/// A pod tried to override a parameter the class decides.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "volume attribute {attribute:?} may not override the SecretProviderClass parameter of \
     provider {provider:?}: it is set by the class only (the node admin can allow it with \
     keymount node --allow-volume-attribute-overrides={attribute})"
)]
pub struct OverrideError {
    pub attribute: String,
    pub provider: String,
}

/// The admin's opt-in list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OverridePolicy {
    allowed: BTreeSet<String>,
    all: bool,
}

impl OverridePolicy {
    /// From `--allow-volume-attribute-overrides` (`*`: every parameter, as upstream).
    pub fn new(names: &[String]) -> Self {
        let names: BTreeSet<String> = names
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        Self {
            all: names.contains("*"),
            allowed: names,
        }
    }

    /// Every parameter may be overridden (upstream's behaviour).
    pub fn all() -> Self {
        Self {
            allowed: BTreeSet::new(),
            all: true,
        }
    }

    fn allows(&self, name: &str) -> bool {
        self.all || self.allowed.contains(name)
    }

    /// Refuses the first volume attribute that names one of `class_only` with a value other
    /// than the class's (a parameter the class leaves unset may not be set either), unless
    /// allowed.
    pub fn check(
        &self,
        provider: &str,
        class_only: &[&str],
        parameters: &BTreeMap<String, String>,
        volume_attributes: &BTreeMap<String, String>,
    ) -> Result<(), OverrideError> {
        for (name, value) in volume_attributes {
            if class_only.contains(&name.as_str())
                && parameters.get(name) != Some(value)
                && !self.allows(name)
            {
                return Err(OverrideError {
                    attribute: name.clone(),
                    provider: provider.to_owned(),
                });
            }
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
    fn class_only_parameters_need_the_admin() {
        let class_only = ["vaultAddress", "roleName"];
        let params = map(&[("vaultAddress", "https://vault"), ("roleName", "app")]);
        let none = OverridePolicy::default();
        let err = none
            .check(
                "vault",
                &class_only,
                &params,
                &map(&[("roleName", "admin")]),
            )
            .unwrap_err();
        assert_eq!(err.attribute, "roleName");
        assert!(err.to_string().contains("roleName"), "{err}");
        // Not set by the class: the pod still may not choose it.
        let err = none
            .check(
                "vault",
                &class_only,
                &map(&[]),
                &map(&[("vaultAddress", "http://169.254.169.254")]),
            )
            .unwrap_err();
        assert_eq!(err.attribute, "vaultAddress");
        // The same value, harmless parameters and kubelet's keys pass.
        let pod = map(&[
            ("roleName", "app"),
            ("objects", "- {objectName: a, secretPath: x}"),
            ("secretProviderClass", "c"),
            ("csi.storage.k8s.io/pod.name", "p"),
        ]);
        none.check("vault", &class_only, &params, &pod).unwrap();
        let some = OverridePolicy::new(&["roleName".into()]);
        some.check("vault", &class_only, &params, &map(&[("roleName", "x")]))
            .unwrap();
        assert!(
            some.check(
                "vault",
                &class_only,
                &params,
                &map(&[("vaultAddress", "x")])
            )
            .is_err()
        );
        OverridePolicy::new(&["*".into()])
            .check(
                "vault",
                &class_only,
                &params,
                &map(&[("vaultAddress", "x")]),
            )
            .unwrap();
    }
}
