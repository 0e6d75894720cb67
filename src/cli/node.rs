//! Flags of `keymount node`, the DaemonSet role.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::providers::ProviderFlags;
use crate::provider::builtin::BuiltinSettings;

/// Flags of `keymount node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// CSI endpoint to serve (unix socket).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub(crate) endpoint: String,

    /// CSI driver name.
    #[arg(
        long = "drivername",
        env = "KEYMOUNT_DRIVER_NAME",
        default_value = "secrets-store.csi.k8s.io"
    )]
    pub(crate) driver_name: String,

    /// This node's name (pod status objects are labelled with it).
    #[arg(long = "nodeid", env = "NODE_NAME")]
    pub(crate) node_id: String,

    #[command(flatten)]
    pub(crate) providers: ProviderFlags,

    /// Address of the metrics and health HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "KEYMOUNT_METRICS_ADDR", default_value = ":8095")]
    pub(crate) metrics_addr: String,

    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub(crate) kubeconfig: Option<PathBuf>,

    /// Local mode: read SecretProviderClass manifests from this directory instead of the API
    /// server (no pod status objects are written).
    #[arg(long, env = "KEYMOUNT_CLASS_DIR")]
    pub(crate) class_dir: Option<PathBuf>,

    /// kubelet's root directory (its `--root-dir`). keymount publishes and unpublishes only
    /// at `<dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount`, with no symlink
    /// below `<dir>`; any other target path is refused with INVALID_ARGUMENT.
    #[arg(long, env = "KEYMOUNT_KUBELET_ROOT_DIR", default_value = crate::mount::target::DEFAULT_KUBELET_ROOT, value_parser = parse_kubelet_root)]
    pub(crate) kubelet_root_dir: crate::mount::KubeletRoot,

    /// Directory of the volume state journal (metadata only), kept across restarts. Defaults
    /// to `state/` beside the CSI socket.
    #[arg(long, env = "KEYMOUNT_STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// How long a SecretProviderClass or ServiceAccount read from the API server is reused
    /// before the next volume that needs it reads it again (`0s`: share only concurrent reads).
    /// A node reads only what its own pods use; no cluster-wide watch.
    #[arg(long, env = "KEYMOUNT_API_CACHE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub(crate) api_cache_ttl: Duration,

    /// Register with kubelet by serving its plugin registration API on
    /// `<kubelet-root-dir>/plugins_registry/<drivername>-reg.sock`, instead of the
    /// node-driver-registrar sidecar (do not use both).
    #[arg(long, env = "KEYMOUNT_REGISTER_WITH_KUBELET", default_value_t = false)]
    pub(crate) register_with_kubelet: bool,

    /// The CSI socket as kubelet on the host sees it, told to kubelet at registration
    /// (default: the --endpoint socket if it is below --kubelet-root-dir, else
    /// `<kubelet-root-dir>/plugins/csi-secrets-store/<socket name>`).
    #[arg(long, env = "KEYMOUNT_KUBELET_REGISTRATION_PATH")]
    pub(crate) kubelet_registration_path: Option<PathBuf>,

    /// How often the registration socket is checked and made again if it disappeared.
    #[arg(long, env = "KEYMOUNT_REGISTRATION_CHECK_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) registration_check_interval: Duration,

    /// Fetch again on kubelet's periodic republish (needs `requiresRepublish: true`).
    #[arg(long, env = "KEYMOUNT_ENABLE_SECRET_ROTATION", default_value_t = false)]
    pub(crate) enable_secret_rotation: bool,

    /// Least time between two fetches of one volume (e.g. `2m`, `1h`).
    #[arg(long, env = "KEYMOUNT_ROTATION_POLL_INTERVAL", default_value = "2m", value_parser = humantime::parse_duration)]
    pub(crate) rotation_poll_interval: Duration,

    /// For kubelets that do not pass the pod's fsGroup to the driver (before 1.22, or 1.22
    /// without the DelegateFSGroupToCSIDriver gate): read the pod's
    /// `spec.securityContext.fsGroup` with one GET at each volume's first publish and give
    /// its files to that group (needs `get` on pods). Not needed from kubelet 1.23, which
    /// sends it in the publish itself.
    #[arg(long, env = "KEYMOUNT_FS_GROUP_FROM_POD", default_value_t = false)]
    pub(crate) fs_group_from_pod: bool,

    /// Mirror each class's `secretObjects` into Kubernetes Secrets in the pod's namespace
    /// after every mount and rotation (needs RBAC for Secrets and Pods; off as upstream).
    #[arg(long, env = "KEYMOUNT_ENABLE_SECRET_SYNC", default_value_t = false)]
    pub(crate) enable_secret_sync: bool,

    #[command(flatten)]
    pub(crate) restart: super::restart::RestartFlags,

    /// On SIGTERM: how long calls in flight may take to finish before the process exits.
    #[arg(long, env = "KEYMOUNT_SHUTDOWN_GRACE_PERIOD", default_value = "20s", value_parser = humantime::parse_duration)]
    pub(crate) shutdown_grace_period: Duration,

    /// Threads that run the node's calls (the async runtime's workers; the file system steps
    /// that may sleep in the kernel run on a pool of their own). A node plugin needs few
    /// whatever the size of the node: 1 spends the least CPU per publish, 2 keeps /healthz
    /// and the other calls answering while one call holds a thread.
    #[arg(long, env = "KEYMOUNT_WORKER_THREADS", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) worker_threads: u16,
}

impl NodeArgs {
    /// The built-in providers' settings: this node's name, and API server reads kept for
    /// `--api-cache-ttl`.
    pub(crate) fn builtin_settings(&self) -> BuiltinSettings {
        self.providers
            .builtin_settings(&self.node_id, self.api_cache_ttl)
    }
}

/// An absolute, clean directory.
fn parse_kubelet_root(text: &str) -> Result<crate::mount::KubeletRoot, String> {
    crate::mount::KubeletRoot::new(text)
}
