//! Flags of where secrets come from and how much of them is taken, shared by `keymount node`
//! and `keymount fetch` (one publish, the same providers and limits), and the plain settings
//! the providers are built from.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::parse_size;
use crate::provider::access::AccessArgs;
use crate::provider::aws::AwsArgs;
use crate::provider::builtin::BuiltinSettings;
use crate::provider::plugin::PluginSettings;
use crate::provider::vault::VaultArgs;

/// Providers, their limits and the key of the object versions.
#[derive(Debug, Args)]
pub(crate) struct ProviderFlags {
    /// Primary directory of external provider plugin sockets (`<dir>/<provider>.sock`).
    #[arg(
        long,
        env = "KEYMOUNT_PROVIDER_VOLUME",
        default_value = "/var/run/secrets-store-csi-providers"
    )]
    pub(crate) provider_volume: PathBuf,

    /// More provider socket directories, comma-separated, searched before the primary one.
    #[arg(
        long,
        env = "KEYMOUNT_ADDITIONAL_PROVIDER_VOLUME_PATHS",
        value_delimiter = ',',
        default_value = "/etc/kubernetes/secrets-store-csi-providers"
    )]
    pub(crate) additional_provider_volume_paths: Vec<PathBuf>,

    /// Largest provider answer accepted, in bytes: a plugin's gRPC message, and the body of
    /// any response of a built-in provider's store (read as a stream and refused past it).
    #[arg(long, env = "KEYMOUNT_MAX_CALL_RECV_MSG_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub(crate) max_call_recv_msg_size: usize,

    /// File holding the key (at least 32 bytes) of the object versions keymount derives from
    /// content (HMAC-SHA256). Without it: Secret `keymount-hmac-key` in keymount's namespace,
    /// created on first use; in local mode `hmac.key` in the state directory.
    #[arg(long, env = "KEYMOUNT_HMAC_KEY_FILE")]
    pub(crate) hmac_key_file: Option<PathBuf>,

    /// Largest set of files one volume accepts, in bytes as it takes on tmpfs (each file in
    /// whole pages); each volume's tmpfs is mounted at twice this, so a rotation always has
    /// room for the old and the new set (suffixes k, M, G, Ki, Mi, Gi allowed).
    #[arg(long, env = "KEYMOUNT_TMPFS_SIZE", default_value = "16Mi", value_parser = parse_size)]
    pub tmpfs_size: u64,

    /// Deadline for one provider call.
    #[arg(long, env = "KEYMOUNT_PROVIDER_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub provider_timeout: Duration,

    /// Built-in providers served in-process.
    #[arg(
        long,
        env = "KEYMOUNT_BUILTIN_PROVIDERS",
        value_delimiter = ',',
        default_value = "vault,aws"
    )]
    pub(crate) builtin_providers: Vec<String>,

    #[command(flatten)]
    pub access: AccessArgs,

    #[command(flatten)]
    pub vault: VaultArgs,

    #[command(flatten)]
    pub aws: AwsArgs,
}

impl ProviderFlags {
    /// Provider socket directories in search order (additional ones first, as upstream).
    pub(crate) fn provider_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.additional_provider_volume_paths.clone();
        dirs.retain(|d| !d.as_os_str().is_empty());
        dirs.push(self.provider_volume.clone());
        dirs
    }

    /// How external plugins are found and called.
    pub(crate) fn plugin_settings(&self) -> PluginSettings {
        PluginSettings {
            dirs: self.provider_dirs(),
            max_message_bytes: self.max_call_recv_msg_size,
            ..PluginSettings::default()
        }
    }

    /// The built-in providers' settings, for node `node_id` whose API server reads are kept
    /// for `lookup_ttl`.
    pub(crate) fn builtin_settings(&self, node_id: &str, lookup_ttl: Duration) -> BuiltinSettings {
        BuiltinSettings {
            enabled: self.builtin_providers.clone(),
            access: self.access.clone(),
            vault: self.vault.clone(),
            aws: self.aws.clone(),
            max_response_bytes: self.max_call_recv_msg_size,
            node_id: node_id.to_owned(),
            lookup_ttl,
        }
    }
}
