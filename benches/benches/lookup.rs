//! Route lookup: `RouteTable::find` on snapshots built by `sluice_config::build::build` from
//! 10, 1 000 and 10 000 hosts, for each kind of request (see `sluice_benches::Case`).
//!
//! `find/*`: each iteration looks up the next of 1 024 queries spread over the whole table, so a
//! large table is not measured on one hot entry: what grows with the table is cache misses, not
//! work. `find_hot/*`: the same query every time (everything in cache), which isolates the work
//! of a lookup: it must not grow with the number of hosts.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_benches::{check_queries, inputs, policy, queries, Case};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
const QUERIES: usize = 1024;

fn lookup(c: &mut Criterion) {
    for case in Case::ALL {
        let mut group = c.benchmark_group(format!("find/{}", case.name()));
        group.throughput(Throughput::Elements(1));
        for hosts in SIZES {
            let snapshot = sluice_config::build::build(&inputs(hosts), &policy());
            let qs = queries(hosts, case, QUERIES);
            if let Err(e) = check_queries(&snapshot, &qs) {
                panic!("{} with {hosts} hosts: {e}", case.name());
            }
            let routes = &snapshot.routes;
            group.bench_with_input(BenchmarkId::from_parameter(hosts), &qs, |b, qs| {
                let mut k = 0usize;
                b.iter(|| {
                    let q = &qs[k % QUERIES];
                    k = k.wrapping_add(1);
                    black_box(routes.find(black_box(&q.host), black_box(&q.path)))
                });
            });
        }
        group.finish();
    }
    for case in [
        Case::ExactHostExactPath,
        Case::DeepPrefix,
        Case::WildcardHost,
    ] {
        let mut group = c.benchmark_group(format!("find_hot/{}", case.name()));
        group.throughput(Throughput::Elements(1));
        for hosts in SIZES {
            let snapshot = sluice_config::build::build(&inputs(hosts), &policy());
            let qs = queries(hosts, case, 1);
            if let Err(e) = check_queries(&snapshot, &qs) {
                panic!("{} with {hosts} hosts: {e}", case.name());
            }
            let routes = &snapshot.routes;
            let q = &qs[0];
            group.bench_function(BenchmarkId::from_parameter(hosts), |b| {
                b.iter(|| black_box(routes.find(black_box(&q.host), black_box(&q.path))))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookup
}
criterion_main!(benches);
