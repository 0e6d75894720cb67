//! The Secret sync end to end: the real `keymount node --enable-secret-sync` against the test
//! kube-apiserver (with kube-controller-manager: Deployments, ReplicaSets and the garbage
//! collector are real), OpenBao as the secret store, publishes driven over the CSI socket as
//! kubelet would for pods that exist in the API.

mod harness;
mod support;
mod sync_support;
mod vault_support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use support::proc::wait_until;
use sync_support::{Bed, PodInfo, metric};
use tonic::Code;

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("Secret has data");
    String::from_utf8(
        data.get(key)
            .unwrap_or_else(|| panic!("no key {key}"))
            .0
            .clone(),
    )
    .unwrap()
}

fn owner_uids(secret: &Secret) -> Vec<String> {
    let mut uids: Vec<String> = secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|o| o.uid.clone())
        .collect();
    uids.sort();
    uids
}

/// A self-signed certificate and its key, as PEM text (openssl).
fn certificate() -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=web.keymount.test", "-keyout"])
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(dir.path().join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
    (read("cert.pem"), read("key.pem"))
}

const OBJECTS: &str = "\
- {objectName: username, secretPath: secret/data/db, secretKey: username}
- {objectName: password, secretPath: secret/data/db, secretKey: password}
- {objectName: tls.pem, secretPath: secret/data/tls, secretKey: bundle}
- {objectName: docker, secretPath: secret/data/registry, secretKey: config}";

fn secret_objects() -> Value {
    json!([
        {"secretName": "db", "type": "Opaque", "labels": {"team": "shop"}, "annotations": {"owner": "db-team"},
         "data": [{"objectName": "username", "key": "user"}, {"objectName": "password", "key": "password"}]},
        {"secretName": "db-basic", "type": "kubernetes.io/basic-auth",
         "data": [{"objectName": "username", "key": "username"}, {"objectName": "password", "key": "password"}]},
        {"secretName": "web-tls", "type": "kubernetes.io/tls",
         "data": [{"objectName": "tls.pem", "key": "tls.crt"}, {"objectName": "tls.pem", "key": "tls.key"}]},
        {"secretName": "registry", "type": "kubernetes.io/dockerconfigjson",
         "data": [{"objectName": "docker", "key": ".dockerconfigjson"}]},
    ])
}

#[tokio::test]
async fn synced_secrets_have_type_labels_annotations_data_and_follow_rotation() {
    let bed = Bed::new("sync").await;
    let (cert, key) = certificate();
    let docker = r#"{"auths":{"registry.keymount.test":{"auth":"dXNlcjpwYXNz"}}}"#;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-sync-v1"}),
        )
        .await;
    // Key first, then the certificate: the split must not depend on the order.
    bed.bao
        .kv2_put("secret", "tls", json!({"bundle": format!("{key}{cert}")}))
        .await;
    bed.bao
        .kv2_put("secret", "registry", json!({"config": docker}))
        .await;
    bed.apply_class("app", &[], OBJECTS, secret_objects()).await;
    let node = bed
        .restricted_node(&[
            "--enable-secret-sync",
            "--enable-secret-rotation",
            "--rotation-poll-interval=2s",
        ])
        .await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .expect("publish");

    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let db = secrets
        .get("db")
        .await
        .expect("Secret db exists right after the mount");
    assert_eq!(db.type_.as_deref(), Some("Opaque"));
    let labels = db.metadata.labels.clone().unwrap();
    assert_eq!(
        labels
            .get("secrets-store.csi.k8s.io/managed")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(labels.get("team").map(String::as_str), Some("shop"));
    assert_eq!(
        db.metadata
            .annotations
            .as_ref()
            .unwrap()
            .get("owner")
            .map(String::as_str),
        Some("db-team")
    );
    assert_eq!(
        (text(&db, "user"), text(&db, "password")),
        ("admin".into(), "pw-sync-v1".into())
    );
    let owners = db.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].uid.as_str()),
        ("Pod", pod.uid.as_str()),
        "a bare pod owns it"
    );
    let managers: Vec<_> = db
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["keymount"], "one field manager");

    let basic = secrets.get("db-basic").await.unwrap();
    assert_eq!(basic.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(text(&basic, "username"), "admin");

    let tls = secrets.get("web-tls").await.unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(
        text(&tls, "tls.crt"),
        cert,
        "tls.crt is the certificate only"
    );
    assert_eq!(
        text(&tls, "tls.key"),
        key,
        "tls.key is the private key only"
    );

    let registry = secrets.get("registry").await.unwrap();
    assert_eq!(
        registry.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(text(&registry, ".dockerconfigjson"), docker);

    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            "sync_k8s_secret_total{provider=\"vault\",os_type=\"linux\"}"
        ),
        4.0,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "sync_k8s_secret_duration_sec_count{os_type=\"linux\"}"
        ) >= 4.0,
        "{metrics}"
    );

    // Rotation: the new value reaches the Secret at the first republish after the interval.
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-sync-v2"}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap();
    assert_eq!(
        text(&secrets.get("db").await.unwrap(), "password"),
        "pw-sync-v2"
    );
    assert_eq!(
        text(&secrets.get("db-basic").await.unwrap(), "password"),
        "pw-sync-v2"
    );
    let event = bed.wait_event(&pod.name, "SecretRotationComplete").await;
    assert_eq!(
        event.source.as_ref().and_then(|s| s.component.as_deref()),
        Some("csi-secrets-store-controller")
    );

    // Deleted by hand: back at the next republish that fetches.
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let gone = wait_until(Duration::from_secs(10), || {
        let secrets = secrets.clone();
        async move { matches!(secrets.get_opt("db").await, Ok(None)) }
    })
    .await;
    assert!(gone);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    csi.node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap();
    let again = secrets.get("db").await.expect("recreated");
    assert_eq!(text(&again, "password"), "pw-sync-v2");

    // The node ran as a ServiceAccount that can do no more than that.
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(bed.work.path().join("node.kubeconfig")).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let as_node: Api<Secret> = Api::namespaced(kube::Client::try_from(config).unwrap(), &bed.ns);
    let forbidden =
        |r: Result<_, kube::Error>| matches!(r, Err(kube::Error::Api(s)) if s.code == 403);
    assert!(
        forbidden(as_node.list(&ListParams::default()).await.map(|_| ())),
        "node may list Secrets"
    );
    assert!(
        forbidden(
            as_node
                .delete("db", &DeleteParams::default())
                .await
                .map(|_| ())
        ),
        "node may delete Secrets"
    );
    assert!(as_node.get("db").await.is_ok());

    let id = format!("csi-{}-secrets", pod.uid);
    csi.node_unpublish_volume(harness::node::unpublish_request(
        &id,
        &bed.target(&pod, "secrets"),
    ))
    .await
    .unwrap();
    assert!(harness::mounts::mounts_under(bed.work.path()).is_empty());

    let logs = node.logs();
    for value in ["pw-sync-v1", "pw-sync-v2", key.lines().nth(1).unwrap()] {
        assert!(!logs.contains(value), "secret material in the node's logs");
    }
}

