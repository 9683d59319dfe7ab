//! Where deliveries may go. A target that resolves to loopback, private,
//! link-local, multicast or otherwise non-public addresses could reach
//! inside the contact centre's network (SSRF): refused unless
//! `forward.allow_private_targets`, when a subscription is added and again
//! at every connect, through [`GuardedResolver`], since DNS can change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// A URL a subscription may deliver to, or a sentence saying why not.
pub fn parse(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| format!("`{url}` is not a URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    }
    if parsed.host().is_none() {
        return Err(format!("`{url}` names no host"));
    }
    // Credentials in the URL would be stored and shown in clear.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(
            "the URL must not hold a user name or password; receivers verify the signature instead"
                .into(),
        );
    }
    if parsed.fragment().is_some() {
        return Err(format!("`{url}` has a #fragment, which is never sent"));
    }
    Ok(parsed)
}

/// Whether `url` may be delivered to: every address its host resolves to
/// must be public, unless private targets are allowed.
pub async fn check(url: &Url, allow_private: bool) -> Result<(), String> {
    if allow_private {
        return Ok(());
    }
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs = resolve(host, port).await?;
    match addrs.iter().find(|a| !is_public(a.ip())) {
        Some(a) => Err(format!(
            "{host} resolves to {}, a loopback, private, link-local or multicast address (set forward.allow_private_targets to allow it)",
            a.ip()
        )),
        None => Ok(()),
    }
}

async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    // An IP literal in brackets (IPv6) resolves without them.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addrs)
}

/// A name that resolves only to addresses deliveries may not go to.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to loopback, private, link-local or multicast addresses")]
pub struct Refused(String);

/// Resolves for the HTTP client and keeps only public addresses (all of
/// them when private targets are allowed): a name that now points inside
/// fails to connect.
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = resolve(&host, 0).await?;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if allowed.is_empty() {
                return Err(Box::new(Refused(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// Reachable on the public internet: not loopback, private, shared (CGNAT),
/// link-local, multicast, broadcast, unspecified or documentation space.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first == 0x2001 && ip.segments()[1] == 0x0db8) // documentation
        // IPv4-compatible (deprecated) and NAT64 forms can reach IPv4 space.
        || ip.segments()[..6] == [0; 6]
        || ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn urls_must_be_plain_http() {
        assert!(parse("https://crm.example.com/hooks/koo").is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "not a url",
            "https://example.com/#x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn loopback_names_are_refused_unless_allowed() {
        let url = parse("http://localhost:9/x").unwrap();
        assert!(check(&url, false).await.unwrap_err().contains("loopback"));
        assert!(check(&url, true).await.is_ok());
        let literal = parse("http://[::1]:9/x").unwrap();
        assert!(check(&literal, false).await.is_err());
    }
}
