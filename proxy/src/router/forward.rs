//! How a request is forwarded: the peer of each attempt (protocol, SNI, timeouts), the upstream
//! request target and `Host`, and the headers sluice writes.
//!
//! The upstream request carries the normalized path (unless the route's Ingress forwards the
//! raw one) in origin form with the routed host, drops headers with `_` in their names (unless
//! allowed), gets the request id (the client's only from a trusted peer), the `X-Forwarded-*`
//! and `X-Real-IP` headers (a trusted peer's own `X-Forwarded-Proto`, `-Host` and `-Port` kept;
//! `X-Real-IP` the real client address, see `client`), and the connection's own `X-Client-Cert*` headers in place of any
//! the client sent (see [`crate::tls::client_auth`]). Pingora has already removed hop-by-hop
//! headers and keeps the client's `Host`. Header names keep the client's case only where it
//! differs from what Pingora would write ([`header_case_matters`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use pingora_core::upstreams::peer::{HttpPeer, PeerOptions, ALPN};
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use sluice_config::annotations::BackendProtocol;

use super::decide::conn_tls;
use super::{rules, RequestCtx, RouterOptions};
use crate::request::{has_underscore, target_authority, upstream_target};
use crate::text::{push_hex, push_ip};
use crate::tls::client_auth::CLIENT_CERT_HEADERS;

/// Writes the upstream request: the target a rewrite filter chose, else the path routing read,
/// in origin form, the host routing read
/// when the client sent none in `Host`, then the forwarding headers (see
/// [`forwarding_headers`]).
pub(super) fn upstream_request(
    session: &Session,
    upstream: &mut RequestHeader,
    ctx: &RequestCtx,
    options: &RouterOptions,
) -> Result<()> {
    let original = session.req_header();
    let target = match &ctx.rewritten {
        // The rewritten target in place of the path and query; an HTTP/2 request keeps its
        // scheme and authority, as `upstream_target` keeps them.
        Some(t) => {
            let mut parts = original.uri.clone().into_parts();
            parts.path_and_query = Some(
                t.parse()
                    .or_err(ErrorType::InvalidHTTPHeader, "rewritten request target")?,
            );
            Some(
                http::Uri::from_parts(parts)
                    .or_err(ErrorType::InvalidHTTPHeader, "rewritten request target")?,
            )
        }
        None => upstream_target(original, ctx.path.as_deref(), ctx.forward_raw_path)?,
    };
    if let Some(uri) = target {
        upstream.set_uri(uri);
    }
    if original.headers.get(header::HOST).is_none() {
        if let Some(authority) =
            target_authority(original).filter(|_| original.version < http::Version::HTTP_2)
        {
            let value =
                HeaderValue::from_str(authority).or_err(ErrorType::InvalidHTTPHeader, "host")?;
            upstream.insert_header(header::HOST, value)?;
        }
    }
    if header_case_matters(upstream) {
        return forwarding_headers(session, UpstreamHeaders::Cased(upstream), ctx, options);
    }
    // No name's case needs keeping: take the header map out of Pingora's request, make
    // room for every header added at once, and put it back. Pingora's inserts would parse
    // and copy each name, mirror it in a second map, and grow both maps step by step.
    let end_stream = upstream.send_end_stream();
    let placeholder = RequestHeader::from(http::Request::new(()).into_parts().0);
    let mut parts = http::request::Parts::from(std::mem::replace(upstream, placeholder));
    let added = forwarding_headers(
        session,
        UpstreamHeaders::Plain(&mut parts.headers),
        ctx,
        options,
    );
    *upstream = RequestHeader::from(parts);
    if let Some(end_stream) = end_stream {
        upstream.set_send_end_stream(end_stream);
    }
    added
}

