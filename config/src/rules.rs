//! Per-route traffic rules: the `sluice.dev/*` policy annotations read into an ordered list of
//! [`Filter`]s that every route of the Ingress carries.
//!
//! Unlike tuning annotations ([`crate::annotations`]), a policy annotation with a value sluice
//! does not accept does not fall back to a default: it is reported (`InvalidAnnotation`) and the
//! Ingress's routes stay in the table but answer 503 ([`Filter::Invalid`]). A broken rewrite or
//! redirect must neither serve the path unrewritten nor let the request fall through to a
//! shorter path or the default backend.
//!
//! | annotation | value |
//! |---|---|
//! | `sluice.dev/use-regex` | `"true"`: the Ingress's `ImplementationSpecific` paths are regexes ([`regex_path`]) |
//! | `sluice.dev/permanent-redirect` | a URL or a path: 301 there (the backend is not contacted) |
//! | `sluice.dev/permanent-redirect-code` | 301, 302, 303, 307 or 308 |
//! | `sluice.dev/temporal-redirect` | a URL or a path: 302 there |
//! | `sluice.dev/redirect-keep-query` | `"true"`: the request's query follows a URL without one |
//! | `sluice.dev/app-root` | a path: a request for exactly `/` gets 302 there |
//! | `sluice.dev/from-to-www-redirect` | `"true"`: `www.` + host and host redirect to the listed one |
//! | `sluice.dev/rewrite-target` | a path, `$1`..`$9` the regex path's groups: the path sent upstream |
//! | `sluice.dev/rewrite-prefix` | a path: replaces the matched prefix |
//! | `sluice.dev/x-forwarded-prefix` | a path: sent as `X-Forwarded-Prefix` |
//! | `sluice.dev/upstream-vhost` | a host name: the upstream's `Host` and TLS server name |
//! | `sluice.dev/request-headers` | `Name: value` lines set on the upstream request |
//! | `sluice.dev/request-headers-remove` | `A, B`: removed from the upstream request |
//! | `sluice.dev/response-headers` | `Name: value` lines set on the response |
//! | `sluice.dev/response-headers-remove` | `A, B`: removed from the response |
//! | `sluice.dev/mirror-target` | `service:port` (number or name): a copy of each request goes there |
//! | `sluice.dev/denylist-source-range` | `CIDR, CIDR`: clients in these ranges get 403 |
//! | `sluice.dev/allowlist-source-range` | `CIDR, CIDR`: clients outside these ranges get 403 |
//! | `sluice.dev/auth-type` and the other `auth-*` of [`basic_auth`] | `basic`: 401 without a user of the Secret |
//! | `sluice.dev/auth-url` and companions | external authentication, see [`ext_auth`] |
//! | `sluice.dev/enable-cors`, `cors-*` | browser origins that may read responses ([`cors`]) |
//! | `sluice.dev/limit-rps`, `limit-rpm`, `limit-connections`, ... | limits per client ([`limits`]) |
//!
//! Values are literal text: nothing is expanded but the `$1`..`$9` of `rewrite-target` and the
//! variables of `auth-cache-key` (which only ever form a cache key), so an annotation cannot
//! inject configuration.

pub mod basic_auth;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::annotations::{parse_bool, AnnotationError};
use crate::build::PoolKey;
use crate::cidr::Cidr;
use crate::finding::Reason;
use crate::model::{IngressInput, PortRef};
use crate::ownership::Ownership;
use crate::routes::{HostKey, RouteTable};

pub mod ext_auth;
pub use ext_auth::ExtAuth;
pub mod cors;
pub mod limits;

pub use cors::Cors;
pub use limits::Limits;

