//! The state behind `sluice.dev/limit-*`: request rates and requests in flight per client
//! address, for one Ingress, in memory that a flood of spoofed addresses cannot grow.
//!
//! One [`Limiter`] serves every route of an Ingress (as ingress-nginx's zone serves every
//! location of an Ingress), and lives across publishes as long as the Ingress keeps the same
//! limits ([`Limiters`]). Limits are per process: N replicas admit N times the rate.
//!
//! **Rates** are a generic cell rate algorithm (GCRA): each client address holds one time, the
//! theoretical arrival time (TAT) of its next request; a request is admitted when the TAT is at
//! most `(burst - 1) * interval` ahead of now, and moves it one interval further. The times
//! live in a fixed table of [`RATE_TABLE_SETS`] sets of [`RATE_TABLE_WAYS`] entries (16 bytes
//! each: a keyed 64-bit hash of the address and its TAT, and a lock per set), allocated by the
//! first request, so a rate costs 136 KiB per Ingress however many addresses arrive. An
//! address lands in one set by its hash (keyed per table, so a sender cannot aim at a set); a
//! new address takes the entry of the set with the earliest TAT. Such an entry has the most budget left (an
//! entry whose TAT has passed has its whole burst left, and forgetting it loses nothing), so a
//! flood of one-off addresses evicts one-off addresses, and a client being limited, whose TAT
//! is the furthest ahead, is evicted last: it would take eight addresses of its set each
//! sending faster than it to push it out. The trade-off is that a forgotten client starts
//! again with a whole burst.
//!
//! **Requests in flight** (`limit-connections`) are exact counts in a map that holds only
//! addresses with a request in flight: an entry goes when its count drops to zero, so the map
//! is never larger than the requests in flight, which the connection caps bound
//! (`server.max_connections`, and HTTP/2 streams per connection). A request holds a [`Slot`]
//! for its whole life; dropping the request context (at its end, whatever ended it: an answer,
//! an error, a client that left) frees it.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use sluice_config::model::ObjectRef;
use sluice_config::rules::limits::{Limits, Rate};

/// Sets of a rate table; a power of two.
pub const RATE_TABLE_SETS: usize = 1024;
/// Entries per set of a rate table.
pub const RATE_TABLE_WAYS: usize = 8;

/// Which limit refused a request (the `reason` label of `sluice_requests_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitReason {
    /// `limit-rps` or `limit-rpm`.
    Rate,
    /// `limit-connections`.
    Connections,
}

impl LimitReason {
    pub const fn label(self) -> &'static str {
        match self {
            LimitReason::Rate => "rate",
            LimitReason::Connections => "connections",
        }
    }
}

/// A refused request: why, and for a rate, how long until the client's next request would be
/// admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub reason: LimitReason,
    pub retry_after: Option<Duration>,
}

