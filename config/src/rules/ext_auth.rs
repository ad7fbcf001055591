//! External authentication: `sluice.dev/auth-url` and its companions read into one [`ExtAuth`].
//!
//! Before a request of the route is proxied, sluice asks the auth service named by `auth-url`
//! (a `GET` without body, see the proxy's `ext_auth` module) and lets the request through on a
//! 2xx answer only. The values are checked here; the in-cluster Service of a
//! `<service>.<namespace>.svc` host is resolved to its pool when the snapshot is built.
//!
//! | annotation | value |
//! |---|---|
//! | `sluice.dev/auth-url` | `http://` or `https://` URL of the auth service |
//! | `sluice.dev/auth-signin` | a URL or a path: a 401 becomes 302 there, with `rd=` the original URL |
//! | `sluice.dev/auth-request-headers` | `A, B`: the only client headers sent to the auth service |
//! | `sluice.dev/auth-response-headers` | `A, B`: copied from a 2xx answer onto the upstream request |
//! | `sluice.dev/auth-timeout` | a duration (`500ms`, `5s`): the whole subrequest, default 5 s |
//! | `sluice.dev/auth-cache-duration` | `[status...] duration[, ...]`: answers kept this long |
//! | `sluice.dev/auth-cache-key` | a template (`$cookie_session`, `$http_authorization`, ...) |

use std::fmt;
use std::time::Duration;

use super::{header_name, parse_header_names, parse_url, Filter, Parser, RuleError};
use crate::annotations::parse_duration;
use crate::build::PoolKey;
use crate::model::PortRef;

pub const AUTH_URL: &str = "sluice.dev/auth-url";
pub const AUTH_SIGNIN: &str = "sluice.dev/auth-signin";
pub const AUTH_REQUEST_HEADERS: &str = "sluice.dev/auth-request-headers";
pub const AUTH_RESPONSE_HEADERS: &str = "sluice.dev/auth-response-headers";
pub const AUTH_TIMEOUT: &str = "sluice.dev/auth-timeout";
pub const AUTH_CACHE_DURATION: &str = "sluice.dev/auth-cache-duration";
pub const AUTH_CACHE_KEY: &str = "sluice.dev/auth-cache-key";

/// The time the whole subrequest may take (connect, request, answer) when
/// `sluice.dev/auth-timeout` sets none, in milliseconds.
pub const DEFAULT_AUTH_TIMEOUT_MS: u64 = 5_000;
/// The longest `sluice.dev/auth-timeout`, in milliseconds: a client waits this long at most.
pub const MAX_AUTH_TIMEOUT_MS: u64 = 60_000;
/// The statuses cached when an `auth-cache-duration` entry names none (as ingress-nginx).
pub const DEFAULT_CACHED_STATUSES: [u16; 3] = [200, 202, 401];

/// What the auth service of a route is and how its answers are used.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ExtAuth {
    /// The URL as written (for display and as the cache's namespace).
    pub url: String,
    /// `https`.
    pub tls: bool,
    /// The host of the URL, lowercase (an IPv6 literal without brackets).
    pub host: String,
    /// The port of the URL, or 80/443.
    pub port: u16,
    /// Path and query sent to the auth service.
    pub path: String,
    /// The in-cluster Service a `<service>.<namespace>.svc[.cluster.local]` host names.
    pub service: Option<AuthService>,
    /// Where a 401 is redirected instead (`rd=` the original URL is added).
    pub signin: Option<String>,
    /// The client headers sent (lowercase); `None`: all but hop-by-hop, body and the ones sluice
    /// writes itself.
    pub request_headers: Option<Vec<String>>,
    /// Headers of a 2xx answer copied onto the upstream request (lowercase). The client's own
    /// values of these headers never reach the upstream.
    pub response_headers: Vec<String>,
    /// The whole subrequest's time limit.
    pub timeout: Duration,
    pub cache: Option<AuthCache>,
}

/// The Service the auth URL's host names inside the cluster; `pool` is filled in when the
/// snapshot resolves it (`None`: it could not be, reported, and the route answers 503).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthService {
    pub namespace: String,
    pub name: String,
    pub port: PortRef,
    pub pool: Option<PoolKey>,
}

/// Which auth answers are kept, for how long, and under which key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AuthCache {
    /// (status, time kept); a status not listed is not cached.
    pub ttl: Vec<(u16, Duration)>,
    /// The key: literal text and request variables, concatenated.
    pub key: Vec<KeyPart>,
}

