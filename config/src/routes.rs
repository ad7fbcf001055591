//! The route table and `find`, the one function that decides where a request goes.
//!
//! # How a request is matched
//!
//! 1. **Host.** The `Host` header (HTTP/1.1) or `:authority` (HTTP/2), with any port removed and
//!    ASCII case ignored, selects one host entry, the most specific that exists:
//!    an exact host (`foo.example.com`), else a wildcard covering exactly one more label
//!    (`*.example.com` matches `a.example.com`, never `example.com` or `a.b.example.com`), else the
//!    rules without a host. Only that entry's paths are considered: a request for an exact host
//!    never falls through to the wildcard or host-less rules (as with nginx server blocks and
//!    Envoy virtual hosts).
//! 2. **Path.** The request's path is first normalized ([`crate::path`]: escaped unreserved
//!    characters decoded, `.`/`..` resolved, slashes merged) and each segment's `;parameters`
//!    removed; rule paths were normalized the same way when the snapshot was built.
//!    Among the paths of that host, merged across every served Ingress, the longest
//!    match wins, and at equal length `Exact` beats `Prefix`. `Exact` is the whole path,
//!    case-sensitive. `Prefix` (and `ImplementationSpecific`) compares path elements split on `/`:
//!    `/foo` matches `/foo`, `/foo/` and `/foo/bar`, never `/foobar`; a trailing slash in the rule
//!    is ignored and `/` matches every path. The query string never takes part.
//!    Regex paths (`sluice.dev/use-regex`, [`crate::regex_paths`]) come between the two: `Exact`
//!    first, then the regex paths by decreasing pattern length (ties: the oldest Ingress), the
//!    first that matches from the start of the path wins, then `Prefix` by longest match.
//! 3. **Default.** When no path matches, the `spec.defaultBackend` of the oldest served Ingress
//!    that has one takes the request; without one, there is no route (404).
//!
//! Lookup cost does not grow with the number of hosts or Ingresses: one hash lookup per host
//! candidate (at most three), then one hash lookup per path element of the request, bounded by
//! the depth of the longest prefix rule of that host. A host with regex paths adds one pass of
//! its `RegexSet` over the path; a host without them, one branch.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) use crate::hostmap::is_dns_label;
use crate::hostmap::HostMap;
pub use crate::hostmap::{normalize_host, parse_rule_host, HostKey};
use crate::regex_paths::RegexPaths;

/// Index of a backend target in [`crate::build::Snapshot::targets`].
pub type TargetId = usize;

/// What a matched rule leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteEntry {
    /// The backend that serves the request.
    pub target: TargetId,
    /// Index of the Ingress that owns the rule in [`crate::build::Snapshot::ingresses`].
    pub ingress: usize,
    /// Index of the rule's canary in [`crate::build::Snapshot::canaries`], if it has one.
    pub canary: Option<usize>,
}

/// The paths of one host entry, each leading to an `R`: a [`RouteEntry`] in the snapshot, the
/// proxy's resolved route once published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoutes<R = RouteEntry> {
    exact: HashMap<Box<str>, R>,
    /// Normalised prefixes (no trailing slash, never `/`).
    prefix: HashMap<Box<str>, R>,
    /// The `/` prefix rule, which matches every path.
    root: Option<R>,
    /// Length of the longest key in `prefix`: longer request prefixes are not looked up.
    max_prefix_len: usize,
    /// Regex paths (`sluice.dev/use-regex`), absent for the hosts that have none.
    regex: Option<Box<RegexPaths<R>>>,
}

impl<R> Default for HostRoutes<R> {
    fn default() -> Self {
        HostRoutes {
            exact: HashMap::new(),
            prefix: HashMap::new(),
            root: None,
            max_prefix_len: 0,
            regex: None,
        }
    }
}

/// The kind of path rule, with `ImplementationSpecific` already folded into `Prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MatchKind {
    Exact,
    Prefix,
    /// An `ImplementationSpecific` path of an Ingress with `sluice.dev/use-regex: "true"`.
    Regex,
}

