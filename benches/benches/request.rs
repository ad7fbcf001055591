//! What reading a request's facts adds to routing: host validation ([`parse_request_host`]),
//! path normalization ([`normalize_path`]) and the removal of path parameters ([`match_path`])
//! before `RouteTable::find`, measured beside the lookup on the raw host and path that it
//! replaces, in the same run, on the 1 000-host table of `lookup`.
//!
//! - `facts/CASE/raw`: `find(host, path)` alone, as routing did before normalization.
//! - `facts/CASE/normalized`: validate the host, normalize the path, drop its parameters, then
//!   `find`: what `request_filter` now does. The ratio of the two is the cost of the checks.
//! - `facts/dotted_path/normalized`: a path that needs normalizing (`/api/./v1//users/../users/7`),
//!   which allocates once; `raw` beside it is the lookup of the path as written.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_benches::{check_queries, inputs, policy, queries, Case, Query};
use sluice_config::path::{match_path, normalize_path};
use sluice_config::routes::parse_request_host;

const HOSTS: usize = 1_000;

fn facts(c: &mut Criterion) {
    let snapshot = sluice_config::build::build(&inputs(HOSTS), &policy());
    let routes = &snapshot.routes;
    let mut cases: Vec<(&str, Query)> = [Case::ExactHostExactPath, Case::DeepPrefix]
        .into_iter()
        .map(|case| {
            let qs = queries(HOSTS, case, 1);
            if let Err(e) = check_queries(&snapshot, &qs) {
                panic!("{}: {e}", case.name());
            }
            (case.name(), qs[0].clone())
        })
        .collect();
    let mut dotted = cases[1].1.clone();
    dotted.path = dotted.path.replacen("/v1/", "/./v1//", 1);
    assert_ne!(
        normalize_path(&dotted.path).ok().as_deref(),
        Some(dotted.path.as_str())
    );
    cases.push(("dotted_path", dotted));
    for (name, q) in &cases {
        let mut group = c.benchmark_group(format!("facts/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("raw", |b| {
            b.iter(|| black_box(routes.find(black_box(&q.host), black_box(&q.path))))
        });
        group.bench_function("normalized", |b| {
            b.iter(|| {
                let host = parse_request_host(black_box(&q.host)).ok()?;
                let path = normalize_path(black_box(&q.path)).ok()?;
                black_box(routes.find(&host, &match_path(&path)).copied())
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = facts
}
criterion_main!(benches);
