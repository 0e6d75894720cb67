//! gRPC clients other than tonic's on the real `keymount node` binary's sockets: Python
//! `grpcio` (gRPC core) calls Identity and Node on the CSI socket with the socket path as
//! `:authority`, as kubelet < 1.26 (grpc-go) and older gRPC core, grpc-java and grpc-swift
//! send it, and with grpcio's own default; several calls on one channel, so that its HPACK
//! encoder refers to its dynamic table. Without `src/csi/authority.rs` every call with the
//! path fails with "Received RST_STREAM with error code 1" (PROTOCOL_ERROR).
//!
//! grpcio comes from Debian's `python3-grpcio` (scripts/deps.sh installs it), run with
//! `$GRPCIO_PYTHON` or `/usr/bin/python3`.

mod harness;

use harness::grpcio::grpcio_calls;
use harness::node::{NodeOptions, NodeProcess};
use keymount::proto::csi::{
    GetPluginInfoRequest, GetPluginInfoResponse, NodeGetCapabilitiesRequest,
    NodeGetCapabilitiesResponse, NodeGetInfoResponse, ProbeResponse,
};
use prost::Message;

#[tokio::test]
async fn python_grpcio_calls_identity_and_node() {
    let classes = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes.path().to_owned()),
        ..NodeOptions::default()
    })
    .await;
    let methods = [
        "/csi.v1.Identity/GetPluginInfo",
        "/csi.v1.Identity/Probe",
        "/csi.v1.Node/NodeGetCapabilities",
        "/csi.v1.Node/NodeGetInfo",
    ];
    let path = node.socket.display().to_string();
    let results = tokio::task::spawn_blocking({
        let socket = node.socket.clone();
        move || {
            let mut results = grpcio_calls(&socket, 3, Some(&path), &methods);
            results.extend(grpcio_calls(&socket, 1, None, &methods));
            results
        }
    })
    .await
    .unwrap();
    assert_eq!(results.len(), 16, "{results:?}");

    // What tonic's own client gets is the reference.
    let tonic_info = node
        .identity_client()
        .await
        .get_plugin_info(GetPluginInfoRequest::default())
        .await
        .unwrap()
        .into_inner();
    let tonic_caps = node
        .node_client()
        .await
        .node_get_capabilities(NodeGetCapabilitiesRequest::default())
        .await
        .unwrap()
        .into_inner();
    for (method, outcome) in &results {
        let bytes = outcome
            .as_ref()
            .unwrap_or_else(|e| panic!("{method} failed for grpcio: {e:?}\n{}", node.logs()));
        match method.as_str() {
            "/csi.v1.Identity/GetPluginInfo" => {
                let info = GetPluginInfoResponse::decode(&bytes[..]).unwrap();
                assert_eq!(info.name, "secrets-store.csi.k8s.io");
                assert!(!info.vendor_version.is_empty());
                assert_eq!(info, tonic_info);
            }
            "/csi.v1.Identity/Probe" => {
                let probe = ProbeResponse::decode(&bytes[..]).unwrap();
                assert_eq!(probe.ready, Some(true));
            }
            "/csi.v1.Node/NodeGetCapabilities" => {
                let caps = NodeGetCapabilitiesResponse::decode(&bytes[..]).unwrap();
                assert_eq!(caps, tonic_caps);
            }
            "/csi.v1.Node/NodeGetInfo" => {
                let info = NodeGetInfoResponse::decode(&bytes[..]).unwrap();
                assert_eq!(info.node_id, "test-node");
            }
            other => panic!("unexpected method {other}"),
        }
    }
}

/// A method keymount does not serve gets UNIMPLEMENTED, a real gRPC answer: the stream was
/// accepted, not reset.
#[tokio::test]
async fn python_grpcio_gets_grpc_status_for_unknown_methods() {
    let classes = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(NodeOptions {
        class_dir: Some(classes.path().to_owned()),
        ..NodeOptions::default()
    })
    .await;
    let results = tokio::task::spawn_blocking({
        let socket = node.socket.clone();
        move || {
            let path = socket.display().to_string();
            grpcio_calls(
                &socket,
                1,
                Some(&path),
                &["/csi.v1.Controller/CreateVolume"],
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(
        results[0].1.as_ref().unwrap_err().0,
        "UNIMPLEMENTED",
        "{results:?}"
    );
}