/// The rule that serves a path, and what of the path it matched.
#[derive(Debug, Clone, Copy)]
pub struct PathMatch<'a, R> {
    pub route: &'a R,
    /// Bytes of the path the rule covered: the whole path for `Exact`, the rule's prefix for
    /// `Prefix` (no trailing slash; 0 for `/` and the default backend). 0 for a regex path,
    /// whose match `regex` tells.
    pub len: usize,
    /// The regex of a regex path, for its capture groups.
    pub regex: Option<&'a regex::Regex>,
}

/// Removes the trailing slashes of a Prefix rule: `/foo/` and `/foo` are the same rule, `/` is
/// the root.
pub fn normalize_prefix(path: &str) -> &str {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/"
    } else {
        trimmed
    }
}

impl<R> HostRoutes<R> {
    /// Adds a rule unless the same (path, kind) is present; returns whether it was added.
    /// Callers add rules oldest Ingress first, so the oldest keeps a contested rule.
    pub fn insert(&mut self, path: &str, kind: MatchKind, entry: R) -> bool {
        use std::collections::hash_map::Entry;
        let slot = match kind {
            // Snapshot building checks the pattern first: one that does not compile is not added.
            MatchKind::Regex => {
                let regex = self.regex.get_or_insert_with(Box::default);
                return regex.insert(path, entry).unwrap_or(false);
            }
            MatchKind::Exact => self.exact.entry(path.into()),
            MatchKind::Prefix => {
                let p = normalize_prefix(path);
                if p == "/" {
                    if self.root.is_some() {
                        return false;
                    }
                    self.root = Some(entry);
                    return true;
                }
                self.max_prefix_len = self.max_prefix_len.max(p.len());
                self.prefix.entry(p.into())
            }
        };
        match slot {
            Entry::Occupied(_) => false,
            Entry::Vacant(v) => {
                v.insert(entry);
                true
            }
        }
    }

    /// The rule that serves `path` (no query string), per the precedence in the module docs.
    pub fn find(&self, path: &str) -> Option<&R> {
        self.find_match(path).map(|m| m.route)
    }

