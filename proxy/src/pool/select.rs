//! The selection algorithms (see the module docs of [`crate::pool`], "Algorithms"): round robin,
//! power of two choices (least request and EWMA), and rendezvous hashing with the fixed hash it
//! scores with.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::endpoint::Endpoint;
use super::random::random_below;
use super::{Pick, Pool};

impl Pool {
    pub(super) fn pick_among(
        &self,
        pick: Pick,
        turn: usize,
        accept: &impl Fn(&Endpoint) -> bool,
    ) -> Option<Arc<Endpoint>> {
        let all = self.endpoints.load();
        match pick {
            Pick::RoundRobin | Pick::Hash(None) => round_robin(&all, turn, accept),
            Pick::LeastRequest => two_choices(&all, accept, |e| e.in_flight() as f64),
            Pick::Ewma => {
                let now = Instant::now();
                two_choices(&all, accept, |e| e.score(now))
            }
            Pick::Hash(Some(key)) => all
                .iter()
                .filter(|e| accept(e))
                .max_by_key(|e| rendezvous(key, &e.addr))
                .cloned(),
        }
    }
}

/// The first endpoint `accept` takes from position `start` on, wrapping around.
fn round_robin(
    all: &[Arc<Endpoint>],
    start: usize,
    accept: &impl Fn(&Endpoint) -> bool,
) -> Option<Arc<Endpoint>> {
    if all.is_empty() {
        return None;
    }
    (0..all.len())
        .map(|i| &all[start.wrapping_add(i) % all.len()])
        .find(|e| accept(e))
        .cloned()
}

/// Power of two choices: the lower-cost of two distinct accepted endpoints drawn at random.
fn two_choices(
    all: &[Arc<Endpoint>],
    accept: &impl Fn(&Endpoint) -> bool,
    cost: impl Fn(&Endpoint) -> f64,
) -> Option<Arc<Endpoint>> {
    let better = |a: &Arc<Endpoint>, b: &Arc<Endpoint>| {
        if cost(b) < cost(a) {
            b.clone()
        } else {
            a.clone()
        }
    };
    let n = all.len();
    if n >= 2 {
        // The common case allocates nothing: both draws accepted.
        let i = random_below(n);
        let j = (i + 1 + random_below(n - 1)) % n;
        let (a, b) = (&all[i], &all[j]);
        if accept(a) && accept(b) {
            return Some(better(a, b));
        }
    }
    let accepted: Vec<&Arc<Endpoint>> = all.iter().filter(|e| accept(e)).collect();
    match accepted.len() {
        0 => None,
        1 => Some(accepted[0].clone()),
        m => {
            let i = random_below(m);
            let j = (i + 1 + random_below(m - 1)) % m;
            Some(better(accepted[i], accepted[j]))
        }
    }
}

/// FNV-1a over `bytes`, continuing from `hash`.
fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Mixed into affinity tokens so they differ from any consistent-hash score.
pub(super) const AFFINITY_SALT: u64 = 0x5e55_1011_af11_0001;

/// The FNV-1a offset basis: the start of every key hash.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of a request's consistent-hash key.
pub fn hash_key(key: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, key)
}

/// The rendezvous score of an endpoint for a key: the key's hash extended with the address, then
/// mixed (SplitMix64's finaliser) so that nearby addresses get unrelated scores.
pub(super) fn rendezvous(key: u64, addr: &SocketAddr) -> u64 {
    let mut h = match addr.ip() {
        std::net::IpAddr::V4(ip) => fnv1a(key, &ip.octets()),
        std::net::IpAddr::V6(ip) => fnv1a(key, &ip.octets()),
    };
    h = fnv1a(h, &addr.port().to_be_bytes());
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}
