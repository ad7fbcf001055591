//! Hosts: how a host written in a rule or `spec.tls` is parsed, how a request's host or a
//! server name is normalized, and the one map that finds what a host selects.
//!
//! Every table keyed by host (the route table, the TLS policy, host ownership, the proxy's
//! certificate store) is a [`HostMap`], so they cannot disagree on what a name selects:
//!
//! 1. the exact name (`foo.example.com`);
//! 2. else a wildcard covering exactly one more label: `*.example.com` selects `a.example.com`,
//!    never `example.com` nor `a.b.example.com`;
//! 3. else, for maps that have one, the entry without a host (rules with no `host`).
//!
//! Lookups take a name already normalized ([`normalize_host`], or the request host that
//! [`crate::routes::parse_request_host`] validated once per request): port and trailing dot
//! removed, lowercase. Keys are rule hosts that [`parse_rule_host`] accepted: lowercase DNS
//! names, so a name that is not one (an IP literal, say) can only select the host-less entry.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

/// A host as written in a rule or a `spec.tls` entry, classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKey<'a> {
    Exact(&'a str),
    /// The suffix after `*.`.
    Wildcard(&'a str),
    /// A rule without a host.
    Any,
}

impl HostKey<'_> {
    /// The host as written: `a.example.com`, `*.example.com`, or `None` for a rule without one.
    pub fn text(&self) -> Option<String> {
        match self {
            HostKey::Exact(h) => Some(h.to_string()),
            HostKey::Wildcard(s) => Some(format!("*.{s}")),
            HostKey::Any => None,
        }
    }
}

/// A [`HostKey`] that owns its text: an element of a set of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostName {
    Exact(Box<str>),
    /// The suffix after `*.`.
    Wildcard(Box<str>),
    Any,
}

impl HostName {
    pub fn key(&self) -> HostKey<'_> {
        match self {
            HostName::Exact(h) => HostKey::Exact(h),
            HostName::Wildcard(s) => HostKey::Wildcard(s),
            HostName::Any => HostKey::Any,
        }
    }
}

impl From<HostKey<'_>> for HostName {
    fn from(key: HostKey<'_>) -> Self {
        match key {
            HostKey::Exact(h) => HostName::Exact(h.into()),
            HostKey::Wildcard(s) => HostName::Wildcard(s.into()),
            HostKey::Any => HostName::Any,
        }
    }
}

/// Why a rule's host cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "host `{0}` is not a lowercase DNS name (a wildcard is allowed only as the whole first label, `*.example.com`)"
)]
pub struct InvalidRuleHost(pub String);

/// Classifies a rule's host: absent or empty is [`HostKey::Any`], `*.suffix` a wildcard, else an
/// exact lowercase DNS name.
pub fn parse_rule_host(host: Option<&str>) -> Result<HostKey<'_>, InvalidRuleHost> {
    let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
        return Ok(HostKey::Any);
    };
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    if name.len() > 253 || !name.split('.').all(is_dns_label) {
        return Err(InvalidRuleHost(host.to_string()));
    }
    Ok(if wild {
        HostKey::Wildcard(name)
    } else {
        HostKey::Exact(name)
    })
}

/// A lowercase RFC 1123 label.
pub(crate) fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// Removes a port and a trailing dot from a host header value or server name and lowercases it,
/// borrowing when nothing changes (the common case allocates nothing).
pub fn normalize_host(raw: &str) -> Cow<'_, str> {
    let mut host = raw.trim();
    if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: `[::1]:8080` -> `[::1]`
        if let Some(end) = rest.find(']') {
            host = &host[..end + 2];
        }
    } else if let Some((h, port)) = host.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            host = h;
        }
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Values by host: exact names, one-label wildcards, and the entry without a host. Names are
/// shared (`Arc<str>`): a map copied to change a few hosts copies no name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMap<T> {
    exact: HashMap<Arc<str>, T>,
    /// Keyed by the wildcard's suffix: `*.example.com` is stored under `example.com`.
    wildcards: HashMap<Arc<str>, T>,
    any: Option<T>,
}

impl<T> Default for HostMap<T> {
    fn default() -> Self {
        HostMap {
            exact: HashMap::new(),
            wildcards: HashMap::new(),
            any: None,
        }
    }
}

