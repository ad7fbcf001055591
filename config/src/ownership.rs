//! Host ownership between namespaces: which namespace decides a host's TLS and client
//! authentication, and (with `controller.cross_namespace_paths = "deny"`) which namespace alone
//! may route on it.
//!
//! # Who owns a host
//!
//! Hosts are taken as written in rules and `spec.tls` (an exact name, or a one-label wildcard
//! `*.example.com`); an exact host and a wildcard covering it are different hosts.
//!
//! 1. `controller.host_owners`: an exact entry for the host, else a wildcard entry covering it
//!    (`*.team-a.example.com` covers `app.team-a.example.com` and the host
//!    `*.team-a.example.com` itself, never `team-a.example.com` or `a.b.team-a.example.com`).
//! 2. Otherwise the namespace of the oldest served Ingress with a rule for the host
//!    (first come, first served: any namespace that creates the first Ingress for a host owns
//!    it, which is why multi-tenant clusters set `controller.host_owners`).
//! 3. A host that no rule names (only `spec.tls` does) is served by the rules of the wildcard one
//!    label up, if any: the owner of that wildcard owns it (so no one can lift the client
//!    authentication of `*.example.com` for `a.example.com` by listing only the latter).
//!    Otherwise the namespace of the oldest Ingress listing it in `spec.tls` owns it; it has no
//!    routes to protect.
//!
//! A host's TLS policy comes only from Ingresses in its owning namespace ([`crate::tls`]).

use std::collections::HashMap;

use crate::model::{IngressInput, ObjectRef};
use crate::routes::{parse_rule_host, HostKey};

/// Whether rules from other namespaces may route on a host its owner holds
/// (`controller.cross_namespace_paths`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrossNamespacePaths {
    /// Every namespace's rules are merged on a host, as ingress-nginx does; only TLS and client
    /// authentication are the owner's.
    #[default]
    Allow,
    /// Rules from a namespace other than the host's owner are skipped and reported.
    Deny,
}

/// `controller.host_owners`, validated: host patterns and the namespace that owns each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostOwners {
    exact: HashMap<String, String>,
    /// Keyed by the suffix after `*.`.
    wildcards: HashMap<String, String>,
}

/// Why a `controller.host_owners` entry is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostOwnerError {
    #[error("`{pattern}`: {message}")]
    Pattern { pattern: String, message: String },
    #[error("`{pattern}` = `{namespace}`: not a namespace name (a lowercase DNS label)")]
    Namespace { pattern: String, namespace: String },
}

impl HostOwners {
    /// Validates `pattern -> namespace` pairs: each pattern an exact lowercase DNS name or
    /// `*.` followed by one, each namespace a DNS label.
    pub fn new<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<HostOwners, HostOwnerError> {
        let mut out = HostOwners::default();
        for (pattern, namespace) in entries {
            let key = match parse_rule_host(Some(pattern)) {
                Ok(HostKey::Any) => {
                    return Err(HostOwnerError::Pattern {
                        pattern: pattern.to_string(),
                        message: "is empty".into(),
                    })
                }
                Ok(k) => k,
                Err(message) => {
                    return Err(HostOwnerError::Pattern {
                        pattern: pattern.to_string(),
                        message: message.to_string(),
                    })
                }
            };
            let ns = namespace.trim();
            if !crate::routes::is_dns_label(ns) {
                return Err(HostOwnerError::Namespace {
                    pattern: pattern.to_string(),
                    namespace: namespace.to_string(),
                });
            }
            match key {
                HostKey::Exact(h) => out.exact.insert(h.to_string(), ns.to_string()),
                HostKey::Wildcard(s) => out.wildcards.insert(s.to_string(), ns.to_string()),
                HostKey::Any => None,
            };
        }
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty()
    }

