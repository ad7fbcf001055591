//! Endpoint pools and the balancing algorithms over them.
//!
//! One [`Pool`] per Service port ([`PoolKey`]), shared by every route that leads to that port and
//! by every worker thread: one pool is balanced as one. Besides its endpoints, a pool keeps per
//! endpoint what the algorithms read: requests in flight and a peak-EWMA latency score. Each
//! route picks with its own algorithm ([`Pick`]) over that shared state, so two Ingresses that
//! choose different algorithms for one Service port still see the same load on each endpoint.
//!
//! The request path reads the endpoint list behind an `ArcSwap` and never takes a pool-wide
//! lock; in-flight counts are atomics; the latency score of an endpoint sits behind its own tiny
//! mutex, held for a few floating-point operations.
//!
//! pingora-load-balancing's `LoadBalancer` is not used here: it fixes one selection algorithm per
//! balancer and keeps no per-endpoint load, while sluice chooses the algorithm per route and
//! needs in-flight counts and latency that outlive endpoint updates.
//!
//! # Passive ejection
//!
//! An endpoint that fails `consecutive_failures` requests in a row (failed connects or 5xx
//! answers, whichever route sent them) leaves the rotation of every algorithm for `base`, then
//! twice that at each further ejection not separated by a success, up to `max` (as Envoy's
//! outlier detection). The last endpoint not ejected is never ejected, and a request whose every
//! candidate is ejected still goes to one of them. An affinity cookie naming an ejected endpoint
//! moves its client. Ejection ends by itself when its time is up; the next answers decide again.
//!
//! # Active health
//!
//! A pool whose Service asks for active health checks ([`Pool::set_health_check`]) is probed by
//! [`crate::health`]; this module keeps each endpoint's verdict ([`Endpoint::record_probe`]):
//! `unhealthy_threshold` failed probes in a row take it out of the rotation of every algorithm
//! and of affinity, `healthy_threshold` passes in a row bring it back. New endpoints start
//! healthy, so endpoint churn never drops traffic while a first verdict is pending (a pod is
//! only listed once Kubernetes reports it ready, which is already a health verdict). It fails
//! open, as AWS ALB and Envoy's panic mode do: when no endpoint a request may use is healthy,
//! the unhealthy ones serve it. A pool whose checks are turned off returns every endpoint to
//! rotation.
//!
//! # Algorithms
//!
//! - **Round robin**: one counter per pool, advanced by every request of every thread.
//! - **Least request**: two distinct endpoints drawn at random; the one with fewer requests in
//!   flight wins (power of two choices).
//! - **EWMA**: as least request, scored by `latency × (in flight + 1)`, where latency is a peak
//!   EWMA of time to the response head, as in Finagle, Linkerd (tower's `PeakEwma`) and
//!   ingress-nginx: a slower answer replaces the estimate at once, a faster one blends in with
//!   weight `1 - e^(-Δt/τ)`, and an idle estimate decays towards zero with the same time constant
//!   [`EWMA_DECAY`], so an endpoint that was slow is tried again after a while. A new endpoint
//!   starts at [`EWMA_DEFAULT_RTT`].
//! - **Consistent hash**: rendezvous (highest random weight) hashing of the request's key with
//!   each endpoint's address; the highest score wins. A key keeps its endpoint while that endpoint
//!   stays, whatever else comes or goes, and when it goes only its keys move, spread evenly over
//!   the rest. The hash (FNV-1a, then a SplitMix64 finaliser) is fixed, so every sluice replica
//!   maps a key the same way. A request without the key is balanced round robin.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};
use sluice_config::health::HealthCheck;
use sluice_config::{Ejection, PoolKey};

/// Time constant of the EWMA latency score: how fast old observations fade (as Linkerd's).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency score of an endpoint that has not answered yet (as Linkerd's default RTT).
pub const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);

/// How a request picks its endpoint; the route's algorithm with its key already computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    RoundRobin,
    LeastRequest,
    Ewma,
    /// The hash of the request's key; `None` when the request has no key (round robin then).
    Hash(Option<u64>),
}

/// One endpoint of a pool and its load.
pub struct Endpoint {
    addr: SocketAddr,
    /// What an affinity cookie says to name this endpoint: a hash of its address, so the cookie
    /// does not reveal pod addresses.
    token: u64,
    in_flight: AtomicUsize,
    latency: Mutex<PeakEwma>,
    /// Failed connects and 5xx answers since the last success.
    failures: AtomicU32,
    /// Ejections since the last success; the next one lasts `base × 2^ejections`.
    ejections: AtomicU32,
    /// Until when the endpoint is ejected, as [`since_epoch`] nanoseconds; 0: never was.
    ejected_until: AtomicU64,
    /// Active health: cleared by failed probes, set again by passing ones. Only the endpoint's
    /// probe task writes it and the two streak counters below.
    healthy: AtomicBool,
    /// Probes passed in a row.
    probe_passes: AtomicU32,
    /// Probes failed in a row.
    probe_failures: AtomicU32,
}