pub const USE_REGEX: &str = "sluice.dev/use-regex";
pub const PERMANENT_REDIRECT: &str = "sluice.dev/permanent-redirect";
pub const PERMANENT_REDIRECT_CODE: &str = "sluice.dev/permanent-redirect-code";
pub const TEMPORAL_REDIRECT: &str = "sluice.dev/temporal-redirect";
pub const REDIRECT_KEEP_QUERY: &str = "sluice.dev/redirect-keep-query";
pub const APP_ROOT: &str = "sluice.dev/app-root";
pub const FROM_TO_WWW_REDIRECT: &str = "sluice.dev/from-to-www-redirect";
pub const REWRITE_TARGET: &str = "sluice.dev/rewrite-target";
pub const REWRITE_PREFIX: &str = "sluice.dev/rewrite-prefix";
pub const X_FORWARDED_PREFIX: &str = "sluice.dev/x-forwarded-prefix";
pub const UPSTREAM_VHOST: &str = "sluice.dev/upstream-vhost";
pub const REQUEST_HEADERS: &str = "sluice.dev/request-headers";
pub const REQUEST_HEADERS_REMOVE: &str = "sluice.dev/request-headers-remove";
pub const RESPONSE_HEADERS: &str = "sluice.dev/response-headers";
pub const RESPONSE_HEADERS_REMOVE: &str = "sluice.dev/response-headers-remove";
pub const MIRROR_TARGET: &str = "sluice.dev/mirror-target";
pub const ALLOWLIST_SOURCE_RANGE: &str = "sluice.dev/allowlist-source-range";
pub const DENYLIST_SOURCE_RANGE: &str = "sluice.dev/denylist-source-range";

/// The longest value of a URL, path or header an annotation may give, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;

/// Headers no annotation may set or remove: hop-by-hop and framing headers (the proxy owns the
/// connection and the message length), `Host` (see `sluice.dev/upstream-vhost`), and the ones
/// sluice writes itself so backends can trust them. Names starting with `x-forwarded-` or
/// `x-client-cert` are refused as well.
const PROTECTED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
    "x-real-ip",
    "x-request-id",
];

/// One per-route rule. A route applies its filters in order; see each for when it acts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Filter {
    /// A policy annotation of the Ingress is invalid: every request answers 503.
    Invalid,
    /// Who may reach the route, by client address: one in `deny` gets 403; so does one outside
    /// `allow` when `allow` is not empty. Deny is checked first.
    SourceRange { allow: Vec<Cidr>, deny: Vec<Cidr> },
    /// A request without the credentials of a user of the Secret gets 401 ([`basic_auth`]).
    BasicAuth(basic_auth::BasicAuth),
    /// Which browser origins may read the route's responses: a preflight from one is answered
    /// 204 by sluice, an actual request gets CORS headers on its response.
    Cors(Cors),
    /// Request rates and requests in flight per client address; over them the request is
    /// refused before any upstream connection.
    Limits(Limits),
    /// Answer with a redirect to `location` (the query appended when `keep_query` and the
    /// location has none).
    Redirect {
        code: u16,
        location: String,
        keep_query: bool,
    },
    /// A request for exactly `/` gets 302 to this path.
    AppRoot(String),
    /// The path sent upstream becomes this target, `$1`..`$9` replaced by the regex path's
    /// capture groups; a `?` in it replaces the query.
    RewriteTarget(String),
    /// The matched prefix of the path is replaced by this path.
    RewritePrefix(String),
    /// `X-Forwarded-Prefix` on the upstream request.
    ForwardedPrefix(String),
    /// The `Host` sent upstream and the upstream TLS server name.
    UpstreamVhost(String),
    /// Headers set on (replacing any the client sent) and removed from the upstream request.
    RequestHeaders(HeaderChanges),
    /// Headers set on and removed from the response to the client.
    ResponseHeaders(HeaderChanges),
    /// A copy of each request (head and body) goes to one endpoint of this Service port of the
    /// Ingress's namespace, fire-and-forget. `pool` is filled in when the snapshot resolves it;
    /// `None`: it could not be (reported), and nothing is mirrored.
    Mirror {
        service: String,
        port: PortRef,
        pool: Option<PoolKey>,
    },
    /// Before the request is proxied, an auth service decides ([`ext_auth`]).
    ExtAuth(Box<ExtAuth>),
}

