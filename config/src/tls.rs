//! TLS policy: which certificates serve which names, per-host client authentication, redirects,
//! and the order in which certificates covering the same name are chosen.
//!
//! Everything here is decided from Ingress-shaped inputs alone; the proxy parses the certificate
//! material and applies the policy during handshakes.
//!
//! # Which Secret serves a name
//!
//! `spec.tls[].hosts` decides: a Secret serves exactly the names its entry lists (an entry without
//! `hosts` covers the hosts of the same Ingress's rules), of those its namespace owns. The Secret
//! must be in the Ingress's namespace, of type `kubernetes.io/tls`, with `tls.crt` and `tls.key`.
//! An entry without `secretName` makes its hosts TLS hosts served with the default certificate.
//! Every owning Ingress listing a name adds its Secret to that name's candidates (oldest Ingress
//! first).
//!
//! For a server name (SNI), an exact entry beats a wildcard (`*.example.com` covers exactly one
//! more label); no SNI, or a name no entry covers, gets the default certificate.
//!
//! # Choosing among the candidates of a name ([`choose`])
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
//! # Client authentication (per host, by annotations)
//!
//! The annotations of an Ingress apply to every name in its `spec.tls`. When several Ingresses of
//! the owning namespace set them for a name, the strictest mode applies (`verify` > `optional` >
//! `passthrough` > `off`), the CA and the verify depth come from the oldest Ingress that sets
//! each, and every overruled Ingress is reported. A bad value fails closed: the name requires a
//! client certificate that nothing can verify, so handshakes for it fail until the annotation is
//! fixed.
//!
//! # Host ownership
//!
//! Only Ingresses in a name's owning namespace ([`crate::ownership`]) choose its certificates and
//! client authentication (and so the forced redirect of `verify` hosts). Another namespace's
//! `spec.tls` entry or annotations for the name are ignored and reported on that Ingress.
//!
//! # Certificate names
//!
//! A certificate serves a name only if its subject alternative names (or, without any, its
//! common name) cover it ([`covers`]); the proxy skips and reports one that does not.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::finding::{Finding, Reason};
use crate::hostmap::{normalize_host, parse_rule_host, HostKey, HostMap};
use crate::model::{IngressInput, ObjectRef, SecretInput, TLS_SECRET_TYPE};
use crate::ownership::{host_text, Ownership};

/// `"false"` turns the plain-HTTP to https redirect off for the Ingress's routes.
pub const SSL_REDIRECT_ANNOTATION: &str = "sluice.dev/ssl-redirect";
/// `off`, `optional`, `verify` or `passthrough`.
pub const CLIENT_AUTH_ANNOTATION: &str = "sluice.dev/client-auth";
/// The name of a Secret in the Ingress's namespace whose `ca.crt` holds the trusted client CAs.
pub const CLIENT_CA_SECRET_ANNOTATION: &str = "sluice.dev/client-ca-secret";
/// The longest client certificate chain accepted, in intermediate certificates.
pub const CLIENT_VERIFY_DEPTH_ANNOTATION: &str = "sluice.dev/client-verify-depth";
/// Client chain depth when the annotation is absent: the client certificate must be issued by a
/// certificate in `ca.crt` or by one intermediate below it.
pub const DEFAULT_CLIENT_VERIFY_DEPTH: u32 = 1;
/// The largest accepted `sluice.dev/client-verify-depth`.
pub const MAX_CLIENT_VERIFY_DEPTH: u32 = 16;
/// The key of a serving certificate (optionally followed by its chain) in a Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The key of the private key in a Secret.
pub const TLS_KEY_KEY: &str = "tls.key";
/// The key of the trusted client CA certificates in a Secret.
pub const CA_CERT_KEY: &str = "ca.crt";

/// How a host treats client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum ClientAuthMode {
    /// No certificate is asked for.
    #[default]
    Off,
    /// A certificate is asked for; the request carries the verification result.
    Optional,
    /// The handshake fails without a certificate that chains to the CA.
    Verify,
    /// A certificate is asked for and forwarded, not verified.
    Passthrough,
}

impl ClientAuthMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientAuthMode::Off => "off",
            ClientAuthMode::Optional => "optional",
            ClientAuthMode::Verify => "verify",
            ClientAuthMode::Passthrough => "passthrough",
        }
    }

    /// Whether a client certificate is asked for at all.
    pub fn asks_for_certificate(&self) -> bool {
        *self != ClientAuthMode::Off
    }
}

/// A host's client authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientAuth {
    pub mode: ClientAuthMode,
    /// The Secret with `ca.crt`; `None` with `Optional` or `Verify` means nothing can verify
    /// (the host fails closed).
    pub ca_secret: Option<ObjectRef>,
    /// The longest accepted chain below the client certificate, in certificates.
    pub verify_depth: u32,
}

