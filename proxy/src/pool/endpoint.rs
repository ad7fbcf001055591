//! One endpoint of a pool and the state the algorithms, ejection and active health keep on it.
//! An endpoint that stays across endpoint updates keeps this state (see [`Pool::set_endpoints`]).
//!
//! [`Pool::set_endpoints`]: super::Pool::set_endpoints

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::select::{rendezvous, AFFINITY_SALT};

/// Time constant of the EWMA latency score: how fast old observations fade (as Linkerd's).
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency score of an endpoint that has not answered yet (as Linkerd's default RTT).
pub const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);

/// One endpoint of a pool and its load.
pub struct Endpoint {
    pub(super) addr: SocketAddr,
    /// What an affinity cookie says to name this endpoint: a hash of its address, so the cookie
    /// does not reveal pod addresses.
    pub(super) token: u64,
    in_flight: AtomicUsize,
    latency: Mutex<PeakEwma>,
    /// Failed connects and 5xx answers since the last success.
    pub(super) failures: AtomicU32,
    /// Ejections since the last success; the next one lasts `base × 2^ejections`.
    pub(super) ejections: AtomicU32,
    /// Until when the endpoint is ejected, as [`since_epoch`] nanoseconds; 0: never was.
    pub(super) ejected_until: AtomicU64,
    /// Active health: cleared by failed probes, set again by passing ones. Only the endpoint's
    /// probe task writes it and the two streak counters below.
    healthy: AtomicBool,
    /// Probes passed in a row.
    probe_passes: AtomicU32,
    /// Probes failed in a row.
    probe_failures: AtomicU32,
}

impl Endpoint {
    pub(super) fn new(addr: SocketAddr) -> Endpoint {
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
    pub(super) fn reset_health(&self) -> bool {
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
    pub(super) fn score(&self, now: Instant) -> f64 {
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
pub(super) struct PeakEwma {
    pub(super) cost_ns: f64,
    pub(super) stamp: Instant,
}

impl PeakEwma {
    /// Folds in `rtt_ns` observed at `now` and returns the new estimate; an `rtt_ns` of 0 only
    /// decays the estimate.
    pub(super) fn update(&mut self, rtt_ns: f64, now: Instant) -> f64 {
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

/// Nanoseconds from the process's first pool to `t` (0 for earlier instants).
pub(super) fn since_epoch(t: Instant) -> u64 {
    u64::try_from(t.saturating_duration_since(epoch()).as_nanos()).unwrap_or(u64::MAX)
}

pub(super) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}
