//! The optional sync to Kubernetes Secrets (`--enable-secret-sync`): after a mount or a
//! rotation fetch, each `secretObjects` entry of the class becomes a Secret in the pod's
//! namespace, written with one server-side apply, owned by the pod's owners so the garbage
//! collector removes it with the last of them. Secrets keymount does not manage are never
//! overwritten.

pub(crate) mod apply;
pub(crate) mod desired;
pub(crate) mod locks;
pub(crate) mod tls;

use std::sync::Arc;
use std::time::Instant;

use tonic::Code;

use crate::class::crd::SecretObject;
use crate::kube_errors::ApiError;
use crate::metrics::Metrics;

pub(crate) use desired::{BuildError, MANAGED_LABEL};

/// The pod whose mount is mirrored.
#[derive(Debug, Clone)]
pub(crate) struct SyncTarget<'a> {
    pub(crate) namespace: &'a str,
    pub(crate) pod_name: &'a str,
    pub(crate) pod_uid: &'a str,
    /// `namespace/name` of the class (for messages).
    pub(crate) class: &'a str,
    /// Provider name (metrics label).
    pub(crate) provider: &'a str,
}

/// What the sync did to one Secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SecretChange {
    Created,
    Updated,
    Unchanged,
}

/// One Secret and what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Synced {
    pub(crate) name: String,
    pub(crate) change: SecretChange,
}

/// Why a sync failed. Names the pod, class or Secret; never a value.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("get pod {pod}: {source}")]
    GetPod {
        pod: String,
        #[source]
        source: ApiError,
    },
    #[error("pod {pod} with uid {uid} no longer exists")]
    PodGone { pod: String, uid: String },
    #[error(
        "Secret {secret} exists and is not managed by keymount (no label {MANAGED_LABEL}=true); refusing to overwrite it"
    )]
    NotManaged { secret: String },
    #[error("get Secret {secret}: {source}")]
    GetSecret {
        secret: String,
        #[source]
        source: ApiError,
    },
    #[error("apply Secret {secret}: {source}")]
    ApplySecret {
        secret: String,
        #[source]
        source: ApiError,
    },
    #[error("apply Secret {secret}: changed by others {attempts} times in a row; retry")]
    Conflict { secret: String, attempts: usize },
}

fn api_code(error: &ApiError) -> Code {
    match error.inner() {
        kube::Error::Api(status) => match status.code {
            400 | 422 => Code::InvalidArgument,
            401 | 403 => Code::PermissionDenied,
            404 => Code::NotFound,
            409 => Code::Aborted,
            _ => Code::Unavailable,
        },
        _ => Code::Unavailable,
    }
}

impl SyncError {
    /// The gRPC code a failed first mount answers with.
    pub(crate) fn code(&self) -> Code {
        match self {
            Self::Build(_) => Code::InvalidArgument,
            Self::PodGone { .. } => Code::NotFound,
            Self::NotManaged { .. } => Code::AlreadyExists,
            Self::Conflict { .. } => Code::Aborted,
            Self::GetPod { source, .. }
            | Self::GetSecret { source, .. }
            | Self::ApplySecret { source, .. } => api_code(source),
        }
    }

    /// The metrics `error_type` label.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Build(_) => "InvalidSecretObject",
            Self::GetPod { .. } | Self::PodGone { .. } => "FailedToGetPod",
            Self::NotManaged { .. } => "SecretNotManaged",
            Self::GetSecret { .. } | Self::ApplySecret { .. } | Self::Conflict { .. } => {
                "FailedToCreateSecret"
            }
        }
    }
}

/// A mounted file's bytes by its relative path.
pub(crate) type FileLookup<'a> = &'a (dyn Fn(&str) -> Option<Vec<u8>> + Sync);

/// The sync controller of one node.
pub(crate) struct SecretSync {
    client: kube::Client,
    metrics: Arc<Metrics>,
    /// One sync at a time per Secret on this node, so two pods sharing a Secret never race on
    /// its owner references (other nodes are handled by the resourceVersion precondition).
    locks: locks::SecretLocks,
}

impl std::fmt::Debug for SecretSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSync").finish_non_exhaustive()
    }
}

impl SecretSync {
    /// A sync writing through `client`.
    pub(crate) fn new(client: kube::Client, metrics: Arc<Metrics>) -> Self {
        Self {
            client,
            metrics,
            locks: locks::SecretLocks::default(),
        }
    }

    /// Mirrors `objects` for the pod of `target`; `file` gives a mounted file's bytes.
    /// Stops at the first Secret that fails (the others are retried at the next fetch).
    pub(crate) async fn sync(
        &self,
        target: &SyncTarget<'_>,
        objects: &[SecretObject],
        file: FileLookup<'_>,
    ) -> Result<Vec<Synced>, SyncError> {
        let started = Instant::now();
        let secrets = match desired::build(target.class, objects, file) {
            Ok(secrets) => secrets,
            Err(error) => {
                let error = SyncError::from(error);
                self.record(target, Some(&error), started);
                return Err(error);
            }
        };
        let keys: Vec<String> = secrets
            .iter()
            .map(|secret| format!("{}/{}", target.namespace, secret.name))
            .collect();
        let _held = self.locks.lock_all(keys.iter().map(String::as_str)).await;
        let owners = match apply::pod_owners(&self.client, target).await {
            Ok(owners) => owners,
            Err(error) => {
                self.record(target, Some(&error), started);
                return Err(error);
            }
        };
        let mut done = Vec::with_capacity(secrets.len());
        for secret in &secrets {
            let started = Instant::now();
            let result = apply::ensure(&self.client, target.namespace, secret, &owners).await;
            self.record(target, result.as_ref().err(), started);
            let change = result?;
            tracing::debug!(secret = %format!("{}/{}", target.namespace, secret.name), ?change, "Secret synced");
            done.push(Synced {
                name: secret.name.clone(),
                change,
            });
        }
        Ok(done)
    }

    fn record(&self, target: &SyncTarget<'_>, error: Option<&SyncError>, started: Instant) {
        self.metrics.sync(
            target.provider,
            error.map(SyncError::reason),
            started.elapsed().as_secs_f64(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_reasons() {
        let e = SyncError::NotManaged {
            secret: "ns/db".into(),
        };
        assert_eq!(e.code(), Code::AlreadyExists);
        assert_eq!(e.reason(), "SecretNotManaged");
        assert!(
            e.to_string()
                .contains("Secret ns/db exists and is not managed")
        );
        let forbidden = kube::Error::Api(Box::new(
            kube::core::Status::failure("forbidden", "Forbidden").with_code(403),
        ));
        let e = SyncError::ApplySecret {
            secret: "ns/db".into(),
            source: forbidden.into(),
        };
        assert_eq!(e.code(), Code::PermissionDenied);
    }
}
