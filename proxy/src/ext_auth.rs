//! External authentication (`sluice.dev/auth-url`): before a request of the route is proxied,
//! an auth service decides whether it may be.
//!
//! The order of one check ([`ExtAuthClient::check`]):
//! 1. with `sluice.dev/auth-cache-duration`, the answer kept under the request's
//!    `auth-cache-key` (rendered from its headers, cookies, address, host or URI) is used when
//!    it has not expired; a key whose variable the request lacks is never looked up nor stored;
//! 2. else a subrequest goes to the auth service: `GET` of the auth URL's path, no body, with
//!    the client's headers (those `auth-request-headers` names, else all but hop-by-hop, body
//!    and the ones below), and `X-Original-URL`, `X-Original-Method`,
//!    `X-Auth-Request-Redirect` (the original path and query), `X-Forwarded-For` and
//!    `X-Real-IP` (the real client address), `X-Forwarded-Host`, `X-Forwarded-Proto` and
//!    `X-Request-Id` written by sluice (what the client sent under those names is not passed on);
//! 3. the answer decides: 2xx lets the request through, the headers `auth-response-headers`
//!    names copied from the answer onto the upstream request (the client's own values of those
//!    names are removed whatever the answer carries, so a client cannot pose as a user); 401
//!    becomes 302 to `auth-signin` with `rd=` the original URL, or without it 401 with the
//!    answer's `WWW-Authenticate`; 403 is 403; anything else, a connection failure, an auth
//!    Service without endpoints, or no answer within `auth-timeout` (default 5 s) is 500. The
//!    request never reaches the upstream unless step 3 allowed it (fail closed).
//!
//! Subrequests have their own pool of keepalive connections (Pingora's HTTP/1.1 connector;
//! TLS for `https` URLs, the certificate verified for the URL's host), idle ones kept
//! [`AUTH_KEEPALIVE_IDLE`]. An in-cluster Service (`<service>.<namespace>.svc`) is reached
//! through its endpoints as a backend pool is, round robin; any other host through the system
//! resolver, its addresses kept [`AUTH_DNS_TTL`] and taken in turn (an IP literal directly).
//! A pooled connection the auth service closed meanwhile is retried once on a new one. An
//! answer body is read and dropped (up to [`MAX_AUTH_BODY_BYTES`], beyond which the connection
//! is not reused).
//!
//! The cache is bounded: at most [`MAX_AUTH_CACHE_BYTES`] of keys and kept headers. When it is
//! full, expired answers are dropped; if it is still full, new answers are not kept (requests
//! are then asked for, never refused), so a flood of distinct keys costs subrequests, not
//! memory. Keys are compared whole (never by hash alone), so two clients never share an
//! answer unless their rendered keys are equal.
//!
//! A 2xx answer's `Set-Cookie` values are added to the response to the client (not kept in
//! the cache: a cookie belongs to one client).
//!
//! Each subrequest's duration is observed in `sluice_auth_request_duration_seconds` by
//! Ingress and outcome (`allowed`, `unauthorized`, `forbidden`, `failed`, `timeout`), cache hits
//! are counted in `sluice_auth_cache_hits_total`, and the access log's `auth_duration_s` is the
//! time the check took (a cache hit included).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use pingora_core::connectors::http::v1::Connector;
use pingora_core::protocols::http::v1::client::HttpSession;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use sluice_config::model::ObjectRef;
use sluice_config::rules::ext_auth::{ExtAuth, KeyPart};
use sluice_config::rules::is_protected_header;
use sluice_config::PoolKey;

use crate::metrics::RouteMetrics;
use crate::pool::{Pick, Pool};
use crate::router::{cookie, RedirectStatus, Refusal};

/// How long the addresses a host name resolved to are used before it is resolved again.
pub const AUTH_DNS_TTL: Duration = Duration::from_secs(10);
/// How long an idle subrequest connection is kept for the next one.
pub const AUTH_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// The longest answer body read, in bytes; a longer one is dropped with its connection.
pub const MAX_AUTH_BODY_BYTES: usize = 64 * 1024;
/// The memory the answer cache may hold, in bytes (keys, kept headers and a fixed cost per
/// entry).
pub const MAX_AUTH_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// The longest rendered cache key, in bytes; a request with a longer one is not cached.
pub const MAX_AUTH_CACHE_KEY_BYTES: usize = 4096;
/// The cost counted per cache entry besides its key and headers, in bytes.
const CACHE_ENTRY_BYTES: usize = 96;

