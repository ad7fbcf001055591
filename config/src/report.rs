//! A readable account of a snapshot: per Ingress, the routes it serves and the rules it skips.
//!
//! This is what `sluice check --manifests DIR` prints: the safe, offline answer to an admission
//! webhook. Nothing is executed and no template is rendered; the same pure [`crate::build`] that
//! the proxy runs decides every line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::annotations::{BackendProtocol, Balance, HashBy, UpstreamPolicy};
use crate::build::{Snapshot, Target};
use crate::model::ObjectRef;
use crate::routes::{MatchKind, RouteEntry};
use crate::tls::SecretPurpose;

/// One served route as the report shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteLine {
    /// The rule's host as written (`*.example.com`), or `*` for rules without a host.
    pub host: String,
    pub path: String,
    pub kind: MatchKind,
    /// `namespace/service:port (N ready endpoints)`, with what the Ingress changes in brackets
    /// (`[instance pool=edge, ewma]`), or why it answers 503.
    pub backend: String,
}

/// Everything the report says about one Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IngressReport {
    pub routes: Vec<RouteLine>,
    pub default_backend: Option<String>,
    /// TLS lines: which Secret serves which names, and client authentication.
    pub tls: Vec<String>,
    /// Hosts redirected to one of its rule hosts (`from-to-www-redirect`), as `from -> to`.
    pub host_redirects: Vec<String>,
    /// (reason, message) of every rule skipped.
    pub skipped: Vec<(String, String)>,
}

fn describe_target(snapshot: &Snapshot, entry: &RouteEntry) -> String {
    match snapshot.target(entry) {
        Some(Target::Pool(key)) => {
            let n = snapshot.endpoints.get(key).map(Vec::len).unwrap_or(0);
            let word = if n == 1 { "endpoint" } else { "endpoints" };
            // An `instance` route says so first; `ip` is the default and goes unsaid.
            let mode = match &key.target_type {
                crate::TargetType::Ip => None,
                t => Some(t.to_string()),
            };
            let policy = snapshot.policy(entry).map(describe_policy);
            let filters = snapshot
                .ingresses
                .get(entry.ingress)
                .into_iter()
                .flat_map(|i| i.filters.iter().map(ToString::to_string));
            let canary = entry
                .canary
                .and_then(|c| snapshot.canaries.get(c))
                .map(|c| describe_canary(snapshot, c));
            let policy = mode
                .into_iter()
                .chain(policy)
                .chain(filters)
                .chain(canary)
                .filter(|p| !p.is_empty())
                .collect::<Vec<_>>()
                .join(", ");
            let policy = if policy.is_empty() {
                policy
            } else {
                format!(" [{policy}]")
            };
            format!("{key} ({n} ready {word}){policy}")
        }
        Some(Target::Unresolved { reason }) => format!("503: {reason}"),
        None => "503: unknown target".to_string(),
    }
}

/// A rule's canary: its Ingress, backend, and which requests it takes.
fn describe_canary(snapshot: &Snapshot, canary: &crate::canary::Canary) -> String {
    let ingress = snapshot
        .ingresses
        .get(canary.ingress)
        .map(|i| i.object.to_string())
        .unwrap_or_default();
    let backend = match snapshot.targets.get(canary.target) {
        Some(Target::Pool(key)) => key.to_string(),
        _ => "503".to_string(),
    };
    let r = &canary.rule;
    let mut by = Vec::new();
    if let Some(h) = &r.header {
        match &r.header_value {
            Some(v) => by.push(format!("header {h}={v}")),
            None => by.push(format!("header {h}")),
        }
    }
    if let Some(c) = &r.cookie {
        by.push(format!("cookie {c}"));
    }
    if r.weight > 0 {
        by.push(format!("weight {}/{}", r.weight, r.total));
    }
    format!("canary {ingress} -> {backend} by {}", by.join(" "))
}

/// What an Ingress's annotations change for a route, empty when nothing is.
fn describe_policy(policy: &UpstreamPolicy) -> String {
    let mut parts = Vec::new();
    match &policy.balance {
        Some(Balance::ConsistentHash(by)) => parts.push(match by {
            HashBy::RemoteAddr => "consistent-hash by $remote_addr".to_string(),
            HashBy::Header(h) => format!("consistent-hash by header {h}"),
            HashBy::Cookie(c) => format!("consistent-hash by cookie {c}"),
        }),
        Some(b) => parts.push(b.name().to_string()),
        None => {}
    }
    if let Some(a) = &policy.affinity {
        parts.push(format!("affinity cookie {}", a.name));
    }
    let t = &policy.timeouts;
    for (name, d) in [("connect", t.connect), ("read", t.read), ("send", t.send)] {
        if let Some(d) = d {
            parts.push(format!("{name}-timeout {}ms", d.as_millis()));
        }
    }
    if let Some(p) = policy.protocol.filter(|p| *p != BackendProtocol::Http) {
        parts.push(format!("protocol {}", p.name()));
    }
    match policy.max_body_bytes {
        Some(0) => parts.push("body unlimited".to_string()),
        Some(n) => parts.push(format!("body up to {n} bytes")),
        None => {}
    }
    if let Some(d) = policy.client_body_timeout {
        parts.push(format!("client-body-timeout {}ms", d.as_millis()));
    }
    if policy.forward_raw_path {
        parts.push("raw path upstream".to_string());
    }
    parts.join(", ")
}

