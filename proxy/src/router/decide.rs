//! What a request is answered with: the TLS rules, the route, and how the request picks its
//! endpoint, decided from one load of the live state ([`Router::decide`]).
//!
//! The order, each step answering by itself when it refuses:
//! 1. over TLS, a host or server name with client authentication must be the connection's own
//!    name, else 421 ([`Refusal::Misdirected`]);
//! 2. over plain HTTP, a host in `verify` mode is never served: 403 without an HTTPS listener
//!    ([`Refusal::ClientCertificateRequired`]), else it is redirected in step 4;
//! 3. the route for the host and path, else 404 ([`Refusal::NoRoute`]);
//! 4. over plain HTTP, a host in `verify` mode, or a host with TLS whose route's Ingress keeps
//!    `sluice.dev/ssl-redirect` (and `tls.ssl_redirect` with an HTTPS listener) unless a trusted
//!    proxy says the client reached it over https: 308 to https
//!    ([`Refusal::HttpsRequired`]);
//! 5. the route's filters that answer by themselves: 503 for an invalid policy annotation
//!    ([`Refusal::InvalidRoute`]), 403 for a client its source ranges refuse
//!    ([`Refusal::Denied`]), a redirect or the app root; a rewrite decides the upstream
//!    request target (see `rules`; a `from-to-www-redirect` host is answered before step 3);
//!    then a CORS preflight from an origin the route admits is answered 204 (see `cors`), and
//!    a client over the route's `sluice.dev/limit-*` gets `server.limit_status`
//!    ([`Refusal::Limited`], see `limits`); an admitted request keeps its place in flight;
//! 6. the route's canary, when it takes the request (by header, cookie, then weight), in place of
//!    the route's pool, balancing, affinity and metrics;
//! 7. the route's policy onto the request context (timeouts, protocol, body limit, balancing
//!    pick, affinity cookie), then its pool, else 503 ([`Refusal::NoEndpoint`]).

use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use pingora_http::RequestHeader;
use pingora_proxy::Session;
use sluice_config::annotations::{BackendProtocol, Balance, CookieAffinity, HashBy};
use sluice_config::canary::CanaryRule;
use sluice_config::path::match_path;
use sluice_config::tls::ClientAuthMode;

use super::forward::forwarded_proto;
use super::{cors, limits, rules, Refusal, RequestCtx, Router};
use crate::mirror::Copy;
use crate::pool::{hash_key, random_unit, Pick, Pool};
use crate::request::BodyLimit;
use crate::tls::ConnTls;

