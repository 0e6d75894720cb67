//! CSI Identity: plugin name and version, no plugin capabilities (node-only), readiness.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::proto::csi::identity_server::Identity;
use crate::proto::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, ProbeRequest, ProbeResponse,
};
use crate::volume::VolumeService;

/// The Identity service.
#[derive(Debug)]
pub(crate) struct IdentityService {
    driver_name: String,
    volumes: Arc<VolumeService>,
}

impl IdentityService {
    /// Identity for `driver_name`; ready when the volume service is.
    pub(crate) fn new(driver_name: impl Into<String>, volumes: Arc<VolumeService>) -> Self {
        Self {
            driver_name: driver_name.into(),
            volumes,
        }
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_owned(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        // Node-only plugin: no CONTROLLER_SERVICE, no accessibility constraints.
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: Vec::new(),
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse {
            ready: Some(self.volumes.is_ready()),
        }))
    }
}
