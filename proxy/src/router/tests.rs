//! Unit tests of the router's pure parts: the refusals, the header-case table, request ids.

use http::header;
use pingora_error::{Error, ErrorType};

use super::forward::{new_request_id, uncased_wire_name, X_FORWARDED_FOR};
use super::{status_for, RedirectStatus, Refusal, CLIENT_CLOSED_REQUEST};
use crate::text::push_hex;

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

/// The answer to a preflight from `https://app.test` to a route that admits every origin.
fn preflight() -> super::cors::CorsAnswer {
    let cors = sluice_config::rules::Cors {
        origins: vec![sluice_config::rules::cors::Origin::Any],
        methods: "GET".into(),
        headers: "X-A".into(),
        expose: None,
        credentials: true,
        max_age_secs: 60,
    };
    let filter =
        crate::route::Filter::Cors(std::sync::Arc::new(super::CorsPolicy::new(&cors).unwrap()));
    let mut req = pingora_http::RequestHeader::build("OPTIONS", b"/", None).unwrap();
    req.insert_header("origin", "https://app.test").unwrap();
    super::cors::answer(&[filter], &req).unwrap()
}

/// Every refusal the proxy can answer with, one of each variant (both redirect kinds).
fn every_refusal() -> Vec<Refusal> {
    let location = || "https://app.test/x?y".to_string();
    let mut all = vec![
        Refusal::BadHost,
        Refusal::BadPath,
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::AuthChallenge {
            challenges: vec![http::HeaderValue::from_static("Bearer")],
        },
        Refusal::ClientCertificateRequired,
        Refusal::Denied,
        Refusal::NoRoute,
        Refusal::ClientTimeout,
        Refusal::BodyTooLarge,
        Refusal::Misdirected,
        Refusal::TooManyRequests,
        Refusal::HeadTooLarge,
        Refusal::ClientClosed,
        Refusal::Internal,
        Refusal::UpstreamFailed,
        Refusal::NoEndpoint,
        Refusal::InvalidRoute,
        Refusal::UpstreamTimeout,
        Refusal::HttpsRequired {
            location: location(),
        },
        Refusal::Challenge {
            www_authenticate: http::HeaderValue::from_static("Basic realm=\"x\""),
        },
    ];
    for status in [
        RedirectStatus::MovedPermanently,
        RedirectStatus::Found,
        RedirectStatus::SeeOther,
        RedirectStatus::TemporaryRedirect,
        RedirectStatus::PermanentRedirect,
    ] {
        all.push(Refusal::Redirect {
            status,
            location: location(),
        });
    }
    for (status, retry_after) in [(429, Some(3)), (503, None)] {
        all.push(Refusal::Limited {
            status,
            retry_after,
            cors: None,
        });
    }
    all.push(Refusal::Preflight(preflight()));
    // A variant added to the enum and not to this list fails to compile here.
    for r in &all {
        match r {
            Refusal::BadHost
            | Refusal::BadPath
            | Refusal::BadRequest
            | Refusal::Unauthorized
            | Refusal::AuthChallenge { .. }
            | Refusal::ClientCertificateRequired
            | Refusal::Denied
            | Refusal::NoRoute
            | Refusal::ClientTimeout
            | Refusal::BodyTooLarge
            | Refusal::Misdirected
            | Refusal::TooManyRequests
            | Refusal::HeadTooLarge
            | Refusal::ClientClosed
            | Refusal::Internal
            | Refusal::UpstreamFailed
            | Refusal::NoEndpoint
            | Refusal::InvalidRoute
            | Refusal::UpstreamTimeout
            | Refusal::HttpsRequired { .. }
            | Refusal::Challenge { .. }
            | Refusal::Redirect { .. }
            | Refusal::Limited { .. }
            | Refusal::Preflight(_) => {}
        }
    }
    all
}

/// Each refusal's body names its status first, and no two refusals share a body, so a client
/// (or a test) can tell them apart; except the 400s for a bad host, a bad path and an unreadable
/// request, which keep the one body sluice has always sent for them; and a preflight's 204,
/// which has no body. Giving two variants the same body (or a body without its status) makes
/// this fail.
#[test]
fn every_refusal_has_its_own_body_starting_with_its_status() {
    let all = every_refusal();
    let shared_400 = [Refusal::BadHost, Refusal::BadPath, Refusal::BadRequest];
    for (i, a) in all.iter().enumerate() {
        let body = a.body();
        if a.status() == 204 {
            assert_eq!(body, "", "{a:?}");
            continue;
        }
        assert!(
            body.starts_with(&format!("{} ", a.status())),
            "{a:?}: {body:?}"
        );
        assert!(body.len() > 5 && body.ends_with('\n'), "{a:?}: {body:?}");
        for b in &all[i + 1..] {
            if shared_400.contains(a) && shared_400.contains(b) {
                assert_eq!(a.body(), "400 Bad Request\n");
                assert_eq!(a.body(), b.body());
                continue;
            }
            assert_ne!(a.body(), b.body(), "{a:?} and {b:?}");
        }
    }
}

