//! CORS (`sluice.dev/enable-cors`): preflights answered by sluice, CORS headers on actual
//! responses, over real loopback sockets.

use crate::support::*;

/// An Ingress for `host` to one backend with these annotations.
pub fn annotated_route(backend: &Backend, host: &str, annotations: &[(&str, &str)]) -> String {
    let ing = ingress("default", host, Some(host), &[("/", "Prefix", "svc-a")]);
    service_with("default", "svc-a", &[backend.addr]) + &annotate(&ing, annotations)
}

/// Backend `a` behind a route for `api.test` with these annotations, and sluice serving it.
pub async fn api_route(annotations: &[(&str, &str)]) -> (Backend, Sluice) {
    let a = Backend::start("a").await;
    let s = Sluice::start(&annotated_route(&a, "api.test", annotations)).await;
    (a, s)
}

/// The message of the finding the live snapshot reports about `annotation`.
pub fn reported(s: &Sluice, annotation: &str) -> String {
    s.skipped()
        .into_iter()
        .find(|f| f.message.contains(annotation))
        .unwrap_or_else(|| panic!("no finding about {annotation}"))
        .message
}

/// A request with `method` to `host` carrying these headers.
pub fn request_as(
    method: &str,
    host: &str,
    headers: &[(&str, &str)],
) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = request(host, "/");
    *req.method_mut() = method.parse().unwrap();
    for (name, value) in headers {
        let name = hyper::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        req.headers_mut().append(name, value.parse().unwrap());
    }
    req
}

async fn send(s: &Sluice, method: &str, host: &str, headers: &[(&str, &str)]) -> Reply {
    let req = request_as(method, host, headers);
    H1::connect(s.addr).await.send(req).await.unwrap()
}

/// The values of a response header, joined as a client reads a list.
fn header(r: &Reply, name: &str) -> Option<String> {
    let values: Vec<&str> = r
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The CORS headers and `Vary` of a response, in this order, absent ones left out.
fn cors_headers(r: &Reply) -> Vec<(&'static str, String)> {
    [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
        "access-control-max-age",
        "vary",
    ]
    .into_iter()
    .filter_map(|name| Some((name, header(r, name)?)))
    .collect()
}

/// `(name, value)` pairs as [`cors_headers`] lists them.
fn want(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(n, v)| (*n, v.to_string())).collect()
}

const PREFLIGHT_FROM: fn(&str) -> [(&str, &str); 3] = |origin| {
    [
        ("origin", origin),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "content-type"),
    ]
};

#[tokio::test]
async fn a_preflight_from_an_allowed_origin_is_answered_by_sluice_and_others_reach_the_backend() {
    let (a, s) = api_route(&[
        ("sluice.dev/enable-cors", "true"),
        (
            "sluice.dev/cors-allow-origin",
            "https://app.example.com, https://*.example.org",
        ),
        ("sluice.dev/cors-allow-headers", "Content-Type, X-Api-Key"),
        ("sluice.dev/cors-max-age", "600"),
    ])
    .await;
    let app = PREFLIGHT_FROM("https://app.example.com");
    let r = send(&s, "OPTIONS", "api.test", &app).await;
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.body, "");
    assert_eq!(
        cors_headers(&r),
        want(&[
            ("access-control-allow-origin", "https://app.example.com"),
            ("access-control-allow-credentials", "true"),
            (
                "access-control-allow-methods",
                "GET, PUT, POST, DELETE, PATCH, OPTIONS"
            ),
            ("access-control-allow-headers", "Content-Type, X-Api-Key"),
            ("access-control-max-age", "600"),
            ("vary", "Origin"),
        ])
    );
    assert_eq!(a.hits(), 0, "the preflight never reached the backend");
    // From an origin the route does not admit, the preflight is an ordinary request: the
    // backend answers it and sluice adds no CORS header (the browser blocks the call).
    let other = PREFLIGHT_FROM("https://example.org");
    let r = send(&s, "OPTIONS", "api.test", &other).await;
    assert_eq!((r.status, r.backend()), (200, "a".to_string()));
    assert_eq!(cors_headers(&r), want(&[("vary", "Origin")]));
    // An OPTIONS that is no preflight (no Access-Control-Request-Method) reaches the backend,
    // and is answered as an actual request.
    let r = send(&s, "OPTIONS", "api.test", &app[..1]).await;
    assert_eq!(r.backend(), "a");
    assert_eq!(
        cors_headers(&r),
        want(&[
            ("access-control-allow-origin", "https://app.example.com"),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        ])
    );
    assert_eq!(a.hits(), 2);
}

