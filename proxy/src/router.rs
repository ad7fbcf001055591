//! The request path: sluice's [`ProxyHttp`] implementation.
//!
//! Per request, in Pingora's phase order:
//! 1. [`ProxyHttp::request_filter`] reads the request's host and normalized path once (400 for a
//!    missing, conflicting or invalid host, or a path above the root; see [`crate::request`]),
//!    loads the live snapshot once, applies the TLS rules (421 when
//!    the host and the TLS server name differ on a name with client authentication, 308 to https
//!    for plain HTTP on a host with TLS; see [`Router::decide`]), finds the route for the host
//!    and path, and answers by itself when there is nothing to proxy to: no route (404), a route
//!    whose backend could not be resolved or whose pool has no ready endpoint (503), a request
//!    head over the configured size (431), a `Content-Length` over the route's body limit (413).
//! 2. [`ProxyHttp::upstream_peer`] picks an endpoint of the route's pool with the route's
//!    algorithm (see [`crate::pool`]), skipping endpoints this request already failed to connect
//!    to, and counts the request in flight there; it applies the route's timeouts (its Ingress's
//!    `sluice.dev/*-timeout` annotations, else the settings) and its protocol (see
//!    [`set_protocol`]).
//! 3. [`ProxyHttp::upstream_request_filter`] writes the normalized path (unless the route's
//!    Ingress forwards the raw one) in origin form with the routed host, drops headers with `_`
//!    in their names (unless allowed), adds the `X-Forwarded-*` and `X-Real-IP` headers,
//!    removes any client-sent `X-Client-Cert*` header and adds the connection's own (see
//!    [`crate::tls::client_auth`]). Pingora has already removed hop-by-hop headers and keeps the
//!    client's `Host`.
//! 4. On a connect failure [`ProxyHttp::fail_to_connect`], and for an idempotent request on a
//!    reset before any response byte [`ProxyHttp::error_while_proxy`], the error is marked
//!    retryable until the configured number of retries is spent, so step 2 runs again on another
//!    endpoint, one in rotation (never an ejected or unhealthy one). A non-idempotent request is
//!    never retried once its bytes may have been sent, nor any request whose error the client
//!    caused (it closed, or failed to read or write): that one ends, its upstream connection is
//!    dropped, and [`ProxyHttp::logging`] counts it as 499 without holding it against the
//!    endpoint.
//! 5. [`ProxyHttp::upstream_response_filter`] records the endpoint's time to the response head,
//!    the latency that EWMA balancing reads; [`ProxyHttp::response_filter`] sets the affinity
//!    cookie of routes with `sluice.dev/affinity: cookie` when the client's cookie named no
//!    usable endpoint (a client with a valid cookie goes back to its endpoint in step 2).
//! 6. [`ProxyHttp::fail_to_proxy`] is the one place that turns errors into statuses: upstream
//!    timeouts 504, other upstream failures 502.
//!
//! [`ProxyHttp::request_body_filter`] counts the body against the route's limit and cuts it
//! with 413 when it grows over it.
//!
//! Routing allocates nothing per request beyond the `Arc` clone of the chosen pool, the copy of
//! the validated host kept on the context (a path is copied only when normalizing changed it)
//! and the peer Pingora requires as a `Box` (and, for a TLS endpoint, the SNI string in it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;
use pingora_core::upstreams::peer::{HttpPeer, Peer, PeerOptions, ALPN};
use pingora_error::{Error, ErrorSource, ErrorType, OrErr, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use sluice_config::annotations::{BackendProtocol, Balance, CookieAffinity, HashBy, Timeouts};
use sluice_config::cidr::Cidr;
use sluice_config::path::match_path;
use sluice_config::Settings;
use tokio::sync::Notify;

use crate::access_log::{AccessLog, Record};
use crate::metrics::RouteMetrics;
use crate::pool::{hash_key, InFlightEndpoint, Pick, Pool};
use crate::request::{
    content_length, has_underscore, raw_host, request_host, request_path, target_authority,
    upstream_target, BodyLimit,
};
use crate::state::State;
use crate::text::{push_hex, push_ip};
use crate::tls::client_auth::CLIENT_CERT_HEADERS;
use crate::tls::ConnTls;
use sluice_config::tls::ClientAuthMode;

/// Per-request settings of the router, taken from [`Settings`].
#[derive(Debug, Clone)]
pub struct RouterOptions {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub connect_retries: usize,
    pub max_request_header_bytes: usize,
    /// Time for each write to the client to make progress.
    pub client_send_timeout: Duration,
    /// An HTTPS listener exists.
    pub https: bool,
    /// Redirect plain-HTTP requests for hosts with TLS (`tls.ssl_redirect`, and an HTTPS
    /// listener exists).
    pub ssl_redirect: bool,
    /// The port written into redirects; 443 is left out.
    pub redirect_port: u16,
    /// The algorithm of routes whose Ingress names none.
    pub load_balance: Balance,
    /// `server.max_request_body_bytes`: the body limit of routes whose Ingress sets none
    /// (except GRPC and GRPCS routes, which have none); 0 for no limit.
    pub max_request_body_bytes: u64,
    /// `server.client_body_timeout_secs`.
    pub client_body_timeout: Duration,
    /// `server.underscores_in_headers`.
    pub underscores_in_headers: bool,
    /// `server.trusted_proxies`: peers whose `X-Request-Id` is kept.
    pub trusted_proxies: Vec<Cidr>,
}

impl From<&Settings> for RouterOptions {
    fn from(s: &Settings) -> Self {
        RouterOptions {
            connect_timeout: s.connect_timeout,
            read_timeout: s.read_timeout,
            write_timeout: s.write_timeout,
            idle_timeout: s.keepalive_idle_timeout,
            connect_retries: s.connect_retries,
            max_request_header_bytes: s.max_request_header_bytes,
            client_send_timeout: s.client_send_timeout,
            https: !s.tls.https_listen.is_empty(),
            ssl_redirect: s.tls.ssl_redirect && !s.tls.https_listen.is_empty(),
            redirect_port: s.tls.redirect_port,
            load_balance: s.load_balance.clone(),
            max_request_body_bytes: s.max_request_body_bytes,
            client_body_timeout: s.client_body_timeout,
            underscores_in_headers: s.underscores_in_headers,
            trusted_proxies: s.trusted_proxies.clone(),
        }
    }
}

/// Counts requests in flight so shutdown can wait for them (and exports the count).
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    gauge: prometheus::IntGauge,
}

