//! The SSRF guard: a source URL may not reach the operator's own host, link-local addresses or cloud
//! metadata services, unless an operator-level allowlist opens a CIDR. Every hostname is resolved
//! once, checked, and the connection goes to exactly the checked addresses; redirects are checked too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Which addresses a source may resolve to.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

/// Addresses of cloud metadata services outside the link-local range.
const METADATA: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

impl AddressPolicy {
    /// A policy that also allows the given CIDRs (the `--allow-source-cidr` flag).
    pub fn allowing(allowed: Vec<IpNet>) -> Self {
        Self { allowed }
    }

    /// Why `ip` is refused, or `None` when a source may connect to it.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        // Metadata services stay closed whatever the allowlist says: they hand out credentials.
        if METADATA.contains(&ip) || ip == IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)) {
            return Some("a cloud metadata address");
        }
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        match ip {
            _ if ip.is_loopback() => Some("a loopback address"),
            _ if ip.is_unspecified() => Some("an unspecified address"),
            _ if ip.is_multicast() => Some("a multicast address"),
            IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
            IpAddr::V4(v4) if v4.is_broadcast() => Some("a broadcast address"),
            IpAddr::V6(v6) if v6.is_unicast_link_local() => Some("a link-local address"),
            _ => None,
        }
    }
}

/// A DNS resolver that hands reqwest only addresses the policy allows, and fails the lookup
/// otherwise, so that the address checked is the address connected to.
pub struct GuardedResolver {
    pub policy: Arc<AddressPolicy>,
}

/// The error a refused lookup carries; found again by walking the error's sources.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "{host} resolves to {ip}, {why}, which sources may not reach (an operator can allow it with --allow-source-cidr)"
)]
pub struct ForbiddenAddress {
    pub host: String,
    pub ip: IpAddr,
    pub why: &'static str,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            for addr in &addrs {
                if let Some(why) = policy.refusal(addr.ip()) {
                    return Err(Box::new(ForbiddenAddress {
                        host,
                        ip: addr.ip(),
                        why,
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_local_and_metadata_addresses() {
        let policy = AddressPolicy::default();
        for (ip, refused) in [
            ("127.0.0.1", true),
            ("127.8.9.10", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("0.0.0.0", true),
            ("::", true),
            ("169.254.169.254", true),
            ("169.254.1.1", true),
            ("fe80::1", true),
            ("fd00:ec2::254", true),
            ("100.100.100.200", true),
            ("255.255.255.255", true),
            ("224.0.0.1", true),
            ("10.0.0.5", false),
            ("192.168.1.1", false),
            ("93.184.216.34", false),
            ("2606:2800:220:1::", false),
            ("fd00:ec2::253", false),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.refusal(ip).is_some(), refused, "{ip}");
        }
    }

    #[test]
    fn the_allowlist_opens_only_its_cidrs() {
        let policy = AddressPolicy::allowing(vec!["127.0.0.1/32".parse().unwrap()]);
        assert_eq!(policy.refusal("127.0.0.1".parse().unwrap()), None);
        assert!(policy.refusal("127.0.0.2".parse().unwrap()).is_some());
        let everything =
            AddressPolicy::allowing(vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()]);
        assert_eq!(everything.refusal("169.254.1.1".parse().unwrap()), None);
        for metadata in ["169.254.169.254", "100.100.100.200", "fd00:ec2::254"] {
            assert!(
                everything.refusal(metadata.parse().unwrap()).is_some(),
                "{metadata}"
            );
        }
    }
}
