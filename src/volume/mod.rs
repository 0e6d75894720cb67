//! Publishing and unpublishing volumes: the orchestration (`service/`) between class lookup,
//! providers, the tmpfs mount (behind `mount::Mounter`), the atomic writer, what the cluster
//! is told (`report/`) and what keymount remembers of each volume (`state.rs`).

mod blocking;
pub mod context;
pub mod events;
mod fetch;
pub mod journal;
pub mod locks;
mod pod_group;
pub mod pod_status;
pub mod publish;
mod publish_error;
pub mod report;
pub mod rotation;
pub mod service;
pub mod state;
pub mod unpublish;

pub use publish::{AccessType, PublishError, PublishOutcome, PublishRequest};
pub use report::{KubeReporter, LocalReporter, Reporter};
pub use service::{NodeConfig, Recovered, VolumeService};
pub use unpublish::{UnpublishError, UnpublishRequest};
