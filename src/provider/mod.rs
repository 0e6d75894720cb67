//! Providers: where secret values come from. A provider is either built in (Vault, AWS) or an
//! external plugin speaking the upstream `v1alpha1.CSIDriverProvider` API on a unix socket;
//! both sit behind the [`Provider`] trait, so publish code cannot tell them apart.

pub mod access;
pub mod aws;
pub(crate) mod builtin;
mod error;
pub mod plugin;
pub(crate) mod slots;
pub mod tokens;
pub mod vault;
pub mod version_key;
mod wire_debug;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use crate::fs::atomic_writer::Payload;
use crate::redact::Redacted;
pub(crate) use error::ProviderFailure;
pub use error::{ErrorKind, ProviderError};
pub use tokens::ServiceAccountTokens;

/// The id and version of one mounted object, as the provider reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct ObjectVersion {
    /// The object's id (the file name, for the built-in providers).
    pub id: String,
    /// Its version as the provider tells it: a change means new content.
    pub version: String,
}

/// Everything a provider gets for one mount.
#[derive(Debug, Clone)]
pub struct MountInput {
    /// `namespace/name` of the SecretProviderClass (for messages).
    pub class: String,
    /// Class parameters overlaid by the volume context (the tokens key is not in here).
    pub attributes: BTreeMap<String, String>,
    /// The pod's ServiceAccount tokens, as kubelet handed them over.
    pub tokens: ServiceAccountTokens,
    /// `nodePublishSecretRef` data.
    pub secrets: Redacted<BTreeMap<String, String>>,
    /// Where the volume is mounted (providers that write files themselves use it).
    pub target_path: PathBuf,
    /// Default file mode (0644).
    pub permission: u32,
    /// The versions currently mounted, so a provider can skip unchanged objects.
    pub current_versions: Vec<ObjectVersion>,
}

impl MountInput {
    /// Pod name from the volume context, if kubelet sent it.
    pub fn pod_name(&self) -> Option<&str> {
        self.attributes
            .get("csi.storage.k8s.io/pod.name")
            .map(String::as_str)
    }
}

/// What a provider returns for one mount.
#[derive(Debug, Clone, Default)]
pub struct MountOutput {
    /// The files to write. Empty from an external plugin means it wrote them itself.
    pub files: Vec<Payload>,
    /// One version per object.
    pub versions: Vec<ObjectVersion>,
    /// The earliest moment some object must be fetched again (e.g. a Vault lease's end).
    pub refresh_before: Option<jiff::Timestamp>,
}

/// A source of secret values.
#[async_trait]
pub trait Provider: Send + Sync + fmt::Debug {
    /// Fetches the objects a class names, with the pod's own identity.
    async fn mount(&self, input: &MountInput) -> Result<MountOutput, ProviderError>;

    /// Class parameters a pod's `volumeAttributes` may not override unless the admin allows
    /// it (`--allow-volume-attribute-overrides`). External plugins: none, as upstream.
    fn class_only_parameters(&self) -> &'static [&'static str] {
        &[]
    }

    /// The ServiceAccount token audiences a mount with these class parameters uses, for a
    /// caller that requests tokens itself (`keymount controller`); kubelet sends what the
    /// CSIDriver's `tokenRequests` list. External plugins cannot say: none.
    fn token_audiences(&self, _parameters: &BTreeMap<String, String>) -> Vec<String> {
        Vec::new()
    }
}

/// Why no provider could be found for a class.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A name that could not be a socket file name (upstream's rule).
    #[error("provider name {0:?} is invalid: it must match ^[a-zA-Z0-9_-]{{0,30}}$")]
    InvalidName(String),
    /// Neither built in nor a plugin socket.
    #[error("provider {name:?} not found: no socket {name}.sock in {dirs}")]
    NotFound {
        /// The provider name.
        name: String,
        /// The plugin directories searched.
        dirs: String,
    },
}

/// Every provider keymount can call: built-in ones by name, then external plugins.
#[derive(Debug)]
pub struct Providers {
    builtin: BTreeMap<String, Arc<dyn Provider>>,
    plugins: plugin::PluginClients,
}

impl Providers {
    /// A registry with no built-in provider and the given plugin client settings.
    pub fn new(plugins: plugin::PluginClients) -> Self {
        Self {
            builtin: BTreeMap::new(),
            plugins,
        }
    }

    /// Serves `name` in-process.
    pub(crate) fn with_builtin(mut self, name: &str, provider: Arc<dyn Provider>) -> Self {
        self.builtin.insert(name.to_owned(), provider);
        self
    }

    /// The provider for `name`: built-in first, else a plugin socket.
    pub(crate) fn resolve(&self, name: &str) -> Result<Arc<dyn Provider>, ResolveError> {
        let valid = name.len() <= 30
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid || name.is_empty() {
            return Err(ResolveError::InvalidName(name.to_owned()));
        }
        if let Some(provider) = self.builtin.get(name) {
            return Ok(provider.clone());
        }
        self.plugins.get(name)
    }

    /// Names of the built-in providers that are enabled.
    pub(crate) fn builtin_names(&self) -> impl Iterator<Item = &str> {
        self.builtin.keys().map(String::as_str)
    }
}