/// The limits of one Ingress and the state they count.
pub struct Limiter {
    limits: Limits,
    rates: Box<[RateTable]>,
    in_flight: Mutex<HashMap<IpAddr, u32>>,
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        Limiter {
            rates: limits.rates.iter().map(RateTable::new).collect(),
            limits: limits.clone(),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a request of `client` at `now`, or refuses it. An admitted request under
    /// `limit-connections` gets a [`Slot`] it holds while in flight. A client in the allow list,
    /// or without an IP address, is not limited.
    pub fn admit(
        self: &Arc<Self>,
        client: Option<IpAddr>,
        now: Instant,
    ) -> Result<Option<Slot>, Refused> {
        let Some(ip) = client else {
            return Ok(None);
        };
        if self.limits.allowlist.iter().any(|c| c.contains(ip)) {
            return Ok(None);
        }
        // The place in flight first: a request a rate then refuses drops it again.
        let slot = match self.limits.connections {
            Some(max) => Some(self.enter(ip, max)?),
            None => None,
        };
        let key = address_bits(ip);
        for (i, rate) in self.rates.iter().enumerate() {
            if let Err(wait) = rate.admit(key, now) {
                // A refused request uses up nothing: give back what the rates before took.
                for taken in &self.rates[..i] {
                    taken.give_back(key);
                }
                return Err(Refused {
                    reason: LimitReason::Rate,
                    retry_after: Some(wait),
                });
            }
        }
        Ok(slot)
    }

    /// A place for one more request of `ip` in flight, when it has fewer than `max`.
    fn enter(self: &Arc<Self>, ip: IpAddr, max: u32) -> Result<Slot, Refused> {
        let mut counts = self.counts();
        let n = counts.entry(ip).or_insert(0);
        if *n >= max {
            return Err(Refused {
                reason: LimitReason::Connections,
                retry_after: None,
            });
        }
        *n += 1;
        Ok(Slot {
            limiter: self.clone(),
            ip,
        })
    }

    /// Client addresses with a request in flight now.
    pub fn clients_in_flight(&self) -> usize {
        self.counts().len()
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<IpAddr, u32>> {
        // Every change is one small update: the map is consistent whatever panicked.
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight under `limit-connections`; dropping it frees its place.
pub struct Slot {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.limiter.counts();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// An address as one number; an IPv4-mapped IPv6 address counts as the IPv4 address.
fn address_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => u128::from(v4.to_ipv6_mapped()),
            None => u128::from(v6),
        },
    }
}

/// One entry of a rate table: an address's keyed hash, and its TAT in nanoseconds since the
/// table's epoch (0: empty).
#[derive(Clone, Copy, Default)]
struct Entry {
    key: u64,
    tat: u64,
}

type Set = Mutex<[Entry; RATE_TABLE_WAYS]>;

/// The TATs of one rate (see the module's doc).
struct RateTable {
    interval: u64,
    /// How far ahead of now a TAT may be for a request to be admitted: `(burst - 1) * interval`.
    tolerance: u64,
    epoch: Instant,
    hasher: RandomState,
    sets: OnceLock<Box<[Set]>>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl RateTable {
    fn new(rate: &Rate) -> RateTable {
        let interval = nanos(rate.interval()).max(1);
        RateTable {
            interval,
            tolerance: interval.saturating_mul(u64::from(rate.burst.max(1) - 1)),
            epoch: Instant::now(),
            hasher: RandomState::new(),
            sets: OnceLock::new(),
        }
    }

    /// The set of the address `key` (the table allocated on first use), locked, and the
    /// address's hash.
    fn set(&self, key: u128) -> (MutexGuard<'_, [Entry; RATE_TABLE_WAYS]>, u64) {
        let sets = self.sets.get_or_init(|| {
            (0..RATE_TABLE_SETS)
                .map(|_| Mutex::new([Entry::default(); RATE_TABLE_WAYS]))
                .collect()
        });
        let hash = self.hasher.hash_one(key) | 1;
        let set = &sets[(hash >> 40) as usize & (RATE_TABLE_SETS - 1)];
        (set.lock().unwrap_or_else(|e| e.into_inner()), hash)
    }

    /// Gives back the interval the last admitted request of `key` took.
    fn give_back(&self, key: u128) {
        let (mut set, hash) = self.set(key);
        if let Some(e) = set.iter_mut().find(|e| e.key == hash && e.tat != 0) {
            e.tat = e.tat.saturating_sub(self.interval).max(1);
        }
    }

    /// Admits one request of the address `key` at `now`, or says how long until it would be.
    fn admit(&self, key: u128, now: Instant) -> Result<(), Duration> {
        let (mut set, hash) = self.set(key);
        // 1 ns past the epoch at the earliest, so a TAT is never the empty mark.
        let now = nanos(now.saturating_duration_since(self.epoch)).saturating_add(1);
        let way = match set.iter().position(|e| e.key == hash && e.tat != 0) {
            Some(way) => way,
            None => {
                // The entry with the earliest TAT: the most budget left, the least to forget.
                let (way, _) = set
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.tat)
                    .unwrap_or((0, &Entry::default()));
                set[way] = Entry { key: hash, tat: 0 };
                way
            }
        };
        let tat = set[way].tat.max(now);
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(Duration::from_nanos(ahead - self.tolerance));
        }
        set[way].tat = tat.saturating_add(self.interval);
        Ok(())
    }
}

/// The live limiters by Ingress and limits: the routes of an Ingress share one, and a publish
/// that keeps an Ingress's limits keeps its limiter (and what it counted).
#[derive(Default)]
pub struct Limiters(Mutex<HashMap<(ObjectRef, Limits), Weak<Limiter>>>);

impl Limiters {
    /// The limiter of `ingress` with `limits`: the live one, else a new one.
    pub fn get(&self, ingress: &ObjectRef, limits: &Limits) -> Arc<Limiter> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (ingress.clone(), limits.clone());
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        // Creating a limiter is rare (an Ingress's limits change): forget the dead ones then.
        map.retain(|_, w| w.strong_count() > 0);
        let limiter = Arc::new(Limiter::new(limits));
        map.insert(key, Arc::downgrade(&limiter));
        limiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rates: &[(u32, u64, u32)], connections: Option<u32>) -> Arc<Limiter> {
        let rates = rates
            .iter()
            .map(|&(requests, secs, burst)| Rate {
                requests,
                per: Duration::from_secs(secs),
                burst,
            })
            .collect();
        Arc::new(Limiter::new(&Limits {
            rates,
            connections,
            allowlist: vec!["10.0.0.0/8".parse().unwrap()],
        }))
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_rate_admits_its_burst_then_one_request_per_interval() {
        // limit-rpm: 6 with the default multiplier: 30 at once, then one every 10 s.
        let l = limiter(&[(6, 60, 30)], None);
        let t0 = Instant::now();
        let client = ip("192.0.2.1");
        for i in 0..30 {
            assert!(l.admit(client, t0).is_ok(), "request {i} of the burst");
        }
        let refused = l.admit(client, t0).err().unwrap();
        assert_eq!(refused.reason, LimitReason::Rate);
        assert_eq!(refused.retry_after, Some(Duration::from_secs(10)));
        // Another client has its own budget; an allowed one has none to spend.
        assert!(l.admit(ip("192.0.2.2"), t0).is_ok());
        for _ in 0..100 {
            assert!(l.admit(ip("10.1.2.3"), t0).is_ok());
        }
        let t = t0 + Duration::from_secs(10);
        assert!(l.admit(client, t).is_ok());
        assert!(l.admit(client, t).is_err());
        // IPv4 and its mapped IPv6 form are one client.
        assert!(l.admit(ip("::ffff:192.0.2.1"), t).is_err());
    }

    #[test]
    fn a_request_one_rate_refuses_uses_up_nothing_of_the_other() {
        // Checked first: 1 per minute in bursts of 5; then 1 per second, no burst.
        let l = limiter(&[(1, 60, 5), (1, 1, 1)], None);
        let t0 = Instant::now();
        let client = ip("192.0.2.1");
        assert!(l.admit(client, t0).is_ok());
        // The per-second rate refuses four more at once.
        for _ in 0..4 {
            let refused = l.admit(client, t0).err().unwrap();
            assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        }
        // The per-minute rate still has four of its five, one a second: had the refused
        // requests taken theirs, it would refuse now (remove `give_back` to see it fail).
        for s in 1..=4 {
            assert!(l.admit(client, t0 + Duration::from_secs(s)).is_ok(), "{s}");
        }
        // Now it is spent.
        let refused = l.admit(client, t0 + Duration::from_secs(5)).err().unwrap();
        assert_eq!(refused.retry_after, Some(Duration::from_secs(55)));
    }

    #[test]
    fn a_spoofed_address_flood_neither_grows_the_table_nor_frees_a_limited_client() {
        let l = limiter(&[(1, 1, 5)], None);
        let t0 = Instant::now();
        let victim = ip("2001:db8::1");
        while l.admit(victim, t0).is_ok() {}
        // Four times as many one-off addresses as the table holds, at the same instant: each
        // is admitted (it is new), and the table keeps its fixed size.
        let entries = RATE_TABLE_SETS * RATE_TABLE_WAYS;
        for n in 0..(4 * entries) as u32 {
            let spoofed = IpAddr::from(std::net::Ipv4Addr::from(0xC633_0000 + n));
            assert!(l.admit(Some(spoofed), t0).is_ok());
        }
        assert_eq!(l.rates[0].sets.get().unwrap().len(), RATE_TABLE_SETS);
        // The size the documentation gives.
        assert_eq!(RATE_TABLE_SETS * std::mem::size_of::<Set>(), 136 * 1024);
        // The limited client was not the one forgotten.
        assert!(l.admit(victim, t0).is_err());
    }

    #[test]
    fn a_request_over_either_limit_takes_nothing_of_the_other() {
        let l = limiter(&[(1, 60, 1)], Some(1));
        let t0 = Instant::now();
        let client = ip("192.0.2.1");
        let slot = l.admit(client, t0).unwrap();
        // In flight: refused by the connection limit, which takes nothing of the rate...
        assert_eq!(
            l.admit(client, t0 + Duration::from_secs(60))
                .err()
                .unwrap()
                .reason,
            LimitReason::Connections
        );
        drop(slot);
        // ...which admits the next minute's request; the rate's refusal keeps no place.
        assert!(l.admit(client, t0 + Duration::from_secs(60)).is_ok());
        let refused = l.admit(client, t0 + Duration::from_secs(60)).err().unwrap();
        assert_eq!(refused.reason, LimitReason::Rate);
        assert_eq!(l.clients_in_flight(), 0);
    }

    #[test]
    fn requests_in_flight_are_counted_per_client_and_freed_when_they_end() {
        let l = limiter(&[], Some(2));
        let client = ip("192.0.2.1");
        let a = l.admit(client, Instant::now()).unwrap();
        let b = l.admit(client, Instant::now()).unwrap();
        let refused = l.admit(client, Instant::now()).err().unwrap();
        assert_eq!(refused.reason, LimitReason::Connections);
        assert!(l.admit(ip("192.0.2.2"), Instant::now()).unwrap().is_some());
        drop(a);
        let c = l.admit(client, Instant::now()).unwrap();
        drop((b, c));
        // Nothing stays behind for clients with nothing in flight.
        assert_eq!(l.clients_in_flight(), 0);
    }

    #[test]
    fn the_routes_of_an_ingress_share_its_limiter_until_its_limits_change() {
        let limiters = Limiters::default();
        let limits = Limits {
            rates: vec![],
            connections: Some(1),
            allowlist: vec![],
        };
        let web = ObjectRef::new("shop", "web");
        let a = limiters.get(&web, &limits);
        assert!(Arc::ptr_eq(&a, &limiters.get(&web, &limits)));
        assert!(!Arc::ptr_eq(
            &a,
            &limiters.get(&ObjectRef::new("shop", "api"), &limits)
        ));
        let changed = Limits {
            connections: Some(2),
            ..limits
        };
        assert!(!Arc::ptr_eq(&a, &limiters.get(&web, &changed)));
    }
}
