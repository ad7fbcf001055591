//! Request paths as routing sees them: normalized once, before any rule is matched.
//!
//! A backend that cleans up a path itself (most application servers and frameworks do) must
//! never be handed a path that routing read differently: `/public/../admin` routed by its raw
//! text reaches the `/` rule's backend, which then serves `/admin` without the guards of the
//! `/admin` rule. So routing reads the path the way Envoy's `normalize_path` and
//! `merge_slashes` leave it, and the upstream receives that same path:
//!
//! 1. Percent-encoded unreserved characters (RFC 3986 `ALPHA / DIGIT / - . _ ~`) are decoded:
//!    `/%61dmin` is `/admin`, `/%2e%2e/` is `/../`. Every other escape stays as written, in
//!    particular `%2F` (`/`) and `%5C` (`\`): they are data inside a segment, never separators.
//! 2. Repeated slashes are merged: `//admin///x` is `/admin/x`.
//! 3. `.` segments are removed and `..` segments remove the segment before them (RFC 3986
//!    remove_dot_segments); a `..` with nothing left to remove (above the root) is refused
//!    ([`PathError::AboveRoot`], answered with 400). A segment that is a dot segment once its
//!    path parameters are removed (`..;x`) counts as one, as Tomcat and Jetty read it.
//! 4. A trailing slash is kept (`/a/` stays `/a/`; `/a/.` and `/a/b/..` end in `/`).
//!
//! Path parameters (`;jsessionid=...` after a segment) are kept in the normalized path, which
//! is what the upstream receives; [`match_path`] removes them for `Exact` and `Prefix` matching,
//! so a rule on `/admin` also governs `/admin;x` (application servers strip them before
//! routing, and an edge rule must not be bypassed by them).
//!
//! A path that is already normal (the common case) is returned borrowed: nothing is allocated.

use std::borrow::Cow;

/// Why a request path cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `..` segment climbs above the root (`/../etc`).
    AboveRoot,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathError::AboveRoot => f.write_str("a `..` segment climbs above the root"),
        }
    }
}

/// The value of one hex digit.
fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 unreserved characters, the ones whose escapes mean the same as the character.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The unreserved character that the escape starting at `bytes[i]` (a `%`) encodes, if any.
fn unreserved_escape(bytes: &[u8], i: usize) -> Option<u8> {
    let (h, l) = (hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?);
    let c = h * 16 + l;
    is_unreserved(c).then_some(c)
}

/// The part of a segment that decides whether it is a dot segment: before any `;`.
fn segment_name(segment: &str) -> &str {
    segment.split_once(';').map_or(segment, |(name, _)| name)
}

/// Whether normalizing changes nothing: no escape of an unreserved character, no empty segment
/// before the last, no dot segment. One pass over the bytes, as every request takes it.
fn is_normal(path: &str) -> bool {
    let bytes = path.as_bytes();
    // Most paths have no `%`, `;`, `//` or `/.` at all: one quick pass settles them.
    let mut prev = 0u8;
    let suspect = bytes.iter().any(|&b| {
        let hit = b == b'%' || b == b';' || (prev == b'/' && (b == b'/' || b == b'.'));
        prev = b;
        hit
    });
    if !suspect {
        return true;
    }
    // The current segment starts at `start`; its name (before any `;`) ends at `name_end`.
    let (mut start, mut name_end) = (1, None);
    for i in 1..=bytes.len() {
        match bytes.get(i) {
            Some(b'%') if unreserved_escape(bytes, i).is_some() => return false,
            Some(b';') if name_end.is_none() => name_end = Some(i),
            Some(b'/') | None => {
                let name = &bytes[start..name_end.unwrap_or(i)];
                let empty_before_last = i == start && i < bytes.len();
                if empty_before_last || name == b"." || name == b".." {
                    return false;
                }
                (start, name_end) = (i + 1, None);
            }
            _ => {}
        }
    }
    true
}

/// Decodes the escapes of unreserved characters in `segment` onto `out`.
fn push_decoded(out: &mut String, segment: &str) {
    let bytes = segment.as_bytes();
    let mut i = 0;
    let mut plain = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(c) = unreserved_escape(bytes, i) {
                out.push_str(&segment[plain..i]);
                out.push(char::from(c));
                i += 3;
                plain = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&segment[plain..]);
}

