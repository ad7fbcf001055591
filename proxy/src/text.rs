//! Numbers, addresses, durations and times written straight into a string, for the per-request
//! paths (forwarding headers, access-log lines): `core::fmt` costs several times as much for
//! each of them (padding support, dynamic dispatch, an intermediate buffer per address).
//! Each writer gives exactly what the `Display` it replaces gives, except where its comment
//! says otherwise.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

/// Appends `v` in decimal.
pub fn push_int(out: &mut String, v: impl itoa::Integer) {
    out.push_str(itoa::Buffer::new().format(v));
}

/// Appends `v` as 16 lowercase hex digits (what `{v:016x}` gives; request ids are made of it).
pub fn push_hex(out: &mut String, v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(DIGITS[((v >> (shift * 4)) & 0xf) as usize] as char);
    }
}

/// Appends `v` in decimal, left-padded with zeros to `width` digits: the fraction after a
/// decimal point.
fn push_zero_padded(out: &mut String, v: u32, width: usize) {
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(v);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// Appends an address as `Display` writes it (IPv6 through `Display`: its zero-run rules are
/// not worth copying for the rarer family).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            push_int(out, a);
            for octet in [b, c, d] {
                out.push('.');
                push_int(out, octet);
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Appends a socket address as `Display` writes it (`1.2.3.4:80`, `[::1]:80`).
pub fn push_socket_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            push_ip(out, IpAddr::V4(*v4.ip()));
            out.push(':');
            push_int(out, v4.port());
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// Appends a duration in seconds with `decimals` (at most 9) digits after the point,
/// truncated: `0.012300` for 12.3 ms with 6.
pub fn push_seconds(out: &mut String, d: Duration, decimals: u32) {
    let decimals = decimals.min(9);
    push_int(out, d.as_secs());
    if decimals == 0 {
        return;
    }
    out.push('.');
    let fraction = d.subsec_nanos() / 10u32.pow(9 - decimals);
    push_zero_padded(out, fraction, decimals as usize);
}

thread_local! {
    /// The last whole second written by [`push_time`] on this thread, as RFC 3339 text without
    /// the zone: a second's lines share it, so the calendar arithmetic runs once a second.
    static SECOND: RefCell<(i64, String)> = const { RefCell::new((i64::MIN, String::new())) };
}

/// Appends `t` as RFC 3339 in UTC with microseconds: `2026-01-02T03:04:05.123456Z`.
pub fn push_time(out: &mut String, t: Timestamp) {
    let (second, nanos) = (t.as_second(), t.subsec_nanosecond());
    if nanos < 0 {
        // Before 1970 the fraction counts backwards; no line is that old, but stay exact.
        let _ = write!(out, "{t}");
        return;
    }
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            match Timestamp::from_second(second) {
                Ok(whole) => {
                    let _ = write!(text, "{whole}");
                }
                Err(_) => {
                    let _ = write!(text, "{t}");
                }
            }
            // Whole seconds print without a fraction; the zone letter comes last.
            if text.ends_with('Z') {
                text.pop();
            }
            *cached = second;
        }
        out.push_str(text);
    });
    out.push('.');
    push_zero_padded(out, nanos as u32 / 1000, 6);
    out.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_read_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.200.3.255",
            "::1",
            "2001:db8::8:1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
        for addr in ["127.0.0.1:80", "192.168.10.1:65535", "[::1]:8080"] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut s = String::new();
            push_socket_addr(&mut s, addr);
            assert_eq!(s, addr.to_string());
        }
    }

    #[test]
    fn seconds_keep_their_leading_zeros_and_truncate() {
        let cases = [
            (Duration::from_nanos(12_300_000), 6, "0.012300"),
            (Duration::from_nanos(1_999_999_999), 3, "1.999"),
            (Duration::from_micros(5), 6, "0.000005"),
            (Duration::from_secs(42), 3, "42.000"),
            (Duration::from_millis(1500), 0, "1"),
        ];
        for (d, decimals, want) in cases {
            let mut s = String::new();
            push_seconds(&mut s, d, decimals);
            assert_eq!(s, want, "{d:?}");
        }
    }

    #[test]
    fn times_are_rfc3339_with_microseconds_across_second_boundaries() {
        let cases = [
            (
                "2026-01-02T03:04:05.123456789Z",
                "2026-01-02T03:04:05.123456Z",
            ),
            ("2026-01-02T03:04:05.000001Z", "2026-01-02T03:04:05.000001Z"),
            ("2026-01-02T03:04:06Z", "2026-01-02T03:04:06.000000Z"),
            ("2026-01-02T03:04:05.5Z", "2026-01-02T03:04:05.500000Z"),
            ("1969-12-31T23:59:59.5Z", "1969-12-31T23:59:59.5Z"),
        ];
        for (t, want) in cases {
            let mut s = String::new();
            push_time(&mut s, t.parse().unwrap());
            assert_eq!(s, want);
            // What was written parses back to the same time, to the microsecond.
            let back: Timestamp = s.parse().unwrap();
            let t: Timestamp = t.parse().unwrap();
            assert_eq!(back.as_microsecond(), t.as_microsecond());
        }
    }
}
