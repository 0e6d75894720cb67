//! The provider call of a publish: the attributes upstream sends, the deadline, and the check
//! of every returned path before anything is written (also used by `keymount fetch`).

use std::collections::BTreeMap;

use super::publish_error::PublishError;
use crate::fs::atomic_writer::Payload;
use crate::fs::paths;
use crate::provider::access::{OverrideError, OverridePolicy};
use crate::provider::tokens::TOKENS_KEY;
use crate::provider::{MountInput, MountOutput, Provider};
use crate::transform;

/// Upstream's provider attributes: class parameters overlaid by every volume context entry
/// (the tokens travel separately), except that a volume attribute may not change a
/// parameter the provider keeps class-only (`Provider::class_only_parameters`) unless
/// `overrides` allows it.
pub(crate) fn mount_attributes(
    parameters: BTreeMap<String, String>,
    volume_context: &BTreeMap<String, String>,
    provider: (&str, &dyn Provider),
    overrides: &OverridePolicy,
) -> Result<BTreeMap<String, String>, OverrideError> {
    overrides.check(
        provider.0,
        provider.1.class_only_parameters(),
        &parameters,
        volume_context,
    )?;
    let mut attributes = parameters;
    attributes.extend(
        volume_context
            .iter()
            .filter(|(k, _)| k.as_str() != TOKENS_KEY)
            .map(|(k, val)| (k.clone(), val.clone())),
    );
    Ok(attributes)
}

/// Every path, mode and size of `files` against `limits`.
fn check_set(files: &[Payload], limits: &paths::Limits) -> Result<(), paths::PathError> {
    paths::validate_set(
        files.iter().map(|f| {
            (
                f.path.as_str(),
                i64::from(f.mode),
                f.contents.expose().len() as u64,
            )
        }),
        limits,
    )
}

/// Calls the provider within `timeout` and validates every returned path against `limits`:
/// what a publish does before writing (also used by `keymount fetch`).
pub(crate) async fn fetch_checked(
    provider: &dyn Provider,
    input: &MountInput,
    provider_name: &str,
    timeout: std::time::Duration,
    limits: &paths::Limits,
) -> Result<MountOutput, PublishError> {
    let output = tokio::time::timeout(timeout, provider.mount(input))
        .await
        .map_err(|_| PublishError::ProviderTimeout {
            class: input.class.clone(),
            provider: provider_name.to_owned(),
            seconds: timeout.as_secs(),
        })?
        .map_err(|source| PublishError::Provider {
            class: input.class.clone(),
            provider: provider_name.to_owned(),
            source,
        })?;
    check_set(&output.files, limits).map_err(|source| PublishError::InvalidFiles {
        class: input.class.clone(),
        provider: provider_name.to_owned(),
        source,
    })?;
    Ok(output)
}

/// [`fetch_checked`], then the class's extract and templates (its annotations), and the
/// check again on what they made: what every writer of a class's files calls.
pub(crate) async fn fetch_for_class(
    provider: &dyn Provider,
    input: &MountInput,
    provider_name: &str,
    timeout: std::time::Duration,
    limits: &paths::Limits,
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<MountOutput, PublishError> {
    let mut output = fetch_checked(provider, input, provider_name, timeout, limits).await?;
    if !transform::wanted(annotations) {
        return Ok(output);
    }
    let max_bytes = usize::try_from(limits.max_total_bytes).unwrap_or(usize::MAX);
    output.files = transform::apply(
        &input.class,
        annotations,
        std::mem::take(&mut output.files),
        input.permission,
        max_bytes,
    )?;
    check_set(&output.files, limits).map_err(|source| PublishError::InvalidTransform {
        class: input.class.clone(),
        source,
    })?;
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::access::Access;
    use crate::provider::aws::{AwsArgs, AwsProvider};
    use crate::provider::vault::{VaultArgs, VaultOptions, VaultProvider};
    use crate::provider::version_key::VersionKey;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn built_in_providers_keep_security_parameters_class_only() {
        let vault = VaultProvider::new(
            VaultArgs::default(),
            Access::default(),
            VaultOptions {
                max_response_bytes: 1 << 20,
                version_key: VersionKey::ephemeral(),
            },
        );
        let aws = AwsProvider::new(AwsArgs::default(), None, "node-1");
        let none = OverridePolicy::default();
        let cases: [(&str, &dyn Provider, &str, &str); 5] = [
            ("vault", &vault, "vaultAddress", "http://169.254.169.254"),
            ("vault", &vault, "roleName", "admin"),
            ("vault", &vault, "vaultCACertPath", "/etc/shadow"),
            ("aws", &aws, "region", "eu-west-1"),
            ("aws", &aws, "usePodIdentity", "true"),
        ];
        for (name, provider, attribute, value) in cases {
            let class = map(&[("objects", "- x")]);
            let pod = map(&[(attribute, value), (TOKENS_KEY, "{}")]);
            let err = mount_attributes(class.clone(), &pod, (name, provider), &none).unwrap_err();
            assert_eq!(err.attribute, attribute);
            let allowed = OverridePolicy::new(&[attribute.to_owned()]);
            let merged = mount_attributes(class, &pod, (name, provider), &allowed).unwrap();
            assert_eq!(merged[attribute], value);
            assert!(!merged.contains_key(TOKENS_KEY), "tokens travel separately");
        }
        // `objects` (and AWS's pathTranslation) stay the pod's, as upstream.
        for (name, provider) in [("vault", &vault as &dyn Provider), ("aws", &aws)] {
            let merged = mount_attributes(
                map(&[("objects", "- class")]),
                &map(&[("objects", "- pod"), ("pathTranslation", "False")]),
                (name, provider),
                &none,
            )
            .unwrap();
            assert_eq!(merged["objects"], "- pod");
        }
    }
}
