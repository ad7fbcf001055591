//! `sluice.dev/enable-cors` and its `cors-*` annotations: which browser origins may read a
//! route's responses, read into one [`Cors`] filter.
//!
//! A request's `Origin` is matched against the allowed origins ([`Cors::allow_origin`]):
//! - `*` admits every origin: answered with `Access-Control-Allow-Origin: *` when credentials
//!   are off, else the request's origin is echoed (a browser refuses `*` with credentials);
//! - `https://app.example.com` (scheme, host, optional port) admits that origin exactly, case
//!   aside;
//! - `https://*.example.com` admits one label in place of `*` (`https://a.example.com`, not
//!   `https://example.com` nor `https://a.b.example.com`), as ingress-nginx does.
//!
//! `Origin: null` (sandboxed documents, local files) is admitted only by `*` without
//! credentials: echoing it would let any sandboxed page read credentialed answers.

use super::{is_token, Parser, RuleError};
use crate::annotations::parse_bool;

pub const ENABLE_CORS: &str = "sluice.dev/enable-cors";
pub const CORS_ALLOW_ORIGIN: &str = "sluice.dev/cors-allow-origin";
pub const CORS_ALLOW_METHODS: &str = "sluice.dev/cors-allow-methods";
pub const CORS_ALLOW_HEADERS: &str = "sluice.dev/cors-allow-headers";
pub const CORS_EXPOSE_HEADERS: &str = "sluice.dev/cors-expose-headers";
pub const CORS_ALLOW_CREDENTIALS: &str = "sluice.dev/cors-allow-credentials";
pub const CORS_MAX_AGE: &str = "sluice.dev/cors-max-age";

/// The methods a preflight is told the route accepts, when `cors-allow-methods` is not set.
pub const DEFAULT_CORS_ALLOW_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
/// The request headers a preflight is told the route accepts, when `cors-allow-headers` is not
/// set (ingress-nginx's list).
pub const DEFAULT_CORS_ALLOW_HEADERS: &str = "DNT, Keep-Alive, User-Agent, X-Requested-With, \
    If-Modified-Since, Cache-Control, Content-Type, Range, Authorization";
/// Whether credentialed requests are allowed when `cors-allow-credentials` is not set.
pub const DEFAULT_CORS_ALLOW_CREDENTIALS: bool = true;
/// How long, in seconds, a browser may cache a preflight's answer when `cors-max-age` is not
/// set (20 days, as ingress-nginx).
pub const DEFAULT_CORS_MAX_AGE_SECS: u64 = 1_728_000;
/// The longest `cors-max-age` accepted, in seconds (a year).
pub const MAX_CORS_MAX_AGE_SECS: u64 = 365 * 24 * 3600;

/// A route's CORS policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cors {
    /// The origins admitted, in the annotation's order.
    pub origins: Vec<Origin>,
    /// `Access-Control-Allow-Methods` of a preflight's answer.
    pub methods: String,
    /// `Access-Control-Allow-Headers` of a preflight's answer.
    pub headers: String,
    /// `Access-Control-Expose-Headers` of an actual response; `None`: not sent.
    pub expose: Option<String>,
    /// `Access-Control-Allow-Credentials: true` is sent.
    pub credentials: bool,
    /// `Access-Control-Max-Age` of a preflight's answer, in seconds.
    pub max_age_secs: u64,
}

/// One allowed origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `*`: every origin.
    Any,
    /// `scheme://host[:port]`, lowercase, the default port left out.
    Exact(String),
    /// `scheme://*.suffix[:port]`: `prefix` is `scheme://`, `suffix` the `.suffix[:port]` part,
    /// both lowercase; one DNS label goes between them.
    OneLabel { prefix: String, suffix: String },
}

/// What a route answers to an origin it admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowOrigin {
    /// `Access-Control-Allow-Origin: *`.
    Any,
    /// The request's `Origin`, echoed.
    Echo,
}

impl Cors {
    /// How the route answers a request from `origin` (the `Origin` header's bytes): `None`
    /// for an origin it does not admit (no CORS header is sent).
    pub fn allow_origin(&self, origin: &[u8]) -> Option<AllowOrigin> {
        let any = self.origins.contains(&Origin::Any);
        if any && !self.credentials {
            return Some(AllowOrigin::Any);
        }
        let text = std::str::from_utf8(origin).ok()?;
        if text.eq_ignore_ascii_case("null") {
            return None;
        }
        let admitted = any || self.origins.iter().any(|o| o.admits(text));
        admitted.then_some(AllowOrigin::Echo)
    }

    /// Whether the answer depends on the request's `Origin` (so caches must be told `Vary:
    /// Origin`): every policy but `*` without credentials.
    pub fn varies(&self) -> bool {
        self.credentials || !self.origins.contains(&Origin::Any)
    }
}

