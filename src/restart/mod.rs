//! Restart on change (opt-in): when a rotation or a sync changes what a workload reads, patch
//! its pod template as `kubectl rollout restart` does, once per content change across all its
//! pods and nodes. The patch carries a keyed token of the new content; a workload whose
//! template already carries it is not patched again, and every patch is guarded by the
//! resourceVersion read, so concurrent nodes make one rollout, not one each. New pods mount
//! the new content at their first publish, which is not a change: no restart loops.

mod workload;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::provider::version_key::VersionKey;

pub(crate) use workload::{Kind, Restarted};

/// Class (node) or SecretSync (controller) annotation that opts in: `owner` (the pod's own
/// Deployment, StatefulSet or DaemonSet; mounts only) or `Kind/name` in the same namespace.
pub(crate) const RESTART_ANNOTATION: &str = "keymount.io/restart-on-change";
/// Pod template annotation: the token of the content the workload was last restarted for.
pub(crate) const RESTARTED_FOR: &str = "keymount.io/restarted-for";
/// Pod template annotation `kubectl rollout restart` sets; its change makes the rollout.
pub(crate) const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";

/// Which workload to restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Setting {
    /// The workload that owns the pod.
    Owner,
    /// A named workload in the same namespace.
    Named(Kind, String),
}

/// The opt-in of `annotations`, if any. The error names the annotation and says what is
/// accepted.
pub(crate) fn setting(
    annotations: Option<&BTreeMap<String, String>>,
) -> Result<Option<Setting>, String> {
    let Some(text) = annotations.and_then(|a| a.get(RESTART_ANNOTATION)) else {
        return Ok(None);
    };
    let text = text.trim();
    if text == "owner" {
        return Ok(Some(Setting::Owner));
    }
    let refuse = || {
        format!(
            "annotation {RESTART_ANNOTATION} {:?} is not `owner` or Deployment/<name>, StatefulSet/<name>, DaemonSet/<name>",
            crate::text::shorten(text, 64)
        )
    };
    let (kind, name) = text.split_once('/').ok_or_else(refuse)?;
    let kind = Kind::parse(kind).ok_or_else(refuse)?;
    crate::names::subdomain(RESTART_ANNOTATION, name).map_err(|e| e.to_string())?;
    Ok(Some(Setting::Named(kind, name.to_owned())))
}

/// Restarts workloads through the API server.
pub(crate) struct Restarter {
    client: kube::Client,
    key: VersionKey,
    min_interval: Duration,
    /// Who restarts (the source of the Events).
    component: String,
}

impl std::fmt::Debug for Restarter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Restarter")
            .field("min_interval", &self.min_interval)
            .field("component", &self.component)
            .finish_non_exhaustive()
    }
}

impl Restarter {
    /// `key` must be the one every replica shares (`keymount-hmac-key` or `--hmac-key-file`),
    /// so that every node computes the same token for the same content.
    pub(crate) fn new(
        client: kube::Client,
        key: VersionKey,
        min_interval: Duration,
        component: impl Into<String>,
    ) -> Self {
        Self {
            client,
            key,
            min_interval,
            component: component.into(),
        }
    }

    /// The token of one content change: a keyed hash, never a plain one, of `parts`.
    pub(crate) fn token(&self, parts: &[&[u8]]) -> String {
        let mut all: Vec<&[u8]> = vec![b"keymount restart v1"];
        all.extend_from_slice(parts);
        self.key.sign(&all)
    }

    /// The Deployment, StatefulSet or DaemonSet that owns pod `namespace/name` (uid `uid`),
    /// if any.
    pub(crate) async fn owner_of(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> Result<Option<(Kind, String)>, String> {
        workload::owner_of(&self.client, namespace, name, uid).await
    }

    /// Restarts `kind/name` in `namespace` for content `token`, unless it was already
    /// restarted for it; waits out the least interval between two restarts of one workload.
    /// `cause` names what changed (for the Event), never a value.
    pub(crate) async fn restart(
        &self,
        namespace: &str,
        kind: Kind,
        name: &str,
        token: &str,
        cause: &str,
    ) -> Result<Restarted, String> {
        workload::restart(
            &self.client,
            workload::Request {
                namespace,
                kind,
                name,
                token,
                cause,
                min_interval: self.min_interval,
                component: &self.component,
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(value: &str) -> Result<Option<Setting>, String> {
        setting(Some(
            &[(RESTART_ANNOTATION.to_owned(), value.to_owned())].into(),
        ))
    }

    #[test]
    fn the_annotation_is_owner_or_a_kind_and_a_name() {
        assert_eq!(setting(None), Ok(None));
        assert_eq!(of("owner"), Ok(Some(Setting::Owner)));
        assert_eq!(
            of(" Deployment/web "),
            Ok(Some(Setting::Named(Kind::Deployment, "web".into())))
        );
        assert_eq!(
            of("StatefulSet/db"),
            Ok(Some(Setting::Named(Kind::StatefulSet, "db".into())))
        );
        for bad in ["Pod/web", "Deployment/../x", "web", "Deployment/"] {
            assert!(of(bad).is_err(), "{bad}");
        }
    }
}
