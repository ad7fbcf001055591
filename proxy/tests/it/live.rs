//! Changes to the manifests folder go live without failing requests or closing connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, ok, failures, addr) = (stop.clone(), ok.clone(), failures.clone(), s.addr);
        clients.push(tokio::spawn(async move {
            let mut conn = H1::connect(addr).await;
            let deadline = Instant::now() + Duration::from_secs(20);
            // Bounded in count and time.
            for _ in 0..20_000 {
                if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                    break;
                }
                match conn.get("x", "/").await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", r.status, r.body)),
                    Err(e) => {
                        failures.lock().unwrap().push(e);
                        conn = H1::connect(addr).await;
                    }
                }
            }
        }));
    }
    let count = ok.clone();
    eventually(STEP, "load to start", || {
        let n = count.load(Ordering::SeqCst);
        async move { (n >= 200).then_some(()) }
    })
    .await;
    s.write_manifest("routes.yaml", &web_routes(b.addr));
    s.wait_for_backend("x", "/", "b").await;
    // Keep the load on a little after the switch, then stop.
    let after = ok.load(Ordering::SeqCst) + 200;
    let count = ok.clone();
    eventually(STEP, "load after the change", || {
        let n = count.load(Ordering::SeqCst);
        async move { (n >= after).then_some(()) }
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
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
