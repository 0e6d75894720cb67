//! The CSI gRPC layer: thin tonic services that turn requests into domain calls and domain
//! errors into `Status`.

pub mod authority;
pub mod identity;
pub mod node;
pub mod registration;
pub mod server;
mod wire_debug;

pub use identity::IdentityService;
pub use node::NodeService;
