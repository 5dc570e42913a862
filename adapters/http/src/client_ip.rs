//! The one place where a request's client address is decided.
//!
//! Behind a reverse proxy every TCP peer is the proxy. `X-Forwarded-For` and
//! `X-Real-IP` name the client, but anyone can send them: they are believed only when
//! the peer is a configured trusted proxy, and then the client is the rightmost hop
//! that is not itself trusted (each proxy appends the address it saw; everything left
//! of the first untrusted hop was written by the client and may be forged).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The networks whose `X-Forwarded-For` / `X-Real-IP` are believed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(ToString::to_string))
            .finish()
    }
}

/// A trusted-proxy entry that is neither a CIDR nor an address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a CIDR (10.0.0.0/8, fd00::/8) or an IP address")]
pub struct BadProxyEntry(pub String);

impl TrustedProxies {
    /// No proxy is trusted: the TCP peer is the client (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses CIDRs (`10.0.0.0/8`, `fd00::/8`); a bare address means just that host.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, BadProxyEntry> {
        entries
            .iter()
            .map(|entry| {
                let entry = entry.as_ref().trim();
                IpNet::from_str(entry)
                    .map(|net| net.trunc())
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| BadProxyEntry(entry.to_owned()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let hops = forwarded_for(headers);
        if hops.is_empty() {
            return headers
                .get("x-real-ip")
                .and_then(|v| v.to_str().ok())
                .and_then(parse_hop)
                .unwrap_or(peer);
        }
        // From the right: skip our own proxies; the first other hop is the client. A
        // hop that does not parse ends the walk at the last address we can vouch for.
        let mut nearest = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) if self.trusts(*ip) => nearest = *ip,
                Some(ip) => return *ip,
                None => return nearest,
            }
        }
        // Every hop is one of ours: the leftmost is the client.
        nearest
    }
}

/// Every `X-Forwarded-For` hop, left to right, across repeated headers; `None` for a
/// hop that is not an address.
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| match value.to_str() {
            Ok(text) => text.split(',').map(parse_hop).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// `203.0.113.9`, `2001:db8::1`, `[2001:db8::1]:443` or `203.0.113.9:5678`.
fn parse_hop(text: &str) -> Option<IpAddr> {
    let text = text.trim();
    IpAddr::from_str(text)
        .ok()
        .or_else(|| std::net::SocketAddr::from_str(text).ok().map(|s| s.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn proxies() -> TrustedProxies {
        TrustedProxies::parse(&["10.0.0.0/8", "127.0.0.1", "fd00::/8"]).unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let forged = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-real-ip", "5.6.7.8")]);
        assert_eq!(
            proxies().client_ip(ip("203.0.113.9"), &forged),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::none().client_ip(ip("10.0.0.1"), &forged),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        // The client forged "1.2.3.4"; our edge proxy 10.0.0.2 appended what it saw.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7, 10.0.0.2")]);
        assert_eq!(proxies().client_ip(ip("10.0.0.3"), &h), ip("198.51.100.7"));
        // Repeated headers are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(proxies().client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        // Ports and brackets are tolerated.
        let h = headers(&[("x-forwarded-for", "[2001:db8::5]:443")]);
        assert_eq!(proxies().client_ip(ip("fd00::1"), &h), ip("2001:db8::5"));
    }

    #[test]
    fn garbage_stops_at_the_nearest_address_we_vouch_for() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7, not-an-ip, 10.0.0.2")]);
        assert_eq!(proxies().client_ip(ip("10.0.0.3"), &h), ip("10.0.0.2"));
        let h = headers(&[("x-forwarded-for", "10.0.0.9, 10.0.0.2")]);
        assert_eq!(proxies().client_ip(ip("10.0.0.3"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn x_real_ip_counts_only_without_x_forwarded_for() {
        let h = headers(&[("x-real-ip", "198.51.100.7")]);
        assert_eq!(proxies().client_ip(ip("127.0.0.1"), &h), ip("198.51.100.7"));
        let h = headers(&[("x-real-ip", "bogus")]);
        assert_eq!(proxies().client_ip(ip("127.0.0.1"), &h), ip("127.0.0.1"));
    }

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let h = headers(&[("x-forwarded-for", "198.51.100.7")]);
        assert_eq!(
            proxies().client_ip(ip("::ffff:127.0.0.1"), &h),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            TrustedProxies::parse(&["10.0.0.0/33"]).unwrap_err(),
            BadProxyEntry("10.0.0.0/33".into())
        );
        assert!(TrustedProxies::parse(&["proxy.internal"]).is_err());
    }
}