/// The peer of one attempt: the endpoint at `addr` reached with the route's protocol (see
/// [`set_protocol`]; `upgrade` for a WebSocket handshake) and SNI, and the route's timeouts, the
/// settings' where the route's Ingress sets none.
pub(super) fn peer(
    addr: SocketAddr,
    ctx: &RequestCtx,
    options: &RouterOptions,
    upgrade: bool,
) -> HttpPeer {
    let tls = ctx.protocol.tls();
    let sni = if tls {
        let vhost = ctx
            .filtered
            .as_ref()
            .and_then(|r| rules::upstream_sni(&r.filters));
        upstream_sni(vhost.unwrap_or(&ctx.host))
    } else {
        String::new()
    };
    let mut peer = HttpPeer::new(addr, tls, sni);
    set_protocol(&mut peer.options, ctx.protocol, upgrade);
    let o = &mut peer.options;
    let (t, d) = (&ctx.timeouts, options);
    o.connection_timeout = Some(t.connect.unwrap_or(d.connect_timeout));
    o.read_timeout = Some(t.read.unwrap_or(d.read_timeout));
    o.write_timeout = Some(t.send.unwrap_or(d.write_timeout));
    o.idle_timeout = Some(options.idle_timeout);
    peer
}

/// A new request id: a per-process random prefix and a counter, 32 hex digits.
pub(super) fn new_request_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    let mut id = String::with_capacity(32);
    push_hex(&mut id, prefix);
    push_hex(&mut id, NEXT.fetch_add(1, Ordering::Relaxed));
    id
}

/// The client's request id when it sent a usable one from a trusted peer
/// (`server.trusted_proxies`); any other peer's id is replaced, so a client cannot pick the id
/// that logs and backends correlate by.
pub(super) fn client_request_id(req: &RequestHeader, trusted_peer: bool) -> Option<&str> {
    if !trusted_peer {
        return None;
    }
    req.headers
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 200)
}

// The headers sluice adds to every upstream request (statics, so a name is checked at compile
// time and is never parsed or allocated per request).
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// How many headers [`upstream_request`] may add: the six above and the
/// client-certificate ones.
const ADDED_HEADERS: usize = 6 + CLIENT_CERT_HEADERS.len();

