//! `sluice.dev/limit-*`: request rates and requests in flight per client address, read into
//! one [`Limits`] filter.
//!
//! A rate of N per second (`limit-rps`) or per minute (`limit-rpm`) lets a client send one
//! request every 1/N of the unit, with a burst of `limit-burst-multiplier` (default 5) times N
//! requests at once: `limit-rpm: 6` admits 30 requests in a row, then one every 10 seconds.
//! `limit-connections: N` admits N requests in flight per client address. Clients in
//! `limit-allowlist` are not limited. Over a limit the request is refused before any upstream
//! connection (`server.limit_status`, 429 by default).

use std::time::Duration;

use super::{parse_ranges, Parser, RuleError};
use crate::cidr::Cidr;

pub const LIMIT_RPS: &str = "sluice.dev/limit-rps";
pub const LIMIT_RPM: &str = "sluice.dev/limit-rpm";
pub const LIMIT_BURST_MULTIPLIER: &str = "sluice.dev/limit-burst-multiplier";
pub const LIMIT_CONNECTIONS: &str = "sluice.dev/limit-connections";
pub const LIMIT_ALLOWLIST: &str = "sluice.dev/limit-allowlist";

/// The burst of a rate, in multiples of the rate, when `limit-burst-multiplier` is not set.
pub const DEFAULT_LIMIT_BURST_MULTIPLIER: u32 = 5;
/// The largest rate (requests per unit), burst multiplier and connection count accepted.
pub const MAX_LIMIT: u32 = 1_000_000;

/// A route's limits per client address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Rates, each checked (per second, then per minute).
    pub rates: Vec<Rate>,
    /// Requests in flight per client address.
    pub connections: Option<u32>,
    /// Clients not limited.
    pub allowlist: Vec<Cidr>,
}

/// `requests` per `per`, with bursts of `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    pub requests: u32,
    pub per: Duration,
    pub burst: u32,
}

impl Rate {
    /// The time one request uses up of the budget: `per / requests`.
    pub fn interval(&self) -> Duration {
        self.per / self.requests.max(1)
    }
}

impl std::fmt::Display for Limits {
    /// How `sluice check` shows the filter (`limit 10/s burst 50, 5 in flight`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("limit")?;
        let mut sep = " ";
        for r in &self.rates {
            let unit = if r.per == Duration::from_secs(1) {
                "s"
            } else {
                "min"
            };
            write!(f, "{sep}{}/{unit} burst {}", r.requests, r.burst)?;
            sep = ", ";
        }
        if let Some(n) = self.connections {
            write!(f, "{sep}{n} in flight")?;
        }
        if !self.allowlist.is_empty() {
            let list: Vec<String> = self.allowlist.iter().map(ToString::to_string).collect();
            write!(f, ", except {}", list.join(" "))?;
        }
        Ok(())
    }
}

/// The limits of an Ingress, `None` when it sets none. A multiplier or allow list without a
/// limit to apply to is refused, as is any value that is not a whole number in range.
pub(super) fn limits(p: &mut Parser<'_>) -> Option<Limits> {
    let rps = p.get(LIMIT_RPS, parse_count);
    let rpm = p.get(LIMIT_RPM, parse_count);
    let multiplier = p.get(LIMIT_BURST_MULTIPLIER, parse_count);
    let connections = p.get(LIMIT_CONNECTIONS, parse_count);
    let allowlist = p.get(LIMIT_ALLOWLIST, parse_ranges);
    let no_rate = !p.annotations.contains_key(LIMIT_RPS) && !p.annotations.contains_key(LIMIT_RPM);
    if no_rate && multiplier.is_some() {
        p.refuse(
            LIMIT_BURST_MULTIPLIER,
            RuleError::Unused { needs: LIMIT_RPS },
        );
    }
    if no_rate && !p.annotations.contains_key(LIMIT_CONNECTIONS) {
        if allowlist.is_some() {
            p.refuse(LIMIT_ALLOWLIST, RuleError::Unused { needs: LIMIT_RPS });
        }
        return None;
    }
    let multiplier = multiplier.unwrap_or(DEFAULT_LIMIT_BURST_MULTIPLIER);
    let rate = |requests: u32, secs| Rate {
        requests,
        per: Duration::from_secs(secs),
        burst: requests.saturating_mul(multiplier),
    };
    let rates = [rps.map(|n| rate(n, 1)), rpm.map(|n| rate(n, 60))];
    Some(Limits {
        rates: rates.into_iter().flatten().collect(),
        connections,
        allowlist: allowlist.unwrap_or_default(),
    })
}

