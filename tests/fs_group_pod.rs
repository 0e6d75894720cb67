//! `--fs-group-from-pod` against the test kube-apiserver: a kubelet older than 1.22 never
//! sends `volume_mount_group`, so keymount reads the pod's `spec.securityContext.fsGroup`
//! with one GET at the volume's first publish (OpenBao as the store, pods made in the API).

mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use k8s_openapi::api::core::v1::{Container, Pod, PodSecurityContext, PodSpec};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::{Value, json};
use sync_support::{Bed, PodInfo};
use tonic::Code;

const OBJECTS: &str =
    "- {objectName: key, secretPath: secret/data/app, secretKey: key, filePermission: 0600}";

/// A pod of ServiceAccount `web` with `runAsUser: 1000` and `fsGroup` (when given).
async fn pod(bed: &Bed, name: &str, fs_group: Option<i64>) -> PodInfo {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(bed.ns.clone()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            service_account_name: Some("web".into()),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_user: Some(1000),
                fs_group,
                ..Default::default()
            }),
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.invalid/keymount-test:never-pulled".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let made = Api::<Pod>::namespaced(bed.client.clone(), &bed.ns)
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
    PodInfo::from(&made)
}

fn owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap();
    (meta.gid(), meta.permissions().mode() & 0o7777)
}

#[tokio::test]
async fn the_fs_group_is_read_from_the_pod_when_kubelet_does_not_send_it() {
    let bed = Bed::new("fsgroup").await;
    bed.bao.kv2_put("secret", "app", json!({"key": "k1"})).await;
    bed.apply_class("app", &[], OBJECTS, Value::Null).await;
    let node = bed
        .node(&[
            "--fs-group-from-pod",
            "--enable-secret-rotation",
            "--rotation-poll-interval=1s",
        ])
        .await;
    let mut csi = node.node_client().await;

    // fsGroup 2000: the files are the group's, with group read.
    let grouped = pod(&bed, "web-0", Some(2000)).await;
    let target = bed.target(&grouped, "secrets");
    csi.node_publish_volume(bed.publish(&grouped, "secrets", "app"))
        .await
        .expect("publish");
    assert_eq!(owner(&target.join("key")), (2000, 0o640));
    assert_eq!(owner(&target), (2000, 0o755));
    // The record keeps it: a rotation writes the new content with the same group.
    bed.bao.kv2_put("secret", "app", json!({"key": "k2"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    csi.node_publish_volume(bed.publish(&grouped, "secrets", "app"))
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(target.join("key")).unwrap(), "k2");
    assert_eq!(owner(&target.join("key")), (2000, 0o640));

    // No fsGroup: the files stay root's with the mode asked for.
    let plain = pod(&bed, "web-1", None).await;
    let plain_target = bed.target(&plain, "secrets");
    csi.node_publish_volume(bed.publish(&plain, "secrets", "app"))
        .await
        .unwrap();
    assert_eq!(owner(&plain_target.join("key")), (0, 0o600));

    // A group kubelet sends wins (no second opinion from the API).
    let sent = pod(&bed, "web-2", Some(2000)).await;
    let sent_target = bed.target(&sent, "secrets");
    let mut req = bed.publish(&sent, "secrets", "app");
    if let Some(keymount::proto::csi::volume_capability::AccessType::Mount(mount)) = req
        .volume_capability
        .as_mut()
        .and_then(|c| c.access_type.as_mut())
    {
        mount.volume_mount_group = "3000".into();
    }
    csi.node_publish_volume(req).await.unwrap();
    assert_eq!(owner(&sent_target.join("key")), (3000, 0o640));

    // A volume context naming a pod whose UID is another (the pod was replaced) is refused.
    let replaced = pod(&bed, "web-3", Some(2000)).await;
    let mut stale = bed.publish(&replaced, "secrets", "app");
    stale
        .volume_context
        .insert("csi.storage.k8s.io/pod.uid".into(), grouped.uid.clone());
    stale.volume_id = "csi-stale".into();
    stale.target_path = bed.target(&grouped, "other").display().to_string();
    let status = csi.node_publish_volume(stale).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("UID"), "{}", status.message());
    assert!(!bed.target(&grouped, "other").exists());

    for (pod, target) in [
        (&grouped, &target),
        (&plain, &plain_target),
        (&sent, &sent_target),
    ] {
        csi.node_unpublish_volume(harness::node::unpublish_request(
            &format!("csi-{}-secrets", pod.uid),
            target,
        ))
        .await
        .unwrap();
    }
}