/// The statuses and bodies sluice answered with before the refusals had names stay the same
/// byte for byte.
#[test]
fn refusals_answer_with_the_statuses_and_bodies_sluice_has_always_sent() {
    let https = Refusal::HttpsRequired {
        location: "https://a.test/".into(),
    };
    for (refusal, status, body) in [
        (Refusal::BadHost, 400, "400 Bad Request\n"),
        (Refusal::BadPath, 400, "400 Bad Request\n"),
        (
            Refusal::ClientCertificateRequired,
            403,
            "403 Forbidden: this host requires a client certificate over https\n",
        ),
        (
            Refusal::NoRoute,
            404,
            "404 Not Found: no route for this host and path\n",
        ),
        (Refusal::ClientTimeout, 408, "408 Request Timeout\n"),
        (Refusal::BodyTooLarge, 413, "413 Content Too Large\n"),
        (
            Refusal::Misdirected,
            421,
            "421 Misdirected Request: this host requires its own TLS connection\n",
        ),
        (
            Refusal::HeadTooLarge,
            431,
            "431 Request Header Fields Too Large\n",
        ),
        (Refusal::UpstreamFailed, 502, "502 Bad Gateway\n"),
        (
            Refusal::NoEndpoint,
            503,
            "503 Service Unavailable: no ready endpoint for this route\n",
        ),
        (Refusal::UpstreamTimeout, 504, "504 Gateway Timeout\n"),
        (https, 308, "308 Permanent Redirect: use https\n"),
    ] {
        assert_eq!((refusal.status(), refusal.body()), (status, body));
    }
}

/// A redirect's answer carries its `Location`, its status, and a body whose length is the one
/// announced; no other refusal has a `Location`.
#[test]
fn redirects_carry_their_location_and_other_refusals_none() {
    for refusal in every_refusal() {
        let Some(head) = refusal.head().unwrap() else {
            continue;
        };
        assert_eq!(head.status.as_u16(), refusal.status());
        let location = head
            .headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap());
        match refusal {
            Refusal::HttpsRequired { .. } | Refusal::Redirect { .. } => {
                assert!((300..400).contains(&refusal.status()), "{refusal:?}");
                assert_eq!(location, Some("https://app.test/x?y"), "{refusal:?}");
            }
            _ => assert_eq!(location, None, "{refusal:?}"),
        }
        // A 204 has no body, and so no length either.
        let length = head.headers.get(header::CONTENT_LENGTH);
        match refusal.status() {
            204 => assert_eq!(length, None),
            _ => assert_eq!(
                length.unwrap().to_str().unwrap(),
                refusal.body().len().to_string()
            ),
        }
        // Only a rate limit's refusal says when to come back.
        let retry_after = head.headers.get(header::RETRY_AFTER);
        match refusal {
            Refusal::Limited {
                retry_after: Some(_),
                ..
            } => assert_eq!(retry_after.unwrap(), "3"),
            _ => assert_eq!(retry_after, None, "{refusal:?}"),
        }
    }
}

/// A client abort is logged and counted as 499 but nothing is written to a client that left:
/// it has no response head and is the only refusal not sent.
#[test]
fn a_client_abort_is_counted_as_499_and_never_written() {
    assert_eq!(CLIENT_CLOSED_REQUEST, 499);
    assert_eq!(Refusal::ClientClosed.status(), CLIENT_CLOSED_REQUEST);
    assert!(Refusal::ClientClosed.head().unwrap().is_none());
    for refusal in every_refusal() {
        assert_eq!(
            refusal.is_sent(),
            refusal != Refusal::ClientClosed,
            "{refusal:?}"
        );
    }
    let closed = Error::new_down(ErrorType::ConnectionClosed);
    assert_eq!(status_for(&closed), Refusal::ClientClosed);
}

/// An error raised with a refusal maps back to that refusal, and the errors Pingora raises map
/// by where they came from: an upstream timeout 504, another upstream failure 502, a client
/// silent between body reads 408, a client sending what cannot be read 400.
#[test]
fn errors_map_to_the_refusal_they_stand_for() {
    for refusal in every_refusal() {
        let raised = refusal.raise::<()>("why").unwrap_err();
        match Refusal::from_status(refusal.status()) {
            Some(canonical) => assert_eq!(status_for(&raised), canonical, "{refusal:?}"),
            // A redirect or a preflight's 204 is answered, never raised.
            None => assert!(
                refusal.location().is_some() || refusal.status() == 204,
                "{refusal:?}"
            ),
        }
    }
    // The refusals the proxy phases raise come back as themselves.
    for refusal in [
        Refusal::BodyTooLarge,
        Refusal::NoEndpoint,
        Refusal::UpstreamFailed,
    ] {
        assert_eq!(
            status_for(&refusal.raise::<()>("why").unwrap_err()),
            refusal
        );
    }
    for (error, want) in [
        (
            Error::new_up(ErrorType::ReadTimedout),
            Refusal::UpstreamTimeout,
        ),
        (
            Error::new_up(ErrorType::ConnectTimedout),
            Refusal::UpstreamTimeout,
        ),
        (
            Error::new_up(ErrorType::ConnectRefused),
            Refusal::UpstreamFailed,
        ),
        (
            Error::new_in(ErrorType::InternalError),
            Refusal::UpstreamFailed,
        ),
        (
            Error::new_down(ErrorType::ReadTimedout),
            Refusal::ClientTimeout,
        ),
        (
            Error::new_down(ErrorType::InvalidHTTPHeader),
            Refusal::BadRequest,
        ),
        (
            Error::new_down(ErrorType::WriteError),
            Refusal::ClientClosed,
        ),
    ] {
        assert_eq!(status_for(&error), want, "{error}");
    }
}
