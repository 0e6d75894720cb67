//! What tenant input (SecretProviderClass parameters, a pod's `volumeAttributes`) may make the
//! node reach: files beneath admin-listed directories, admin-allowed store addresses, and the
//! class parameters a pod may override. The admin sets all three with `keymount node` flags.

pub(crate) mod addresses;
pub(crate) mod files;
pub(crate) mod overrides;

use std::path::PathBuf;
use std::sync::Arc;

pub(crate) use addresses::{AllowedAddresses, CheckedResolver};
pub(crate) use files::AllowedDirs;
pub(crate) use overrides::OverrideError;
pub use overrides::OverridePolicy;

/// The admin's limits on tenant input (flags of `keymount node` and `keymount fetch`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AccessArgs {
    /// Directories beneath which class parameters may name node files (`vaultCACertPath`,
    /// `vaultCADirectory`, `vaultTLSClientCertPath`, `vaultTLSClientKeyPath`), comma-separated.
    /// Empty: no class may name a node file.
    #[arg(long, env = "KEYMOUNT_ALLOWED_FILE_DIRS", value_delimiter = ',')]
    pub allowed_file_dirs: Vec<PathBuf>,

    /// Secret-store addresses a class may name, comma-separated: `public` (any address but
    /// loopback, link-local, metadata, unspecified and multicast), an IP, a CIDR, a host name,
    /// `*.domain`, or `unix:///path.sock`. Without a host or range entry: `public`.
    #[arg(long, env = "KEYMOUNT_ALLOWED_STORE_ADDRESSES", value_delimiter = ',')]
    pub allowed_store_addresses: Vec<String>,

    /// Security-relevant class parameters a pod's volumeAttributes may override,
    /// comma-separated (e.g. `roleName,vaultNamespace`), or `*` for all (upstream's behaviour).
    /// Empty: they come from the class only.
    #[arg(
        long,
        env = "KEYMOUNT_ALLOW_VOLUME_ATTRIBUTE_OVERRIDES",
        value_delimiter = ','
    )]
    pub allow_volume_attribute_overrides: Vec<String>,
}

/// The limits, parsed: shared by the built-in providers.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub(crate) files: AllowedDirs,
    pub(crate) addresses: Arc<AllowedAddresses>,
}

impl Access {
    /// Parses the flags (the override list is read by the volume service, see
    /// [`OverridePolicy`]).
    pub fn from_args(args: &AccessArgs) -> Result<Self, String> {
        Ok(Self {
            files: AllowedDirs::new(&args.allowed_file_dirs)?,
            addresses: Arc::new(AllowedAddresses::new(&args.allowed_store_addresses)?),
        })
    }
}