impl Origin {
    fn admits(&self, origin: &str) -> bool {
        match self {
            Origin::Any => true,
            Origin::Exact(o) => o.eq_ignore_ascii_case(origin),
            Origin::OneLabel { prefix, suffix } => {
                let n = origin.len();
                if n <= prefix.len() + suffix.len()
                    || !origin.is_char_boundary(prefix.len())
                    || !origin.is_char_boundary(n - suffix.len())
                {
                    return false;
                }
                let label = &origin[prefix.len()..n - suffix.len()];
                origin[..prefix.len()].eq_ignore_ascii_case(prefix)
                    && origin[n - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && crate::routes::is_dns_label(&label.to_ascii_lowercase())
            }
        }
    }
}

impl std::fmt::Display for Cors {
    /// How `sluice check` shows the filter (`cors https://a.example *.example.com`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cors")?;
        for o in &self.origins {
            match o {
                Origin::Any => f.write_str(" *")?,
                Origin::Exact(o) => write!(f, " {o}")?,
                Origin::OneLabel { prefix, suffix } => write!(f, " {prefix}*{suffix}")?,
            }
        }
        if self.credentials {
            f.write_str(" with credentials")?;
        }
        Ok(())
    }
}

/// The CORS filter of an Ingress: `Some` with `enable-cors: "true"`. The `cors-*` values are
/// checked whether or not CORS is enabled, so a bad one fails closed either way.
pub(super) fn cors(p: &mut Parser<'_>) -> Option<Cors> {
    let enabled = p.get(ENABLE_CORS, |v| Ok(parse_bool(v)?));
    let origins = p.get(CORS_ALLOW_ORIGIN, parse_origins);
    let methods = p.get(CORS_ALLOW_METHODS, |v| parse_tokens(v, false));
    let headers = p.get(CORS_ALLOW_HEADERS, |v| parse_tokens(v, true));
    let expose = p.get(CORS_EXPOSE_HEADERS, |v| parse_tokens(v, true));
    let credentials = p.get(CORS_ALLOW_CREDENTIALS, |v| Ok(parse_bool(v)?));
    let max_age = p.get(CORS_MAX_AGE, parse_max_age);
    if enabled != Some(true) {
        return None;
    }
    Some(Cors {
        origins: origins.unwrap_or_else(|| vec![Origin::Any]),
        methods: methods.unwrap_or_else(|| DEFAULT_CORS_ALLOW_METHODS.to_string()),
        headers: headers.unwrap_or_else(|| DEFAULT_CORS_ALLOW_HEADERS.to_string()),
        expose,
        credentials: credentials.unwrap_or(DEFAULT_CORS_ALLOW_CREDENTIALS),
        max_age_secs: max_age.unwrap_or(DEFAULT_CORS_MAX_AGE_SECS),
    })
}

/// `origin, origin, ...` (see [`Origin`]); at least one.
fn parse_origins(text: &str) -> Result<Vec<Origin>, RuleError> {
    let origins = text
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(parse_origin)
        .collect::<Result<Vec<_>, _>>()?;
    if origins.is_empty() {
        return Err(RuleError::NotOrigins("the list is empty".into()));
    }
    Ok(origins)
}

fn parse_origin(item: &str) -> Result<Origin, RuleError> {
    if item == "*" {
        return Ok(Origin::Any);
    }
    let bad = |why: &str| RuleError::NotOrigins(format!("`{item}` {why}"));
    let lower = item.to_ascii_lowercase();
    let (scheme, rest) = lower
        .split_once("://")
        .filter(|(s, _)| *s == "http" || *s == "https")
        .ok_or_else(|| bad("does not start with http:// or https://"))?;
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => {
            let port = p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("has a port that is not 1 to 65535"))?;
            (h, Some(port))
        }
        None => (rest, None),
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port
        .filter(|p| *p != default_port)
        .map_or(String::new(), |p| format!(":{p}"));
    let (wild, name) = match host.strip_prefix("*.") {
        Some(name) => (true, name),
        None => (false, host),
    };
    let labels_ok = name.len() <= 253 && name.split('.').all(crate::routes::is_dns_label);
    if !labels_ok {
        return Err(bad(
            "is not scheme://host[:port] with a host name (`*.` only as its first label)",
        ));
    }
    Ok(match wild {
        true => Origin::OneLabel {
            prefix: format!("{scheme}://"),
            suffix: format!(".{name}{port}"),
        },
        false => Origin::Exact(format!("{scheme}://{name}{port}")),
    })
}

/// A comma-separated list of tokens (methods, or header names; `*` among header names when
/// `star`), written back as `A, B`.
fn parse_tokens(text: &str, star: bool) -> Result<String, RuleError> {
    let items: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .collect();
    let ok = |i: &&str| is_token(i) && (star || *i != "*");
    if items.is_empty() || !items.iter().all(ok) {
        return Err(match star {
            true => RuleError::NotHeaderNames,
            false => RuleError::NotMethods,
        });
    }
    Ok(items.join(", "))
}

