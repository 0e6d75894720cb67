//! Finding the SecretProviderClass of a volume: read from the API server on demand and kept a
//! short while, or, in local mode, from manifests in a directory (`directory.rs`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kube::{Api, Client};

use super::SecretProviderClass;
use crate::ttl_cache::TtlCache;

/// Why a class could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("failed to get SecretProviderClass {namespace}/{name}: not found")]
    NotFound { namespace: String, name: String },
    #[error("failed to get SecretProviderClass {namespace}/{name}: {source}")]
    Api {
        namespace: String,
        name: String,
        #[source]
        source: crate::kube_errors::ApiError,
    },
    #[error("failed to read SecretProviderClass manifests in {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to get SecretProviderClass {namespace}/{name}: manifest {file}: {reason}")]
    Manifest {
        namespace: String,
        name: String,
        file: PathBuf,
        reason: String,
    },
    #[error(
        "failed to get SecretProviderClass {namespace}/{name}: not found (unreadable manifests skipped: {skipped})"
    )]
    NotFoundSkipped {
        namespace: String,
        name: String,
        skipped: String,
    },
}

/// Where SecretProviderClass objects come from.
#[async_trait]
pub trait ClassSource: Send + Sync + fmt::Debug {
    /// The class `name` in `namespace`.
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError>;

    /// True once the source has its first full view (readiness).
    fn is_synced(&self) -> bool;
}

/// SecretProviderClasses read from the API server when a volume needs one: one GET per class
/// and `ttl`, shared by the publishes that ask at the same time, so a node holds only the
/// classes its own pods used lately, however many the cluster has.
pub(crate) struct ApiClasses {
    client: Client,
    cache: TtlCache<(String, String), Arc<SecretProviderClass>>,
}

impl fmt::Debug for ApiClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClasses")
            .field("cache", &self.cache)
            .finish()
    }
}

/// Classes a node keeps at most; a node has at most a few hundred volumes.
const CACHED_CLASSES: usize = 512;

impl ApiClasses {
    /// Reads through `client`, reusing a class for `ttl`.
    pub(crate) fn new(client: Client, ttl: Duration) -> Self {
        Self {
            client,
            cache: TtlCache::new(ttl, CACHED_CLASSES),
        }
    }

    async fn read(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError> {
        let api: Api<SecretProviderClass> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(class)) => Ok(Arc::new(class)),
            Ok(None) => Err(LookupError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            }),
            Err(source) => Err(LookupError::Api {
                namespace: namespace.into(),
                name: name.into(),
                source: source.into(),
            }),
        }
    }
}

#[async_trait]
impl ClassSource for ApiClasses {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError> {
        let key = (namespace.to_owned(), name.to_owned());
        self.cache
            .get_or_fetch(&key, || self.read(namespace, name))
            .await
    }

    /// Nothing to sync: a class is read when a volume needs it.
    fn is_synced(&self) -> bool {
        true
    }
}
