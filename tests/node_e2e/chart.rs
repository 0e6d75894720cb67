//! keymount's chart on the test node: install (Helm SDK render, server-side apply), wait for
//! the DaemonSet's pod, uninstall; and what the node tests look at (mounts, events, files).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::render::{TEST_SERVER_VERSION, objects, render_in};
use crate::support;
use crate::support::kube::TestKube;
use crate::support::node::TestNode;

const MANAGER: &str = "keymount-node-test";

/// The chart's cluster-wide objects (CSIDriver, ClusterRoles, CRDs) exist once: tests that
/// install it hold this for their whole run.
pub(crate) static CHART: Mutex<()> = Mutex::const_new(());

/// The DaemonSet pods' label.
const DS_LABEL: &str = "app.kubernetes.io/name=keymount";

/// Server-side applies `obj` through discovery of its kind.
pub(crate) async fn apply(client: &kube::Client, obj: &Value) {
    support::kube::apply_object(client, obj, MANAGER)
        .await
        .unwrap_or_else(|e| panic!("apply {} {}: {e}", obj["kind"], obj["metadata"]["name"]));
}

/// A pod of the test box running as ServiceAccount `sa`, with one inline volume of `class`
/// mounted at /mnt/secrets.
pub(crate) fn volume_pod(node: &TestNode, ns: &str, name: &str, sa: &str, class: &str) -> Value {
    node.pod(
        ns,
        name,
        json!({
            "serviceAccountName": sa,
            "containers": [{"volumeMounts": [{"name": "secrets", "mountPath": "/mnt/secrets", "readOnly": true}]}],
            "volumes": [{"name": "secrets", "csi": {
                "driver": "secrets-store.csi.k8s.io", "readOnly": true,
                "volumeAttributes": {"secretProviderClass": class},
            }}],
        }),
    )
}

/// The chart's values for the test node: the imported image (never pulled), kubelet's root
/// dir (the node's own, not `/var/lib/kubelet`: every node test runs with a custom
/// `linux.kubeletRootDir`), provider dirs under the node's dir (no host path outside it), the
/// API server on the loopback (no kube-proxy: the `kubernetes` Service's IP leads nowhere) with
/// a projected ServiceAccount token (the bed runs no ServiceAccount admission), OpenBao on the
/// loopback.
pub(crate) fn node_values(node: &TestNode, kube: &TestKube) -> Value {
    let (repository, tag) = node.keymount_image().rsplit_once(':').unwrap();
    let port = kube.api_url().rsplit(':').next().unwrap().to_string();
    json!({
        "fullnameOverride": "keymount",
        "metricsPort": support::proc::free_port(),
        "allowedStoreAddresses": ["127.0.0.1"],
        "linux": {
            "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
            "kubeletRootDir": node.root_dir,
            "providersDir": providers_dir(node),
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

/// The host directory of provider plugin sockets the chart mounts into keymount's container.
pub(crate) fn providers_dir(node: &TestNode) -> std::path::PathBuf {
    node.dir.join("providers")
}

/// Renders the chart (Helm SDK) with `values` into `ns`, applies every object, and waits for
/// the DaemonSet's pod on the node to be Running and ready. Returns the pod's name.
pub(crate) async fn install_chart(
    node: &TestNode,
    client: &kube::Client,
    ns: &str,
    values: &Value,
) -> String {
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
    let name = wait_ds_pod(client, ns, None, Duration::from_secs(120)).await;
    name.unwrap_or_else(|| {
        panic!(
            "keymount's DaemonSet pod in {ns} not ready within 120 s:\n{}\nkubelet:\n{}",
            node.kubectl_text(&["describe", "pods", "-n", ns, "-l", DS_LABEL]),
            node.log_tail("kubelet", 30)
        )
    })
}

/// The ready DaemonSet pod in `ns` other than `not`, if any.
pub(crate) async fn ready_ds_pod(
    client: &kube::Client,
    ns: &str,
    not: Option<&str>,
) -> Option<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods
        .list(&ListParams::default().labels(DS_LABEL))
        .await
        .ok()?;
    list.items.into_iter().find(|p| {
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let deleting = p.metadata.deletion_timestamp.is_some();
        ready && !deleting && p.metadata.name.as_deref() != not
    })
}

/// Waits up to `timeout` for a ready DaemonSet pod in `ns` other than `not`; its name.
pub(crate) async fn wait_ds_pod(
    client: &kube::Client,
    ns: &str,
    not: Option<&str>,
    timeout: Duration,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(p) = ready_ds_pod(client, ns, not).await {
            return p.metadata.name;
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Kills keymount's DaemonSet pod `name` at once (grace period 0), as a node losing the
/// container would.
pub(crate) async fn kill_ds_pod(client: &kube::Client, ns: &str, name: &str) {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(name, &now)
        .await
        .unwrap_or_else(|e| panic!("delete {ns}/{name}: {e}"));
}

/// Deletes what the chart installed in `ns` (the DaemonSet first) and its cluster-wide objects.
pub(crate) async fn uninstall(client: &kube::Client, ns: &str) {
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

/// Mount table entries below kubelet's pods dir on the host (the volumes keymount published),
/// one per mount: a mount point mounted twice is listed twice.
pub(crate) fn pod_mounts(node: &TestNode) -> Vec<String> {
    let prefix = format!("{}/", node.root_dir.join("pods").display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix) && m.contains("kubernetes.io~csi"))
        .map(str::to_string)
        .collect()
}

/// The mount entries of one pod's CSI volumes.
pub(crate) fn mounts_of(node: &TestNode, pod_uid: &str) -> Vec<String> {
    let dir = format!("/pods/{pod_uid}/");
    pod_mounts(node)
        .into_iter()
        .filter(|m| m.contains(&dir))
        .collect()
}

/// Resident memory (KiB) of the keymount process serving this node (its command line names
/// the node's kubelet root dir), from /proc.
pub(crate) fn keymount_rss_kib(node: &TestNode) -> Option<u64> {
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
pub(crate) async fn exec_until(
    node: &TestNode,
    ns: &str,
    pod: &str,
    cmd: &[&str],
    want: &str,
    timeout: Duration,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = node.exec(ns, pod, cmd).unwrap_or_else(|e| e);
        if out.trim() == want || Instant::now() >= deadline {
            return out.trim().to_string();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits up to `timeout` for an event of `reason` about object `name` in `ns` whose message
/// satisfies `matches`; its message.
pub(crate) async fn wait_event(
    client: &kube::Client,
    ns: &str,
    name: &str,
    reason: &str,
    matches: impl Fn(&str) -> bool,
    timeout: Duration,
) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let deadline = Instant::now() + timeout;
    loop {
        let found = events.list(&lp).await.ok().and_then(|l| {
            l.items.into_iter().find_map(|e| {
                let message = e.message.unwrap_or_default();
                (e.reason.as_deref() == Some(reason) && matches(&message)).then_some(message)
            })
        });
        if found.is_some() || Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The logs of keymount's pod (last lines), for failure messages.
pub(crate) fn keymount_log(node: &TestNode, ns: &str, pod: &str) -> String {
    node.kubectl_text(&["logs", "-n", ns, pod, "--tail=40"])
}
