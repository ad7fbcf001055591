//! The real client address and the forwarding facts a trusted proxy in front may state.
//!
//! A peer in `server.trusted_proxies` is a proxy whose headers are believed: the client address
//! is taken from `X-Forwarded-For` walking right to left past trusted addresses (nginx's
//! `real_ip_recursive on`), and its `X-Forwarded-Proto`, `-Host` and `-Port` are passed on (and
//! its `X-Forwarded-Proto: https` stops the https redirect, which would otherwise loop behind a
//! TLS-terminating load balancer). Any other peer is the client itself, and what it claims in
//! those headers is replaced.

use std::net::IpAddr;

use pingora_http::RequestHeader;
use sluice_config::cidr::Cidr;

use super::forward::X_FORWARDED_FOR;

/// Who sent a request: the address sluice treats as the client, and whether the connection's
/// peer is a trusted proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Client {
    /// The real client address: the peer's, or from a trusted peer the one its
    /// `X-Forwarded-For` names. `None` for a peer without an IP address.
    pub ip: Option<IpAddr>,
    /// The connection's own peer address.
    pub peer: Option<IpAddr>,
    /// The peer is in `server.trusted_proxies`: its forwarding headers are believed.
    pub trusted: bool,
}

/// Whether `ip` is in one of `ranges`.
pub fn in_ranges(ranges: &[Cidr], ip: IpAddr) -> bool {
    ranges.iter().any(|c| c.contains(ip))
}

impl Client {
    /// The client of a request from `peer` under the trusted ranges `trusted`.
    pub fn of(req: &RequestHeader, peer: Option<IpAddr>, trusted: &[Cidr]) -> Client {
        let is_trusted = peer.is_some_and(|ip| in_ranges(trusted, ip));
        let ip = match peer {
            Some(p) if is_trusted => Some(forwarded_client(req, p, trusted)),
            p => p,
        };
        Client {
            ip,
            peer,
            trusted: is_trusted,
        }
    }
}

/// The client address a trusted `peer`'s `X-Forwarded-For` names: walking its addresses right
/// to left (over every header line, in order), the first one outside `trusted`. When every
/// address is trusted, the leftmost; when an entry is not an address, the walk stops at the
/// address to its right (the last one a trusted proxy vouched for).
fn forwarded_client(req: &RequestHeader, peer: IpAddr, trusted: &[Cidr]) -> IpAddr {
    let lines = req.headers.get_all(&X_FORWARDED_FOR);
    let mut client = peer;
    for line in lines.iter().rev() {
        for item in line.as_bytes().rsplit(|b| *b == b',') {
            let item = item.trim_ascii();
            if item.is_empty() {
                continue;
            }
            let Some(ip) = std::str::from_utf8(item)
                .ok()
                .and_then(|s| s.parse::<IpAddr>().ok())
            else {
                return client;
            };
            client = ip;
            if !in_ranges(trusted, ip) {
                return client;
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(xff: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for v in xff {
            r.append_header("x-forwarded-for", *v).unwrap();
        }
        r
    }

    fn ranges(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn the_client_is_the_first_untrusted_address_from_the_right() {
        let trusted = ranges(&["10.0.0.0/8", "fd00::/8"]);
        let peer = Some("10.0.0.1".parse().unwrap());
        for (xff, want) in [
            (vec!["203.0.113.7"], "203.0.113.7"),
            (vec!["198.51.100.1, 203.0.113.7, 10.1.1.1"], "203.0.113.7"),
            (vec!["198.51.100.1", "203.0.113.7, 10.1.1.1"], "203.0.113.7"),
            (vec!["10.2.2.2, 10.1.1.1"], "10.2.2.2"),
            (vec!["2001:db8::1, fd00::7"], "2001:db8::1"),
            (vec!["203.0.113.7, junk, 10.1.1.1"], "10.1.1.1"),
            (vec!["junk"], "10.0.0.1"),
            (vec![], "10.0.0.1"),
        ] {
            let c = Client::of(&req(&xff), peer, &trusted);
            assert!(c.trusted);
            assert_eq!(c.ip, Some(want.parse().unwrap()), "{xff:?}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let trusted = ranges(&["10.0.0.0/8"]);
        let peer = Some("192.0.2.9".parse().unwrap());
        let c = Client::of(&req(&["203.0.113.7"]), peer, &trusted);
        assert_eq!((c.ip, c.trusted), (peer, false));
        let c = Client::of(&req(&["203.0.113.7"]), peer, &[]);
        assert_eq!((c.ip, c.trusted), (peer, false));
    }
}
