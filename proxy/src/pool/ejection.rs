//! Passive ejection: how answers and failed connects move an endpoint out of rotation and back
//! (see the module docs of [`crate::pool`], "Passive ejection").

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::endpoint::{since_epoch, Endpoint};
use super::Pool;

impl Pool {
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
