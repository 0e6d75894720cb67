//! CSI Node: publish and unpublish through the volume service; everything else is
//! UNIMPLEMENTED (inline ephemeral volumes are never staged, expanded or measured).

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::class::LookupError;
use crate::mount::{MountError, TargetError};
use crate::proto::csi::node_server::Node;
use crate::proto::csi::volume_capability::AccessType as PbAccess;
use crate::proto::csi::*;
use crate::provider::ResolveError;
use crate::redact::Redacted;
use crate::volume::{
    AccessType, PublishError, PublishRequest, UnpublishError, UnpublishRequest, VolumeService,
};

/// The Node service.
#[derive(Debug)]
pub(crate) struct NodeService {
    node_id: String,
    volumes: Arc<VolumeService>,
}

impl NodeService {
    /// Node service of `node_id`.
    pub(crate) fn new(node_id: impl Into<String>, volumes: Arc<VolumeService>) -> Self {
        Self {
            node_id: node_id.into(),
            volumes,
        }
    }
}

impl From<PublishError> for Status {
    fn from(error: PublishError) -> Self {
        let code = match &error {
            PublishError::MissingField(_)
            | PublishError::BlockVolume
            | PublishError::NotReadonly
            | PublishError::Context(_)
            | PublishError::Tokens(_)
            | PublishError::FsGroup(_)
            | PublishError::ClassWithoutProvider { .. }
            | PublishError::ClassWithoutParameters { .. }
            | PublishError::VolumeAttribute { .. } => Code::InvalidArgument,
            PublishError::Busy(_) | PublishError::ShuttingDown => Code::Aborted,
            PublishError::FsGroupChanged { .. } | PublishError::PodMismatch { .. } => {
                Code::FailedPrecondition
            }
            PublishError::PodFsGroup { .. } => Code::Unavailable,
            PublishError::LookupClass(LookupError::NotFound { .. })
            | PublishError::LookupClass(LookupError::NotFoundSkipped { .. }) => Code::NotFound,
            PublishError::LookupClass(LookupError::Api { .. }) => Code::Unavailable,
            PublishError::LookupClass(LookupError::ReadDir { .. })
            | PublishError::LookupClass(LookupError::Manifest { .. }) => Code::FailedPrecondition,
            PublishError::ResolveProvider {
                source: ResolveError::InvalidName(_),
                ..
            } => Code::InvalidArgument,
            PublishError::ResolveProvider {
                source: ResolveError::NotFound { .. },
                ..
            } => Code::NotFound,
            PublishError::Provider { source, .. } => source.code(),
            PublishError::ProviderTimeout { .. } => Code::DeadlineExceeded,
            PublishError::BadTarget(e) => target_code(e),
            PublishError::Mount(e) => mount_code(e),
            PublishError::InvalidFiles { .. } | PublishError::WriteFiles(_) => Code::Internal,
            // The class's own settings: the same class fails the same way until it is fixed.
            PublishError::Transform(_) | PublishError::InvalidTransform { .. } => {
                Code::FailedPrecondition
            }
            PublishError::UpdatePodStatus { .. } => Code::Unavailable,
            PublishError::SyncSecret { source, .. } => source.code(),
        };
        Status::new(code, error.to_string())
    }
}

/// A refused target path is the caller's input; failing to inspect it is ours.
fn target_code(error: &TargetError) -> Code {
    if error.is_invalid_path() {
        Code::InvalidArgument
    } else {
        Code::Internal
    }
}

/// A mount keymount does not own is a precondition the caller can fix (or kubelet's
/// cleanup will); the rest is the path or the node.
fn mount_code(error: &MountError) -> Code {
    match error {
        MountError::Target(e) => target_code(e),
        MountError::Foreign { .. } => Code::FailedPrecondition,
        MountError::Io { .. } => Code::Internal,
    }
}

impl From<UnpublishError> for Status {
    fn from(error: UnpublishError) -> Self {
        let code = match &error {
            UnpublishError::MissingField(_) => Code::InvalidArgument,
            UnpublishError::Busy(_) => Code::Aborted,
            UnpublishError::BadTarget(e) => target_code(e),
            UnpublishError::Mount(e) => mount_code(e),
        };
        Status::new(code, error.to_string())
    }
}

/// The pod's fsGroup as kubelet sends it (`volume_mount_group` of a mount capability).
fn mount_group(capability: Option<&VolumeCapability>) -> String {
    match capability.and_then(|c| c.access_type.as_ref()) {
        Some(PbAccess::Mount(mount)) => mount.volume_mount_group.clone(),
        _ => String::new(),
    }
}