/// The name Pingora writes for a header whose case it does not hold: its own title case for a
/// few common names, lower case for the rest. Pingora keeps that table private; a unit test
/// holds this copy to what Pingora does.
pub(super) fn uncased_wire_name(name: &HeaderName) -> &str {
    match *name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

/// Whether the upstream request needs Pingora's case-preserving header handling to reach the
/// backend as the client sent it: some header name arrived in another case than Pingora writes
/// for a name it holds no case for, or the request-target is not in origin form (only the
/// case-preserving request keeps an absolute-form target). HTTP/2 requests, and HTTP/1
/// requests written as Pingora would write them, come out byte for byte the same either way.
fn header_case_matters(req: &RequestHeader) -> bool {
    let path = req.uri.path_and_query().map(|p| p.as_str().as_bytes());
    if path != Some(req.raw_path()) {
        return true;
    }
    // One item per value on both sides (a repeated header once per value), as Pingora pairs
    // them when it writes the request.
    req.headers
        .iter()
        .zip(req.case_header_iter())
        .any(|((name, _), (case, _))| case.as_slice() != uncased_wire_name(name).as_bytes())
}

/// The upstream request's headers as [`upstream_request`] edits them.
enum UpstreamHeaders<'a> {
    /// Pingora's request, which keeps each name's case beside the header map.
    Cased(&'a mut RequestHeader),
    /// The header map alone, when no name's case needs keeping: inserts go straight in.
    Plain(&'a mut HeaderMap),
}

impl UpstreamHeaders<'_> {
    fn map(&self) -> &HeaderMap {
        match self {
            UpstreamHeaders::Cased(req) => &req.headers,
            UpstreamHeaders::Plain(map) => map,
        }
    }

    fn insert(&mut self, name: &'static HeaderName, value: HeaderValue) -> Result<()> {
        match self {
            UpstreamHeaders::Cased(req) => req.insert_header(name.as_str(), value),
            UpstreamHeaders::Plain(map) => map
                .try_insert(name.clone(), value)
                .map(|_| ())
                .or_err(ErrorType::InvalidHTTPHeader, "too many request headers"),
        }
    }

    fn remove(&mut self, name: &HeaderName) {
        match self {
            UpstreamHeaders::Cased(req) => {
                req.remove_header(name);
            }
            UpstreamHeaders::Plain(map) => {
                map.remove(name);
            }
        }
    }
}

/// Writes the request id, the forwarding headers and the client-certificate headers into the
/// upstream request, and drops headers with `_` in their names unless `underscores` allows
/// them.
fn forwarding_headers(
    session: &Session,
    mut upstream: UpstreamHeaders<'_>,
    ctx: &RequestCtx,
    options: &RouterOptions,
) -> Result<()> {
    let underscores = options.underscores_in_headers;
    if let UpstreamHeaders::Plain(map) = &mut upstream {
        map.try_reserve(ADDED_HEADERS)
            .or_err(ErrorType::InvalidHTTPHeader, "too many request headers")?;
    }
    upstream.insert(
        &X_REQUEST_ID,
        HeaderValue::from_str(ctx.request_id.as_str())
            .or_err(ErrorType::InvalidHTTPHeader, "x-request-id")?,
    )?;
    // Only sluice says what the client certificate is. One pass over the names finds
    // whether a client sent any (they all start with `x-client-cert`) and any name with `_`,
    // sparing the lookups on every request that has none.
    let (mut forged, mut underscored) = (false, false);
    for k in upstream.map().keys() {
        forged |= k.as_str().starts_with("x-client-cert");
        underscored |= !underscores && has_underscore(k);
    }
    if forged {
        for name in CLIENT_CERT_HEADERS {
            upstream.remove(name);
        }
    }
    if underscored {
        let names: Vec<HeaderName> = upstream
            .map()
            .keys()
            .filter(|k| has_underscore(k))
            .cloned()
            .collect();
        for name in &names {
            upstream.remove(name);
        }
    }
    if let Some(Some(conn)) = conn_tls(session) {
        for (name, value) in &conn.headers {
            let value = HeaderValue::from_str(value)
                .or_err(ErrorType::InvalidHTTPHeader, "client certificate header")?;
            upstream.insert(name, value)?;
        }
    }
    // One buffer for each address; the X-Forwarded-For value is written, not formatted
    // through intermediate strings.
    let mut ip = String::with_capacity(40);
    if let Some(addr) = ctx.client.ip {
        push_ip(&mut ip, addr);
    }
    let mut peer = String::with_capacity(40);
    if let Some(addr) = ctx.client.peer {
        push_ip(&mut peer, addr);
    }
    // A trusted proxy's list goes on with its own address. Any other peer's list is replaced:
    // it could name any address.
    let keep_list = ctx.client.trusted;
    // Every `X-Forwarded-For` line the client sent, in order, as one list, then the peer; the
    // peer's buffer alone when there is no list (most requests: no copy).
    let prev = upstream.map().get_all(&X_FORWARDED_FOR);
    let xff = if keep_list && prev.iter().any(|p| !p.as_bytes().trim_ascii().is_empty()) {
        let mut v = Vec::new();
        for p in prev {
            let p = p.as_bytes().trim_ascii();
            if !p.is_empty() {
                v.extend_from_slice(p);
                v.extend_from_slice(b", ");
            }
        }
        v.extend_from_slice(peer.as_bytes());
        HeaderValue::from_maybe_shared(Bytes::from(v))
    } else {
        HeaderValue::from_maybe_shared(Bytes::from(peer))
    };
    upstream.insert(
        &X_FORWARDED_FOR,
        xff.or_err(ErrorType::InvalidHTTPHeader, "x-forwarded-for")?,
    )?;
    upstream.insert(
        &X_REAL_IP,
        HeaderValue::from_maybe_shared(Bytes::from(ip))
            .or_err(ErrorType::InvalidHTTPHeader, "x-real-ip")?,
    )?;
    // A trusted proxy's own `X-Forwarded-Proto`, `-Host` and `-Port` (when usable) say how the
    // client reached it, and pass unchanged; anyone else's are replaced by what sluice saw.
    let trusted = ctx.client.trusted;
    if !(trusted && forwarded_proto(upstream.map()).is_some()) {
        let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
        upstream.insert(
            &X_FORWARDED_PROTO,
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        )?;
    }
    if !(trusted && upstream.map().contains_key(&X_FORWARDED_HOST)) {
        // The client's host as received (a copy of its bytes; validated in `request_filter`).
        let host = match target_authority(session.req_header()) {
            Some(a) => HeaderValue::from_str(a).ok(),
            None => session.req_header().headers.get(header::HOST).cloned(),
        };
        match host {
            Some(host) => upstream.insert(&X_FORWARDED_HOST, host)?,
            None => upstream.remove(&X_FORWARDED_HOST),
        }
    }
    let port_stated = upstream
        .map()
        .get(&X_FORWARDED_PORT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.parse::<u16>().is_ok());
    if !(trusted && port_stated) {
        match session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port())
        {
            Some(port) => upstream.insert(&X_FORWARDED_PORT, HeaderValue::from(port))?,
            None => upstream.remove(&X_FORWARDED_PORT),
        }
    }
    Ok(())
}

