//! What basic auth adds to a request: a route without it beside the same route with
//! `sluice.dev/auth-type: basic` (a bcrypt user at cost 10, `htpasswd -B`'s default), side by
//! side on one sluice and one backend.
//!
//! Every client sends the same credentials on every request, so after the first request per
//! [`sluice::auth::basic::CACHE_TTL`] the verdict comes from the cache: this measures
//! the steady state (header parsing, one SHA-256 of the header, one cache lookup, the header
//! removed upstream). A last row shows a cold bcrypt verification alone, for scale. The two
//! routes are loaded in turn, [`ROUNDS`] times each, so machine noise hits both alike; the
//! table gives throughput and latency percentiles and the ratio to the open route.
//!
//! Run: `cargo bench -p sluice --bench basic_auth`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/support/mod.rs"]
mod support;

mod common;

use std::time::{Duration, Instant};

use common::{load, percentile};
use support::*;

const CLIENTS: usize = 8;
const RUN: Duration = Duration::from_secs(3);
const ROUNDS: usize = 3;
const BCRYPT_COST: u32 = 10;

/// A request for `host` with ann's credentials.
fn as_ann(host: &'static str) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    let mut req = request(host, "/");
    let value = format!("Basic {}", openssl::base64::encode_block(b"ann:secret"));
    req.headers_mut()
        .insert("authorization", value.parse().unwrap());
    req
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // Run only under `cargo bench`, which passes `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let backend = Backend::start("a").await;
    let hash = bcrypt::hash("secret", BCRYPT_COST).unwrap();
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: users, namespace: default}}\n\
         stringData:\n  auth: \"ann:{hash}\"\n---\n"
    );
    let route =
        |name: &str, host: &str| ingress("default", name, Some(host), &[("/", "Prefix", "web")]);
    let manifests = [
        service_with("default", "web", &[backend.addr]),
        secret,
        route("open", "open.test"),
        annotate(
            &route("auth", "auth.test"),
            &[
                ("sluice.dev/auth-type", "basic"),
                ("sluice.dev/auth-secret", "users"),
            ],
        ),
    ]
    .concat();
    let settings = test_settings("") + "[access_log]\nenabled = false\n[log]\nlevel = \"warn\"\n";
    let s = Sluice::start_with(&manifests, &settings).await;

    let mut open = Vec::new();
    let mut auth = Vec::new();
    let (mut open_secs, mut auth_secs) = (0.0, 0.0);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        open.extend(load(s.addr, CLIENTS, RUN, |h| request(h, "/"), "open.test").await);
        open_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        auth.extend(load(s.addr, CLIENTS, RUN, as_ann, "auth.test").await);
        auth_secs += t.elapsed().as_secs_f64();
    }
    open.sort();
    auth.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{CLIENTS} connections, {} s per run, {ROUNDS} interleaved runs per route",
        RUN.as_secs()
    );
    println!(
        "{:<28} {:>10} {:>9} {:>9} {:>12}",
        "route", "req/s", "p50 ms", "p99 ms", "req/s ratio"
    );
    let open_rate = open.len() as f64 / open_secs;
    for (name, v, secs) in [
        ("open", &open, open_secs),
        ("basic auth (cached verdict)", &auth, auth_secs),
    ] {
        let rate = v.len() as f64 / secs;
        println!(
            "{:<28} {:>10.0} {:>9.3} {:>9.3} {:>12.3}",
            name,
            rate,
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            rate / open_rate
        );
    }
    let t = Instant::now();
    assert!(bcrypt::verify("secret", &hash).unwrap());
    println!(
        "one bcrypt verification at cost {BCRYPT_COST} (a cache miss): {:.1} ms",
        ms(t.elapsed())
    );
}
