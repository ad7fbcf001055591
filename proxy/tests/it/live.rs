//! Changes to the manifests folder go live without failing requests or closing connections.

use crate::support::*;

fn web_routes(backend: std::net::SocketAddr) -> String {
    [
        service_with("default", "web", &[backend]),
        ingress("default", "web", None, &[("/", "Prefix", "web")]),
    ]
    .concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_change_under_concurrent_load_fails_no_request() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let s = Sluice::start(&web_routes(a.addr)).await;
    let load = Load::start(s.addr, "x", 4);
    load.wait_for_more(200).await;
    s.write_manifest("routes.yaml", &web_routes(b.addr));
    s.wait_for_backend("x", "/", "b").await;
    // Keep the load on a little after the switch, then stop.
    load.wait_for_more(200).await;
    let failures = load.stop().await;
    assert_no_failed_request(&failures);
    assert!(
        a.hits() > 0 && b.hits() > 0,
        "a={} b={}",
        a.hits(),
        b.hits()
    );
}

#[tokio::test]
async fn an_idle_keepalive_connection_survives_a_route_change() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let s = Sluice::start(&web_routes(a.addr)).await;
    let mut conn = H1::connect(s.addr).await;
    assert_eq!(conn.get("x", "/").await.unwrap().backend(), "a");
    s.write_manifest("routes.yaml", &web_routes(b.addr));
    s.wait_for_backend("x", "/", "b").await;
    // The same connection (a hyper sender is bound to one) serves the next request.
    assert!(!conn.is_closed());
    assert_eq!(conn.get("x", "/").await.unwrap().backend(), "b");
}

#[tokio::test]
async fn a_new_route_in_a_new_file_goes_live_and_a_removed_file_takes_its_routes_away() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let s = Sluice::start(&web_routes(a.addr)).await;
    let extra = [
        service_with("default", "extra", &[b.addr]),
        ingress(
            "default",
            "extra",
            Some("extra.test"),
            &[("/", "Prefix", "extra")],
        ),
    ]
    .concat();
    s.write_manifest("extra.yml", &extra);
    s.wait_for_backend("extra.test", "/", "b").await;
    std::fs::remove_file(s.manifests_dir().join("extra.yml")).unwrap();
    // Without its own rule, extra.test falls to the host-less rule of routes.yaml.
    s.wait_for_backend("extra.test", "/", "a").await;
}

#[tokio::test]
async fn a_malformed_file_is_ignored_and_the_last_good_state_keeps_serving() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let s = Sluice::start(&web_routes(a.addr)).await;
    let other = [
        service_with("default", "other", &[b.addr]),
        ingress(
            "default",
            "other",
            Some("other.test"),
            &[("/", "Prefix", "other")],
        ),
    ]
    .concat();
    s.write_manifest("other.yaml", &other);
    s.wait_for_backend("other.test", "/", "b").await;

    // A file that is not YAML at all, and a previously good file broken in place. The marker
    // file, written last, tells when a scan has seen both.
    s.write_manifest("garbage.yaml", "apiVersion: v1\nkind: [unclosed\n");
    s.write_manifest(
        "other.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: other\n",
    );
    let marker = [
        service_with("default", "marker", &[a.addr]),
        ingress(
            "default",
            "marker",
            Some("marker.test"),
            &[("/", "Prefix", "marker")],
        ),
    ]
    .concat();
    s.write_manifest("marker.yaml", &marker);
    s.wait_for_backend("marker.test", "/", "a").await;

    assert_eq!(s.get("other.test", "/").await.backend(), "b");
    assert_eq!(s.get("x", "/").await.backend(), "a");

    // Fixing the file makes its new content live.
    let fixed = other.replace("other.test", "fixed.test");
    s.write_manifest("other.yaml", &fixed);
    s.wait_for_backend("fixed.test", "/", "b").await;
    assert_eq!(s.get("other.test", "/").await.backend(), "a");
}
