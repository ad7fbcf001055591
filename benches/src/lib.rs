//! Benchmarks of the pure model; see benches/README.md.
