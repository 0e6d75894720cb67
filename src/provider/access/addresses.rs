//! Where a class may make the node connect (`--allowed-store-addresses`): `unix://` sockets
//! only when listed; HTTP(S) hosts checked on the addresses they resolve to, inside the DNS
//! resolver of the HTTP client (no check-then-resolve race), so loopback, link-local (the
//! cloud metadata endpoint), unspecified and multicast addresses are refused unless the admin
//! lists them.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An address range, `10.0.0.0/8` or `fe80::/10`; a plain address is a full-length prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (
                text.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()?,
                None,
            ),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Self { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Cloud metadata endpoints outside the link-local range: AWS's IPv6 range `fd00:ec2::/32`
/// (IMDS and the Pod Identity agent), GCP's IPv6 `fd20:ce::254`, Alibaba's `100.100.100.200`.
const METADATA: [(IpAddr, u8); 3] = [
    (
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0)),
        32,
    ),
    (
        IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)),
        128,
    ),
    (IpAddr::V4(std::net::Ipv4Addr::new(100, 100, 100, 200)), 32),
];

/// Addresses never reached unless listed: this host (loopback, unspecified, `0.0.0.0/8`),
/// link-local (169.254.169.254 and the EKS Pod Identity agent 169.254.170.23 live there),
/// multicast, broadcast, and the [`METADATA`] endpoints.
pub(crate) fn is_special(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    let this_host_or_local = match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.octets()[0] == 0
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
        }
    };
    this_host_or_local
        || METADATA
            .iter()
            .any(|&(addr, prefix)| Net { addr, prefix }.contains(ip))
}

/// Why an address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddressError {
    #[error(
        "unix socket {0:?} is not one this node allows (keymount node --allowed-store-addresses)"
    )]
    Socket(PathBuf),
    #[error("{0:?} is not an http://, https:// or unix:// address with a host")]
    Malformed(String),
    #[error(
        "{host} is not an address this node allows (keymount node --allowed-store-addresses; \
         loopback, link-local and metadata addresses need an explicit entry)"
    )]
    Refused { host: String },
    #[error(
        "{host} resolves only to addresses this node refuses (keymount node \
         --allowed-store-addresses; loopback, link-local and metadata addresses need an \
         explicit entry)"
    )]
    ResolvesRefused { host: String },
    #[error("could not resolve {host}: {reason}")]
    Lookup { host: String, reason: String },
}

/// The admin's list of addresses a class may name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedAddresses {
    sockets: Vec<PathBuf>,
    /// Lower-case names; `*.example.com` matches any name under example.com.
    hosts: Vec<String>,
    nets: Vec<Net>,
    /// Any address that is not [`is_special`] (the default when no host or range is listed).
    public: bool,
}

impl Default for AllowedAddresses {
    /// No entry: any address but the special ones (`public`).
    fn default() -> Self {
        Self {
            sockets: Vec::new(),
            hosts: Vec::new(),
            nets: Vec::new(),
            public: true,
        }
    }
}

/// How a checked address is to be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// A listed name: whatever it resolves to is allowed.
    Listed,
    /// Every resolved address is checked by the client's resolver.
    Resolve,
}

impl AllowedAddresses {
    /// Parses the comma-separated flag entries: `public`, an IP, a CIDR, a host name,
    /// `*.domain`, or `unix:///path/to.sock`.
    pub(crate) fn new(entries: &[String]) -> Result<Self, String> {
        let mut out = Self {
            public: false,
            ..Self::default()
        };
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            if let Some(path) = entry.strip_prefix("unix://") {
                if !path.starts_with('/') {
                    return Err(format!(
                        "--allowed-store-addresses: {entry:?} must name an absolute socket path"
                    ));
                }
                out.sockets.push(PathBuf::from(path));
            } else if entry.eq_ignore_ascii_case("public") {
                out.public = true;
            } else if let Some(net) = Net::parse(entry) {
                out.nets.push(net);
            } else if entry.contains('/') {
                return Err(format!(
                    "--allowed-store-addresses: {entry:?} is not an IP range like 10.0.0.0/8"
                ));
            } else {
                let host = entry.to_ascii_lowercase();
                let name = host.strip_prefix("*.").unwrap_or(&host);
                if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    return Err(format!(
                        "--allowed-store-addresses: {entry:?} is not a host name, IP, range, \
                         `public` or unix:// socket"
                    ));
                }
                out.hosts.push(host);
            }
        }
        if out.hosts.is_empty() && out.nets.is_empty() {
            out.public = true;
        }
        Ok(out)
    }

    /// True if `ip` may be connected to.
    pub(crate) fn ip_allowed(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip)) || (self.public && !is_special(ip))
    }

    fn host_listed(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.hosts
            .iter()
            .any(|entry| match entry.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                None => *entry == host,
            })
    }

    /// True if the unix socket `path` is listed.
    pub(crate) fn socket_allowed(&self, path: &Path) -> bool {
        self.sockets.iter().any(|s| s == path)
    }

    /// Checks an `http(s)://` or `unix://` address before anything is resolved or
    /// connected: sockets and IP literals here, names in [`CheckedResolver`].
    pub(crate) fn check(&self, address: &str) -> Result<Reach, AddressError> {
        if let Some(path) = address.strip_prefix("unix://") {
            let path = Path::new(path);
            return if self.socket_allowed(path) {
                Ok(Reach::Listed)
            } else {
                Err(AddressError::Socket(path.to_owned()))
            };
        }
        let url = reqwest::Url::parse(address)
            .map_err(|_| AddressError::Malformed(address.to_owned()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AddressError::Malformed(address.to_owned()));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| AddressError::Malformed(address.to_owned()))?;
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return if self.ip_allowed(ip) {
                Ok(Reach::Listed)
            } else {
                Err(AddressError::Refused {
                    host: host.to_owned(),
                })
            };
        }
        if self.host_listed(host) {
            Ok(Reach::Listed)
        } else {
            Ok(Reach::Resolve)
        }
    }
}

/// A DNS resolver that hands the HTTP client only allowed addresses: the connection is made
/// to exactly what was checked.
#[derive(Debug, Clone)]
pub(crate) struct CheckedResolver {
    allowed: Arc<AllowedAddresses>,
}

impl CheckedResolver {
    pub(crate) fn new(allowed: Arc<AllowedAddresses>) -> Self {
        Self { allowed }
    }

    /// The allowed addresses of `host` (the system resolver, then the filter).
    pub(crate) async fn resolve_allowed(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, AddressError> {
        let all: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| AddressError::Lookup {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if self.allowed.host_listed(host) {
            return Ok(all);
        }
        let kept: Vec<SocketAddr> = all
            .into_iter()
            .filter(|a| self.allowed.ip_allowed(a.ip()))
            .collect();
        if kept.is_empty() {
            return Err(AddressError::ResolvesRefused {
                host: host.to_owned(),
            });
        }
        Ok(kept)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let this = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            match this.resolve_allowed(&host).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(error) => Err(Box::new(error) as BoxError),
            }
        })
    }
}

/// The refusal inside a failed request's error chain, if the resolver refused.
pub(crate) fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<AddressError> {
    crate::text::causes(error)
        .filter_map(|e| e.downcast_ref::<AddressError>())
        .find(|refused| !matches!(refused, AddressError::Lookup { .. }))
        .cloned()
}

#[cfg(test)]
#[path = "addresses_tests.rs"]
mod tests;
