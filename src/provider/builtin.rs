//! The providers keymount serves in-process (`vault`, `aws`), made from plain settings: the
//! node and `keymount fetch` fill them from their flags.

use std::sync::Arc;
use std::time::Duration;

use super::Providers;
use super::access::{Access, AccessArgs};
use super::aws::{AwsArgs, AwsProvider};
use super::vault::{VaultArgs, VaultOptions, VaultProvider};
use super::version_key::VersionKey;

/// What the built-in providers are made from.
#[derive(Debug, Clone)]
pub(crate) struct BuiltinSettings {
    /// Names of the built-in providers to serve (`vault`, `aws`; any other name is left to an
    /// external plugin of that name).
    pub enabled: Vec<String>,
    /// Which files and store addresses classes may name.
    pub access: AccessArgs,
    /// Node-level settings of the `vault` provider.
    pub vault: VaultArgs,
    /// Node-level settings of the `aws` provider.
    pub aws: AwsArgs,
    /// Largest response of a store accepted, in bytes.
    pub max_response_bytes: usize,
    /// This node's name (the `aws` provider reads its region label).
    pub node_id: String,
    /// How long a read from the API server (a ServiceAccount's role, the node's region) is
    /// reused.
    pub(crate) lookup_ttl: Duration,
}

impl BuiltinSettings {
    /// True when the built-in `vault` provider is enabled (it needs a [`VersionKey`]).
    pub(crate) fn vault_enabled(&self) -> bool {
        self.enabled.iter().any(|p| p == "vault")
    }
}

/// Why the built-in providers could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BuiltinError {
    #[error("{0}")]
    Access(String),
    #[error("the vault provider needs an HMAC key")]
    NoVersionKey,
}

/// Adds the enabled built-in providers to `providers`. `version_key` is the key of the
/// versions derived from content (required when `vault` is enabled).
pub(crate) fn register(
    mut providers: Providers,
    settings: &BuiltinSettings,
    kube: Option<kube::Client>,
    version_key: Option<VersionKey>,
) -> Result<Providers, BuiltinError> {
    let access = Access::from_args(&settings.access).map_err(BuiltinError::Access)?;
    for name in &settings.enabled {
        match name.as_str() {
            "" => {}
            "vault" => {
                let options = VaultOptions {
                    max_response_bytes: settings.max_response_bytes,
                    version_key: version_key.clone().ok_or(BuiltinError::NoVersionKey)?,
                };
                let vault = VaultProvider::new(settings.vault.clone(), access.clone(), options);
                providers = providers.with_builtin("vault", Arc::new(vault));
            }
            "aws" => {
                let aws = AwsProvider::new(settings.aws.clone(), kube.clone(), &settings.node_id)
                    .with_lookup_ttl(settings.lookup_ttl);
                providers = providers.with_builtin("aws", Arc::new(aws));
            }
            other => tracing::warn!(
                provider = other,
                "built-in provider not available in this build; an external plugin socket will be used"
            ),
        }
    }
    Ok(providers)
}