/// One route's external auth, compiled at publish: names and values parsed, the in-cluster
/// pool found.
pub struct Check {
    config: ExtAuth,
    /// What, besides the Ingress and host, an answer in the cache is kept for: the auth URL and
    /// the response headers kept.
    cache_scope: String,
    target: Target,
    host: HeaderValue,
    sni: String,
    request_headers: Option<Box<[HeaderName]>>,
    response_headers: Box<[HeaderName]>,
}

enum Target {
    /// The endpoints of the in-cluster Service.
    Pool(Arc<Pool>),
    /// The URL's host: an IP literal as is, a name through the system resolver
    /// ([`AUTH_DNS_TTL`]).
    Host,
}

impl Check {
    /// The check of a route's `ExtAuth` filter; `None` when its in-cluster Service could not be
    /// resolved (reported at build) or a name does not parse: the route fails closed.
    pub fn compile(auth: &ExtAuth, pools: &HashMap<PoolKey, Arc<Pool>>) -> Option<Check> {
        let target = match &auth.service {
            Some(service) => Target::Pool(pools.get(service.pool.as_ref()?)?.clone()),
            None => Target::Host,
        };
        let default_port = if auth.tls { 443 } else { 80 };
        let host = match (auth.host.contains(':'), auth.port == default_port) {
            (false, true) => auth.host.clone(),
            (false, false) => format!("{}:{}", auth.host, auth.port),
            (true, true) => format!("[{}]", auth.host),
            (true, false) => format!("[{}]:{}", auth.host, auth.port),
        };
        let names = |list: &[String]| -> Option<Box<[HeaderName]>> {
            list.iter()
                .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect()
        };
        let ip = auth.host.parse::<IpAddr>().is_ok();
        Some(Check {
            target,
            host: HeaderValue::from_str(&host).ok()?,
            sni: if ip { String::new() } else { auth.host.clone() },
            request_headers: match &auth.request_headers {
                Some(list) => Some(names(list)?),
                None => None,
            },
            response_headers: names(&auth.response_headers)?,
            cache_scope: format!("{} {}", auth.url, auth.response_headers.join(",")),
            config: auth.clone(),
        })
    }

    /// Whether `other` says the same and reaches the very same pool.
    pub fn same_as(&self, other: &Check) -> bool {
        self.config == other.config
            && match (&self.target, &other.target) {
                (Target::Pool(a), Target::Pool(b)) => Arc::ptr_eq(a, b),
                (Target::Host, Target::Host) => true,
                _ => false,
            }
    }

    /// The pool of the in-cluster auth Service, if the URL names one.
    pub fn pool(&self) -> Option<&Arc<Pool>> {
        match &self.target {
            Target::Pool(pool) => Some(pool),
            Target::Host => None,
        }
    }
}

/// The request being checked, as routing read it.
pub struct Subject<'a> {
    pub req: &'a RequestHeader,
    /// The Ingress of the route.
    pub ingress: &'a ObjectRef,
    /// The routed host (`$host`).
    pub host: &'a str,
    /// The host as the client sent it (for `X-Original-URL`).
    pub raw_host: &'a str,
    /// The client reached sluice (or a trusted proxy in front) over https.
    pub https: bool,
    /// The real client address.
    pub client: Option<IpAddr>,
    pub request_id: &'a str,
}

impl Subject<'_> {
    /// Path and query as received (`$request_uri`).
    fn uri(&self) -> &str {
        self.req.uri.path_and_query().map_or("/", |p| p.as_str())
    }

    /// The URL the client asked for.
    fn original_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}{}", self.raw_host, self.uri())
    }
}

/// What the auth service said, as far as it matters: the status, and the headers kept (for a
/// 2xx those `auth-response-headers` names, for a 401 its `WWW-Authenticate`).
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The `Set-Cookie` values of a 2xx, for the client's response; never cached.
    cookies: Vec<HeaderValue>,
}

