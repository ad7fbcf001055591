//! A route's filters ([`Filter`]) at request time, and the host redirects of
//! `sluice.dev/from-to-www-redirect`.
//!
//! In the order a request meets them:
//! 1. before the route is looked up, a host that `from-to-www-redirect` sends elsewhere gets 308
//!    there ([`host_redirect`]), path and query kept;
//! 2. once the route is found (and after the https redirect), [`before_proxy`]: an invalid
//!    policy answers 503, a client the route's source ranges refuse 403, a redirect or the app root answers by itself, and a rewrite computes
//!    the request target sent upstream;
//!    then, in `request_filter` and before any upstream connection, the route's basic auth
//!    ([`basic_auth`], [`crate::auth::basic`]) answers 401 to a request without a user's
//!    credentials;
//! 3. when the upstream request is written, [`upstream_headers`] removes then sets its headers
//!    and the upstream `Host` (and removes `Authorization` on a basic-auth route unless asked to
//!    forward it);
//! 4. on the response head, [`response_headers`] removes then sets the client's headers;
//! 5. a route with a mirror gathers a copy of the request ([`mirror`], [`crate::mirror`]), sent
//!    when the request ends.
//!
//! Rewrites start from the path as matched (normalized, path parameters removed).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::header;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use sluice_config::cidr::Cidr;
use sluice_config::routes::PathMatch;

use super::client::in_ranges;
use super::Refusal;
use crate::auth::basic::BasicAuth;
use crate::pool::Pool;
use crate::route::{Filter, HeaderChanges};
use crate::router::RedirectStatus;

/// The 308 for a request whose host `redirects` sends to another host: same scheme, the
/// request's port if it named one, path and query unchanged.
pub(super) fn host_redirect(
    redirects: &HashMap<String, String>,
    host: &str,
    req: &RequestHeader,
    tls: bool,
) -> Option<Refusal> {
    if redirects.is_empty() {
        return None;
    }
    let to = redirects.get(host)?;
    let scheme = if tls { "https" } else { "http" };
    let port = crate::request::raw_host(req)
        .rsplit_once(':')
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let path = req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let location = match port {
        Some(port) => format!("{scheme}://{to}:{port}{path}"),
        None => format!("{scheme}://{to}{path}"),
    };
    Some(Refusal::Redirect {
        status: RedirectStatus::PermanentRedirect,
        location,
    })
}

/// Applies the filters that act before anything is forwarded: `Err` with the answer (503 for an
/// invalid policy, 403 for a `client` the source ranges refuse, a redirect), else the request target to send upstream when a rewrite
/// changes it. `path` is the path as matched and `found` what the rule matched of it (a regex
/// path is run again for its capture groups only when a rewrite needs them).
pub(super) fn before_proxy<R>(
    filters: &[Filter],
    req: &RequestHeader,
    path: &str,
    found: &PathMatch<'_, R>,
    client: Option<IpAddr>,
) -> Result<Option<String>, Refusal> {
    let query = req.uri.query();
    let mut target = None;
    for f in filters {
        match f {
            Filter::Invalid => return Err(Refusal::InvalidRoute),
            Filter::SourceRange { allow, deny } if !admits(allow, deny, client) => {
                return Err(Refusal::Denied);
            }
            Filter::Redirect {
                status,
                location,
                keep_query,
            } => {
                let location = match query {
                    Some(q) if *keep_query && !location.contains('?') => {
                        format!("{location}?{q}")
                    }
                    _ => location.clone(),
                };
                return Err(Refusal::Redirect {
                    status: *status,
                    location,
                });
            }
            Filter::AppRoot(root) if path == "/" => {
                return Err(Refusal::Redirect {
                    status: RedirectStatus::Found,
                    location: root.clone(),
                });
            }
            Filter::RewriteTarget(t) => {
                let captures = found.regex.and_then(|r| r.captures(path));
                let group = |n| Some(captures.as_ref()?.get(n)?.as_str());
                target = Some(rewrite_target(t, query, group));
            }
            Filter::RewritePrefix(p) => {
                let matched = match found.regex {
                    Some(r) => r.find(path).map_or(0, |m| m.end()),
                    None => found.len,
                };
                target = Some(rewrite_prefix(p, path, matched, query));
            }
            _ => {}
        }
    }
    Ok(target)
}

/// Whether source ranges admit `client`: not in `deny`, and in `allow` unless it is empty. A
/// request without a client address (no IP peer) is admitted only where no allow list applies.
pub(super) fn admits(allow: &[Cidr], deny: &[Cidr], client: Option<IpAddr>) -> bool {
    match client {
        Some(ip) => !in_ranges(deny, ip) && (allow.is_empty() || in_ranges(allow, ip)),
        None => allow.is_empty(),
    }
}