impl Endpoint {
    fn new(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            token: rendezvous(AFFINITY_SALT, &addr),
            in_flight: AtomicUsize::new(0),
            latency: Mutex::new(PeakEwma {
                cost_ns: EWMA_DEFAULT_RTT.as_nanos() as f64,
                stamp: Instant::now(),
            }),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            probe_passes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
        }
    }

    /// Whether the endpoint's active health checks (if any) let it serve.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Records one probe result. A healthy endpoint turns unhealthy at `unhealthy_threshold`
    /// failures in a row, an unhealthy one healthy at `healthy_threshold` passes in a row (both
    /// at least 1). Returns the new health when this probe changed it.
    pub fn record_probe(
        &self,
        pass: bool,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
    ) -> Option<bool> {
        let (streak, other, threshold) = if pass {
            (&self.probe_passes, &self.probe_failures, healthy_threshold)
        } else {
            (
                &self.probe_failures,
                &self.probe_passes,
                unhealthy_threshold,
            )
        };
        other.store(0, Ordering::Relaxed);
        let n = streak.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if self.is_healthy() != pass && n >= threshold.max(1) {
            self.healthy.store(pass, Ordering::Relaxed);
            return Some(pass);
        }
        None
    }

    /// Probes failed in a row so far.
    pub fn probe_failures(&self) -> u32 {
        self.probe_failures.load(Ordering::Relaxed)
    }

    /// Forgets every probe result: healthy again. Returns whether it was unhealthy.
    fn reset_health(&self) -> bool {
        self.probe_passes.store(0, Ordering::Relaxed);
        self.probe_failures.store(0, Ordering::Relaxed);
        !self.healthy.swap(true, Ordering::Relaxed)
    }

    /// Whether the endpoint is out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > since_epoch(now)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This endpoint's affinity-cookie value.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Requests now in flight to this endpoint, from every route and thread.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks one request in flight to this endpoint until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlightEndpoint {
        self.begin_at(Instant::now())
    }

    /// As [`Endpoint::begin`], for a request sent at `now`.
    pub fn begin_at(self: &Arc<Self>, now: Instant) -> InFlightEndpoint {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightEndpoint {
            endpoint: self.clone(),
            started: now,
            observed: false,
        }
    }

    /// Folds one response time into the latency score.
    pub fn observe(&self, rtt: Duration) {
        self.observe_at(rtt, Instant::now())
    }

    /// As [`Endpoint::observe`], for a response seen at `now`.
    pub fn observe_at(&self, rtt: Duration, now: Instant) {
        if let Ok(mut l) = self.latency.lock() {
            l.update(rtt.as_nanos() as f64, now);
        }
    }

    /// The EWMA score: the decayed latency times the requests in flight plus one.
    fn score(&self, now: Instant) -> f64 {
        let cost = match self.latency.lock() {
            Ok(mut l) => l.update(0.0, now),
            Err(_) => EWMA_DEFAULT_RTT.as_nanos() as f64,
        };
        // A floor keeps the in-flight factor meaningful once the estimate has decayed to ~0.
        cost.max(1_000.0) * (self.in_flight() + 1) as f64
    }
}

/// One request in flight to an endpoint; dropping it ends the request's count.
pub struct InFlightEndpoint {
    endpoint: Arc<Endpoint>,
    started: Instant,
    observed: bool,
}

impl InFlightEndpoint {
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Records the time from the start of this attempt to now as the endpoint's response time
    /// (once; later calls do nothing).
    pub fn observe_response(&mut self) {
        self.observe_response_at(Instant::now())
    }

    /// As [`InFlightEndpoint::observe_response`], for a response seen at `now` (one clock read
    /// serves the latency score and the ejection bookkeeping of a response).
    pub fn observe_response_at(&mut self, now: Instant) {
        if !self.observed {
            self.observed = true;
            self.endpoint
                .observe_at(now.saturating_duration_since(self.started), now);
        }
    }
}

