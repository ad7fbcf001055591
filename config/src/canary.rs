//! Canaries: an Ingress with `sluice.dev/canary: "true"` sends part of the traffic of the
//! identical rules of another Ingress to its own backend.
//!
//! A canary Ingress owns nothing: each of its (host, path, pathType) rules is a canary of the
//! identical rule of a non-canary Ingress in the namespace that owns the host (it is reported
//! when there is none, or when the rule already has a canary), and it never takes part in host
//! ownership, TLS or `from-to-www-redirect`. A canary rule inherits every policy of its primary
//! rule (filters, timeouts, protocol annotation, body limits, TLS): only the
//! `sluice.dev/canary*` annotations and its own balancing and affinity are read from it; any
//! other `sluice.dev/` annotation on it is reported as ignored. Its backend has its own pool.
//!
//! Which requests go to the canary's backend, in this order ([`CanaryRule`]):
//! 1. `sluice.dev/canary-by-header: X-Canary`: without `canary-by-header-value`, the value
//!    `always` goes to the canary and `never` to the primary; with
//!    `sluice.dev/canary-by-header-value: v`, the value `v` goes to the canary; anything else
//!    (or no header) goes on to the next step;
//! 2. `sluice.dev/canary-by-cookie: name`: `always` to the canary, `never` to the primary, else
//!    the next step;
//! 3. `sluice.dev/canary-weight: N` out of `sluice.dev/canary-weight-total` (default 100) of
//!    the rest, drawn at random; weight 0 (the default) sends nothing by weight.

use std::collections::BTreeMap;

use crate::annotations::{parse_bool, AnnotationError, BadAnnotation};
use crate::model::IngressInput;
use crate::routes::TargetId;

pub const CANARY: &str = "sluice.dev/canary";
pub const CANARY_BY_HEADER: &str = "sluice.dev/canary-by-header";
pub const CANARY_BY_HEADER_VALUE: &str = "sluice.dev/canary-by-header-value";
pub const CANARY_BY_COOKIE: &str = "sluice.dev/canary-by-cookie";
pub const CANARY_WEIGHT: &str = "sluice.dev/canary-weight";
pub const CANARY_WEIGHT_TOTAL: &str = "sluice.dev/canary-weight-total";

/// `canary-weight-total` when the Ingress sets none.
pub const DEFAULT_WEIGHT_TOTAL: u32 = 100;

/// The annotations a canary reads from itself; every other `sluice.dev/` one is its primary's.
const OWN: &[&str] = &[
    crate::annotations::LOAD_BALANCE,
    crate::annotations::HASH_BY,
    crate::annotations::AFFINITY,
    crate::annotations::SESSION_COOKIE_NAME,
    crate::annotations::SESSION_COOKIE_MAX_AGE,
];

/// Which requests a canary takes (see the module docs for the order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CanaryRule {
    /// The header name, lowercase.
    pub header: Option<String>,
    /// The header value that selects the canary; `None`: `always` and `never`.
    pub header_value: Option<String>,
    pub cookie: Option<String>,
    pub weight: u32,
    pub total: u32,
}

/// A canary of one rule: its Ingress (an index in the snapshot's `ingresses`), where it sends
/// requests, and which.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Canary {
    pub ingress: usize,
    pub target: TargetId,
    pub rule: CanaryRule,
}

/// Whether the Ingress is a canary (a bad value of `sluice.dev/canary` is reported by
/// [`rule`] and leaves it a canary, so it never takes over its primary's rules).
pub fn is_canary(ingress: &IngressInput) -> bool {
    ingress
        .annotations
        .get(CANARY)
        .is_some_and(|v| parse_bool(v) != Ok(false))
}

