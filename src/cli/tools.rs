//! Flags of the one-shot commands: `keymount fetch`, `keymount csi …` and `keymount crd`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::providers::ProviderFlags;

/// Flags of `keymount fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// SecretProviderClass manifest (YAML); the first SecretProviderClass in it is used.
    #[arg(long, env = "KEYMOUNT_FETCH_CLASS")]
    pub(crate) class: PathBuf,
    /// File holding the ServiceAccount token (a JWT) the provider logs in with.
    #[arg(long, env = "KEYMOUNT_FETCH_TOKEN_FILE")]
    pub(crate) token_file: Option<PathBuf>,
    /// Audience the token is for.
    #[arg(long, env = "KEYMOUNT_FETCH_AUDIENCE", default_value = "vault")]
    pub(crate) audience: String,
    /// Directory to write into (created if missing; files appear as in a pod's volume).
    #[arg(long, env = "KEYMOUNT_FETCH_OUT")]
    pub(crate) out: PathBuf,
    /// Pod namespace the volume would belong to.
    #[arg(long, env = "KEYMOUNT_FETCH_NAMESPACE", default_value = "default")]
    pub(crate) namespace: String,
    /// Pod name.
    #[arg(
        long,
        env = "KEYMOUNT_FETCH_POD_NAME",
        default_value = "keymount-fetch"
    )]
    pub(crate) pod_name: String,
    /// Pod ServiceAccount name.
    #[arg(
        long,
        env = "KEYMOUNT_FETCH_SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub(crate) service_account: String,

    #[command(flatten)]
    pub(crate) providers: ProviderFlags,
}

/// Flags of `keymount csi`.
#[derive(Debug, Args)]
pub struct CsiArgs {
    /// CSI endpoint of the node plugin (unix socket).
    #[arg(
        long,
        env = "CSI_ENDPOINT",
        default_value = "unix:///csi/csi.sock",
        global = true
    )]
    pub(crate) endpoint: String,

    #[command(subcommand)]
    pub(crate) action: CsiAction,
}

/// What to ask the node plugin.
#[derive(Debug, Subcommand)]
pub(crate) enum CsiAction {
    /// NodePublishVolume, as kubelet sends it for an inline secrets-store volume.
    Publish(PublishArgs),
    /// NodeUnpublishVolume.
    Unpublish(UnpublishArgs),
    /// Plugin name, version, capabilities, readiness and node id.
    Info,
}

/// Flags of `keymount csi publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Volume id (kubelet uses `csi-<hash>`).
    #[arg(long, env = "KEYMOUNT_CSI_VOLUME_ID")]
    pub volume_id: String,
    /// Where the volume is mounted.
    #[arg(long, env = "KEYMOUNT_CSI_TARGET_PATH")]
    pub target_path: PathBuf,
    /// SecretProviderClass name (`secretProviderClass` volume attribute).
    #[arg(long, env = "KEYMOUNT_CSI_CLASS")]
    pub class: String,
    /// Pod namespace.
    #[arg(long, env = "KEYMOUNT_CSI_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Pod name.
    #[arg(long, env = "KEYMOUNT_CSI_POD_NAME", default_value = "keymount-cli")]
    pub pod_name: String,
    /// Pod uid.
    #[arg(
        long,
        env = "KEYMOUNT_CSI_POD_UID",
        default_value = "00000000-0000-4000-8000-000000000000"
    )]
    pub pod_uid: String,
    /// Pod ServiceAccount name.
    #[arg(long, env = "KEYMOUNT_CSI_SERVICE_ACCOUNT", default_value = "default")]
    pub(crate) service_account: String,
    /// File holding the pod's ServiceAccount token (a JWT), sent as kubelet's tokens JSON.
    #[arg(long, env = "KEYMOUNT_CSI_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Audience the token is for (the key in the tokens JSON).
    #[arg(long, env = "KEYMOUNT_CSI_AUDIENCE", default_value = "vault")]
    pub audience: String,
    /// More volume attributes, `key=value`, repeatable.
    #[arg(long = "attribute", value_parser = parse_pair)]
    pub attributes: Vec<(String, String)>,
}

/// Flags of `keymount csi unpublish`.
#[derive(Debug, Args)]
pub(crate) struct UnpublishArgs {
    /// Volume id.
    #[arg(long, env = "KEYMOUNT_CSI_VOLUME_ID")]
    pub volume_id: String,
    /// Where the volume is mounted.
    #[arg(long, env = "KEYMOUNT_CSI_TARGET_PATH")]
    pub target_path: PathBuf,
}

/// Flags of `keymount crd`.
#[derive(Debug, Args)]
pub struct CrdArgs {
    /// Write to this file instead of stdout.
    #[arg(long, env = "KEYMOUNT_CRD_OUT")]
    pub(crate) out: Option<PathBuf>,
    /// Which API: the driver's (`csi`) or the controller's SecretSync (`secret-sync`).
    #[arg(long, value_enum, default_value = "csi")]
    pub(crate) api: CrdApi,
}

/// The CRD sets `keymount crd` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CrdApi {
    /// SecretProviderClass and SecretProviderClassPodStatus.
    Csi,
    /// SecretSync (secret-sync.x-k8s.io).
    SecretSync,
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_key_value_pairs() {
        assert_eq!(parse_pair("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(parse_pair("novalue").is_err());
    }
}