/// Header names (lowercase) to set to a value, and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HeaderChanges {
    pub set: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl fmt::Display for HeaderChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        if !self.set.is_empty() {
            let names: Vec<&str> = self.set.iter().map(|(n, _)| n.as_str()).collect();
            write!(f, "set {}", names.join(" "))?;
            sep = ", ";
        }
        if !self.remove.is_empty() {
            write!(f, "{sep}remove {}", self.remove.join(" "))?;
        }
        Ok(())
    }
}

impl fmt::Display for Filter {
    /// How `sluice check` shows the filter (`rewrite /v2$1`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Filter::Invalid => f.write_str("503: invalid policy annotation"),
            Filter::SourceRange { allow, deny } => {
                let list = |l: &[Cidr]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
                let mut sep = "";
                if !deny.is_empty() {
                    write!(f, "deny {}", list(deny).join(" "))?;
                    sep = ", ";
                }
                if !allow.is_empty() {
                    write!(f, "{sep}allow only {}", list(allow).join(" "))?;
                }
                Ok(())
            }
            Filter::BasicAuth(rule) => write!(f, "{rule}"),
            Filter::Cors(c) => write!(f, "{c}"),
            Filter::Limits(l) => write!(f, "{l}"),
            Filter::Redirect {
                code,
                location,
                keep_query,
            } => {
                write!(f, "redirect {code} {location}")?;
                if *keep_query {
                    f.write_str(" keep-query")?;
                }
                Ok(())
            }
            Filter::AppRoot(p) => write!(f, "app-root {p}"),
            Filter::RewriteTarget(t) => write!(f, "rewrite {t}"),
            Filter::RewritePrefix(p) => write!(f, "rewrite-prefix {p}"),
            Filter::ForwardedPrefix(p) => write!(f, "x-forwarded-prefix {p}"),
            Filter::UpstreamVhost(h) => write!(f, "upstream-vhost {h}"),
            Filter::RequestHeaders(c) => write!(f, "request headers {c}"),
            Filter::ResponseHeaders(c) => write!(f, "response headers {c}"),
            Filter::Mirror { service, port, .. } => write!(f, "mirror {service}:{port}"),
            Filter::ExtAuth(a) => a.fmt(f),
        }
    }
}

/// Why a policy annotation's value is refused. Each message follows the value it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("is not an absolute URL (http:// or https://) or a path starting with /")]
    NotAUrl,
    #[error("is not a path starting with /")]
    NotAPath,
    #[error("is not a path starting with / whose only `$` are $1 to $9")]
    NotATarget,
    #[error("is not 301, 302, 303, 307 or 308")]
    NotARedirectCode,
    #[error("is not a host name")]
    NotAHost,
    #[error(
        "line {line} is not `Name: value` with a token name and a value without control characters"
    )]
    NotAHeaderLine { line: usize },
    #[error("is not a comma-separated list of header names")]
    NotHeaderNames,
    #[error("names `{name}`, a header sluice owns (hop-by-hop, Host, X-Forwarded-*, X-Real-IP, X-Request-Id, X-Client-Cert*)")]
    ProtectedHeader { name: String },
    #[error("names `{name}` twice")]
    RepeatedHeader { name: String },
    #[error("is longer than {MAX_VALUE_BYTES} bytes")]
    TooLong,
    #[error("is set beside `{other}`; only one of the two may be")]
    Conflicts { other: &'static str },
    #[error("is not `service:port` with a Service name and a port number or name")]
    NotAServicePort,
    #[error("is not a comma-separated list of address ranges: {0}")]
    NotAddressRanges(String),
    #[error("is not an http:// or https:// URL with a host and no user info or fragment")]
    NotAnAuthUrl,
    #[error("is an https:// URL with an IP address: the certificate is verified for a host name")]
    AuthUrlWithoutName,
    #[error("is longer than {} seconds", ext_auth::MAX_AUTH_TIMEOUT_MS / 1000)]
    TooLongATimeout,
    #[error("is not `[status ...] duration` entries separated by commas, with 2xx, 401 or 403 statuses each listed once")]
    NotACacheDuration,
    #[error("is not a template of text and $http_<name>, $cookie_<name>, $remote_addr, $host or $request_uri with at least one variable")]
    NotACacheKey,
    #[error(
        "is not a list of origins such as https://app.example.com or https://*.example.com: {0}"
    )]
    NotOrigins(String),
    #[error("is not a comma-separated list of methods")]
    NotMethods,
    #[error("is not a whole number from {min} to {max}")]
    NotACount { min: u64, max: u64 },
    #[error("is set without `{needs}`")]
    Unused { needs: &'static str },
    #[error("is not one of: {0}")]
    NotOneOf(&'static str),
    #[error("is not a Secret name (a DNS subdomain, in the Ingress's namespace)")]
    NotASecretName,
    #[error("is not a realm (visible ASCII and spaces without `\"` or `\\`, up to 256 bytes)")]
    NotARealm,
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
}

/// A policy annotation whose value is refused, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRule {
    pub key: &'static str,
    pub value: String,
    pub error: RuleError,
}

