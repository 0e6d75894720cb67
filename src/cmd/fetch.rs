//! `keymount fetch`: publishes one SecretProviderClass into a directory once, without CSI or
//! a tmpfs, through the same provider call, path validation and atomic writer as a publish.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, FromArgMatches};
use serde::Deserialize as _;

use crate::class::SecretProviderClass;
use crate::cli::NodeArgs;
use crate::fs::atomic_writer;
use crate::fs::paths::Limits;
use crate::provider::access::OverridePolicy;
use crate::provider::plugin::{PluginClients, PluginSettings};
use crate::provider::tokens::TOKENS_KEY;
use crate::provider::vault::VaultArgs;
use crate::provider::version_key::VersionKey;
use crate::provider::{MountInput, Providers, ServiceAccountTokens, builtin};
use crate::redact::Redacted;
use crate::volume::publish::{DEFAULT_PERMISSION, fetch_checked, mount_attributes};

/// Flags of `keymount fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// SecretProviderClass manifest (YAML); the first SecretProviderClass in it is used.
    #[arg(long, env = "KEYMOUNT_FETCH_CLASS")]
    pub class: PathBuf,
    /// File holding the ServiceAccount token (a JWT) the provider logs in with.
    #[arg(long, env = "KEYMOUNT_FETCH_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Audience the token is for.
    #[arg(long, env = "KEYMOUNT_FETCH_AUDIENCE", default_value = "vault")]
    pub audience: String,
    /// Directory to write into (created if missing; files appear as in a pod's volume).
    #[arg(long, env = "KEYMOUNT_FETCH_OUT")]
    pub out: PathBuf,
    /// Pod namespace the volume would belong to.
    #[arg(long, env = "KEYMOUNT_FETCH_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Pod name.
    #[arg(
        long,
        env = "KEYMOUNT_FETCH_POD_NAME",
        default_value = "keymount-fetch"
    )]
    pub pod_name: String,
    /// Pod ServiceAccount name.
    #[arg(
        long,
        env = "KEYMOUNT_FETCH_SERVICE_ACCOUNT",
        default_value = "default"
    )]
    pub service_account: String,
    /// Built-in providers served in-process.
    #[arg(
        long,
        env = "KEYMOUNT_BUILTIN_PROVIDERS",
        value_delimiter = ',',
        default_value = "vault,aws"
    )]
    pub builtin_providers: Vec<String>,

    #[command(flatten)]
    pub access: crate::provider::access::AccessArgs,

    #[command(flatten)]
    pub vault: VaultArgs,

    #[command(flatten)]
    pub aws: crate::provider::aws::AwsArgs,
}

fn read_class(path: &PathBuf) -> anyhow::Result<SecretProviderClass> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("read class manifest {}", path.display()))?;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_yaml::Value::deserialize(doc)
            .with_context(|| format!("parse {}", path.display()))?;
        if value.get("kind").and_then(|k| k.as_str()) == Some("SecretProviderClass") {
            return serde_yaml::from_value(value)
                .with_context(|| format!("parse SecretProviderClass in {}", path.display()));
        }
    }
    bail!("no SecretProviderClass in {}", path.display())
}

/// Node settings with their defaults (and environment), for the providers and limits.
fn node_defaults(args: &FetchArgs) -> anyhow::Result<NodeArgs> {
    let command = <NodeArgs as Args>::augment_args(clap::Command::new("node"));
    let matches = command.try_get_matches_from(["node", "--nodeid", "keymount-fetch"])?;
    let mut node = NodeArgs::from_arg_matches(&matches)?;
    node.builtin_providers = args.builtin_providers.clone();
    node.access = args.access.clone();
    node.vault = args.vault.clone();
    node.aws = args.aws.clone();
    Ok(node)
}

/// Runs `keymount fetch`.
pub async fn run(args: FetchArgs) -> anyhow::Result<()> {
    let class = read_class(&args.class)?;
    let name = class.metadata.name.clone().unwrap_or_default();
    let class_id = format!("{}/{name}", args.namespace);
    let provider_name = class
        .spec
        .provider
        .clone()
        .filter(|p| !p.is_empty())
        .with_context(|| format!("SecretProviderClass {class_id} has no spec.provider"))?;
    let parameters = class.spec.parameters.clone().unwrap_or_default();

    let node = node_defaults(&args)?;
    let plugins = PluginClients::new(PluginSettings {
        dirs: node.provider_dirs(),
        max_message_bytes: node.max_call_recv_msg_size,
        ..PluginSettings::default()
    });
    // One-shot: the versions are not kept, so a fresh key serves unless one is given.
    let version_key = match &node.hmac_key_file {
        Some(path) => VersionKey::from_file(path)?,
        None => VersionKey::ephemeral(),
    };
    let providers = builtin::register(Providers::new(plugins), &node, None, Some(version_key))?;
    let provider = providers
        .resolve(&provider_name)
        .with_context(|| format!("SecretProviderClass {class_id}"))?;

    let mut context: BTreeMap<String, String> = [
        ("secretProviderClass", name.as_str()),
        ("csi.storage.k8s.io/pod.name", &args.pod_name),
        ("csi.storage.k8s.io/pod.namespace", &args.namespace),
        (
            "csi.storage.k8s.io/serviceAccount.name",
            &args.service_account,
        ),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let tokens = match &args.token_file {
        Some(file) => {
            let json = super::csi_client::tokens_json(file, &args.audience)?;
            context.insert(TOKENS_KEY.to_owned(), json.clone());
            ServiceAccountTokens::parse(&json)?
        }
        None => ServiceAccountTokens::default(),
    };
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {}", args.out.display()))?;
    let input = MountInput {
        class: class_id.clone(),
        attributes: mount_attributes(
            parameters,
            &context,
            (&provider_name, provider.as_ref()),
            &OverridePolicy::default(),
        )?,
        tokens,
        secrets: Redacted::new(BTreeMap::new()),
        target_path: args.out.clone(),
        permission: DEFAULT_PERMISSION,
        current_versions: Vec::new(),
    };
    let limits = Limits {
        max_total_bytes: node.tmpfs_size,
        ..Limits::default()
    };
    let output = fetch_checked(
        provider.as_ref(),
        &input,
        &provider_name,
        node.provider_timeout,
        &limits,
    )
    .await?;
    if !output.files.is_empty() {
        // The directory is the user's: only the writer's own entries are ever removed.
        atomic_writer::write_shared(&args.out, &output.files)?;
    }
    println!(
        "fetched {class_id} (provider {provider_name}) into {}:",
        args.out.display()
    );
    for file in &output.files {
        println!(
            "  {} mode {:04o}, {} bytes",
            file.path,
            file.mode,
            file.contents.expose().len()
        );
    }
    for version in &output.versions {
        println!("  version {} = {}", version.id, version.version);
    }
    if let Some(refresh) = output.refresh_before {
        println!("  refresh before {}", refresh.to_rfc3339());
    }
    Ok(())
}
