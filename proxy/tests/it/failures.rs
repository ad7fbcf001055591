//! What a client gets when there is nothing, or nothing healthy, to proxy to.

use std::time::Duration;

use crate::support::*;

async fn no_route_answers_404_with_a_short_plain_body() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress(
            "default",
            "one",
            Some("a.test"),
            &[("/app", "Prefix", "svc-a")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for (host, path) in [
        ("a.test", "/"),
        ("a.test", "/application"),
        ("b.test", "/app"),
    ] {
        let r = s.get(host, path).await;
        assert_eq!(r.status, 404, "{host}{path}");
        assert!(
            r.body.len() < 100 && r.body.starts_with("404"),
            "{}",
            r.body
        );
        assert_eq!(r.headers["content-type"], "text/plain; charset=utf-8");
    }
    // A 404 does not cost the client its connection.
    let mut conn = H1::connect(s.addr).await;
    assert_eq!(conn.get("b.test", "/").await.unwrap().status, 404);
    assert_eq!(conn.get("a.test", "/app").await.unwrap().status, 200);
}

async fn a_route_without_ready_endpoints_answers_503() {
    let a = Backend::start("a").await;
    let manifests = [
        service("default", "down"),
        slice("default", "down", &[(a.addr, Some(false))]),
        service("default", "empty"),
        ingress(
            "default",
            "one",
            None,
            &[("/down", "Prefix", "down"), ("/empty", "Prefix", "empty")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for path in ["/down", "/empty/x"] {
        let r = s.get("x", path).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(r.body.starts_with("503"), "{}", r.body);
    }
    assert_eq!(a.hits(), 0);
}

async fn an_unresolvable_backend_answers_503_instead_of_falling_through_to_a_shorter_path() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress(
            "default",
            "one",
            None,
            &[
                ("/", "Prefix", "svc-a"),
                ("/ghost", "Prefix", "no-such-service"),
            ],
        ),
        // A rule naming a port the Service does not have.
        ingress("default", "two", None, &[("/badport", "Prefix", "svc-a")])
            .replace("port: {number: 80}", "port: {number: 81}"),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    assert_eq!(s.get("x", "/ghost/page").await.status, 503);
    assert_eq!(s.get("x", "/badport").await.status, 503);
    assert_eq!(s.get("x", "/other").await.backend(), "a");
}

async fn a_connect_failure_is_retried_on_another_endpoint() {
    let a = Backend::start("a").await;
    let dead = dead_addr().await;
    let manifests = [
        service("default", "web"),
        slice("default", "web", &[(dead, Some(true))]),
        slice("default", "web", &[(a.addr, Some(true))]),
        ingress("default", "web", None, &[("/", "Prefix", "web")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    // Round robin sends every other request to the dead endpoint first; each must succeed.
    for i in 0..10 {
        let r = s.get("x", "/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.body);
        assert_eq!(r.backend(), "a");
    }
    assert_eq!(a.hits(), 10);
}

async fn connect_failures_on_every_endpoint_answer_502() {
    let (d1, d2) = (dead_addr().await, dead_addr().await);
    let manifests = [
        service("default", "web"),
        slice("default", "web", &[(d1, Some(true))]),
        slice("default", "web", &[(d2, Some(true))]),
        ingress("default", "web", None, &[("/", "Prefix", "web")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = s.get("x", "/").await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.starts_with("502"), "{}", r.body);
}

async fn an_upstream_slower_than_the_read_timeout_answers_504() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(1500));
    let manifests = [
        service_with("default", "slow", &[slow.addr]),
        ingress("default", "slow", None, &[("/", "Prefix", "slow")]),
    ]
    .concat();
    let s = Sluice::start_with(
        &manifests,
        &test_settings("").replace("read_timeout_ms = 2000", "read_timeout_ms = 300"),
    )
    .await;
    let r = s.get("x", "/").await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(r.body.starts_with("504"), "{}", r.body);
}

async fn a_route_with_a_short_read_timeout_answers_504_while_another_on_the_same_backend_waits() {
    let slow = Backend::start("slow").await;
    slow.set_delay(Duration::from_millis(800));
    let manifests = [
        service_with("default", "slow", &[slow.addr]),
        annotate(
            &ingress("default", "short", None, &[("/short", "Prefix", "slow")]),
            &[("sluice.dev/read-timeout", "200ms")],
        ),
        // The settings' read timeout (2 s in tests) applies here.
        ingress("default", "long", None, &[("/long", "Prefix", "slow")]),
        // A bad value is reported and leaves the default: this route waits too.
        annotate(
            &ingress("default", "typo", None, &[("/typo", "Prefix", "slow")]),
            &[("sluice.dev/read-timeout", "fast")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let (short, long, typo) = tokio::join!(
        s.get("x", "/short"),
        s.get("x", "/long"),
        s.get("x", "/typo")
    );
    assert_eq!(short.status, 504, "{}", short.body);
    assert_eq!(long.status, 200, "{}", long.body);
    assert_eq!(long.backend(), "slow");
    assert_eq!(typo.status, 200, "{}", typo.body);
    // Making the backend fast again makes the short route answer: the 504 was its timeout.
    slow.set_delay(Duration::from_millis(0));
    assert_eq!(s.get("x", "/short").await.status, 200);
}

async fn an_idempotent_request_is_retried_after_a_reset_but_a_post_never_is() {
    let good = Backend::start("good").await;
    let bad = Resetter::start().await;
    let manifests = [
        service("default", "web"),
        slice("default", "web", &[(bad.addr, Some(true))]),
        slice("default", "web", &[(good.addr, Some(true))]),
        ingress("default", "web", None, &[("/", "Prefix", "web")]),
    ]
    .concat();
    // Ejection off, so the resetting endpoint stays in rotation for every request.
    let settings = test_settings("eject_consecutive_failures = 0");
    let s = Sluice::start_with(&manifests, &settings).await;
    // Round robin sends every other GET to the resetting endpoint first; each is retried.
    for i in 0..6 {
        let r = s.get("x", "/").await;
        assert_eq!(r.status, 200, "GET {i}: {}", r.body);
        assert_eq!(r.backend(), "good");
    }
    assert!(
        bad.requests() >= 3,
        "{} GETs reached the reset",
        bad.requests()
    );
    let before = (bad.requests(), good.hits());
    let mut failed = 0;
    for _ in 0..6 {
        let req = hyper::Request::builder()
            .method("POST")
            .uri("/")
            .header("host", "x")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"order=1",
            )))
            .unwrap();
        let r = H1::connect(s.addr).await.send(req).await.unwrap();
        if r.status != 200 {
            assert_eq!(r.status, 502, "{}", r.body);
            failed += 1;
        }
    }
    // Every POST that reached the resetting endpoint failed there and went nowhere else.
    // (Dropping the method check in `error_while_proxy` makes this fail.)
    let reset_posts = bad.requests() - before.0;
    assert!(reset_posts >= 1);
    assert_eq!(failed, reset_posts);
    assert_eq!(good.hits() - before.1, 6 - reset_posts);
}

async fn a_request_head_over_the_limit_answers_431() {
    let a = Backend::start("a").await;
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        ingress("default", "one", None, &[("/", "Prefix", "svc-a")]),
    ]
    .concat();
    let settings =
        test_settings("").replace("[upstream]", "max_request_header_bytes = 2048\n[upstream]");
    let s = Sluice::start_with(&manifests, &settings).await;
    let mut conn = H1::connect(s.addr).await;
    let mut req = request("x", "/");
    req.headers_mut()
        .insert("x-big", "v".repeat(3000).parse().unwrap());
    assert_eq!(conn.send(req).await.unwrap().status, 431);
    assert_eq!(a.hits(), 0);
    let mut req = request("x", "/");
    req.headers_mut()
        .insert("x-small", "v".repeat(1000).parse().unwrap());
    assert_eq!(get_with(s.addr, req).await.status, 200);
}

async fn get_with(
    addr: std::net::SocketAddr,
    req: hyper::Request<http_body_util::Full<bytes::Bytes>>,
) -> Reply {
    H1::connect(addr).await.send(req).await.unwrap()
}

crate::through_both_sources!(
    no_route_answers_404_with_a_short_plain_body,
    a_route_without_ready_endpoints_answers_503,
    an_unresolvable_backend_answers_503_instead_of_falling_through_to_a_shorter_path,
    a_connect_failure_is_retried_on_another_endpoint,
    connect_failures_on_every_endpoint_answer_502,
    an_upstream_slower_than_the_read_timeout_answers_504,
    a_route_with_a_short_read_timeout_answers_504_while_another_on_the_same_backend_waits,
    an_idempotent_request_is_retried_after_a_reset_but_a_post_never_is,
    a_request_head_over_the_limit_answers_431,
);