#[tokio::test]
async fn actual_requests_from_allowed_origins_get_cors_headers_and_others_none() {
    let (_a, s) = api_route(&[
        ("sluice.dev/enable-cors", "true"),
        ("sluice.dev/cors-allow-origin", "https://*.example.org"),
        ("sluice.dev/cors-expose-headers", "X-Total, X-Page"),
    ])
    .await;
    let shop = [("origin", "https://shop.example.org")];
    let r = send(&s, "GET", "api.test", &shop).await;
    assert_eq!((r.status, r.backend()), (200, "a".to_string()));
    // No preflight-only header on an actual response.
    assert_eq!(
        cors_headers(&r),
        want(&[
            ("access-control-allow-origin", "https://shop.example.org"),
            ("access-control-allow-credentials", "true"),
            ("access-control-expose-headers", "X-Total, X-Page"),
            ("vary", "Origin"),
        ])
    );
    for origin in [
        Some("https://example.org"),
        Some("https://a.b.example.org"),
        Some("https://shop.example.org.evil.test"),
        Some("null"),
        None,
    ] {
        let headers: Vec<(&str, &str)> = origin.iter().map(|o| ("origin", *o)).collect();
        let r = send(&s, "GET", "api.test", &headers).await;
        assert_eq!(r.status, 200, "{origin:?}");
        // Caches must still keep the answers to different origins apart.
        assert_eq!(cors_headers(&r), want(&[("vary", "Origin")]), "{origin:?}");
    }
}

#[tokio::test]
async fn any_origin_is_answered_with_a_star_only_without_credentials() {
    let a = Backend::start("a").await;
    let manifests = annotated_route(
        &a,
        "public.test",
        &[
            ("sluice.dev/enable-cors", "true"),
            ("sluice.dev/cors-allow-credentials", "false"),
        ],
    ) + &annotate(
        &ingress(
            "default",
            "private",
            Some("private.test"),
            &[("/", "Prefix", "svc-a")],
        ),
        &[("sluice.dev/enable-cors", "true")],
    );
    let s = Sluice::start(&manifests).await;
    let origin = [("origin", "https://anyone.test")];
    // The answer is the same for every origin: no Vary.
    let r = send(&s, "GET", "public.test", &origin).await;
    assert_eq!(
        cors_headers(&r),
        want(&[("access-control-allow-origin", "*")])
    );
    let r = send(&s, "OPTIONS", "public.test", &PREFLIGHT_FROM("null")).await;
    assert_eq!(r.status, 204);
    assert_eq!(header(&r, "access-control-allow-origin").unwrap(), "*");
    // With credentials (the default), `*` admits every origin but the answer names it: a
    // browser refuses `*` on a credentialed request.
    let r = send(&s, "GET", "private.test", &origin).await;
    assert_eq!(
        cors_headers(&r),
        want(&[
            ("access-control-allow-origin", "https://anyone.test"),
            ("access-control-allow-credentials", "true"),
            ("vary", "Origin"),
        ])
    );
    // `null` is never echoed with credentials.
    let r = send(&s, "OPTIONS", "private.test", &PREFLIGHT_FROM("null")).await;
    assert_eq!((r.status, r.backend()), (200, "a".to_string()));
    assert_eq!(cors_headers(&r), want(&[("vary", "Origin")]));
}

#[tokio::test]
async fn an_invalid_cors_value_fails_the_route_closed_and_is_reported() {
    let (a, s) = api_route(&[
        ("sluice.dev/enable-cors", "true"),
        ("sluice.dev/cors-allow-origin", "app.example.com"),
    ])
    .await;
    let app = PREFLIGHT_FROM("https://app.example.com");
    assert_eq!(send(&s, "OPTIONS", "api.test", &app).await.status, 503);
    assert_eq!(s.get("api.test", "/").await.status, 503);
    assert_eq!(a.hits(), 0);
    let message = reported(&s, "cors-allow-origin");
    assert!(message.contains("app.example.com"), "{message}");
}

#[tokio::test]
async fn a_preflight_over_h2c_is_answered_and_the_connection_serves_on() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (a, s) = api_route(&[("sluice.dev/enable-cors", "true")]).await;
    let stream = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let mut send = async |method: &str, headers: &[(&str, &str)]| {
        let mut req = request_as(method, "api.test", headers);
        *req.uri_mut() = "http://api.test/".parse().unwrap();
        req.headers_mut().remove("host");
        let resp = tokio::time::timeout(STEP, sender.send_request(req))
            .await
            .expect("h2c request timed out")
            .expect("h2c request failed");
        read_reply(resp).await.unwrap()
    };
    let r = send("OPTIONS", &PREFLIGHT_FROM("https://app.test")).await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    assert_eq!(
        header(&r, "access-control-allow-origin").as_deref(),
        Some("https://app.test")
    );
    let r = send("GET", &[("origin", "https://app.test")]).await;
    assert_eq!((r.status, r.backend()), (200, "a".to_string()));
    assert_eq!(a.hits(), 1);
    conn.abort();
}
