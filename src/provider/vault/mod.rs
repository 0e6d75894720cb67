//! The built-in `vault` provider: the same SecretProviderClass parameters as
//! vault-csi-provider, served in-process, logging in with the pod's own token.

pub(crate) mod auth;
pub(crate) mod cache;
pub mod client;
pub(crate) mod client_cache;
pub(crate) mod error;
pub(crate) mod fetch;
pub mod params;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use self::cache::{Identity, InFlight, TokenCache};
use self::client::VaultHttp;
use self::error::VaultError;
use self::fetch::{RequestKey, Secret};
use self::params::MountParameters;
use super::access::Access;
use super::version_key::VersionKey;
use super::{MountInput, MountOutput, Provider, ProviderError};

/// Node-level defaults of the Vault provider (env < flags < class parameters), named as
/// vault-csi-provider's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct VaultArgs {
    /// Default Vault address when a class sets no `vaultAddress` (`unix://` for a Vault Agent).
    #[arg(long, env = "VAULT_ADDR")]
    pub(crate) vault_addr: Option<String>,

    /// Default auth mount path (`vaultAuthMountPath`).
    #[arg(long, env = "KEYMOUNT_VAULT_MOUNT", default_value = "kubernetes")]
    pub(crate) vault_mount: String,

    /// Default Vault namespace (`vaultNamespace`).
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub(crate) vault_namespace: Option<String>,

    /// Default CA certificate file (`vaultCACertPath`).
    #[arg(long, env = "VAULT_CACERT")]
    pub(crate) vault_tls_ca_cert: Option<PathBuf>,

    /// Default CA directory (`vaultCADirectory`).
    #[arg(long, env = "VAULT_CAPATH")]
    pub(crate) vault_tls_ca_directory: Option<PathBuf>,

    /// Default TLS server name to verify (`vaultTLSServerName`).
    #[arg(long, env = "VAULT_TLS_SERVER_NAME")]
    pub(crate) vault_tls_server_name: Option<String>,

    /// Default client certificate for mTLS (`vaultTLSClientCertPath`).
    #[arg(long, env = "VAULT_CLIENT_CERT")]
    pub(crate) vault_tls_client_cert: Option<PathBuf>,

    /// Default client key for mTLS (`vaultTLSClientKeyPath`).
    #[arg(long, env = "VAULT_CLIENT_KEY")]
    pub(crate) vault_tls_client_key: Option<PathBuf>,

    /// Skip verification of Vault's certificate (`vaultSkipTLSVerify`); for tests only.
    #[arg(long, env = "VAULT_SKIP_VERIFY", default_value_t = false)]
    pub(crate) vault_tls_skip_verify: bool,

    /// Identities whose Vault token is cached; 0 logs in for every mount.
    #[arg(long, env = "KEYMOUNT_VAULT_CACHE_SIZE", default_value_t = 1000)]
    pub(crate) vault_cache_size: usize,

    /// Vault requests of one mount run at most this many at once.
    #[arg(long, env = "KEYMOUNT_VAULT_CONCURRENCY", default_value_t = 8)]
    pub(crate) vault_concurrency: usize,
}

impl Default for VaultArgs {
    /// The flag defaults, without reading the environment.
    fn default() -> Self {
        Self {
            vault_addr: None,
            vault_mount: "kubernetes".into(),
            vault_namespace: None,
            vault_tls_ca_cert: None,
            vault_tls_ca_directory: None,
            vault_tls_server_name: None,
            vault_tls_client_cert: None,
            vault_tls_client_key: None,
            vault_tls_skip_verify: false,
            vault_cache_size: 1000,
            vault_concurrency: 8,
        }
    }
}

/// What the node, not the class, decides for the provider.
#[derive(Debug, Clone)]
pub struct VaultOptions {
    /// Largest response body read from Vault (`--max-call-recv-msg-size`).
    pub max_response_bytes: usize,
    /// The key of the object versions (HMAC-SHA256 of configuration and content).
    pub version_key: VersionKey,
}

/// State shared by all mounts: HTTP clients, the token cache, reads in flight.
#[derive(Debug)]
pub struct Shared {
    http: VaultHttp,
    tokens: TokenCache,
    reads: InFlight<(Identity, RequestKey), Result<Arc<Secret>, VaultError>>,
    concurrency: usize,
    version_key: VersionKey,
}

/// The `vault` provider.
#[derive(Debug)]
pub struct VaultProvider {
    defaults: VaultArgs,
    access: Access,
    shared: Arc<Shared>,
}

impl VaultProvider {
    /// A provider with these node defaults and options; class-named files and addresses only
    /// as `access` allows.
    pub fn new(defaults: VaultArgs, access: Access, options: VaultOptions) -> Self {
        let shared = Arc::new(Shared {
            http: VaultHttp::new(access.clone(), options.max_response_bytes),
            tokens: TokenCache::new(defaults.vault_cache_size),
            reads: InFlight::default(),
            concurrency: defaults.vault_concurrency,
            version_key: options.version_key,
        });
        Self {
            defaults,
            access,
            shared,
        }
    }

    /// Number of HTTP clients kept (bounded by [`client::CLIENT_CACHE_SIZE`]).
    pub fn cached_http_clients(&self) -> usize {
        self.shared.http.cached_clients()
    }

    async fn mount_inner(&self, input: &MountInput) -> Result<MountOutput, VaultError> {
        let params = MountParameters::parse(&input.attributes, &self.defaults, &self.access)?;
        let jwt = auth::pod_token(&input.tokens, &params.audience)?.clone();
        let subject = format!(
            "{}|{}",
            params.service_account.as_deref().unwrap_or_default(),
            super::tokens::subject_key(&jwt)
        );
        let identity = Identity {
            connection: params.connection.clone(),
            auth_mount: params.auth_mount.clone(),
            role: params.role.clone(),
            subject,
        };
        tracing::debug!(
            class = %input.class,
            vault = %identity.connection.address,
            mount = %identity.auth_mount,
            role = %identity.role,
            objects = params.objects.len(),
            "reading from Vault"
        );
        fetch::fetch_all(&self.shared, &identity, &jwt, &params, input.permission).await
    }
}

#[async_trait]
impl Provider for VaultProvider {
    async fn mount(&self, input: &MountInput) -> Result<MountOutput, ProviderError> {
        self.mount_inner(input).await.map_err(ProviderError::from)
    }

    fn class_only_parameters(&self) -> &'static [&'static str] {
        params::CLASS_ONLY
    }

    fn token_audiences(&self, parameters: &BTreeMap<String, String>) -> Vec<String> {
        let audience = parameters
            .get("audience")
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .unwrap_or(params::DEFAULT_AUDIENCE);
        vec![audience.to_owned()]
    }
}