    /// [`HostRoutes::find`], with the length of the path that the rule matched: the whole path
    /// for `Exact`, the rule's prefix for `Prefix` (no trailing slash; 0 for `/`). A prefix
    /// rewrite replaces that much of the path.
    pub fn find_match(&self, path: &str) -> Option<PathMatch<'_, R>> {
        let found = |route, len| PathMatch {
            route,
            len,
            regex: None,
        };
        // An Exact match covers the whole path, so it is at least as long as any Prefix match and
        // wins ties: it can be checked first.
        if let Some(e) = self.exact.get(path) {
            return Some(found(e, path.len()));
        }
        // Then regex paths, before any prefix; a host without them pays one branch.
        if let Some((route, regex)) = self.regex.as_ref().and_then(|r| r.find(path)) {
            return Some(PathMatch {
                route,
                len: 0,
                regex: Some(regex),
            });
        }
        if !self.prefix.is_empty() {
            // Element-wise: try the path without trailing slashes, then cut one element at a time.
            let mut candidate = path.trim_end_matches('/');
            while !candidate.is_empty() {
                if candidate.len() <= self.max_prefix_len {
                    if let Some(e) = self.prefix.get(candidate) {
                        return Some(found(e, candidate.len()));
                    }
                }
                match candidate.rfind('/') {
                    Some(i) => candidate = &candidate[..i],
                    None => break,
                }
            }
        }
        self.root.as_ref().map(|e| found(e, 0))
    }

    /// Builds the set of this host's regex paths, when it has any not built yet.
    pub fn compile_regex_paths(&mut self) {
        if let Some(r) = &mut self.regex {
            r.compile();
        }
    }

    /// Whether [`HostRoutes::compile_regex_paths`] has nothing left to do.
    pub fn regex_paths_compiled(&self) -> bool {
        self.regex.as_ref().is_none_or(|r| r.is_compiled())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.exact.len()
            + self.prefix.len()
            + usize::from(self.root.is_some())
            + self.regex.as_ref().map_or(0, |r| r.len())
    }

    /// The entry of exactly this rule (a Prefix path as [`normalize_prefix`] leaves it).
    pub fn get(&self, path: &str, kind: MatchKind) -> Option<&R> {
        match kind {
            MatchKind::Exact => self.exact.get(path),
            MatchKind::Prefix if path == "/" => self.root.as_ref(),
            MatchKind::Prefix => self.prefix.get(path),
            MatchKind::Regex => self.regex.as_ref()?.get(path),
        }
    }

    /// The entry of exactly this rule, to change it.
    pub fn get_mut(&mut self, path: &str, kind: MatchKind) -> Option<&mut R> {
        match kind {
            MatchKind::Exact => self.exact.get_mut(path),
            MatchKind::Prefix if path == "/" => self.root.as_mut(),
            MatchKind::Prefix => self.prefix.get_mut(path),
            MatchKind::Regex => self.regex.as_mut()?.get_mut(path),
        }
    }

    /// Every rule of this host as (path, kind, entry), sorted, for reports and tests.
    pub fn rules(&self) -> Vec<(String, MatchKind, R)>
    where
        R: Clone,
    {
        let mut out: Vec<_> = self
            .iter()
            .map(|(p, k, e)| (p.to_string(), k, e.clone()))
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Every rule of this host as (path, kind, entry), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, MatchKind, &R)> {
        self.exact
            .iter()
            .map(|(p, e)| (&**p, MatchKind::Exact, e))
            .chain(
                self.prefix
                    .iter()
                    .map(|(p, e)| (&**p, MatchKind::Prefix, e)),
            )
            .chain(self.root.iter().map(|e| ("/", MatchKind::Prefix, e)))
            .chain(
                self.regex
                    .iter()
                    .flat_map(|r| r.iter().map(|(p, e)| (p, MatchKind::Regex, e))),
            )
    }

    /// The same rules with each entry mapped.
    pub fn map<U>(&self, mut f: impl FnMut(&R) -> U) -> HostRoutes<U> {
        HostRoutes {
            exact: self.exact.iter().map(|(p, e)| (p.clone(), f(e))).collect(),
            prefix: self.prefix.iter().map(|(p, e)| (p.clone(), f(e))).collect(),
            root: self.root.as_ref().map(&mut f),
            max_prefix_len: self.max_prefix_len,
            regex: self.regex.as_ref().map(|r| Box::new(r.map(&mut f))),
        }
    }
}

/// Where each host's rules are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable<R = RouteEntry> {
    /// One shared entry per host: a table that changes some hosts can share the others with
    /// the one before it.
    hosts: HostMap<Arc<HostRoutes<R>>>,
    default_backend: Option<R>,
}

impl<R> Default for RouteTable<R> {
    fn default() -> Self {
        RouteTable {
            hosts: HostMap::default(),
            default_backend: None,
        }
    }
}

impl<R: Clone> RouteTable<R> {
    /// The path rules of a host key, created when absent (copied first if shared).
    pub fn host_mut(&mut self, key: HostKey<'_>) -> &mut HostRoutes<R> {
        Arc::make_mut(self.hosts.entry(&key))
    }

    /// Builds the regex set of every host whose regex paths changed since it was last built:
    /// once per snapshot, after its rules are added, so no request compiles anything.
    pub fn compile_regex_paths(&mut self) {
        self.hosts.for_each_mut(|host| {
            if !host.regex_paths_compiled() {
                Arc::make_mut(host).compile_regex_paths();
            }
        });
    }
}

impl<R> RouteTable<R> {
    /// A table with these hosts and default backend.
    pub fn from_parts(hosts: HostMap<Arc<HostRoutes<R>>>, default_backend: Option<R>) -> Self {
        RouteTable {
            hosts,
            default_backend,
        }
    }

    /// Sets the default backend unless one is set; returns whether it was set.
    pub fn set_default_backend(&mut self, entry: R) -> bool {
        if self.default_backend.is_some() {
            return false;
        }
        self.default_backend = Some(entry);
        true
    }

    pub fn default_backend(&self) -> Option<&R> {
        self.default_backend.as_ref()
    }

    /// The host entry that a request's host selects (see the module docs); the host is
    /// normalized first ([`normalize_host`]).
    pub fn host_routes(&self, host: &str) -> Option<&HostRoutes<R>> {
        self.hosts.get(&normalize_host(host)).map(|h| &**h)
    }