/// A Deployment of one replica whose pods run as `web` (no kubelet: they stay Pending).
async fn deployment(bed: &Bed, name: &str) -> (PodInfo, String) {
    let body: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"serviceAccountName": "web", "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "registry.invalid/never-pulled"}]},
            },
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(bed.client.clone(), &bed.ns)
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    let selector = ListParams::default().labels(&format!("app={name}"));
    let created = wait_until(Duration::from_secs(60), || {
        let (pods, selector) = (pods.clone(), selector.clone());
        async move {
            pods.list(&selector)
                .await
                .is_ok_and(|l| !l.items.is_empty())
        }
    })
    .await;
    assert!(created, "the controllers made no pod for Deployment {name}");
    let pod = pods.list(&selector).await.unwrap().items.remove(0);
    let rs = pod.metadata.owner_references.as_ref().unwrap()[0].clone();
    assert_eq!(rs.kind, "ReplicaSet");
    (PodInfo::from(&pod), rs.uid)
}

#[tokio::test]
async fn a_secret_shared_by_two_deployments_lives_until_both_are_gone() {
    let bed = Bed::new("gc").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-shared"}),
        )
        .await;
    let objects = "- {objectName: password, secretPath: secret/data/db, secretKey: password}";
    let sync = json!([{"secretName": "shared", "type": "Opaque", "data": [{"objectName": "password", "key": "password"}]}]);
    bed.apply_class("shared", &[], objects, sync).await;
    let node = bed.restricted_node(&["--enable-secret-sync"]).await;
    let mut csi = node.node_client().await;
    let (pod1, rs1) = deployment(&bed, "one").await;
    let (pod2, rs2) = deployment(&bed, "two").await;
    csi.node_publish_volume(bed.publish(&pod1, "secrets", "shared"))
        .await
        .expect("pod of one");
    csi.node_publish_volume(bed.publish(&pod2, "secrets", "shared"))
        .await
        .expect("pod of two");

    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let shared = secrets.get("shared").await.unwrap();
    let mut want = vec![rs1.clone(), rs2.clone()];
    want.sort();
    assert_eq!(
        owner_uids(&shared),
        want,
        "the ReplicaSets of both pods own it"
    );
    assert!(
        shared
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| o.kind == "ReplicaSet")
    );

    // A second publish of the same pod adds nothing; the other owner stays.
    csi.node_publish_volume(bed.publish(&pod1, "again", "shared"))
        .await
        .unwrap();
    assert_eq!(owner_uids(&secrets.get("shared").await.unwrap()), want);

    let deployments: Api<Deployment> = Api::namespaced(bed.client.clone(), &bed.ns);
    let replicasets: Api<ReplicaSet> = Api::namespaced(bed.client.clone(), &bed.ns);
    deployments
        .delete("one", &DeleteParams::background())
        .await
        .unwrap();
    let rs1_gone = wait_until(Duration::from_secs(90), || {
        let replicasets = replicasets.clone();
        let rs1 = rs1.clone();
        async move {
            replicasets
                .list(&ListParams::default())
                .await
                .is_ok_and(|l| {
                    l.items
                        .iter()
                        .all(|r| r.metadata.uid.as_deref() != Some(rs1.as_str()))
                })
        }
    })
    .await;
    assert!(
        rs1_gone,
        "the garbage collector did not remove ReplicaSet of Deployment one"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let left = secrets.get_opt("shared").await.unwrap();
    assert!(left.is_some(), "the Secret went with one of its two owners");

    deployments
        .delete("two", &DeleteParams::background())
        .await
        .unwrap();
    let collected = wait_until(Duration::from_secs(90), || {
        let secrets = secrets.clone();
        async move { matches!(secrets.get_opt("shared").await, Ok(None)) }
    })
    .await;
    assert!(collected, "the Secret outlived both Deployments");
    for (pod, volume) in [(&pod1, "secrets"), (&pod2, "secrets"), (&pod1, "again")] {
        let id = format!("csi-{}-{volume}", pod.uid);
        csi.node_unpublish_volume(harness::node::unpublish_request(
            &id,
            &bed.target(pod, volume),
        ))
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_foreign_secret_is_left_untouched_and_a_missing_class_is_not_found() {
    let bed = Bed::new("foreign").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-foreign"}),
        )
        .await;
    let objects = "- {objectName: password, secretPath: secret/data/db, secretKey: password}";
    let sync = json!([{"secretName": "db", "type": "Opaque", "data": [{"objectName": "password", "key": "password"}]}]);
    bed.apply_class("app", &[], objects, sync).await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {"team": "someone-else"}},
        "stringData": {"password": "not-yours"},
    }))
    .unwrap();
    let foreign = secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();

    let node = bed.restricted_node(&["--enable-secret-sync"]).await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    let status = csi
        .node_publish_volume(bed.publish(&pod, "secrets", "app"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let secret_id = format!("{}/db", bed.ns);
    assert!(
        status
            .message()
            .contains(&format!("Secret {secret_id} exists and is not managed")),
        "{}",
        status.message()
    );
    let after = secrets.get("db").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, foreign.metadata.resource_version,
        "the foreign Secret was written"
    );
    assert_eq!(text(&after, "password"), "not-yours");
    let event = bed.wait_event(&pod.name, "FailedToCreateSecret").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(event.message.unwrap_or_default().contains(&secret_id));
    assert!(
        harness::mounts::mounts_under(bed.work.path()).is_empty(),
        "the failed mount was undone"
    );

    // A pod whose namespace has no such class.
    let other = bed.kube.namespace("noclass").await;
    let mut req = bed.publish(&pod, "elsewhere", "app");
    req.volume_context
        .insert("csi.storage.k8s.io/pod.namespace".into(), other.clone());
    let status = csi.node_publish_volume(req).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(
        status.message().contains(&format!("{other}/app")),
        "{}",
        status.message()
    );
    let (_, metrics) = node.get("/metrics").await.unwrap();
    assert!(
        metrics.contains(
            "sync_k8s_secret_error_total{provider=\"vault\",error_type=\"SecretNotManaged\""
        ),
        "{metrics}"
    );
}