fn access_type(capability: Option<&VolumeCapability>) -> Option<AccessType> {
    capability.map(|c| match c.access_type {
        Some(PbAccess::Block(_)) => AccessType::Block,
        // A capability without an access type is treated as a mount (what kubelet sends).
        Some(PbAccess::Mount(_)) | None => AccessType::Mount,
    })
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let req = PublishRequest {
            access: access_type(r.volume_capability.as_ref()),
            mount_group: mount_group(r.volume_capability.as_ref()),
            volume_id: r.volume_id,
            target_path: r.target_path,
            readonly: r.readonly,
            volume_context: r.volume_context.into_iter().collect(),
            secrets: Redacted::new(r.secrets.into_iter().collect()),
        };
        // In a task of its own: a caller giving up does not cancel a mount halfway.
        self.volumes.publish_detached(req).await?;
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let req = UnpublishRequest {
            volume_id: r.volume_id,
            target_path: r.target_path,
        };
        self.volumes.unpublish(req).await?;
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        // VOLUME_MOUNT_GROUP: kubelet (1.22 with the gate, 1.23 on) sends the pod's fsGroup
        // in the publish and leaves the ownership to keymount.
        let group = node_service_capability::Rpc {
            r#type: node_service_capability::rpc::Type::VolumeMountGroup as i32,
        };
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![NodeServiceCapability {
                r#type: Some(node_service_capability::Type::Rpc(group)),
            }],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: None,
        }))
    }

    async fn node_stage_volume(
        &self,
        _: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeStageVolume is not offered"))
    }

    async fn node_unstage_volume(
        &self,
        _: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeUnstageVolume is not offered"))
    }

    async fn node_get_volume_stats(
        &self,
        _: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeStats is not offered"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume is not offered"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::paths::PathError;
    use crate::provider::ProviderError;

    fn code(e: PublishError) -> Code {
        Status::from(e).code()
    }

    #[test]
    fn publish_errors_map_to_the_codes_kubelet_retries_by() {
        assert_eq!(
            code(PublishError::MissingField("volume_id")),
            Code::InvalidArgument
        );
        assert_eq!(code(PublishError::NotReadonly), Code::InvalidArgument);
        assert_eq!(code(PublishError::Busy("v".into())), Code::Aborted);
        let not_found = LookupError::NotFound {
            namespace: "ns".into(),
            name: "db".into(),
        };
        let status = Status::from(PublishError::LookupClass(not_found));
        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(
            status.message(),
            "failed to get SecretProviderClass ns/db: not found"
        );
        let missing = ResolveError::NotFound {
            name: "vault".into(),
            dirs: "/a, /b".into(),
        };
        let status = Status::from(PublishError::ResolveProvider {
            class: "ns/db".into(),
            source: missing,
        });
        assert_eq!(status.code(), Code::NotFound);
        assert!(status.message().contains("provider \"vault\" not found"));
        let denied = ProviderError::from(crate::provider::vault::error::VaultError::ReadDenied {
            method: "GET".into(),
            path: "secret/x".into(),
            detail: "no access".into(),
        });
        assert_eq!(
            code(PublishError::Provider {
                class: "ns/db".into(),
                provider: "vault".into(),
                source: denied
            }),
            Code::PermissionDenied
        );
        assert_eq!(
            code(PublishError::ProviderTimeout {
                class: "c".into(),
                provider: "p".into(),
                seconds: 1
            }),
            Code::DeadlineExceeded
        );
        assert_eq!(
            code(PublishError::InvalidFiles {
                class: "c".into(),
                provider: "p".into(),
                source: PathError::Empty
            }),
            Code::Internal
        );
        let foreign = PublishError::SyncSecret {
            class: "ns/db".into(),
            source: Box::new(crate::sync::SyncError::NotManaged {
                secret: "ns/db".into(),
            }),
        };
        let status = Status::from(foreign);
        assert_eq!(status.code(), Code::AlreadyExists);
        assert!(
            status
                .message()
                .contains("Secret ns/db exists and is not managed")
        );
    }

    #[test]
    fn fs_group_errors_map_to_codes() {
        use crate::fs::group::FsGroup;
        let bad = FsGroup::parse("-1").unwrap_err();
        let status = Status::from(PublishError::FsGroup(bad));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("volume_capability.mount.volume_mount_group \"-1\""),
            "{}",
            status.message()
        );
        let changed = PublishError::FsGroupChanged {
            volume: "csi-1".into(),
            had: FsGroup::parse("2000").unwrap(),
            sent: FsGroup::parse("3000").unwrap(),
        };
        assert_eq!(code(changed), Code::FailedPrecondition);
    }

    #[test]
    fn the_mount_group_is_read_from_a_mount_capability_only() {
        use crate::proto::csi::volume_capability::{BlockVolume, MountVolume};
        let mount = VolumeCapability {
            access_type: Some(PbAccess::Mount(MountVolume {
                volume_mount_group: "2000".into(),
                ..Default::default()
            })),
            access_mode: None,
        };
        assert_eq!(mount_group(Some(&mount)), "2000");
        let block = VolumeCapability {
            access_type: Some(PbAccess::Block(BlockVolume {})),
            access_mode: None,
        };
        assert_eq!(mount_group(Some(&block)), "");
        assert_eq!(mount_group(None), "");
    }

    #[test]
    fn unpublish_errors_map_to_codes() {
        let s = Status::from(UnpublishError::MissingField("target_path"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "target_path is missing");
        assert_eq!(
            Status::from(UnpublishError::Busy("v".into())).code(),
            Code::Aborted
        );
    }

    #[test]
    fn target_and_mount_errors_map_to_codes() {
        let root = crate::mount::KubeletRoot::default();
        let bad = || root.parse("/proc/sys").unwrap_err();
        assert_eq!(code(PublishError::BadTarget(bad())), Code::InvalidArgument);
        let status = Status::from(UnpublishError::BadTarget(bad()));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("/var/lib/kubelet/pods/<pod uid>"));
        let foreign = || MountError::Foreign {
            path: "/t".into(),
            fs_type: "ext4".into(),
            why: "not a tmpfs",
        };
        let status = Status::from(PublishError::Mount(foreign()));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("/t holds a mount of type ext4"),
            "{}",
            status.message()
        );
        assert_eq!(
            Status::from(UnpublishError::Mount(foreign())).code(),
            Code::FailedPrecondition
        );
        let inspect = TargetError::Inspect {
            component: "/t".into(),
            source: std::io::Error::other("EIO"),
        };
        assert_eq!(
            code(PublishError::Mount(MountError::Target(inspect))),
            Code::Internal
        );
    }
}
