//! Finding the SecretProviderClass of a volume: from a watch-backed cache of the API server,
//! or, in local mode, from manifests in a directory (`directory.rs`).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::SecretProviderClass;
use crate::shutdown::Background;

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

/// A reflector over all SecretProviderClasses of the cluster. A cache hit costs no API call;
/// a miss (e.g. a class created a moment ago) is confirmed with one GET.
#[derive(Clone)]
pub struct WatchedClasses {
    store: Store<SecretProviderClass>,
    client: Client,
    synced: Arc<AtomicBool>,
}

impl fmt::Debug for WatchedClasses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchedClasses")
            .field("cached", &self.store.len())
            .field("synced", &self.is_synced())
            .finish()
    }
}

impl WatchedClasses {
    /// Starts the watch among `background`; it runs until `cancel` fires.
    pub fn start(client: Client, cancel: CancellationToken, background: &Background) -> Self {
        let api: Api<SecretProviderClass> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        let ready_store = store.clone();
        let ready_flag = synced.clone();
        background.spawn(async move {
            let watch = stream.for_each(|event| async move {
                if let Err(error) = event {
                    let error = crate::kube_errors::describe_watch(&error);
                    tracing::warn!(%error, "SecretProviderClass watch error; retrying");
                }
            });
            let ready = async {
                if ready_store.wait_until_ready().await.is_ok() {
                    ready_flag.store(true, Ordering::Release);
                    tracing::info!("SecretProviderClass cache synced");
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                () = watch => {}
                () = ready => {}
                () = cancel.cancelled() => {}
            }
        });
        Self {
            store,
            client,
            synced,
        }
    }
}

#[async_trait]
impl ClassSource for WatchedClasses {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError> {
        let key = ObjectRef::new(name).within(namespace);
        if let Some(class) = self.store.get(&key) {
            return Ok(class);
        }
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

    fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }
}
