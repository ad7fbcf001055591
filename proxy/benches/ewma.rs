//! One slow backend among four: peak-EWMA balancing against round robin, side by side.
//!
//! Starts sluice on the files source with four loopback backends, one of which answers after
//! [`SLOW`] while the others answer at once. Two Services list the same four backends (so each
//! algorithm has its own pool, and neither inherits the other's latency scores): host `rr.test`
//! balances round robin, host `ewma.test` peak EWMA. Each is loaded in turn by [`CLIENTS`]
//! keepalive connections for [`RUN`]; the table gives throughput, latency percentiles and the
//! share of requests the slow backend took.
//!
//! Run: `cargo bench -p sluice --bench ewma`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{load, percentile};
use support::*;

const SLOW: Duration = Duration::from_millis(50);
const CLIENTS: usize = 16;
const RUN: Duration = Duration::from_secs(5);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Run only under `cargo bench`, which passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut backends = Vec::new();
    for name in ["slow", "b", "c", "d"] {
        backends.push(Backend::start(name).await);
    }
    backends[0].set_delay(SLOW);
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let manifests = [
        service_with("default", "web-rr", &addrs),
        service_with("default", "web-ewma", &addrs),
        annotate(
            &ingress(
                "default",
                "rr",
                Some("rr.test"),
                &[("/", "Prefix", "web-rr")],
            ),
            &[("sluice.dev/load-balance", "round-robin")],
        ),
        annotate(
            &ingress(
                "default",
                "ewma",
                Some("ewma.test"),
                &[("/", "Prefix", "web-ewma")],
            ),
            &[("sluice.dev/load-balance", "ewma")],
        ),
    ]
    .concat();
    let settings = test_settings("") + "[access_log]\nenabled = false\n[log]\nlevel = \"warn\"\n";
    let s = Sluice::start_with(&manifests, &settings).await;

    println!(
        "one backend of four answers after {} ms; {CLIENTS} connections for {} s each",
        SLOW.as_millis(),
        RUN.as_secs()
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10} {:>10} {:>12}",
        "algorithm", "req/s", "p50 ms", "p99 ms", "max ms", "slow share"
    );
    for (name, host) in [("round-robin", "rr.test"), ("ewma", "ewma.test")] {
        let slow_before = backends[0].arrivals.load(Ordering::SeqCst);
        let started = Instant::now();
        let v = load(s.addr, CLIENTS, RUN, |host| request(host, "/"), host).await;
        let elapsed = started.elapsed().as_secs_f64();
        let slow = backends[0].arrivals.load(Ordering::SeqCst) - slow_before;
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "{:<12} {:>10.0} {:>10.2} {:>10.2} {:>10.2} {:>11.1}%",
            name,
            v.len() as f64 / elapsed,
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            ms(*v.last().unwrap()),
            100.0 * slow as f64 / v.len() as f64
        );
    }
}
