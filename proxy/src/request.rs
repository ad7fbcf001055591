//! A request's facts, read once in [`crate::router`]'s `request_filter` and carried on the
//! request context: the host it is for, its normalized path, and how much body it may send.
//!
//! The order of decisions, each answered with its status when it fails:
//! 1. **Host** ([`request_host`]): the authority of the request target (HTTP/2 `:authority`, or
//!    the authority of an HTTP/1.1 absolute-form target, which RFC 9112 makes the host), else
//!    the `Host` header. Both present and naming different hosts: 400 (Pingora already refuses
//!    a second `Host` and a byte-wise mismatch on HTTP/1.1). An HTTP/1.1 request with neither:
//!    400, as RFC 9112 requires. A host that is not a DNS name or an IP literal with an optional
//!    port ([`sluice_config::routes::parse_request_host`]): 400. The upstream gets the host
//!    that was routed.
//! 2. **Path** ([`sluice_config::path`]): normalized; a `..` above the root is 400. The upstream
//!    receives the normalized path and the query untouched ([`upstream_target`]), unless the
//!    route's Ingress sets `sluice.dev/forward-raw-path: "true"`.
//! 3. **Body** ([`BodyLimit`]): a `Content-Length` over the route's limit is 413 before anything
//!    is forwarded; a chunked or HTTP/2 body that grows over it is cut with 413 (or, once the
//!    response has started, the connection or stream is reset).

use std::borrow::Cow;

use http::header;
use pingora_error::{ErrorType, OrErr, Result};
use pingora_http::authority::raw_target_authority;
use pingora_http::RequestHeader;
use sluice_config::path::{normalize_path, PathError};
use sluice_config::routes::{normalize_host, parse_request_host};

use crate::router::Refusal;

/// The authority of the request target, when it has one: HTTP/2 `:authority`, or the
/// authority of an HTTP/1.1 absolute-form target (Pingora keeps that only in the raw target).
pub fn target_authority(req: &RequestHeader) -> Option<&str> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str());
    }
    raw_target_authority(req.raw_path())
        .authority()
        .and_then(|a| std::str::from_utf8(a).ok())
}

/// The host as the client sent it (for logs and `X-Forwarded-Host`): the target's authority,
/// else the `Host` header, else empty. No check.
pub fn raw_host(req: &RequestHeader) -> &str {
    target_authority(req)
        .or_else(|| req.headers.get(header::HOST).and_then(|v| v.to_str().ok()))
        .unwrap_or("")
}

/// The validated host the request is routed by: lowercase, no port, no trailing dot; empty for
/// a request without a host (HTTP/1.0, or HTTP/2 without `:authority`).
pub fn request_host(req: &RequestHeader) -> Result<Cow<'_, str>, Refusal> {
    let mut hosts = req.headers.get_all(header::HOST).iter();
    let header = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(Refusal::BadHost),
        (Some(v), None) => Some(v.to_str().map_err(|_| Refusal::BadHost)?),
        (None, None) => None,
    };
    let authority = target_authority(req);
    let raw = match (authority, header) {
        (Some(a), Some(h)) => {
            if normalize_host(a) != normalize_host(h) {
                return Err(Refusal::BadHost);
            }
            a
        }
        (Some(a), None) => a,
        (None, Some(h)) => h,
        (None, None) if req.version == http::Version::HTTP_11 => {
            return Err(Refusal::BadHost);
        }
        (None, None) => "",
    };
    parse_request_host(raw).map_err(|_| Refusal::BadHost)
}

/// The normalized path of the request; `None` when the path is already normal (the common
/// case, which allocates nothing).
pub fn request_path(req: &RequestHeader) -> Result<Option<String>, Refusal> {
    match normalize_path(req.uri.path()) {
        Ok(Cow::Borrowed(_)) => Ok(None),
        Ok(Cow::Owned(p)) => Ok(Some(p)),
        Err(PathError::AboveRoot) => Err(Refusal::BadPath),
    }
}

/// The request target the upstream should receive, when it is not the one Pingora would
/// write: the normalized path (unless `forward_raw`) with the query untouched, in origin form
/// (an absolute-form target becomes its path; the host travels in `Host`). `None`: keep it.
pub fn upstream_target(
    req: &RequestHeader,
    normalized: Option<&str>,
    forward_raw: bool,
) -> Result<Option<http::Uri>> {
    let absolute =
        req.uri.authority().is_none() && raw_target_authority(req.raw_path()).authority().is_some();
    let path = match normalized {
        Some(p) if !forward_raw => p,
        _ if absolute => req.uri.path(),
        _ => return Ok(None),
    };
    let mut target = String::with_capacity(path.len() + 1 + req.uri.query().map_or(0, str::len));
    target.push_str(path);
    if let Some(q) = req.uri.query() {
        target.push('?');
        target.push_str(q);
    }
    let mut parts = req.uri.clone().into_parts();
    parts.path_and_query = Some(
        target
            .parse()
            .or_err(ErrorType::InvalidHTTPHeader, "normalized request target")?,
    );
    http::Uri::from_parts(parts)
        .or_err(ErrorType::InvalidHTTPHeader, "normalized request target")
        .map(Some)
}

