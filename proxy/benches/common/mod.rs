//! What the in-process load benches share: keepalive load on loopback and percentiles.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;

use crate::support::H1;

/// The `p` quantile (0..=1) of sorted latencies.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sends the requests `make` builds over `clients` keepalive connections to `addr` for `run`,
/// each expected to answer 200; returns every request's latency, sorted.
pub async fn load(
    addr: SocketAddr,
    clients: usize,
    run: Duration,
    make: fn(&'static str) -> hyper::Request<Full<Bytes>>,
    host: &'static str,
) -> Vec<Duration> {
    let deadline = Instant::now() + run;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        tasks.push(tokio::spawn(async move {
            let mut conn = H1::connect(addr).await;
            let mut out = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = conn.send(make(host)).await.unwrap();
                assert_eq!(r.status, 200, "{}", r.body);
                out.push(t.elapsed());
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    all
}
