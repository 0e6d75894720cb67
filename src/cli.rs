//! Command-line interface. Every flag is also an environment variable; doc comments are the
//! `--help` text. Flag names follow the upstream driver where they mean the same thing.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::telemetry::LogFormat;

/// keymount: a node-level CSI secrets driver for Kubernetes (drop-in for secrets-store.csi.k8s.io).
#[derive(Debug, Parser)]
#[command(name = "keymount", version, about)]
pub struct Cli {
    /// Log line format.
    #[arg(
        long,
        env = "KEYMOUNT_LOG_FORMAT",
        value_enum,
        default_value = "plain",
        global = true
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CSI node plugin (the DaemonSet role).
    Node(Box<NodeArgs>),
    /// A small CSI client for any node plugin socket (publish, unpublish, info).
    Csi(Box<crate::cmd::csi_client::CsiArgs>),
    /// Publish one SecretProviderClass into a directory once, without CSI.
    Fetch(Box<crate::cmd::fetch::FetchArgs>),
    /// Print the SecretProviderClass and SecretProviderClassPodStatus CRDs (YAML).
    Crd(crate::cmd::crd::CrdArgs),
}

/// Flags of `keymount node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// CSI endpoint to serve (unix socket).
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    pub endpoint: String,

    /// CSI driver name.
    #[arg(
        long = "drivername",
        env = "KEYMOUNT_DRIVER_NAME",
        default_value = "secrets-store.csi.k8s.io"
    )]
    pub driver_name: String,

    /// This node's name (pod status objects are labelled with it).
    #[arg(long = "nodeid", env = "NODE_NAME")]
    pub node_id: String,

    /// Primary directory of external provider plugin sockets (`<dir>/<provider>.sock`).
    #[arg(
        long,
        env = "KEYMOUNT_PROVIDER_VOLUME",
        default_value = "/var/run/secrets-store-csi-providers"
    )]
    pub provider_volume: PathBuf,

    /// More provider socket directories, comma-separated, searched before the primary one.
    #[arg(
        long,
        env = "KEYMOUNT_ADDITIONAL_PROVIDER_VOLUME_PATHS",
        value_delimiter = ',',
        default_value = "/etc/kubernetes/secrets-store-csi-providers"
    )]
    pub additional_provider_volume_paths: Vec<PathBuf>,

    /// Largest provider answer accepted, in bytes: a plugin's gRPC message, and the body of
    /// any response of a built-in provider's store (read as a stream and refused past it).
    #[arg(long, env = "KEYMOUNT_MAX_CALL_RECV_MSG_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub max_call_recv_msg_size: usize,

    /// File holding the key (at least 32 bytes) of the object versions keymount derives from
    /// content (HMAC-SHA256). Without it: Secret `keymount-hmac-key` in keymount's namespace,
    /// created on first use; in local mode `hmac.key` in the state directory.
    #[arg(long, env = "KEYMOUNT_HMAC_KEY_FILE")]
    pub hmac_key_file: Option<PathBuf>,

    /// Largest set of files one volume accepts, in bytes as it takes on tmpfs (each file in
    /// whole pages); each volume's tmpfs is mounted at twice this, so a rotation always has
    /// room for the old and the new set (suffixes k, M, G, Ki, Mi, Gi allowed).
    #[arg(long, env = "KEYMOUNT_TMPFS_SIZE", default_value = "16Mi", value_parser = parse_size)]
    pub tmpfs_size: u64,

    /// Address of the metrics and health HTTP server (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "KEYMOUNT_METRICS_ADDR", default_value = ":8095")]
    pub metrics_addr: String,

    /// Kubeconfig to reach the API server; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Local mode: read SecretProviderClass manifests from this directory instead of the API
    /// server (no pod status objects are written).
    #[arg(long, env = "KEYMOUNT_CLASS_DIR")]
    pub class_dir: Option<PathBuf>,

    /// kubelet's root directory (its `--root-dir`). keymount publishes and unpublishes only
    /// at `<dir>/pods/<pod uid>/volumes/kubernetes.io~csi/<volume>/mount`, with no symlink
    /// below `<dir>`; any other target path is refused with INVALID_ARGUMENT.
    #[arg(long, env = "KEYMOUNT_KUBELET_ROOT_DIR", default_value = crate::mount::target::DEFAULT_KUBELET_ROOT, value_parser = parse_kubelet_root)]
    pub kubelet_root_dir: crate::mount::KubeletRoot,

    /// Directory of the volume state journal (metadata only), kept across restarts. Defaults
    /// to `state/` beside the CSI socket.
    #[arg(long, env = "KEYMOUNT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,

    /// Register with kubelet by serving its plugin registration API on
    /// `<kubelet-root-dir>/plugins_registry/<drivername>-reg.sock`, instead of the
    /// node-driver-registrar sidecar (do not use both).
    #[arg(long, env = "KEYMOUNT_REGISTER_WITH_KUBELET", default_value_t = false)]
    pub register_with_kubelet: bool,

    /// The CSI socket as kubelet on the host sees it, told to kubelet at registration
    /// (default: the --endpoint socket if it is below --kubelet-root-dir, else
    /// `<kubelet-root-dir>/plugins/csi-secrets-store/<socket name>`).
    #[arg(long, env = "KEYMOUNT_KUBELET_REGISTRATION_PATH")]
    pub kubelet_registration_path: Option<PathBuf>,

    /// How often the registration socket is checked and made again if it disappeared.
    #[arg(long, env = "KEYMOUNT_REGISTRATION_CHECK_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub registration_check_interval: Duration,

    /// Fetch again on kubelet's periodic republish (needs `requiresRepublish: true`).
    #[arg(long, env = "KEYMOUNT_ENABLE_SECRET_ROTATION", default_value_t = false)]
    pub enable_secret_rotation: bool,

    /// Least time between two fetches of one volume (e.g. `2m`, `1h`).
    #[arg(long, env = "KEYMOUNT_ROTATION_POLL_INTERVAL", default_value = "2m", value_parser = humantime::parse_duration)]
    pub rotation_poll_interval: Duration,

    /// Mirror each class's `secretObjects` into Kubernetes Secrets in the pod's namespace
    /// after every mount and rotation (needs RBAC for Secrets and Pods; off as upstream).
    #[arg(long, env = "KEYMOUNT_ENABLE_SECRET_SYNC", default_value_t = false)]
    pub enable_secret_sync: bool,

    /// Deadline for one provider call.
    #[arg(long, env = "KEYMOUNT_PROVIDER_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub provider_timeout: Duration,

    /// On SIGTERM: how long calls in flight may take to finish before the process exits.
    #[arg(long, env = "KEYMOUNT_SHUTDOWN_GRACE_PERIOD", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_grace_period: Duration,

    /// Built-in providers served in-process.
    #[arg(
        long,
        env = "KEYMOUNT_BUILTIN_PROVIDERS",
        value_delimiter = ',',
        default_value = "vault,aws"
    )]
    pub builtin_providers: Vec<String>,

    #[command(flatten)]
    pub access: crate::provider::access::AccessArgs,

    #[command(flatten)]
    pub vault: crate::provider::vault::VaultArgs,

    #[command(flatten)]
    pub aws: crate::provider::aws::AwsArgs,
}

