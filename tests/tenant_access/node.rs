//! End to end through the real `keymount node` binary over its CSI socket: hostile classes
//! and pod overrides refused, the admin's opt-in honoured.

use std::os::unix::fs::symlink;

use tonic::Code;

use crate::harness::mounts::{mount_entry, mounts_under};
use crate::harness::node::{
    NodeOptions, NodeProcess, kubelet_target, pod_uid, publish_request, unpublish_request,
    write_class,
};
use crate::{Layout, OBJECTS, tls_vault};
use keymount::provider::tokens::TOKENS_KEY;

/// The admin's Helm-style flags on the real binary, kubelet's publish over the CSI socket.
#[tokio::test]
async fn node_refuses_hostile_classes_and_pod_overrides_over_csi() {
    let (bao, tokens) = tls_vault().await;
    let layout = Layout::new(&bao);
    let classes = layout.tmp.path().join("classes");
    let good = layout.path("allowed/ca.pem");
    let base = |extra: &[(&'static str, String)]| {
        let mut params: Vec<(&str, String)> = vec![
            ("vaultAddress", bao.addr().to_owned()),
            ("roleName", "class-role".to_owned()),
            ("vaultAuthMountPath", "jwt".to_owned()),
            ("objects", OBJECTS.to_owned()),
            ("vaultCACertPath", good.clone()),
        ];
        for (k, v) in extra {
            params.retain(|(name, _)| name != k);
            params.push((k, v.clone()));
        }
        params
    };
    let write = |name: &str, params: Vec<(&str, String)>| {
        let refs: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_class(&classes, "shop", name, "vault", &refs);
    };
    write("app", base(&[("roleName", "web".into())]));
    write("app-class-role", base(&[]));
    symlink(
        layout.other_pod(),
        layout.allowed().join("to-other-pod.pem"),
    )
    .unwrap();
    write(
        "hostile-file",
        base(&[
            ("roleName", "web".into()),
            ("vaultCACertPath", layout.path("allowed/to-other-pod.pem")),
        ]),
    );
    write(
        "hostile-address",
        base(&[
            ("roleName", "web".into()),
            ("vaultAddress", "http://169.254.169.254".into()),
        ]),
    );

    let allowed_dirs = format!("--allowed-file-dirs={}", layout.allowed().display());
    // Both nodes below serve the same kubelet root, as a restarted node would.
    let kubelet_root = layout.tmp.path().join("kubelet");
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes.clone()),
        kubelet_root: Some(kubelet_root.clone()),
        args: vec![allowed_dirs.clone()],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let mut n = 0;
    let mut publish = |class: &str, attributes: &[(&str, &str)]| {
        n += 1;
        let target = kubelet_target(&kubelet_root, &pod_uid(n), "secrets");
        let mut request = publish_request(&format!("vol-{n}"), &target, class, "shop");
        request.volume_context.insert(
            "csi.storage.k8s.io/serviceAccount.name".into(),
            "web".into(),
        );
        request
            .volume_context
            .insert(TOKENS_KEY.into(), tokens.clone());
        for (k, v) in attributes {
            request.volume_context.insert(k.to_string(), v.to_string());
        }
        (request, target)
    };

    // The class that stays within the admin's limits works.
    let (ok, ok_target) = publish("app", &[]);
    client
        .node_publish_volume(ok.clone())
        .await
        .expect("publish");
    assert_eq!(
        std::fs::read_to_string(ok_target.join("p")).unwrap(),
        "tenant-secret-1"
    );
    // `objects` is the pod's to choose (what its own role may read): allowed.
    let (objects, objects_target) = publish(
        "app",
        &[(
            "objects",
            "- {objectName: renamed, secretPath: secret/data/app, secretKey: password}",
        )],
    );
    client
        .node_publish_volume(objects)
        .await
        .expect("objects override");
    assert_eq!(
        std::fs::read_to_string(objects_target.join("renamed")).unwrap(),
        "tenant-secret-1"
    );
    let logins = bao.count_logins("jwt");

    let expect_refused = |status: tonic::Status, name: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(name), "{}", status.message());
        assert!(!status.message().contains("BEGIN CERTIFICATE"));
    };
    let mut refused_targets = Vec::new();
    for (class, attributes, name) in [
        ("hostile-file", vec![], "vaultCACertPath"),
        ("hostile-address", vec![], "vaultAddress"),
        ("app", vec![("roleName", "admin")], "roleName"),
        (
            "app",
            vec![("vaultAddress", "http://169.254.169.254")],
            "vaultAddress",
        ),
        (
            "app",
            vec![("vaultCACertPath", "/etc/ssl/certs/ca-certificates.crt")],
            "vaultCACertPath",
        ),
        (
            "app",
            vec![("vaultAuthMountPath", "kubernetes")],
            "vaultAuthMountPath",
        ),
    ] {
        let (request, target) = publish(class, &attributes);
        let status = client.node_publish_volume(request).await.unwrap_err();
        expect_refused(status, name);
        assert!(
            mount_entry(&target).is_none(),
            "nothing mounted for {class}"
        );
        refused_targets.push(target);
    }
    // The class's own (missing) role: the pod may not replace it without the admin.
    let (request, _) = publish("app-class-role", &[("roleName", "web")]);
    expect_refused(
        client.node_publish_volume(request).await.unwrap_err(),
        "roleName",
    );
    assert_eq!(
        bao.count_logins("jwt"),
        logins,
        "no refused publish reached Vault"
    );
    client
        .node_unpublish_volume(unpublish_request(&ok.volume_id, &ok_target))
        .await
        .unwrap();
    client
        .node_unpublish_volume(unpublish_request("vol-2", &objects_target))
        .await
        .unwrap();
    drop(client);
    drop(node);

    // The admin opts in for roleName: the pod's role is used.
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes),
        kubelet_root: Some(layout.tmp.path().join("kubelet")),
        args: vec![
            allowed_dirs,
            "--allow-volume-attribute-overrides=roleName,vaultCACertPath,vaultAddress".into(),
        ],
        ..Default::default()
    })
    .await;
    let mut client = node.node_client().await;
    let (request, target) = publish("app-class-role", &[("roleName", "web")]);
    client
        .node_publish_volume(request.clone())
        .await
        .expect("roleName override allowed by the admin");
    assert_eq!(
        std::fs::read_to_string(target.join("p")).unwrap(),
        "tenant-secret-1"
    );
    let (still, _) = publish("app", &[("audience", "other")]);
    expect_refused(
        client.node_publish_volume(still).await.unwrap_err(),
        "audience",
    );
    // An allowed override is still held to the node's limits: the file and address rules
    // apply to what the pod names as to what a class names.
    let (shadow, _) = publish("app", &[("vaultCACertPath", "/etc/shadow")]);
    let status = client.node_publish_volume(shadow).await.unwrap_err();
    expect_refused(status.clone(), "vaultCACertPath");
    assert!(status.message().contains("allowed-file-dirs"), "{status:?}");
    let (metadata, _) = publish("app", &[("vaultAddress", "http://169.254.169.254")]);
    let status = client.node_publish_volume(metadata).await.unwrap_err();
    expect_refused(status.clone(), "vaultAddress");
    assert!(
        status.message().contains("allowed-store-addresses"),
        "{status:?}"
    );
    client
        .node_unpublish_volume(unpublish_request(&request.volume_id, &target))
        .await
        .unwrap();
    assert!(!node.logs().contains("tenant-secret-1"));
    assert!(
        mounts_under(layout.tmp.path()).is_empty(),
        "every volume unpublished"
    );
}