impl Drop for InFlightEndpoint {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A peak-EWMA latency estimate in nanoseconds (see the module docs).
struct PeakEwma {
    cost_ns: f64,
    stamp: Instant,
}

impl PeakEwma {
    /// Folds in `rtt_ns` observed at `now` and returns the new estimate; an `rtt_ns` of 0 only
    /// decays the estimate.
    fn update(&mut self, rtt_ns: f64, now: Instant) -> f64 {
        if rtt_ns > self.cost_ns {
            self.cost_ns = rtt_ns;
        } else {
            let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
            let decay = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            self.cost_ns = self.cost_ns * decay + rtt_ns * (1.0 - decay);
        }
        self.stamp = self.stamp.max(now);
        self.cost_ns
    }
}

/// The endpoints of one Service port and their load.
pub struct Pool {
    key: PoolKey,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    /// The round-robin turn.
    next: AtomicUsize,
    ejection: Ejection,
    /// The active health check its Service asks for; `None`: no probes.
    health_check: ArcSwapOption<HealthCheck>,
}

/// How many endpoints of a pool are in each state, as `sluice_pool_endpoints` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointCounts {
    /// In rotation: healthy and not ejected.
    pub ready: usize,
    /// Healthy but ejected by passive ejection.
    pub ejected: usize,
    /// Failing their active health checks (ejected or not).
    pub unhealthy: usize,
}

impl Pool {
    /// An empty pool that ejects failing endpoints as `ejection` says; call
    /// [`Pool::set_endpoints`] to fill it.
    pub fn new(key: PoolKey, ejection: Ejection) -> Pool {
        epoch();
        Pool {
            key,
            endpoints: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            ejection,
            health_check: ArcSwapOption::empty(),
        }
    }

    /// Sets the active health check (`None` or an inactive check: no probes). Returns whether it
    /// changed. Turning checks off returns every endpoint to rotation.
    pub fn set_health_check(&self, check: Option<HealthCheck>) -> bool {
        let check = check.filter(HealthCheck::is_active);
        if self.health_check.load().as_deref() == check.as_ref() {
            return false;
        }
        let off = check.is_none();
        self.health_check.store(check.map(Arc::new));
        if off {
            for e in self.endpoints.load().iter() {
                if e.reset_health() {
                    tracing::info!(
                        pool = %self.key,
                        endpoint = %e.addr,
                        "health checks are off: endpoint back in rotation"
                    );
                }
            }
        }
        true
    }

    /// The active health check, if the pool has one.
    pub fn health_check(&self) -> Option<Arc<HealthCheck>> {
        self.health_check.load_full()
    }

    /// The endpoints now in the pool (what the health checker probes).
    pub fn endpoint_list(&self) -> Arc<Vec<Arc<Endpoint>>> {
        self.endpoints.load_full()
    }

    /// Whether some endpoint of the pool passes its health checks (always, without checks).
    pub fn any_healthy(&self) -> bool {
        self.endpoints.load().iter().any(|e| e.is_healthy())
    }

