//! Adding canary Ingresses to a snapshot: each of their rules becomes the canary of the identical
//! rule already in the table ([`crate::canary`]).

use crate::annotations::{upstream_policy, DEFAULT_SESSION_COOKIE_NAME};
use crate::canary::Canary;
use crate::finding::Reason;
use crate::hostmap::HostName;
use crate::model::IngressInput;
use crate::ownership::host_text;
use crate::routes::{normalize_prefix, parse_rule_host, MatchKind};
use crate::targets::TargetType;

use super::{At, Builder, Target};

/// The affinity cookie of a canary whose Ingress names none: not the primary's default, so the
/// two pools' cookies never overwrite each other.
pub const DEFAULT_CANARY_COOKIE_NAME: &str = "SLUICE_AFFINITY_CANARY";

impl Builder<'_> {
    /// Makes each rule of the canary Ingress at `index` the canary of the identical rule of a
    /// primary, reporting the rules that have none.
    pub(super) fn add_canary(&mut self, index: usize, ingress: &IngressInput) {
        let (rule, bad) = crate::canary::rule(&ingress.annotations);
        for message in bad {
            self.skip(ingress, Reason::InvalidAnnotation, message);
        }
        let (own, bad) = upstream_policy(&ingress.annotations);
        for b in bad {
            self.skip(ingress, Reason::InvalidAnnotation, b.to_string());
        }
        let mut affinity = own.affinity;
        if let Some(a) = affinity
            .as_mut()
            .filter(|a| a.name == DEFAULT_SESSION_COOKIE_NAME)
        {
            a.name = DEFAULT_CANARY_COOKIE_NAME.to_string();
        }
        if ingress.default_backend.is_some() {
            let message = "spec.defaultBackend: a canary Ingress has no default backend".into();
            self.skip(ingress, Reason::NoPrimary, message);
        }
        for (ri, r) in ingress.rules.iter().enumerate() {
            // A partial build covers the rules of its hosts alone (an invalid host is reported
            // as a whole build reports it).
            if let (Some(only), Ok(key)) = (self.only, parse_rule_host(r.host.as_deref())) {
                if !only.contains(&HostName::from(key)) {
                    continue;
                }
            }
            for (pi, p) in r.paths.iter().enumerate() {
                let at = At::Path(ri, pi);
                let Some((host_key, path, kind)) = self.primary_rule(
                    ingress,
                    r.host.as_deref(),
                    p.path.as_deref(),
                    p.path_type.as_deref(),
                ) else {
                    let message = format!(
                        "{at}: no Ingress of the namespace that owns host `{}` serves path `{}` ({}) for this canary",
                        r.host.as_deref().unwrap_or("*"),
                        p.path.as_deref().unwrap_or(""),
                        p.path_type.as_deref().unwrap_or("")
                    );
                    self.skip(ingress, Reason::NoPrimary, message);
                    continue;
                };
                let host = self.snapshot.routes.host_mut(host_key);
                let Some(primary) = host.get(&path, kind).copied() else {
                    continue;
                };
                if let Some(other) = primary.canary {
                    let other = self
                        .snapshot
                        .canaries
                        .get(other)
                        .and_then(|c| self.snapshot.ingresses.get(c.ingress))
                        .map(|i| i.object.to_string())
                        .unwrap_or_default();
                    let message = format!("{at}: the rule already has the canary {other}");
                    self.skip(ingress, Reason::ConflictingRule, message);
                    continue;
                }
                // The primary's policy, with the canary's own balancing and affinity, and the
                // protocol its annotation names (else the canary Service's appProtocol).
                let Some(mut policy) = self.snapshot.policies.get(primary.target).cloned() else {
                    continue;
                };
                let primary_annotations = self
                    .snapshot
                    .ingresses
                    .get(primary.ingress)
                    .map(|i| &i.annotations);
                policy.protocol = primary_annotations.and_then(|a| upstream_policy(a).0.protocol);
                policy.balance = own.balance.clone();
                policy.affinity = affinity.clone();
                self.policy = policy;
                self.target_type = match self.snapshot.targets.get(primary.target) {
                    Some(Target::Pool(k)) => k.target_type.clone(),
                    _ => TargetType::default(),
                };
                self.resolved.clear();
                let target = self.resolve(ingress, &p.backend, at);
                let canary = self.snapshot.canaries.len();
                self.snapshot.canaries.push(Canary {
                    ingress: index,
                    target,
                    rule: rule.clone(),
                });
                if let Some(e) = self.snapshot.routes.host_mut(host_key).get_mut(&path, kind) {
                    e.canary = Some(canary);
                }
            }
        }
    }

    /// The (host, path, kind) of the primary rule identical to a canary's, when a non-canary
    /// Ingress of the namespace that owns the host (the canary's own) serves it.
    fn primary_rule<'h>(
        &self,
        ingress: &IngressInput,
        host: Option<&'h str>,
        path: Option<&str>,
        path_type: Option<&str>,
    ) -> Option<(crate::routes::HostKey<'h>, String, MatchKind)> {
        let host_key = parse_rule_host(host).ok()?;
        let owner = host_text(&host_key).and_then(|h| self.ownership.owner(&h));
        if owner.is_some_and(|o| o.namespace != ingress.namespace) {
            return None;
        }
        let routes = self.snapshot.routes.host_map().get_key(&host_key)?;
        let raw = path.filter(|p| !p.is_empty()).unwrap_or("/");
        let normal = crate::path::rule_path(raw).ok()?;
        let candidates: &[(String, MatchKind)] = &match path_type? {
            "Exact" => vec![(normal.to_string(), MatchKind::Exact)],
            "Prefix" => vec![(normalize_prefix(&normal).to_string(), MatchKind::Prefix)],
            "ImplementationSpecific" => vec![
                (raw.to_string(), MatchKind::Regex),
                (normalize_prefix(&normal).to_string(), MatchKind::Prefix),
            ],
            _ => return None,
        };
        let (path, kind) = candidates.iter().find(|(p, k)| {
            routes.get(p, *k).is_some_and(|e| {
                self.snapshot
                    .ingresses
                    .get(e.ingress)
                    .is_some_and(|i| i.object.namespace == ingress.namespace)
            })
        })?;
        Some((host_key, path.clone(), *kind))
    }
}
