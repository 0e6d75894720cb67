//! keymount on a real node: containerd, kubelet and kube-scheduler v1.20.2 next to the test
//! API server (`tests/support/node.rs`), pods a real kubelet creates, read with `kubectl exec`.
//!
//! Needs root, containerd and runc (scripts/deps.sh), kubelet (scripts/testbed/build-kube.sh)
//! and the images (scripts/image, run by the harness). Run: `./scripts/test --test node_e2e`.

mod support;

use std::time::Duration;

use serde_json::json;
use support::kube::TestKube;
use support::node::TestNode;

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

    node.delete_pod(&client, &ns, "shell", Duration::from_secs(60))
        .await;
}
