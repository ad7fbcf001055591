//! Regex paths of one host (`sluice.dev/use-regex`), in precedence order, matched in one pass.
//!
//! A pattern is matched against the request's match path from its start (as if written
//! `^(?:pattern)`; `$` anchors the end), case-sensitive unless it says `(?i)`. Among the
//! patterns that match, the longest pattern wins, and at equal length the one added first (the
//! oldest Ingress's). All patterns of a host are compiled into one `RegexSet` when the snapshot
//! is built ([`RegexPaths::compile`]), so a request costs one pass over its path whatever the
//! number of patterns; each pattern's own `Regex` is kept for its capture groups.

use regex::{Regex, RegexSet};

/// The regex paths of one host, each leading to an `R`.
#[derive(Clone)]
pub struct RegexPaths<R> {
    /// In precedence order: longer pattern first, then the order added.
    rules: Vec<RegexRule<R>>,
    /// Every pattern of `rules`, in the same order; `None` until [`RegexPaths::compile`] (or
    /// when the set is too large to build: then each pattern is tried in turn).
    set: Option<RegexSet>,
}

#[derive(Clone)]
struct RegexRule<R> {
    pattern: Box<str>,
    regex: Regex,
    entry: R,
}

impl<R> Default for RegexPaths<R> {
    fn default() -> Self {
        RegexPaths {
            rules: Vec::new(),
            set: None,
        }
    }
}

impl<R: PartialEq> PartialEq for RegexPaths<R> {
    fn eq(&self, other: &Self) -> bool {
        self.rules.len() == other.rules.len()
            && self
                .rules
                .iter()
                .zip(&other.rules)
                .all(|(a, b)| a.pattern == b.pattern && a.entry == b.entry)
    }
}

impl<R: Eq> Eq for RegexPaths<R> {}

impl<R: std::fmt::Debug> std::fmt::Debug for RegexPaths<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.rules.iter().map(|r| (&r.pattern, &r.entry)))
            .finish()
    }
}

/// The pattern as it is compiled: anchored at the start of the path.
fn anchored(pattern: &str) -> String {
    format!("^(?:{pattern})")
}

/// Checks that `pattern` compiles as a regex path; the error says why not.
pub fn check(pattern: &str) -> Result<(), regex::Error> {
    Regex::new(&anchored(pattern)).map(|_| ())
}

impl<R> RegexPaths<R> {
    /// Adds a pattern unless it is present; returns whether it was added. Callers add the
    /// patterns of the oldest Ingress first, so it wins ties and keeps a contested pattern.
    pub fn insert(&mut self, pattern: &str, entry: R) -> Result<bool, regex::Error> {
        if self.rules.iter().any(|r| &*r.pattern == pattern) {
            return Ok(false);
        }
        let regex = Regex::new(&anchored(pattern))?;
        let at = self
            .rules
            .iter()
            .position(|r| r.pattern.len() < pattern.len())
            .unwrap_or(self.rules.len());
        self.rules.insert(
            at,
            RegexRule {
                pattern: pattern.into(),
                regex,
                entry,
            },
        );
        self.set = None;
        Ok(true)
    }

    /// Builds the set of all patterns, when it is not built yet.
    pub fn compile(&mut self) {
        if self.set.is_none() && !self.rules.is_empty() {
            // Each pattern compiled alone; only a size limit can refuse them together, and then
            // each is tried in turn.
            self.set = RegexSet::new(self.rules.iter().map(|r| anchored(&r.pattern))).ok();
        }
    }

    /// Whether [`RegexPaths::compile`] has nothing left to do.
    pub fn is_compiled(&self) -> bool {
        self.set.is_some() || self.rules.is_empty()
    }

    /// The first rule, in precedence order, that matches `path`, with its regex.
    pub fn find(&self, path: &str) -> Option<(&R, &Regex)> {
        let first = match &self.set {
            Some(set) => set.matches(path).iter().next()?,
            None => self.rules.iter().position(|r| r.regex.is_match(path))?,
        };
        self.rules.get(first).map(|r| (&r.entry, &r.regex))
    }

    /// The entry of exactly this pattern.
    pub fn get(&self, pattern: &str) -> Option<&R> {
        self.rules
            .iter()
            .find(|r| &*r.pattern == pattern)
            .map(|r| &r.entry)
    }

    /// The entry of exactly this pattern, to change it.
    pub fn get_mut(&mut self, pattern: &str) -> Option<&mut R> {
        self.rules
            .iter_mut()
            .find(|r| &*r.pattern == pattern)
            .map(|r| &mut r.entry)
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Every (pattern, entry), in precedence order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &R)> {
        self.rules.iter().map(|r| (&*r.pattern, &r.entry))
    }

    /// The same patterns (and compiled set) with each entry mapped.
    pub fn map<U>(&self, mut f: impl FnMut(&R) -> U) -> RegexPaths<U> {
        RegexPaths {
            rules: self
                .rules
                .iter()
                .map(|r| RegexRule {
                    pattern: r.pattern.clone(),
                    regex: r.regex.clone(),
                    entry: f(&r.entry),
                })
                .collect(),
            set: self.set.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(patterns: &[&str]) -> RegexPaths<usize> {
        let mut p = RegexPaths::default();
        for (i, pat) in patterns.iter().enumerate() {
            assert!(p.insert(pat, i).unwrap(), "{pat}");
        }
        p.compile();
        p
    }

    #[test]
    fn the_longest_matching_pattern_wins_and_ties_go_to_the_first_added() {
        // `/b/(x|y)` and `/api/v[0-9]+` are longer than `/ap.*`, which is longer than `/a.*`.
        let p = paths(&["/a.*", "/api/v[0-9]+", "/ap.*", "/b/(x|y)", "/b/.*"]);
        for (path, want) in [
            ("/api/v2/users", Some(1)),
            ("/api/x", Some(2)),
            ("/ax", Some(0)),
            ("/b/y", Some(3)),
            ("/b/z", Some(4)),
            ("/c", None),
        ] {
            assert_eq!(p.find(path).map(|(e, _)| *e), want, "{path}");
        }
    }

    #[test]
    fn patterns_match_from_the_start_of_the_path_and_dollar_anchors_the_end() {
        let p = paths(&["/exact$", "/pre"]);
        assert_eq!(p.find("/exact").map(|(e, _)| *e), Some(0));
        assert_eq!(p.find("/exact/more").map(|(e, _)| *e), None);
        assert_eq!(p.find("/prefix/x").map(|(e, _)| *e), Some(1));
        assert_eq!(p.find("/x/pre").map(|(e, _)| *e), None);
        let p = paths(&["/Case", "(?i)/any"]);
        assert_eq!(p.find("/case").map(|(e, _)| *e), None);
        assert_eq!(p.find("/ANY").map(|(e, _)| *e), Some(1));
    }

    #[test]
    fn an_uncompiled_set_finds_the_same_rule() {
        let mut p = RegexPaths::default();
        p.insert("/a.*", 0).unwrap();
        p.insert("/ab.*", 1).unwrap();
        assert!(!p.is_compiled());
        assert_eq!(p.find("/abc").map(|(e, _)| *e), Some(1));
        p.compile();
        assert_eq!(p.find("/abc").map(|(e, _)| *e), Some(1));
        assert!(p.insert("/a.*", 2) == Ok(false));
        assert!(p.insert("/a(", 3).is_err());
    }
}
