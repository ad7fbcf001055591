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
//! - Every answer of a route whose answer depends on the origin carries `Vary: Origin`.

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

    /// Writes the answer to an admitted preflight from `origin` onto `resp`.
    pub(super) fn preflight_head(
        &self,
        origin: &HeaderValue,
        resp: &mut ResponseHeader,
    ) -> Result<()> {
        let Some(allow) = self.allow(origin) else {
            return Ok(());
        };
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
        if self.rule.credentials {
            resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone())?;
        }
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone())?;
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone())?;
        resp.insert_header(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone())?;
        if self.rule.varies() {
            resp.append_header(header::VARY, ORIGIN.clone())?;
        }
        Ok(())
    }
}

fn policy(filters: &[Filter]) -> Option<&Arc<CorsPolicy>> {
    filters.iter().find_map(|f| match f {
        Filter::Cors(c) => Some(c),
        _ => None,
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
    let cors = policy(filters)?;
    let origin = req.headers.get(header::ORIGIN)?;
    cors.allow(origin)?;
    Some(Refusal::Preflight {
        cors: cors.clone(),
        origin: origin.clone(),
    })
}

/// Adds the CORS headers of the route to a proxied response (see the module's doc).
pub(super) fn response(
    filters: &[Filter],
    req: &RequestHeader,
    resp: &mut ResponseHeader,
) -> Result<()> {
    let Some(cors) = policy(filters) else {
        return Ok(());
    };
    if cors.rule.varies() {
        resp.append_header(header::VARY, ORIGIN.clone())?;
    }
    let Some(allow) = req.headers.get(header::ORIGIN).and_then(|o| cors.allow(o)) else {
        return Ok(());
    };
    resp.insert_header(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow)?;
    if cors.rule.credentials {
        resp.insert_header(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone())?;
    }
    if let Some(expose) = &cors.expose {
        resp.insert_header(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone())?;
    }
    Ok(())
}
