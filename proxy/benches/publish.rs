//! What one change costs the publisher, in process, at two cluster sizes side by side.
//!
//! A store is filled with N apps (an Ingress for `h<i>.scale.test` with three Prefix paths to
//! its own Service, the Service, an EndpointSlice of three endpoints; the shape of
//! `benches/wrk/scale.sh`), published once, and then, 30 times each: a whole build of the same
//! store (`State::publish_refs`, what every change cost before publishes were scoped), an
//! Ingress edit (a fourth path to another app's Service, published through
//! `State::publish_store_blocking` as the sources do), and an endpoint change. Median and p90
//! wall time per publish, on one thread; the whole build is the baseline each scoped publish is
//! compared with, and the 300-app run the baseline of the 10 000-app one.
//!
//! Run: `cargo bench -p sluice --bench publish` (`-- --apps 300,10000` to choose the sizes;
//! `-- --no-whole-builds` leaves the baseline out, for profiling the scoped publishes alone).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice::metrics::Metrics;
use sluice::state::State;
use sluice::store::{Entry, IngressMeta, Kind, Store};
use sluice::tls::certs::ServingCert;
use sluice::tls::TlsStoreBuilder;
use sluice_config::fixtures::*;
use sluice_config::model::{IngressInput, ObjectRef};
use sluice_config::Ejection;

const ROUNDS: usize = 30;
const NAMESPACES: usize = 16;

fn app_ingress(i: usize, extra: Option<usize>) -> IngressInput {
    let ns = format!("ns{}", i % NAMESPACES);
    let svc = format!("app{i}");
    let mut b = ingress(&ns, &svc)
        .created(i as i64)
        .host(&format!("h{i}.scale.test"))
        .path("/", "Prefix", backend(&svc, 80))
        .path("/api", "Prefix", backend(&svc, 80))
        .path("/static", "Prefix", backend(&svc, 80));
    if let Some(other) = extra {
        b = b.path("/edit", "Prefix", backend(&format!("app{other}"), 80));
    }
    b.build()
}

fn app_slice(i: usize, last: &str) -> sluice_config::model::EndpointSliceInput {
    let ns = format!("ns{}", i % NAMESPACES);
    slice(&ns, &format!("app{i}"))
        .port("http", 8080)
        .endpoint("127.0.0.1", Some(true))
        .endpoint("127.0.0.2", Some(true))
        .endpoint(last, Some(true))
        .build()
}

fn put_ingress(store: &Store, input: IngressInput) {
    store.apply(
        Kind::Ingress,
        input.object_ref(),
        Entry::Ingress(Arc::new(input), IngressMeta::default()),
    );
}

fn put_slice(store: &Store, i: usize, last: &str) {
    let ns = format!("ns{}", i % NAMESPACES);
    store.apply(
        Kind::EndpointSlice,
        ObjectRef::new(ns, format!("app{i}-1")),
        Entry::Slice(Arc::new(app_slice(i, last))),
    );
}

fn cluster(apps: usize) -> (Store, State) {
    let store = Store::default();
    for i in 0..apps {
        let ns = format!("ns{}", i % NAMESPACES);
        let svc = service(&ns, &format!("app{i}")).port("http", 80).build();
        store.apply(
            Kind::Service,
            ObjectRef::new(&ns, format!("app{i}")),
            Entry::Service(Arc::new(svc), Vec::new()),
        );
        put_slice(&store, i, "127.0.0.3");
        put_ingress(&store, app_ingress(i, None));
    }
    let fallback = Arc::new(ServingCert::self_signed().expect("a certificate"));
    let state = State::new(
        class_policy(),
        Ejection {
            consecutive_failures: 0,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        },
        Arc::new(Metrics::new().expect("metrics")),
        TlsStoreBuilder::new(fallback, None),
    );
    state.publish_store_blocking(&store);
    (store, state)
}

fn summary(v: &mut [Duration]) -> (f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[v.len() / 2]), ms(v[(v.len() * 9) / 10]))
}

fn measure(apps: usize, whole_builds: bool) -> [(f64, f64); 3] {
    let (store, state) = cluster(apps);
    let (mut whole, mut edit, mut endpoint) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let app = 1 + round % (apps - 2);
        let t = Instant::now();
        if whole_builds || round == 0 {
            let shared = store.shared();
            state.publish_refs(&shared.refs(), &store.secret_material());
        }
        whole.push(t.elapsed());

        // An edit on an app of the same namespace as `app + NAMESPACES`'s, then back.
        let other = (app + NAMESPACES) % apps;
        put_ingress(&store, app_ingress(app, Some(other)));
        let t = Instant::now();
        state.publish_store_blocking(&store);
        edit.push(t.elapsed());
        put_ingress(&store, app_ingress(app, None));
        state.publish_store_blocking(&store);

        put_slice(&store, app, "127.0.0.4");
        let t = Instant::now();
        state.publish_store_blocking(&store);
        endpoint.push(t.elapsed());
        put_slice(&store, app, "127.0.0.3");
        state.publish_store_blocking(&store);
    }
    [
        summary(&mut whole),
        summary(&mut edit),
        summary(&mut endpoint),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .iter()
        .position(|a| a == "--apps")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_else(|| vec![300, 10_000]);
    let results: Vec<(usize, [(f64, f64); 3])> = sizes
        .iter()
        .filter(|n| **n >= 3)
        .map(|n| {
            (
                *n,
                measure(*n, !args.iter().any(|a| a == "--no-whole-builds")),
            )
        })
        .collect();
    println!("| publish | apps | median ms | p90 ms | ÷ whole build |");
    println!("|---|---:|---:|---:|---:|");
    for (apps, r) in &results {
        for (name, (median, p90)) in ["whole build", "Ingress edit", "endpoint change"]
            .iter()
            .zip(r)
        {
            println!(
                "| {name} | {apps} | {median:.2} | {p90:.2} | {:.3} |",
                median / r[0].0
            );
        }
    }
    if let [(small, a), (large, b)] = results.as_slice() {
        println!();
        for (i, name) in ["whole build", "Ingress edit", "endpoint change"]
            .iter()
            .enumerate()
        {
            println!(
                "{name}: {large} apps ÷ {small} apps = {:.2}",
                b[i].0 / a[i].0
            );
        }
    }
}
