//! Flags of `keymount controller`, the Deployment role that keeps Kubernetes Secrets of
//! `SecretSync` objects (secret-sync.x-k8s.io/v1alpha1) fresh, without any pod mount.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::providers::ProviderFlags;

/// Flags of `keymount controller`.
#[derive(Debug, Args)]
pub struct ControllerArgs {
    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) providers: ProviderFlags,

    /// Address of the metrics and health HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "KEYMOUNT_METRICS_ADDR", default_value = ":8085")]
    pub(crate) metrics_addr: String,

    /// Elect one writer among the replicas through a coordination.k8s.io Lease; without it
    /// this process writes at once (run one replica only).
    #[arg(long, env = "KEYMOUNT_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) leader_elect: bool,

    /// Namespace of the Lease (default: the client's namespace, in a pod its own).
    #[arg(long, env = "KEYMOUNT_LEADER_ELECTION_NAMESPACE")]
    pub(crate) leader_election_namespace: Option<String>,

    /// Name of the Lease.
    #[arg(
        long,
        env = "KEYMOUNT_LEADER_ELECTION_ID",
        default_value = "keymount-controller"
    )]
    pub(crate) leader_election_id: String,

    /// How long a leader's Lease holds without renewal: a standby replica takes over at most
    /// this long after the leader died. The leader renews every third of it.
    #[arg(long, env = "KEYMOUNT_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub(crate) leader_election_lease_duration: Duration,

    /// This replica's name in the Lease (default: the pod name from `POD_NAME`, else the
    /// host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub(crate) identity: Option<String>,

    /// This replica's pod uid, told to providers as the pod's (as upstream's sync controller
    /// does); empty when absent.
    #[arg(long, env = "POD_UID")]
    pub(crate) pod_uid: Option<String>,

    /// How often each Secret is fetched again from its store, unless its SecretSync sets the
    /// `keymount.io/refresh-interval` annotation (`0s`: never; only on change).
    #[arg(long, env = "KEYMOUNT_ROTATION_POLL_INTERVAL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub(crate) rotation_poll_interval: Duration,

    /// Token audiences requested for SecretSyncs whose class uses an external plugin, which
    /// cannot say which it needs (comma-separated). Built-in providers ask for their own.
    #[arg(long, env = "KEYMOUNT_TOKEN_REQUEST_AUDIENCE", value_delimiter = ',')]
    pub(crate) token_request_audience: Vec<String>,

    /// Lifetime of the ServiceAccount tokens the controller requests (reused until 80 % of it).
    #[arg(long, env = "KEYMOUNT_TOKEN_EXPIRATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub(crate) token_expiration: Duration,

    /// Only SecretSyncs whose `spec.secretSyncControllerName` equals this are handled.
    #[arg(long, env = "KEYMOUNT_SECRET_SYNC_CONTROLLER_NAME", default_value = "")]
    pub(crate) secret_sync_controller_name: String,

    /// SecretSyncs synced at once.
    #[arg(long, env = "KEYMOUNT_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) concurrency: u16,

    /// Longest wait after repeated failures of one SecretSync (the first retry is after 5s,
    /// doubling, with jitter).
    #[arg(long, env = "KEYMOUNT_MAX_BACKOFF", default_value = "5m", value_parser = humantime::parse_duration)]
    pub(crate) max_backoff: Duration,

    #[command(flatten)]
    pub(crate) restart: super::restart::RestartFlags,

    /// How long shutdown waits for syncs in flight after SIGTERM before the Lease is released.
    #[arg(long, env = "KEYMOUNT_SHUTDOWN_GRACE_PERIOD", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) shutdown_grace_period: Duration,
}
