//! The workloads a restart patches: finding a pod's owner (through its ReplicaSet for a
//! Deployment), and the guarded patch of the pod template with an Event beside it.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{RESTARTED_AT, RESTARTED_FOR};

/// The workloads that can be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    pub(crate) fn parse(text: &str) -> Option<Self> {
        match text {
            "Deployment" => Some(Self::Deployment),
            "StatefulSet" => Some(Self::StatefulSet),
            "DaemonSet" => Some(Self::DaemonSet),
            _ => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
        }
    }

    fn resource(self) -> ApiResource {
        match self {
            Self::Deployment => ApiResource::erase::<Deployment>(&()),
            Self::StatefulSet => ApiResource::erase::<StatefulSet>(&()),
            Self::DaemonSet => ApiResource::erase::<DaemonSet>(&()),
        }
    }
}

/// What a restart did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Restarted {
    /// The pod template was patched: a rollout.
    Now,
    /// The workload already carried this content's token: another pod or node restarted it.
    Already,
}

/// One restart's inputs.
pub(super) struct Request<'a> {
    pub(super) namespace: &'a str,
    pub(super) kind: Kind,
    pub(super) name: &'a str,
    pub(super) token: &'a str,
    pub(super) cause: &'a str,
    pub(super) min_interval: Duration,
    pub(super) component: &'a str,
}

fn describe(e: &kube::Error) -> String {
    crate::kube_errors::describe(e)
}

/// The controller owner of a pod, followed from a ReplicaSet to its Deployment.
pub(super) async fn owner_of(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    uid: &str,
) -> Result<Option<(Kind, String)>, String> {
    let pod = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| format!("get pod {namespace}/{name}: {}", describe(&e)))?;
    let Some(pod) = pod.filter(|p| p.metadata.uid.as_deref() == Some(uid)) else {
        return Ok(None);
    };
    let controller =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.into_iter()
                .flatten()
                .find(|o| o.controller == Some(true))
        };
    let Some(owner) = controller(pod.metadata.owner_references) else {
        return Ok(None);
    };
    if owner.kind != "ReplicaSet" {
        return Ok(Kind::parse(&owner.kind).map(|k| (k, owner.name)));
    }
    let set = Api::<ReplicaSet>::namespaced(client.clone(), namespace)
        .get_opt(&owner.name)
        .await
        .map_err(|e| {
            format!(
                "get ReplicaSet {namespace}/{}: {}",
                owner.name,
                describe(&e)
            )
        })?;
    Ok(set
        .and_then(|s| controller(s.metadata.owner_references))
        .filter(|o| o.kind == "Deployment")
        .map(|o| (Kind::Deployment, o.name)))
}

/// Patches the pod template unless it already carries the token; retried on a conflict.
pub(super) async fn restart(
    client: &kube::Client,
    request: Request<'_>,
) -> Result<Restarted, String> {
    let Request {
        namespace,
        kind,
        name,
        token,
        cause,
        min_interval,
        component,
    } = request;
    let id = format!("{} {namespace}/{name}", kind.as_str());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &kind.resource());
    for _ in 0..5 {
        let live = api
            .get(name)
            .await
            .map_err(|e| format!("get {id}: {}", describe(&e)))?;
        let annotations = &live.data["spec"]["template"]["metadata"]["annotations"];
        if annotations[RESTARTED_FOR].as_str() == Some(token) {
            return Ok(Restarted::Already);
        }
        // At most one restart per workload and interval: a second change waits its turn.
        let last = annotations[RESTARTED_AT]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if let Some(last) = last {
            let since = jiff::Timestamp::now().duration_since(last);
            let wait = jiff::SignedDuration::try_from(min_interval).unwrap_or_default() - since;
            if wait.is_positive() {
                tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
                continue;
            }
        }
        let now = jiff::Timestamp::now()
            .round(jiff::Unit::Second)
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let patch = json!({
            "metadata": {"resourceVersion": live.metadata.resource_version},
            "spec": {"template": {"metadata": {"annotations": {
                RESTARTED_AT: now.to_string(),
                RESTARTED_FOR: token,
            }}}},
        });
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                event(client, &live, kind, cause, component).await;
                return Ok(Restarted::Now);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(format!("patch {id}: {}", describe(&e))),
        }
    }
    Err(format!("patch {id}: changed by others 5 times in a row"))
}

/// A Normal Event on the workload; a failure to write it is only logged.
async fn event(
    client: &kube::Client,
    workload: &DynamicObject,
    kind: Kind,
    cause: &str,
    component: &str,
) {
    let namespace = workload.metadata.namespace.clone().unwrap_or_default();
    let name = workload.metadata.name.clone().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(namespace.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some(kind.as_str().into()),
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: workload.metadata.uid.clone(),
            ..Default::default()
        },
        reason: Some("RestartedOnSecretChange".into()),
        message: Some(format!("rolling restart: {cause}")),
        type_: Some("Normal".into()),
        source: Some(k8s_openapi::api::core::v1::EventSource {
            component: Some(component.to_owned()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Default::default()
    };
    if let Err(e) = Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        tracing::warn!(workload = %format!("{namespace}/{name}"), error = %describe(&e), "restart Event not written");
    }
}
