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
//! # Host ownership
//!
//! Only Ingresses in a name's owning namespace ([`crate::ownership`]) choose its certificates and
//! client authentication (and so the forced redirect of `verify` hosts). Another namespace's
//! `spec.tls` entry or annotations for the name are ignored and reported on that Ingress.
//!
//! The policy is split by job: [`client_auth`] decides each host's client authentication from
//! the annotations, [`choice`] orders the certificates that cover a name, and this module
//! decides which Secrets serve which names.

mod choice;
mod client_auth;

pub use choice::*;
pub use client_auth::*;

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
/// Builds the TLS policy of the served Ingresses (oldest first), reporting what is skipped.
/// Only Ingresses in a host's owning namespace ([`crate::ownership`]) set its certificates and
/// client authentication; other namespaces' `spec.tls` entries and annotations for it are
/// reported and ignored.
pub fn policy<S: std::borrow::Borrow<SecretInput>>(
    served: &[&IngressInput],
    secrets: &[S],
    ownership: &Ownership,
    skipped: &mut Vec<Finding>,
) -> TlsPolicy {
    let secrets: HashMap<ObjectRef, &SecretInput> = secrets
        .iter()
        .map(|s| (s.borrow().object_ref(), s.borrow()))
        .collect();
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

#[cfg(test)]
mod tests;
