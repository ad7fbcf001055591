//! The publish pipeline: a change costs what it changes. An endpoint change moves only its
//! pools (no snapshot is built, no route replaced), and an Ingress edit leaves the routes and
//! hosts it does not touch as they were, shared with the state before it.

use std::sync::Arc;

use crate::support::*;

/// Two hosts, each with its Ingress, Service and EndpointSlice in files of their own.
fn write_host(s: &Sluice, name: &str, paths: &[PathRule<'_>], backend: std::net::SocketAddr) {
    let host = format!("{name}.test");
    s.write_manifest(&format!("{name}-svc.yaml"), &service("default", name));
    s.write_manifest(
        &format!("{name}-ing.yaml"),
        &ingress("default", name, Some(&host), paths),
    );
    s.write_manifest(
        &format!("{name}-eps.yaml"),
        &slice("default", name, &[(backend, None)]),
    );
}

fn route(s: &Sluice, host: &str, path: &str) -> Arc<sluice::route::Route> {
    s.state()
        .live()
        .routes
        .find(host, path)
        .cloned()
        .expect("a route")
}

async fn builds(s: &Sluice) -> f64 {
    sample(
        &scrape(s).await,
        "sluice_snapshot_build_duration_seconds_count",
    )
    .unwrap_or(0.0)
}

/// What a request to a.test/ meets before an endpoint change: the route and the builds so far.
async fn before_the_change(s: &Sluice) -> (Arc<sluice::route::Route>, f64) {
    (route(s, "a.test", "/"), builds(s).await)
}

/// After an endpoint change of a.test served from `backend`: no snapshot was built since
/// `before` and a.test's route is the same object.
async fn served_without_a_rebuild(
    s: &Sluice,
    backend: &str,
    before: (Arc<sluice::route::Route>, f64),
) {
    s.wait_for_backend("a.test", "/", backend).await;
    assert_eq!(
        builds(s).await,
        before.1,
        "an endpoint change built a snapshot"
    );
    assert!(Arc::ptr_eq(&before.0, &route(s, "a.test", "/")));
}

#[tokio::test]
async fn an_endpoint_change_moves_only_its_pool_and_builds_no_snapshot() {
    let (a1, a2, b) = (
        Backend::start("a1").await,
        Backend::start("a2").await,
        Backend::start("b").await,
    );
    let s = Sluice::start("").await;
    write_host(&s, "a", &[("/", "Prefix", "a")], a1.addr);
    write_host(&s, "b", &[("/", "Prefix", "b")], b.addr);
    s.wait_for_backend("a.test", "/", "a1").await;
    s.wait_for_backend("b.test", "/", "b").await;
    let route_b = route(&s, "b.test", "/");
    let before = before_the_change(&s).await;

    s.write_manifest("a-eps.yaml", &slice("default", "a", &[(a2.addr, None)]));
    served_without_a_rebuild(&s, "a2", before).await;
    assert!(Arc::ptr_eq(&route_b, &route(&s, "b.test", "/")));
    assert_eq!(s.get("b.test", "/").await.backend(), "b");
}

#[tokio::test]
async fn an_ingress_edit_keeps_the_routes_and_hosts_it_does_not_touch() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let s = Sluice::start("").await;
    write_host(&s, "a", &[("/", "Prefix", "a")], a.addr);
    write_host(&s, "b", &[("/", "Prefix", "b")], b.addr);
    s.wait_for_backend("a.test", "/", "a").await;
    s.wait_for_backend("b.test", "/", "b").await;
    let live = s.state().live_full();
    let host_a = live.routes.host_routes("a.test").expect("host a") as *const _;
    let (route_a, route_b) = (route(&s, "a.test", "/"), route(&s, "b.test", "/"));
    assert_eq!(s.get("b.test", "/new").await.backend(), "b");

    s.write_manifest(
        "b-ing.yaml",
        &ingress(
            "default",
            "b",
            Some("b.test"),
            &[("/", "Prefix", "b"), ("/new", "Exact", "missing")],
        ),
    );
    eventually(STEP, "the edited Ingress serves its new path", || async {
        (s.get("b.test", "/new").await.status == 503).then_some(())
    })
    .await;

    let now = s.state().live_full();
    assert!(!Arc::ptr_eq(&live, &now), "the edit published a new state");
    assert!(
        std::ptr::eq(host_a, now.routes.host_routes("a.test").expect("host a")),
        "host a.test, untouched, was copied instead of shared"
    );
    assert!(Arc::ptr_eq(&route_a, &route(&s, "a.test", "/")));
    assert!(Arc::ptr_eq(&route_b, &route(&s, "b.test", "/")));
    assert_eq!(s.get("a.test", "/").await.backend(), "a");
}

#[tokio::test]
async fn an_endpoint_change_in_a_file_that_also_holds_its_ingress_builds_no_snapshot() {
    let (a1, a2) = (Backend::start("a1").await, Backend::start("a2").await);
    let app = |backend| {
        [
            service("default", "a"),
            ingress("default", "a", Some("a.test"), &[("/", "Prefix", "a")]),
            slice("default", "a", &[(backend, None)]),
        ]
        .concat()
    };
    let s = Sluice::start(&app(a1.addr)).await;
    s.wait_for_backend("a.test", "/", "a1").await;
    let before = before_the_change(&s).await;

    // The whole file is rewritten; only its EndpointSlice differs.
    s.write_manifest("routes.yaml", &app(a2.addr));
    served_without_a_rebuild(&s, "a2", before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_kubernetes_source_an_endpoint_change_builds_no_snapshot() {
    KUBE_SOURCE
        .scope(true, async {
            let (a1, a2) = (Backend::start("a1").await, Backend::start("a2").await);
            // One EndpointSlice object whose endpoint moves, as the EndpointSlice controller
            // updates it.
            let eps = |backend| {
                let text = slice("default", "a", &[(backend, None)]);
                let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
                let mut doc = docs.into_iter().next().expect("a slice");
                doc["metadata"]["name"] = "a-eps".into();
                doc
            };
            let app = [
                service("default", "a"),
                ingress("default", "a", Some("a.test"), &[("/", "Prefix", "a")]),
            ]
            .concat();
            let s = Sluice::start(&app).await;
            let api = s.api.as_ref().expect("the fake API server");
            api.apply(eps(a1.addr));
            s.wait_for_backend("a.test", "/", "a1").await;
            let before = before_the_change(&s).await;

            api.apply(eps(a2.addr));
            served_without_a_rebuild(&s, "a2", before).await;
        })
        .await
}
