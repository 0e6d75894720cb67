//! keymount on a real node: containerd, kubelet and kube-scheduler v1.20.2 next to the test
//! API server (`tests/support/node.rs`), pods a real kubelet creates, read with `kubectl exec`.
//!
//! Needs root, containerd and runc (scripts/deps.sh), kubelet (scripts/testbed/build-kube.sh)
//! and the images (scripts/image, run by the harness). Run: `./scripts/test --test node_e2e`.

#[path = "chart/render.rs"]
mod render;
mod support;

use std::io::Write;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use render::{TEST_SERVER_VERSION, objects, render_in};
use serde_json::{Value, json};
use support::kube::TestKube;
use support::node::TestNode;
use support::openbao::OpenBao;
use support::proc::wait_until;

const MANAGER: &str = "keymount-node-test";

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

// --- keymount's chart on the node ------------------------------------------------------------

/// Server-side applies `obj` through discovery of its kind.
async fn apply(client: &kube::Client, obj: &Value) {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", obj["apiVersion"].as_str().unwrap()),
    };
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap());
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("discover {gvk:?}: {e}"));
    let api: Api<DynamicObject> = match obj["metadata"]["namespace"].as_str() {
        Some(ns) if caps.scope == kube::discovery::Scope::Namespaced => {
            Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => Api::all_with(client.clone(), &resource),
    };
    let name = obj["metadata"]["name"].as_str().unwrap();
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {} {name}: {e}", obj["kind"]));
}

/// The chart's values for the test node: the imported image (never pulled), kubelet's root
/// dir, provider dirs under the node's dir (no host path outside it), the API server on the
/// loopback (no kube-proxy: the `kubernetes` Service's IP leads nowhere) with a projected
/// ServiceAccount token (the bed runs no ServiceAccount admission), OpenBao on the loopback.
fn node_values(node: &TestNode, kube: &TestKube) -> Value {
    let (repository, tag) = node.keymount_image().rsplit_once(':').unwrap();
    let port = kube.api_url().rsplit(':').next().unwrap().to_string();
    json!({
        "fullnameOverride": "keymount",
        "metricsPort": support::proc::free_port(),
        "allowedStoreAddresses": ["127.0.0.1"],
        "linux": {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "kubeletRootDir": node.root_dir,
            "providersDir": node.dir.join("providers"),
            "additionalProvidersDirs": [],
            "env": [
                {"name": "KUBERNETES_SERVICE_HOST", "value": "127.0.0.1"},
                {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            ],
            "volumes": [{
                "name": "kube-api-access",
                "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                ]},
            }],
            "volumeMounts": [{
                "name": "kube-api-access",
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "readOnly": true,
            }],
        },
    })
}

/// Renders the chart (Helm SDK) with `values` into `ns`, applies every object, and waits for
/// the DaemonSet's pod on the node to be Running and ready. Returns the pod's name.
async fn install_chart(node: &TestNode, client: &kube::Client, ns: &str, values: &Value) -> String {
    let mut objs = objects(&render_in(values, TEST_SERVER_VERSION, ns, true));
    // kubelet probes a hostNetwork pod at the node's InternalIP, the VM's first address,
    // which nothing may send traffic to here: probe the loopback instead.
    // No CNI on the test node: the DaemonSet's pod runs in the host's network namespace.
    for obj in objs.iter_mut().filter(|o| o["kind"] == "DaemonSet") {
        obj["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        for c in obj["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
        {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if c[probe]["httpGet"].is_object() {
                    c[probe]["httpGet"]["host"] = json!("127.0.0.1");
                }
            }
        }
    }
    for obj in &objs {
        apply(client, obj).await;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels("app.kubernetes.io/name=keymount");
    let ready = wait_until(Duration::from_secs(120), || {
        let pods = pods.clone();
        let lp = lp.clone();
        async move {
            pods.list(&lp).await.ok().is_some_and(|l| {
                l.items.iter().any(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
                })
            })
        }
    })
    .await;
    let list = pods.list(&lp).await.unwrap();
    let name = list
        .items
        .first()
        .and_then(|p| p.metadata.name.clone())
        .unwrap_or_else(|| panic!("no DaemonSet pod in {ns}"));
    assert!(
        ready,
        "keymount's DaemonSet pod {ns}/{name} not ready within 120 s:\n{}\nkubelet:\n{}",
        node.describe(ns, &name),
        node.log_tail("kubelet", 30)
    );
    name
}

/// Mount points below kubelet's pods dir on the host (the volumes keymount published).
fn pod_mounts(node: &TestNode) -> Vec<String> {
    let prefix = format!("{}/", node.root_dir.join("pods").display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix) && m.contains("kubernetes.io~csi"))
        .map(str::to_string)
        .collect()
}

