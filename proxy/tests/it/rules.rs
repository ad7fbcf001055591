//! Per-route traffic rules over real sockets: redirects, rewrites, header changes and the
//! fail-closed answer of an invalid policy annotation.

use crate::requests::Recorder;
use crate::support::pki::{https_get, ClientTls};
use crate::support::*;
use crate::tls::{https, tls_ingress_in, tls_settings};

/// One backend `web` and one Ingress `rules` on host `r.test` with `paths`, annotated.
pub(crate) async fn one_ingress(
    paths: &[PathRule<'_>],
    annotations: &[(&str, &str)],
) -> (Backend, Sluice) {
    one_ingress_with(&test_settings(""), paths, annotations).await
}

/// [`one_ingress`] under these settings.
pub(crate) async fn one_ingress_with(
    settings: &str,
    paths: &[PathRule<'_>],
    annotations: &[(&str, &str)],
) -> (Backend, Sluice) {
    let web = Backend::start("web").await;
    let manifests = [
        service_with("default", "web", &[web.addr]),
        annotate(
            &ingress("default", "rules", Some("r.test"), paths),
            annotations,
        ),
    ]
    .concat();
    (web, Sluice::start_with(&manifests, settings).await)
}

/// Backends `web` and `other`: Ingress `rules` on `r.test` sends `path` (ImplementationSpecific:
/// a prefix, or a regex with `use-regex`) to `web`,
/// annotated; an older plain Ingress `rest` on the same host sends `/` to `other`.
async fn beside_a_root_route(
    path: &str,
    annotations: &[(&str, &str)],
) -> (Backend, Backend, Sluice) {
    let web = Backend::start("web").await;
    let other = Backend::start("other").await;
    let manifests = [
        service_with("default", "web", &[web.addr]),
        service_with("default", "other", &[other.addr]),
        annotate(
            &ingress(
                "default",
                "rules",
                Some("r.test"),
                &[(path, "ImplementationSpecific", "web")],
            ),
            annotations,
        ),
        ingress(
            "default",
            "rest",
            Some("r.test"),
            &[("/", "Prefix", "other")],
        ),
    ]
    .concat();
    (web, other, Sluice::start(&manifests).await)
}

/// Asserts, for each (path, backend, uri), which backend serves `r.test` + path and the
/// request target it receives.
async fn assert_served(s: &Sluice, cases: &[(&str, &str, &str)]) {
    for (path, backend, want) in cases {
        let r = s.get("r.test", path).await;
        assert_eq!(
            (r.backend(), uri(&r)),
            (backend.to_string(), want.to_string()),
            "{path}"
        );
    }
}

fn uri(r: &Reply) -> String {
    r.json()["uri"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_permanent_redirect_answers_with_its_code_and_keeps_the_query_only_when_asked() {
    let (web, s) = one_ingress(
        &[("/", "Prefix", "web")],
        &[
            ("sluice.dev/permanent-redirect", "https://new.test/landing"),
            ("sluice.dev/permanent-redirect-code", "308"),
            ("sluice.dev/redirect-keep-query", "true"),
        ],
    )
    .await;
    let r = s.get("r.test", "/any/path?a=1&b=2").await;
    assert_eq!(r.status, 308, "{}", r.body);
    assert_eq!(r.headers["location"], "https://new.test/landing?a=1&b=2");
    assert_eq!(web.hits(), 0, "a redirect never reaches the backend");
}

#[tokio::test]
async fn a_temporal_redirect_is_302_to_its_url_without_the_query() {
    let (web, s) = one_ingress(
        &[("/", "Prefix", "web")],
        &[("sluice.dev/temporal-redirect", "/maintenance")],
    )
    .await;
    let r = s.get("r.test", "/x?a=1").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "/maintenance");
    assert_eq!(web.hits(), 0);
}

#[tokio::test]
async fn every_permanent_redirect_code_is_answered_as_written() {
    for code in ["301", "302", "303", "307", "308"] {
        let (_web, s) = one_ingress(
            &[("/", "Prefix", "web")],
            &[
                ("sluice.dev/permanent-redirect", "/to"),
                ("sluice.dev/permanent-redirect-code", code),
            ],
        )
        .await;
        let r = s.get("r.test", "/").await;
        assert_eq!(r.status.to_string(), code);
        assert_eq!(r.headers["location"], "/to");
    }
}

#[tokio::test]
async fn app_root_redirects_only_the_root_path() {
    let (_web, s) = one_ingress(
        &[("/", "Prefix", "web")],
        &[("sluice.dev/app-root", "/app")],
    )
    .await;
    let r = s.get("r.test", "/").await;
    assert_eq!(r.status, 302);
    assert_eq!(r.headers["location"], "/app");
    let r = s.get("r.test", "/app/x").await;
    assert_eq!((r.status, uri(&r)), (200, "/app/x".to_string()));
}

#[tokio::test]
async fn a_rewrite_target_replaces_the_whole_path_and_keeps_the_query_unless_it_has_one() {
    let (_web, s) = one_ingress(
        &[("/old", "Prefix", "web")],
        &[("sluice.dev/rewrite-target", "/new/$1")],
    )
    .await;
    // Without a regex path there is no group: `$1` is empty.
    let r = s.get("r.test", "/old/deep/x?q=1").await;
    assert_eq!((r.status, uri(&r)), (200, "/new/?q=1".to_string()));

    let (_web, s) = one_ingress(
        &[("/old", "Prefix", "web")],
        &[("sluice.dev/rewrite-target", "/new?fixed=1")],
    )
    .await;
    let r = s.get("r.test", "/old/x?q=1").await;
    assert_eq!(uri(&r), "/new?fixed=1");
}

#[tokio::test]
async fn a_rewrite_target_takes_the_capture_groups_of_a_regex_path() {
    let (_web, other, s) = beside_a_root_route(
        "/api(/|$)(.*)",
        &[
            ("sluice.dev/use-regex", "true"),
            ("sluice.dev/rewrite-target", "/v2/$2"),
        ],
    )
    .await;
    assert_served(
        &s,
        &[
            ("/api/users/7?x=1", "web", "/v2/users/7?x=1"),
            ("/api", "web", "/v2/"),
            ("/api/", "web", "/v2/"),
            // `(/|$)` keeps `/apix` out of the regex path: the root route serves it as sent.
            ("/apix", "other", "/apix"),
        ],
    )
    .await;
    assert_eq!(other.hits(), 1);
}

#[tokio::test]
async fn a_dollar_anchors_a_regex_path_at_the_end() {
    let (_web, _other, s) =
        beside_a_root_route("/exact/[0-9]+$", &[("sluice.dev/use-regex", "true")]).await;
    for (path, want) in [
        ("/exact/42", "web"),
        ("/exact/42/more", "other"),
        ("/exact/x", "other"),
        ("/pre/exact/42", "other"),
    ] {
        assert_eq!(s.get("r.test", path).await.backend(), want, "{path}");
    }
}

#[tokio::test]
async fn a_prefix_rewrite_replaces_the_matched_prefix_at_the_element_boundary() {
    let (_web, _other, s) =
        beside_a_root_route("/api", &[("sluice.dev/rewrite-prefix", "/v2")]).await;
    assert_served(
        &s,
        &[
            ("/api/users?x=1", "web", "/v2/users?x=1"),
            ("/api", "web", "/v2"),
            ("/api/", "web", "/v2/"),
            // `/apix` is not under the `/api` element: another route, unrewritten.
            ("/apix", "other", "/apix"),
        ],
    )
    .await;
}

/// Over HTTP/2 the rewritten target keeps the request's scheme and authority: the backend
/// gets the rewritten path for the routed host.
#[tokio::test]
async fn a_rewrite_applies_to_http2_requests_too() {
    let (_web, _other, s) =
        beside_a_root_route("/api", &[("sluice.dev/rewrite-prefix", "/v2")]).await;
    let r = get_h2c(s.addr, "r.test", "/api/users?x=1").await;
    assert_eq!((r.status, uri(&r)), (200, "/v2/users?x=1".to_string()));
    assert_eq!(r.upstream_header("host"), ["r.test"]);
}

#[tokio::test]
async fn request_headers_are_set_and_removed_on_the_way_upstream() {
    let (_web, s) = one_ingress(
        &[("/", "Prefix", "web")],
        &[
            (
                "sluice.dev/request-headers",
                "X-Tenant: blue\\nX-Mode: strict mode",
            ),
            ("sluice.dev/request-headers-remove", "X-Debug, Cookie"),
            ("sluice.dev/x-forwarded-prefix", "/shop"),
            ("sluice.dev/upstream-vhost", "internal.svc.test"),
        ],
    )
    .await;
    let mut req = request("r.test", "/");
    let h = req.headers_mut();
    h.insert("x-tenant", "red".parse().unwrap());
    h.insert("x-debug", "1".parse().unwrap());
    h.insert("cookie", "a=b".parse().unwrap());
    h.insert("x-kept", "yes".parse().unwrap());
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.upstream_header("x-tenant"),
        ["blue"],
        "the client's value is replaced"
    );
    assert_eq!(r.upstream_header("x-mode"), ["strict mode"]);
    assert!(r.upstream_header("x-debug").is_empty());
    assert!(r.upstream_header("cookie").is_empty());
    assert_eq!(r.upstream_header("x-kept"), ["yes"]);
    assert_eq!(r.upstream_header("x-forwarded-prefix"), ["/shop"]);
    assert_eq!(r.upstream_header("host"), ["internal.svc.test"]);
    // The client's host still says where the request was sent.
    assert_eq!(r.upstream_header("x-forwarded-host"), ["r.test"]);
}

#[tokio::test]
async fn response_headers_are_set_and_removed_on_the_way_to_the_client() {
    let (_web, s) = one_ingress(
        &[("/", "Prefix", "web")],
        &[
            ("sluice.dev/response-headers", "X-Frame-Options: DENY"),
            ("sluice.dev/response-headers-remove", "Content-Type"),
        ],
    )
    .await;
    let r = s.get("r.test", "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["x-frame-options"], "DENY");
    assert!(r.headers.get("content-type").is_none(), "{:?}", r.headers);
}

/// The fail-closed rule: a protected name makes the annotation invalid, and the Ingress's
/// routes answer 503 instead of falling through to another Ingress's shorter path, while that
/// other Ingress keeps serving. Making an invalid policy fall back to "no filters" fails it.
#[tokio::test]
async fn an_invalid_policy_annotation_answers_503_and_never_falls_through() {
    let (web, other, s) = beside_a_root_route(
        "/api",
        &[("sluice.dev/request-headers", "X-Forwarded-For: 1.2.3.4")],
    )
    .await;
    let r = s.get("r.test", "/api/x").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("configuration is invalid"), "{}", r.body);
    assert_eq!(web.hits() + other.hits(), 0);
    assert_eq!(s.get("r.test", "/else").await.backend(), "other");
    let findings = s.skipped();
    let finding = findings
        .iter()
        .find(|f| f.ingress.name == "rules")
        .expect("the invalid annotation is reported");
    assert_eq!(finding.reason.as_str(), "InvalidAnnotation");
    assert!(
        finding.message.contains("X-Forwarded-For"),
        "{}",
        finding.message
    );
}

#[tokio::test]
async fn from_to_www_redirect_sends_either_name_to_the_listed_one_over_http() {
    let web = Backend::start("web").await;
    let manifests = [
        service_with("default", "web", &[web.addr]),
        annotate(
            &ingress(
                "default",
                "bare",
                Some("bare.test"),
                &[("/", "Prefix", "web")],
            ),
            &[("sluice.dev/from-to-www-redirect", "true")],
        ),
        annotate(
            &ingress(
                "default",
                "www",
                Some("www.prefixed.test"),
                &[("/", "Prefix", "web")],
            ),
            &[("sluice.dev/from-to-www-redirect", "true")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = s.get("www.bare.test", "/p?q=1").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "http://bare.test/p?q=1");
    let r = s.get("prefixed.test:8080", "/p").await;
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "http://www.prefixed.test:8080/p");
    assert_eq!(s.get("bare.test", "/p").await.status, 200);
    assert_eq!(web.hits(), 1);
}

#[tokio::test]
async fn from_to_www_redirect_keeps_https_for_a_name_in_the_same_tls_entry() {
    let web = Backend::start("web").await;
    let manifests = [
        service_with("default", "web", &[web.addr]),
        tls_ingress_in(
            "default",
            "site",
            None,
            &[("site.test", "web")],
            &[(&["site.test", "www.site.test"], None)],
            &[("sluice.dev/from-to-www-redirect", "true")],
        ),
    ]
    .concat();
    let s = Sluice::start_with(&manifests, &tls_settings("")).await;
    let (r, _) = https_get(
        https(&s),
        &ClientTls::sni("www.site.test"),
        "www.site.test",
        "/p?q=1",
    )
    .await
    .unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.headers["location"], "https://site.test/p?q=1");
    assert_eq!(web.hits(), 0);
}

/// Backends `stable` and `canary`; Ingress `web` on `c.test` sends `/` to `stable` with a
/// response header (and `primary` annotations), and Ingress `web-canary` is its canary to
/// `canary`, annotated.
async fn with_canary(
    primary: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> (Backend, Backend, Sluice) {
    let stable = Backend::start("stable").await;
    let canary = Backend::start("canary").await;
    let mut canary_annotations = vec![("sluice.dev/canary", "true")];
    canary_annotations.extend_from_slice(annotations);
    let mut primary_annotations = vec![("sluice.dev/response-headers", "X-Policy: primary")];
    primary_annotations.extend_from_slice(primary);
    let manifests = [
        service_with("default", "stable", &[stable.addr]),
        service_with("default", "canary", &[canary.addr]),
        annotate(
            &ingress(
                "default",
                "web",
                Some("c.test"),
                &[("/", "Prefix", "stable")],
            ),
            &primary_annotations,
        ),
        annotate(
            &ingress(
                "default",
                "web-canary",
                Some("c.test"),
                &[("/", "Prefix", "canary")],
            ),
            &canary_annotations,
        ),
    ]
    .concat();
    (stable, canary, Sluice::start(&manifests).await)
}

/// Which backend answers a request for `c.test` with these headers.
async fn answered_by(s: &Sluice, headers: &[(&str, &str)]) -> String {
    let mut req = request("c.test", "/");
    for (k, v) in headers {
        let name = hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // The canary inherits the primary's filters.
    assert_eq!(r.headers["x-policy"], "primary");
    r.backend()
}

#[tokio::test]
async fn a_canary_by_header_takes_always_and_leaves_never_and_the_rest_to_the_primary() {
    let (_stable, _canary, s) =
        with_canary(&[], &[("sluice.dev/canary-by-header", "X-Canary")]).await;
    for (value, want) in [
        (Some("always"), "canary"),
        (Some("never"), "stable"),
        (Some("other"), "stable"),
        (None, "stable"),
    ] {
        let headers: Vec<(&str, &str)> = value.map(|v| ("x-canary", v)).into_iter().collect();
        assert_eq!(answered_by(&s, &headers).await, want, "{value:?}");
    }
}

#[tokio::test]
async fn a_canary_by_header_value_takes_only_that_value_then_the_cookie_decides() {
    let (_stable, _canary, s) = with_canary(
        &[],
        &[
            ("sluice.dev/canary-by-header", "X-Canary"),
            ("sluice.dev/canary-by-header-value", "blue"),
            ("sluice.dev/canary-by-cookie", "canary"),
        ],
    )
    .await;
    for (headers, want) in [
        (&[("x-canary", "blue")][..], "canary"),
        (&[("x-canary", "always")][..], "stable"),
        (
            &[("x-canary", "green"), ("cookie", "canary=always")][..],
            "canary",
        ),
        (
            &[("x-canary", "blue"), ("cookie", "canary=never")][..],
            "canary",
        ),
        (&[("cookie", "a=1; canary=always")][..], "canary"),
        (&[("cookie", "canary=never")][..], "stable"),
        (&[][..], "stable"),
    ] {
        assert_eq!(answered_by(&s, headers).await, want, "{headers:?}");
    }
}

/// The weight's share measured over 2 000 requests lands within 3 points of it (the standard
/// deviation of a 30% share over 2 000 draws is about 1 point). Ignoring the weight (0% or
/// 100%) fails it.
#[tokio::test]
async fn a_canary_by_weight_takes_its_share_of_the_requests() {
    let (stable, canary, s) = with_canary(&[], &[("sluice.dev/canary-weight", "30")]).await;
    let total = 2000;
    // Connections are closed after `server.keepalive_requests` (1 000): one per 500 requests.
    for _ in 0..total / 500 {
        let mut conn = H1::connect(s.addr).await;
        for _ in 0..500 {
            let r = conn.get("c.test", "/").await.unwrap();
            assert_eq!(r.status, 200);
        }
    }
    assert_eq!(stable.hits() + canary.hits(), total);
    let share = canary.hits() as f64 * 100.0 / total as f64;
    assert!((share - 30.0).abs() <= 3.0, "canary share {share}%");
}

async fn with_mirror(mirror: std::net::SocketAddr) -> (Backend, Sluice) {
    let web = Backend::start("web").await;
    let manifests = [
        service_with("default", "web", &[web.addr]),
        service_with("default", "mirror", &[mirror]),
        annotate(
            &ingress(
                "default",
                "rules",
                Some("m.test"),
                &[("/", "Prefix", "web")],
            ),
            &[
                ("sluice.dev/mirror-target", "mirror:http"),
                ("sluice.dev/request-headers", "X-Tenant: blue"),
            ],
        ),
    ]
    .concat();
    (web, Sluice::start(&manifests).await)
}

fn post(path: &str, body: &'static str) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "m.test")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            body.as_bytes(),
        )))
        .unwrap()
}

#[tokio::test]
async fn a_mirror_receives_what_the_primary_receives() {
    let mirror = Recorder::start().await;
    let (_web, s) = with_mirror(mirror.addr).await;
    let r = H1::connect(s.addr)
        .await
        .send(post("/orders?id=7", "{\"n\":1}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/orders?id=7");
    let seen = eventually(STEP, "the mirror's copy", || {
        let seen = mirror.received();
        async move { (!seen.is_empty()).then_some(seen) }
    })
    .await;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let copy = &seen[0];
    assert_eq!(copy.line, "POST /orders?id=7 HTTP/1.1");
    let header = |name: &str| {
        copy.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    // What the primary received: the filters' headers and sluice's forwarding headers.
    assert_eq!(r.upstream_header("x-tenant"), ["blue"]);
    assert_eq!(header("x-tenant"), Some("blue"));
    assert_eq!(header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(header("host"), Some("m.test"));
    assert_eq!(copy.body, b"{\"n\":1}");
}

#[tokio::test]
async fn a_dead_mirror_changes_nothing_for_the_client_and_is_counted() {
    let (_web, s) = with_mirror(dead_addr().await).await;
    for _ in 0..3 {
        let r = H1::connect(s.addr)
            .await
            .send(post("/x", "body"))
            .await
            .unwrap();
        assert_eq!((r.status, r.backend()), (200, "web".to_string()));
    }
    eventually(STEP, "three failed copies counted", || async {
        let text = scrape(&s).await;
        (sample(&text, "sluice_mirror_dropped_total{reason=\"failed\"}") == Some(3.0)).then_some(())
    })
    .await;
}

/// Each pool keeps its own affinity cookie: the primary's never names a canary endpoint and the
/// canary's never overwrites the primary's (both use the default name otherwise).
#[tokio::test]
async fn a_canarys_affinity_cookie_is_its_own() {
    let affinity = [("sluice.dev/affinity", "cookie")];
    let (_stable, _canary, s) = with_canary(
        &affinity,
        &[
            ("sluice.dev/affinity", "cookie"),
            ("sluice.dev/canary-by-header", "X-Canary"),
        ],
    )
    .await;
    let set_cookie = |r: &Reply| {
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .split('=')
            .next()
            .unwrap()
            .to_string()
    };
    let r = s.get("c.test", "/").await;
    assert_eq!(
        (r.backend(), set_cookie(&r)),
        ("stable".into(), "SLUICE_AFFINITY".into())
    );
    let mut req = request("c.test", "/");
    req.headers_mut()
        .insert("x-canary", "always".parse().unwrap());
    let r = H1::connect(s.addr).await.send(req).await.unwrap();
    assert_eq!(
        (r.backend(), set_cookie(&r)),
        ("canary".into(), "SLUICE_AFFINITY_CANARY".into())
    );
}