impl AuthCache {
    /// How long an answer with `status` is kept; `None`: not at all.
    pub fn ttl_of(&self, status: u16) -> Option<Duration> {
        self.ttl.iter().find(|(s, _)| *s == status).map(|(_, d)| *d)
    }
}

/// A piece of an `auth-cache-key` template.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyPart {
    /// Literal text.
    Text(String),
    /// `$http_<name>`: the request header `<name>` (`_` standing for `-`), all its values.
    Header(String),
    /// `$cookie_<name>`: the value of the request's cookie `<name>`.
    Cookie(String),
    /// `$remote_addr`: the real client address.
    RemoteAddr,
    /// `$host`: the routed host.
    Host,
    /// `$request_uri`: the path and query as received.
    RequestUri,
}

impl fmt::Display for KeyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Text(t) => f.write_str(t),
            KeyPart::Header(h) => write!(f, "$http_{}", h.replace('-', "_")),
            KeyPart::Cookie(c) => write!(f, "$cookie_{c}"),
            KeyPart::RemoteAddr => f.write_str("$remote_addr"),
            KeyPart::Host => f.write_str("$host"),
            KeyPart::RequestUri => f.write_str("$request_uri"),
        }
    }
}

impl fmt::Display for ExtAuth {
    /// How `sluice check` shows the filter (`auth-url http://auth.example/verify timeout 5s`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "auth-url {} timeout {:?}", self.url, self.timeout)?;
        if let Some(signin) = &self.signin {
            write!(f, " signin {signin}")?;
        }
        if let Some(cache) = &self.cache {
            f.write_str(" cache ")?;
            for part in &cache.key {
                write!(f, "{part}")?;
            }
        }
        Ok(())
    }
}

impl Parser<'_> {
    /// The external auth of the annotations; a companion annotation without `auth-url` is
    /// refused, as is a cache duration without a key or the other way round.
    pub(super) fn ext_auth(&mut self) -> Option<Filter> {
        let url = self.get(AUTH_URL, parse_auth_url);
        let signin = self.get(AUTH_SIGNIN, parse_url);
        let request_headers = self.get(AUTH_REQUEST_HEADERS, parse_header_names);
        let response_headers = self.get(AUTH_RESPONSE_HEADERS, parse_header_names);
        let timeout = self.get(AUTH_TIMEOUT, parse_timeout);
        let ttl = self.get(AUTH_CACHE_DURATION, parse_cache_duration);
        let key = self.get(AUTH_CACHE_KEY, parse_cache_key);
        if !self.annotations.contains_key(AUTH_URL) {
            for key in [
                AUTH_SIGNIN,
                AUTH_REQUEST_HEADERS,
                AUTH_RESPONSE_HEADERS,
                AUTH_TIMEOUT,
                AUTH_CACHE_DURATION,
                AUTH_CACHE_KEY,
            ] {
                if self.annotations.contains_key(key) {
                    self.refuse(key, RuleError::Unused { needs: AUTH_URL });
                }
            }
            return None;
        }
        let present = |p: &Self, key| p.annotations.contains_key(key);
        let cache = match (ttl, key) {
            (Some(ttl), Some(key)) => Some(AuthCache { ttl, key }),
            _ if present(self, AUTH_CACHE_DURATION) && !present(self, AUTH_CACHE_KEY) => {
                let needs = AUTH_CACHE_KEY;
                self.refuse(AUTH_CACHE_DURATION, RuleError::Unused { needs });
                None
            }
            _ if present(self, AUTH_CACHE_KEY) && !present(self, AUTH_CACHE_DURATION) => {
                let needs = AUTH_CACHE_DURATION;
                self.refuse(AUTH_CACHE_KEY, RuleError::Unused { needs });
                None
            }
            _ => None,
        };
        let mut auth = url?;
        auth.signin = signin;
        auth.request_headers = request_headers;
        auth.response_headers = response_headers.unwrap_or_default();
        auth.timeout = timeout.unwrap_or(Duration::from_millis(DEFAULT_AUTH_TIMEOUT_MS));
        auth.cache = cache;
        Some(Filter::ExtAuth(Box::new(auth)))
    }
}

