//! The one address policy every connection the operator or a chunk worker makes passes: HTTP(S)
//! sources and S3 endpoints alike. Cloud metadata services are always refused (they hand out
//! credentials); loopback, link-local and unspecified addresses and the operator's own pod address
//! only when the admin's allowlist opens them; the admin's denylist (private ranges, the Service
//! CIDR) always wins. A hostname is resolved once, checked, and connected to at exactly the checked
//! addresses; an address written in a URL is checked before any connection.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use url::Url;

/// Cloud metadata services: AWS (IMDS, ECS task and EKS Pod Identity agents, over IPv4 and IPv6),
/// GCP, Azure and Oracle share 169.254.169.254; Alibaba Cloud; Azure's WireServer.
const METADATA: [IpAddr; 7] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
];

/// Which addresses outbound connections may reach.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Opens loopback, link-local, unspecified and own addresses inside these CIDRs.
    pub allowed: Vec<IpNet>,
    /// Always refused, whatever `allowed` says.
    pub denied: Vec<IpNet>,
    /// The operator's own pod addresses.
    pub own: Vec<IpAddr>,
}

/// Why an address is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A cloud metadata service (it hands out credentials): never allowed.
    Metadata,
    /// Inside this range of the admin's denylist: never allowed.
    Denied(IpNet),
    /// One of the operator's own pod addresses.
    Own,
    /// A loopback address (`127.0.0.0/8`, `::1`).
    Loopback,
    /// A link-local address (`169.254.0.0/16`, `fe80::/10`).
    LinkLocal,
    /// The unspecified address (`0.0.0.0`, `::`).
    Unspecified,
    /// A multicast address.
    Multicast,
    /// The IPv4 broadcast address, `255.255.255.255`.
    Broadcast,
}

impl Refusal {
    /// Whether the admin's allowlist could open it.
    pub fn allowable(self) -> bool {
        !matches!(self, Refusal::Metadata | Refusal::Denied(_))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Metadata => f.write_str("a cloud metadata address"),
            Refusal::Denied(net) => write!(f, "in the denied range {net}"),
            Refusal::Own => f.write_str("the operator's own address"),
            Refusal::Loopback => f.write_str("a loopback address"),
            Refusal::LinkLocal => f.write_str("a link-local address"),
            Refusal::Unspecified => f.write_str("an unspecified address"),
            Refusal::Multicast => f.write_str("a multicast address"),
            Refusal::Broadcast => f.write_str("a broadcast address"),
        }
    }
}

/// The IPv4 address an IPv6 address carries, in the forms that reach it: IPv4-mapped
/// (`::ffff:0:0/96`), IPv4-compatible (`::/96`), NAT64 (`64:ff9b::/96`) and 6to4 (`2002::/16`).
fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let low =
        |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0, 0, hi, lo]
        | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

impl AddressPolicy {
    /// Why `ip` may not be connected to, or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<Refusal> {
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        std::iter::once(ip)
            .chain(embedded)
            .find_map(|candidate| self.refusal_of(candidate))
    }

    fn refusal_of(&self, ip: IpAddr) -> Option<Refusal> {
        if METADATA.contains(&ip) {
            return Some(Refusal::Metadata);
        }
        if let Some(net) = self.denied.iter().find(|net| net.contains(&ip)) {
            return Some(Refusal::Denied(*net));
        }
        let refusal = match ip {
            _ if self.own.contains(&ip) => Refusal::Own,
            _ if ip.is_loopback() => Refusal::Loopback,
            _ if ip.is_unspecified() => Refusal::Unspecified,
            _ if ip.is_multicast() => Refusal::Multicast,
            IpAddr::V4(v4) if v4.is_link_local() => Refusal::LinkLocal,
            IpAddr::V4(v4) if v4.is_broadcast() => Refusal::Broadcast,
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Refusal::LinkLocal,
            _ => return None,
        };
        match self.allowed.iter().any(|net| net.contains(&ip)) {
            true => None,
            false => Some(refusal),
        }
    }

    /// Checks a URL without any network access: an http(s) scheme, a host, and the host's address
    /// when the URL names one (hostnames are checked when they are resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), UrlRefused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(UrlRefused::Scheme(url.scheme().to_string()));
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err(UrlRefused::NoHost),
        };
        match self.refusal(ip) {
            Some(why) => Err(UrlRefused::Address(ForbiddenAddress {
                host: url.host_str().unwrap_or_default().to_string(),
                ip,
                why,
            })),
            None => Ok(()),
        }
    }

    /// Resolves `host` and returns its addresses, or the first one the policy refuses.
    pub async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0))
            .await
            .map_err(ResolveError::Lookup)?
            .collect();
        for addr in &addrs {
            if let Some(why) = self.refusal(addr.ip()) {
                return Err(ResolveError::Forbidden(ForbiddenAddress {
                    host: host.to_string(),
                    ip: addr.ip(),
                    why,
                }));
            }
        }
        Ok(addrs.into_iter().map(|a| a.ip()).collect())
    }
}