    /// The route for a request's host header value and match path (no query string; the
    /// normalized path without parameters, [`crate::path::match_path`]).
    pub fn find(&self, host: &str, path: &str) -> Option<&R> {
        self.find_normalized(&normalize_host(host), path)
    }

    /// [`RouteTable::find`] for a host already normalized, as [`parse_request_host`] returns
    /// it once per request.
    pub fn find_normalized(&self, host: &str, path: &str) -> Option<&R> {
        self.find_match(host, path).map(|m| m.route)
    }

    /// [`RouteTable::find_normalized`] with what of the path the rule matched
    /// ([`HostRoutes::find_match`]; nothing for the default backend).
    pub fn find_match(&self, host: &str, path: &str) -> Option<PathMatch<'_, R>> {
        self.hosts
            .get(host)
            .and_then(|h| h.find_match(path))
            .or(self.default_backend.as_ref().map(|route| PathMatch {
                route,
                len: 0,
                regex: None,
            }))
    }

    /// Every host entry as (written host, routes), sorted by host, the rules without a host
    /// last as `*`, for reports and tests.
    pub fn hosts(&self) -> Vec<(String, &HostRoutes<R>)> {
        self.hosts
            .sorted()
            .into_iter()
            .map(|(h, r)| (h, &**r))
            .collect()
    }

    /// Number of distinct host entries (exact and wildcard).
    pub fn host_count(&self) -> usize {
        self.hosts.named_len()
    }

    /// The shared host entries.
    pub fn host_map(&self) -> &HostMap<Arc<HostRoutes<R>>> {
        &self.hosts
    }
}

/// A request's host (`Host` header or URI authority) that cannot be routed: answered with 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidHost;

impl std::fmt::Display for InvalidHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the host is not a DNS name or an IP literal with an optional port")
    }
}

/// Validates a request's host and normalizes it as [`normalize_host`] does (port and trailing
/// dot removed, lowercase), borrowing when nothing changes. Accepted: a DNS name (labels of
/// 1 to 63 letters, digits, `-` or `_`, at most 253 characters in all; `_` because real
/// clusters have such names and nginx accepts them), an IPv4 literal, or an IPv6 literal in
/// brackets, each with an optional `:port` of 1 to 5 digits. Everything else (`a/../x`,
/// `<script>`, spaces, empty labels, a bare `:`) is refused. An empty host is valid: it selects
/// the rules without a host.
pub fn parse_request_host(raw: &str) -> Result<Cow<'_, str>, InvalidHost> {
    if raw.is_empty() {
        return Ok(Cow::Borrowed(raw));
    }
    if raw.starts_with('[') {
        return parse_ip6_host(raw);
    }
    // One pass over a name: its characters, label lengths, case, and where a port starts.
    let bytes = raw.as_bytes();
    let (mut label, mut upper, mut end) = (0usize, false, bytes.len());
    for (i, b) in bytes.iter().enumerate() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => label += 1,
            b'A'..=b'Z' => (label, upper) = (label + 1, true),
            b'.' if label > 0 => label = 0,
            b':' => {
                end = i;
                break;
            }
            _ => return Err(InvalidHost),
        }
        if label > 63 {
            return Err(InvalidHost);
        }
    }
    let name = &raw[..end];
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !valid_port(&raw[end..]) {
        return Err(InvalidHost);
    }
    Ok(if upper {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    })
}

/// `:port` with 1 to 5 digits, or nothing.
fn valid_port(text: &str) -> bool {
    match text.strip_prefix(':') {
        None => text.is_empty(),
        Some(p) => !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()),
    }
}