/// The TLS facts of one name as written in `spec.tls[].hosts` (exact or wildcard).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostTls {
    /// Candidate certificate Secrets, oldest Ingress first; empty means the default certificate.
    pub secrets: Vec<ObjectRef>,
    pub client_auth: ClientAuth,
    /// The Ingress whose annotations set `client_auth`, if any did.
    pub client_auth_from: Option<ObjectRef>,
}

/// What a Secret is used for, and by whom: for reporting problems the proxy finds when parsing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretUse {
    pub secret: ObjectRef,
    pub ingress: ObjectRef,
    /// `certificate` or `client CA`.
    pub purpose: SecretPurpose,
    /// The names affected, as written.
    pub hosts: Vec<String>,
}

/// Why a Secret is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretPurpose {
    /// `tls.crt` and `tls.key` serve the hosts.
    Certificate,
    /// `ca.crt` verifies client certificates for the hosts.
    ClientCa,
}

/// The TLS policy of a snapshot: names with TLS and how each is served.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsPolicy {
    /// Named entries only: a rule without a host has no name to serve TLS for.
    names: HostMap<HostTls>,
    /// Every use of every Secret, sorted.
    pub uses: Vec<SecretUse>,
}

impl TlsPolicy {
    /// The entry covering a server name or a request's host (port, case and a trailing dot
    /// ignored): the exact name, else a wildcard one label up ([`HostMap::get_named`]).
    pub fn find(&self, name: &str) -> Option<&HostTls> {
        self.find_normalized(&normalize_host(name))
    }

    /// [`TlsPolicy::find`] for a name already normalized.
    pub fn find_normalized(&self, name: &str) -> Option<&HostTls> {
        self.names.get_named(name)
    }

    /// Every entry as (name as written, facts), sorted by name.
    pub fn hosts(&self) -> Vec<(String, &HostTls)> {
        self.names.sorted()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every Secret some name reads, with its purpose.
    pub fn secrets(&self) -> BTreeSet<(ObjectRef, SecretPurpose)> {
        self.uses
            .iter()
            .map(|u| (u.secret.clone(), u.purpose))
            .collect()
    }

    fn entry(&mut self, key: &HostKey<'_>) -> Option<&mut HostTls> {
        match key {
            HostKey::Any => None,
            named => Some(self.names.entry(named)),
        }
    }
}

/// Whether an Ingress's routes redirect plain HTTP to https, or why the annotation is invalid.
pub fn ssl_redirect(ingress: &IngressInput) -> Result<bool, String> {
    match ingress.annotations.get(SSL_REDIRECT_ANNOTATION).map(|v| v.trim()) {
        None | Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(format!(
            "annotation {SSL_REDIRECT_ANNOTATION}: `{other}` is not \"true\" or \"false\"; redirects stay on"
        )),
    }
}

/// What one Ingress's annotations ask for the client authentication of its TLS hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requested {
    auth: ClientAuth,
    /// `sluice.dev/client-ca-secret` is set for a mode that verifies (even if unusable).
    sets_ca: bool,
    /// `sluice.dev/client-verify-depth` is set (even if invalid).
    sets_depth: bool,
    /// The mode is not a known value: its hosts fail closed whatever else is set.
    broken: bool,
}

/// The client authentication an Ingress's annotations ask for (`None` when it sets none), and
/// what is wrong with them. Errors fail closed.
fn client_auth_of(ingress: &IngressInput) -> (Option<Requested>, Vec<String>) {
    let a = &ingress.annotations;
    let mode = a.get(CLIENT_AUTH_ANNOTATION).map(|v| v.trim());
    let ca = a.get(CLIENT_CA_SECRET_ANNOTATION).map(|v| v.trim());
    let depth = a.get(CLIENT_VERIFY_DEPTH_ANNOTATION).map(|v| v.trim());
    let mut errors = Vec::new();
    let mode = match (mode, ca) {
        (None, None) => {
            if depth.is_some() {
                errors.push(format!(
                    "annotation {CLIENT_VERIFY_DEPTH_ANNOTATION} has no effect without {CLIENT_AUTH_ANNOTATION}"
                ));
            }
            return (None, errors);
        }
        // A CA alone asks for verification, as the CA is only good for that.
        (None, Some(_)) => ClientAuthMode::Verify,
        (Some("off"), _) => ClientAuthMode::Off,
        (Some("optional"), _) => ClientAuthMode::Optional,
        (Some("verify"), _) => ClientAuthMode::Verify,
        (Some("passthrough"), _) => ClientAuthMode::Passthrough,
        (Some(other), _) => {
            errors.push(format!(
                "annotation {CLIENT_AUTH_ANNOTATION}: `{other}` is not off, optional, verify or passthrough; \
                 its hosts refuse every client until it is fixed"
            ));
            let auth = ClientAuth {
                mode: ClientAuthMode::Verify,
                ca_secret: None,
                verify_depth: DEFAULT_CLIENT_VERIFY_DEPTH,
            };
            let requested = Requested {
                auth,
                sets_ca: ca.is_some(),
                sets_depth: false,
                broken: true,
            };
            return (Some(requested), errors);
        }
    };
    let verify_depth = match depth {
        None => DEFAULT_CLIENT_VERIFY_DEPTH,
        Some(d) => match d.parse::<u32>() {
            Ok(n) if n <= MAX_CLIENT_VERIFY_DEPTH => n,
            _ => {
                errors.push(format!(
                    "annotation {CLIENT_VERIFY_DEPTH_ANNOTATION}: `{d}` is not a number from 0 to {MAX_CLIENT_VERIFY_DEPTH}; \
                     the default {DEFAULT_CLIENT_VERIFY_DEPTH} applies"
                ));
                DEFAULT_CLIENT_VERIFY_DEPTH
            }
        },
    };
    let verifies = matches!(mode, ClientAuthMode::Optional | ClientAuthMode::Verify);
    let ca_secret = match ca {
        Some(name) if verifies => {
            if name.is_empty() || name.contains('/') {
                errors.push(format!(
                    "annotation {CLIENT_CA_SECRET_ANNOTATION}: `{name}` is not the name of a Secret in namespace {}; \
                     its hosts refuse every client certificate until it is fixed",
                    ingress.namespace
                ));
                None
            } else {
                Some(ObjectRef::new(&ingress.namespace, name))
            }
        }
        None if verifies => {
            errors.push(format!(
                "annotation {CLIENT_AUTH_ANNOTATION}: `{}` needs {CLIENT_CA_SECRET_ANNOTATION}; \
                 its hosts refuse every client certificate until it is set",
                mode.as_str()
            ));
            None
        }
        _ => None,
    };
    let requested = Requested {
        auth: ClientAuth {
            mode,
            ca_secret,
            verify_depth,
        },
        sets_ca: verifies && ca.is_some(),
        sets_depth: depth.is_some(),
        broken: false,
    };
    (Some(requested), errors)
}