/// An `http://` or `https://` URL without user info or fragment; a host of the form
/// `<service>.<namespace>.svc` (or `.svc.cluster.local`) names an in-cluster Service, its port
/// the Service port.
fn parse_auth_url(text: &str) -> Result<ExtAuth, RuleError> {
    let url = text.trim();
    let bad = RuleError::NotAnAuthUrl;
    if !url.bytes().all(|b| b.is_ascii_graphic()) || url.contains('#') {
        return Err(bad);
    }
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(bad),
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let (host, port) = split_authority(authority).ok_or(bad.clone())?;
    let port = match port {
        Some(p) => p,
        None if tls => 443,
        None => 80,
    };
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<std::net::IpAddr>().is_ok();
    if !ip && (host.len() > 253 || !host.split('.').all(crate::routes::is_dns_label)) {
        return Err(bad);
    }
    if ip && tls {
        return Err(RuleError::AuthUrlWithoutName);
    }
    let service = (!ip).then(|| in_cluster(&host, port)).flatten();
    Ok(ExtAuth {
        url: url.to_string(),
        tls,
        host,
        port,
        path,
        service,
        signin: None,
        request_headers: None,
        response_headers: Vec::new(),
        timeout: Duration::from_millis(DEFAULT_AUTH_TIMEOUT_MS),
        cache: None,
    })
}

/// `host[:port]` or `[v6]:port`: the host (brackets removed) and the port, if any. `None` for
/// user info, an empty host or a port that is not 1..65535.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            host.parse::<std::net::Ipv6Addr>().ok()?;
            match after {
                "" => (host, None),
                p => (host, Some(p.strip_prefix(':')?)),
            }
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p > 0)?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

/// The Service a cluster-local host names: `<service>.<namespace>.svc`, optionally followed by
/// `.cluster.local`.
fn in_cluster(host: &str, port: u16) -> Option<AuthService> {
    let host = host.strip_suffix(".cluster.local").unwrap_or(host);
    let mut labels = host.split('.');
    let (name, namespace, svc) = (labels.next()?, labels.next()?, labels.next()?);
    if svc != "svc" || labels.next().is_some() {
        return None;
    }
    Some(AuthService {
        namespace: namespace.to_string(),
        name: name.to_string(),
        port: PortRef::Number(i32::from(port)),
        pool: None,
    })
}

fn parse_timeout(text: &str) -> Result<Duration, RuleError> {
    let d = parse_duration(text)?;
    if d > Duration::from_millis(MAX_AUTH_TIMEOUT_MS) {
        return Err(RuleError::TooLongATimeout);
    }
    Ok(d)
}

/// `[status ...] duration`, entries separated by commas: `200 202 401 5m, 403 30s`. An entry
/// without statuses caches [`DEFAULT_CACHED_STATUSES`]. Only 2xx, 401 and 403 answers decide
/// anything, so only they may be cached; a status listed twice is refused.
fn parse_cache_duration(text: &str) -> Result<Vec<(u16, Duration)>, RuleError> {
    let bad = RuleError::NotACacheDuration;
    let mut out: Vec<(u16, Duration)> = Vec::new();
    for entry in text.split(',') {
        let mut words: Vec<&str> = entry.split_whitespace().collect();
        let ttl = parse_duration(words.pop().ok_or(bad.clone())?).map_err(|_| bad.clone())?;
        let statuses = if words.is_empty() {
            DEFAULT_CACHED_STATUSES.to_vec()
        } else {
            words
                .iter()
                .map(|w| w.parse::<u16>().map_err(|_| bad.clone()))
                .collect::<Result<Vec<_>, _>>()?
        };
        for status in statuses {
            let decides = (200..300).contains(&status) || status == 401 || status == 403;
            if !decides || out.iter().any(|(s, _)| *s == status) {
                return Err(bad);
            }
            out.push((status, ttl));
        }
    }
    Ok(out)
}

/// A key template: literal text and `$http_<name>`, `$cookie_<name>`, `$remote_addr`, `$host`
/// and `$request_uri` (`${name}` as well). At least one variable, or every request would share
/// one answer.
fn parse_cache_key(text: &str) -> Result<Vec<KeyPart>, RuleError> {
    let bad = RuleError::NotACacheKey;
    let mut out = Vec::new();
    let mut rest = text.trim();
    if !rest.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err(bad);
    }
    let var_byte = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    while let Some(i) = rest.find('$') {
        if i > 0 {
            out.push(KeyPart::Text(rest[..i].to_string()));
        }
        let after = &rest[i + 1..];
        let (name, next) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced.find('}').ok_or(bad.clone())?;
                (&braced[..end], &braced[end + 1..])
            }
            None => {
                let end = after
                    .bytes()
                    .position(|b| !var_byte(b))
                    .unwrap_or(after.len());
                after.split_at(end)
            }
        };
        out.push(key_variable(name).ok_or(bad.clone())?);
        rest = next;
    }
    if !rest.is_empty() {
        out.push(KeyPart::Text(rest.to_string()));
    }
    if !out.iter().any(|p| !matches!(p, KeyPart::Text(_))) {
        return Err(bad);
    }
    Ok(out)
}