impl Answer {
    fn size(&self) -> usize {
        self.headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len())
            .sum()
    }
}

/// A request the auth service let through: the headers to set on its upstream request, and
/// the cookies to set on its response.
pub struct Passed {
    check: Arc<Check>,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: Vec<HeaderValue>,
}

impl Passed {
    /// Removes the client's values of every `auth-response-headers` name from the upstream
    /// request, then adds the auth service's.
    pub fn apply(&self, upstream: &mut RequestHeader) -> Result<()> {
        for name in self.check.response_headers.iter() {
            upstream.remove_header(name);
        }
        for (name, value) in &self.headers {
            upstream.append_header(name.clone(), value.clone())?;
        }
        Ok(())
    }

    /// Adds the auth answer's `Set-Cookie` values to the response (a session the auth service
    /// refreshed reaches the client, as with ingress-nginx).
    pub fn set_cookies(&self, response: &mut ResponseHeader) -> Result<()> {
        for cookie in &self.cookies {
            response.append_header(header::SET_COOKIE, cookie.clone())?;
        }
        Ok(())
    }
}

/// Why a subrequest gave no answer.
#[derive(Debug)]
enum Failure {
    Timeout,
    Failed(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Timeout => f.write_str("no answer within the auth timeout"),
            Failure::Failed(why) => f.write_str(why),
        }
    }
}

/// The subrequests of every route: their connection pool, the answer cache, the metrics.
pub struct ExtAuthClient {
    connector: Connector,
    cache: Mutex<Cache>,
    cache_hits: prometheus::IntCounter,
    resolved: Mutex<HashMap<(String, u16), Resolved>>,
}

/// The addresses a host name resolved to, when, and whose turn is next.
struct Resolved {
    addrs: Vec<SocketAddr>,
    at: Instant,
    turn: usize,
}

impl ExtAuthClient {
    pub fn new(cache_hits: prometheus::IntCounter) -> ExtAuthClient {
        ExtAuthClient {
            connector: Connector::new(None),
            cache: Mutex::new(Cache::default()),
            cache_hits,
            resolved: Mutex::new(HashMap::new()),
        }
    }

    /// Asks (or finds in the cache) whether the request may go on: `Ok` with the headers for
    /// its upstream request, else the answer to give the client. `metrics` are the route's,
    /// where the subrequest's duration is observed.
    pub async fn check(
        &self,
        check: &Arc<Check>,
        subject: &Subject<'_>,
        metrics: &RouteMetrics,
    ) -> Result<Passed, Refusal> {
        let key = check.config.cache.as_ref().and_then(|c| {
            // Answers are not shared past the Ingress and host they were given for: an
            // auth service may decide by host, and another route may keep other headers.
            let ingress = subject.ingress;
            let scope = [
                &ingress.namespace,
                &ingress.name,
                subject.host,
                &check.cache_scope,
            ];
            cache_key(&scope, &c.key, subject)
        });
        let cached = key
            .as_ref()
            .and_then(|k| self.cache().get(k, Instant::now()));
        let answer = match cached {
            Some(answer) => {
                self.cache_hits.inc();
                answer
            }
            None => {
                let start = Instant::now();
                let asked = tokio::time::timeout(check.config.timeout, self.ask(check, subject))
                    .await
                    .unwrap_or(Err(Failure::Timeout));
                let outcome = match &asked {
                    Ok(a) => outcome(a.status),
                    Err(Failure::Timeout) => "timeout",
                    Err(Failure::Failed(_)) => "failed",
                };
                metrics.observe_auth(outcome, start.elapsed().as_secs_f64());
                let answer = match asked {
                    Ok(answer) => answer,
                    Err(e) => {
                        tracing::debug!(url = %check.config.url, error = %e, "auth subrequest failed");
                        return Err(Refusal::Internal);
                    }
                };
                let ttl = check.config.cache.as_ref().map(|c| c.ttl_of(answer.status));
                if let (Some(key), Some(Some(ttl))) = (key, ttl) {
                    // A cookie is one client's: a key that several clients share (an address
                    // behind NAT) must not hand it to the others.
                    let kept = Answer {
                        cookies: Vec::new(),
                        ..answer.clone()
                    };
                    self.cache().put(key, kept, Instant::now() + ttl);
                }
                answer
            }
        };
        verdict(check, subject, answer)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One subrequest; a pooled connection that fails is retried once on a new one.
    async fn ask(&self, check: &Check, subject: &Subject<'_>) -> Result<Answer, Failure> {
        let head = auth_request(check, subject).map_err(|e| Failure::Failed(e.to_string()))?;
        let addr = self.address(check).await?;
        let mut peer = HttpPeer::new(addr, check.config.tls, check.sni.clone());
        peer.options.connection_timeout = Some(check.config.timeout);
        peer.options.idle_timeout = Some(AUTH_KEEPALIVE_IDLE);
        let mut retried = false;
        loop {
            let (mut session, reused) = self
                .connector
                .get_http_session(&peer)
                .await
                .map_err(|e| Failure::Failed(e.to_string()))?;
            match exchange(&mut session, check, head.clone()).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        let idle = Some(AUTH_KEEPALIVE_IDLE);
                        self.connector
                            .release_http_session(session, &peer, idle)
                            .await;
                    }
                    return Ok(answer);
                }
                // The auth service may have closed an idle connection as it was taken.
                Err(_) if reused && !retried => retried = true,
                Err(e) => return Err(Failure::Failed(e.to_string())),
            }
        }
    }
}

