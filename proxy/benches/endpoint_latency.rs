//! How fast an EndpointSlice change reaches the request path.
//!
//! Starts sluice on the kubernetes source against the in-repo fake API server (real kube-rs
//! client, real watch stream over loopback), then, 200 times, moves a Service to another
//! backend by updating its EndpointSlice and measures the time from the watch event (the
//! moment the fake API server emits it) to the first request answered by the new backend. The
//! same keepalive connection polls continuously, so each figure includes at most one request
//! round trip; the round trip without any change is measured side by side as the baseline.
//!
//! Run: `cargo bench -p sluice --bench endpoint_latency`. Target: p99 under 100 ms.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::fake_apiserver::FakeApiServer;
use support::*;

const CHANGES: usize = 200;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{name:<34} n={:<4} p50={:>7.2} ms  p90={:>7.2} ms  p99={:>7.2} ms  max={:>7.2} ms",
        v.len(),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().unwrap())
    );
    percentile(&v, 0.99)
}

fn slice(port: u16) -> serde_json::Value {
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "web-1", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "web"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": port}],
           "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]})
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass nothing useful: run
    // only when benchmarking.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let backends = [Backend::start("a").await, Backend::start("b").await];
    let api = FakeApiServer::start().await;
    api.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
                     "metadata": {"name": "sluice"},
                     "spec": {"controller": "sluice.dev/ingress-controller"}}),
    );
    api.apply(json!({"apiVersion": "v1", "kind": "Service",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"ports": [{"name": "http", "port": 80}]}}));
    api.apply(slice(backends[0].addr.port()));
    api.apply(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                     "metadata": {"name": "web", "namespace": "default"},
                     "spec": {"ingressClassName": "sluice", "rules": [{"host": "web.test",
                        "http": {"paths": [{"path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let text = kube_settings_text(&test_settings(""), dir.path(), &api, "bench")
        + "[access_log]\nenabled = false\n[log]\nlevel = \"warn\"\n";
    let s = Sluice::start_in(dir, &text, true).await;
    let mut conn = H1::connect(s.addr).await;
    assert_eq!(conn.get("web.test", "/").await.unwrap().backend(), "a");

    let mut rtt = Vec::with_capacity(CHANGES);
    for _ in 0..CHANGES {
        let t = Instant::now();
        conn.get("web.test", "/").await.unwrap();
        rtt.push(t.elapsed());
    }

    let mut propagation = Vec::with_capacity(CHANGES);
    for i in 0..CHANGES {
        let next = &backends[(i + 1) % 2];
        let t0 = Instant::now();
        api.apply(slice(next.addr.port()));
        let deadline = t0 + Duration::from_secs(5);
        loop {
            let r = conn.get("web.test", "/").await.unwrap();
            if r.backend() == next.name {
                propagation.push(t0.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "change {i} did not arrive within 5 s"
            );
        }
    }
    println!("EndpointSlice change -> first request on the new endpoint ({CHANGES} changes)");
    let base = summary("request round trip (baseline)", rtt);
    let p99 = summary("watch event -> request uses it", propagation);
    println!(
        "p99 {:.2} ms against the 100 ms target; {:.1}x the baseline round trip",
        p99.as_secs_f64() * 1000.0,
        p99.as_secs_f64() / base.as_secs_f64().max(1e-9)
    );
}