/// The request target of `rewrite-target`: `template` with `$1`..`$9` replaced by the capture
/// groups (empty when a group did not match or there is none), then the request's query unless
/// the template has a `?` of its own.
pub(super) fn rewrite_target<'a>(
    template: &str,
    query: Option<&str>,
    group: impl Fn(usize) -> Option<&'a str>,
) -> String {
    let mut out = String::with_capacity(template.len() + query.map_or(0, |q| q.len() + 1));
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let digit = rest.as_bytes().get(i + 1).copied().unwrap_or(b'0');
        // Validated at build: every `$` is followed by 1..9.
        out.push_str(group(usize::from(digit - b'0')).unwrap_or(""));
        rest = rest.get(i + 2..).unwrap_or("");
    }
    out.push_str(rest);
    if let Some(q) = query.filter(|_| !template.contains('?')) {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The request target of `rewrite-prefix`: the first `matched` bytes of `path` replaced by
/// `prefix` (one slash kept where the two meet), then the query. Rule `/api` with `/v2` sends
/// `/api/users` as `/v2/users` and `/api` as `/v2`; with `/` it sends `/api/users` as `/users`.
pub(super) fn rewrite_prefix(
    prefix: &str,
    path: &str,
    matched: usize,
    query: Option<&str>,
) -> String {
    let rest = path.get(matched..).unwrap_or("");
    let mut out = String::with_capacity(prefix.len() + rest.len() + 1);
    out.push_str(prefix);
    match (prefix.ends_with('/'), rest.strip_prefix('/')) {
        (true, Some(tail)) => out.push_str(tail),
        _ => out.push_str(rest),
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Changes the upstream request's headers and `Host` as the filters ask: removals first, then
/// the values set (which replace any the client sent).
pub(super) fn upstream_headers(filters: &[Filter], upstream: &mut RequestHeader) -> Result<()> {
    for f in filters {
        match f {
            Filter::RequestHeaders(HeaderChanges { set, remove }) => {
                for name in remove {
                    upstream.remove_header(name);
                }
                for (name, value) in set {
                    upstream.insert_header(name.clone(), value.clone())?;
                }
            }
            Filter::UpstreamVhost { host, .. } => {
                upstream.insert_header(header::HOST, host.clone())?;
            }
            Filter::BasicAuth(auth) if !auth.forwards_authorization() => {
                upstream.remove_header(&header::AUTHORIZATION);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Changes the response's headers as the filters ask: removals first, then the values set
/// (which replace any the upstream sent).
pub(super) fn response_headers(filters: &[Filter], response: &mut ResponseHeader) -> Result<()> {
    for f in filters {
        if let Filter::ResponseHeaders(HeaderChanges { set, remove }) = f {
            for name in remove {
                response.remove_header(name);
            }
            for (name, value) in set {
                response.insert_header(name.clone(), value.clone())?;
            }
        }
    }
    Ok(())
}

/// The pool of the route's mirror, if it has one.
pub(super) fn mirror(filters: &[Filter]) -> Option<Arc<Pool>> {
    filters.iter().find_map(|f| match f {
        Filter::Mirror(pool) => Some(pool.clone()),
        _ => None,
    })
}

/// The route's basic auth, if it has one.
pub(super) fn basic_auth(filters: &[Filter]) -> Option<Arc<BasicAuth>> {
    filters.iter().find_map(|f| match f {
        Filter::BasicAuth(auth) => Some(auth.clone()),
        _ => None,
    })
}

/// The server name a TLS upstream is sent when `upstream-vhost` names one.
pub(super) fn upstream_sni(filters: &[Filter]) -> Option<&str> {
    filters.iter().find_map(|f| match f {
        Filter::UpstreamVhost { sni, .. } => Some(sni.as_str()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_takes_the_capture_groups_and_keeps_the_query_unless_it_has_its_own() {
        let groups = ["/all", "users/7", ""];
        let group = |n: usize| groups.get(n).copied().filter(|g| !g.is_empty());
        assert_eq!(
            rewrite_target("/v2/$1", Some("x=1"), group),
            "/v2/users/7?x=1"
        );
        assert_eq!(rewrite_target("/$2$1$9", None, group), "/users/7");
        assert_eq!(rewrite_target("/new?y=2", Some("x=1"), group), "/new?y=2");
        assert_eq!(rewrite_target("/fixed", None, |_| None), "/fixed");
    }

    #[test]
    fn a_prefix_rewrite_replaces_the_matched_prefix_at_the_element_boundary() {
        for (prefix, path, matched, query, want) in [
            ("/v2", "/api/users", 4, Some("x=1"), "/v2/users?x=1"),
            ("/v2", "/api", 4, None, "/v2"),
            ("/v2", "/api/", 4, None, "/v2/"),
            ("/", "/api/users", 4, None, "/users"),
            ("/", "/api", 4, None, "/"),
            ("/v2/", "/api/users", 4, None, "/v2/users"),
            ("/v2", "/users", 0, None, "/v2/users"),
        ] {
            assert_eq!(
                rewrite_prefix(prefix, path, matched, query),
                want,
                "{prefix} {path}"
            );
        }
    }
}