/// A `secretObjects` entry whose Secret name is not a DNS subdomain (it would change the path
/// of the GET and the apply made with keymount's token) refuses the mount before any Secret is
/// read or written, naming the entry; the good entry beside it is not applied either.
#[tokio::test]
async fn secret_names_that_are_not_dns_names_are_refused_and_nothing_is_applied() {
    let bed = Bed::new("badname").await;
    bed.bao
        .kv2_put(
            "secret",
            "db",
            json!({"username": "admin", "password": "pw-bad-name"}),
        )
        .await;
    let objects = "- {objectName: password, secretPath: secret/data/db, secretKey: password}";
    let data = json!([{"objectName": "password", "key": "password"}]);
    let node = bed.restricted_node(&["--enable-secret-sync"]).await;
    let mut csi = node.node_client().await;
    let pod = bed.pod("web-0").await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    for (n, bad) in ["../../kube-system/secrets/x", "db?dryRun=All", "DB", "a/b"]
        .into_iter()
        .enumerate()
    {
        let class = format!("app-{n}");
        let sync = json!([
            {"secretName": "good", "type": "Opaque", "data": data},
            {"secretName": bad, "type": "Opaque", "data": data},
        ]);
        bed.apply_class(&class, &[], objects, sync).await;
        let status = csi
            .node_publish_volume(bed.publish(&pod, &format!("v{n}"), &class))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad}: {status:?}");
        assert!(
            status.message().contains("secretObjects[1].secretName"),
            "{bad}: {}",
            status.message()
        );
        assert!(!status.message().contains("pw-bad-name"));
    }
    let listed = secrets.list(&ListParams::default()).await.unwrap();
    assert!(
        listed
            .items
            .iter()
            .all(|s| s.metadata.name.as_deref() != Some("good")),
        "nothing was applied"
    );
    assert!(
        harness::mounts::mounts_under(bed.work.path()).is_empty(),
        "the failed mounts were undone"
    );
}
