//! The CSI gRPC layer: thin tonic services that turn requests into domain calls and domain
//! errors into `Status`.

pub(crate) mod authority;
pub(crate) mod identity;
pub(crate) mod node;
pub(crate) mod registration;
pub(crate) mod server;
mod wire_debug;

pub(crate) use identity::IdentityService;
pub(crate) use node::NodeService;