    /// The configured owner of a host as written, with the entry that says so.
    pub fn owner_of(&self, host: &HostKey<'_>) -> Option<(&str, String)> {
        match host {
            HostKey::Exact(h) => {
                if let Some(ns) = self.exact.get(*h) {
                    return Some((ns, h.to_string()));
                }
                let (label, suffix) = h.split_once('.')?;
                if label.is_empty() {
                    return None;
                }
                self.wildcards
                    .get(suffix)
                    .map(|ns| (ns.as_str(), format!("*.{suffix}")))
            }
            HostKey::Wildcard(s) => self
                .wildcards
                .get(*s)
                .map(|ns| (ns.as_str(), format!("*.{s}"))),
            HostKey::Any => None,
        }
    }
}

/// Why a namespace owns a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedBy {
    /// The `controller.host_owners` entry (as written) that covers the host.
    Setting(String),
    /// The oldest served Ingress with a rule for the host.
    FirstRule(ObjectRef),
    /// The oldest served Ingress listing the host in `spec.tls` (no rule names it).
    FirstTls(ObjectRef),
    /// The owner of this wildcard (as written), whose rules serve the host (no rule names it).
    Wildcard(String),
}

/// The owner of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub by: OwnedBy,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.by {
            OwnedBy::Setting(p) => write!(
                f,
                "namespace {} (controller.host_owners `{p}`)",
                self.namespace
            ),
            OwnedBy::FirstRule(i) => write!(
                f,
                "namespace {} (its oldest Ingress with a rule for it is {i})",
                self.namespace
            ),
            OwnedBy::FirstTls(i) => write!(
                f,
                "namespace {} (its oldest Ingress listing it in spec.tls is {i})",
                self.namespace
            ),
            OwnedBy::Wildcard(w) => write!(
                f,
                "namespace {} (the owner of `{w}`, whose rules serve it)",
                self.namespace
            ),
        }
    }
}

/// The owner of every host the served Ingresses name, keyed by the host as written
/// (`a.example.com`, `*.example.com`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ownership {
    owners: HashMap<String, Owner>,
}

/// A host key as written: `name` or `*.suffix`.
pub fn host_text(key: &HostKey<'_>) -> Option<String> {
    match key {
        HostKey::Exact(h) => Some(h.to_string()),
        HostKey::Wildcard(s) => Some(format!("*.{s}")),
        HostKey::Any => None,
    }
}

impl Ownership {
    /// Decides the owner of every host of `served` (oldest first): see the module docs.
    pub fn compute(served: &[&IngressInput], settings: &HostOwners) -> Ownership {
        let mut owners: HashMap<String, Owner> = HashMap::new();
        let mut claim = |host: &str, ingress: &IngressInput, first: fn(ObjectRef) -> OwnedBy| {
            let Ok(key) = parse_rule_host(Some(host)) else {
                return;
            };
            let Some(text) = host_text(&key) else {
                return;
            };
            if owners.contains_key(&text) {
                return;
            }
            // Only hosts without rules of their own are served by a wildcard's rules.
            let wildcard = match (&key, first(ingress.object_ref())) {
                (HostKey::Exact(h), OwnedBy::FirstTls(_)) => h
                    .split_once('.')
                    .map(|(_, suffix)| format!("*.{suffix}"))
                    .and_then(|w| owners.get(&w).map(|o| (w, o.namespace.clone()))),
                _ => None,
            };
            let owner = match (settings.owner_of(&key), wildcard) {
                (Some((ns, pattern)), _) => Owner {
                    namespace: ns.to_string(),
                    by: OwnedBy::Setting(pattern),
                },
                (None, Some((w, ns))) => Owner {
                    namespace: ns,
                    by: OwnedBy::Wildcard(w),
                },
                (None, None) => Owner {
                    namespace: ingress.namespace.clone(),
                    by: first(ingress.object_ref()),
                },
            };
            owners.insert(text, owner);
        };
        for ingress in served {
            for rule in &ingress.rules {
                if let Some(h) = rule.host.as_deref() {
                    claim(h.trim(), ingress, OwnedBy::FirstRule);
                }
            }
        }
        for ingress in served {
            for tls in &ingress.tls {
                for h in &tls.hosts {
                    claim(h.trim(), ingress, OwnedBy::FirstTls);
                }
            }
        }
        Ownership { owners }
    }

