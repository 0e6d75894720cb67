//! The chart on the node with the AWS provider against moto and an external provider plugin,
//! through the faults a node sees: the plugin starting after keymount, a pod deleted while its
//! publish is in flight, keymount's container killed mid-publish, kubelet restarted while pods
//! are mounted, and a rolling update of the DaemonSet to a new image.

use std::io::Write;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client as SecretsManager;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::chart::{
    CHART, apply, exec_until, install_chart, keymount_log, keymount_rss_kib, kill_ds_pod,
    mounts_of, node_values, pod_mounts, providers_dir, ready_ds_pod, uninstall, volume_pod,
    wait_ds_pod, wait_event,
};
use crate::plugin::{FakePlugin, Reply};
use crate::support::kube::TestKube;
use crate::support::moto::{Moto, REGION};
use crate::support::node::TestNode;
use crate::support::proc::wait_until;

const ROLE: &str = "arn:aws:iam::123456789012:role/node-faults";
const PLUGIN: &str = "e2e-plugin";

fn say(msg: &str) {
    let _ = writeln!(std::io::stderr(), "{msg}");
}

async fn create(client: &kube::Client, pod: &Value) -> Pod {
    let ns = pod["metadata"]["namespace"].as_str().unwrap();
    Api::<Pod>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &serde_json::from_value(pod.clone()).unwrap(),
        )
        .await
        .unwrap_or_else(|e| panic!("create pod {}: {e}", pod["metadata"]["name"]))
}

fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("pod uid")
}

async fn put_secret(sm: &SecretsManager, value: &str) {
    sm.put_secret_value()
        .secret_id("node/db")
        .secret_string(value)
        .send()
        .await
        .expect("put secret value");
}

/// Waits until the plugin has received a Mount request about pod `name`.
async fn wait_mount_call(plugin: &FakePlugin, name: &str, timeout: Duration) -> bool {
    wait_until(timeout, || async { plugin.mount_calls_for_pod(name) > 0 }).await
}

