//! `keymount fetch`: publishes one SecretProviderClass into a directory once, without CSI or
//! a tmpfs, through the same provider call, path validation and atomic writer as a publish.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Deserialize as _;

use crate::class::SecretProviderClass;
use crate::cli::FetchArgs;
use crate::fs::atomic_writer;
use crate::fs::paths::Limits;
use crate::provider::access::OverridePolicy;
use crate::provider::plugin::PluginClients;
use crate::provider::tokens::TOKENS_KEY;
use crate::provider::version_key::VersionKey;
use crate::provider::{MountInput, Providers, ServiceAccountTokens, aws, builtin};
use crate::redact::Redacted;
use crate::volume::publish::{DEFAULT_PERMISSION, fetch_for_class, mount_attributes};

/// The node name the providers are told (it shows in messages such as a missing region).
const FETCH_NODE: &str = "keymount-fetch";

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

    let flags = &args.providers;
    let plugins = PluginClients::new(flags.plugin_settings());
    // One-shot: the versions are not kept, so a fresh key serves unless one is given.
    let version_key = match &flags.hmac_key_file {
        Some(path) => VersionKey::from_file(path)?,
        None => VersionKey::ephemeral(),
    };
    // No API server: the node name only shows in messages, and nothing is looked up.
    let builtin = flags.builtin_settings(FETCH_NODE, aws::DEFAULT_LOOKUP_TTL);
    let providers = builtin::register(Providers::new(plugins), &builtin, None, Some(version_key))?;
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
        max_total_bytes: flags.tmpfs_size,
        ..Limits::default()
    };
    let output = fetch_for_class(
        provider.as_ref(),
        &input,
        &provider_name,
        flags.provider_timeout,
        &limits,
        class.metadata.annotations.as_ref(),
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
        println!("  refresh before {refresh}");
    }
    Ok(())
}