    /// The owner of a host as written (`a.example.com`, `*.example.com`).
    pub fn owner(&self, host: &str) -> Option<&Owner> {
        self.owners.get(host)
    }

    /// Whether `namespace` owns `host` (as written); a host without an owner belongs to no one
    /// and so to everyone.
    pub fn owns(&self, namespace: &str, host: &str) -> bool {
        self.owner(host).is_none_or(|o| o.namespace == namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    /// An Ingress with one path-less rule per host in `rules` and one `spec.tls` entry listing
    /// `tls`.
    fn ingress(ns: &str, name: &str, rules: &[&str], tls: &[&str]) -> IngressInput {
        rules
            .iter()
            .fold(fixtures::ingress(ns, name).class(None), |b, h| b.host(h))
            .tls(tls, None)
            .build()
    }

    #[test]
    fn host_owner_patterns_are_exact_or_one_label_wildcards_and_bad_ones_are_refused() {
        let owners = HostOwners::new([
            ("*.team-a.example.com", "team-a"),
            ("pay.team-a.example.com", "payments"),
            ("shop.test", "shop"),
        ])
        .unwrap();
        for (host, want) in [
            ("app.team-a.example.com", Some("team-a")),
            ("*.team-a.example.com", Some("team-a")),
            ("pay.team-a.example.com", Some("payments")),
            ("team-a.example.com", None),
            ("a.b.team-a.example.com", None),
            ("*.b.team-a.example.com", None),
            ("shop.test", Some("shop")),
            ("x.shop.test", None),
            ("*.shop.test", None),
        ] {
            let key = parse_rule_host(Some(host)).unwrap();
            assert_eq!(owners.owner_of(&key).map(|o| o.0), want, "{host}");
        }
        for (pattern, namespace) in [
            ("", "a"),
            ("Shop.test", "a"),
            ("*.*.test", "a"),
            ("a*.test", "a"),
            ("bad_host.test", "a"),
            ("ok.test", ""),
            ("ok.test", "Team-A"),
            ("ok.test", "a/b"),
        ] {
            assert!(
                HostOwners::new([(pattern, namespace)]).is_err(),
                "{pattern} = {namespace}"
            );
        }
    }

    #[test]
    fn the_setting_decides_first_then_the_oldest_rule_then_the_oldest_tls_entry() {
        let settings = HostOwners::new([("*.a.test", "team-a")]).unwrap();
        // Oldest first, as snapshot building sorts them.
        let squatter = ingress("evil", "squat", &["x.a.test", "b.test"], &["only-tls.test"]);
        let owner = ingress(
            "team-b",
            "site",
            &["b.test", "c.test", "*.w.test"],
            &["c.test", "d.test"],
        );
        // Lists a name that team-b's wildcard rule serves, and lists it first.
        let lister = ingress("evil", "lister", &[], &["x.w.test"]);
        let served = [&lister, &squatter, &owner];
        let o = Ownership::compute(&served, &settings);
        for (host, ns, by) in [
            ("x.a.test", "team-a", OwnedBy::Setting("*.a.test".into())),
            (
                "b.test",
                "evil",
                OwnedBy::FirstRule(ObjectRef::new("evil", "squat")),
            ),
            (
                "c.test",
                "team-b",
                OwnedBy::FirstRule(ObjectRef::new("team-b", "site")),
            ),
            (
                "only-tls.test",
                "evil",
                OwnedBy::FirstTls(ObjectRef::new("evil", "squat")),
            ),
            (
                "d.test",
                "team-b",
                OwnedBy::FirstTls(ObjectRef::new("team-b", "site")),
            ),
            ("x.w.test", "team-b", OwnedBy::Wildcard("*.w.test".into())),
        ] {
            let got = o.owner(host).expect(host);
            assert_eq!((got.namespace.as_str(), &got.by), (ns, &by), "{host}");
        }
        assert!(o.owner("nobody.test").is_none());
        assert!(o.owns("team-a", "x.a.test"));
        assert!(!o.owns("evil", "x.a.test"));
        assert!(o.owns("anyone", "nobody.test"));
    }
}
