//! The providers keymount serves in-process, enabled by `--builtin-providers`.

use crate::cli::NodeArgs;

use super::Providers;
use super::version_key::VersionKey;

/// True when the built-in `vault` provider is enabled (it needs a [`VersionKey`]).
pub fn vault_enabled(args: &NodeArgs) -> bool {
    args.builtin_providers.iter().any(|p| p == "vault")
}

/// Adds the enabled built-in providers to `providers`. `version_key` is the key of the
/// versions derived from content (required when `vault` is enabled).
pub fn register(
    mut providers: Providers,
    args: &NodeArgs,
    kube: Option<kube::Client>,
    version_key: Option<VersionKey>,
) -> anyhow::Result<Providers> {
    let access = super::access::Access::from_args(&args.access).map_err(anyhow::Error::msg)?;
    for name in &args.builtin_providers {
        match name.as_str() {
            "" => {}
            "vault" => {
                let options = super::vault::VaultOptions {
                    max_response_bytes: args.max_call_recv_msg_size,
                    version_key: version_key
                        .clone()
                        .ok_or_else(|| anyhow::anyhow!("the vault provider needs an HMAC key"))?,
                };
                providers = providers.with_builtin(
                    "vault",
                    std::sync::Arc::new(super::vault::VaultProvider::new(
                        args.vault.clone(),
                        access.clone(),
                        options,
                    )),
                );
            }
            "aws" => {
                providers = providers.with_builtin(
                    "aws",
                    std::sync::Arc::new(
                        super::aws::AwsProvider::new(args.aws.clone(), kube.clone(), &args.node_id)
                            .with_lookup_ttl(args.api_cache_ttl),
                    ),
                );
            }
            other => tracing::warn!(
                provider = other,
                "built-in provider not available in this build; an external plugin socket will be used"
            ),
        }
    }
    Ok(providers)
}
