//! Choosing among the certificates that cover a name ([`choose`]), and which names a
//! certificate covers ([`covers`]).
//!
//! # Choosing among the candidates of a name
//!
//! 1. Certificates that are expired or not yet valid are skipped.
//! 2. The best ECDSA and the best RSA certificate are both served: the TLS library gives ECDSA to
//!    clients that offer it (signature algorithms in TLS 1.3, cipher suites in TLS 1.2) and RSA to
//!    the others.
//! 3. Within one key type: the stronger signature hash first, then the larger key, then the later
//!    expiry, then the oldest Ingress's Secret.
//!
//! When no candidate is usable, the name gets the default certificate.
//!
//! # Certificate names
//!
//! A certificate serves a name only if its subject alternative names (or, without any, its
//! common name) cover it ([`covers`]); the proxy skips and reports one that does not.

use crate::hostmap::normalize_host;

/// The key algorithm of a certificate, which decides which clients can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyAlgorithm {
    Ecdsa,
    Rsa,
    /// Ed25519, Ed448 and the rest: served only when nothing else is usable.
    Other,
}

/// What certificate selection compares, extracted from a parsed certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertFacts {
    pub key: KeyAlgorithm,
    /// Key size in bits (RSA modulus, EC curve size).
    pub key_bits: u32,
    /// Security of the signature's hash, in bits (SHA-1 63, SHA-256 128, SHA-384 192, ...).
    pub signature_bits: u32,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

impl CertFacts {
    /// Whether the certificate is valid at `now` (Unix seconds).
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Which candidates to serve: at most one per key algorithm, by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Choice {
    pub ecdsa: Option<usize>,
    pub rsa: Option<usize>,
    pub other: Option<usize>,
}

impl Choice {
    pub fn is_empty(&self) -> bool {
        self.ecdsa.is_none() && self.rsa.is_none() && self.other.is_none()
    }

    /// The chosen indices, ECDSA first.
    pub fn indices(&self) -> impl Iterator<Item = usize> {
        [self.ecdsa, self.rsa, self.other].into_iter().flatten()
    }
}

/// The preference order within one key algorithm, best first: stronger signature hash, larger
/// key, later expiry. Equal facts keep the candidates' order (oldest Ingress first).
pub fn preference(a: &CertFacts, b: &CertFacts) -> std::cmp::Ordering {
    (b.signature_bits, b.key_bits, b.not_after).cmp(&(a.signature_bits, a.key_bits, a.not_after))
}

/// Chooses among the candidates of one name at `now` (Unix seconds): see the module docs.
pub fn choose(candidates: &[CertFacts], now: i64) -> Choice {
    let mut choice = Choice::default();
    for (i, c) in candidates.iter().enumerate() {
        if !c.is_valid_at(now) {
            continue;
        }
        let slot = match c.key {
            KeyAlgorithm::Ecdsa => &mut choice.ecdsa,
            KeyAlgorithm::Rsa => &mut choice.rsa,
            KeyAlgorithm::Other => &mut choice.other,
        };
        match slot {
            Some(best) if preference(&candidates[*best], c).is_le() => {}
            _ => *slot = Some(i),
        }
    }
    if choice.ecdsa.is_some() || choice.rsa.is_some() {
        choice.other = None;
    }
    choice
}

/// Whether a certificate whose names are `cert_names` (its DNS and IP subject alternative names,
/// or its common name when it has none) covers `name` as written in `spec.tls`: equal names
/// (case and a trailing dot ignored), or a certificate wildcard `*.example.com` for one more
/// label (`a.example.com`) or for the same wildcard. Partial wildcards (`a*.example.com`) cover
/// nothing, as in RFC 6125.
pub fn covers<S: AsRef<str>>(cert_names: &[S], name: &str) -> bool {
    let name = normalize_host(name);
    cert_names.iter().any(|c| {
        let c = normalize_host(c.as_ref());
        if *c == *name {
            return true;
        }
        let Some(suffix) = c.strip_prefix("*.") else {
            return false;
        };
        if suffix.contains('*') || !suffix.contains('.') {
            return false;
        }
        match name.split_once('.') {
            Some((label, rest)) => !label.is_empty() && !label.contains('*') && rest == suffix,
            None => false,
        }
    })
}