impl ExtAuthClient {
    /// Where the subrequest goes: an endpoint of the in-cluster Service, else the URL's host.
    async fn address(&self, check: &Check) -> Result<SocketAddr, Failure> {
        let port = check.config.port;
        let host = check.config.host.as_str();
        match &check.target {
            Target::Pool(pool) => pool
                .pick(Pick::RoundRobin, |_| true)
                .map(|e| e.addr())
                .ok_or_else(|| Failure::Failed(format!("no endpoint in {}", pool.key()))),
            Target::Host => match host.parse::<IpAddr>() {
                Ok(ip) => Ok(SocketAddr::new(ip, port)),
                Err(_) => self.resolve(host, port).await,
            },
        }
    }

    /// One of the addresses `host` resolves to, in turn; resolved again after
    /// [`AUTH_DNS_TTL`]. A failed resolution is not kept.
    async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, Failure> {
        let key = (host.to_string(), port);
        let now = Instant::now();
        let kept = |map: &mut HashMap<(String, u16), Resolved>| {
            let entry = map.get_mut(&key).filter(|r| now < r.at + AUTH_DNS_TTL)?;
            entry.turn = entry.turn.wrapping_add(1);
            entry.addrs.get(entry.turn % entry.addrs.len()).copied()
        };
        if let Some(addr) = kept(&mut self.resolved()) {
            return Ok(addr);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Failure::Failed(format!("resolving {host}: {e}")))?
            .collect();
        let first = *addrs
            .first()
            .ok_or_else(|| Failure::Failed(format!("{host} has no address")))?;
        let mut map = self.resolved();
        // Hosts no annotation names any more leave with their expiry.
        map.retain(|_, r| now < r.at + AUTH_DNS_TTL);
        map.insert(
            key,
            Resolved {
                addrs,
                at: now,
                turn: 0,
            },
        );
        Ok(first)
    }

    fn resolved(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u16), Resolved>> {
        self.resolved.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The outcome label of an answer's status.
fn outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "allowed",
        401 => "unauthorized",
        403 => "forbidden",
        _ => "failed",
    }
}

/// The answer's meaning for the request (see the module's step 3).
fn verdict(check: &Arc<Check>, subject: &Subject<'_>, answer: Answer) -> Result<Passed, Refusal> {
    match answer.status {
        200..=299 => Ok(Passed {
            check: check.clone(),
            headers: answer.headers,
            cookies: answer.cookies,
        }),
        401 => match &check.config.signin {
            Some(signin) => Err(Refusal::Redirect {
                status: RedirectStatus::Found,
                location: signin_location(signin, &subject.original_url()),
            }),
            None => Err(Refusal::AuthChallenge {
                challenges: answer.headers.into_iter().map(|(_, v)| v).collect(),
            }),
        },
        403 => Err(Refusal::Denied),
        _ => Err(Refusal::Internal),
    }
}

