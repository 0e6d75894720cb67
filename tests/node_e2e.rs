//! keymount on a real node: containerd, kubelet and kube-scheduler v1.20.2 next to the test
//! API server (`tests/support/node.rs`), pods a real kubelet creates, read with `kubectl exec`.
//!
//! Two chart sequences, one after the other (the chart's cluster-wide objects exist once): the
//! Vault one below, and the AWS, external plugin and faults one in `node_e2e/faults.rs`.
//!
//! Needs root, containerd and runc (scripts/deps.sh), kubelet (scripts/testbed/build-kube.sh)
//! and the images (scripts/image, run by the harness). Run: `./scripts/test --test node_e2e`.

#[path = "node_e2e/chart.rs"]
mod chart;
#[path = "node_e2e/faults.rs"]
mod faults;
#[path = "harness/plugin.rs"]
#[allow(dead_code)]
mod plugin;
#[path = "chart/render.rs"]
mod render;
mod support;

use std::io::Write;
use std::time::Duration;

use chart::{
    CHART, apply, exec_until, install_chart, keymount_log, keymount_rss_kib, kill_ds_pod,
    node_values, pod_mounts, ready_ds_pod, uninstall, wait_event,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::kube::TestKube;
use support::node::TestNode;
use support::openbao::OpenBao;
use support::proc::wait_until;

/// The test bed's node runs a pod: the scheduler binds it, kubelet starts it in containerd
/// from the imported test box image, and `kubectl exec` (API server → kubelet by hostname →
/// containerd's stream server) runs a command in it.
#[tokio::test]
async fn the_test_node_runs_a_host_network_pod_and_exec_reaches_it() {
    let kube = TestKube::get();
    let node = TestNode::get();
    let client = kube.client();
    let ns = kube.namespace("node-bed").await;

    let pod = node.pod(&ns, "shell", json!({}));
    let running = node.run_pod(&client, &pod, Duration::from_secs(120)).await;
    let spec = running.spec.unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(node.name.as_str()));
    assert_eq!(spec.host_network, Some(true));

    let out = node
        .exec(
            &ns,
            "shell",
            &["sh", "-c", "echo hello from $(hostname); id -u"],
        )
        .unwrap_or_else(|e| panic!("{e}\nkubelet log:\n{}", node.log_tail("kubelet", 30)));
    assert!(out.starts_with("hello from "), "exec output: {out:?}");
    assert_eq!(out.lines().nth(1), Some("0"), "exec output: {out:?}");

    node.delete_pod(&client, &ns, "shell", Duration::from_secs(150))
        .await;
}