/// What a canary Ingress's annotations select, and a message for every value not used: a bad
/// value (the rest of the rule is kept), or a `sluice.dev/` annotation that is its primary's to
/// set.
pub fn rule(annotations: &BTreeMap<String, String>) -> (CanaryRule, Vec<String>) {
    let mut bad = Vec::new();
    let mut report = |key: &'static str, value: &String, error| {
        bad.push(
            BadAnnotation {
                key,
                value: value.clone(),
                error,
            }
            .to_string(),
        )
    };
    let token = |v: &str| {
        let v = v.trim();
        (!v.is_empty()
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)))
        .then(|| v.to_string())
    };
    let mut rule = CanaryRule {
        total: DEFAULT_WEIGHT_TOTAL,
        ..CanaryRule::default()
    };
    for (key, value) in annotations {
        match key.as_str() {
            CANARY if parse_bool(value).is_err() => {
                report(CANARY, value, AnnotationError::NotABool);
            }
            CANARY_BY_HEADER => match token(value) {
                Some(t) => rule.header = Some(t.to_ascii_lowercase()),
                None => report(CANARY_BY_HEADER, value, AnnotationError::NotAHeaderName),
            },
            CANARY_BY_HEADER_VALUE => {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_graphic()) {
                    rule.header_value = Some(value.clone());
                } else {
                    report(
                        CANARY_BY_HEADER_VALUE,
                        value,
                        AnnotationError::NotAHeaderValue,
                    );
                }
            }
            CANARY_BY_COOKIE => match token(value) {
                Some(t) => rule.cookie = Some(t),
                None => report(CANARY_BY_COOKIE, value, AnnotationError::NotACookieName),
            },
            CANARY_WEIGHT => match value.trim().parse() {
                Ok(n) => rule.weight = n,
                Err(_) => report(CANARY_WEIGHT, value, AnnotationError::NotAWeight),
            },
            CANARY_WEIGHT_TOTAL => match value.trim().parse() {
                Ok(n) if n > 0 => rule.total = n,
                _ => report(CANARY_WEIGHT_TOTAL, value, AnnotationError::NotAWeight),
            },
            _ => {}
        }
    }
    if rule.weight > rule.total {
        if let Some(v) = annotations.get(CANARY_WEIGHT) {
            report(CANARY_WEIGHT, v, AnnotationError::WeightOverTotal);
        }
        rule.weight = rule.total;
    }
    for key in annotations.keys() {
        let ignored = key.starts_with("sluice.dev/")
            && !key.starts_with("sluice.dev/canary")
            && !OWN.contains(&key.as_str());
        if ignored {
            bad.push(format!(
                "annotation `{key}` is ignored on a canary: its primary's policy applies"
            ));
        }
    }
    (rule, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> (CanaryRule, Vec<String>) {
        rule(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn canary_annotations_are_read_and_the_primarys_are_reported_as_ignored() {
        let (rule, bad) = parse(&[
            (CANARY, "true"),
            (CANARY_BY_HEADER, "X-Canary"),
            (CANARY_BY_HEADER_VALUE, "blue"),
            (CANARY_BY_COOKIE, "canary"),
            (CANARY_WEIGHT, "10"),
            (CANARY_WEIGHT_TOTAL, "1000"),
            ("sluice.dev/load-balance", "ewma"),
            ("sluice.dev/rewrite-target", "/x"),
        ]);
        assert_eq!(
            rule,
            CanaryRule {
                header: Some("x-canary".into()),
                header_value: Some("blue".into()),
                cookie: Some("canary".into()),
                weight: 10,
                total: 1000,
            }
        );
        assert_eq!(
            bad,
            ["annotation `sluice.dev/rewrite-target` is ignored on a canary: its primary's policy applies"]
        );
    }

    #[test]
    fn bad_canary_values_are_reported_and_a_weight_is_capped_at_the_total() {
        let (rule, bad) = parse(&[
            (CANARY_BY_HEADER, "X Canary"),
            (CANARY_WEIGHT, "150"),
            (CANARY_WEIGHT_TOTAL, "0"),
        ]);
        assert_eq!((rule.header, rule.weight, rule.total), (None, 100, 100));
        assert_eq!(bad.len(), 3, "{bad:?}");
        for (b, key) in bad
            .iter()
            .zip([CANARY_BY_HEADER, CANARY_WEIGHT_TOTAL, CANARY_WEIGHT])
        {
            assert!(b.starts_with(&format!("annotation `{key}`")), "{b}");
        }
    }
}

#[cfg(test)]
mod build_tests {
    use crate::build::build;
    use crate::fixtures::{backend, class_policy, ingress, service};
    use crate::model::{IngressInput, Inputs};

    fn snapshot(ingresses: Vec<IngressInput>) -> crate::Snapshot {
        let services = ["a", "b"]
            .iter()
            .flat_map(|ns| ["web", "v2"].map(|s| service(ns, s).port("http", 80).build()))
            .collect();
        let inputs = Inputs {
            ingresses,
            services,
            ..Inputs::default()
        };
        build(&inputs, &class_policy())
    }

    #[test]
    fn a_canary_joins_the_identical_rule_of_its_namespace_and_owns_nothing() {
        let s = snapshot(vec![
            // Older than its primary: a canary never takes the host or the rule.
            ingress("a", "canary")
                .created(1)
                .annotation("sluice.dev/canary", "true")
                .annotation("sluice.dev/canary-weight", "10")
                .host("h.test")
                .path("/", "Prefix", backend("v2", 80))
                .path("/only-here", "Prefix", backend("v2", 80))
                .build(),
            ingress("a", "primary")
                .created(2)
                .host("h.test")
                .path("/", "Prefix", backend("web", 80))
                .build(),
            ingress("b", "foreign-canary")
                .created(3)
                .annotation("sluice.dev/canary", "true")
                .host("h.test")
                .path("/", "Prefix", backend("v2", 80))
                .build(),
        ]);
        let entry = s.routes.find("h.test", "/x").expect("the primary serves");
        assert_eq!(s.ingresses[entry.ingress].object.name, "primary");
        let canary = &s.canaries[entry.canary.expect("a canary")];
        assert_eq!(s.ingresses[canary.ingress].object.name, "canary");
        assert_eq!(canary.rule.weight, 10);
        assert_eq!(s.canaries.len(), 1);
        assert_eq!(
            s.routes.find("h.test", "/only-here").map(|e| e.ingress),
            Some(entry.ingress)
        );
        let found: Vec<(&str, &str)> = s
            .skipped
            .iter()
            .map(|f| (f.ingress.name.as_str(), f.reason.as_str()))
            .collect();
        assert_eq!(
            found,
            [("canary", "NoPrimary"), ("foreign-canary", "NoPrimary")]
        );
    }
}