impl NodeArgs {
    /// Provider socket directories in search order (additional ones first, as upstream).
    pub fn provider_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.additional_provider_volume_paths.clone();
        dirs.retain(|d| !d.as_os_str().is_empty());
        dirs.push(self.provider_volume.clone());
        dirs
    }
}

/// An absolute, clean directory.
fn parse_kubelet_root(text: &str) -> Result<crate::mount::KubeletRoot, String> {
    crate::mount::KubeletRoot::new(text)
}

/// Parses `1048576`, `16M`, `16Mi`, `1G`, `512k`, ...
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, suffix) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 16Mi"))?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "Ki" => 1 << 10,
        "M" => 1000 * 1000,
        "Mi" => 1 << 20,
        "G" => 1000 * 1000 * 1000,
        "Gi" => 1 << 30,
        _ => return Err(format!("{text:?}: unknown size suffix {suffix:?}")),
    };
    number
        .checked_mul(unit)
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("16Mi"), Ok(16 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("Mi").is_err());
    }

    #[test]
    fn node_flags_have_upstream_defaults() {
        let cli = Cli::try_parse_from(["keymount", "node", "--nodeid", "n1"]).unwrap();
        let Command::Node(args) = cli.command else {
            panic!("expected the node subcommand");
        };
        assert_eq!(args.endpoint, "unix:///csi/csi.sock");
        assert_eq!(args.driver_name, "secrets-store.csi.k8s.io");
        assert_eq!(args.max_call_recv_msg_size, 4194304);
        assert_eq!(
            args.provider_dirs(),
            vec![
                PathBuf::from("/etc/kubernetes/secrets-store-csi-providers"),
                PathBuf::from("/var/run/secrets-store-csi-providers")
            ]
        );
        assert_eq!(args.rotation_poll_interval, Duration::from_secs(120));
        assert_eq!(
            args.kubelet_root_dir.path(),
            std::path::Path::new("/var/lib/kubelet")
        );
        let relative = Cli::try_parse_from([
            "keymount",
            "node",
            "--nodeid",
            "n1",
            "--kubelet-root-dir",
            "var/lib/kubelet",
        ]);
        assert!(relative.is_err(), "a relative kubelet root is refused");
        assert!(
            !args.enable_secret_sync,
            "the Secret sync is off unless asked for"
        );
        assert!(
            args.access.allowed_file_dirs.is_empty()
                && args.access.allowed_store_addresses.is_empty()
                && args.access.allow_volume_attribute_overrides.is_empty(),
            "no file parameters, default addresses, no overrides unless the admin lists them"
        );
    }
}