impl fmt::Display for BadRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation `{}`: `{}` {}; the Ingress's routes answer 503",
            self.key, self.value, self.error
        )
    }
}

/// The filters an Ingress's policy annotations ask for, in the order a request meets them, and
/// every refused value. With any refused value the filters are [`Filter::Invalid`] alone.
pub fn filters(annotations: &BTreeMap<String, String>) -> (Vec<Filter>, Vec<BadRule>) {
    let mut p = Parser {
        annotations,
        bad: Vec::new(),
    };
    let mut out = Vec::new();
    // Who may reach the route, before anything else answers for it.
    let allow = p.get(ALLOWLIST_SOURCE_RANGE, parse_ranges);
    let deny = p.get(DENYLIST_SOURCE_RANGE, parse_ranges);
    if allow.is_some() || deny.is_some() {
        out.push(Filter::SourceRange {
            allow: allow.unwrap_or_default(),
            deny: deny.unwrap_or_default(),
        });
    }
    out.extend(basic_auth::filter(&mut p));
    out.extend(p.redirect());
    out.extend(p.get(APP_ROOT, parse_path).map(Filter::AppRoot));
    // Redirects answer without asking; then the auth service decides.
    out.extend(p.ext_auth());
    // `from-to-www-redirect` acts on hosts, not routes (see [`www_redirects`]), and `use-regex`
    // on paths ([`regex_path`]); their values are checked here so a bad one fails closed like
    // the others.
    p.get(FROM_TO_WWW_REDIRECT, |v| Ok(parse_bool(v)?));
    p.get(USE_REGEX, |v| Ok(parse_bool(v)?));
    let target = p.get(REWRITE_TARGET, parse_target);
    let prefix = p.get(REWRITE_PREFIX, parse_prefix);
    if target.is_some() && prefix.is_some() {
        p.refuse(
            REWRITE_PREFIX,
            RuleError::Conflicts {
                other: REWRITE_TARGET,
            },
        );
    }
    out.extend(target.map(Filter::RewriteTarget));
    out.extend(prefix.map(Filter::RewritePrefix));
    // Then a preflight is answered, before the limits count it (as ingress-nginx, whose
    // preflight answer comes before nginx's limit phase): a browser's call is limited once.
    out.extend(cors::cors(&mut p).map(Filter::Cors));
    out.extend(limits::limits(&mut p).map(Filter::Limits));
    out.extend(
        p.get(X_FORWARDED_PREFIX, parse_path)
            .map(Filter::ForwardedPrefix),
    );
    out.extend(
        p.get(UPSTREAM_VHOST, parse_vhost)
            .map(Filter::UpstreamVhost),
    );
    let request = p.header_changes(REQUEST_HEADERS, REQUEST_HEADERS_REMOVE);
    out.extend(request.map(Filter::RequestHeaders));
    let response = p.header_changes(RESPONSE_HEADERS, RESPONSE_HEADERS_REMOVE);
    out.extend(response.map(Filter::ResponseHeaders));
    out.extend(p.get(MIRROR_TARGET, parse_mirror));
    if p.bad.is_empty() {
        (out, p.bad)
    } else {
        (vec![Filter::Invalid], p.bad)
    }
}

