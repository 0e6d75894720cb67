//! Publishing and unpublishing volumes: the orchestration between class lookup, providers,
//! the tmpfs mount, the atomic writer and the pod status object.

mod blocking;
pub mod context;
pub mod events;
mod fetch;
mod fill;
pub mod journal;
pub mod locks;
mod notify;
mod pod_group;
pub mod pod_status;
pub mod publish;
mod publish_error;
pub mod recover;
pub mod service;
pub mod state;
pub mod unpublish;

pub use publish::{AccessType, PublishError, PublishRequest};
pub use service::{NodeConfig, VolumeService};
pub use unpublish::{UnpublishError, UnpublishRequest};