/// `[IPv6]` with an optional port.
fn parse_ip6_host(raw: &str) -> Result<Cow<'_, str>, InvalidHost> {
    let rest = raw.strip_prefix('[').ok_or(InvalidHost)?;
    let (ip, after) = rest.split_once(']').ok_or(InvalidHost)?;
    ip.parse::<std::net::Ipv6Addr>().map_err(|_| InvalidHost)?;
    if !valid_port(after) {
        return Err(InvalidHost);
    }
    Ok(normalize_host(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: TargetId) -> RouteEntry {
        RouteEntry {
            target,
            ingress: 0,
            canary: None,
        }
    }

    fn host(rules: &[(&str, MatchKind, TargetId)]) -> HostRoutes {
        let mut h = HostRoutes::default();
        for (p, k, t) in rules {
            assert!(h.insert(p, *k, entry(*t)));
        }
        h
    }

    use MatchKind::{Exact, Prefix};

    #[test]
    fn prefix_matches_whole_path_elements_only() {
        let h = host(&[("/foo", Prefix, 1)]);
        for (path, want) in [
            ("/foo", Some(1)),
            ("/foo/", Some(1)),
            ("/foo/bar", Some(1)),
            ("/foo/bar/baz/", Some(1)),
            ("/foobar", None),
            ("/fo", None),
            ("/", None),
            ("/Foo", None),
            ("/bar/foo", None),
        ] {
            assert_eq!(h.find(path).map(|e| e.target), want, "{path}");
        }
    }

    #[test]
    fn a_trailing_slash_in_a_prefix_rule_is_ignored() {
        let h = host(&[("/foo/", Prefix, 1)]);
        assert_eq!(h.find("/foo").map(|e| e.target), Some(1));
        assert_eq!(h.find("/foo/x").map(|e| e.target), Some(1));
        assert_eq!(h.find("/foox").map(|e| e.target), None);
        // `/foo` and `/foo/` are the same Prefix rule, so the second is a duplicate.
        let mut h = host(&[("/foo/", Prefix, 1)]);
        assert!(!h.insert("/foo", Prefix, entry(2)));
    }

    #[test]
    fn root_prefix_matches_everything() {
        let h = host(&[("/", Prefix, 1)]);
        for path in ["/", "/a", "/a/b/c", "//x"] {
            assert_eq!(h.find(path).map(|e| e.target), Some(1), "{path}");
        }
    }

    #[test]
    fn exact_is_the_whole_path_and_case_sensitive() {
        let h = host(&[("/foo", Exact, 1)]);
        for (path, want) in [
            ("/foo", Some(1)),
            ("/foo/", None),
            ("/foo/bar", None),
            ("/FOO", None),
            ("/fo", None),
        ] {
            assert_eq!(h.find(path).map(|e| e.target), want, "{path}");
        }
    }

    #[test]
    fn the_longest_match_wins_and_exact_wins_ties() {
        let h = host(&[
            ("/", Prefix, 1),
            ("/a", Prefix, 2),
            ("/a/b", Prefix, 3),
            ("/a/b", Exact, 4),
            ("/a/b/c", Exact, 5),
        ]);
        for (path, want) in [
            ("/", 1),
            ("/x", 1),
            ("/a", 2),
            ("/a/", 2),
            ("/a/x", 2),
            ("/a/b", 4),
            ("/a/b/", 3),
            ("/a/b/c", 5),
            ("/a/b/c/", 3),
            ("/a/b/cd", 3),
            ("/ab", 1),
        ] {
            assert_eq!(h.find(path).map(|e| e.target), Some(want), "{path}");
        }
    }

    #[test]
    fn a_match_says_how_much_of_the_path_the_rule_covered() {
        let h = host(&[("/", Prefix, 1), ("/api/", Prefix, 2), ("/x", Exact, 3)]);
        for (path, want) in [
            ("/api", (2, 4)),
            ("/api/", (2, 4)),
            ("/api/users", (2, 4)),
            ("/apix", (1, 0)),
            ("/x", (3, 2)),
        ] {
            assert_eq!(
                h.find_match(path).map(|m| (m.route.target, m.len)),
                Some(want),
                "{path}"
            );
        }
    }

    #[test]
    fn a_longer_prefix_beats_a_shorter_exact_that_does_not_match() {
        let h = host(&[("/a", Exact, 1), ("/a/b", Prefix, 2)]);
        assert_eq!(h.find("/a/b/c").map(|e| e.target), Some(2));
        assert_eq!(h.find("/a").map(|e| e.target), Some(1));
    }

    #[test]
    fn a_duplicate_rule_keeps_the_first() {
        let mut h = host(&[("/a", Exact, 1)]);
        assert!(!h.insert("/a", Exact, entry(2)));
        assert!(h.insert("/a", Prefix, entry(3)));
        assert_eq!(h.find("/a").map(|e| e.target), Some(1));
    }

    fn table() -> RouteTable {
        let mut t = RouteTable::default();
        t.host_mut(HostKey::Exact("foo.example.com"))
            .insert("/", Prefix, entry(1));
        t.host_mut(HostKey::Wildcard("example.com"))
            .insert("/", Prefix, entry(2));
        t.host_mut(HostKey::Any).insert("/", Prefix, entry(3));
        t.host_mut(HostKey::Exact("only-api.example.com"))
            .insert("/api", Prefix, entry(4));
        t
    }

    #[test]
    fn exact_host_beats_wildcard_beats_no_host() {
        let t = table();
        for (host, want) in [
            ("foo.example.com", Some(1)),
            ("FOO.Example.COM", Some(1)),
            ("foo.example.com:8080", Some(1)),
            ("foo.example.com.", Some(1)),
            ("bar.example.com", Some(2)),
            ("example.com", Some(3)),
            ("a.b.example.com", Some(3)),
            ("other.org", Some(3)),
            ("127.0.0.1:80", Some(3)),
            ("[::1]:80", Some(3)),
            ("", Some(3)),
        ] {
            assert_eq!(t.find(host, "/x").map(|e| e.target), want, "{host}");
        }
    }

    #[test]
    fn an_exact_host_without_a_matching_path_does_not_fall_through() {
        let t = table();
        assert_eq!(
            t.find("only-api.example.com", "/api/v1").map(|e| e.target),
            Some(4)
        );
        assert_eq!(t.find("only-api.example.com", "/"), None);
    }

    #[test]
    fn the_default_backend_catches_what_no_rule_matches() {
        let mut t = table();
        assert!(t.set_default_backend(entry(9)));
        assert!(!t.set_default_backend(entry(10)));
        assert_eq!(
            t.find("only-api.example.com", "/").map(|e| e.target),
            Some(9)
        );
        assert_eq!(t.find("foo.example.com", "/").map(|e| e.target), Some(1));
    }

    #[test]
    fn without_rules_or_default_there_is_no_route() {
        assert_eq!(RouteTable::<RouteEntry>::default().find("a", "/"), None);
    }

    #[test]
    fn normalizing_a_plain_host_allocates_nothing() {
        assert!(matches!(
            normalize_host("foo.example.com:80"),
            Cow::Borrowed("foo.example.com")
        ));
        assert_eq!(normalize_host("Foo.COM"), "foo.com");
        assert_eq!(normalize_host("[::1]:8443"), "[::1]");
        assert_eq!(normalize_host("[::1]"), "[::1]");
    }

    #[test]
    fn request_hosts_that_are_not_names_or_ip_literals_are_refused() {
        for (raw, want) in [
            ("app.test", "app.test"),
            ("App.Test:8080", "app.test"),
            ("app.test.", "app.test"),
            ("my_svc.internal", "my_svc.internal"),
            ("127.0.0.1:80", "127.0.0.1"),
            ("[::1]:8443", "[::1]"),
            ("[::1]", "[::1]"),
            ("localhost", "localhost"),
            ("APP.test.:8080", "app.test"),
            ("", ""),
        ] {
            assert_eq!(parse_request_host(raw).as_deref(), Ok(want), "{raw}");
        }
        for bad in [
            "a/../x",
            "<script>",
            "a b",
            " app.test",
            "a..b",
            ".a",
            "app.test:",
            "app.test:80x",
            "app.test:123456",
            "a:b:c",
            "[::1",
            "[zz]",
            "[::1]x",
            "a@b",
            "a%2eb",
            ".",
            "a.b..",
            &"a".repeat(64),
            "a.test:",
        ] {
            assert_eq!(parse_request_host(bad), Err(InvalidHost), "{bad}");
        }
        assert!(matches!(
            parse_request_host("app.test:80"),
            Ok(Cow::Borrowed("app.test"))
        ));
    }
}
