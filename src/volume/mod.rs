//! Publishing and unpublishing volumes: the orchestration (`service/`) between class lookup,
//! providers, the tmpfs mount (behind `mount::Mounter`), the atomic writer, what the cluster
//! is told (`report/`) and what keymount remembers of each volume (`state.rs`).

mod blocking;
pub(crate) mod context;
pub mod events;
mod fetch;
pub mod journal;
pub(crate) mod locks;
mod pod_group;
pub mod pod_status;
pub(crate) mod publish;
mod publish_error;
pub(crate) mod report;
pub(crate) mod rotation;
pub(crate) mod service;
pub mod state;
pub(crate) mod unpublish;

pub use publish::{AccessType, PublishError, PublishOutcome, PublishRequest};
pub(crate) use report::KubeReporter;
pub use service::{NodeConfig, VolumeService};
pub use unpublish::{UnpublishError, UnpublishRequest};
