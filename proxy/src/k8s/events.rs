//! Pacing of the leader's Events: a queue with one place per Ingress, a rate limit, and a
//! warning at most once per interval when the queue sheds.
//!
//! Under Ingress churn far more Events fall due than an API server should be sent. The queue
//! holds Ingresses, not Events: an Ingress already waiting keeps its place, and what is written
//! for it is worked out when its turn comes, from the newest report (newest wins, so an Ingress
//! fixed or deleted while it waited gets nothing about its old state). The writer takes Ingresses
//! from the front at the configured rate ([`RateLimit`]); when more than the configured number
//! wait, the oldest are shed: what they had to say is dropped for good (announced again only if
//! it stops being true and becomes true again), counted, and one warning per
//! [`SHED_WARN_INTERVAL`] says how many.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use sluice_config::model::ObjectRef;

/// The shortest time between two warnings that Events were shed.
pub const SHED_WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Ingresses with Events to write, oldest first, each at most once.
#[derive(Debug)]
pub struct EventQueue {
    order: VecDeque<ObjectRef>,
    queued: HashSet<ObjectRef>,
    max: usize,
}

impl EventQueue {
    /// A queue that holds at most `max` Ingresses (at least one).
    pub fn new(max: usize) -> EventQueue {
        EventQueue {
            order: VecDeque::new(),
            queued: HashSet::new(),
            max: max.max(1),
        }
    }

    /// Queues `key` unless it already waits (then it keeps its place). Returns the oldest
    /// Ingress if it was shed to stay within the limit.
    pub fn push(&mut self, key: &ObjectRef) -> Option<ObjectRef> {
        if self.queued.contains(key) {
            return None;
        }
        self.queued.insert(key.clone());
        self.order.push_back(key.clone());
        if self.order.len() <= self.max {
            return None;
        }
        let old = self.order.pop_front()?;
        self.queued.remove(&old);
        Some(old)
    }

    /// The Ingress whose turn it is.
    pub fn pop(&mut self) -> Option<ObjectRef> {
        let key = self.order.pop_front()?;
        self.queued.remove(&key);
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn clear(&mut self) {
        self.order.clear();
        self.queued.clear();
    }
}

/// A token bucket: `rate` Events per second, up to one second's worth at once.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    tokens: f64,
    stamp: Instant,
}

impl RateLimit {
    /// A full bucket of `per_second` (at least 1) tokens.
    pub fn new(per_second: u32, now: Instant) -> RateLimit {
        let rate = f64::from(per_second.max(1));
        RateLimit {
            rate,
            tokens: rate,
            stamp: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.stamp).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.stamp = self.stamp.max(now);
    }

    /// When the next Event may be written: `now` when a token is there.
    pub fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    /// Spends one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return true;
        }
        false
    }
}

/// Counts shed Events and says when to warn: at the first shed, then at most once per
/// [`SHED_WARN_INTERVAL`], with the number shed since the last warning.
#[derive(Debug, Default)]
pub struct ShedReport {
    unreported: u64,
    last_warning: Option<Instant>,
}

impl ShedReport {
    /// Records `n` shed Ingresses; returns the number to warn about now, if a warning is due.
    pub fn shed(&mut self, n: usize, now: Instant) -> Option<u64> {
        if n == 0 {
            return None;
        }
        self.unreported += n as u64;
        let due = self
            .last_warning
            .is_none_or(|at| now.saturating_duration_since(at) >= SHED_WARN_INTERVAL);
        if !due {
            return None;
        }
        self.last_warning = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: usize) -> ObjectRef {
        ObjectRef::new("preview", format!("pr-{n}"))
    }

    #[test]
    fn an_ingress_waits_once_and_the_oldest_are_shed_beyond_the_limit() {
        let mut q = EventQueue::new(3);
        assert_eq!(q.push(&key(1)), None);
        assert_eq!(q.push(&key(2)), None);
        // Queued again while waiting: keeps its place, takes no second one.
        assert_eq!(q.push(&key(1)), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.push(&key(3)), None);
        assert_eq!(q.push(&key(4)), Some(key(1)), "the fourth sheds the oldest");
        assert_eq!(q.pop(), Some(key(2)));
        // The shed one may queue again, at the back.
        assert_eq!(q.push(&key(1)), None);
        assert_eq!(q.pop(), Some(key(3)));
        assert_eq!(q.pop(), Some(key(4)));
        assert_eq!(q.pop(), Some(key(1)));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
    }

    #[test]
    fn the_rate_limit_allows_one_second_at_once_then_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(4, t0);
        for _ in 0..4 {
            assert!(r.try_take(t0));
        }
        assert!(!r.try_take(t0));
        assert_eq!(r.ready_at(t0), t0 + Duration::from_millis(250));
        assert!(!r.try_take(t0 + Duration::from_millis(200)));
        assert!(r.try_take(t0 + Duration::from_millis(250)));
        // A long pause refills one second's worth, no more.
        let later = t0 + Duration::from_secs(60);
        let taken = (0..10).filter(|_| r.try_take(later)).count();
        assert_eq!(taken, 4);
    }

    #[test]
    fn shedding_warns_at_once_then_at_most_once_per_interval_with_the_count() {
        let t0 = Instant::now();
        let mut s = ShedReport::default();
        assert_eq!(s.shed(0, t0), None);
        assert_eq!(s.shed(5, t0), Some(5));
        assert_eq!(s.shed(7, t0 + Duration::from_secs(1)), None);
        assert_eq!(s.shed(1, t0 + Duration::from_secs(29)), None);
        assert_eq!(s.shed(2, t0 + SHED_WARN_INTERVAL), Some(10));
    }
}
