//! Command-line interface. Every flag is also an environment variable; doc comments are the
//! `--help` text. Flag names follow the upstream driver where they mean the same thing. The
//! commands (`cmd`) take these types; nothing here runs anything.

mod controller;
mod node;
mod providers;
mod restart;
mod tools;

use clap::{Parser, Subcommand};

pub use self::controller::ControllerArgs;
pub use self::node::NodeArgs;
pub(crate) use self::tools::{CrdApi, CsiAction, PublishArgs};
pub use self::tools::{CrdArgs, CsiArgs, FetchArgs};
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

    /// The role to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The roles of the binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the CSI node plugin (the DaemonSet role).
    Node(Box<NodeArgs>),
    /// Keep Kubernetes Secrets of SecretSync objects fresh, without any mount (the Deployment role).
    Controller(Box<ControllerArgs>),
    /// A small CSI client for any node plugin socket (publish, unpublish, info).
    Csi(Box<CsiArgs>),
    /// Publish one SecretProviderClass into a directory once, without CSI.
    Fetch(Box<FetchArgs>),
    /// Print the CRDs (YAML): SecretProviderClass and SecretProviderClassPodStatus, or SecretSync.
    Crd(CrdArgs),
}

impl Cli {
    /// The async runtime's worker threads the role asks for; `None`: tokio's default (one per
    /// CPU), for the short-lived tools.
    pub fn worker_threads(&self) -> Option<usize> {
        match &self.command {
            Command::Node(args) => Some(usize::from(args.worker_threads)),
            Command::Controller(_) => Some(2),
            Command::Csi(_) | Command::Fetch(_) | Command::Crd(_) => None,
        }
    }
}

/// Parses `1048576`, `16M`, `16Mi`, `1G`, `512k`, ...
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
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
    use std::path::PathBuf;
    use std::time::Duration;

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
        assert_eq!(args.providers.max_call_recv_msg_size, 4194304);
        assert_eq!(
            args.providers.provider_dirs(),
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
            args.providers.access.allowed_file_dirs.is_empty()
                && args.providers.access.allowed_store_addresses.is_empty()
                && args
                    .providers
                    .access
                    .allow_volume_attribute_overrides
                    .is_empty(),
            "no file parameters, default addresses, no overrides unless the admin lists them"
        );
    }

    #[test]
    fn the_node_runs_on_two_worker_threads_unless_told_and_never_on_none() {
        let parse = |extra: &[&str]| {
            let args = ["keymount", "node", "--nodeid", "n1"].iter().chain(extra);
            Cli::try_parse_from(args.copied())
        };
        assert_eq!(parse(&[]).unwrap().worker_threads(), Some(2));
        assert_eq!(
            parse(&["--worker-threads", "1"]).unwrap().worker_threads(),
            Some(1)
        );
        for bad in ["0", "65", "-1", "two"] {
            assert!(
                parse(&["--worker-threads", bad]).is_err(),
                "--worker-threads {bad} is refused"
            );
        }
        let crd = Cli::try_parse_from(["keymount", "crd"]).unwrap();
        assert_eq!(crd.worker_threads(), None, "the tools keep tokio's default");
    }

    #[test]
    fn fetch_takes_the_provider_defaults_of_the_node() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let node = Cli::try_parse_from(["keymount", "node", "--nodeid", "n1"]).unwrap();
        let fetch =
            Cli::try_parse_from(["keymount", "fetch", "--class", "c.yaml", "--out", "o"]).unwrap();
        let (Command::Node(node), Command::Fetch(fetch)) = (node.command, fetch.command) else {
            panic!("expected node and fetch");
        };
        let (n, f) = (&node.providers, &fetch.providers);
        assert_eq!(f.provider_dirs(), n.provider_dirs());
        assert_eq!(f.max_call_recv_msg_size, n.max_call_recv_msg_size);
        assert_eq!(f.tmpfs_size, n.tmpfs_size);
        assert_eq!(f.provider_timeout, n.provider_timeout);
        assert_eq!(f.hmac_key_file, n.hmac_key_file);
        assert_eq!(f.builtin_providers, n.builtin_providers);
        let settings = node.builtin_settings();
        assert_eq!(settings.node_id, "n1");
        assert_eq!(settings.lookup_ttl, node.api_cache_ttl);
        assert_eq!(settings.max_response_bytes, n.max_call_recv_msg_size);
    }
}