/// The chart on a real node, end to end, in one sequence (the chart's cluster-wide objects
/// exist once): the DaemonSet's single container registers keymount with kubelet; a pod's
/// inline volume of a Vault class gets its files (OpenBao's auth/kubernetes reviewing the
/// kubelet-requested pod token), read with `kubectl exec`; a pod of a ServiceAccount Vault does
/// not trust stays ContainerCreating with a FailedMount event; the class's synced Secret feeds
/// another pod's `env.valueFrom`; kubelet's republish rotates the file in the running
/// container; deleting the pods unpublishes and leaves no mount; uninstalling leaves no mount
/// and no registration socket.
#[tokio::test]
async fn the_chart_on_the_node_serves_vault_secrets_rotates_syncs_and_cleans_up() {
    let _chart = CHART.lock().await;
    let kube = TestKube::get();
    let node = TestNode::get();
    let client = kube.client();
    let sys = kube.namespace("node-km").await;
    let app = kube.namespace("node-app").await;

    let bao = OpenBao::start().await;
    bao.enable_kubernetes_auth("kubernetes", kube).await;
    bao.put_policy(
        "web",
        "path \"secret/data/web\" { capabilities = [\"read\"] }",
    )
    .await;
    bao.kubernetes_role(
        "kubernetes",
        "web",
        &["web"],
        &[&app],
        &["web"],
        Some("vault"),
    )
    .await;
    bao.kv2_put("secret", "web", json!({"password": "from-a-real-kubelet"}))
        .await;

    // --- install ---------------------------------------------------------------------------
    let started = std::time::Instant::now();
    let mut values = node_values(node, kube);
    values["enableSecretRotation"] = json!(true);
    values["rotationPollInterval"] = json!("5s");
    values["syncSecret"] = json!({"enabled": true});
    // kubelet 1.20 never sends the pod's fsGroup (docs/INSTALL.md, "Non-root pods").
    values["fsGroupFromPod"] = json!(true);
    let mut ds_pod = install_chart(node, &client, &sys, &values).await;
    let containers = Api::<Pod>::namespaced(client.clone(), &sys)
        .get(&ds_pod)
        .await
        .unwrap()
        .spec
        .unwrap()
        .containers
        .len();
    assert_eq!(containers, 1, "the default DaemonSet runs keymount alone");
    let registration = node
        .root_dir
        .join("plugins_registry/secrets-store.csi.k8s.io-reg.sock");
    assert!(registration.exists(), "{} missing", registration.display());
    let _ = writeln!(
        std::io::stderr(),
        "keymount DaemonSet pod {sys}/{ds_pod}: {containers} container, ready in {:.0?}, RSS {:?} KiB",
        started.elapsed(),
        keymount_rss_kib(node)
    );

    // --- a pod of a Vault class reads its files --------------------------------------------
    kube.create_service_account(&app, "web", &[]).await;
    let class = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "web", "namespace": app},
        "spec": {
            "provider": "vault",
            "parameters": {
                "vaultAddress": bao.addr(),
                "roleName": "web",
                "objects": "- {objectName: password, secretPath: secret/data/web, secretKey: password}",
            },
            "secretObjects": [{
                "secretName": "web-db", "type": "Opaque",
                "data": [{"objectName": "password", "key": "password"}],
            }],
        },
    });
    apply(&client, &class).await;
    let volume_pod = |name: &str| chart::volume_pod(node, &app, name, "web", "web");
    let published = std::time::Instant::now();
    node.run_pod(&client, &volume_pod("web"), Duration::from_secs(120))
        .await;
    let _ = writeln!(
        std::io::stderr(),
        "pod with a Vault volume Running in {:.0?}",
        published.elapsed()
    );
    let password = node
        .exec(&app, "web", &["cat", "/mnt/secrets/password"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(password, "from-a-real-kubelet");
    assert_eq!(pod_mounts(node).len(), 1, "{:?}", pod_mounts(node));

    // --- the synced Secret through env.valueFrom in another pod ------------------------------
    let env_pod = node.pod(
        &app,
        "env",
        json!({"containers": [{"env": [{"name": "DB_PASSWORD", "valueFrom": {
            "secretKeyRef": {"name": "web-db", "key": "password"}}}]}]}),
    );
    node.run_pod(&client, &env_pod, Duration::from_secs(60))
        .await;
    let env = node
        .exec(&app, "env", &["sh", "-c", "echo -n $DB_PASSWORD"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(env, "from-a-real-kubelet");

    // --- rotation: kubelet's republish reaches the running container -----------------------
    bao.kv2_put("secret", "web", json!({"password": "rotated-by-republish"}))
        .await;
    let rotated_at = std::time::Instant::now();
    let seen = exec_until(
        node,
        &app,
        "web",
        &["cat", "/mnt/secrets/password"],
        "rotated-by-republish",
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(
        seen,
        "rotated-by-republish",
        "no rotation within 150 s\nkeymount log:\n{}",
        keymount_log(node, &sys, &ds_pod)
    );
    let _ = writeln!(
        std::io::stderr(),
        "rotation reached the container {:.0?} after the write",
        rotated_at.elapsed()
    );

    // --- a ServiceAccount Vault does not trust: ContainerCreating and an event ---------------
    kube.create_service_account(&app, "intruder", &[]).await;
    let mut intruder = volume_pod("intruder");
    intruder["spec"]["serviceAccountName"] = json!("intruder");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &app);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(intruder).unwrap(),
    )
    .await
    .unwrap();
    let message = wait_event(
        &client,
        &app,
        "intruder",
        "FailedMount",
        |_| true,
        Duration::from_secs(90),
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "no FailedMount event for the intruder:\n{}",
            node.describe(&app, "intruder")
        )
    });
    let _ = writeln!(std::io::stderr(), "intruder's event: {message}");
    assert!(
        message.to_lowercase().contains("denied"),
        "the event does not say the login was denied: {message}"
    );
    let phase = pods.get("intruder").await.unwrap().status.unwrap().phase;
    assert_eq!(
        phase.as_deref(),
        Some("Pending"),
        "the intruder's pod started"
    );
    node.delete_pod(&client, &app, "intruder", Duration::from_secs(150))
        .await;

    // --- a non-root pod with fsGroup reads its 0600 file ----------------------------------
    let private = json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "private", "namespace": app},
        "spec": {
            "provider": "vault",
            "parameters": {
                "vaultAddress": bao.addr(),
                "roleName": "web",
                "objects": "- {objectName: password, secretPath: secret/data/web, secretKey: password, filePermission: 0600}",
            },
        },
    });
    apply(&client, &private).await;
    let mut nonroot = volume_pod("nonroot");
    nonroot["spec"]["securityContext"] =
        json!({"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 2000});
    nonroot["spec"]["volumes"][0]["csi"]["volumeAttributes"]["secretProviderClass"] =
        json!("private");
    node.run_pod(&client, &nonroot, Duration::from_secs(120))
        .await;
    let read = node
        .exec(
            &app,
            "nonroot",
            &[
                "sh",
                "-c",
                "id -u; cat /mnt/secrets/password; echo; stat -L -c '%a %g' /mnt/secrets/password",
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        read.lines().collect::<Vec<_>>(),
        ["1000", "rotated-by-republish", "640 2000"],
        "uid 1000 in fsGroup 2000 reads its 0600 secret, group-owned and group-readable"
    );
    node.delete_pod(&client, &app, "nonroot", Duration::from_secs(150))
        .await;

    // --- keymount's container killed: the running pod keeps its files, and the next keymount
    // rotates them ------------------------------------------------------------------------
    kill_ds_pod(&client, &sys, &ds_pod).await;
    let old = ds_pod.clone();
    let mut replacement = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while replacement.is_none() && std::time::Instant::now() < deadline {
        // While keymount is away, the running pod still reads its files.
        let kept = node
            .exec(&app, "web", &["cat", "/mnt/secrets/password"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            kept, "rotated-by-republish",
            "files kept while keymount is down"
        );
        replacement = ready_ds_pod(&client, &sys, Some(&old))
            .await
            .and_then(|p| p.metadata.name);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ds_pod = replacement.expect("the DaemonSet's new keymount pod is ready within 120 s");
    bao.kv2_put(
        "secret",
        "web",
        json!({"password": "after-keymount-restarted"}),
    )
    .await;
    let seen = exec_until(
        node,
        &app,
        "web",
        &["cat", "/mnt/secrets/password"],
        "after-keymount-restarted",
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(
        seen, "after-keymount-restarted",
        "the restarted keymount ({ds_pod}) rotates the running pod's files"
    );

    // --- deleting the pods unpublishes -----------------------------------------------------
    node.delete_pod(&client, &app, "env", Duration::from_secs(150))
        .await;
    node.delete_pod(&client, &app, "web", Duration::from_secs(150))
        .await;
    let unmounted = wait_until(Duration::from_secs(30), || async {
        pod_mounts(node).is_empty()
    })
    .await;
    assert!(
        unmounted,
        "mounts left after the pods are gone: {:?}",
        pod_mounts(node)
    );

    // --- a second pod after that, then uninstall with it still mounted ----------------------
    node.run_pod(&client, &volume_pod("web2"), Duration::from_secs(120))
        .await;
    assert_eq!(pod_mounts(node).len(), 1, "{:?}", pod_mounts(node));
    node.delete_pod(&client, &app, "web2", Duration::from_secs(150))
        .await;
    uninstall(&client, &sys).await;
    let gone = wait_until(Duration::from_secs(60), || {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &sys);
        let ds_pod = ds_pod.clone();
        async move { matches!(pods.get_opt(&ds_pod).await, Ok(None)) }
    })
    .await;
    assert!(gone, "the DaemonSet's pod outlived the uninstall");
    let clean = wait_until(Duration::from_secs(30), || async {
        pod_mounts(node).is_empty() && !registration.exists()
    })
    .await;
    assert!(
        clean,
        "after uninstall: mounts {:?}, registration socket present: {}",
        pod_mounts(node),
        registration.exists()
    );
}