impl<T> HostMap<T> {
    /// What a normalized name selects: the exact entry, else the wildcard one label up, else the
    /// entry without a host.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.get_named(name).or(self.any.as_ref())
    }

    /// What a normalized name selects among named entries only (exact, then wildcard): TLS
    /// names and ownership have no host-less entry.
    pub fn get_named(&self, name: &str) -> Option<&T> {
        if let Some(v) = self.exact.get(name) {
            return Some(v);
        }
        let (label, suffix) = name.split_once('.')?;
        if label.is_empty() || suffix.is_empty() {
            return None;
        }
        self.wildcards.get(suffix)
    }

    /// The entry stored under exactly this key (no wildcard or host-less fallback).
    pub fn get_key(&self, key: &HostKey<'_>) -> Option<&T> {
        match key {
            HostKey::Exact(h) => self.exact.get(*h),
            HostKey::Wildcard(s) => self.wildcards.get(*s),
            HostKey::Any => self.any.as_ref(),
        }
    }

    /// The entry under this key, created with `T::default()` when absent.
    pub fn entry(&mut self, key: &HostKey<'_>) -> &mut T
    where
        T: Default,
    {
        match key {
            HostKey::Exact(h) => self.exact.entry((*h).into()).or_default(),
            HostKey::Wildcard(s) => self.wildcards.entry((*s).into()).or_default(),
            HostKey::Any => self.any.get_or_insert_with(T::default),
        }
    }

    /// Sets the entry under this key, returning the one it replaces.
    pub fn insert(&mut self, key: &HostKey<'_>, value: T) -> Option<T> {
        match key {
            HostKey::Exact(h) => self.exact.insert((*h).into(), value),
            HostKey::Wildcard(s) => self.wildcards.insert((*s).into(), value),
            HostKey::Any => self.any.replace(value),
        }
    }

    /// Removes the entry stored under exactly this key.
    pub fn remove(&mut self, key: &HostKey<'_>) -> Option<T> {
        match key {
            HostKey::Exact(h) => self.exact.remove(*h),
            HostKey::Wildcard(s) => self.wildcards.remove(*s),
            HostKey::Any => self.any.take(),
        }
    }

    /// Every entry with its key, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (HostKey<'_>, &T)> {
        self.exact
            .iter()
            .map(|(h, v)| (HostKey::Exact(h), v))
            .chain(
                self.wildcards
                    .iter()
                    .map(|(s, v)| (HostKey::Wildcard(s), v)),
            )
            .chain(self.any.iter().map(|v| (HostKey::Any, v)))
    }

    /// Calls `f` on every entry.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&mut T)) {
        self.exact.values_mut().for_each(&mut f);
        self.wildcards.values_mut().for_each(&mut f);
        self.any.iter_mut().for_each(f);
    }

    /// Every entry as (host as written, value), sorted by host, the host-less entry last as `*`.
    pub fn sorted(&self) -> Vec<(String, &T)> {
        let mut out: Vec<(String, &T)> = self
            .exact
            .iter()
            .map(|(h, v)| (h.to_string(), v))
            .chain(self.wildcards.iter().map(|(s, v)| (format!("*.{s}"), v)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(self.any.iter().map(|v| ("*".to_string(), v)));
        out
    }

    /// Number of named entries (exact and wildcard).
    pub fn named_len(&self) -> usize {
        self.exact.len() + self.wildcards.len()
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcards.is_empty() && self.any.is_none()
    }

    /// The same hosts with each value mapped.
    pub fn map<U>(&self, mut f: impl FnMut(HostKey<'_>, &T) -> U) -> HostMap<U> {
        HostMap {
            exact: self
                .exact
                .iter()
                .map(|(h, v)| (h.clone(), f(HostKey::Exact(h), v)))
                .collect(),
            wildcards: self
                .wildcards
                .iter()
                .map(|(s, v)| (s.clone(), f(HostKey::Wildcard(s), v)))
                .collect(),
            any: self.any.as_ref().map(|v| f(HostKey::Any, v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> HostMap<&'static str> {
        let mut m = HostMap::default();
        m.insert(&HostKey::Exact("a.example.com"), "exact");
        m.insert(&HostKey::Wildcard("example.com"), "wildcard");
        m
    }

    #[test]
    fn an_exact_name_beats_the_wildcard_which_covers_exactly_one_label() {
        let m = map();
        assert_eq!(m.get("a.example.com"), Some(&"exact"));
        assert_eq!(m.get("b.example.com"), Some(&"wildcard"));
        assert_eq!(m.get("example.com"), None);
        assert_eq!(m.get("x.b.example.com"), None);
        assert_eq!(m.get(".example.com"), None);
    }

    #[test]
    fn the_host_less_entry_takes_what_no_name_selects_but_not_for_named_lookups() {
        let mut m = map();
        m.insert(&HostKey::Any, "any");
        assert_eq!(m.get("other.test"), Some(&"any"));
        assert_eq!(m.get("127.0.0.1"), Some(&"any"));
        assert_eq!(m.get_named("other.test"), None);
        assert_eq!(m.get("b.example.com"), Some(&"wildcard"));
        assert_eq!(
            m.sorted()
                .iter()
                .map(|(h, _)| h.as_str())
                .collect::<Vec<_>>(),
            ["*.example.com", "a.example.com", "*"]
        );
        assert_eq!(m.named_len(), 2);
    }

    #[test]
    fn rule_hosts_are_exact_wildcard_or_absent_and_anything_else_is_refused() {
        assert_eq!(parse_rule_host(None), Ok(HostKey::Any));
        assert_eq!(parse_rule_host(Some("")), Ok(HostKey::Any));
        assert_eq!(
            parse_rule_host(Some("a.example.com")),
            Ok(HostKey::Exact("a.example.com"))
        );
        assert_eq!(
            parse_rule_host(Some("*.example.com")),
            Ok(HostKey::Wildcard("example.com"))
        );
        for bad in [
            "*", "*.", "a.*.com", "Foo.com", "a_b.com", "-a.com", "a..com", "*foo.com",
        ] {
            let err = parse_rule_host(Some(bad)).expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn normalizing_removes_port_and_trailing_dot_and_lowercases() {
        assert_eq!(normalize_host("Foo.Example.com.:8080"), "foo.example.com");
        assert_eq!(normalize_host("[::1]:443"), "[::1]");
        assert!(matches!(normalize_host("a.test"), Cow::Borrowed(_)));
    }
}