struct Parser<'a> {
    annotations: &'a BTreeMap<String, String>,
    bad: Vec<BadRule>,
}

impl Parser<'_> {
    fn refuse(&mut self, key: &'static str, error: RuleError) {
        let value = self.annotations.get(key).cloned().unwrap_or_default();
        self.bad.push(BadRule { key, value, error });
    }

    /// The value of `key` as `parse` reads it; a refused value is recorded.
    fn get<T>(
        &mut self,
        key: &'static str,
        parse: impl FnOnce(&str) -> Result<T, RuleError>,
    ) -> Option<T> {
        let value = self.annotations.get(key)?;
        let parsed = if value.len() > MAX_VALUE_BYTES {
            Err(RuleError::TooLong)
        } else {
            parse(value)
        };
        match parsed {
            Ok(v) => Some(v),
            Err(error) => {
                self.refuse(key, error);
                None
            }
        }
    }

    fn redirect(&mut self) -> Option<Filter> {
        let permanent = self.get(PERMANENT_REDIRECT, parse_url);
        let temporal = self.get(TEMPORAL_REDIRECT, parse_url);
        let code = self.get(PERMANENT_REDIRECT_CODE, parse_code);
        let keep_query = self.get(REDIRECT_KEEP_QUERY, |v| Ok(parse_bool(v)?));
        let absent = |p: &Self, key| !p.annotations.contains_key(key);
        if absent(self, PERMANENT_REDIRECT) && absent(self, TEMPORAL_REDIRECT) {
            for (key, set) in [
                (PERMANENT_REDIRECT_CODE, code.is_some()),
                (REDIRECT_KEEP_QUERY, keep_query.is_some()),
            ] {
                if set {
                    self.refuse(
                        key,
                        RuleError::Unused {
                            needs: PERMANENT_REDIRECT,
                        },
                    );
                }
            }
            return None;
        }
        if self.annotations.contains_key(PERMANENT_REDIRECT)
            && self.annotations.contains_key(TEMPORAL_REDIRECT)
        {
            self.refuse(
                TEMPORAL_REDIRECT,
                RuleError::Conflicts {
                    other: PERMANENT_REDIRECT,
                },
            );
            return None;
        }
        if temporal.is_some() && code.is_some() {
            self.refuse(
                PERMANENT_REDIRECT_CODE,
                RuleError::Unused {
                    needs: PERMANENT_REDIRECT,
                },
            );
        }
        let keep_query = keep_query.unwrap_or(false);
        match (permanent, temporal) {
            (Some(location), _) => Some(Filter::Redirect {
                code: code.unwrap_or(301),
                location,
                keep_query,
            }),
            (_, Some(location)) => Some(Filter::Redirect {
                code: 302,
                location,
                keep_query,
            }),
            _ => None,
        }
    }

    /// The changes of a `Name: value` lines annotation and its `-remove` list.
    fn header_changes(
        &mut self,
        set_key: &'static str,
        remove_key: &'static str,
    ) -> Option<HeaderChanges> {
        let set = self.get(set_key, parse_header_lines);
        let remove = self.get(remove_key, parse_header_names);
        if set.is_none() && remove.is_none() {
            return None;
        }
        Some(HeaderChanges {
            set: set.unwrap_or_default(),
            remove: remove.unwrap_or_default(),
        })
    }
}

