//! Which addresses webhooks may reach. A webhook URL is user input: without
//! a check it could make the gateway call its own admin API, a cloud
//! metadata service (169.254.169.254) or anything else on its network.
//!
//! The check runs on the addresses actually connected to: names are
//! resolved by [`GuardedResolver`], which drops refused addresses, so a name
//! that resolves to 127.0.0.1 (or is re-bound to it later) is refused too.
//! IP literals never reach a resolver and are checked by [`Policy::check_url`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A CIDR network, e.g. `10.20.0.0/16` or `fd00::/8`; a bare address is a
/// network of one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network(IpNet);

impl Network {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map(Self)
            .map_err(|_| format!("`{s}` is not an address or CIDR network"))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are judged as the IPv4
/// address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Whether an address is on the public internet. Everything else (loopback,
/// private, shared, link-local, unspecified, multicast, broadcast,
/// documentation and benchmarking ranges, unique-local IPv6) is refused
/// unless allowed.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let first = segments[0];
    // The IPv4 address an IPv6 form carries, where it carries one: such an
    // address is as public as the IPv4 address it reaches.
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    let carried = match segments {
        // IPv4-compatible (::a.b.c.d, deprecated) and IPv4-translated
        // (::ffff:0:a.b.c.d, RFC 2765).
        [0, 0, 0, 0, 0, 0, hi, lo] | [0, 0, 0, 0, 0xffff, 0, hi, lo]
            if !ip.is_unspecified() && !ip.is_loopback() =>
        {
            Some(embedded(hi, lo))
        }
        // NAT64, the well-known prefix 64:ff9b::/96 (RFC 6052).
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(embedded(hi, lo)),
        // 6to4, 2002::/16: the IPv4 address follows the prefix.
        [0x2002, hi, lo, ..] => Some(embedded(hi, lo)),
        _ => None,
    };
    if let Some(v4) = carried {
        return is_public_v4(v4);
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation
        || (first == 0x2001 && segments[1] == 0) // Teredo: a tunnel to an address it hides
        || (first == 0x64 && segments[1] == 0xff9b && segments[2] == 1)) // local-use NAT64, 64:ff9b:1::/48
}

/// The gateway's outbound address policy.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Anything goes (`allow_private_targets`).
    pub allow_private: bool,
    /// Private networks explicitly allowed.
    pub allowed: Vec<Network>,
}

impl Policy {
    pub fn new(allow_private: bool, allowed: &[String]) -> Result<Self, String> {
        Ok(Self {
            allow_private,
            allowed: allowed
                .iter()
                .map(|s| Network::parse(s))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private || is_public(ip) || self.allowed.iter().any(|n| n.contains(ip))
    }

    /// Refuses a URL whose host is a refused IP literal (names are checked
    /// after resolution).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return Ok(()),
            None => return Err("the URL has no host".into()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(refusal(&[ip]))
        }
    }
}

impl Policy {
    /// For requests through a proxy, which resolves the target itself:
    /// resolves the URL's host here and refuses it unless every address it
    /// has is permitted (stricter than a direct connection, which drops the
    /// refused ones, because the proxy may pick any of them).
    pub async fn check_target(&self, url: &reqwest::Url) -> Result<(), String> {
        self.check_url(url)?;
        let Some(url::Host::Domain(host)) = url.host() else {
            return Ok(());
        };
        let port = url.port_or_known_default().unwrap_or(443);
        let ips: Vec<IpAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect();
        if ips.is_empty() {
            return Err(format!("{host} resolves to no address"));
        }
        let refused: Vec<IpAddr> = ips.into_iter().filter(|ip| !self.permits(*ip)).collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(format!("{host}: {}", refusal(&refused)))
        }
    }
}

fn refusal(ips: &[IpAddr]) -> String {
    let list: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    format!(
        "refused to connect to non-public address {} (set allow_private_targets or allowed_networks to permit it)",
        list.join(", ")
    )
}

/// A DNS resolver that only returns permitted addresses.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: Arc<Policy>,
}

impl GuardedResolver {
    pub fn new(policy: Arc<Policy>) -> Self {
        Self { policy }
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolved.into_iter().partition(|a| policy.permits(a.ip()));
            if allowed.is_empty() {
                let ips: Vec<IpAddr> = refused.iter().map(SocketAddr::ip).collect();
                let message = if ips.is_empty() {
                    format!("{host} resolves to no address")
                } else {
                    format!("{host}: {}", refusal(&ips))
                };
                return Err(message.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused_by_default() {
        let policy = Policy::default();
        for refused in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            // Translated forms that carry a private IPv4 address.
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "::ffff:0:a00:1",
            "::ffff:0:7f00:1",
            "::7f00:1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!policy.permits(ip(refused)), "{refused} should be refused");
        }
        for allowed in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            // Translated forms of a public address stay public.
            "64:ff9b::5db8:d822",
            "2002:5db8:d822::1",
        ] {
            assert!(policy.permits(ip(allowed)), "{allowed} should be allowed");
        }
    }

    #[test]
    fn allowlists_open_what_they_name() {
        let policy = Policy::new(false, &["10.20.0.0/16".into(), "::1".into()]).unwrap();
        assert!(policy.permits(ip("10.20.5.6")));
        assert!(!policy.permits(ip("10.21.0.1")));
        assert!(policy.permits(ip("::1")));
        assert!(!policy.permits(ip("127.0.0.1")));
        assert!(Policy::new(true, &[]).unwrap().permits(ip("127.0.0.1")));
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("ten").is_err());
    }

    #[test]
    fn ip_literal_urls_are_checked() {
        let policy = Policy::default();
        let url = reqwest::Url::parse("http://169.254.169.254/latest/meta-data").unwrap();
        let err = policy.check_url(&url).unwrap_err();
        assert!(err.contains("169.254.169.254"), "{err}");
        let url = reqwest::Url::parse("http://[::1]:8080/").unwrap();
        assert!(policy.check_url(&url).is_err());
        let url = reqwest::Url::parse("https://example.com/").unwrap();
        assert!(policy.check_url(&url).is_ok());
    }
}
