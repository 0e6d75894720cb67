//! What the API server tells the AWS provider, read when a volume needs it and kept a short
//! while: the IRSA role of a ServiceAccount (`eks.amazonaws.com/role-arn`, one metadata GET) and
//! this node's region label (`topology.kubernetes.io/region`). No cluster-wide watch: a node's
//! memory does not grow with the cluster's ServiceAccounts.

use std::fmt;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, ServiceAccount};
use kube::{Api, Client, ResourceExt as _};

use super::error::AwsError;
use crate::ttl_cache::TtlCache;

/// The ServiceAccount annotation naming the IAM role of IRSA.
pub(crate) const ROLE_ARN_ANNOTATION: &str = "eks.amazonaws.com/role-arn";
/// The node label naming the node's region.
pub(crate) const REGION_LABEL: &str = "topology.kubernetes.io/region";

/// ServiceAccounts and regions a node keeps at most.
const CACHED_ACCOUNTS: usize = 1024;

/// On-demand lookups of the ServiceAccounts of this node's pods and of this node, each kept
/// for a short while: a node holds only what its own pods used lately.
pub(crate) struct KubeLookups {
    client: Client,
    node: String,
    roles: TtlCache<(String, String), String>,
    region: TtlCache<(), String>,
}

impl fmt::Debug for KubeLookups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeLookups")
            .field("node", &self.node)
            .field("service_accounts", &self.roles.len())
            .finish()
    }
}

impl KubeLookups {
    /// Lookups through `client` for node `node` (`--nodeid`), each answer reused for `ttl`.
    pub(crate) fn new(client: Client, node: &str, ttl: Duration) -> Self {
        Self {
            client,
            node: node.to_owned(),
            roles: TtlCache::new(ttl, CACHED_ACCOUNTS),
            region: TtlCache::new(ttl, 1),
        }
    }

    /// The same lookups with each answer reused for `ttl` instead (nothing is cached yet).
    #[must_use]
    pub(crate) fn with_ttl(self, ttl: Duration) -> Self {
        Self::new(self.client, &self.node, ttl)
    }

    /// The IRSA role ARN annotated on ServiceAccount `namespace/name`. Only a role is kept: a
    /// missing annotation is read again next time, so annotating the account takes effect at
    /// once.
    pub(crate) async fn role_arn(&self, namespace: &str, name: &str) -> Result<String, AwsError> {
        let key = (namespace.to_owned(), name.to_owned());
        self.roles
            .get_or_fetch(&key, || self.read_role_arn(namespace, name))
            .await
    }

    async fn read_role_arn(&self, namespace: &str, name: &str) -> Result<String, AwsError> {
        let api = Api::<ServiceAccount>::namespaced(self.client.clone(), namespace);
        match api.get_metadata_opt(name).await {
            Ok(Some(meta)) => meta
                .annotations()
                .get(ROLE_ARN_ANNOTATION)
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .ok_or_else(|| AwsError::MissingRoleAnnotation {
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

    /// The region label of this node, if it has one (a node without it is read again next
    /// time).
    pub(crate) async fn node_region(&self) -> Result<Option<String>, AwsError> {
        let read = self
            .region
            .get_or_fetch(&(), || self.read_node_region())
            .await;
        match read {
            Ok(region) => Ok(Some(region)),
            Err(None) => Ok(None),
            Err(Some(error)) => Err(error),
        }
    }

    /// The label, or `Err(None)` when the node has none (not kept), or the API's error.
    async fn read_node_region(&self) -> Result<String, Option<AwsError>> {
        let api = Api::<Node>::all(self.client.clone());
        match api.get_metadata_opt(&self.node).await {
            Ok(meta) => meta
                .as_ref()
                .and_then(|meta| meta.labels().get(REGION_LABEL))
                .map(|r| r.trim().to_owned())
                .filter(|r| !r.is_empty())
                .ok_or(None),
            Err(error) => Err(Some(AwsError::Kubernetes {
                what: format!("Node {}", self.node),
                detail: error.to_string(),
            })),
        }
    }
}