/// The sign-in URL with `rd=` the original URL, percent-encoded, unless it has an `rd=`
/// already (as ingress-nginx).
fn signin_location(signin: &str, original: &str) -> String {
    if signin.contains("rd=") {
        return signin.to_string();
    }
    let mut out = String::with_capacity(signin.len() + 4 + original.len() * 3);
    out.push_str(signin);
    out.push(if signin.contains('?') { '&' } else { '?' });
    out.push_str("rd=");
    for b in original.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Client headers never sent to the auth service besides those sluice owns
/// ([`is_protected_header`]: hop-by-hop, framing, `Host`, `X-Forwarded-*`, `X-Real-IP`, ...):
/// the other body headers, and the ones it writes for the auth service.
const NOT_SENT: &[&str] = &[
    "content-type",
    "content-encoding",
    "expect",
    "x-original-url",
    "x-original-method",
    "x-auth-request-redirect",
];

/// The subrequest's head (see the module's step 2).
fn auth_request(check: &Check, subject: &Subject<'_>) -> Result<RequestHeader> {
    let req = subject.req;
    let mut head = RequestHeader::build("GET", check.config.path.as_bytes(), Some(16))?;
    head.insert_header(header::HOST, check.host.clone())?;
    let invalid = |e| {
        pingora_error::Error::because(
            pingora_error::ErrorType::InvalidHTTPHeader,
            "auth request",
            e,
        )
    };
    let sent = |name: &HeaderName| {
        !NOT_SENT.contains(&name.as_str()) && !is_protected_header(name.as_str())
    };
    let names: Vec<&HeaderName> = match &check.request_headers {
        Some(names) => names.iter().collect(),
        None => req.headers.keys().collect(),
    };
    for name in names.into_iter().filter(|n| sent(n)) {
        let values = req.headers.get_all(name);
        if *name == header::COOKIE && values.iter().nth(1).is_some() {
            // An HTTP/2 client may split its cookies over several fields; they travel to an
            // HTTP/1.1 server as one (RFC 9113, 8.2.3).
            let mut joined = Vec::new();
            for (i, value) in values.iter().enumerate() {
                if i > 0 {
                    joined.extend_from_slice(b"; ");
                }
                joined.extend_from_slice(value.as_bytes());
            }
            let joined = HeaderValue::from_bytes(&joined).map_err(invalid)?;
            head.append_header(name.clone(), joined)?;
            continue;
        }
        for value in values {
            head.append_header(name.clone(), value.clone())?;
        }
    }
    let text = |v: &str| HeaderValue::from_str(v);
    head.insert_header(
        "x-original-url",
        text(&subject.original_url()).map_err(invalid)?,
    )?;
    head.insert_header("x-original-method", req.method.as_str())?;
    head.insert_header(
        "x-auth-request-redirect",
        text(subject.uri()).map_err(invalid)?,
    )?;
    head.insert_header("x-forwarded-host", text(subject.raw_host).map_err(invalid)?)?;
    head.insert_header(
        "x-forwarded-proto",
        if subject.https { "https" } else { "http" },
    )?;
    if let Some(ip) = subject.client {
        let ip = ip.to_string();
        head.insert_header("x-forwarded-for", ip.as_str())?;
        head.insert_header("x-real-ip", ip)?;
    }
    if !subject.request_id.is_empty() {
        head.insert_header("x-request-id", text(subject.request_id).map_err(invalid)?)?;
    }
    Ok(head)
}

/// Writes the request, reads the answer's head and drops its body: the answer, and whether the
/// connection may be reused.
async fn exchange(
    session: &mut HttpSession,
    check: &Check,
    head: RequestHeader,
) -> Result<(Answer, bool)> {
    session.write_request_header(Box::new(head)).await?;
    session.finish_body().await?;
    // Informational answers (100, 103) come before the final one; a few at most.
    let mut status = 0;
    for _ in 0..4 {
        session.read_response().await?;
        status = session.get_status().map_or(0, |s| s.as_u16());
        if !(100..200).contains(&status) {
            break;
        }
    }
    let mut headers = Vec::new();
    let mut cookies = Vec::new();
    if let Some(resp) = session.resp_header() {
        if (200..300).contains(&status) {
            cookies.extend(resp.headers.get_all(header::SET_COOKIE).iter().cloned());
        }
        let mut keep = |name: &HeaderName| {
            for value in resp.headers.get_all(name) {
                headers.push((name.clone(), value.clone()));
            }
        };
        match status {
            200..=299 => check.response_headers.iter().for_each(&mut keep),
            401 => keep(&header::WWW_AUTHENTICATE),
            _ => {}
        }
    }
    let mut read = 0;
    while let Some(chunk) = session.read_body_ref().await? {
        read += chunk.len();
        if read > MAX_AUTH_BODY_BYTES {
            return Ok((
                Answer {
                    status,
                    headers,
                    cookies,
                },
                false,
            ));
        }
    }
    Ok((
        Answer {
            status,
            headers,
            cookies,
        },
        true,
    ))
}

/// The cache key of a request: each part of `scope`, then each part of the template, every
/// scope part and variable value closed by a NUL byte (which no header value holds, so two
/// different sets of values never render the same). `None` when a variable is missing or the
/// key is too long.
fn cache_key(scope: &[&str], parts: &[KeyPart], s: &Subject<'_>) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(256);
    for part in scope {
        key.extend_from_slice(part.as_bytes());
        key.push(0);
    }
    for part in parts {
        match part {
            KeyPart::Text(t) => key.extend_from_slice(t.as_bytes()),
            KeyPart::Header(name) => {
                let mut values = s.req.headers.get_all(name.as_str()).iter().peekable();
                values.peek()?;
                for v in values {
                    key.extend_from_slice(v.as_bytes());
                    key.push(1);
                }
            }
            KeyPart::Cookie(name) => key.extend_from_slice(cookie(s.req, name)?),
            KeyPart::RemoteAddr => key.extend_from_slice(s.client?.to_string().as_bytes()),
            KeyPart::Host => key.extend_from_slice(s.host.as_bytes()),
            KeyPart::RequestUri => key.extend_from_slice(s.uri().as_bytes()),
        }
        if !matches!(part, KeyPart::Text(_)) {
            key.push(0);
        }
    }
    (key.len() <= MAX_AUTH_CACHE_KEY_BYTES).then_some(key)
}

/// The answers kept, by key, within [`MAX_AUTH_CACHE_BYTES`].
#[derive(Default)]
struct Cache {
    entries: HashMap<Box<[u8]>, Cached>,
    bytes: usize,
}

struct Cached {
    answer: Answer,
    expires: Instant,
    size: usize,
}

impl Cache {
    /// The answer under `key`, unless it expired (then it is dropped).
    fn get(&mut self, key: &[u8], now: Instant) -> Option<Answer> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.answer.clone());
        }
        let size = entry.size;
        self.entries.remove(key);
        self.bytes -= size;
        None
    }

    /// Keeps `answer` under `key` until `expires`, unless the cache is full of unexpired
    /// answers.
    fn put(&mut self, key: Vec<u8>, answer: Answer, expires: Instant) {
        let size = key.len() + answer.size() + CACHE_ENTRY_BYTES;
        if let Some(old) = self.entries.remove(key.as_slice()) {
            self.bytes -= old.size;
        }
        if self.bytes + size > MAX_AUTH_CACHE_BYTES {
            let now = Instant::now();
            self.entries.retain(|_, e| e.expires > now);
            self.bytes = self.entries.values().map(|e| e.size).sum();
            if self.bytes + size > MAX_AUTH_CACHE_BYTES {
                return;
            }
        }
        self.bytes += size;
        let entry = Cached {
            answer,
            expires,
            size,
        };
        self.entries.insert(key.into_boxed_slice(), entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signin_url_carries_the_original_url_percent_encoded() {
        assert_eq!(
            signin_location("https://login.test/start", "http://a.test/p?q=1&r=ü"),
            "https://login.test/start?rd=http%3A%2F%2Fa.test%2Fp%3Fq%3D1%26r%3D%C3%BC"
        );
        assert_eq!(
            signin_location("/oauth2/start?x=1", "http://a.test/"),
            "/oauth2/start?x=1&rd=http%3A%2F%2Fa.test%2F"
        );
        assert_eq!(
            signin_location("/start?rd=/home", "http://a.test/"),
            "/start?rd=/home"
        );
    }

    #[tokio::test]
    async fn a_resolved_host_is_kept_for_its_ttl_and_its_addresses_taken_in_turn() {
        let client = ExtAuthClient::new(prometheus::IntCounter::new("hits", "hits").unwrap());
        // `localhost` resolves from the hosts file, without a DNS server.
        let first = client.resolve("localhost", 4180).await.unwrap();
        assert!(first.ip().is_loopback() && first.port() == 4180, "{first}");
        let addrs = client.resolved()[&("localhost".to_string(), 4180)]
            .addrs
            .clone();
        let next = client.resolve("localhost", 4180).await.unwrap();
        assert_eq!(next, addrs[1 % addrs.len()]);
        // Past its time the host is resolved again.
        client
            .resolved()
            .get_mut(&("localhost".to_string(), 4180))
            .unwrap()
            .at -= AUTH_DNS_TTL;
        client.resolve("localhost", 4180).await.unwrap();
        assert_eq!(client.resolved()[&("localhost".to_string(), 4180)].turn, 0);
        assert_eq!(client.resolved().len(), 1);
    }

    fn subject<'a>(req: &'a RequestHeader, ingress: &'a ObjectRef) -> Subject<'a> {
        Subject {
            req,
            ingress,
            host: "a.test",
            raw_host: "a.test",
            https: false,
            client: Some([192, 0, 2, 7].into()),
            request_id: "",
        }
    }

    #[test]
    fn cache_keys_keep_values_apart_and_skip_requests_missing_a_variable() {
        let parts = [KeyPart::Header("x-a".into()), KeyPart::Header("x-b".into())];
        let ingress = ObjectRef::new("shop", "web");
        let scoped = |scope: &[&str], a: &str, b: &str| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            r.insert_header("x-a", a).unwrap();
            r.insert_header("x-b", b).unwrap();
            cache_key(scope, &parts, &subject(&r, &ingress))
        };
        let key = |a: &str, b: &str| scoped(&["u"], a, b);
        // Without the separators these two would both be `xyz`.
        assert_ne!(key("x", "yz"), key("xy", "z"));
        assert_eq!(key("x", "yz"), key("x", "yz"));
        assert_ne!(
            scoped(&["a", "bc"], "x", "y"),
            scoped(&["ab", "c"], "x", "y")
        );
        let r = RequestHeader::build("GET", b"/", None).unwrap();
        assert_eq!(cache_key(&["u"], &parts, &subject(&r, &ingress)), None);
        let long = "v".repeat(MAX_AUTH_CACHE_KEY_BYTES);
        assert_eq!(key(&long, "b"), None);
    }

    #[test]
    fn the_cache_forgets_expired_answers_and_stays_within_its_bytes() {
        let now = Instant::now();
        let answer = Answer {
            status: 200,
            headers: Vec::new(),
            cookies: Vec::new(),
        };
        let mut cache = Cache::default();
        cache.put(b"a".to_vec(), answer.clone(), now + Duration::from_secs(30));
        cache.put(b"b".to_vec(), answer.clone(), now);
        assert_eq!(cache.get(b"a", now).map(|a| a.status), Some(200));
        assert!(cache.get(b"b", now).is_none());
        assert!(cache.get(b"b", now).is_none());
        // Filled with unexpired answers: the next one is not kept, the older ones stay.
        let big = vec![7u8; MAX_AUTH_CACHE_BYTES / 2];
        cache.put(big.clone(), answer.clone(), now + Duration::from_secs(30));
        let mut other = big.clone();
        other[0] = 8;
        cache.put(other.clone(), answer.clone(), now + Duration::from_secs(30));
        assert!(cache.get(&big, now).is_some());
        assert!(cache.get(&other, now).is_none());
        assert!(cache.bytes <= MAX_AUTH_CACHE_BYTES);
    }
}
