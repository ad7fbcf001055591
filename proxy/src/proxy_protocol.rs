//! `server.proxy_protocol`: the client address a load balancer in front states in a PROXY
//! protocol header (v1 text or v2 binary) before TLS and HTTP.
//!
//! With the setting on, every connection to an HTTP or HTTPS listener must start with the
//! header, sent by a peer in `server.proxy_protocol_trusted`. A connection from any other peer,
//! or without a valid header within the handshake deadline (`server.client_header_timeout_secs`),
//! is closed before anything else is read: a claimed address is never used unless its peer is
//! trusted. The header's source address then stands for the peer everywhere: the real client
//! address (and through it the access log, `X-Forwarded-For`/`X-Real-IP`, source-range lists,
//! limits and `$remote_addr` hashing), with `server.trusted_proxies` applied to it as to any
//! peer. A v2 `LOCAL` header (a load balancer's own health check), a v1 `UNKNOWN` one and a v2
//! header of an address family other than IPv4 and IPv6 keep the connection's own peer address.
//! v2 TLVs are skipped, and a header over [`MAX_HEADER_BYTES`] is refused.
//!
//! Pingora calls [`ProxyProtocol::process`] on each accepted connection before its TLS
//! handshake, and (vendor patch 0009) on plain listeners before any HTTP is read. Bytes read
//! past the header (the TLS ClientHello or the request) are put back on the stream.

use std::net::{IpAddr, SocketAddr as StdSocketAddr};
use std::os::fd::AsRawFd;

use async_trait::async_trait;
use pingora_core::listeners::PreTlsProcess;
use pingora_core::protocols::l4::socket::SocketAddr;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{GetSocketDigest, SocketDigest};
use pingora_error::{Error, ErrorType, Result};
use ppp::{v1, v2, HeaderResult, PartialResult};
use sluice_config::cidr::Cidr;
use tokio::io::AsyncReadExt;

/// The longest header accepted, TLVs included (a v1 header is at most 107 bytes; a v2 header
/// with both IPv6 addresses is 52 bytes before its TLVs).
pub const MAX_HEADER_BYTES: usize = 1024;

/// Why a connection was closed before HTTP.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("the peer {0} is not in server.proxy_protocol_trusted")]
    UntrustedPeer(IpAddr),
    #[error("the connection has no peer address")]
    NoPeer,
    #[error("the connection closed before a complete PROXY protocol header")]
    Closed,
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    #[error("the PROXY protocol header is longer than {MAX_HEADER_BYTES} bytes")]
    TooLong,
}

/// The pre-TLS callback of `server.proxy_protocol`.
pub struct ProxyProtocol {
    trusted: Vec<Cidr>,
    refused: prometheus::IntCounterVec,
}

impl ProxyProtocol {
    /// Believes headers from peers in `trusted`; counts closed connections in `refused` by
    /// reason.
    pub fn new(trusted: Vec<Cidr>, refused: prometheus::IntCounterVec) -> ProxyProtocol {
        ProxyProtocol { trusted, refused }
    }

    async fn read(&self, stream: &mut L4Stream) -> Result<(), Refused> {
        let digest = stream.get_socket_digest();
        let peer = digest
            .as_ref()
            .and_then(|d| d.peer_addr())
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
            .ok_or(Refused::NoPeer)?;
        if !self.trusted.iter().any(|c| c.contains(peer)) {
            return Err(Refused::UntrustedPeer(peer));
        }
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|_| Refused::Closed)?;
            if n == 0 {
                return Err(Refused::Closed);
            }
            buf.extend_from_slice(&chunk[..n]);
            let parsed = HeaderResult::parse(&buf);
            if parsed.is_incomplete() {
                if buf.len() >= MAX_HEADER_BYTES {
                    return Err(Refused::TooLong);
                }
                continue;
            }
            let (len, source) = header(parsed)?;
            if len > MAX_HEADER_BYTES {
                return Err(Refused::TooLong);
            }
            stream.rewind(&buf[len..]);
            if let Some(source) = source {
                let fd = stream.as_raw_fd();
                let replaced = SocketDigest::from_raw_fd(fd);
                let _ = replaced.peer_addr.set(Some(SocketAddr::Inet(source)));
                if let Some(d) = &digest {
                    let _ = replaced.local_addr.set(d.local_addr().cloned());
                }
                stream.set_socket_digest(replaced);
            }
            return Ok(());
        }
    }
}

/// A complete header's length and the source address it states (`None`: keep the peer's).
fn header(parsed: HeaderResult<'_>) -> Result<(usize, Option<StdSocketAddr>), Refused> {
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let source = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(StdSocketAddr::from((a.source_address, a.source_port)))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(StdSocketAddr::from((a.source_address, a.source_port)))
                }
                v1::Addresses::Unknown => None,
            };
            Ok((h.header.len(), source))
        }
        HeaderResult::V2(Ok(h)) => {
            let source = match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(StdSocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(StdSocketAddr::from((a.source_address, a.source_port)))
                }
                (v2::Command::Proxy, _) => None,
            };
            Ok((h.len(), source))
        }
        HeaderResult::V1(Err(e)) => Err(Refused::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(Refused::Invalid(e.to_string())),
    }
}

impl Refused {
    fn reason(&self) -> &'static str {
        match self {
            Refused::UntrustedPeer(_) | Refused::NoPeer => "untrusted_peer",
            Refused::Closed => "closed",
            Refused::Invalid(_) | Refused::TooLong => "invalid_header",
        }
    }
}

#[async_trait]
impl PreTlsProcess for ProxyProtocol {
    async fn process(&self, stream: &mut L4Stream) -> Result<()> {
        match self.read(stream).await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.refused.with_label_values(&[e.reason()]).inc();
                tracing::debug!(error = %e, "connection closed: PROXY protocol");
                Error::e_explain(ErrorType::HandshakeError, e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<(usize, Option<StdSocketAddr>), Refused> {
        header(HeaderResult::parse(bytes))
    }

    #[test]
    fn a_v1_header_states_the_source_and_its_own_length() {
        let text = b"PROXY TCP4 203.0.113.7 10.0.0.1 51234 443\r\nGET / HTTP/1.1\r\n";
        let (len, source) = parse(text).unwrap();
        assert_eq!(&text[len..], b"GET / HTTP/1.1\r\n");
        assert_eq!(source, Some("203.0.113.7:51234".parse().unwrap()));
        let (_, source) = parse(b"PROXY TCP6 2001:db8::7 fd00::1 51234 443\r\n").unwrap();
        assert_eq!(source, Some("[2001:db8::7]:51234".parse().unwrap()));
        assert_eq!(parse(b"PROXY UNKNOWN\r\n").unwrap(), (15, None));
    }

    #[test]
    fn a_v2_local_header_keeps_the_peer_and_a_proxy_header_states_the_source() {
        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Stream,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).unwrap(), (16, None));
        let addrs: (StdSocketAddr, StdSocketAddr) = (
            "[2001:db8::7]:40000".parse().unwrap(),
            "[fd00::1]:443".parse().unwrap(),
        );
        let proxy = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addrs,
        )
        .write_tlv(v2::Type::NoOp, b"ignored")
        .unwrap()
        .build()
        .unwrap();
        assert_eq!(parse(&proxy).unwrap(), (proxy.len(), Some(addrs.0)));
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        ] {
            assert!(
                matches!(parse(bad), Err(Refused::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