/// Resident memory (KiB) of the keymount process serving this node (its command line names
/// the node's kubelet root dir), from /proc.
fn keymount_rss_kib(node: &TestNode) -> Option<u64> {
    let root = node.root_dir.display().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("/keymount"))
            && args.iter().any(|a| a == "node")
            && args.iter().any(|a| a.contains(&root))
        {
            return support::proc::status_kib(&entry.path(), "VmRSS");
        }
    }
    None
}

/// Polls `kubectl exec` of `cmd` until its output is `want` (trimmed) or `timeout` passes;
/// returns the last output.
async fn exec_until(
    node: &TestNode,
    ns: &str,
    pod: &str,
    cmd: &[&str],
    want: &str,
    timeout: Duration,
) -> String {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let out = node.exec(ns, pod, cmd).unwrap_or_else(|e| e);
        if out.trim() == want || std::time::Instant::now() >= deadline {
            return out.trim().to_string();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
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
    let volume_pod = |name: &str| {
        node.pod(
            &app,
            name,
            json!({
                "serviceAccountName": "web",
                "containers": [{"volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true}]}],
                "volumes": [{"name": "secrets", "csi": {
                    "driver": "secrets-store.csi.k8s.io", "readOnly": true,
                    "volumeAttributes": {"secretProviderClass": "web"},
                }}],
            }),
        )
    };
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
        String::from_utf8_lossy(
            &node
                .kubectl(&["logs", "-n", &sys, &ds_pod, "--tail=30"])
                .stdout
        )
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
    let events: Api<Event> = Api::namespaced(client.clone(), &app);
    let lp = ListParams::default().fields("involvedObject.name=intruder");
    let mut refused = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while refused.is_none() && std::time::Instant::now() < deadline {
        refused = events
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .find_map(|e| {
                (e.reason.as_deref() == Some("FailedMount")).then(|| e.message.unwrap_or_default())
            });
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let message = refused.unwrap_or_else(|| {
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
    let system_pods: Api<Pod> = Api::namespaced(client.clone(), &sys);
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    system_pods.delete(&ds_pod, &now).await.unwrap();
    let old = ds_pod.clone();
    let lp = ListParams::default().labels("app.kubernetes.io/name=keymount");
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
        replacement = system_pods
            .list(&lp)
            .await
            .unwrap()
            .items
            .into_iter()
            .find_map(|p| {
                let ready = p
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let name = p.metadata.name?;
                (ready && name != old).then_some(name)
            });
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

/// Deletes what the chart installed in `ns` (the DaemonSet first) and its cluster-wide objects.
async fn uninstall(client: &kube::Client, ns: &str) {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::storage::v1::CSIDriver;
    let dp = DeleteParams::foreground();
    Api::<DaemonSet>::namespaced(client.clone(), ns)
        .delete("keymount", &dp)
        .await
        .expect("delete DaemonSet");
    let _ = Api::<CSIDriver>::all(client.clone())
        .delete("secrets-store.csi.k8s.io", &DeleteParams::default())
        .await;
}