/// Visible ASCII only: no space, no control character (so no CR or LF).
fn is_visible(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

fn parse_path(text: &str) -> Result<String, RuleError> {
    let text = text.trim();
    if text.starts_with('/') && is_visible(text) {
        Ok(text.to_string())
    } else {
        Err(RuleError::NotAPath)
    }
}

fn parse_url(text: &str) -> Result<String, RuleError> {
    let text = text.trim();
    if !is_visible(text) {
        return Err(RuleError::NotAUrl);
    }
    if text.starts_with('/') && !text.starts_with("//") {
        return Ok(text.to_string());
    }
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or(RuleError::NotAUrl)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || authority.contains('@') {
        return Err(RuleError::NotAUrl);
    }
    Ok(text.to_string())
}

fn parse_code(text: &str) -> Result<u16, RuleError> {
    match text.trim() {
        "301" => Ok(301),
        "302" => Ok(302),
        "303" => Ok(303),
        "307" => Ok(307),
        "308" => Ok(308),
        _ => Err(RuleError::NotARedirectCode),
    }
}

/// A rewrite target: a path whose every `$` starts one of `$1`..`$9`.
fn parse_target(text: &str) -> Result<String, RuleError> {
    let target = parse_path(text).map_err(|_| RuleError::NotATarget)?;
    let bytes = target.as_bytes();
    let ok = bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'$' || matches!(bytes.get(i + 1), Some(b'1'..=b'9')));
    if ok {
        Ok(target)
    } else {
        Err(RuleError::NotATarget)
    }
}

/// A prefix replacement: a path without query.
fn parse_prefix(text: &str) -> Result<String, RuleError> {
    let path = parse_path(text)?;
    if path.contains(['?', '#']) {
        return Err(RuleError::NotAPath);
    }
    Ok(path)
}

/// A host name, with an optional port.
fn parse_vhost(text: &str) -> Result<String, RuleError> {
    let text = text.trim().to_ascii_lowercase();
    let (name, port) = match text.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (text.as_str(), None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if port_ok && name.len() <= 253 && name.split('.').all(crate::routes::is_dns_label) {
        Ok(text)
    } else {
        Err(RuleError::NotAHost)
    }
}

/// `CIDR, CIDR, ...` (IPv4 and IPv6; a bare address is one host; empty items skipped): at
/// least one.
fn parse_ranges(text: &str) -> Result<Vec<Cidr>, RuleError> {
    let ranges = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::parse::<Cidr>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| RuleError::NotAddressRanges(e.to_string()))?;
    if ranges.is_empty() {
        return Err(RuleError::NotAddressRanges("the list is empty".into()));
    }
    Ok(ranges)
}

/// `service:port`, the port by number or by name.
fn parse_mirror(text: &str) -> Result<Filter, RuleError> {
    let (service, port) = text
        .trim()
        .split_once(':')
        .ok_or(RuleError::NotAServicePort)?;
    if !crate::routes::is_dns_label(service) || port.is_empty() {
        return Err(RuleError::NotAServicePort);
    }
    let port = match port.parse::<i32>() {
        Ok(n) if (1..=65535).contains(&n) => PortRef::Number(n),
        Ok(_) => return Err(RuleError::NotAServicePort),
        Err(_) if crate::routes::is_dns_label(port) => PortRef::Name(port.to_string()),
        Err(_) => return Err(RuleError::NotAServicePort),
    };
    Ok(Filter::Mirror {
        service: service.to_string(),
        port,
        pool: None,
    })
}

/// An RFC 9110 token, as a header name is.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A lowercase header name an annotation may change.
fn header_name(name: &str) -> Result<String, RuleError> {
    let name = name.trim().to_ascii_lowercase();
    if !is_token(&name) {
        return Err(RuleError::NotHeaderNames);
    }
    if is_protected_header(&name) {
        return Err(RuleError::ProtectedHeader { name });
    }
    Ok(name)
}

/// Whether a lowercase header name is one sluice owns: hop-by-hop, framing, `Host`, and the
/// ones it writes itself so backends can trust them ([`PROTECTED`], `x-forwarded-*`,
/// `x-client-cert*`).
pub fn is_protected_header(name: &str) -> bool {
    PROTECTED.contains(&name)
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-client-cert")
}