/// The request's `Content-Length`, when it has one that parses.
pub fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body a request may send, and how much it has sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BodyLimit {
    /// The largest body in bytes; 0 for no limit.
    pub max: u64,
    /// Body bytes read from the client so far.
    pub seen: u64,
}

impl BodyLimit {
    pub fn new(max: u64) -> BodyLimit {
        BodyLimit { max, seen: 0 }
    }

    /// Whether a body of `len` bytes, as announced by `Content-Length`, is over the limit.
    pub fn refuses(&self, len: u64) -> bool {
        self.max > 0 && len > self.max
    }

    /// Counts `n` more body bytes; whether the body is now over the limit.
    pub fn add(&mut self, n: usize) -> bool {
        self.seen = self.seen.saturating_add(n as u64);
        self.refuses(self.seen)
    }
}

/// Whether a header name contains `_`: such headers are dropped unless
/// `server.underscores_in_headers` is set, as nginx does, since a backend that reads headers
/// through CGI-style variables sees `x_user` and `x-user` as the same one.
pub fn has_underscore(name: &header::HeaderName) -> bool {
    name.as_str().as_bytes().contains(&b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(target: &str, version: http::Version, hosts: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
        r.set_version(version);
        for h in hosts {
            r.append_header(header::HOST, *h).unwrap();
        }
        r
    }

    const H11: http::Version = http::Version::HTTP_11;

    #[test]
    fn the_routed_host_comes_from_the_target_authority_then_the_host_header() {
        for (target, version, hosts, want) in [
            ("/x", H11, &["App.Test:8080"][..], Ok("app.test")),
            ("http://app.test/admin", H11, &[][..], Ok("app.test")),
            (
                "http://app.test/admin",
                H11,
                &["APP.test"][..],
                Ok("app.test"),
            ),
            ("/x", http::Version::HTTP_10, &[][..], Ok("")),
            ("/x", H11, &[""][..], Ok("")),
            ("/x", H11, &[][..], Err(Refusal::BadHost)),
            (
                "http://a.test/",
                H11,
                &["b.test"][..],
                Err(Refusal::BadHost),
            ),
            ("/x", H11, &["a.test", "a.test"][..], Err(Refusal::BadHost)),
            ("/x", H11, &["a/../x"][..], Err(Refusal::BadHost)),
            ("/x", H11, &["<script>"][..], Err(Refusal::BadHost)),
        ] {
            let r = req(target, version, hosts);
            assert_eq!(
                request_host(&r).as_deref().map_err(Refusal::clone),
                want,
                "{target} {hosts:?}"
            );
        }
    }

    #[test]
    fn the_upstream_target_is_the_normalized_origin_form_with_the_query_untouched() {
        let r = req("/a/../b//c?x=/../&y", H11, &["a.test"]);
        let n = request_path(&r).unwrap();
        assert_eq!(n.as_deref(), Some("/b/c"));
        let t = upstream_target(&r, n.as_deref(), false).unwrap().unwrap();
        assert_eq!(t.to_string(), "/b/c?x=/../&y");
        // Raw path forwarded on request: nothing to rewrite in origin form.
        assert!(upstream_target(&r, n.as_deref(), true).unwrap().is_none());
        // An absolute-form target always becomes its path.
        let r = req("http://a.test/p;x=1?q", H11, &[]);
        assert_eq!(request_path(&r).unwrap(), None);
        let t = upstream_target(&r, None, true).unwrap().unwrap();
        assert_eq!(t.to_string(), "/p;x=1?q");
        // A normal origin-form request is left alone.
        let r = req("/ok?q", H11, &["a.test"]);
        assert!(upstream_target(&r, None, false).unwrap().is_none());
        assert_eq!(request_path(&req("/..", H11, &[])), Err(Refusal::BadPath));
    }

    #[test]
    fn a_body_limit_of_zero_is_no_limit() {
        let mut unlimited = BodyLimit::new(0);
        assert!(!unlimited.refuses(u64::MAX));
        assert!(!unlimited.add(usize::MAX));
        let mut limited = BodyLimit::new(10);
        assert!(!limited.refuses(10));
        assert!(limited.refuses(11));
        assert!(!limited.add(6));
        assert!(!limited.add(4));
        assert!(limited.add(1));
    }
}
