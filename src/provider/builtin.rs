//! The providers keymount serves in-process, enabled by `--builtin-providers`.

use crate::cli::NodeArgs;

use super::Providers;

/// Adds the enabled built-in providers to `providers`.
pub fn register(
    mut providers: Providers,
    args: &NodeArgs,
    kube: Option<kube::Client>,
) -> anyhow::Result<Providers> {
    let access = super::access::Access::from_args(&args.access).map_err(anyhow::Error::msg)?;
    for name in &args.builtin_providers {
        match name.as_str() {
            "" => {}
            "vault" => {
                providers = providers.with_builtin(
                    "vault",
                    std::sync::Arc::new(super::vault::VaultProvider::new(
                        args.vault.clone(),
                        access.clone(),
                    )),
                );
            }
            "aws" => {
                providers = providers.with_builtin(
                    "aws",
                    std::sync::Arc::new(super::aws::AwsProvider::new(
                        args.aws.clone(),
                        kube.clone(),
                        &args.node_id,
                    )),
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