    /// The endpoints in each state.
    pub fn counts(&self) -> EndpointCounts {
        let now = Instant::now();
        let mut c = EndpointCounts::default();
        for e in self.endpoints.load().iter() {
            if !e.is_healthy() {
                c.unhealthy += 1;
            } else if e.is_ejected(now) {
                c.ejected += 1;
            } else {
                c.ready += 1;
            }
        }
        c
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Replaces the endpoints (sorted, without duplicates, as snapshots give them). Returns
    /// whether anything changed. An endpoint that stays keeps its load and latency; established
    /// upstream connections stay in Pingora's connection pool.
    pub fn set_endpoints(&self, addrs: &[SocketAddr]) -> bool {
        let old = self.endpoints.load();
        if old.len() == addrs.len() && old.iter().zip(addrs).all(|(e, a)| e.addr == *a) {
            return false;
        }
        let mut kept: HashMap<SocketAddr, &Arc<Endpoint>> =
            old.iter().map(|e| (e.addr, e)).collect();
        let new = addrs
            .iter()
            .map(|a| match kept.remove(a) {
                Some(e) => e.clone(),
                None => Arc::new(Endpoint::new(*a)),
            })
            .collect();
        self.endpoints.store(Arc::new(new));
        true
    }

    /// The endpoint addresses now in use.
    pub fn endpoints(&self) -> Vec<SocketAddr> {
        self.endpoints.load().iter().map(|e| e.addr).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.load().is_empty()
    }

    /// The endpoint `pick` chooses among those `accept` takes that are healthy and not ejected,
    /// or `None` when `accept` takes none. When none of those is left (every endpoint failing its
    /// health checks, ejections racing, or the request already failed on the others), unhealthy
    /// endpoints not ejected are used, then any: a request is never refused because of health
    /// or ejection alone (fail open).
    pub fn pick(&self, pick: Pick, accept: impl Fn(&SocketAddr) -> bool) -> Option<Arc<Endpoint>> {
        let now = Instant::now();
        // One turn per request, whichever tier serves it: the fallbacks must not advance it
        // again, or two endpoints failing open would always give the same one.
        let turn = self.turn(pick);
        self.pick_ready_at(pick, turn, &accept, now)
            .or_else(|| {
                self.pick_among(pick, turn, &|e: &Endpoint| {
                    accept(&e.addr) && !e.is_ejected(now)
                })
            })
            .or_else(|| self.pick_among(pick, turn, &|e: &Endpoint| accept(&e.addr)))
    }

    /// The endpoint `pick` chooses among those `accept` takes that are in rotation (healthy and
    /// not ejected), with no fallback: what a retry uses, so that a request that already failed
    /// once is not sent on to endpoints known to be failing.
    pub fn pick_ready(
        &self,
        pick: Pick,
        accept: impl Fn(&SocketAddr) -> bool,
    ) -> Option<Arc<Endpoint>> {
        self.pick_ready_at(pick, self.turn(pick), &accept, Instant::now())
    }

    /// The round-robin turn of one request (advancing the pool's), for the picks that use it.
    fn turn(&self, pick: Pick) -> usize {
        match pick {
            Pick::RoundRobin | Pick::Hash(None) => self.next.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        }
    }

    fn pick_ready_at(
        &self,
        pick: Pick,
        turn: usize,
        accept: &impl Fn(&SocketAddr) -> bool,
        now: Instant,
    ) -> Option<Arc<Endpoint>> {
        self.pick_among(pick, turn, &|e: &Endpoint| {
            accept(&e.addr) && e.is_healthy() && !e.is_ejected(now)
        })
    }

    /// Whether some endpoint that `accept` takes is in rotation (healthy and not ejected).
    pub fn has_ready(&self, accept: impl Fn(&SocketAddr) -> bool) -> bool {
        let now = Instant::now();
        self.endpoints
            .load()
            .iter()
            .any(|e| accept(&e.addr) && e.is_healthy() && !e.is_ejected(now))
    }

    fn pick_among(
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

    /// The endpoint an affinity cookie names, if it is in the pool, not ejected, and `accept`
    /// takes it, and it is healthy (or no endpoint of the pool is: failing open, clients keep
    /// their endpoints rather than move at every request).
    pub fn by_token(
        &self,
        token: u64,
        accept: impl Fn(&SocketAddr) -> bool,
    ) -> Option<Arc<Endpoint>> {
        self.endpoints
            .load()
            .iter()
            .find(|e| e.token == token && accept(&e.addr) && !e.is_ejected(Instant::now()))
            .filter(|e| e.is_healthy() || !self.any_healthy())
            .cloned()
    }

    /// Records how a request to `endpoint` went: `ok` is a response below 500; a failed connect
    /// or a 5xx is a failure. Returns whether this ejected the endpoint.
    pub fn report(&self, endpoint: &Endpoint, ok: bool) -> bool {
        self.report_at(endpoint, ok, Instant::now())
    }

    /// As [`Pool::report`], for an outcome seen at `now`.
    pub fn report_at(&self, e: &Endpoint, ok: bool, now: Instant) -> bool {
        if ok {
            e.failures.store(0, Ordering::Relaxed);
            if !e.is_ejected(now) {
                // Back in rotation and answering: the next ejection starts from the base again.
                e.ejections.store(0, Ordering::Relaxed);
            }
            return false;
        }
        let limit = self.ejection.consecutive_failures;
        if limit == 0 {
            return false;
        }
        let failures = e.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let until = e.ejected_until.load(Ordering::Relaxed);
        if failures < limit || until > since_epoch(now) {
            return false;
        }
        // Never the last endpoint: another one must stay in rotation (healthy, unless none is).
        let all = self.endpoints.load();
        let healthy_exists = all.iter().any(|o| o.is_healthy());
        let others_up = all
            .iter()
            .any(|o| o.addr != e.addr && !o.is_ejected(now) && (o.is_healthy() || !healthy_exists));
        if !others_up {
            return false;
        }
        // Requests failing on the endpoint at the same time all reach this point; only the one
        // that moves `ejected_until` ejects, so one outage is one ejection (counted, lengthened
        // and logged once), not one per request in flight.
        let previous = e.ejections.load(Ordering::Relaxed);
        let length = self
            .ejection
            .base
            .saturating_mul(2u32.saturating_pow(previous.min(16)))
            .min(self.ejection.max);
        let claimed = e.ejected_until.compare_exchange(
            until,
            since_epoch(now + length),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if claimed.is_err() {
            return false;
        }
        e.ejections.fetch_add(1, Ordering::Relaxed);
        e.failures.store(0, Ordering::Relaxed);
        tracing::warn!(
            pool = %self.key,
            endpoint = %e.addr,
            failures,
            ejected_ms = length.as_millis() as u64,
            "endpoint ejected after consecutive failures"
        );
        true
    }
}

/// Nanoseconds from the process's first pool to `t` (0 for earlier instants).
fn since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
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
fn random_below(n: usize) -> usize {
    (((next_random() >> 32) * n as u64) >> 32) as usize
}

/// A number drawn uniformly from [0, 1) (the jitter of health probe times).
pub fn random_unit() -> f64 {
    (next_random() >> 11) as f64 / (1u64 << 53) as f64
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
const AFFINITY_SALT: u64 = 0x5e55_1011_af11_0001;

/// The FNV-1a offset basis: the start of every key hash.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The hash of a request's consistent-hash key.
pub fn hash_key(key: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, key)
}

/// The rendezvous score of an endpoint for a key: the key's hash extended with the address, then
/// mixed (SplitMix64's finaliser) so that nearby addresses get unrelated scores.
fn rendezvous(key: u64, addr: &SocketAddr) -> u64 {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn no_ejection() -> Ejection {
        Ejection {
            consecutive_failures: 0,
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        }
    }

    /// A pool that ejects after `failures` in a row, first for `base_secs`, at most `max_secs`.
    fn ejecting_pool(failures: u32, base_secs: u64, max_secs: u64) -> Pool {
        Pool::new(
            key(),
            Ejection {
                consecutive_failures: failures,
                base: Duration::from_secs(base_secs),
                max: Duration::from_secs(max_secs),
            },
        )
    }

    fn key() -> PoolKey {
        PoolKey {
            namespace: "ns".into(),
            service: "svc".into(),
            port: 80,
            target_type: Default::default(),
        }
    }

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (1..=n)
            .map(|i| SocketAddr::from(([10, 0, 0, i as u8], 8080)))
            .collect()
    }

    fn pick(pool: &Pool, p: Pick) -> SocketAddr {
        pool.pick(p, |_| true).map(|e| e.addr()).unwrap()
    }

    #[test]
    fn a_pool_rotates_over_its_endpoints_and_follows_updates() {
        let pool = Pool::new(key(), no_ejection());
        assert!(pool.pick(Pick::RoundRobin, |_| true).is_none());
        let (a, b) = (addrs(2)[0], addrs(2)[1]);
        assert!(pool.set_endpoints(&[a, b]));
        assert!(!pool.set_endpoints(&[a, b]), "an identical set is a no-op");
        let picks: Vec<_> = (0..4).map(|_| pick(&pool, Pick::RoundRobin)).collect();
        assert_eq!(picks.iter().filter(|p| **p == a).count(), 2, "{picks:?}");
        let e = pool.pick(Pick::RoundRobin, |x| *x != a).unwrap();
        assert_eq!(e.addr(), b);
        assert!(pool.set_endpoints(&[b]));
        for p in [Pick::RoundRobin, Pick::LeastRequest, Pick::Ewma] {
            assert_eq!(pick(&pool, p), b);
        }
        assert!(pool.pick(Pick::LeastRequest, |x| *x != b).is_none());
    }

    #[test]
    fn an_endpoint_that_stays_keeps_its_load_across_updates() {
        let pool = Pool::new(key(), no_ejection());
        let all = addrs(3);
        pool.set_endpoints(&all[..2]);
        let e = pool.pick(Pick::RoundRobin, |a| *a == all[0]).unwrap();
        let _req = e.begin();
        pool.set_endpoints(&all);
        let again = pool.pick(Pick::RoundRobin, |a| *a == all[0]).unwrap();
        assert_eq!(again.in_flight(), 1);
    }

    #[test]
    fn least_request_avoids_the_endpoint_with_requests_in_flight() {
        let pool = Pool::new(key(), no_ejection());
        let all = addrs(2);
        pool.set_endpoints(&all);
        let busy = pool.pick(Pick::RoundRobin, |a| *a == all[0]).unwrap();
        let _reqs: Vec<_> = (0..3).map(|_| busy.begin()).collect();
        for _ in 0..50 {
            assert_eq!(pick(&pool, Pick::LeastRequest), all[1]);
        }
    }

    #[test]
    fn ewma_avoids_the_slow_endpoint_and_tries_it_again_once_its_score_decays() {
        let pool = Pool::new(key(), no_ejection());
        let all = addrs(2);
        pool.set_endpoints(&all);
        let slow = pool.pick(Pick::RoundRobin, |a| *a == all[0]).unwrap();
        slow.observe(Duration::from_millis(500));
        let fast = pool.pick(Pick::RoundRobin, |a| *a == all[1]).unwrap();
        fast.observe(Duration::from_millis(1));
        for _ in 0..50 {
            assert_eq!(pick(&pool, Pick::Ewma), all[1]);
        }
        // A peak: one slow answer is enough to make an endpoint expensive.
        fast.observe(Duration::from_millis(900));
        assert_eq!(pick(&pool, Pick::Ewma), all[0]);
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_blends_lower_values_over_time() {
        let t0 = Instant::now();
        let mut l = PeakEwma {
            cost_ns: 10.0,
            stamp: t0,
        };
        assert_eq!(l.update(100.0, t0), 100.0);
        // After one time constant a lower value has weight 1 - 1/e.
        let v = l.update(0.0, t0 + EWMA_DECAY);
        assert!((v - 100.0 / std::f64::consts::E).abs() < 0.01, "{v}");
    }

    #[test]
    fn a_consistent_hash_keeps_its_keys_when_an_unrelated_endpoint_goes() {
        let pool = Pool::new(key(), no_ejection());
        let all = addrs(5);
        pool.set_endpoints(&all);
        let keys: Vec<u64> = (0..500)
            .map(|i| hash_key(format!("user-{i}").as_bytes()))
            .collect();
        let before: Vec<SocketAddr> = keys
            .iter()
            .map(|k| pick(&pool, Pick::Hash(Some(*k))))
            .collect();
        // Every endpoint gets a fair share of keys.
        for a in &all {
            let n = before.iter().filter(|b| *b == a).count();
            assert!((60..=140).contains(&n), "{a}: {n} of 500");
        }
        let gone = all[2];
        pool.set_endpoints(&[all[0], all[1], all[3], all[4]]);
        for (k, was) in keys.iter().zip(&before) {
            let now = pick(&pool, Pick::Hash(Some(*k)));
            if *was != gone {
                assert_eq!(now, *was, "a key moved off an endpoint that stayed");
            }
        }
        // Skipping the endpoint a key hashes to (as a retry does) gives the runner-up.
        let k = keys[0];
        let first = pick(&pool, Pick::Hash(Some(k)));
        let second = pool.pick(Pick::Hash(Some(k)), |a| *a != first).unwrap();
        assert_ne!(second.addr(), first);
    }

    #[test]
    fn an_affinity_token_finds_its_endpoint_while_it_stays() {
        let pool = Pool::new(key(), no_ejection());
        let all = addrs(3);
        pool.set_endpoints(&all);
        let e = pool.pick(Pick::RoundRobin, |a| *a == all[1]).unwrap();
        let token = e.token();
        assert_ne!(
            token,
            pool.pick(Pick::RoundRobin, |a| *a == all[0])
                .unwrap()
                .token()
        );
        assert_eq!(
            pool.by_token(token, |_| true).map(|e| e.addr()),
            Some(all[1])
        );
        assert!(pool.by_token(token, |a| *a != all[1]).is_none());
        pool.set_endpoints(&[all[0], all[2]]);
        assert!(pool.by_token(token, |_| true).is_none());
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_time_but_never_the_last_endpoint() {
        let pool = ejecting_pool(3, 10, 25);
        let all = addrs(2);
        pool.set_endpoints(&all);
        let bad = pool.pick(Pick::RoundRobin, |a| *a == all[0]).unwrap();
        let good = pool.pick(Pick::RoundRobin, |a| *a == all[1]).unwrap();
        let t0 = Instant::now();
        // A success in between starts the count again.
        assert!(!pool.report_at(&bad, false, t0));
        assert!(!pool.report_at(&bad, false, t0));
        assert!(!pool.report_at(&bad, true, t0));
        assert!(!pool.report_at(&bad, false, t0));
        assert!(!pool.report_at(&bad, false, t0));
        assert!(pool.report_at(&bad, false, t0), "the third in a row ejects");
        assert!(bad.is_ejected(t0 + Duration::from_secs(9)));
        assert!(!bad.is_ejected(t0 + Duration::from_secs(10)));
        // The last endpoint in rotation is never ejected.
        for _ in 0..10 {
            assert!(!pool.report_at(&good, false, t0));
        }
        assert!(!good.is_ejected(t0));
        // Back after 10 s and failing again: 20 s, then capped at 25 s.
        let t1 = t0 + Duration::from_secs(10);
        for _ in 0..3 {
            pool.report_at(&bad, false, t1);
        }
        assert!(bad.is_ejected(t1 + Duration::from_secs(19)));
        assert!(!bad.is_ejected(t1 + Duration::from_secs(20)));
        let t2 = t1 + Duration::from_secs(20);
        for _ in 0..3 {
            pool.report_at(&bad, false, t2);
        }
        assert!(bad.is_ejected(t2 + Duration::from_secs(24)));
        assert!(!bad.is_ejected(t2 + Duration::from_secs(25)));
        // A success once back resets the growth.
        let t3 = t2 + Duration::from_secs(25);
        pool.report_at(&bad, true, t3);
        for _ in 0..3 {
            pool.report_at(&bad, false, t3);
        }
        assert!(!bad.is_ejected(t3 + Duration::from_secs(10)));
    }

    #[test]
    fn an_ejected_endpoint_gets_no_requests_unless_it_is_all_that_is_left() {
        let pool = ejecting_pool(1, 60, 60);
        let all = addrs(3);
        pool.set_endpoints(&all);
        let bad = pool.pick(Pick::RoundRobin, |a| *a == all[0]).unwrap();
        assert!(pool.report(&bad, false));
        assert_eq!(pool.counts().ejected, 1);
        for p in [
            Pick::RoundRobin,
            Pick::LeastRequest,
            Pick::Ewma,
            Pick::Hash(Some(7)),
        ] {
            for _ in 0..20 {
                assert_ne!(pick(&pool, p), all[0], "{p:?}");
            }
        }
        assert!(pool.by_token(bad.token(), |_| true).is_none());
        // The request already failed on the others: the ejected endpoint still serves it.
        assert_eq!(
            pool.pick(Pick::RoundRobin, |a| *a == all[0])
                .map(|e| e.addr()),
            Some(all[0])
        );
        // A retry does not fail open: it finds no endpoint rather than the ejected one.
        assert!(pool
            .pick_ready(Pick::RoundRobin, |a| *a == all[0])
            .is_none());
        assert!(!pool.has_ready(|a| *a == all[0]));
        assert!(pool.has_ready(|a| *a != all[1]));
        assert_eq!(
            pool.pick_ready(Pick::RoundRobin, |a| *a != all[1])
                .map(|e| e.addr()),
            Some(all[2])
        );
    }

    /// Many requests failing on one endpoint at once eject it once, for the base time: the
    /// outage must not count as several ejections (each doubling the next one's length).
    /// Loading `ejections` and storing `ejected_until` without the compare-exchange in
    /// `report_at` makes this fail intermittently.
    #[test]
    fn requests_failing_on_an_endpoint_at_once_eject_it_once() {
        let pool = ejecting_pool(1, 10, 300);
        let all = addrs(3);
        pool.set_endpoints(&all);
        let bad = endpoint(&pool, all[0]);
        let now = Instant::now();
        for round in 0..20 {
            let t = now + Duration::from_secs(600 * round);
            let start = std::sync::Barrier::new(8);
            let ejected = std::thread::scope(|s| {
                let handles: Vec<_> = (0..8)
                    .map(|_| {
                        s.spawn(|| {
                            start.wait();
                            pool.report_at(&bad, false, t)
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(false))
                    .filter(|e| *e)
                    .count()
            });
            assert_eq!(ejected, 1, "round {round}");
            assert!(bad.is_ejected(t + Duration::from_secs(9)), "round {round}");
            assert!(
                !bad.is_ejected(t + Duration::from_secs(10)),
                "round {round}"
            );
            // Answering again once back: the next outage starts from the base time.
            pool.report_at(&bad, true, t + Duration::from_secs(11));
        }
    }

    /// Three endpoints with health checks of thresholds 2 (healthy) and 3 (unhealthy).
    fn checked_pool() -> (Pool, Vec<SocketAddr>) {
        let pool = Pool::new(key(), no_ejection());
        let all = addrs(3);
        pool.set_endpoints(&all);
        assert!(pool.set_health_check(Some(HealthCheck {
            kind: sluice_config::health::CheckKind::Http,
            ..HealthCheck::default()
        })));
        (pool, all)
    }

    fn endpoint(pool: &Pool, addr: SocketAddr) -> Arc<Endpoint> {
        pool.endpoint_list()
            .iter()
            .find(|e| e.addr() == addr)
            .cloned()
            .unwrap()
    }

    #[test]
    fn health_turns_at_the_thresholds_of_consecutive_results() {
        let (pool, all) = checked_pool();
        let e = endpoint(&pool, all[0]);
        assert!(e.is_healthy(), "a new endpoint starts healthy");
        // A pass in between starts the failure count again.
        assert_eq!(e.record_probe(false, 2, 3), None);
        assert_eq!(e.record_probe(false, 2, 3), None);
        assert_eq!(e.record_probe(true, 2, 3), None);
        assert_eq!(e.record_probe(false, 2, 3), None);
        assert_eq!(e.record_probe(false, 2, 3), None);
        assert_eq!(
            e.record_probe(false, 2, 3),
            Some(false),
            "the third in a row"
        );
        assert!(!e.is_healthy());
        assert_eq!(e.record_probe(false, 2, 3), None, "no change, no report");
        assert_eq!(e.record_probe(true, 2, 3), None);
        assert_eq!(e.record_probe(false, 2, 3), None);
        assert_eq!(e.record_probe(true, 2, 3), None);
        assert_eq!(
            e.record_probe(true, 2, 3),
            Some(true),
            "the second pass in a row"
        );
        assert!(e.is_healthy());
        assert_eq!(
            pool.counts(),
            EndpointCounts {
                ready: 3,
                ejected: 0,
                unhealthy: 0
            }
        );
    }

    #[test]
    fn an_unhealthy_endpoint_leaves_every_algorithm_and_affinity() {
        let (pool, all) = checked_pool();
        let bad = endpoint(&pool, all[0]);
        for _ in 0..3 {
            bad.record_probe(false, 2, 3);
        }
        assert_eq!(pool.counts().unhealthy, 1);
        for p in [
            Pick::RoundRobin,
            Pick::LeastRequest,
            Pick::Ewma,
            Pick::Hash(Some(7)),
            Pick::Hash(None),
        ] {
            for _ in 0..30 {
                assert_ne!(pick(&pool, p), all[0], "{p:?}");
            }
        }
        assert!(pool.by_token(bad.token(), |_| true).is_none());
        // A retry that already failed on the healthy ones still gets an endpoint.
        assert_eq!(
            pool.pick(Pick::RoundRobin, |a| *a == all[0])
                .map(|e| e.addr()),
            Some(all[0])
        );
        // Passive ejection never takes out the last healthy endpoint.
        let strict = ejecting_pool(1, 60, 60);
        strict.set_endpoints(&all[..2]);
        endpoint(&strict, all[0]).record_probe(false, 1, 1);
        let last = endpoint(&strict, all[1]);
        assert!(!strict.report(&last, false));
        assert_eq!(pick(&strict, Pick::RoundRobin), all[1]);
    }

    #[test]
    fn a_pool_whose_every_endpoint_is_unhealthy_fails_open() {
        let (pool, _) = checked_pool();
        let all = addrs(4);
        pool.set_endpoints(&all);
        for a in &all {
            for _ in 0..3 {
                endpoint(&pool, *a).record_probe(false, 2, 3);
            }
        }
        assert!(!pool.any_healthy());
        assert_eq!(pool.counts().unhealthy, 4);
        // All of them serve, each in turn (a fallback that advanced the turn again would
        // skip every other one).
        let picks: Vec<SocketAddr> = (0..40).map(|_| pick(&pool, Pick::RoundRobin)).collect();
        for a in &all {
            assert_eq!(picks.iter().filter(|p| *p == a).count(), 10, "{picks:?}");
        }
        // Affinity holds while failing open: clients do not move at every request.
        let e = endpoint(&pool, all[1]);
        assert_eq!(
            pool.by_token(e.token(), |_| true).map(|e| e.addr()),
            Some(all[1])
        );
        // One healthy again: it takes everything.
        let back = endpoint(&pool, all[2]);
        back.record_probe(true, 2, 3);
        assert_eq!(back.record_probe(true, 2, 3), Some(true));
        for _ in 0..20 {
            assert_eq!(pick(&pool, Pick::LeastRequest), all[2]);
        }
        assert!(pool.by_token(e.token(), |_| true).is_none());
    }

    #[test]
    fn turning_checks_off_returns_every_endpoint_and_new_endpoints_start_healthy() {
        let (pool, all) = checked_pool();
        let bad = endpoint(&pool, all[0]);
        for _ in 0..3 {
            bad.record_probe(false, 2, 3);
        }
        // An endpoint that joins starts healthy; one that stays keeps its verdict.
        let more = addrs(4);
        pool.set_endpoints(&more);
        assert!(endpoint(&pool, more[3]).is_healthy());
        assert!(!endpoint(&pool, all[0]).is_healthy());
        // The same check again changes nothing; none (or an inactive check) turns them off.
        assert!(!pool.set_health_check(Some(HealthCheck {
            kind: sluice_config::health::CheckKind::Http,
            ..HealthCheck::default()
        })));
        assert!(pool.set_health_check(Some(HealthCheck::default())));
        assert!(pool.health_check().is_none());
        assert!(bad.is_healthy());
        assert_eq!(pool.counts().ready, 4);
    }

    #[test]
    fn jitter_stays_within_the_unit_interval_and_varies() {
        let draws: Vec<f64> = (0..200).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|d| **d < 0.5).count();
        assert!((50..=150).contains(&low), "{low} of 200 below one half");
    }

    #[test]
    fn random_draws_cover_the_range_evenly() {
        let mut counts = [0usize; 4];
        for _ in 0..4000 {
            counts[random_below(4)] += 1;
        }
        assert!(
            counts.iter().all(|c| (800..=1200).contains(c)),
            "{counts:?}"
        );
    }
}