/// The chart on the node, through its faults, in one sequence (after the other chart test:
/// the chart's cluster-wide objects exist once):
/// - a pod with the AWS provider (IRSA role from its ServiceAccount's annotation, kubelet's
///   `sts.amazonaws.com` token, moto's STS and Secrets Manager) reads its secret;
/// - a pod of an external plugin's class, created before the plugin is up, gets a FailedMount
///   event naming the missing plugin, then its files once the plugin serves its socket;
/// - a pod deleted while its publish is in flight is torn down with nothing left mounted;
/// - keymount's container killed mid-publish: the DaemonSet's next keymount publishes the pod,
///   one mount, the right files;
/// - kubelet restarted while pods are mounted: their files stay, kubelet talks to keymount
///   again (a new pod gets its files) and rotation still reaches the running pods;
/// - a rolling update of the DaemonSet to a new image while pods are mounted: files kept
///   throughout, and later rotations work;
/// - every pod deleted and the chart uninstalled: no mount, no registration socket.
#[tokio::test]
async fn the_chart_on_the_node_serves_aws_and_plugins_through_faults() {
    let _chart = CHART.lock().await;
    let kube = TestKube::get();
    let node = TestNode::get();
    let client = kube.client();
    let sys = kube.namespace("node-km-faults").await;
    let app = kube.namespace("node-faults").await;
    let started = Instant::now();

    // The node's kubelet root dir is its own, not /var/lib/kubelet: the chart's
    // linux.kubeletRootDir drives every host path (CSI socket, registration, pods dir).
    assert_ne!(node.root_dir, std::path::Path::new("/var/lib/kubelet"));

    let moto = Moto::start().await;
    let sm = moto.secretsmanager();
    sm.create_secret()
        .name("node/db")
        .secret_string("aws-first")
        .send()
        .await
        .unwrap();

    let mut values = node_values(node, kube);
    values["enableSecretRotation"] = json!(true);
    values["rotationPollInterval"] = json!("5s");
    let env = values["linux"]["env"].as_array_mut().unwrap();
    for var in [
        "KEYMOUNT_AWS_STS_ENDPOINT",
        "KEYMOUNT_AWS_SECRETSMANAGER_ENDPOINT",
        "KEYMOUNT_AWS_SSM_ENDPOINT",
    ] {
        env.push(json!({"name": var, "value": moto.endpoint()}));
    }
    env.push(json!({"name": "KEYMOUNT_AWS_RETRY_INITIAL_BACKOFF", "value": "100ms"}));
    let mut ds_pod = install_chart(node, &client, &sys, &values).await;
    let registration = node
        .root_dir
        .join("plugins_registry/secrets-store.csi.k8s.io-reg.sock");
    assert!(registration.exists(), "{} missing", registration.display());

    // --- AWS: IRSA against moto ------------------------------------------------------------
    kube.create_service_account(&app, "aws-app", &[("eks.amazonaws.com/role-arn", ROLE)])
        .await;
    apply(
        &client,
        &json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
            "metadata": {"name": "aws-db", "namespace": app},
            "spec": {"provider": "aws", "parameters": {
                "region": REGION,
                "objects": "- {objectName: node/db, objectType: secretsmanager, objectAlias: db-password}",
            }},
        }),
    )
    .await;
    let aws_pod = volume_pod(node, &app, "aws", "aws-app", "aws-db");
    node.run_pod(&client, &aws_pod, Duration::from_secs(120))
        .await;
    let read_aws = || node.exec(&app, "aws", &["cat", "/mnt/secrets/db-password"]);
    assert_eq!(read_aws().unwrap_or_else(|e| panic!("{e}")), "aws-first");
    say(&format!(
        "faults: AWS pod read its secret ({:.0?})",
        started.elapsed()
    ));

    // --- an external plugin started after keymount -----------------------------------------
    kube.create_service_account(&app, "plug", &[]).await;
    apply(
        &client,
        &json!({
            "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
            "metadata": {"name": "plugged", "namespace": app},
            "spec": {"provider": PLUGIN, "parameters": {"anything": "the plugin's own"}},
        }),
    )
    .await;
    create(&client, &volume_pod(node, &app, "plug", "plug", "plugged")).await;
    let missing = wait_event(
        &client,
        &app,
        "plug",
        "FailedMount",
        |m| m.contains(PLUGIN),
        Duration::from_secs(90),
    )
    .await
    .unwrap_or_else(|| {
        panic!(
            "no FailedMount event naming the plugin:\n{}",
            node.describe(&app, "plug")
        )
    });
    say(&format!("faults: before the plugin is up: {missing}"));
    assert!(
        missing.contains("not found"),
        "the event says the plugin is missing: {missing}"
    );
    let plugin = FakePlugin::start(
        &providers_dir(node),
        PLUGIN,
        Reply::files(&[("greeting", "hello from a plugin")]),
    )
    .await;
    node.wait_running(&client, &app, "plug", Duration::from_secs(150))
        .await;
    let greeting = node
        .exec(&app, "plug", &["cat", "/mnt/secrets/greeting"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(greeting, "hello from a plugin");
    say(&format!(
        "faults: plugin pod read its files ({:.0?})",
        started.elapsed()
    ));

    // --- a pod deleted while its publish is in flight ---------------------------------------
    plugin.set_reply(Reply::Delay(
        Duration::from_secs(15),
        Box::new(Reply::files(&[("greeting", "hello from a plugin")])),
    ));
    let late = create(&client, &volume_pod(node, &app, "late", "plug", "plugged")).await;
    assert!(
        wait_mount_call(&plugin, "late", Duration::from_secs(60)).await,
        "no Mount call for pod late:\n{}",
        node.describe(&app, "late")
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &app);
    pods.delete("late", &DeleteParams::default()).await.unwrap();

    // --- keymount's container killed mid-publish (while `late` is torn down) ----------------
    plugin.set_reply(Reply::Delay(
        Duration::from_secs(40),
        Box::new(Reply::files(&[("greeting", "hello from a plugin")])),
    ));
    let crash = create(&client, &volume_pod(node, &app, "crash", "plug", "plugged")).await;
    assert!(
        wait_mount_call(&plugin, "crash", Duration::from_secs(60)).await,
        "no Mount call for pod crash:\n{}",
        node.describe(&app, "crash")
    );
    kill_ds_pod(&client, &sys, &ds_pod).await;
    plugin.set_reply(Reply::files(&[("greeting", "after the crash")]));
    let old = ds_pod.clone();
    ds_pod = wait_ds_pod(&client, &sys, Some(&old), Duration::from_secs(120))
        .await
        .expect("the DaemonSet's next keymount pod is ready within 120 s");
    node.wait_running(&client, &app, "crash", Duration::from_secs(180))
        .await;
    let after = node
        .exec(&app, "crash", &["cat", "/mnt/secrets/greeting"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(after, "after the crash");
    assert_eq!(
        mounts_of(node, &uid(&crash)).len(),
        1,
        "one tmpfs at the crashed publish's target: {:?}",
        pod_mounts(node)
    );
    assert_eq!(read_aws().unwrap_or_else(|e| panic!("{e}")), "aws-first");
    say(&format!(
        "faults: publish killed mid-flight completed by the next keymount ({:.0?})",
        started.elapsed()
    ));

    let late_gone = wait_until(Duration::from_secs(150), || async {
        matches!(pods.get_opt("late").await, Ok(None))
    })
    .await;
    assert!(
        late_gone,
        "pod late not gone:\n{}",
        node.describe(&app, "late")
    );
    assert!(
        wait_until(Duration::from_secs(30), || async {
            mounts_of(node, &uid(&late)).is_empty()
        })
        .await,
        "the pod deleted mid-publish left a mount: {:?}",
        pod_mounts(node)
    );
    say(&format!(
        "faults: pod deleted mid-publish left nothing mounted ({:.0?})",
        started.elapsed()
    ));

    // --- kubelet restarted while pods are mounted ------------------------------------------
    node.restart_kubelet();
    assert_eq!(read_aws().unwrap_or_else(|e| panic!("{e}")), "aws-first");
    node.run_pod(
        &client,
        &volume_pod(node, &app, "fresh", "plug", "plugged"),
        Duration::from_secs(150),
    )
    .await;
    let fresh = node
        .exec(&app, "fresh", &["cat", "/mnt/secrets/greeting"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        fresh, "after the crash",
        "a pod published after kubelet's restart"
    );
    put_secret(&sm, "aws-after-kubelet-restart").await;
    let seen = exec_until(
        node,
        &app,
        "aws",
        &["cat", "/mnt/secrets/db-password"],
        "aws-after-kubelet-restart",
        Duration::from_secs(150),
    )
    .await;
    assert_eq!(
        seen,
        "aws-after-kubelet-restart",
        "rotation after kubelet's restart\n{}",
        keymount_log(node, &sys, &ds_pod)
    );
    say(&format!(
        "faults: kubelet restarted; files kept, new pod published, rotation ({:.0?})",
        started.elapsed()
    ));

    // --- a rolling update to a new image while pods are mounted ----------------------------
    let image = node.keymount_image();
    let rolled = format!("{image}-rolled");
    node.tag_image(image, &rolled);
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), &sys);
    daemonsets
        .patch(
            "keymount",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
                {"name": "keymount", "image": rolled}
            ]}}}})),
        )
        .await
        .expect("patch the DaemonSet's image");
    let old = ds_pod.clone();
    let mut next = None;
    let deadline = Instant::now() + Duration::from_secs(150);
    while next.is_none() && Instant::now() < deadline {
        for (pod, path, want) in [
            ("aws", "db-password", "aws-after-kubelet-restart"),
            ("plug", "greeting", "after the crash"),
        ] {
            let kept = node
                .exec(&app, pod, &["cat", &format!("/mnt/secrets/{path}")])
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(kept, want, "{pod}'s files kept during the rolling update");
        }
        next = ready_ds_pod(&client, &sys, Some(&old))
            .await
            .filter(|p| {
                p.spec
                    .as_ref()
                    .is_some_and(|s| s.containers[0].image.as_deref() == Some(rolled.as_str()))
            })
            .and_then(|p| p.metadata.name);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    ds_pod = next.unwrap_or_else(|| {
        panic!(
            "no ready keymount pod of image {rolled} within 150 s:\n{}",
            node.kubectl_text(&["get", "pods", "-n", &sys, "-o", "wide"])
        )
    });
    plugin.set_reply(Reply::FilesVersions(
        vec![(
            "greeting".into(),
            0o644,
            b"after the rolling update".to_vec(),
        )],
        vec![("greeting".into(), "v2".into())],
    ));
    put_secret(&sm, "aws-after-rolling-update").await;
    for (pod, path, want) in [
        ("aws", "db-password", "aws-after-rolling-update"),
        ("plug", "greeting", "after the rolling update"),
    ] {
        let seen = exec_until(
            node,
            &app,
            pod,
            &["cat", &format!("/mnt/secrets/{path}")],
            want,
            Duration::from_secs(150),
        )
        .await;
        assert_eq!(
            seen,
            want,
            "rotation of {pod} after the rolling update\n{}",
            keymount_log(node, &sys, &ds_pod)
        );
    }
    say(&format!(
        "faults: rolled to {rolled}; files kept, rotations after it ({:.0?}); keymount RSS {:?} KiB",
        started.elapsed(),
        keymount_rss_kib(node)
    ));

    // --- every pod deleted, then uninstall -------------------------------------------------
    let names = ["aws", "plug", "crash", "fresh"];
    for name in names {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let all_gone = wait_until(Duration::from_secs(150), || async {
        let mut gone = true;
        for name in names {
            gone &= matches!(pods.get_opt(name).await, Ok(None));
        }
        gone
    })
    .await;
    assert!(
        all_gone,
        "pods not gone:\n{}",
        node.kubectl_text(&["get", "pods", "-n", &app])
    );
    let unmounted = wait_until(Duration::from_secs(30), || async {
        pod_mounts(node).is_empty()
    })
    .await;
    assert!(
        unmounted,
        "mounts left after the pods are gone: {:?}",
        pod_mounts(node)
    );
    uninstall(&client, &sys).await;
    let clean = wait_until(Duration::from_secs(90), || async {
        ready_ds_pod(&client, &sys, None).await.is_none() && !registration.exists()
    })
    .await;
    assert!(
        clean,
        "after uninstall: registration socket present: {}",
        registration.exists()
    );
    drop(plugin);
    say(&format!("faults: done in {:.0?}", started.elapsed()));
}
