//! The floor of one gRPC round trip on a unix socket, as a node plugin makes two per publish
//! (kubelet's NodePublishVolume to it, its Mount call to a provider plugin): a tonic client
//! and a tonic server (the test plugin) in one process, one call at a time, with a Mount
//! request and answer of a publish's size (a volume context carrying a ServiceAccount token,
//! three small files). CPU from getrusage covers both ends: the client's and the server's half
//! of a round trip, the node's share of the two it takes part in.

use std::time::Instant;

use keymount::proto::provider::MountRequest;
use keymount::proto::provider::csi_driver_provider_client::CsiDriverProviderClient;

#[path = "../../tests/harness/plugin.rs"]
#[allow(dead_code)]
mod plugin;

/// Runs `calls` Mount calls one at a time; prints p50 and the CPU per call.
pub(crate) fn run(calls: usize, cpu_us: fn() -> (f64, f64)) {
    crate::two_worker_runtime().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let reply = plugin::Reply::files(&[
            ("user", "app"),
            ("password", "bench-pw"),
            ("tls.key", "k"),
        ]);
        let server = plugin::FakePlugin::start(dir.path(), "floor", reply).await;
        let mut client = CsiDriverProviderClient::new(keymount::unix_channel::lazy(&server.socket));
        // A volume context as kubelet sends it: pod fields and a ~1 KiB token.
        let token = "x".repeat(1024);
        let attributes = format!(
            r#"{{"csi.storage.k8s.io/pod.name":"app-0","csi.storage.k8s.io/pod.namespace":"shop","csi.storage.k8s.io/pod.uid":"0b2e1f4c-0000-4000-8000-000000000001","csi.storage.k8s.io/serviceAccount.name":"app","secretProviderClass":"db","objects":"- objectName: db","csi.storage.k8s.io/serviceAccount.tokens":"{{\"vault\":{{\"token\":\"{token}\",\"expirationTimestamp\":\"2026-12-02T00:00:00Z\"}}}}"}}"#
        );
        let request = MountRequest {
            attributes,
            secrets: "{}".into(),
            target_path: "/var/lib/kubelet/pods/0b2e1f4c-0000-4000-8000-000000000001/volumes/kubernetes.io~csi/secrets/mount".into(),
            permission: "420".into(),
            current_object_version: Vec::new(),
        };
        for _ in 0..100 {
            client.mount(request.clone()).await.unwrap();
        }
        let mut wall = Vec::with_capacity(calls);
        let before = cpu_us();
        for _ in 0..calls {
            let started = Instant::now();
            client.mount(request.clone()).await.unwrap();
            wall.push(started.elapsed());
        }
        let after = cpu_us();
        wall.sort();
        println!(
            "gRPC round trip on a unix socket (tonic client and server, one process): {calls} calls, \
             p50={:.3} ms  CPU {:.0} µs user + {:.0} µs system",
            wall[calls / 2].as_secs_f64() * 1e3,
            (after.0 - before.0) / calls as f64,
            (after.1 - before.1) / calls as f64,
        );
    });
}