fn key_variable(name: &str) -> Option<KeyPart> {
    let name = name.to_ascii_lowercase();
    if let Some(header) = name.strip_prefix("http_") {
        let header = header_name(&header.replace('_', "-")).ok()?;
        return Some(KeyPart::Header(header));
    }
    if let Some(cookie) = name.strip_prefix("cookie_") {
        let ok = !cookie.is_empty() && super::is_token(cookie);
        return ok.then(|| KeyPart::Cookie(cookie.to_string()));
    }
    match name.as_str() {
        "remote_addr" => Some(KeyPart::RemoteAddr),
        "host" => Some(KeyPart::Host),
        "request_uri" => Some(KeyPart::RequestUri),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::tests::parse;

    fn auth_of(pairs: &[(&str, &str)]) -> ExtAuth {
        match parse(pairs) {
            (f, bad) if bad.is_empty() => match f.as_slice() {
                [Filter::ExtAuth(a)] => (**a).clone(),
                other => panic!("{other:?}"),
            },
            (_, bad) => panic!("{bad:?}"),
        }
    }

    #[test]
    fn an_auth_url_gives_its_host_port_path_and_defaults() {
        let a = auth_of(&[(AUTH_URL, "http://Auth.Example/oauth2/auth?x=1")]);
        assert_eq!(
            (a.tls, a.host.as_str(), a.port, a.path.as_str()),
            (false, "auth.example", 80, "/oauth2/auth?x=1")
        );
        assert_eq!(a.service, None);
        assert_eq!(a.timeout, Duration::from_secs(5));
        assert_eq!((a.request_headers, a.response_headers), (None, vec![]));
        let a = auth_of(&[(AUTH_URL, "http://[::1]:8443")]);
        assert_eq!(
            (a.tls, a.host.as_str(), a.port, a.path.as_str()),
            (false, "::1", 8443, "/")
        );
        let a = auth_of(&[(AUTH_URL, "https://auth.test")]);
        assert_eq!((a.tls, a.port, a.path.as_str()), (true, 443, "/"));
    }

    #[test]
    fn a_cluster_local_host_names_a_service_and_its_port() {
        for url in [
            "http://oauth2-proxy.auth.svc:4180/oauth2/auth",
            "http://oauth2-proxy.auth.svc.cluster.local:4180/oauth2/auth",
        ] {
            let a = auth_of(&[(AUTH_URL, url)]);
            assert_eq!(
                a.service,
                Some(AuthService {
                    namespace: "auth".into(),
                    name: "oauth2-proxy".into(),
                    port: PortRef::Number(4180),
                    pool: None,
                }),
                "{url}"
            );
        }
        let a = auth_of(&[(AUTH_URL, "http://auth.example.svc.example.com/")]);
        assert_eq!(a.service, None);
    }

    #[test]
    fn companions_are_read_beside_the_url() {
        let a = auth_of(&[
            (AUTH_URL, "http://auth.test/verify"),
            (AUTH_SIGNIN, "https://login.test/start"),
            (AUTH_REQUEST_HEADERS, "Cookie, Authorization"),
            (AUTH_RESPONSE_HEADERS, "X-Auth-User, X-Auth-Email"),
            (AUTH_TIMEOUT, "750ms"),
            (AUTH_CACHE_DURATION, "200 201 401 30s, 403 5s"),
            (AUTH_CACHE_KEY, "user:$cookie_session/${http_authorization}"),
        ]);
        assert_eq!(a.signin.as_deref(), Some("https://login.test/start"));
        assert_eq!(
            a.request_headers,
            Some(vec!["cookie".to_string(), "authorization".to_string()])
        );
        assert_eq!(a.response_headers, ["x-auth-user", "x-auth-email"]);
        assert_eq!(a.timeout, Duration::from_millis(750));
        assert_eq!(
            Filter::ExtAuth(Box::new(a.clone())).to_string(),
            "auth-url http://auth.test/verify timeout 750ms signin https://login.test/start \
             cache user:$cookie_session/$http_authorization"
        );
        let cache = a.cache.expect("a cache");
        let s = Duration::from_secs;
        assert_eq!(
            cache.ttl,
            [(200, s(30)), (201, s(30)), (401, s(30)), (403, s(5))]
        );
        assert_eq!(
            cache.key,
            [
                KeyPart::Text("user:".into()),
                KeyPart::Cookie("session".into()),
                KeyPart::Text("/".into()),
                KeyPart::Header("authorization".into()),
            ]
        );
        assert_eq!(cache.ttl_of(500), None);
        let a = auth_of(&[
            (AUTH_URL, "http://auth.test/verify"),
            (AUTH_CACHE_DURATION, "1m"),
            (AUTH_CACHE_KEY, "$remote_addr$host$request_uri"),
        ]);
        let cache = a.cache.expect("a cache");
        assert_eq!(
            cache.ttl.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            DEFAULT_CACHED_STATUSES
        );
        assert_eq!(
            cache.key,
            [KeyPart::RemoteAddr, KeyPart::Host, KeyPart::RequestUri]
        );
    }

    #[test]
    fn bad_values_fail_the_route_closed_and_name_the_annotation() {
        let url = (AUTH_URL, "http://auth.test/");
        for (pairs, key) in [
            (vec![(AUTH_URL, "ftp://auth.test/")], AUTH_URL),
            (vec![(AUTH_URL, "http://user@auth.test/")], AUTH_URL),
            (vec![(AUTH_URL, "http://auth.test:0/")], AUTH_URL),
            (vec![(AUTH_URL, "http://auth.test/#frag")], AUTH_URL),
            (vec![(AUTH_URL, "http://bad_host/")], AUTH_URL),
            (vec![(AUTH_URL, "/verify")], AUTH_URL),
            // Pingora verifies no certificate without a server name.
            (vec![(AUTH_URL, "https://192.0.2.1/verify")], AUTH_URL),
            (vec![url, (AUTH_SIGNIN, "login")], AUTH_SIGNIN),
            (
                vec![url, (AUTH_RESPONSE_HEADERS, "X-Forwarded-For")],
                AUTH_RESPONSE_HEADERS,
            ),
            (
                vec![url, (AUTH_REQUEST_HEADERS, "a b")],
                AUTH_REQUEST_HEADERS,
            ),
            (vec![url, (AUTH_TIMEOUT, "2m")], AUTH_TIMEOUT),
            (vec![url, (AUTH_TIMEOUT, "0s")], AUTH_TIMEOUT),
            (
                vec![
                    url,
                    (AUTH_CACHE_DURATION, "500 30s"),
                    (AUTH_CACHE_KEY, "$host"),
                ],
                AUTH_CACHE_DURATION,
            ),
            (
                vec![
                    url,
                    (AUTH_CACHE_DURATION, "200 200 30s"),
                    (AUTH_CACHE_KEY, "$host"),
                ],
                AUTH_CACHE_DURATION,
            ),
            (
                vec![
                    url,
                    (AUTH_CACHE_DURATION, "200 soon"),
                    (AUTH_CACHE_KEY, "$host"),
                ],
                AUTH_CACHE_DURATION,
            ),
            (
                vec![url, (AUTH_CACHE_DURATION, "30s"), (AUTH_CACHE_KEY, "fixed")],
                AUTH_CACHE_KEY,
            ),
            (
                vec![
                    url,
                    (AUTH_CACHE_DURATION, "30s"),
                    (AUTH_CACHE_KEY, "$query"),
                ],
                AUTH_CACHE_KEY,
            ),
            (
                vec![
                    url,
                    (AUTH_CACHE_DURATION, "30s"),
                    (AUTH_CACHE_KEY, "${host"),
                ],
                AUTH_CACHE_KEY,
            ),
            (vec![url, (AUTH_CACHE_DURATION, "30s")], AUTH_CACHE_DURATION),
            (vec![url, (AUTH_CACHE_KEY, "$host")], AUTH_CACHE_KEY),
            (vec![(AUTH_SIGNIN, "https://login.test/")], AUTH_SIGNIN),
            (vec![(AUTH_TIMEOUT, "1s")], AUTH_TIMEOUT),
        ] {
            let (f, bad) = parse(&pairs);
            assert_eq!(f, [Filter::Invalid], "{pairs:?}");
            assert_eq!(
                bad.iter().map(|b| b.key).collect::<Vec<_>>(),
                [key],
                "{pairs:?}"
            );
        }
    }
}