fn parse_max_age(text: &str) -> Result<u64, RuleError> {
    text.trim()
        .parse::<u64>()
        .ok()
        .filter(|s| *s <= MAX_CORS_MAX_AGE_SECS)
        .ok_or(RuleError::NotACount {
            min: 0,
            max: MAX_CORS_MAX_AGE_SECS,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &str, credentials: bool) -> Cors {
        Cors {
            origins: parse_origins(origins).unwrap(),
            methods: String::new(),
            headers: String::new(),
            expose: None,
            credentials,
            max_age_secs: 0,
        }
    }

    #[test]
    fn origins_match_exactly_or_by_one_label_and_star_is_echoed_with_credentials() {
        use AllowOrigin::{Any, Echo};
        let list = "https://app.example.com, https://*.example.org, http://localhost:3000";
        for (origins, credentials, origin, want) in [
            (list, true, "https://app.example.com", Some(Echo)),
            (list, true, "HTTPS://App.Example.com", Some(Echo)),
            (list, true, "http://app.example.com", None),
            (list, true, "https://app.example.com:8443", None),
            (list, true, "https://a.example.org", Some(Echo)),
            (list, true, "https://example.org", None),
            (list, true, "https://a.b.example.org", None),
            (list, true, "https://evil.com/.example.org", None),
            (list, true, "https://a.example.org.evil.com", None),
            (list, true, "http://localhost:3000", Some(Echo)),
            (list, true, "null", None),
            (
                "https://app.example.com:443",
                true,
                "https://app.example.com",
                Some(Echo),
            ),
            ("*", false, "https://any.where", Some(Any)),
            ("*", false, "null", Some(Any)),
            ("*", true, "https://any.where", Some(Echo)),
            ("*", true, "null", None),
        ] {
            let cors = policy(origins, credentials);
            assert_eq!(
                cors.allow_origin(origin.as_bytes()),
                want,
                "{origins} {credentials} {origin}"
            );
        }
        assert!(!policy("*", false).varies());
        assert!(policy("*", true).varies());
        assert!(policy("https://a.example", false).varies());
    }

    #[test]
    fn origins_that_are_not_scheme_and_host_are_refused() {
        for bad in [
            "",
            "app.example.com",
            "ftp://app.example.com",
            "https://app.example.com/path",
            "https://a.*.example.com",
            "https://app.example.com:0",
            "https://app example.com",
        ] {
            assert!(
                matches!(parse_origins(bad), Err(RuleError::NotOrigins(_))),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod filter_tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rules::{filters, Filter};

    fn parse(pairs: &[(&str, &str)]) -> (Vec<Filter>, Vec<&'static str>) {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (f, bad) = filters(&annotations);
        (f, bad.into_iter().map(|b| b.key).collect())
    }

    #[test]
    fn cors_defaults_as_ingress_nginx_and_only_when_enabled() {
        let (f, bad) = parse(&[(ENABLE_CORS, "true")]);
        assert_eq!(bad, Vec::<&str>::new());
        assert_eq!(
            f,
            [Filter::Cors(Cors {
                origins: vec![Origin::Any],
                methods: DEFAULT_CORS_ALLOW_METHODS.into(),
                headers: DEFAULT_CORS_ALLOW_HEADERS.into(),
                expose: None,
                credentials: true,
                max_age_secs: 1_728_000,
            })]
        );
        let (f, _) = parse(&[
            (ENABLE_CORS, "true"),
            (CORS_ALLOW_ORIGIN, "https://a.example, https://*.b.example"),
            (CORS_ALLOW_METHODS, "GET,POST"),
            (CORS_ALLOW_HEADERS, "X-A , *"),
            (CORS_EXPOSE_HEADERS, "X-Total"),
            (CORS_ALLOW_CREDENTIALS, "false"),
            (CORS_MAX_AGE, "60"),
        ]);
        let Some(Filter::Cors(c)) = f.first() else {
            panic!("{f:?}")
        };
        assert_eq!(
            (c.methods.as_str(), c.headers.as_str(), c.expose.as_deref()),
            ("GET, POST", "X-A, *", Some("X-Total"))
        );
        assert_eq!((c.credentials, c.max_age_secs), (false, 60));
        assert_eq!(
            f[0].to_string(),
            "cors https://a.example https://*.b.example"
        );
        // Not enabled: no filter, but the values are still checked.
        assert_eq!(parse(&[(CORS_ALLOW_ORIGIN, "https://a.example")]).0, []);
        assert_eq!(parse(&[(ENABLE_CORS, "false")]).0, []);
    }

    #[test]
    fn a_bad_cors_value_fails_the_route_closed_even_when_cors_is_off() {
        for (key, value) in [
            (ENABLE_CORS, "yes"),
            (CORS_ALLOW_ORIGIN, "example.com"),
            (CORS_ALLOW_METHODS, "GET, P O S T"),
            (CORS_ALLOW_METHODS, "*"),
            (CORS_ALLOW_HEADERS, "X-A, X B"),
            (CORS_EXPOSE_HEADERS, ","),
            (CORS_ALLOW_CREDENTIALS, "1"),
            (CORS_MAX_AGE, "-5"),
        ] {
            assert_eq!(
                parse(&[(key, value)]),
                (vec![Filter::Invalid], vec![key]),
                "{key}: {value}"
            );
        }
    }
}
