//! The pod's fsGroup for kubelets that do not pass it: before 1.22 (and 1.22 without the
//! `DelegateFSGroupToCSIDriver` gate) kubelet never sends `volume_mount_group`, and it never
//! applies an fsGroup to a read-only CSI volume itself. With `--fs-group-from-pod`, the first
//! publish of a volume reads `spec.securityContext.fsGroup` of the pod with one GET; the
//! group is then kept in the volume's record, so republishes and restarts ask nothing.

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use super::context::VolumeContext;
use super::publish::PublishError;
use crate::fs::group::FsGroup;

/// The fsGroup of the volume's pod, read through `client` when the volume context names the
/// pod (kubelet's `podInfoOnMount`). The pod read must be the volume's own: a pod of the same
/// name with another UID (deleted and made again) is refused.
pub(super) async fn pod_fs_group(
    client: &kube::Client,
    context: &VolumeContext,
) -> Result<Option<FsGroup>, PublishError> {
    let (Some(name), Some(uid)) = (context.pod_name.as_deref(), context.pod_uid.as_deref()) else {
        return Ok(None);
    };
    let pod_id = format!("{}/{name}", context.pod_namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &context.pod_namespace);
    let pod = pods
        .get(name)
        .await
        .map_err(|source| PublishError::PodFsGroup {
            pod: pod_id.clone(),
            source: source.into(),
        })?;
    if pod.metadata.uid.as_deref() != Some(uid) {
        return Err(PublishError::PodMismatch {
            pod: pod_id,
            why: "its UID is not the one kubelet publishes the volume for (the pod was replaced); retry".into(),
        });
    }
    let Some(gid) = pod
        .spec
        .and_then(|spec| spec.security_context)
        .and_then(|context| context.fs_group)
    else {
        return Ok(None);
    };
    match FsGroup::from_id(gid) {
        Some(group) => {
            tracing::debug!(pod = %pod_id, %group, "fsGroup read from the pod");
            Ok(Some(group))
        }
        None => Err(PublishError::PodMismatch {
            pod: pod_id,
            why: format!(
                "spec.securityContext.fsGroup {gid} is not a group id from 0 to {}",
                crate::fs::group::MAX_GID
            ),
        }),
    }
}
