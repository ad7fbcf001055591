//! The random source: a per-thread generator for the draws of two choices and the jitter of
//! probe times. Not for anything that needs unpredictability.

use std::cell::Cell;

/// The next number of a per-thread xorshift generator, seeded from the process's random hasher
/// keys: fast, and good enough to pick endpoints and spread probe times.
fn next_random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(0);
            h.finish() | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// A uniformly drawn number below `n` (n > 0).
pub(super) fn random_below(n: usize) -> usize {
    (((next_random() >> 32) * n as u64) >> 32) as usize
}

/// A number drawn uniformly from [0, 1) (the jitter of health probe times).
pub fn random_unit() -> f64 {
    (next_random() >> 11) as f64 / (1u64 << 53) as f64
}
