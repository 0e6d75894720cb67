//! What the API server tells the AWS provider, from watch-backed caches: the IRSA role of a
//! ServiceAccount (`eks.amazonaws.com/role-arn`) and this node's region label
//! (`topology.kubernetes.io/region`). A cache hit costs no API call; a miss, or a cached object
//! without the value, is confirmed with one GET (an object created or edited a moment ago).

use std::fmt;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt as _};

use super::error::AwsError;

/// The ServiceAccount annotation naming the IAM role of IRSA.
pub const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The node label naming the node's region.
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";

type Meta<K> = PartialObjectMeta<K>;

/// Metadata caches of all ServiceAccounts and of this node; the watches stop on drop.
pub struct KubeLookups {
    client: Client,
    node: String,
    accounts: Store<Meta<ServiceAccount>>,
    nodes: Store<Meta<Node>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl fmt::Debug for KubeLookups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeLookups")
            .field("node", &self.node)
            .field("service_accounts", &self.accounts.len())
            .finish()
    }
}

impl Drop for KubeLookups {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs a metadata-only reflector over `api` filtered by `config` into a new store.
fn watch<K>(
    api: Api<Meta<K>>,
    config: watcher::Config,
    what: &'static str,
) -> (Store<Meta<K>>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + fmt::Debug + Send + Sync + 'static,
    Meta<K>: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned + Clone + fmt::Debug,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(api, config).modify(|meta: &mut Meta<K>| {
            meta.managed_fields_mut().clear();
        }),
    )
    .default_backoff()
    .applied_objects();
    let task = tokio::spawn(stream.for_each(move |event| async move {
        if let Err(error) = event {
            let error = crate::kube_errors::describe_watch(&error);
            tracing::warn!(%error, what, "watch error; retrying");
        }
    }));
    (store, task)
}

impl KubeLookups {
    /// Starts the watches. `node` is this node's name (`--nodeid`).
    pub fn start(client: Client, node: &str) -> Self {
        let (accounts, sa_task) = watch(
            Api::<Meta<ServiceAccount>>::all(client.clone()),
            watcher::Config::default(),
            "ServiceAccount",
        );
        let (nodes, node_task) = watch(
            Api::<Meta<Node>>::all(client.clone()),
            watcher::Config::default().fields(&format!("metadata.name={node}")),
            "Node",
        );
        Self {
            client,
            node: node.to_owned(),
            accounts,
            nodes,
            tasks: vec![sa_task, node_task],
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The IRSA role ARN annotated on ServiceAccount `namespace/name`.
    pub async fn role_arn(&self, namespace: &str, name: &str) -> Result<String, AwsError> {
        let annotation = |meta: &Meta<ServiceAccount>| {
            meta.annotations()
                .get(ROLE_ARN_ANNOTATION)
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
        };
        let key = ObjectRef::new(name).within(namespace);
        if let Some(arn) = self.accounts.get(&key).as_deref().and_then(annotation) {
            return Ok(arn);
        }
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        match api.get_metadata_opt(name).await {
            Ok(Some(meta)) => annotation(&meta).ok_or_else(|| AwsError::MissingRoleAnnotation {
                namespace: namespace.into(),
                service_account: name.into(),
            }),
            Ok(None) => Err(AwsError::ServiceAccountNotFound {
                namespace: namespace.into(),
                service_account: name.into(),
            }),
            Err(error) => Err(AwsError::Kubernetes {
                what: format!("ServiceAccount {namespace}/{name}"),
                detail: error.to_string(),
            }),
        }
    }

    /// The region label of this node, if it has one.
    pub async fn node_region(&self) -> Result<Option<String>, AwsError> {
        let label = |meta: &Meta<Node>| {
            meta.labels()
                .get(REGION_LABEL)
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
        };
        if let Some(region) = self
            .nodes
            .get(&ObjectRef::new(&self.node))
            .as_deref()
            .and_then(label)
        {
            return Ok(Some(region));
        }
        let api = Api::<Node>::all(self.client.clone());
        match api.get_metadata_opt(&self.node).await {
            Ok(meta) => Ok(meta.as_ref().and_then(label)),
            Err(error) => Err(AwsError::Kubernetes {
                what: format!("Node {}", self.node),
                detail: error.to_string(),
            }),
        }
    }
}