impl InFlight {
    pub fn new(gauge: prometheus::IntGauge) -> InFlight {
        InFlight {
            count: AtomicUsize::new(0),
            idle: Notify::new(),
            gauge,
        }
    }

    /// Requests now in flight.
    pub fn get(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until no request is in flight.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Marks one request in flight for as long as it lives.
pub struct InFlightGuard(Arc<InFlight>);

impl InFlightGuard {
    fn new(counter: &Arc<InFlight>) -> Self {
        counter.count.fetch_add(1, Ordering::AcqRel);
        counter.gauge.inc();
        InFlightGuard(counter.clone())
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.gauge.dec();
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// What one request carries between phases.
pub struct RequestCtx {
    start: Instant,
    pool: Option<Arc<Pool>>,
    route: Option<Arc<RouteMetrics>>,
    /// The route's own timeouts (from its Ingress's annotations); unset ones use the settings.
    timeouts: Timeouts,
    /// The protocol to the route's endpoints.
    protocol: BackendProtocol,
    /// How this request picks its endpoint (the route's algorithm, its key already hashed).
    pick: Pick,
    /// The route's affinity cookie, and the endpoint token the client's cookie names.
    affinity: Option<(CookieAffinity, Option<u64>)>,
    /// The affinity cookie to set on the response: the client's cookie named no usable endpoint.
    set_affinity: Option<u64>,
    /// Whether the current attempt's endpoint has sent a response head.
    responded: bool,
    /// The endpoint of the current attempt, counted in flight while the request lasts.
    attempt: Option<InFlightEndpoint>,
    /// Endpoints this request failed to connect to; empty (and unallocated) on the happy path.
    failed: Vec<SocketAddr>,
    attempts: usize,
    upstream_start: Option<Instant>,
    upstream: Option<SocketAddr>,
    request_id: String,
    /// The validated host the request was routed by (see [`crate::request`]).
    host: String,
    /// The normalized path, when it differs from the request's path.
    path: Option<String>,
    /// The route's Ingress asks for the raw path upstream.
    forward_raw_path: bool,
    /// The route's body limit and the body bytes read so far.
    body: BodyLimit,
    /// Time allowed between two body reads; `None` for GRPC and GRPCS routes.
    body_timeout: Option<Duration>,
    /// The endpoint answered 101: what follows is no longer a request body.
    upgraded: bool,
    _in_flight: InFlightGuard,
}

impl RequestCtx {
    /// Whether the request's pool still has an endpoint in rotation (healthy, not ejected) that
    /// this request has not failed on: a retry goes only there.
    fn can_retry(&self) -> bool {
        let failed = &self.failed;
        self.pool
            .as_ref()
            .is_some_and(|p| p.has_ready(|a| !failed.contains(a)))
    }
}

/// The status sluice logs and counts for a request whose client left before any response head
/// was sent (nginx's 499 "client closed request"); it is never sent.
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// Whether the client caused `e`: it closed the connection or failed to read or write its side.
/// Such an error is never retried and never counts against an endpoint.
fn client_caused(e: &Error) -> bool {
    e.esource() == &ErrorSource::Downstream
}

/// Routes requests by the live snapshot.
pub struct Router {
    state: Arc<State>,
    options: RouterOptions,
    in_flight: Arc<InFlight>,
    /// Metrics of requests that match no route.
    unrouted: Arc<RouteMetrics>,
    access_log: Option<AccessLog>,
}

impl Router {
    pub fn new(
        state: Arc<State>,
        options: RouterOptions,
        in_flight: Arc<InFlight>,
        access_log: Option<AccessLog>,
    ) -> Router {
        let unrouted = Arc::new(state.metrics().route("", "", ""));
        Router {
            state,
            options,
            in_flight,
            unrouted,
            access_log,
        }
    }
}

/// A new request id: a per-process random prefix and a counter, 32 hex digits.
fn new_request_id() -> String {
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
fn client_request_id<'a>(
    req: &'a RequestHeader,
    peer: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
    trusted: &[Cidr],
) -> Option<&'a str> {
    if trusted.is_empty() {
        return None;
    }
    let ip = peer?.as_inet()?.ip();
    if !trusted.iter().any(|c| c.contains(ip)) {
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
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// How many headers [`Router::upstream_request_filter`] may add: the six above and the
/// client-certificate ones.
const ADDED_HEADERS: usize = 6 + CLIENT_CERT_HEADERS.len();

/// The name Pingora writes for a header whose case it does not hold: its own title case for a
/// few common names, lower case for the rest. Pingora keeps that table private; a unit test
/// holds this copy to what Pingora does.
fn uncased_wire_name(name: &HeaderName) -> &str {
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

/// The upstream request's headers as [`Router::upstream_request_filter`] edits them.
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
    underscores: bool,
) -> Result<()> {
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
    // One buffer for the client address; the X-Forwarded-For value is written, not
    // formatted through intermediate strings.
    let client_ip = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let mut ip = String::with_capacity(40);
    if let Some(addr) = client_ip {
        push_ip(&mut ip, addr);
    }
    let xff = match upstream.map().get(&X_FORWARDED_FOR).map(|v| v.as_bytes()) {
        Some(prev) if !prev.trim_ascii().is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + ip.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(ip.as_bytes());
            HeaderValue::from_maybe_shared(Bytes::from(v))
        }
        _ => HeaderValue::from_str(&ip),
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
    let tls = session.digest().is_some_and(|d| d.ssl_digest.is_some());
    upstream.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    )?;
    // The client's host as received (a copy of its bytes; validated in `request_filter`).
    let host = match target_authority(session.req_header()) {
        Some(a) => HeaderValue::from_str(a).ok(),
        None => session.req_header().headers.get(header::HOST).cloned(),
    };
    if let Some(host) = host {
        upstream.insert(&X_FORWARDED_HOST, host)?;
    }
    if let Some(port) = session
        .server_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.port())
    {
        upstream.insert(&X_FORWARDED_PORT, HeaderValue::from(port))?;
    }
    Ok(())
}

/// The TLS facts of the request's connection: `None` on plain HTTP.
fn conn_tls(session: &Session) -> Option<Option<&ConnTls>> {
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    Some(ssl.extension.get::<ConnTls>())
}

/// The https URL of a plain-HTTP request: host (port removed), then the configured port unless
/// 443, then path and query unchanged.
fn https_location(host: &str, port: u16, req: &RequestHeader) -> String {
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    }
}

/// How a request picks its endpoint under `balance`: for consistent hashing, the hash of its
/// key, or `None` when the request lacks the key.
fn pick_for(
    balance: &Balance,
    req: &RequestHeader,
    client: Option<&pingora_core::protocols::l4::socket::SocketAddr>,
) -> Pick {
    match balance {
        Balance::RoundRobin => Pick::RoundRobin,
        Balance::LeastRequest => Pick::LeastRequest,
        Balance::Ewma => Pick::Ewma,
        Balance::ConsistentHash(by) => Pick::Hash(match by {
            HashBy::RemoteAddr => client.and_then(|a| a.as_inet()).map(|a| match a.ip() {
                std::net::IpAddr::V4(ip) => hash_key(&ip.octets()),
                std::net::IpAddr::V6(ip) => hash_key(&ip.octets()),
            }),
            HashBy::Header(name) => req
                .headers
                .get(name.as_str())
                .map(|v| hash_key(v.as_bytes())),
            HashBy::Cookie(name) => cookie(req, name).map(hash_key),
        }),
    }
}

/// The value of the first cookie named `name` in the request's `Cookie` headers.
pub fn cookie<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a [u8]> {
    req.headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|b| *b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// Size of the request head as received: request line plus header lines.
fn head_size(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// A short plain-text body for statuses sluice produces itself.
fn error_body(code: u16) -> &'static str {
    match code {
        400 => "400 Bad Request\n",
        403 => "403 Forbidden: this host requires a client certificate over https\n",
        408 => "408 Request Timeout\n",
        413 => "413 Content Too Large\n",
        308 => "308 Permanent Redirect: use https\n",
        404 => "404 Not Found: no route for this host and path\n",
        421 => "421 Misdirected Request: this host requires its own TLS connection\n",
        431 => "431 Request Header Fields Too Large\n",
        502 => "502 Bad Gateway\n",
        503 => "503 Service Unavailable: no ready endpoint for this route\n",
        504 => "504 Gateway Timeout\n",
        _ => "error\n",
    }
}

/// Answers a request without proxying it, keeping the connection open for the next one.
async fn respond(session: &mut Session, code: u16) -> Result<bool> {
    respond_with(session, code, None).await
}

/// As [`respond`], with a `Location` header.
async fn respond_with(session: &mut Session, code: u16, location: Option<String>) -> Result<bool> {
    let body = error_body(code);
    let mut resp = ResponseHeader::build(code, Some(4))?;
    if let Some(location) = location {
        resp.insert_header(header::LOCATION, location)?;
    }
    resp.insert_header(header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(header::CACHE_CONTROL, "no-store")?;
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from_static(body.as_bytes())), true)
        .await?;
    Ok(true)
}

/// The status for an error that ended a proxied request.
pub fn status_for(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                // A client silent between two body reads past `client_body_timeout`.
                ErrorType::ReadTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 502,
        },
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

/// What [`Router::decide`] found for a request.
enum Decision {
    Proxy(Arc<Pool>),
    /// Answer with this status and a short body.
    Respond(u16),
    /// 308 to this https URL.
    Redirect(String),
}

impl Router {
    /// Routes a request and applies the TLS rules, from one load of the live state:
    ///
    /// - over TLS, when the request's host or the connection's server name asks for client
    ///   certificates, the two must be the same name, else 421: a verified connection serves
    ///   only its own name, and a name with client authentication is served only on its own
    ///   connections (this stops HTTP/2 connection coalescing and domain fronting);
    /// - over plain HTTP, a host with TLS whose route's Ingress keeps `sluice.dev/ssl-redirect`
    ///   gets a 308 to https; a host in `verify` mode always does (403 without an HTTPS
    ///   listener), so it is never served in plain text;
    /// - then 404 without a route, 503 without a ready endpoint.
    fn decide(&self, session: &Session, ctx: &mut RequestCtx) -> Decision {
        let req = session.req_header();
        let tls = conn_tls(session);
        let live = self.state.live();
        let host = ctx.host.as_str();
        let host_tls = live.tls_policy.find_normalized(host);
        let host_mode = host_tls.map(|h| h.client_auth.mode).unwrap_or_default();
        let mut redirect = false;
        match tls {
            Some(conn) => {
                let sni_mode = conn.map(|c| c.mode).unwrap_or_default();
                if host_mode.asks_for_certificate() || sni_mode.asks_for_certificate() {
                    let sni = conn.and_then(|c| c.sni.as_deref());
                    if sni != Some(host) {
                        return Decision::Respond(421);
                    }
                }
            }
            None if host_mode == ClientAuthMode::Verify => {
                if !self.options.https {
                    return Decision::Respond(403);
                }
                redirect = true;
            }
            None => {}
        }
        let path = ctx.path.as_deref().unwrap_or(req.uri.path());
        let Some(route) = live.routes.find_normalized(host, &match_path(path)) else {
            return Decision::Respond(404);
        };
        if tls.is_none() && host_tls.is_some() && self.options.ssl_redirect {
            redirect |= route.ssl_redirect;
        }
        if redirect {
            return Decision::Redirect(https_location(host, self.options.redirect_port, req));
        }
        ctx.route = Some(route.metrics.clone());
        {
            let policy = &route.policy;
            ctx.timeouts = policy.timeouts;
            ctx.protocol = policy.protocol.unwrap_or_default();
            ctx.forward_raw_path = policy.forward_raw_path;
            // gRPC client streams are long by nature: no default limit, and the read timeout
            // already governs them.
            let grpc = matches!(ctx.protocol, BackendProtocol::Grpc | BackendProtocol::Grpcs);
            let default_max = if grpc {
                0
            } else {
                self.options.max_request_body_bytes
            };
            ctx.body = BodyLimit::new(policy.max_body_bytes.unwrap_or(default_max));
            ctx.body_timeout = match policy.client_body_timeout {
                Some(t) => Some(t),
                None if grpc => None,
                None => Some(self.options.client_body_timeout),
            };
            let balance = policy
                .balance
                .as_ref()
                .unwrap_or(&self.options.load_balance);
            ctx.pick = pick_for(balance, req, session.client_addr());
            if let Some(a) = &policy.affinity {
                let token = cookie(req, &a.name)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| u64::from_str_radix(v, 16).ok());
                ctx.affinity = Some((a.clone(), token));
            }
        }
        match &route.pool {
            Some(pool) if !pool.is_empty() => Decision::Proxy(pool.clone()),
            _ => Decision::Respond(503),
        }
    }
}

#[async_trait]
impl ProxyHttp for Router {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            start: Instant::now(),
            pool: None,
            route: None,
            timeouts: Timeouts::default(),
            protocol: BackendProtocol::Http,
            pick: Pick::RoundRobin,
            affinity: None,
            set_affinity: None,
            responded: false,
            attempt: None,
            failed: Vec::new(),
            attempts: 0,
            upstream_start: None,
            upstream: None,
            request_id: String::new(),
            host: String::new(),
            path: None,
            forward_raw_path: false,
            body: BodyLimit::new(self.options.max_request_body_bytes),
            body_timeout: Some(self.options.client_body_timeout),
            upgraded: false,
            _in_flight: InFlightGuard::new(&self.in_flight),
        }
    }

    /// Reads the request's host and path once (400 when they are not usable, see
    /// [`crate::request`]), finds the route, and answers 404/413/431/503 itself when there is
    /// nothing to proxy to.
    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // A client that stops reading must not hold buffers and an upstream connection forever.
        session.set_write_timeout(Some(self.options.client_send_timeout));
        let req = session.req_header();
        let trusted = &self.options.trusted_proxies;
        ctx.request_id = match client_request_id(req, session.client_addr(), trusted) {
            Some(id) => id.to_string(),
            None => new_request_id(),
        };
        if head_size(req) > self.options.max_request_header_bytes {
            return respond(session, 431).await;
        }
        let facts = request_host(req)
            .map(|h| h.into_owned())
            .and_then(|h| Ok((h, request_path(req)?)));
        match facts {
            Ok((host, path)) => (ctx.host, ctx.path) = (host, path),
            Err(refusal) => {
                // The rest of the connection cannot be trusted to frame requests as we do.
                session.set_keepalive(None);
                return respond(session, refusal.status()).await;
            }
        }
        let decision = self.decide(session, ctx);
        match decision {
            Decision::Proxy(pool) => {
                ctx.pool = Some(pool);
                if content_length(session.req_header()).is_some_and(|n| ctx.body.refuses(n)) {
                    // The body is not read: the connection closes after the answer.
                    session.set_keepalive(None);
                    return respond(session, 413).await;
                }
                // A deadline between two body reads (`client_body_timeout`); a WebSocket's
                // bytes after its 101 are not a body and keep no such deadline.
                if !session.is_body_empty() && !session.is_upgrade_req() {
                    session.set_read_timeout(ctx.body_timeout);
                }
                Ok(false)
            }
            Decision::Respond(code) => respond(session, code).await,
            Decision::Redirect(location) => respond_with(session, 308, Some(location)).await,
        }
    }

    /// Picks the next endpoint that this request has not failed on.
    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        ctx.attempts += 1;
        let Some(pool) = ctx.pool.as_ref() else {
            return Error::e_explain(ErrorType::HTTPStatus(503), "no pool for this request");
        };
        let failed = &ctx.failed;
        let accept = |a: &SocketAddr| !failed.contains(a);
        let sticky = match &ctx.affinity {
            Some((_, Some(token))) => pool.by_token(*token, accept),
            _ => None,
        };
        // A first attempt fails open (see `Pool::pick`); a retry goes only to an endpoint in
        // rotation, never to one ejected or failing its health checks.
        let picked = || match failed.is_empty() {
            true => pool.pick(ctx.pick, accept),
            false => pool.pick_ready(ctx.pick, accept),
        };
        let Some(endpoint) = sticky.or_else(picked) else {
            let code = if failed.is_empty() { 503 } else { 502 };
            return Error::e_explain(
                ErrorType::HTTPStatus(code),
                format!("no endpoint left to try in {}", pool.key()),
            );
        };
        let addr = endpoint.addr();
        ctx.set_affinity = match &ctx.affinity {
            Some((_, token)) if *token != Some(endpoint.token()) => Some(endpoint.token()),
            _ => None,
        };
        // Replacing a failed attempt ends its in-flight count.
        let now = Instant::now();
        ctx.attempt = Some(endpoint.begin_at(now));
        ctx.upstream_start.get_or_insert(now);
        ctx.upstream = Some(addr);
        let upgrade = session.is_upgrade_req();
        let tls = ctx.protocol.tls();
        let sni = if tls {
            upstream_sni(&ctx.host)
        } else {
            String::new()
        };
        let mut peer = HttpPeer::new(addr, tls, sni);
        set_protocol(&mut peer.options, ctx.protocol, upgrade);
        let o = &mut peer.options;
        let (t, d) = (&ctx.timeouts, &self.options);
        o.connection_timeout = Some(t.connect.unwrap_or(d.connect_timeout));
        o.read_timeout = Some(t.read.unwrap_or(d.read_timeout));
        o.write_timeout = Some(t.send.unwrap_or(d.write_timeout));
        o.idle_timeout = Some(self.options.idle_timeout);
        Ok(Box::new(peer))
    }

    /// Adds the forwarding headers.
    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // The path routing read, in origin form, and the host routing read.
        let original = session.req_header();
        if let Some(uri) = upstream_target(original, ctx.path.as_deref(), ctx.forward_raw_path)? {
            upstream.set_uri(uri);
        }
        if original.headers.get(header::HOST).is_none() {
            if let Some(authority) =
                target_authority(original).filter(|_| original.version < http::Version::HTTP_2)
            {
                let value = HeaderValue::from_str(authority)
                    .or_err(ErrorType::InvalidHTTPHeader, "host")?;
                upstream.insert_header(header::HOST, value)?;
            }
        }
        let underscores = self.options.underscores_in_headers;
        if header_case_matters(upstream) {
            return forwarding_headers(session, UpstreamHeaders::Cased(upstream), ctx, underscores);
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
            underscores,
        );
        *upstream = RequestHeader::from(parts);
        if let Some(end_stream) = end_stream {
            upstream.set_send_end_stream(end_stream);
        }
        added
    }

    /// Retries a failed connect on another endpoint until the configured retries are spent.
    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let Some(addr) = peer.address().as_inet() {
            ctx.failed.push(*addr);
        }
        // A failed connect counts towards ejection, and says nothing about response time.
        if let (Some(pool), Some(attempt)) = (&ctx.pool, ctx.attempt.take()) {
            pool.report(attempt.endpoint(), false);
        }
        let route = ctx.route.as_deref().unwrap_or(&self.unrouted);
        route.connect_errors.inc();
        if ctx.attempts <= self.options.connect_retries && ctx.can_retry() {
            e.set_retry(true);
            route.retries.inc();
        }
        e
    }

    /// Records the endpoint's time to the response head for latency-aware balancing, and its
    /// answer (5xx or not) for passive ejection.
    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        ctx.responded = true;
        ctx.upgraded |= status == 101;
        if let Some(attempt) = ctx.attempt.as_mut() {
            if status >= 200 || status == 101 {
                let now = Instant::now();
                attempt.observe_response_at(now);
                if let Some(pool) = &ctx.pool {
                    pool.report_at(attempt.endpoint(), status < 500, now);
                }
            }
        }
        Ok(())
    }

    /// Counts the body read from the client against the route's limit: a body that grows
    /// over it ends the request with 413 (the part already sent upstream is cut off there).
    /// Bytes after a 101 (a WebSocket) are not a body and are not counted.
    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            if !ctx.upgraded && ctx.body.add(chunk.len()) {
                return Error::e_explain(
                    ErrorType::HTTPStatus(413),
                    format!("request body over the limit of {} bytes", ctx.body.max),
                );
            }
        }
        Ok(())
    }

    /// Sets the affinity cookie when the client's cookie named no usable endpoint.
    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let (Some((affinity, _)), Some(token)) = (&ctx.affinity, ctx.set_affinity) {
            let mut value = format!("{}={token:016x}; Path=/; HttpOnly", affinity.name);
            if let Some(age) = affinity.max_age {
                value.push_str(&format!("; Max-Age={}", age.as_secs().max(1)));
            }
            upstream_response.append_header(header::SET_COOKIE, value)?;
        }
        Ok(())
    }

    /// Decides whether an error after connecting is retried on another endpoint.
    ///
    /// Pingora's own rule stays: never a non-idempotent request (its bytes may have reached the
    /// endpoint; as nginx's `proxy_next_upstream` without `non_idempotent`), nor one whose body
    /// no longer fits the retry buffer; a stale reused connection is retried. On top of it, an
    /// idempotent request whose connection reset or closed before any response byte is retried
    /// on another endpoint in rotation, within `upstream.connect_retries` attempts in all. An
    /// error whose source is the client (Pingora's `ErrorSource::Downstream`) is never retried.
    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if client_caused(&e) {
            // The client went away (or broke its side of the exchange): the endpoint did
            // nothing wrong and another one would only be sent a request nobody waits for.
            // Returning the error drops the upstream connection, which cancels the request
            // there.
            e.set_retry(false);
            return e;
        }
        let replayable = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if !replayable {
            e.set_retry(false);
            return e;
        }
        e.retry.decide_reuse(client_reused);
        let reset = matches!(
            e.etype(),
            ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
        );
        if reset && !ctx.responded && ctx.attempts <= self.options.connect_retries {
            if let Some(addr) = peer.address().as_inet() {
                ctx.failed.push(*addr);
            }
            if !ctx.can_retry() {
                e.set_retry(false);
                return e;
            }
            let route = ctx.route.as_deref().unwrap_or(&self.unrouted);
            route.retries.inc();
            e.set_retry(true);
        }
        e
    }

    /// Counts the request and writes its access-log line.
    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let written = session.response_written().map(|r| r.status.as_u16());
        // A client that left before any response head was sent is a client abort, logged and
        // counted as 499 (as nginx does), never as an answer of the endpoint.
        let aborted = written.is_none() && e.is_some_and(client_caused);
        // An attempt that ended without a response head (a timeout, a reset) counts as slow as it
        // lasted, unless the client cut it short; then the endpoint's in-flight count ends.
        if let Some(mut attempt) = ctx.attempt.take() {
            if !aborted {
                attempt.observe_response();
            }
        }
        let status = match (written, aborted) {
            (Some(code), _) => code,
            (None, true) => CLIENT_CLOSED_REQUEST,
            (None, false) => 0,
        };
        let now = Instant::now();
        let duration = now.saturating_duration_since(ctx.start);
        let upstream_duration = ctx.upstream_start.map(|t| now.saturating_duration_since(t));
        let route = ctx.route.as_deref().unwrap_or(&self.unrouted);
        let req = session.req_header();
        route.duration.observe(duration.as_secs_f64());
        if let Some(d) = upstream_duration {
            route.upstream.observe(d.as_secs_f64());
        }
        // Counted last: a test (or a dashboard) that sees the count also sees the durations.
        route.count(req.method.as_str(), status);
        let Some(log) = &self.access_log else {
            return;
        };
        let header = |name: header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let [namespace, ingress, service] = route.labels();
        let protocol = match req.version {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        log.log(&Record {
            time: k8s_openapi::jiff::Timestamp::now(),
            client: session
                .client_addr()
                .and_then(|a| a.as_inet())
                .map(|a| a.ip()),
            method: req.method.as_str(),
            host: raw_host(req),
            path: req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
            protocol,
            status,
            bytes: session.as_downstream().body_bytes_sent(),
            duration,
            upstream_duration,
            namespace,
            ingress,
            service,
            upstream: ctx.upstream,
            request_id: &ctx.request_id,
            referer: header(header::REFERER),
            user_agent: header(header::USER_AGENT),
        });
    }

    /// Maps the error to a status and answers with a short plain body.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        _ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = status_for(e);
        if code > 0 {
            tracing::debug!(status = code, error = %e, "request failed");
            let body = Bytes::from_static(error_body(code).as_bytes());
            if let Err(err) = session.respond_error_with_body(code, body).await {
                tracing::debug!(error = %err, "could not send the error response");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pingora writes a header it holds no case for under the name `into_case_header_name`
    /// gives; the copy of its title-case table must agree, or a request taken off the
    /// case-preserving path would reach the backend with names in another case.
    #[test]
    fn the_uncased_wire_name_is_the_one_pingora_writes() {
        use header::*;
        use pingora_http::IntoCaseHeaderName;
        let names = [
            ACCEPT,
            ACCEPT_CHARSET,
            ACCEPT_ENCODING,
            ACCEPT_LANGUAGE,
            ACCEPT_RANGES,
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_REQUEST_METHOD,
            AGE,
            ALLOW,
            AUTHORIZATION,
            CACHE_CONTROL,
            CONNECTION,
            CONTENT_DISPOSITION,
            CONTENT_ENCODING,
            CONTENT_LANGUAGE,
            CONTENT_LENGTH,
            CONTENT_LOCATION,
            CONTENT_RANGE,
            CONTENT_TYPE,
            COOKIE,
            DATE,
            ETAG,
            EXPECT,
            EXPIRES,
            FORWARDED,
            FROM,
            HOST,
            IF_MATCH,
            IF_MODIFIED_SINCE,
            IF_NONE_MATCH,
            IF_RANGE,
            IF_UNMODIFIED_SINCE,
            LAST_MODIFIED,
            LINK,
            LOCATION,
            ORIGIN,
            PRAGMA,
            PROXY_AUTHORIZATION,
            RANGE,
            REFERER,
            RETRY_AFTER,
            SEC_WEBSOCKET_KEY,
            SEC_WEBSOCKET_VERSION,
            SERVER,
            SET_COOKIE,
            TE,
            TRAILER,
            TRANSFER_ENCODING,
            UPGRADE,
            USER_AGENT,
            VARY,
            VIA,
            WWW_AUTHENTICATE,
            X_FORWARDED_FOR.clone(),
            HeaderName::from_static("x-custom"),
        ];
        for name in names {
            assert_eq!(
                uncased_wire_name(&name).as_bytes(),
                (&name).into_case_header_name().as_slice(),
                "{name}"
            );
        }
    }

    #[test]
    fn generated_request_ids_are_32_lowercase_hex_digits_and_never_repeat() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32, "{id}");
            assert!(
                id.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{id}"
            );
        }
        assert_ne!(a, b);
        // Same prefix, counter one apart.
        assert_eq!(a[..16], b[..16]);
        let n = |id: &str| u64::from_str_radix(&id[16..], 16).unwrap();
        assert!(n(&b) > n(&a));
        let mut s = String::new();
        push_hex(&mut s, 0x0123_4567_89ab_cdef);
        assert_eq!(s, format!("{:016x}", 0x0123_4567_89ab_cdef_u64));
    }
}