fn parse_count(text: &str) -> Result<u32, RuleError> {
    text.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or(RuleError::NotACount {
            min: 1,
            max: MAX_LIMIT.into(),
        })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::rules::{filters, Filter};

    fn parse(pairs: &[(&str, &str)]) -> (Vec<Filter>, Vec<(&'static str, RuleError)>) {
        let annotations: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let (f, bad) = filters(&annotations);
        (f, bad.into_iter().map(|b| (b.key, b.error)).collect())
    }

    #[test]
    fn rates_burst_by_the_multiplier_in_their_own_unit() {
        let (f, bad) = parse(&[
            (LIMIT_RPS, "10"),
            (LIMIT_RPM, " 6 "),
            (LIMIT_CONNECTIONS, "3"),
            (LIMIT_ALLOWLIST, "10.0.0.0/8, ::1"),
        ]);
        assert_eq!(bad, vec![]);
        let Some(Filter::Limits(l)) = f.first() else {
            panic!("{f:?}")
        };
        assert_eq!(
            l.rates,
            [
                Rate {
                    requests: 10,
                    per: Duration::from_secs(1),
                    burst: 50
                },
                Rate {
                    requests: 6,
                    per: Duration::from_secs(60),
                    burst: 30
                }
            ]
        );
        assert_eq!(l.rates[1].interval(), Duration::from_secs(10));
        assert_eq!(l.connections, Some(3));
        assert_eq!(
            f[0].to_string(),
            "limit 10/s burst 50, 6/min burst 30, 3 in flight, except 10.0.0.0/8 ::1/128"
        );
        let (f, _) = parse(&[(LIMIT_RPS, "2"), (LIMIT_BURST_MULTIPLIER, "1")]);
        assert_eq!(f[0].to_string(), "limit 2/s burst 2");
    }

    #[test]
    fn a_bad_or_dangling_limit_fails_the_route_closed() {
        let count = RuleError::NotACount {
            min: 1,
            max: MAX_LIMIT.into(),
        };
        for (pairs, key, error) in [
            (vec![(LIMIT_RPS, "0")], LIMIT_RPS, count.clone()),
            (vec![(LIMIT_RPM, "1.5")], LIMIT_RPM, count.clone()),
            (
                vec![(LIMIT_CONNECTIONS, "-1")],
                LIMIT_CONNECTIONS,
                count.clone(),
            ),
            (
                vec![(LIMIT_RPS, "1"), (LIMIT_BURST_MULTIPLIER, "2000000")],
                LIMIT_BURST_MULTIPLIER,
                count,
            ),
            (
                vec![(LIMIT_BURST_MULTIPLIER, "2"), (LIMIT_CONNECTIONS, "2")],
                LIMIT_BURST_MULTIPLIER,
                RuleError::Unused { needs: LIMIT_RPS },
            ),
            (
                vec![(LIMIT_ALLOWLIST, "10.0.0.0/8")],
                LIMIT_ALLOWLIST,
                RuleError::Unused { needs: LIMIT_RPS },
            ),
        ] {
            let (f, bad) = parse(&pairs);
            assert_eq!(f, [Filter::Invalid], "{pairs:?}");
            assert_eq!(bad, [(key, error)], "{pairs:?}");
        }
        let (f, bad) = parse(&[(LIMIT_RPS, "1"), (LIMIT_ALLOWLIST, "10.0.0.1/8")]);
        assert_eq!(f, [Filter::Invalid]);
        assert!(matches!(bad[0].1, RuleError::NotAddressRanges(_)));
    }
}
