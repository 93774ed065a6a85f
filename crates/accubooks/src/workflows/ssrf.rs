//! Where a webhook may go: http(s) URLs whose every address is public.
//!
//! Invariants:
//! - Loopback, private, link-local, unspecified, shared (CGNAT), multicast, broadcast,
//!   documentation, benchmarking and reserved ranges are refused, on IPv4 and IPv6,
//!   including IPv4 addresses embedded in IPv6 (v4-mapped, v4-compatible, NAT64).
//! - A host name is resolved once; if any of its addresses is refused the URL is refused
//!   (an attacker's DNS cannot mix a public and a private answer). The caller connects
//!   to the address returned here, never re-resolving between check and connect.
//! - `allow_private` (`ACCUBOOKS_WEBHOOK_ALLOW_PRIVATE=1`) lifts the address check only;
//!   the scheme check stays.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an absolute http(s) URL with a host.
    #[error("must be an http or https URL with a host")]
    Invalid,
    /// Resolves to a refused address.
    #[error("resolves to a non-public address ({0})")]
    Blocked(IpAddr),
    /// The name did not resolve (in time).
    #[error("does not resolve: {0}")]
    Unresolved(String),
}

/// Parses a webhook URL: absolute, `http` or `https`, with a host.
pub fn parse(url: &str) -> Result<Url, Refusal> {
    let u = Url::parse(url).map_err(|_| Refusal::Invalid)?;
    if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
        return Err(Refusal::Invalid);
    }
    Ok(u)
}

fn v4_blocked(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (18..20).contains(&b))
        || a >= 240
}

fn v6_blocked(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return v4_blocked(v4);
    }
    // v4-compatible (::a.b.c.d, deprecated) and NAT64 (64:ff9b::/96) embed an IPv4 address.
    if s[..6] == [0, 0, 0, 0, 0, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (s[6] >> 8) as u8,
            (s[6] & 0xff) as u8,
            (s[7] >> 8) as u8,
            (s[7] & 0xff) as u8,
        );
        return ip.is_loopback() || ip.is_unspecified() || v4_blocked(v4);
    }
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
}

/// Whether webhooks may never reach `ip` (without the operator's flag).
pub fn is_blocked(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_blocked(v4),
        IpAddr::V6(v6) => v6_blocked(v6),
    }
}

/// Resolves `url`'s host (an IP literal as itself) and checks every address; returns the
/// address to connect to.
pub async fn resolve(
    url: &Url,
    allow_private: bool,
    timeout: Duration,
) -> Result<SocketAddr, Refusal> {
    let port = url.port_or_known_default().ok_or(Refusal::Invalid)?;
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(url::Host::Domain(d)) => {
            let lookup = tokio::net::lookup_host((d, port));
            match tokio::time::timeout(timeout, lookup).await {
                Ok(Ok(it)) => it.collect(),
                Ok(Err(e)) => return Err(Refusal::Unresolved(e.to_string())),
                Err(_) => return Err(Refusal::Unresolved("DNS timed out".into())),
            }
        }
        None => return Err(Refusal::Invalid),
    };
    if !allow_private {
        if let Some(bad) = addrs.iter().find(|a| is_blocked(a.ip())) {
            return Err(Refusal::Blocked(bad.ip()));
        }
    }
    addrs
        .first()
        .copied()
        .ok_or_else(|| Refusal::Unresolved("no addresses".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blocked(s: &str) -> bool {
        is_blocked(s.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)))
    }

    #[test]
    fn private_loopback_link_local_and_unspecified_are_blocked_on_v4_and_v6() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "ff02::1",
        ] {
            assert!(blocked(ip), "{ip} must be blocked");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!blocked(ip), "{ip} must be allowed");
        }
    }

    #[test]
    fn only_absolute_http_urls_with_a_host_parse() {
        assert!(parse("https://example.com/hook").is_ok());
        assert!(parse("http://93.184.216.34:8080/x").is_ok());
        for bad in [
            "ftp://example.com",
            "file:///etc/passwd",
            "example.com",
            "http://",
            "javascript:alert(1)",
        ] {
            assert_eq!(parse(bad), Err(Refusal::Invalid), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_unless_allowed() {
        let url = parse("http://localhost:9/x").unwrap_or_else(|_| panic!("parses"));
        let t = Duration::from_secs(2);
        assert!(matches!(
            resolve(&url, false, t).await,
            Err(Refusal::Blocked(_))
        ));
        assert!(resolve(&url, true, t).await.is_ok());
    }
}
