//! `keymount csi publish|unpublish|info`: a small CSI client for any node plugin socket, to
//! debug a node or drive one without kubelet. Failures print the gRPC code and message.

use std::collections::HashMap;

use anyhow::{Context, bail};
use tonic::transport::Channel;

use crate::cli::{CsiAction, CsiArgs, PublishArgs};
use crate::proto::csi::identity_client::IdentityClient;
use crate::proto::csi::node_client::NodeClient;
use crate::proto::csi::volume_capability::access_mode::Mode;
use crate::proto::csi::volume_capability::{AccessMode, AccessType, MountVolume};
use crate::proto::csi::{
    GetPluginCapabilitiesRequest, GetPluginInfoRequest, NodeGetCapabilitiesRequest,
    NodeGetInfoRequest, NodePublishVolumeRequest, NodeUnpublishVolumeRequest, ProbeRequest,
    VolumeCapability,
};
use crate::provider::tokens::TOKENS_KEY;

/// Kubelet's tokens JSON for one audience, read from `file`.
pub fn tokens_json(file: &std::path::Path, audience: &str) -> anyhow::Result<String> {
    let token = std::fs::read_to_string(file)
        .with_context(|| format!("read token file {}", file.display()))?;
    let token = token.trim();
    if token.is_empty() {
        bail!("token file {} is empty", file.display());
    }
    let expiry = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1))
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    Ok(
        serde_json::json!({ audience: { "token": token, "expirationTimestamp": expiry } })
            .to_string(),
    )
}

/// A channel to the node plugin's socket.
async fn connect(endpoint: &str) -> anyhow::Result<Channel> {
    let socket = crate::csi::server::socket_path(endpoint)?;
    crate::unix_channel::connect(&socket)
        .await
        .with_context(|| format!("connect to CSI socket {}", socket.display()))
}

fn failed(rpc: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{rpc} failed: {:?}: {}", status.code(), status.message())
}

/// Runs one `keymount csi` action.
pub async fn run(args: CsiArgs) -> anyhow::Result<()> {
    let channel = connect(&args.endpoint).await?;
    match args.action {
        CsiAction::Publish(p) => publish(channel, p).await,
        CsiAction::Unpublish(u) => {
            let request = NodeUnpublishVolumeRequest {
                volume_id: u.volume_id.clone(),
                target_path: u.target_path.display().to_string(),
            };
            NodeClient::new(channel)
                .node_unpublish_volume(request)
                .await
                .map_err(|s| failed("NodeUnpublishVolume", s))?;
            println!(
                "unpublished volume {} from {}",
                u.volume_id,
                u.target_path.display()
            );
            Ok(())
        }
        CsiAction::Info => info(channel).await,
    }
}

async fn publish(channel: Channel, p: PublishArgs) -> anyhow::Result<()> {
    let mut context: HashMap<String, String> = [
        ("secretProviderClass", p.class.as_str()),
        ("csi.storage.k8s.io/pod.name", &p.pod_name),
        ("csi.storage.k8s.io/pod.namespace", &p.namespace),
        ("csi.storage.k8s.io/pod.uid", &p.pod_uid),
        ("csi.storage.k8s.io/serviceAccount.name", &p.service_account),
        ("csi.storage.k8s.io/ephemeral", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(file) = &p.token_file {
        context.insert(TOKENS_KEY.to_owned(), tokens_json(file, &p.audience)?);
    }
    context.extend(p.attributes.iter().cloned());
    let request = NodePublishVolumeRequest {
        volume_id: p.volume_id.clone(),
        target_path: p.target_path.display().to_string(),
        volume_capability: Some(VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume::default())),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeReaderOnly as i32,
            }),
        }),
        readonly: true,
        volume_context: context,
        ..Default::default()
    };
    NodeClient::new(channel)
        .node_publish_volume(request)
        .await
        .map_err(|s| failed("NodePublishVolume", s))?;
    println!(
        "published volume {} at {}",
        p.volume_id,
        p.target_path.display()
    );
    Ok(())
}

async fn info(channel: Channel) -> anyhow::Result<()> {
    let mut identity = IdentityClient::new(channel.clone());
    let plugin = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .map_err(|s| failed("GetPluginInfo", s))?
        .into_inner();
    println!("plugin: {} {}", plugin.name, plugin.vendor_version);
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .map_err(|s| failed("GetPluginCapabilities", s))?
        .into_inner();
    println!("plugin capabilities: {:?}", caps.capabilities);
    let probe = identity
        .probe(ProbeRequest {})
        .await
        .map_err(|s| failed("Probe", s))?
        .into_inner();
    println!("ready: {:?}", probe.ready);
    let mut node = NodeClient::new(channel);
    let info = node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .map_err(|s| failed("NodeGetInfo", s))?
        .into_inner();
    println!("node id: {}", info.node_id);
    let caps = node
        .node_get_capabilities(NodeGetCapabilitiesRequest {})
        .await
        .map_err(|s| failed("NodeGetCapabilities", s))?
        .into_inner();
    println!("node capabilities: {:?}", caps.capabilities);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_json_holds_the_file_token() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "eyJabc.def.ghi\n").unwrap();
        let json = tokens_json(&file, "vault").unwrap();
        let tokens = crate::provider::ServiceAccountTokens::parse(&json).unwrap();
        assert_eq!(
            tokens.for_audience("vault").unwrap().token.expose(),
            "eyJabc.def.ghi"
        );
        std::fs::write(&file, "  ").unwrap();
        assert!(tokens_json(&file, "vault").is_err());
    }
}