/// How strict a client-auth mode is: `verify` > `optional` > `passthrough` > `off`.
pub fn strictness(mode: ClientAuthMode) -> u8 {
    match mode {
        ClientAuthMode::Off => 0,
        ClientAuthMode::Passthrough => 1,
        ClientAuthMode::Optional => 2,
        ClientAuthMode::Verify => 3,
    }
}

/// The client authentication resolved for one host.
struct Resolved {
    auth: ClientAuth,
    /// The Ingress whose mode applies.
    from: ObjectRef,
    /// The Ingress whose CA applies, if one does.
    ca_from: Option<ObjectRef>,
    /// (Ingress, message) for every request that is overruled.
    overruled: Vec<(ObjectRef, String)>,
}

/// A host's client authentication from what the owning namespace's Ingresses ask for (oldest
/// first): the strictest mode, the CA and depth of the oldest Ingress that sets each; a bad mode
/// anywhere fails closed.
fn resolve_client_auth(host: &str, requests: &[(ObjectRef, Requested)]) -> Option<Resolved> {
    // `max_by_key` keeps the last of equals: reversed, the oldest of the strictest.
    let (from, winner) = requests
        .iter()
        .rev()
        .max_by_key(|(_, r)| strictness(r.auth.mode))?;
    let mode = winner.auth.mode;
    let verifies = matches!(mode, ClientAuthMode::Optional | ClientAuthMode::Verify);
    let broken = requests.iter().any(|(_, r)| r.broken);
    let ca_from = requests.iter().find(|(_, r)| r.sets_ca);
    let ca_secret = match ca_from {
        Some((_, r)) if verifies && !broken => r.auth.ca_secret.clone(),
        _ => None,
    };
    let depth_from = requests.iter().find(|(_, r)| r.sets_depth);
    let verify_depth = depth_from
        .map(|(_, r)| r.auth.verify_depth)
        .unwrap_or(DEFAULT_CLIENT_VERIFY_DEPTH);
    let mut overruled = Vec::new();
    for (ingress, r) in requests {
        if strictness(r.auth.mode) < strictness(mode) {
            overruled.push((
                ingress.clone(),
                format!(
                    "host `{host}`: client-auth `{}` is weaker than `{}` set by {from}; \
                     the strictest mode of the owning namespace applies",
                    r.auth.mode.as_str(),
                    mode.as_str()
                ),
            ));
        }
        if let Some((ca_ingress, _)) = ca_from.filter(|_| verifies && !broken) {
            if r.sets_ca && r.auth.ca_secret != ca_secret && ingress != ca_ingress {
                overruled.push((
                    ingress.clone(),
                    format!(
                        "host `{host}`: the client CA is already set by the older Ingress \
                         {ca_ingress}; this Ingress's {CLIENT_CA_SECRET_ANNOTATION} is ignored for it"
                    ),
                ));
            }
        }
        if let Some((depth_ingress, _)) = depth_from {
            if r.sets_depth && r.auth.verify_depth != verify_depth && ingress != depth_ingress {
                overruled.push((
                    ingress.clone(),
                    format!(
                        "host `{host}`: the client verify depth is already set by the older \
                         Ingress {depth_ingress}; this Ingress's {CLIENT_VERIFY_DEPTH_ANNOTATION} is ignored for it"
                    ),
                ));
            }
        }
    }
    let auth = ClientAuth {
        mode,
        ca_secret: ca_secret.clone(),
        verify_depth,
    };
    let ca_from = ca_secret.and(ca_from.map(|(i, _)| i.clone()));
    Some(Resolved {
        auth,
        from: from.clone(),
        ca_from,
        overruled,
    })
}