/// The TLS facts of the request's connection: `None` on plain HTTP.
pub(super) fn conn_tls(session: &Session) -> Option<Option<&ConnTls>> {
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
fn pick_for(balance: &Balance, req: &RequestHeader, client: Option<IpAddr>) -> Pick {
    match balance {
        Balance::RoundRobin => Pick::RoundRobin,
        Balance::LeastRequest => Pick::LeastRequest,
        Balance::Ewma => Pick::Ewma,
        Balance::ConsistentHash(by) => Pick::Hash(match by {
            HashBy::RemoteAddr => client.map(|ip| match ip {
                IpAddr::V4(ip) => hash_key(&ip.octets()),
                IpAddr::V6(ip) => hash_key(&ip.octets()),
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

/// The `Set-Cookie` value that sends a client of an affinity route back to the endpoint with
/// `token` (16 hex digits, as [`cookie`] reads it back).
pub(super) fn affinity_cookie(affinity: &CookieAffinity, token: u64) -> String {
    let mut value = format!("{}={token:016x}; Path=/; HttpOnly", affinity.name);
    if let Some(age) = affinity.max_age {
        value.push_str(&format!("; Max-Age={}", age.as_secs().max(1)));
    }
    value
}

/// Whether a canary takes the request: by header, then by cookie, then by weight (see
/// [`sluice_config::canary`]).
fn canary_takes(rule: &CanaryRule, req: &RequestHeader) -> bool {
    if let Some(value) = rule
        .header
        .as_ref()
        .and_then(|h| req.headers.get(h.as_str()))
    {
        let value = value.as_bytes();
        match &rule.header_value {
            Some(want) if value == want.as_bytes() => return true,
            None if value == b"always" => return true,
            None if value == b"never" => return false,
            _ => {}
        }
    }
    match rule.cookie.as_ref().and_then(|c| cookie(req, c)) {
        Some(b"always") => return true,
        Some(b"never") => return false,
        _ => {}
    }
    rule.weight > 0 && random_unit() * f64::from(rule.total) < f64::from(rule.weight)
}

/// Size of the request head as received: request line plus header lines.
pub(super) fn head_size(req: &RequestHeader) -> usize {
    let line = req.method.as_str().len() + req.raw_path().len() + 12;
    req.headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
}

/// What [`Router::decide`] found for a request.
pub(super) enum Decision {
    /// Proxy to this pool.
    Proxy(Arc<Pool>),
    /// Answer by itself.
    Refuse(Refusal),
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
    pub(super) fn decide(&self, session: &Session, ctx: &mut RequestCtx) -> Decision {
        let req = session.req_header();
        let tls = conn_tls(session);
        let live = self.state.live();
        let host = ctx.host.as_str();
        let host_tls = live.tls_policy.find_normalized(host);
        let host_mode = host_tls.map(|h| h.client_auth.mode).unwrap_or_default();
        let mut redirect = false;
        // Over plain HTTP, a trusted proxy in front may say the client reached it over https.
        let https =
            tls.is_some() || (ctx.client.trusted && forwarded_proto(&req.headers) == Some("https"));
        match tls {
            Some(conn) => {
                let sni_mode = conn.map(|c| c.mode).unwrap_or_default();
                if host_mode.asks_for_certificate() || sni_mode.asks_for_certificate() {
                    let sni = conn.and_then(|c| c.sni.as_deref());
                    if sni != Some(host) {
                        return Decision::Refuse(Refusal::Misdirected);
                    }
                }
            }
            None if host_mode == ClientAuthMode::Verify => {
                if !self.options.https {
                    return Decision::Refuse(Refusal::ClientCertificateRequired);
                }
                redirect = true;
            }
            None => {}
        }
        if let Some(refusal) = rules::host_redirect(&live.host_redirects, host, req, https) {
            return Decision::Refuse(refusal);
        }
        let path = match_path(ctx.path.as_deref().unwrap_or(req.uri.path()));
        let Some(found) = live.routes.find_match(host, &path) else {
            return Decision::Refuse(Refusal::NoRoute);
        };
        let route = found.route;
        if !https && host_tls.is_some() && self.options.ssl_redirect {
            redirect |= route.ssl_redirect;
        }
        if redirect {
            let location = https_location(host, self.options.redirect_port, req);
            return Decision::Refuse(Refusal::HttpsRequired { location });
        }
        if !route.filters.is_empty() {
            match rules::before_proxy(&route.filters, req, &path, &found, ctx.client.ip) {
                Ok(target) => ctx.rewritten = target,
                Err(refusal) => return Decision::Refuse(refusal),
            }
            // A preflight's answer and a limit's refusal count among the route's requests.
            if let Some(answer) = cors::preflight(&route.filters, req) {
                ctx.route = Some(route.metrics.clone());
                return Decision::Refuse(answer);
            }
            let status = self.options.limit_status;
            match limits::admit(&route.filters, req, ctx.client.ip, ctx.start, status) {
                Ok(slot) => ctx._limit_slot = slot,
                Err((refusal, reason)) => {
                    route.metrics.limited(reason);
                    ctx.route = Some(route.metrics.clone());
                    return Decision::Refuse(refusal);
                }
            }
            ctx.mirror = rules::mirror(&route.filters).map(|pool| Box::new(Copy::new(pool)));
            ctx.filtered = Some(route.clone());
        }
        // The canary takes the request (after the primary's filters) with its own pool,
        // balancing, affinity and metrics; every other policy is the primary's.
        let (pool, policy, metrics) = match &route.canary {
            Some(c) if canary_takes(&c.rule, req) => (&c.pool, &c.policy, &c.metrics),
            _ => (&route.pool, &route.policy, &route.metrics),
        };
        ctx.route = Some(metrics.clone());
        {
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
            ctx.pick = pick_for(balance, req, ctx.client.ip);
            if let Some(a) = &policy.affinity {
                let token = cookie(req, &a.name)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|v| u64::from_str_radix(v, 16).ok());
                ctx.affinity = Some((a.clone(), token));
            }
        }
        match pool {
            Some(pool) if !pool.is_empty() => Decision::Proxy(pool.clone()),
            _ => Decision::Refuse(Refusal::NoEndpoint),
        }
    }
}