/// The report of every served or skipped Ingress, by `namespace/name`.
pub fn report(snapshot: &Snapshot) -> BTreeMap<ObjectRef, IngressReport> {
    let mut out: BTreeMap<ObjectRef, IngressReport> = BTreeMap::new();
    for served in &snapshot.ingresses {
        out.entry(served.object.clone()).or_default();
    }
    for (host, routes) in snapshot.routes.hosts() {
        for (path, kind, entry) in routes.rules() {
            let Some(ingress) = snapshot.ingresses.get(entry.ingress) else {
                continue;
            };
            out.entry(ingress.object.clone())
                .or_default()
                .routes
                .push(RouteLine {
                    host: host.clone(),
                    path,
                    kind,
                    backend: describe_target(snapshot, &entry),
                });
        }
    }
    if let Some(entry) = snapshot.routes.default_backend() {
        if let Some(ingress) = snapshot.ingresses.get(entry.ingress) {
            out.entry(ingress.object.clone())
                .or_default()
                .default_backend = Some(describe_target(snapshot, entry));
        }
    }
    for u in &snapshot.tls.uses {
        let line = match u.purpose {
            SecretPurpose::Certificate => {
                format!("{} <- Secret {}", u.hosts.join(", "), u.secret)
            }
            SecretPurpose::ClientCa => format!(
                "{} client certificates checked against Secret {}",
                u.hosts.join(", "),
                u.secret
            ),
        };
        out.entry(u.ingress.clone()).or_default().tls.push(line);
    }
    for (host, t) in snapshot.tls.hosts() {
        if let Some(from) = &t.client_auth_from {
            out.entry(from.clone()).or_default().tls.push(format!(
                "{host} client-auth {}",
                t.client_auth.mode.as_str()
            ));
        }
    }
    for (from, to) in &snapshot.host_redirects {
        let by = snapshot.routes.host_routes(to).and_then(|h| {
            h.iter()
                .filter_map(|(_, _, e)| snapshot.ingresses.get(e.ingress))
                .find(|i| {
                    i.annotations
                        .contains_key(crate::rules::FROM_TO_WWW_REDIRECT)
                })
        });
        if let Some(i) = by {
            out.entry(i.object.clone())
                .or_default()
                .host_redirects
                .push(format!("{from} -> {to} (308)"));
        }
    }
    for s in &snapshot.skipped {
        out.entry(s.ingress.clone())
            .or_default()
            .skipped
            .push((s.reason.as_str().to_string(), s.message.clone()));
    }
    out
}

/// The report as text, one block per Ingress.
pub fn render(snapshot: &Snapshot) -> String {
    let mut text = String::new();
    for (ingress, r) in report(snapshot) {
        let _ = writeln!(text, "Ingress {ingress}");
        if r.routes.is_empty()
            && r.default_backend.is_none()
            && r.skipped.is_empty()
            && r.tls.is_empty()
            && r.host_redirects.is_empty()
        {
            let _ = writeln!(text, "  (no rules)");
        }
        for line in &r.routes {
            let kind = match line.kind {
                MatchKind::Exact => "Exact",
                MatchKind::Prefix => "Prefix",
                MatchKind::Regex => "Regex",
            };
            let _ = writeln!(
                text,
                "  route    {} {} ({kind}) -> {}",
                line.host, line.path, line.backend
            );
        }
        if let Some(d) = &r.default_backend {
            let _ = writeln!(text, "  default  -> {d}");
        }
        for line in &r.host_redirects {
            let _ = writeln!(text, "  redirect {line}");
        }
        for line in &r.tls {
            let _ = writeln!(text, "  tls      {line}");
        }
        for (reason, message) in &r.skipped {
            let _ = writeln!(text, "  skipped  {reason}: {message}");
        }
    }
    if text.is_empty() {
        text.push_str("no Ingress is served\n");
    }
    text
}

#[cfg(test)]
mod tests;
