//! `sluice.dev/enable-cors` at request time: which origins the route admits is decided by
//! [`sluice_config::rules::Cors`]; here its answers are written.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an admitted
//!   origin is answered 204 by sluice ([`preflight`]): the backend never sees it, and it is
//!   answered before the route's limits count requests. A preflight from an origin the route
//!   does not admit, and an `OPTIONS` that is no preflight, go to the backend as any request.
//! - An actual request from an admitted origin gets `Access-Control-Allow-Origin` (and
//!   `-Allow-Credentials`, `-Expose-Headers` when set) on its response ([`response`]),
//!   replacing any the backend sent; from any other origin, or without `Origin`, none is added.
//! - Every answer of a route whose answer depends on the origin carries `Vary: Origin` (added
//!   to the backend's `Vary` unless it names `Origin` already).
//! - A refusal by the route's limits carries the same headers as an actual response, so the
//!   page that sent the request can read the 429.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::Method;
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use sluice_config::rules::cors::{AllowOrigin, Cors};

use super::Refusal;
use crate::route::Filter;

static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ANY: HeaderValue = HeaderValue::from_static("*");

/// A route's CORS policy with its header values built once, at publish.
#[derive(Debug, PartialEq, Eq)]
pub struct CorsPolicy {
    rule: Cors,
    methods: HeaderValue,
    headers: HeaderValue,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

impl CorsPolicy {
    /// `None` when a value is not a header value (validated at build, so never).
    pub fn new(rule: &Cors) -> Option<CorsPolicy> {
        let value = |v: &str| HeaderValue::from_str(v).ok();
        Some(CorsPolicy {
            methods: value(&rule.methods)?,
            headers: value(&rule.headers)?,
            expose: match &rule.expose {
                Some(e) => Some(value(e)?),
                None => None,
            },
            max_age: HeaderValue::from(rule.max_age_secs),
            rule: rule.clone(),
        })
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, `None` when the
    /// route does not admit it.
    fn allow(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match self.rule.allow_origin(origin.as_bytes())? {
            AllowOrigin::Any => Some(ANY.clone()),
            AllowOrigin::Echo => Some(origin.clone()),
        }
    }

    /// Writes onto `resp` what every answer to a request from `origin` carries: `Vary: Origin`
    /// when the answer depends on it, and `Access-Control-Allow-Origin` (and `-Credentials`)
    /// when the route admits the origin, which the result says.
    fn origin_head(&self, origin: Option<&HeaderValue>, resp: &mut ResponseHeader) -> Result<bool> {
        if self.rule.varies() && !varies_by_origin(resp) {
            resp.append_header(header::VARY, ORIGIN.clone())?;
        }
        let Some(allow) = origin.and_then(|o| self.allow(o)) else {
            return Ok(false);
        };
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
        if self.rule.credentials {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone())?;
        }
        Ok(true)
    }

    /// The CORS headers of an actual response to a request from `origin`.
    fn actual_head(&self, origin: Option<&HeaderValue>, resp: &mut ResponseHeader) -> Result<()> {
        if let (true, Some(expose)) = (self.origin_head(origin, resp)?, &self.expose) {
            resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
        }
        Ok(())
    }
}

/// Whether the response's `Vary` already names `Origin` (or `*`).
fn varies_by_origin(resp: &ResponseHeader) -> bool {
    resp.headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .map(<[u8]>::trim_ascii)
            .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"origin"))
    })
}

/// What a response sluice writes itself needs to carry the route's CORS headers: the policy
/// and the request's `Origin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsAnswer {
    policy: Arc<CorsPolicy>,
    origin: Option<HeaderValue>,
}

impl CorsAnswer {
    /// Writes the answer to a preflight onto `resp` (its origin is admitted, see
    /// [`preflight`]).
    pub(super) fn preflight_head(&self, resp: &mut ResponseHeader) -> Result<()> {
        let p = &self.policy;
        if !p.origin_head(self.origin.as_ref(), resp)? {
            return Ok(());
        }
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, p.methods.clone())?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, p.headers.clone())?;
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, p.max_age.clone())?;
        Ok(())
    }

    /// Writes the CORS headers of an actual response onto `resp`, as a proxied response gets
    /// them, so a browser page can read why sluice refused its request.
    pub(super) fn actual_head(&self, resp: &mut ResponseHeader) -> Result<()> {
        self.policy.actual_head(self.origin.as_ref(), resp)
    }
}

fn policy(filters: &[Filter]) -> Option<&Arc<CorsPolicy>> {
    filters.iter().find_map(|f| match f {
        Filter::Cors(c) => Some(c),
        _ => None,
    })
}

/// The route's CORS policy with the request's origin, for an answer sluice writes itself;
/// `None` for a route without CORS.
pub(super) fn answer(filters: &[Filter], req: &RequestHeader) -> Option<CorsAnswer> {
    Some(CorsAnswer {
        policy: policy(filters)?.clone(),
        origin: req.headers.get(header::ORIGIN).cloned(),
    })
}

/// The 204 answer of a preflight from an origin the route admits; `None` for any other request.
pub(super) fn preflight(filters: &[Filter], req: &RequestHeader) -> Option<Refusal> {
    if req.method != Method::OPTIONS
        || !req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let answer = answer(filters, req)?;
    answer.policy.allow(answer.origin.as_ref()?)?;
    Some(Refusal::Preflight(answer))
}

/// Adds the CORS headers of the route to a proxied response (see the module's doc).
pub(super) fn response(
    filters: &[Filter],
    req: &RequestHeader,
    resp: &mut ResponseHeader,
) -> Result<()> {
    match policy(filters) {
        Some(cors) => cors.actual_head(req.headers.get(header::ORIGIN), resp),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_added_to_vary_once() {
        for (vary, want) in [
            (vec![], vec!["Origin"]),
            (vec!["Accept-Encoding"], vec!["Accept-Encoding", "Origin"]),
            (
                vec!["accept-encoding, origin"],
                vec!["accept-encoding, origin"],
            ),
            (vec!["Cookie", "ORIGIN"], vec!["Cookie", "ORIGIN"]),
            (vec!["*"], vec!["*"]),
        ] {
            let rule = Cors {
                origins: vec![sluice_config::rules::cors::Origin::Any],
                methods: "GET".into(),
                headers: "X-A".into(),
                expose: None,
                credentials: true,
                max_age_secs: 0,
            };
            let mut resp = ResponseHeader::build(200, None).unwrap();
            for v in &vary {
                resp.append_header(header::VARY, *v).unwrap();
            }
            let admitted = CorsPolicy::new(&rule)
                .unwrap()
                .origin_head(Some(&HeaderValue::from_static("https://a.test")), &mut resp)
                .unwrap();
            assert!(admitted);
            let got: Vec<&str> = resp
                .headers
                .get_all(header::VARY)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, want, "{vary:?}");
        }
    }
}