fn parse_header_lines(text: &str) -> Result<Vec<(String, String)>, RuleError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = RuleError::NotAHeaderLine { line: i + 1 };
        let (name, value) = line.split_once(':').ok_or(bad.clone())?;
        let name = header_name(name).map_err(|e| match e {
            RuleError::NotHeaderNames => bad.clone(),
            e => e,
        })?;
        let value = value.trim();
        if !value
            .bytes()
            .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
        {
            return Err(bad);
        }
        if out.iter().any(|(n, _)| *n == name) {
            return Err(RuleError::RepeatedHeader { name });
        }
        out.push((name, value.to_string()));
    }
    if out.is_empty() {
        return Err(RuleError::NotAHeaderLine { line: 1 });
    }
    Ok(out)
}

fn parse_header_names(text: &str) -> Result<Vec<String>, RuleError> {
    let mut out = Vec::new();
    for name in text.split(',') {
        let name = header_name(name)?;
        if out.contains(&name) {
            return Err(RuleError::RepeatedHeader { name });
        }
        out.push(name);
    }
    Ok(out)
}

/// Whether the Ingress's `ImplementationSpecific` paths are regexes (a bad value is reported by
/// [`filters`]).
pub fn use_regex(ingress: &IngressInput) -> bool {
    ingress
        .annotations
        .get(USE_REGEX)
        .is_some_and(|v| parse_bool(v) == Ok(true))
}

/// Checks a regex path of `ingress` on `host`: only the namespace that owns the host may add
/// one, whatever `controller.cross_namespace_paths` allows for plain paths (a foreign `/.*`
/// must not capture the owner's `/admin`), and the pattern must compile. `Err` is the finding.
pub fn regex_path(
    ownership: &Ownership,
    host: &HostKey<'_>,
    ingress: &IngressInput,
    pattern: &str,
) -> Result<(), (Reason, String)> {
    let owner = crate::ownership::host_text(host).and_then(|h| ownership.owner(&h));
    if let Some(owner) = owner.filter(|o| o.namespace != ingress.namespace) {
        return Err((
            Reason::HostNotOwned,
            format!("regex path `{pattern}` is not served: the host is owned by {owner}"),
        ));
    }
    crate::regex_paths::check(pattern).map_err(|e| {
        let e = e.to_string().replace('\n', " ");
        (Reason::InvalidPath, format!("regex path `{pattern}`: {e}"))
    })
}

/// The counterpart of a host for `from-to-www-redirect`: `www.` added or removed. `None` for a
/// host that has no usable counterpart.
pub fn www_counterpart(host: &str) -> Option<String> {
    match host.strip_prefix("www.") {
        Some(bare) if bare.contains('.') => Some(bare.to_string()),
        Some(_) => None,
        None => Some(format!("www.{host}")),
    }
}

/// The hosts that `sluice.dev/from-to-www-redirect` sends to a listed rule host: for each exact
/// rule host of an Ingress with the annotation, its counterpart (`www.` added or removed), unless
/// some Ingress lists the counterpart as a rule host itself (then it is routed as written) or
/// another namespace owns it. Oldest Ingress first, so the oldest keeps a contested counterpart.
/// Returns (counterpart, rule host) pairs.
pub fn www_redirects(
    served: &[&IngressInput],
    routes: &RouteTable,
    ownership: &Ownership,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for ingress in served {
        let wanted = ingress
            .annotations
            .get(FROM_TO_WWW_REDIRECT)
            .is_some_and(|v| parse_bool(v) == Ok(true));
        if !wanted {
            continue;
        }
        let hosts: BTreeSet<&str> = ingress
            .rules
            .iter()
            .filter_map(|r| r.host.as_deref())
            .filter(|h| !h.starts_with('*'))
            .collect();
        for host in hosts {
            let Some(other) = www_counterpart(host) else {
                continue;
            };
            let listed = routes
                .host_map()
                .get_key(&HostKey::Exact(other.as_str()))
                .is_some();
            let foreign = ownership
                .owner(&other)
                .is_some_and(|o| o.namespace != ingress.namespace);
            if !listed && !foreign && routes.host_routes(host).is_some() {
                out.entry(other).or_insert_with(|| host.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
