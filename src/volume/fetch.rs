//! The provider call of a publish: the attributes upstream sends, the deadline, and the check
//! of every returned path before anything is written (also used by `keymount fetch`).

use std::collections::BTreeMap;

use super::publish_error::PublishError;
use crate::fs::paths;
use crate::provider::tokens::TOKENS_KEY;
use crate::provider::{MountInput, MountOutput, Provider};

/// Upstream's provider attributes: class parameters overlaid by every volume context entry
/// (the tokens travel separately).
pub fn mount_attributes(
    parameters: BTreeMap<String, String>,
    volume_context: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut attributes = parameters;
    attributes.extend(
        volume_context
            .iter()
            .filter(|(k, _)| k.as_str() != TOKENS_KEY)
            .map(|(k, val)| (k.clone(), val.clone())),
    );
    attributes
}

/// Calls the provider within `timeout` and validates every returned path against `limits`:
/// what a publish does before writing (also used by `keymount fetch`).
pub async fn fetch_checked(
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
    paths::validate_set(
        output.files.iter().map(|f| {
            (
                f.path.as_str(),
                i64::from(f.mode),
                f.contents.expose().len() as u64,
            )
        }),
        limits,
    )
    .map_err(|source| PublishError::InvalidFiles {
        class: input.class.clone(),
        provider: provider_name.to_owned(),
        source,
    })?;
    Ok(output)
}
