//! The CSI node against the real test kube-apiserver: SecretProviderClass objects come from the
//! API through the watch-backed cache, and the SecretProviderClassPodStatus object is read back
//! from the API server after a publish.

mod harness;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use harness::mounts::mounts_under;
use harness::node::{NodeOptions, NodeProcess, pod_uid, publish_request, unpublish_request};
use harness::plugin::{FakePlugin, Reply};
use keymount::class::{SecretProviderClass, SecretProviderClassSpec};
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::discovery::ApiResource;
use support::kube::TestKube;
use tonic::Code;

/// Installs the CRDs exactly as `keymount crd` prints them.
async fn install_crds(kube: &TestKube) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keymount"))
        .arg("crd")
        .output()
        .expect("run keymount crd");
    assert!(out.status.success(), "keymount crd failed: {out:?}");
    kube.install_crds(&String::from_utf8(out.stdout).unwrap())
        .await;
}

async fn create_class(kube: &TestKube, ns: &str, name: &str, provider: &str) {
    let class = SecretProviderClass::new(
        name,
        SecretProviderClassSpec {
            provider: Some(provider.into()),
            parameters: Some(BTreeMap::from([("objects".into(), "- a\n- b".into())])),
            secret_objects: None,
        },
    );
    Api::<SecretProviderClass>::namespaced(kube.client(), ns)
        .create(&PostParams::default(), &class)
        .await
        .unwrap_or_else(|e| panic!("create class {ns}/{name}: {e}"));
}

fn pod_status_api(kube: &TestKube, ns: &str) -> Api<DynamicObject> {
    let resource = ApiResource {
        group: "secrets-store.csi.x-k8s.io".into(),
        version: "v1".into(),
        api_version: "secrets-store.csi.x-k8s.io/v1".into(),
        kind: "SecretProviderClassPodStatus".into(),
        plural: "secretproviderclasspodstatuses".into(),
    };
    Api::namespaced_with(kube.client(), ns, &resource)
}

fn request_for(
    volume: &str,
    target: &Path,
    class: &str,
    ns: &str,
    pod_uid: &str,
) -> keymount::proto::csi::NodePublishVolumeRequest {
    let mut req = publish_request(volume, target, class, ns);
    req.volume_context
        .insert("csi.storage.k8s.io/pod.uid".into(), pod_uid.into());
    req
}

#[tokio::test]
async fn classes_come_from_the_api_and_the_pod_status_is_recorded_there() {
    let kube = TestKube::get();
    install_crds(kube).await;
    let ns = kube.namespace("node-api").await;
    let elsewhere = kube.namespace("node-api-other").await;
    kube.create_service_account(&ns, "app", &[]).await;
    let pod = kube.create_pod(&ns, "app-0", "app").await;
    let pod_uid = pod.metadata.uid.clone().unwrap();
    create_class(kube, &ns, "db", "fake").await;
    create_class(kube, &elsewhere, "other", "fake").await;

    let tmp = tempfile::tempdir().unwrap();
    let providers = tmp.path().join("providers");
    let pods = tmp.path().join("pods");
    let plugin = FakePlugin::start(
        &providers,
        "fake",
        Reply::FilesVersions(
            vec![
                ("b".into(), 0o644, b"value-b".to_vec()),
                ("a".into(), 0o644, b"value-a".to_vec()),
            ],
            vec![("b".into(), "2".into()), ("a".into(), "1".into())],
        ),
    )
    .await;
    let node = NodeProcess::start(NodeOptions {
        kubeconfig: Some(kube.kubeconfig_path().to_owned()),
        provider_dir: Some(providers.clone()),
        kubelet_root: Some(tmp.path().to_owned()),
        args: vec![],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;

    // Happy path: the class from the API, files on tmpfs, the pod status in the API.
    let target = pods.join(format!("{pod_uid}/volumes/kubernetes.io~csi/secrets/mount"));
    client
        .node_publish_volume(request_for("vol-1", &target, "db", &ns, &pod_uid))
        .await
        .expect("publish");
    assert_eq!(
        std::fs::read_to_string(target.join("a")).unwrap(),
        "value-a"
    );
    assert_eq!(plugin.mount_calls(), 1);

    let name = format!("app-0-{ns}-db");
    let status = pod_status_api(kube, &ns)
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("SecretProviderClassPodStatus {ns}/{name}: {e}"));
    let labels = status.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels
            .get("internal.secrets-store.csi.k8s.io/node-name")
            .map(String::as_str),
        Some("test-node")
    );
    let owners = status.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Pod", "app-0")
    );
    assert_eq!(owners[0].uid, pod_uid);
    let s = &status.data["status"];
    assert_eq!(s["podName"], "app-0");
    assert_eq!(s["secretProviderClassName"], "db");
    assert_eq!(s["mounted"], true);
    assert_eq!(s["targetPath"], target.display().to_string());
    assert_eq!(
        s["objects"],
        serde_json::json!([{"id": "a", "version": "1"}, {"id": "b", "version": "2"}]),
        "objects sorted by id"
    );

    // A class created after the node started is found (a miss is never kept).
    create_class(kube, &ns, "late", "fake").await;
    let late_target = pods.join(format!("{pod_uid}/volumes/kubernetes.io~csi/late/mount"));
    let mut published = false;
    for _ in 0..50 {
        let req = request_for("vol-2", &late_target, "late", &ns, &pod_uid);
        match client.node_publish_volume(req).await {
            Ok(_) => {
                published = true;
                break;
            }
            Err(status) if status.code() == Code::NotFound => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            Err(status) => panic!("publish of the late class: {status:?}"),
        }
    }
    assert!(published, "a class created later is found within 5 s");

    // A class of another namespace is not the pod's: NOT_FOUND naming namespace/class.
    let stray = pods.join(format!("{pod_uid}/volumes/kubernetes.io~csi/other/mount"));
    let err = client
        .node_publish_volume(request_for("vol-3", &stray, "other", &ns, &pod_uid))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains(&format!("{ns}/other")),
        "{}",
        err.message()
    );
    assert!(!stray.exists(), "nothing left behind for a failed publish");

    for (volume, path) in [("vol-1", &target), ("vol-2", &late_target)] {
        client
            .node_unpublish_volume(unpublish_request(volume, path))
            .await
            .expect("unpublish");
    }
    assert!(mounts_under(tmp.path()).is_empty(), "no mount left");
    let logs = node.logs();
    assert!(!logs.contains("value-a"), "a secret value reached the logs");
}

