//! Address ranges in CIDR notation (`10.0.0.0/8`, `fd00::/8`), as `server.trusted_proxies`
//! names them. A bare address is a range of one (`/32` or `/128`). An IPv4-mapped IPv6 peer
//! (`::ffff:10.1.2.3`, as a dual-stack listener reports IPv4 clients) is matched as the IPv4
//! address it carries.

use std::net::IpAddr;

/// An address range: the addresses that share the first `prefix` bits of `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not an address range such as 10.0.0.0/8 or fd00::/8: {reason}")]
pub struct CidrError {
    pub text: String,
    pub reason: &'static str,
}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Cidr, CidrError> {
        let err = |reason| CidrError {
            text: text.to_string(),
            reason,
        };
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: IpAddr = addr.parse().map_err(|_| err("not an IP address"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| err("the prefix length is not 0 to 32 (IPv4) or 128 (IPv6)"))?,
        };
        let cidr = Cidr { network, prefix };
        if cidr.masked(network) != bits(network) {
            return Err(err("bits are set after the prefix length"));
        }
        Ok(cidr)
    }
}

/// An address as a number, IPv4 in the low 32 bits.
fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).into(),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Cidr {
    /// `ip`'s bits with those after the prefix cleared.
    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.prefix);
        let mask = u128::MAX.checked_shl(host_bits).unwrap_or(0);
        bits(ip) & mask
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_ipv4() == self.network.is_ipv4() && self.masked(ip) == bits(self.network)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_range_contains_exactly_the_addresses_of_its_prefix() {
        for (range, addr, want) in [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("10.0.0.0/8", "::ffff:10.1.2.3", true),
            ("10.0.0.0/8", "::1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("fd00::/8", "fd12::1", true),
            ("fd00::/8", "fe80::1", false),
            ("::/0", "2001:db8::1", true),
            ("::/0", "127.0.0.1", false),
            ("127.0.0.1/32", "127.0.0.1", true),
        ] {
            assert_eq!(cidr(range).contains(ip(addr)), want, "{range} {addr}");
        }
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("::1").to_string(), "::1/128");
    }

    #[test]
    fn malformed_ranges_are_refused_with_a_reason() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.1/8",
            "fd00::/129",
            "example.com/8",
            "10.0.0.0/x",
            "10.0.0/8",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert_eq!(e.text, bad);
            assert!(e.to_string().contains("address range"), "{e}");
        }
    }
}
