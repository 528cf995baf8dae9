//! Who a request comes from: the peer address, or, behind proxies the
//! operator trusts, the right-most forwarded address that is not one of
//! them ([`TrustedProxies::client`]); and the key limits count it under
//! ([`client_key`]: IPv6 clients by their /64, which one host or household
//! gets whole).
//!
//! A client writes what it likes into `X-Forwarded-For`; each proxy only
//! appends the address it saw. So the left-most entry is the client's own
//! claim, and the trustworthy one is the first address, read from the right,
//! that a trusted proxy appended about someone untrusted. Without trusted
//! proxies the header is ignored altogether.

use std::net::{IpAddr, Ipv6Addr};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The proxies whose forwarding header is believed, and that header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: HeaderName,
}

impl Default for TrustedProxies {
    /// None: every client is its peer address.
    fn default() -> Self {
        Self {
            nets: Vec::new(),
            header: HeaderName::from_static("x-forwarded-for"),
        }
    }
}

impl TrustedProxies {
    /// Proxies in `nets`, naming the client in `header` (a list of
    /// addresses, each proxy appending the one it saw, like
    /// `X-Forwarded-For`).
    pub fn new(nets: Vec<IpNet>, header: HeaderName) -> Self {
        Self { nets, header }
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The client of a request that arrived from `peer` with `headers`:
    /// `peer` unless it is a trusted proxy; then the right-most address in
    /// the forwarding header that is not a trusted proxy (a proxy's own
    /// hops skipped), or the left-most trusted one when all are. An entry
    /// that is not an address ends the walk at the hop to its right: it was
    /// written by someone no trusted proxy vouches for.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return peer;
        }
        let entries: Vec<&str> = headers
            .get_all(&self.header)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            match parse_entry(entry) {
                Some(ip) => {
                    client = ip;
                    if !self.is_trusted(ip) {
                        return ip;
                    }
                }
                None => return client,
            }
        }
        client
    }
}

/// One forwarded address: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`
/// or `[2001:db8::1]:4711`.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(addr) = entry.parse::<std::net::SocketAddr>() {
        return Some(canonical(addr.ip()));
    }
    None
}

/// An IPv4 address mapped into IPv6 (a dual-stack socket's peer) as the
/// IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The key a client's limits are counted under: its IPv4 address, or its
/// IPv6 /64 (a host gets a whole /64 and may use any address in it).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            HeaderName::from_static("x-forwarded-for"),
        )
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", v.parse().unwrap());
        }
        headers
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn without_trusted_proxies_the_header_is_ignored() {
        let none = TrustedProxies::default();
        let headers = xff(&["198.51.100.1, 203.0.113.7"]);
        assert_eq!(none.client(ip("192.0.2.10"), &headers), ip("192.0.2.10"));
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let p = proxies(&["10.0.0.0/8"]);
        let headers = xff(&["198.51.100.1"]);
        assert_eq!(p.client(ip("192.0.2.10"), &headers), ip("192.0.2.10"));
    }

    #[test]
    fn the_right_most_untrusted_entry_is_the_client_and_the_left_most_is_not_believed() {
        let p = proxies(&["10.0.0.0/8", "172.16.0.0/12"]);
        // client wrote 1.2.3.4; the edge proxy saw 203.0.113.7; an inner
        // proxy (172.16.0.5) forwarded to us from 10.0.0.2.
        let headers = xff(&["1.2.3.4, 203.0.113.7", "172.16.0.5"]);
        assert_eq!(p.client(ip("10.0.0.2"), &headers), ip("203.0.113.7"));
        // a different client-written value changes nothing
        let spoofed = xff(&["9.9.9.9, 203.0.113.7, 172.16.0.5"]);
        assert_eq!(p.client(ip("10.0.0.2"), &spoofed), ip("203.0.113.7"));
    }

    #[test]
    fn garbage_ends_the_walk_and_ports_and_brackets_parse() {
        let p = proxies(&["10.0.0.0/8"]);
        assert_eq!(
            p.client(ip("10.0.0.2"), &xff(&["not-an-ip, 10.0.0.9"])),
            ip("10.0.0.9")
        );
        assert_eq!(
            p.client(ip("10.0.0.2"), &xff(&["203.0.113.7:4711"])),
            ip("203.0.113.7")
        );
        assert_eq!(
            p.client(ip("10.0.0.2"), &xff(&["[2001:db8::1]:4711"])),
            ip("2001:db8::1")
        );
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            client_key(ip("2001:db8:1:2::1"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        let p = proxies(&["10.0.0.0/8"]);
        assert!(p.is_trusted(ip("::ffff:10.1.2.3")));
    }
}
