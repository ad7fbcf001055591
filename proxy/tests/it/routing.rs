//! Requests reach the backend their host and path select.

use crate::support::*;

async fn requests_are_routed_by_host_and_path_to_the_matching_service() {
    let (a, b, c, d) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
        Backend::start("d").await,
    );
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        service_with("default", "svc-b", &[b.addr]),
        service_with("default", "svc-c", &[c.addr]),
        service_with("default", "svc-d", &[d.addr]),
        ingress(
            "default",
            "shop",
            Some("shop.test"),
            &[
                ("/", "Prefix", "svc-a"),
                ("/api", "Prefix", "svc-b"),
                ("/api/health", "Exact", "svc-c"),
            ],
        ),
        ingress(
            "default",
            "wild",
            Some("*.shop.test"),
            &[("/", "Prefix", "svc-d")],
        ),
        ingress(
            "default",
            "catchall",
            None,
            &[("/static", "Prefix", "svc-c")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    for (host, path, want) in [
        ("shop.test", "/", "a"),
        ("shop.test", "/apix", "a"),
        ("shop.test", "/api", "b"),
        ("shop.test", "/api/", "b"),
        ("shop.test", "/api/v1?x=/api/health", "b"),
        ("shop.test", "/api/health", "c"),
        ("shop.test", "/api/health?probe=1", "c"),
        ("shop.test", "/api/health/", "b"),
        ("SHOP.test:8080", "/api", "b"),
        ("eu.shop.test", "/anything", "d"),
        ("other.test", "/static/app.js", "c"),
    ] {
        let r = s.get(host, path).await;
        assert_eq!(r.status, 200, "{host}{path}: {}", r.body);
        assert_eq!(r.backend(), want, "{host}{path}");
    }
    // The path and query reach the backend unchanged.
    let r = s.get("shop.test", "/api/v1?x=1&y=%20").await;
    assert_eq!(r.json()["uri"], "/api/v1?x=1&y=%20");
}

async fn a_wildcard_covers_exactly_one_label() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let manifests = [
        service_with("default", "wild", &[a.addr]),
        service_with("default", "any", &[b.addr]),
        ingress(
            "default",
            "wild",
            Some("*.example.test"),
            &[("/", "Prefix", "wild")],
        ),
        ingress("default", "any", None, &[("/", "Prefix", "any")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    assert_eq!(s.get("one.example.test", "/").await.backend(), "a");
    assert_eq!(s.get("example.test", "/").await.backend(), "b");
    assert_eq!(s.get("two.one.example.test", "/").await.backend(), "b");
}

async fn h2c_requests_are_routed_by_authority() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        service_with("default", "svc-b", &[b.addr]),
        ingress(
            "default",
            "one",
            Some("a.test"),
            &[("/", "Prefix", "svc-a")],
        ),
        ingress(
            "default",
            "two",
            Some("b.test"),
            &[("/", "Prefix", "svc-b")],
        ),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let r = get_h2c(s.addr, "b.test", "/x").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.backend(), "b");
    // The backend speaks HTTP/1.1 and gets the authority as its Host.
    assert_eq!(r.upstream_header("host"), vec!["b.test"]);
    assert_eq!(get_h2c(s.addr, "a.test", "/").await.backend(), "a");
    assert_eq!(get_h2c(s.addr, "c.test", "/").await.status, 404);
}

async fn requests_rotate_over_the_ready_endpoints_of_a_service() {
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let manifests = [
        service("default", "web"),
        slice("default", "web", &[(a.addr, Some(true))]),
        slice("default", "web", &[(b.addr, None)]),
        // Not ready: gets no traffic.
        slice("default", "web", &[(c.addr, Some(false))]),
        ingress("default", "web", None, &[("/", "Prefix", "web")]),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    let mut conn = H1::connect(s.addr).await;
    for _ in 0..20 {
        assert_eq!(conn.get("x", "/").await.unwrap().status, 200);
    }
    assert_eq!(a.hits(), 10);
    assert_eq!(b.hits(), 10);
    assert_eq!(c.hits(), 0);
}

async fn the_oldest_ingress_keeps_a_contested_rule_and_the_default_backend_catches_the_rest() {
    let (a, b, d) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("d").await,
    );
    let older = "apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
        metadata: {name: zzz-older, namespace: default, creationTimestamp: \"2020-01-01T00:00:00Z\"}\n\
        spec:\n  ingressClassName: sluice\n  defaultBackend: {service: {name: fallback, port: {number: 80}}}\n\
        \x20 rules:\n  - host: x.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: svc-a, port: {number: 80}}}}\n---\n";
    let newer = "apiVersion: networking.k8s.io/v1\nkind: Ingress\n\
        metadata: {name: aaa-newer, namespace: default, creationTimestamp: \"2024-01-01T00:00:00Z\"}\n\
        spec:\n  ingressClassName: sluice\n\
        \x20 rules:\n  - host: x.test\n    http:\n      paths:\n      - {path: /, pathType: Prefix, backend: {service: {name: svc-b, port: {number: 80}}}}\n---\n";
    let manifests = [
        service_with("default", "svc-a", &[a.addr]),
        service_with("default", "svc-b", &[b.addr]),
        service_with("default", "fallback", &[d.addr]),
        newer.to_string(),
        older.to_string(),
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    assert_eq!(s.get("x.test", "/").await.backend(), "a");
    assert_eq!(s.get("unknown.test", "/").await.backend(), "d");
}

async fn ingresses_of_another_class_are_not_served() {
    let a = Backend::start("a").await;
    let theirs = ingress(
        "default",
        "theirs",
        Some("x.test"),
        &[("/", "Prefix", "svc-a")],
    )
    .replace("ingressClassName: sluice", "ingressClassName: nginx");
    let manifests = [
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\n\
         spec: {controller: k8s.io/ingress-nginx}\n---\n"
            .to_string(),
        service_with("default", "svc-a", &[a.addr]),
        theirs,
    ]
    .concat();
    let s = Sluice::start(&manifests).await;
    assert_eq!(s.get("x.test", "/").await.status, 404);
    assert_eq!(a.hits(), 0);
}

crate::through_both_sources!(
    requests_are_routed_by_host_and_path_to_the_matching_service,
    a_wildcard_covers_exactly_one_label,
    h2c_requests_are_routed_by_authority,
    requests_rotate_over_the_ready_endpoints_of_a_service,
    the_oldest_ingress_keeps_a_contested_rule_and_the_default_backend_catches_the_rest,
    ingresses_of_another_class_are_not_served,
);
