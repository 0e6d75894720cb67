//! Flags of restart on change, shared by `keymount node` and `keymount controller`.

use std::time::Duration;

use clap::Args;

/// Restart on change (opt-in).
#[derive(Debug, Args)]
pub(crate) struct RestartFlags {
    /// Restart a workload when new content reaches it, for the classes (node) or SecretSyncs
    /// (controller) that ask with the annotation `keymount.io/restart-on-change` (`owner`, on
    /// a class only, or `Deployment/<name>`, `StatefulSet/<name>`, `DaemonSet/<name>`); needs
    /// RBAC to get and patch those workloads (the node also gets ReplicaSets).
    #[arg(
        long,
        env = "KEYMOUNT_ENABLE_RESTART_ON_CHANGE",
        default_value_t = false
    )]
    pub(crate) enable_restart_on_change: bool,

    /// Least time between two restarts of one workload; a change within it waits its turn.
    #[arg(long, env = "KEYMOUNT_RESTART_MIN_INTERVAL", default_value = "1m", value_parser = humantime::parse_duration)]
    pub(crate) restart_min_interval: Duration,
}