/// Normalizes a request path (without its query), as the module docs describe. A path that
/// does not start with `/` (`*` of `OPTIONS *`) is returned as it is.
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') || is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    // Segments kept so far, as byte ranges of `out` (each starting at its `/`).
    let mut out = String::with_capacity(path.len());
    let mut starts: Vec<usize> = Vec::new();
    let mut decoded = String::new();
    let mut trailing_slash = false;
    let mut segments = path[1..].split('/').peekable();
    while let Some(raw) = segments.next() {
        let last = segments.peek().is_none();
        decoded.clear();
        push_decoded(&mut decoded, raw);
        match segment_name(&decoded) {
            _ if decoded.is_empty() => trailing_slash = last,
            "." => trailing_slash = true,
            ".." => {
                let start = starts.pop().ok_or(PathError::AboveRoot)?;
                out.truncate(start);
                trailing_slash = true;
            }
            _ => {
                starts.push(out.len());
                out.push('/');
                out.push_str(&decoded);
                trailing_slash = false;
            }
        }
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(Cow::Owned(out))
}

/// The path that `Exact` and `Prefix` rules are matched against: a normalized path with each
/// segment's parameters (`;...` up to the next `/`) removed. Borrowed when it has none.
pub fn match_path(normalized: &str) -> Cow<'_, str> {
    if !normalized.starts_with('/') || !normalized.contains(';') {
        return Cow::Borrowed(normalized);
    }
    // A segment that is parameters alone (`/a/;x/b`) leaves nothing to match: it is dropped,
    // as an application server that strips parameters and merges slashes would.
    let mut out = String::with_capacity(normalized.len());
    let mut segments = normalized[1..].split('/').peekable();
    while let Some(segment) = segments.next() {
        let name = segment_name(segment);
        if name.is_empty() && segments.peek().is_some() {
            continue;
        }
        out.push('/');
        out.push_str(name);
    }
    Cow::Owned(out)
}

/// A rule's path as requests are matched against it: normalized, then without path
/// parameters. `Err` when it climbs above the root.
pub fn rule_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    Ok(match normalize_path(path)? {
        Cow::Borrowed(p) => match_path(p),
        Cow::Owned(p) => Cow::Owned(match_path(&p).into_owned()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_as_envoy_normalize_path_and_merge_slashes_do() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b/"),
            ("//admin/x", "/admin/x"),
            ("/a///b//", "/a/b/"),
            ("/./admin/x", "/admin/x"),
            ("/public/../admin/x", "/admin/x"),
            ("/x/%2e%2e/admin/x", "/admin/x"),
            ("/x/%2E%2E/admin", "/admin"),
            ("/%61dmin/x", "/admin/x"),
            ("/%7Euser/%2D%5F", "/~user/-_"),
            ("/a/.", "/a/"),
            ("/a/b/..", "/a/"),
            ("/a/..", "/"),
            ("/..%2F/x", "/..%2F/x"),
            ("/a%2Fb/../c", "/c"),
            ("/a%2F..%2Fb", "/a%2F..%2Fb"),
            ("/a%5C..%5Cadmin", "/a%5C..%5Cadmin"),
            ("/a%20b/%3F", "/a%20b/%3F"),
            ("/bad%zz/%4", "/bad%zz/%4"),
            ("/a/..;x/admin", "/admin"),
            ("/admin;jsessionid=1", "/admin;jsessionid=1"),
            ("/a;p=1//b", "/a;p=1/b"),
            ("/a/;x/b", "/a/;x/b"),
            ("/a/.;x/b", "/a/b"),
            ("*", "*"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn a_dot_dot_above_the_root_is_refused() {
        for raw in ["/..", "/../x", "/a/../../x", "/%2e%2e/x", "//..", "/..;a/x"] {
            assert_eq!(normalize_path(raw), Err(PathError::AboveRoot), "{raw}");
        }
    }

    #[test]
    fn an_already_normal_path_is_borrowed() {
        for raw in ["/", "/api/v1/users", "/a/b/", "/a%2Fb", "/x;p=1", "/a%20b"] {
            assert!(
                matches!(normalize_path(raw), Ok(Cow::Borrowed(p)) if p == raw),
                "{raw}"
            );
        }
        assert!(matches!(match_path("/api/v1"), Cow::Borrowed("/api/v1")));
    }

    #[test]
    fn path_parameters_take_no_part_in_matching() {
        for (normalized, want) in [
            ("/admin;jsessionid=1", "/admin"),
            ("/admin;x/y;z=1/", "/admin/y/"),
            ("/;x", "/"),
            ("/a/;x/b", "/a/b"),
            ("/a/;x", "/a/"),
            ("/a", "/a"),
        ] {
            assert_eq!(match_path(normalized), want, "{normalized}");
        }
    }

    #[test]
    fn rule_paths_are_normalized_like_request_paths() {
        assert_eq!(rule_path("/api").as_deref(), Ok("/api"));
        assert_eq!(rule_path("//api/./v1").as_deref(), Ok("/api/v1"));
        assert_eq!(rule_path("/%61pi;x").as_deref(), Ok("/api"));
        assert_eq!(rule_path("/../x"), Err(PathError::AboveRoot));
    }
}