/// A connection the policy refuses; found again by walking an error's sources.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ForbiddenAddress {
    /// The host as the URL or the lookup named it.
    pub host: String,
    /// The address it is, or resolved to.
    pub ip: IpAddr,
    /// Why the policy refuses that address.
    pub why: Refusal,
}

impl fmt::Display for ForbiddenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} resolves to {}, {}, which s3flow may not connect to",
            self.host, self.ip, self.why
        )?;
        if self.why.allowable() {
            f.write_str(" (an admin can allow it with --allow-cidr)")?;
        }
        Ok(())
    }
}

impl ForbiddenAddress {
    /// The refusal somewhere in `error`'s chain of sources.
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<ForbiddenAddress> {
        let mut source = Some(error);
        while let Some(e) = source {
            if let Some(forbidden) = e.downcast_ref::<ForbiddenAddress>() {
                return Some(forbidden.clone());
            }
            source = e.source();
        }
        None
    }
}

/// Why a URL is refused before any connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    /// The scheme is neither http nor https (the scheme given).
    #[error("only http and https URLs are allowed, not {0}")]
    Scheme(String),
    /// The URL names no host.
    #[error("the URL has no host")]
    NoHost,
    /// The URL's host is an address the policy refuses.
    #[error(transparent)]
    Address(ForbiddenAddress),
}

/// A failed lookup.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The host resolves to an address the policy refuses.
    #[error(transparent)]
    Forbidden(ForbiddenAddress),
    /// The name could not be resolved.
    #[error("looking up the host: {0}")]
    Lookup(std::io::Error),
}

/// Hands reqwest only addresses the policy allows (HTTP(S) sources).
pub struct SourceResolver(pub Arc<AddressPolicy>);

impl reqwest::dns::Resolve for SourceResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            match policy.resolve(name.as_str()).await {
                Ok(ips) => Ok(Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)))
                    as reqwest::dns::Addrs),
                Err(ResolveError::Forbidden(forbidden)) => Err(Box::new(forbidden) as _),
                Err(ResolveError::Lookup(e)) => Err(Box::new(e) as _),
            }
        })
    }
}

/// Hands the S3 client only addresses the policy allows.
#[derive(Clone, Debug)]
pub struct S3Resolver(pub Arc<AddressPolicy>);

impl aws_smithy_runtime_api::client::dns::ResolveDns for S3Resolver {
    fn resolve_dns<'a>(
        &'a self,
        name: &'a str,
    ) -> aws_smithy_runtime_api::client::dns::DnsFuture<'a> {
        use aws_smithy_runtime_api::client::dns::{DnsFuture, ResolveDnsError};
        DnsFuture::new(async move {
            self.0.resolve(name).await.map_err(|e| match e {
                ResolveError::Forbidden(forbidden) => ResolveDnsError::new(forbidden),
                ResolveError::Lookup(e) => ResolveDnsError::new(e),
            })
        })
    }
}

/// Flags and environment the policy travels in (operator flags, chunk-worker environment).
impl AddressPolicy {
    /// `allow=a,b;deny=c;own=d`: the policy as one environment value for chunk workers.
    pub fn to_env(&self) -> String {
        let join = |items: Vec<String>| items.join(",");
        format!(
            "allow={};deny={};own={}",
            join(self.allowed.iter().map(ToString::to_string).collect()),
            join(self.denied.iter().map(ToString::to_string).collect()),
            join(self.own.iter().map(ToString::to_string).collect()),
        )
    }