/// The scheme a request's `X-Forwarded-Proto` states, when it is `http` or `https` (any case).
/// Believed only from a trusted peer.
pub(super) fn forwarded_proto(headers: &HeaderMap) -> Option<&'static str> {
    let v = headers.get(&X_FORWARDED_PROTO)?.as_bytes().trim_ascii();
    if v.eq_ignore_ascii_case(b"https") {
        Some("https")
    } else if v.eq_ignore_ascii_case(b"http") {
        Some("http")
    } else {
        None
    }
}

/// Streams opened at most on one upstream HTTP/2 connection before Pingora opens another: the
/// `SETTINGS_MAX_CONCURRENT_STREAMS` most servers advertise (the endpoint's own, lower value
/// still applies). Requests to one endpoint share its connections up to this many at a time.
pub const H2_STREAMS_PER_CONNECTION: usize = 100;

/// Sets how Pingora reaches an endpoint of `protocol`:
/// - HTTP and HTTPS: HTTP/1.1 (ALPN `http/1.1` over TLS);
/// - H2C and GRPC: HTTP/2 with prior knowledge over plain TCP. Pingora 0.9 speaks h2c only when
///   HTTP/2 is the peer's minimum version (`ALPN::H2`); with `ALPN::H2H1` and no TLS to
///   negotiate, it would fall back to HTTP/1.1;
/// - GRPCS: HTTP/2 over TLS, ALPN `h2` only, so a server that cannot speak it fails the
///   handshake instead of being sent gRPC over HTTP/1.1.
///
/// HTTP/2 connections are multiplexed: up to [`H2_STREAMS_PER_CONNECTION`] requests share one
/// (Pingora's default of 1 would open a connection per request in flight). A WebSocket
/// handshake (`upgrade`: an HTTP/1.1 request with `Upgrade`) always goes over HTTP/1.1, the one
/// version that can carry it, keeping TLS when the protocol has it.
///
/// Certificates of TLS endpoints are not verified, as ingress-nginx does by default
/// (`proxy_ssl_verify off`): pods mostly serve self-signed or cluster-internal certificates.
pub fn set_protocol(o: &mut PeerOptions, protocol: BackendProtocol, upgrade: bool) {
    if protocol.tls() {
        o.verify_cert = false;
        o.verify_hostname = false;
    }
    if protocol.h2() && !upgrade {
        o.alpn = ALPN::H2;
        o.max_h2_streams = H2_STREAMS_PER_CONNECTION;
    } else {
        o.alpn = ALPN::H1;
    }
}

/// The SNI sent to a TLS endpoint: the request's host (normalized: no port, lowercase), so that an
/// endpoint serving several names picks the right certificate (as nginx with
/// `proxy_ssl_server_name on` and `proxy_ssl_name $host`). Empty, so no SNI, for an IP
/// literal, which RFC 6066 keeps out of SNI, or a request without a host.
fn upstream_sni(host: &str) -> String {
    if host.is_empty() || host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
        return String::new();
    }
    host.to_string()
}
