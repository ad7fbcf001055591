//! Snapshot building: `sluice_config::build::build(&Inputs, &ClassPolicy)` from 1 000 and
//! 10 000 Ingresses, each with its Service (two ports) and EndpointSlice (three endpoints), five
//! or six paths per host and a few wildcard hosts. This is what every change of any watched
//! object costs before the new routes go live.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice_benches::{inputs, policy};

fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    for ingresses in [1_000usize, 10_000] {
        let inputs = inputs(ingresses);
        let policy = policy();
        let snapshot = sluice_config::build::build(&inputs, &policy);
        assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);
        assert_eq!(snapshot.ingresses.len(), ingresses);
        group.throughput(Throughput::Elements(ingresses as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(ingresses),
            &inputs,
            |b, inputs| {
                b.iter(|| black_box(sluice_config::build::build(black_box(inputs), &policy)))
            },
        );
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    targets = build
}
criterion_main!(benches);