    /// Reads [`AddressPolicy::to_env`]'s form.
    pub fn from_env(text: &str) -> Result<AddressPolicy, String> {
        let mut policy = AddressPolicy::default();
        for part in text.split(';').filter(|p| !p.is_empty()) {
            let (key, values) = part
                .split_once('=')
                .ok_or_else(|| format!("{part:?} is not key=values"))?;
            let values = values.split(',').filter(|v| !v.is_empty());
            let bad = |v: &str| format!("{v:?} in {key} is not an address or CIDR");
            match key {
                "allow" => {
                    for v in values {
                        policy.allowed.push(v.parse().map_err(|_| bad(v))?);
                    }
                }
                "deny" => {
                    for v in values {
                        policy.denied.push(v.parse().map_err(|_| bad(v))?);
                    }
                }
                "own" => {
                    for v in values {
                        policy.own.push(v.parse().map_err(|_| bad(v))?);
                    }
                }
                _ => return Err(format!("unknown key {key:?} in the address policy")),
            }
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn refuses_local_and_metadata_addresses_by_default() {
        let policy = AddressPolicy::default();
        for (address, want) in [
            ("127.0.0.1", Some(Refusal::Loopback)),
            ("127.8.9.10", Some(Refusal::Loopback)),
            ("::1", Some(Refusal::Loopback)),
            ("::ffff:127.0.0.1", Some(Refusal::Loopback)),
            ("0.0.0.0", Some(Refusal::Unspecified)),
            ("::", Some(Refusal::Unspecified)),
            ("169.254.1.1", Some(Refusal::LinkLocal)),
            ("fe80::1", Some(Refusal::LinkLocal)),
            ("255.255.255.255", Some(Refusal::Broadcast)),
            ("224.0.0.1", Some(Refusal::Multicast)),
            ("10.0.0.5", None),
            ("192.168.1.1", None),
            ("93.184.216.34", None),
            ("2606:2800:220:1::", None),
            ("fd00:ec2::253", None),
        ] {
            assert_eq!(policy.refusal(ip(address)), want, "{address}");
        }
    }

    #[test]
    fn metadata_addresses_are_refused_in_every_form_whatever_the_allowlist() {
        let everything = AddressPolicy {
            allowed: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
            ..Default::default()
        };
        for address in [
            "169.254.169.254",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::254",
            "fd00:ec2::23",
            "100.100.100.200",
            "168.63.129.16",
            // The same IPv4 addresses carried by IPv6 forms that reach them.
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            "::ffff:100.100.100.200",
            "64:ff9b::a83f:8110",
        ] {
            assert_eq!(
                everything.refusal(ip(address)),
                Some(Refusal::Metadata),
                "{address}"
            );
        }
        assert_eq!(everything.refusal(ip("169.254.1.1")), None);
        assert_eq!(everything.refusal(ip("127.0.0.1")), None);
    }

    #[test]
    fn embedded_loopback_is_loopback() {
        let policy = AddressPolicy::default();
        for address in [
            "::ffff:127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "::127.0.0.2",
        ] {
            assert_eq!(
                policy.refusal(ip(address)),
                Some(Refusal::Loopback),
                "{address}"
            );
        }
    }

    #[test]
    fn the_allowlist_opens_only_its_cidrs_and_the_denylist_wins() {
        let policy = AddressPolicy {
            allowed: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.0.0.0/8".parse().unwrap(),
            ],
            denied: vec!["10.96.0.0/12".parse().unwrap()],
            own: vec![ip("127.0.0.77"), ip("10.1.2.3")],
        };
        assert_eq!(policy.refusal(ip("127.0.0.1")), None);
        assert_eq!(policy.refusal(ip("127.0.0.2")), Some(Refusal::Loopback));
        assert_eq!(policy.refusal(ip("127.0.0.77")), Some(Refusal::Own));
        // An own address inside an allowed CIDR is allowed: the admin said so.
        assert_eq!(policy.refusal(ip("10.1.2.3")), None);
        assert_eq!(
            policy.refusal(ip("10.96.0.1")),
            Some(Refusal::Denied("10.96.0.0/12".parse().unwrap()))
        );
        assert_eq!(
            policy.refusal(ip("::ffff:10.96.0.10")),
            Some(Refusal::Denied("10.96.0.0/12".parse().unwrap()))
        );
        // A private address that no rule names is allowed (deny it explicitly to close it).
        assert_eq!(policy.refusal(ip("192.168.1.1")), None);
    }

    #[test]
    fn urls_are_checked_by_scheme_host_and_address() {
        let policy = AddressPolicy::default();
        let check = |text: &str| policy.check_url(&Url::parse(text).unwrap());
        assert_eq!(check("https://s3.example.com/b"), Ok(()));
        assert_eq!(check("http://93.184.216.34:9000"), Ok(()));
        assert_eq!(
            check("ftp://example.com/x"),
            Err(UrlRefused::Scheme("ftp".into()))
        );
        assert!(matches!(
            check("http://127.0.0.1:9000"),
            Err(UrlRefused::Address(ForbiddenAddress {
                why: Refusal::Loopback,
                ..
            }))
        ));
        assert!(matches!(
            check("http://[::ffff:a9fe:a9fe]/latest/meta-data"),
            Err(UrlRefused::Address(ForbiddenAddress {
                why: Refusal::Metadata,
                ..
            }))
        ));
        assert!(matches!(
            check("http://169.254.169.254/latest"),
            Err(UrlRefused::Address(ForbiddenAddress {
                why: Refusal::Metadata,
                ..
            }))
        ));
    }

    #[test]
    fn the_policy_travels_through_the_environment() {
        let policy = AddressPolicy {
            allowed: vec!["127.0.0.1/32".parse().unwrap(), "::1/128".parse().unwrap()],
            denied: vec!["10.96.0.0/12".parse().unwrap()],
            own: vec![ip("10.1.2.3")],
        };
        assert_eq!(AddressPolicy::from_env(&policy.to_env()), Ok(policy));
        assert_eq!(AddressPolicy::from_env(""), Ok(AddressPolicy::default()));
        assert!(AddressPolicy::from_env("allow=nope").is_err());
        assert!(AddressPolicy::from_env("other=1.2.3.4").is_err());
    }

    #[tokio::test]
    async fn resolving_refuses_a_name_with_any_refused_address() {
        let policy = AddressPolicy::default();
        assert!(matches!(
            policy.resolve("localhost").await,
            Err(ResolveError::Forbidden(ForbiddenAddress {
                why: Refusal::Loopback,
                ..
            }))
        ));
        let open = AddressPolicy {
            allowed: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            ..Default::default()
        };
        assert!(open.resolve("localhost").await.is_ok());
    }
}