/// A quota of zero SecretProviderClassPodStatus objects in `ns`: creating one is denied
/// (what an RBAC denial or a missing CRD does to the pod status write), once the API server
/// enforces it.
async fn deny_pod_status_creation(kube: &TestKube, ns: &str) {
    use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let quota = ResourceQuota {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some("no-pod-status".into()),
            ..Default::default()
        },
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                "count/secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io".into(),
                Quantity("0".into()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ResourceQuota>::namespaced(kube.client(), ns)
        .create(&PostParams::default(), &quota)
        .await
        .expect("create quota");
    // Enforced once a probe object cannot be created any more.
    let api = pod_status_api(kube, ns);
    for _ in 0..100 {
        let probe: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1",
            "kind": "SecretProviderClassPodStatus",
            "metadata": {"name": "probe", "namespace": ns},
        }))
        .unwrap();
        match api.create(&PostParams::default(), &probe).await {
            Err(kube::Error::Api(e)) if e.code == 403 => return,
            Ok(_) => {
                let _ = api.delete("probe", &Default::default()).await;
            }
            Err(e) => panic!("probe: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the quota was never enforced");
}

#[tokio::test]
async fn a_rotation_whose_pod_status_write_fails_says_so_and_the_next_fetch_repairs_it() {
    use k8s_openapi::api::core::v1::{Event, ResourceQuota};
    use kube::api::ListParams;

    let kube = TestKube::get();
    install_crds(kube).await;
    let ns = kube.namespace("node-api-stale").await;
    kube.create_service_account(&ns, "app", &[]).await;
    let pod = kube.create_pod(&ns, "app-0", "app").await;
    let pod_uid = pod.metadata.uid.clone().unwrap();
    create_class(kube, &ns, "db", "fake").await;

    let tmp = tempfile::tempdir().unwrap();
    let providers = tmp.path().join("providers");
    let v = |value: &str, version: &str| {
        Reply::FilesVersions(
            vec![("a".into(), 0o644, value.as_bytes().to_vec())],
            vec![("a".into(), version.into())],
        )
    };
    let plugin = FakePlugin::start(&providers, "fake", v("one", "1")).await;
    let node = NodeProcess::start(NodeOptions {
        kubeconfig: Some(kube.kubeconfig_path().to_owned()),
        provider_dir: Some(providers.clone()),
        kubelet_root: Some(tmp.path().to_owned()),
        args: vec![
            "--enable-secret-rotation".into(),
            "--rotation-poll-interval=1s".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let target = node.target(&pod_uid, "secrets");
    let request = || request_for("vol-1", &target, "db", &ns, &pod_uid);
    client
        .node_publish_volume(request())
        .await
        .expect("publish");
    let statuses = pod_status_api(kube, &ns);
    let name = format!("app-0-{ns}-db");
    let versions = |object: &DynamicObject| object.data["status"]["objects"].clone();
    let status = statuses
        .get(&name)
        .await
        .expect("pod status after the mount");
    assert_eq!(
        versions(&status),
        serde_json::json!([{"id": "a", "version": "1"}])
    );

    // The status object cannot be written (gone, and no new one may be created); the
    // provider has a new version.
    statuses.delete(&name, &Default::default()).await.unwrap();
    deny_pod_status_creation(kube, &ns).await;
    plugin.set_reply(v("two", "2"));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    client
        .node_publish_volume(request())
        .await
        .expect("a republish whose status write failed still answers OK");
    assert_eq!(plugin.mount_calls(), 2);
    assert_eq!(
        std::fs::read_to_string(target.join("a")).unwrap(),
        "two",
        "files rotated"
    );
    assert!(
        statuses.get_opt(&name).await.unwrap().is_none(),
        "status not written"
    );
    // Said as it is: files rotated, status stale; in the log, the metrics and an event.
    assert!(
        node.logs()
            .contains("files rotated, but the pod status is stale"),
        "{}",
        node.logs()
    );
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(
            "rotation_reconcile_error_total{provider=\"fake\",error_type=\"FailedToUpdatePodStatus\",os_type=\"linux\",rotated=\"true\"} 1"
        ),
        "{metrics}"
    );
    let events = Api::<Event>::namespaced(kube.client(), &ns);
    let by_reason = |reason: &'static str| {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default().fields("involvedObject.name=app-0"))
                .await
                .unwrap()
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        }
    };
    let mut stale = None;
    for _ in 0..100 {
        stale = by_reason("MountRotationStatusStale").await;
        if stale.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let stale = stale.expect("a MountRotationStatusStale event");
    assert_eq!(stale.type_.as_deref(), Some("Warning"));
    let message = stale.message.unwrap_or_default();
    assert!(
        message.contains("files rotated") && message.contains(&name),
        "{message}"
    );
    assert!(
        by_reason("MountRotationFailed").await.is_none(),
        "not reported as a failed rotation"
    );
    // The record says so, on disk too: a restarted node repairs it as well.
    let record = || {
        keymount::volume::journal::read_records(&node.work_dir.join("state"))
            .unwrap()
            .remove("vol-1")
            .expect("record of vol-1")
    };
    assert!(record().status_stale, "the record marks the status stale");

    // The denial ends; the next republishes (content unchanged) write the status again.
    Api::<ResourceQuota>::namespaced(kube.client(), &ns)
        .delete("no-pod-status", &Default::default())
        .await
        .unwrap();
    let mut repaired = None;
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        client
            .node_publish_volume(request())
            .await
            .expect("republish");
        repaired = statuses.get_opt(&name).await.unwrap();
        if repaired.is_some() {
            break;
        }
    }
    let repaired = repaired.expect("the next fetch wrote the pod status again");
    assert_eq!(
        versions(&repaired),
        serde_json::json!([{"id": "a", "version": "2"}])
    );
    assert_eq!(std::fs::read_to_string(target.join("a")).unwrap(), "two");
    let mut fresh = false;
    for _ in 0..50 {
        if !record().status_stale {
            fresh = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(fresh, "the record no longer marks the status stale");

    client
        .node_unpublish_volume(unpublish_request("vol-1", &target))
        .await
        .expect("unpublish");
    assert!(mounts_under(tmp.path()).is_empty(), "no mount left");
}

/// A class name that would change the path of the class GET (made with keymount's own token)
/// is refused as INVALID_ARGUMENT naming `secretProviderClass`, before any lookup: even with a
/// class `db` in the namespace the name would reach, and another in `kube-system`.
#[tokio::test]
async fn class_names_that_would_change_the_api_path_are_refused_before_any_request() {
    let kube = TestKube::get();
    install_crds(kube).await;
    let ns = kube.namespace("node-api-names").await;
    create_class(kube, &ns, "db", "fake").await;
    create_class(kube, "kube-system", "stolen", "fake").await;

    let tmp = tempfile::tempdir().unwrap();
    let providers = tmp.path().join("providers");
    let plugin = FakePlugin::start(&providers, "fake", Reply::files(&[("a", "x")])).await;
    let node = NodeProcess::start(NodeOptions {
        kubeconfig: Some(kube.kubeconfig_path().to_owned()),
        provider_dir: Some(providers.clone()),
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let long = "a".repeat(254);
    let names = [
        "../../kube-system/secretproviderclasses/stolen",
        "db?watch=true",
        "db/status",
        "..",
        "DB",
        "db%2Fx",
        long.as_str(),
    ];
    for (n, class) in names.into_iter().enumerate() {
        let target = node.target(&pod_uid(n), &format!("v{n}"));
        let err = client
            .node_publish_volume(request_for(
                &format!("vol-{n}"),
                &target,
                class,
                &ns,
                "uid-1",
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{class}: {err:?}");
        assert!(
            err.message()
                .starts_with("volume context: secretProviderClass "),
            "{class}: {}",
            err.message()
        );
        assert!(!target.exists(), "{class}: nothing created");
    }
    assert_eq!(plugin.mount_calls(), 0, "no provider was asked");
    assert!(
        !node.logs().contains("failed to get SecretProviderClass"),
        "no class lookup was made"
    );
    assert!(mounts_under(tmp.path()).is_empty());
}
