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
//!
//! # Layout
//!
//! - `endpoint`: one endpoint and its per-endpoint state (in-flight count, latency score, health
//!   verdict, ejection deadline).
//! - `ejection`: passive ejection, fed by [`Pool::report`].
//! - `select`: the selection algorithms and the hashes they use.
//! - `random`: the per-thread random source behind two choices and probe jitter.

mod ejection;
mod endpoint;
mod random;
mod select;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use sluice_config::health::HealthCheck;
use sluice_config::{Ejection, PoolKey};

pub use endpoint::{Endpoint, InFlightEndpoint, EWMA_DECAY, EWMA_DEFAULT_RTT};
pub use random::random_unit;
pub use select::hash_key;

use endpoint::epoch;

/// How a request picks its endpoint; the route's algorithm with its key already computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    RoundRobin,
    LeastRequest,
    Ewma,
    /// The hash of the request's key; `None` when the request has no key (round robin then).
    Hash(Option<u64>),
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
}
