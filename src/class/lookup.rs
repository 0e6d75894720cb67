//! Finding the SecretProviderClass of a volume: from a watch-backed cache of the API server,
//! or, in local mode, from manifests in a directory.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;

use super::SecretProviderClass;

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
    #[error("failed to parse SecretProviderClass manifest {file}: {source}")]
    Parse {
        file: PathBuf,
        #[source]
        source: serde_yaml::Error,
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
    /// Starts the watch; it runs until `cancel` fires.
    pub fn start(client: Client, cancel: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let api: Api<SecretProviderClass> = Api::all(client.clone());
        let (store, writer) = reflector::store();
        let synced = Arc::new(AtomicBool::new(false));
        let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        let ready_store = store.clone();
        let ready_flag = synced.clone();
        let task = tokio::spawn(async move {
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
        (
            Self {
                store,
                client,
                synced,
            },
            task,
        )
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

/// Local mode: SecretProviderClass manifests (YAML, several documents per file allowed) in a
/// directory. Edits take effect at the next lookup: the parsed set is kept until a manifest's
/// name, size or mtime changes. A manifest without a namespace belongs to `default`.
#[derive(Debug)]
pub struct DirectoryClasses {
    dir: PathBuf,
    cache: std::sync::Mutex<Option<(Fingerprint, ParsedClasses)>>,
}

/// The classes parsed from the directory.
type ParsedClasses = Arc<Vec<Arc<SecretProviderClass>>>;

/// Name, size and mtime of every manifest file.
type Fingerprint = Vec<(PathBuf, u64, std::time::SystemTime)>;

impl DirectoryClasses {
    /// Serves the classes found in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            cache: std::sync::Mutex::new(None),
        }
    }

    fn fingerprint(&self) -> Result<Fingerprint, LookupError> {
        let read_err = |source| LookupError::ReadDir {
            dir: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if is_manifest(&path) {
                let meta = std::fs::metadata(&path).map_err(read_err)?;
                files.push((path, meta.len(), meta.modified().map_err(read_err)?));
            }
        }
        files.sort();
        Ok(files)
    }

    fn classes(&self) -> Result<Arc<Vec<Arc<SecretProviderClass>>>, LookupError> {
        let fingerprint = self.fingerprint()?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, classes)) = cache.as_ref()
            && *seen == fingerprint
        {
            return Ok(classes.clone());
        }
        let files = fingerprint
            .iter()
            .map(|(path, _, _)| path.clone())
            .collect();
        let classes: Arc<Vec<_>> = Arc::new(self.parse(files)?.into_iter().map(Arc::new).collect());
        *cache = Some((fingerprint, classes.clone()));
        Ok(classes)
    }

    fn parse(&self, files: Vec<PathBuf>) -> Result<Vec<SecretProviderClass>, LookupError> {
        let read_err = |source| LookupError::ReadDir {
            dir: self.dir.clone(),
            source,
        };
        let mut classes = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).map_err(read_err)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value =
                    serde_yaml::Value::deserialize(doc).map_err(|source| LookupError::Parse {
                        file: file.clone(),
                        source,
                    })?;
                if value.get("kind").and_then(|k| k.as_str()) != Some("SecretProviderClass") {
                    continue;
                }
                let class: SecretProviderClass =
                    serde_yaml::from_value(value).map_err(|source| LookupError::Parse {
                        file: file.clone(),
                        source,
                    })?;
                classes.push(class);
            }
        }
        Ok(classes)
    }
}

use serde::Deserialize as _;

fn is_manifest(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml" | "json")
    )
}

#[async_trait]
impl ClassSource for DirectoryClasses {
    async fn get(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Arc<SecretProviderClass>, LookupError> {
        let classes = self.classes()?;
        let found = classes.iter().find(|c| {
            c.metadata.name.as_deref() == Some(name)
                && c.metadata.namespace.as_deref().unwrap_or("default") == namespace
        });
        found.cloned().ok_or_else(|| LookupError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    fn is_synced(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn directory_source_finds_classes_by_namespace_and_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("classes.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n---\n\
             apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata: {name: db}\nspec: {provider: vault, parameters: {roleName: app}}\n---\n\
             apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata: {name: db, namespace: prod}\nspec: {provider: aws}\n",
        )
        .unwrap();
        let source = DirectoryClasses::new(dir.path());
        let class = source.get("default", "db").await.unwrap();
        assert_eq!(class.spec.provider.as_deref(), Some("vault"));
        let class = source.get("prod", "db").await.unwrap();
        assert_eq!(class.spec.provider.as_deref(), Some("aws"));
        // An edit is seen at the next lookup.
        std::fs::write(
            dir.path().join("more.yml"),
            "apiVersion: secrets-store.csi.x-k8s.io/v1\nkind: SecretProviderClass\n\
             metadata: {name: db, namespace: other}\nspec: {provider: gcp}\n",
        )
        .unwrap();
        let class = source.get("other", "db").await.unwrap();
        assert_eq!(class.spec.provider.as_deref(), Some("gcp"));
        std::fs::remove_file(dir.path().join("more.yml")).unwrap();
        let err = source.get("other", "db").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to get SecretProviderClass other/db: not found"
        );
    }
}
