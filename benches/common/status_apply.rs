//! The cost of the one write a publish makes to the API server on the real path: the pod's
//! SecretProviderClassPodStatus, applied by the node's own code
//! (`keymount::volume::pod_status::apply`) through a kube client over one reused TLS
//! connection, one object per call, one call at a time. CPU from getrusage is this process's
//! only: the client's side of the request, what a node pays for it (the API server is another
//! process).

use std::time::Instant;

use keymount::provider::ObjectVersion;
use keymount::volume::pod_status::{self, PodStatusInput};

use crate::support::kube::TestKube;

/// Applies `calls` status objects one at a time; prints p50 and the CPU per call.
pub(crate) fn run(calls: usize, cpu_us: fn() -> (f64, f64)) {
    crate::two_worker_runtime().block_on(async {
        let kube = TestKube::get();
        kube.install_keymount_crds().await;
        let namespace = kube.namespace("floor").await;
        let client = kube.client();
        let versions: Vec<ObjectVersion> = ["user", "password", "tls.key"]
            .iter()
            .map(|id| ObjectVersion {
                id: (*id).into(),
                version: "3a7bd3e2360a3d29eea436fcfb7e44c735d117c4".into(),
            })
            .collect();
        let apply = |n: usize| {
            let (client, namespace, versions) = (client.clone(), namespace.clone(), &versions);
            async move {
                let (pod_name, pod_uid) = (
                    format!("app-{n}"),
                    format!("0b2e1f4c-0000-4000-8000-{n:012}"),
                );
                let target_path = format!(
                    "/var/lib/kubelet/pods/{pod_uid}/volumes/kubernetes.io~csi/secrets/mount"
                );
                let input = PodStatusInput {
                    node_id: "floor-node",
                    namespace: &namespace,
                    pod_name: &pod_name,
                    pod_uid: &pod_uid,
                    class: "db",
                    target_path: &target_path,
                    versions,
                };
                pod_status::apply(&client, &input).await.unwrap();
            }
        };
        // Warm: the TLS connection, the API server's caches.
        for n in 0..50 {
            apply(1_000_000 + n).await;
        }
        let mut wall = Vec::with_capacity(calls);
        let before = cpu_us();
        for n in 0..calls {
            let started = Instant::now();
            apply(n).await;
            wall.push(started.elapsed());
        }
        let after = cpu_us();
        wall.sort();
        println!(
            "pod status server-side apply (keymount's code, reused TLS connection): {calls} calls, \
             p50={:.3} ms  CPU {:.0} µs user + {:.0} µs system",
            wall[calls / 2].as_secs_f64() * 1e3,
            (after.0 - before.0) / calls as f64,
            (after.1 - before.1) / calls as f64,
        );
    });
}