/// Builds the TLS policy of the served Ingresses (oldest first), reporting what is skipped.
/// Only Ingresses in a host's owning namespace ([`crate::ownership`]) set its certificates and
/// client authentication; other namespaces' `spec.tls` entries and annotations for it are
/// reported and ignored.
pub fn policy(
    served: &[&IngressInput],
    secrets: &[SecretInput],
    ownership: &Ownership,
    skipped: &mut Vec<Finding>,
) -> TlsPolicy {
    let secrets: HashMap<ObjectRef, &SecretInput> =
        secrets.iter().map(|s| (s.object_ref(), s)).collect();
    let mut out = TlsPolicy::default();
    let mut uses: BTreeMap<(ObjectRef, ObjectRef, SecretPurpose), BTreeSet<String>> =
        BTreeMap::new();
    // Per host as written: what each Ingress of the owning namespace asks for, oldest first.
    let mut requests: BTreeMap<String, Vec<(ObjectRef, Requested)>> = BTreeMap::new();
    for ingress in served {
        let me = ingress.object_ref();
        let mut skip = |reason: Reason, message: String| {
            skipped.push(Finding {
                ingress: me.clone(),
                reason,
                message,
            })
        };
        // The names this Ingress terminates TLS for, as written, deduplicated in order.
        let mut names: Vec<String> = Vec::new();
        // Names it lists that another namespace owns, reported once each.
        let mut foreign: Vec<String> = Vec::new();
        for (ti, tls) in ingress.tls.iter().enumerate() {
            let listed: Vec<String> = if tls.hosts.is_empty() {
                ingress
                    .rules
                    .iter()
                    .filter_map(|r| r.host.as_deref())
                    .map(|h| h.trim().to_string())
                    .filter(|h| !h.is_empty())
                    .collect()
            } else {
                tls.hosts.iter().map(|h| h.trim().to_string()).collect()
            };
            let mut valid = Vec::new();
            let mut dropped = false;
            for (hi, host) in listed.iter().enumerate() {
                match parse_rule_host(Some(host)).map(|k| host_text(&k)) {
                    Ok(None) => {}
                    Ok(Some(text)) => match ownership.owner(&text) {
                        Some(owner) if owner.namespace != ingress.namespace => {
                            dropped = true;
                            if !foreign.contains(&text) {
                                skip(
                                    Reason::HostNotOwned,
                                    format!(
                                        "spec.tls[{ti}]: host `{text}` is owned by {owner}; this Ingress's \
                                         certificate and client-auth annotations are ignored for it"
                                    ),
                                );
                                foreign.push(text);
                            }
                        }
                        _ => valid.push(text),
                    },
                    Err(msg) if tls.hosts.is_empty() => {
                        // Already reported with the rule itself.
                        let _ = msg;
                    }
                    Err(msg) => skip(
                        Reason::InvalidHost,
                        format!("spec.tls[{ti}].hosts[{hi}]: {msg}"),
                    ),
                }
            }
            if valid.is_empty() && dropped {
                continue;
            }
            let secret = match tls.secret_name.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(name) => {
                    let key = ObjectRef::new(&ingress.namespace, name);
                    let at = format!("spec.tls[{ti}]");
                    let hosts = valid.join(", ");
                    match secrets.get(&key) {
                        None => {
                            skip(
                                Reason::MissingSecret,
                                format!("{at}: Secret {key} does not exist; {hosts} get the default certificate"),
                            );
                            None
                        }
                        Some(s) if s.type_ != TLS_SECRET_TYPE => {
                            skip(
                                Reason::InvalidSecret,
                                format!(
                                    "{at}: Secret {key} is of type `{}`, not {TLS_SECRET_TYPE}; {hosts} get the default certificate",
                                    s.type_
                                ),
                            );
                            None
                        }
                        Some(s)
                            if !s.keys.contains(TLS_CERT_KEY) || !s.keys.contains(TLS_KEY_KEY) =>
                        {
                            skip(
                                Reason::InvalidSecret,
                                format!("{at}: Secret {key} lacks {TLS_CERT_KEY} or {TLS_KEY_KEY}; {hosts} get the default certificate"),
                            );
                            None
                        }
                        Some(_) => Some(key),
                    }
                }
            };
            for host in &valid {
                let Ok(host_key) = parse_rule_host(Some(host)) else {
                    continue;
                };
                if let Some(entry) = out.entry(&host_key) {
                    if let Some(secret) = &secret {
                        if !entry.secrets.contains(secret) {
                            entry.secrets.push(secret.clone());
                        }
                        uses.entry((secret.clone(), me.clone(), SecretPurpose::Certificate))
                            .or_default()
                            .insert(host.clone());
                    }
                }
                if !names.contains(host) {
                    names.push(host.clone());
                }
            }
        }

        let (requested, errors) = client_auth_of(ingress);
        for e in errors {
            skip(Reason::InvalidAnnotation, e);
        }
        let Some(mut requested) = requested else {
            continue;
        };
        if names.is_empty() {
            // Hosts owned elsewhere are already reported as such.
            if foreign.is_empty() {
                skip(
                    Reason::InvalidAnnotation,
                    format!("annotation {CLIENT_AUTH_ANNOTATION}: the Ingress has no spec.tls hosts to apply it to"),
                );
            }
            continue;
        }
        if let Some(ca) = &requested.auth.ca_secret {
            let hosts = names.join(", ");
            let problem = match secrets.get(ca) {
                None => Some((
                    Reason::MissingSecret,
                    format!("annotation {CLIENT_CA_SECRET_ANNOTATION}: Secret {ca} does not exist; {hosts} refuse every client certificate"),
                )),
                Some(s) if !s.keys.contains(CA_CERT_KEY) => Some((
                    Reason::InvalidSecret,
                    format!("annotation {CLIENT_CA_SECRET_ANNOTATION}: Secret {ca} has no {CA_CERT_KEY}; {hosts} refuse every client certificate"),
                )),
                Some(_) => None,
            };
            if let Some((reason, message)) = problem {
                skip(reason, message);
                requested.auth.ca_secret = None;
            }
        }
        for host in names {
            requests
                .entry(host)
                .or_default()
                .push((me.clone(), requested.clone()));
        }
    }
    for (host, requested) in requests {
        let Ok(host_key) = parse_rule_host(Some(&host)) else {
            continue;
        };
        let Some(entry) = out.entry(&host_key) else {
            continue;
        };
        let Some(Resolved {
            auth,
            from,
            ca_from,
            overruled,
        }) = resolve_client_auth(&host, &requested)
        else {
            continue;
        };
        if let (Some(ca), Some(ca_from)) = (&auth.ca_secret, ca_from) {
            uses.entry((ca.clone(), ca_from, SecretPurpose::ClientCa))
                .or_default()
                .insert(host.clone());
        }
        entry.client_auth = auth;
        entry.client_auth_from = Some(from);
        for (ingress, message) in overruled {
            skipped.push(Finding {
                ingress,
                reason: Reason::ConflictingRule,
                message,
            });
        }
    }
    out.uses = uses
        .into_iter()
        .map(|((secret, ingress, purpose), hosts)| SecretUse {
            secret,
            ingress,
            purpose,
            hosts: hosts.into_iter().collect(),
        })
        .collect();
    out
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TlsInput;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_700_000_000;

    fn facts(
        key: KeyAlgorithm,
        key_bits: u32,
        signature_bits: u32,
        expires_in_days: i64,
    ) -> CertFacts {
        CertFacts {
            key,
            key_bits,
            signature_bits,
            not_before: NOW - 30 * DAY,
            not_after: NOW + expires_in_days * DAY,
        }
    }

    use KeyAlgorithm::{Ecdsa, Other, Rsa};

    #[test]
    fn selection_skips_invalid_certificates_and_keeps_the_best_of_each_key_type() {
        let not_yet = CertFacts {
            not_before: NOW + DAY,
            ..facts(Ecdsa, 384, 192, 90)
        };
        for (name, candidates, want) in [
            ("nothing", vec![], (None, None, None)),
            (
                "one of each",
                vec![facts(Rsa, 2048, 128, 90), facts(Ecdsa, 256, 128, 90)],
                (Some(1), Some(0), None),
            ),
            (
                "expired is skipped",
                vec![facts(Rsa, 4096, 256, -1), facts(Rsa, 2048, 128, 10)],
                (None, Some(1), None),
            ),
            (
                "not yet valid is skipped",
                vec![not_yet, facts(Ecdsa, 256, 128, 10)],
                (Some(1), None, None),
            ),
            (
                "only expired means none",
                vec![facts(Rsa, 2048, 128, -1), facts(Ecdsa, 256, 128, -5)],
                (None, None, None),
            ),
            (
                "stronger signature beats larger key",
                vec![facts(Rsa, 4096, 63, 90), facts(Rsa, 2048, 128, 90)],
                (None, Some(1), None),
            ),
            (
                "larger key beats later expiry",
                vec![facts(Rsa, 2048, 128, 300), facts(Rsa, 3072, 128, 30)],
                (None, Some(1), None),
            ),
            (
                "later expiry breaks the tie",
                vec![facts(Ecdsa, 256, 128, 30), facts(Ecdsa, 256, 128, 60)],
                (Some(1), None, None),
            ),
            (
                "equal facts keep the oldest Ingress's",
                vec![facts(Ecdsa, 256, 128, 30), facts(Ecdsa, 256, 128, 30)],
                (Some(0), None, None),
            ),
            (
                "other keys only without ECDSA or RSA",
                vec![facts(Other, 256, 128, 30), facts(Rsa, 2048, 128, 30)],
                (None, Some(1), None),
            ),
            (
                "other keys alone are served",
                vec![facts(Other, 256, 128, 30)],
                (None, None, Some(0)),
            ),
        ] {
            let c = choose(&candidates, NOW);
            assert_eq!((c.ecdsa, c.rsa, c.other), want, "{name}");
        }
    }

    fn ingress(name: &str, tls: Vec<TlsInput>, annotations: &[(&str, &str)]) -> IngressInput {
        IngressInput {
            namespace: "web".into(),
            name: name.into(),
            class_name: Some("sluice".into()),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            rules: vec![crate::model::RuleInput {
                host: Some("rule.test".into()),
                paths: vec![],
            }],
            tls,
            ..Default::default()
        }
    }

    fn tls(hosts: &[&str], secret: Option<&str>) -> TlsInput {
        TlsInput {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            secret_name: secret.map(str::to_string),
        }
    }

    fn secret(name: &str, type_: &str, keys: &[&str]) -> SecretInput {
        SecretInput {
            namespace: "web".into(),
            name: name.into(),
            type_: type_.into(),
            keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn secrets() -> Vec<SecretInput> {
        vec![
            secret("a-tls", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
            secret("b-tls", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
            secret("wild-tls", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
            secret("opaque", "Opaque", &["tls.crt", "tls.key"]),
            secret("no-key", TLS_SECRET_TYPE, &["tls.crt"]),
            secret("ca", TLS_SECRET_TYPE, &["ca.crt", "tls.crt", "tls.key"]),
            secret("other-ca", "Opaque", &["ca.crt"]),
        ]
    }

    fn build(ingresses: &[IngressInput]) -> (TlsPolicy, Vec<Finding>) {
        let served: Vec<&IngressInput> = ingresses.iter().collect();
        let mut skipped = Vec::new();
        let owners = crate::ownership::Ownership::compute(&served, &Default::default());
        let p = policy(&served, &secrets(), &owners, &mut skipped);
        (p, skipped)
    }

    fn names(p: &TlsPolicy, name: &str) -> Option<Vec<String>> {
        p.find(name)
            .map(|h| h.secrets.iter().map(|s| s.name.clone()).collect())
    }

    #[test]
    fn names_find_their_secrets_exact_before_wildcard_and_across_ingresses() {
        let (p, skipped) = build(&[
            ingress(
                "old",
                vec![
                    tls(&["a.test", "*.shop.test"], Some("a-tls")),
                    tls(&[], None),
                ],
                &[],
            ),
            ingress(
                "new",
                vec![
                    tls(&["a.test"], Some("b-tls")),
                    tls(&["eu.shop.test"], Some("wild-tls")),
                ],
                &[],
            ),
        ]);
        assert!(skipped.is_empty(), "{skipped:?}");
        for (name, want) in [
            ("a.test", Some(vec!["a-tls", "b-tls"])),
            ("A.Test.", Some(vec!["a-tls", "b-tls"])),
            ("a.test:8443", Some(vec!["a-tls", "b-tls"])),
            ("eu.shop.test", Some(vec!["wild-tls"])),
            ("us.shop.test", Some(vec!["a-tls"])),
            ("shop.test", None),
            ("x.us.shop.test", None),
            // An entry without hosts covers the Ingress's rule hosts, with the default certificate.
            ("rule.test", Some(vec![])),
            ("other.test", None),
        ] {
            let want = want.map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>());
            assert_eq!(names(&p, name), want, "{name}");
        }
    }

    #[test]
    fn unusable_secrets_are_reported_and_their_hosts_get_the_default_certificate() {
        for (secret_name, reason, text) in [
            ("missing", Reason::MissingSecret, "does not exist"),
            ("opaque", Reason::InvalidSecret, "of type `Opaque`"),
            ("no-key", Reason::InvalidSecret, "lacks tls.crt or tls.key"),
        ] {
            let (p, skipped) = build(&[ingress(
                "i",
                vec![
                    tls(&["a.test"], Some(secret_name)),
                    tls(&["b.test"], Some("b-tls")),
                ],
                &[],
            )]);
            assert_eq!(names(&p, "a.test"), Some(vec![]), "{secret_name}");
            assert_eq!(names(&p, "b.test"), Some(vec!["b-tls".to_string()]));
            assert_eq!(skipped.len(), 1, "{secret_name}: {skipped:?}");
            assert_eq!(skipped[0].reason, reason);
            assert!(skipped[0].message.contains(text), "{}", skipped[0].message);
            assert!(skipped[0]
                .message
                .contains("a.test get the default certificate"));
        }
        let (_, skipped) = build(&[ingress("i", vec![tls(&["Bad_Host"], Some("a-tls"))], &[])]);
        assert_eq!(skipped[0].reason, Reason::InvalidHost);
        assert!(skipped[0].message.starts_with("spec.tls[0].hosts[0]"));
    }

    fn auth(p: &TlsPolicy, name: &str) -> (ClientAuthMode, Option<String>, u32) {
        let h = p.find(name).expect("a TLS host");
        (
            h.client_auth.mode,
            h.client_auth.ca_secret.as_ref().map(|s| s.name.clone()),
            h.client_auth.verify_depth,
        )
    }

    #[test]
    fn client_auth_annotations_set_each_tls_host_and_bad_values_fail_closed() {
        use ClientAuthMode::*;
        let ca = Some("ca".to_string());
        for (annotations, want, reasons) in [
            (vec![], (Off, None, 0), vec![]),
            (
                vec![("sluice.dev/client-auth", "off")],
                (Off, None, 1),
                vec![],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "verify"),
                    ("sluice.dev/client-ca-secret", "ca"),
                ],
                (Verify, ca.clone(), 1),
                vec![],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "optional"),
                    ("sluice.dev/client-ca-secret", "other-ca"),
                    ("sluice.dev/client-verify-depth", "3"),
                ],
                (Optional, Some("other-ca".to_string()), 3),
                vec![],
            ),
            (
                vec![("sluice.dev/client-ca-secret", "ca")],
                (Verify, ca.clone(), 1),
                vec![],
            ),
            (
                vec![("sluice.dev/client-auth", "passthrough")],
                (Passthrough, None, 1),
                vec![],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "verfy"),
                    ("sluice.dev/client-ca-secret", "ca"),
                ],
                (Verify, None, 1),
                vec![Reason::InvalidAnnotation],
            ),
            (
                vec![("sluice.dev/client-auth", "verify")],
                (Verify, None, 1),
                vec![Reason::InvalidAnnotation],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "optional"),
                    ("sluice.dev/client-ca-secret", "other/ca"),
                ],
                (Optional, None, 1),
                vec![Reason::InvalidAnnotation],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "verify"),
                    ("sluice.dev/client-ca-secret", "gone"),
                ],
                (Verify, None, 1),
                vec![Reason::MissingSecret],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "verify"),
                    ("sluice.dev/client-ca-secret", "a-tls"),
                ],
                (Verify, None, 1),
                vec![Reason::InvalidSecret],
            ),
            (
                vec![
                    ("sluice.dev/client-auth", "verify"),
                    ("sluice.dev/client-ca-secret", "ca"),
                    ("sluice.dev/client-verify-depth", "-1"),
                ],
                (Verify, ca.clone(), 1),
                vec![Reason::InvalidAnnotation],
            ),
        ] {
            let (p, skipped) = build(&[ingress(
                "i",
                vec![tls(&["a.test", "*.b.test"], Some("a-tls"))],
                &annotations,
            )]);
            let (mode, ca, depth) = auth(&p, "a.test");
            // Without annotations the depth stays at its zero default: it is unused.
            let depth = if annotations.is_empty() { 0 } else { depth };
            assert_eq!((mode, ca, depth), want, "{annotations:?}");
            assert_eq!(auth(&p, "x.b.test").0, want.0, "{annotations:?}");
            let got: Vec<_> = skipped.iter().map(|s| s.reason.clone()).collect();
            assert_eq!(got, reasons, "{annotations:?}: {skipped:?}");
        }
    }

    #[test]
    fn the_strictest_client_auth_of_a_host_applies_and_a_weaker_one_is_reported() {
        let verify = [
            ("sluice.dev/client-auth", "verify"),
            ("sluice.dev/client-ca-secret", "ca"),
        ];
        let (p, skipped) = build(&[
            ingress("old", vec![tls(&["a.test"], Some("a-tls"))], &verify),
            ingress("silent", vec![tls(&["a.test"], Some("b-tls"))], &[]),
            ingress(
                "weaker",
                vec![tls(&["a.test", "c.test"], Some("b-tls"))],
                &[("sluice.dev/client-auth", "off")],
            ),
            ingress("same", vec![tls(&["a.test"], None)], &verify),
        ]);
        assert_eq!(auth(&p, "a.test").0, ClientAuthMode::Verify);
        assert_eq!(auth(&p, "c.test").0, ClientAuthMode::Off);
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].ingress.name, "weaker");
        assert_eq!(skipped[0].reason, Reason::ConflictingRule);
        assert!(
            skipped[0].message.contains("web/old"),
            "{}",
            skipped[0].message
        );
        // The CA is recorded as used by the Ingress that set it.
        assert!(p.uses.iter().any(|u| u.secret.name == "ca"
            && u.ingress.name == "old"
            && u.purpose == SecretPurpose::ClientCa));
    }

    #[test]
    fn disagreeing_modes_resolve_to_the_strictest_with_ca_and_depth_from_the_oldest_that_sets_them()
    {
        use ClientAuthMode::*;
        let verify_ca = |ca: &'static str| {
            vec![
                ("sluice.dev/client-auth", "verify"),
                ("sluice.dev/client-ca-secret", ca),
            ]
        };
        let mode = |m: &'static str| vec![("sluice.dev/client-auth", m)];
        let ca = |n: &str| Some(n.to_string());
        // Each row: the annotations of Ingresses `i0`, `i1`, ... (oldest first), all listing
        // a.test; the resolved (mode, CA, depth); the Ingresses reported as overruled.
        for (name, requests, want, reported) in [
            ("one alone", vec![mode("off")], (Off, None, 1), vec![]),
            (
                "verify beats an older off",
                vec![mode("off"), verify_ca("ca")],
                (Verify, ca("ca"), 1),
                vec!["i0"],
            ),
            (
                "optional beats a newer passthrough",
                vec![
                    vec![
                        ("sluice.dev/client-auth", "optional"),
                        ("sluice.dev/client-ca-secret", "other-ca"),
                    ],
                    mode("passthrough"),
                ],
                (Optional, ca("other-ca"), 1),
                vec!["i1"],
            ),
            (
                "passthrough beats off",
                vec![mode("passthrough"), mode("off")],
                (Passthrough, None, 1),
                vec!["i1"],
            ),
            (
                "the CA comes from the oldest that sets one, even under a stricter mode",
                vec![
                    vec![
                        ("sluice.dev/client-auth", "optional"),
                        ("sluice.dev/client-ca-secret", "other-ca"),
                    ],
                    verify_ca("ca"),
                ],
                (Verify, ca("other-ca"), 1),
                vec!["i0", "i1"],
            ),
            (
                "the depth comes from the oldest that sets it",
                vec![
                    verify_ca("ca"),
                    vec![
                        ("sluice.dev/client-auth", "verify"),
                        ("sluice.dev/client-ca-secret", "ca"),
                        ("sluice.dev/client-verify-depth", "4"),
                    ],
                    vec![
                        ("sluice.dev/client-auth", "verify"),
                        ("sluice.dev/client-ca-secret", "ca"),
                        ("sluice.dev/client-verify-depth", "2"),
                    ],
                ],
                (Verify, ca("ca"), 4),
                vec!["i2"],
            ),
            (
                "a bad mode anywhere fails closed",
                vec![verify_ca("ca"), mode("verfy")],
                (Verify, None, 1),
                vec![],
            ),
            (
                "verify without any CA fails closed",
                vec![mode("verify"), mode("optional")],
                (Verify, None, 1),
                vec!["i1"],
            ),
        ] {
            let ingresses: Vec<IngressInput> = requests
                .iter()
                .enumerate()
                .map(|(i, a)| ingress(&format!("i{i}"), vec![tls(&["a.test"], None)], a))
                .collect();
            let (p, skipped) = build(&ingresses);
            assert_eq!(auth(&p, "a.test"), want, "{name}");
            let mut got: Vec<&str> = skipped
                .iter()
                .filter(|s| s.reason == Reason::ConflictingRule)
                .map(|s| s.ingress.name.as_str())
                .collect();
            got.dedup();
            assert_eq!(got, reported, "{name}: {skipped:?}");
        }
    }

    #[test]
    fn a_certificate_covers_a_name_only_through_its_names_or_a_one_label_wildcard() {
        for (cert, name, want) in [
            (vec!["a.test"], "a.test", true),
            (vec!["A.Test."], "a.test", true),
            (vec!["a.test"], "b.test", false),
            (vec!["*.shop.test"], "eu.shop.test", true),
            (vec!["*.shop.test"], "*.shop.test", true),
            (vec!["*.shop.test"], "shop.test", false),
            (vec!["*.shop.test"], "x.eu.shop.test", false),
            (vec!["eu.shop.test"], "*.shop.test", false),
            (vec!["e*.shop.test"], "eu.shop.test", false),
            (vec!["*.test"], "a.test", false),
            (vec!["attacker.example"], "secure.test", false),
            (vec!["x.test", "secure.test"], "secure.test", true),
            (vec!["127.0.0.1"], "127.0.0.1", true),
            (vec![], "a.test", false),
        ] {
            assert_eq!(covers(&cert, name), want, "{cert:?} covers {name}");
        }
    }

    #[test]
    fn ssl_redirect_is_on_unless_the_annotation_says_false() {
        for (value, want) in [
            (None, Ok(true)),
            (Some("true"), Ok(true)),
            (Some("false"), Ok(false)),
            (Some(" false "), Ok(false)),
        ] {
            let i = match value {
                Some(v) => ingress("i", vec![], &[(SSL_REDIRECT_ANNOTATION, v)]),
                None => ingress("i", vec![], &[]),
            };
            assert_eq!(ssl_redirect(&i), want, "{value:?}");
        }
        assert!(ssl_redirect(&ingress("i", vec![], &[(SSL_REDIRECT_ANNOTATION, "no")])).is_err());
    }
}
