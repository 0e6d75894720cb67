//! Generated gRPC code for the wire contracts in `proto/`: CSI v1, the provider API v1alpha1
//! and kubelet's plugin registration API.

/// CSI v1 (`csi.v1`): the Identity and Node services kubelet calls.
pub mod csi {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("csi.v1");
}

/// Secrets Store provider plugin API (`v1alpha1.CSIDriverProvider`).
pub mod provider {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("v1alpha1");
}

/// kubelet plugin registration (`pluginregistration.Registration`), served on
/// `<kubelet root>/plugins_registry/<driver>-reg.sock`.
pub mod registration {
    #![allow(missing_docs, clippy::all, missing_debug_implementations)]
    tonic::include_proto!("pluginregistration");
}
