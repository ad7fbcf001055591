//! Findings: what snapshot building (and the certificate store) did not serve as written.
//!
//! Every finding names its Ingress, a [`Reason`] and a message, and has an [`Effect`]: the rule
//! or entry was skipped, a default was used in place of a bad value, or an older object keeps
//! what the finding's object also asks for. Findings reach the log, Kubernetes Events, the
//! `sluice_rules_skipped` gauge and `sluice check`; a bad object degrades only itself.

use crate::model::ObjectRef;

/// What a finding did to the object it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Effect {
    /// The rule, path or entry is not served as written: it is left out, or answers 503 where
    /// its backend cannot be resolved or a policy annotation of its Ingress is invalid (never a
    /// shorter path's backend).
    Skipped,
    /// It is served with a default in place of the bad value: the default of an annotation (a
    /// client-auth annotation fails closed instead, see [`crate::tls`]), the default
    /// certificate, HTTP/1.1 for an unknown `appProtocol`, a path in its normalized form.
    Defaulted,
    /// An older object keeps what this one also asks for (the same host and path, the default
    /// backend).
    Conflicting,
}

impl Effect {
    pub fn as_str(&self) -> &'static str {
        match self {
            Effect::Skipped => "skipped",
            Effect::Defaulted => "defaulted",
            Effect::Conflicting => "conflicting",
        }
    }
}

/// Why something is not served as written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    InvalidHost,
    InvalidPath,
    InvalidPathType,
    MissingService,
    MissingPort,
    UnsupportedBackend,
    ConflictingRule,
    /// A `sluice.dev/` annotation with a value sluice does not accept.
    InvalidAnnotation,
    /// A `sluice.dev/` policy annotation ([`crate::rules`]) with a value sluice does not
    /// accept: the Ingress's routes answer 503 (fail closed). Reported under the same name as
    /// [`Reason::InvalidAnnotation`].
    InvalidPolicy,
    /// A Secret named by `spec.tls` or an annotation does not exist.
    MissingSecret,
    /// A Secret that exists but cannot serve: wrong type, missing keys, malformed or mismatched
    /// certificate and key.
    InvalidSecret,
    /// A Service port's `appProtocol` names a protocol sluice does not know; HTTP/1.1 is used.
    UnknownAppProtocol,
    /// An `instance` route's Service port has no `nodePort` (a ClusterIP Service).
    MissingNodePort,
    /// A `spec.tls` entry, a client-auth annotation or (with `cross_namespace_paths = "deny"`)
    /// a rule for a host that another namespace owns ([`crate::ownership`]).
    HostNotOwned,
    /// A certificate whose names (SAN, or CN without SAN) do not cover a host it is listed for.
    CertificateNameMismatch,
    /// A rule of a canary Ingress (`sluice.dev/canary`) without an identical rule of a
    /// non-canary Ingress in the namespace that owns the host.
    NoPrimary,
    /// A rule's path is not in normal form (`//`, `.`/`..` segments, escaped unreserved
    /// characters, path parameters): it is served as normalized, as requests are matched.
    NormalizedPath,
}

impl Reason {
    /// A stable, machine-friendly name (used for Event reasons and metric labels).
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::InvalidHost => "InvalidHost",
            Reason::InvalidPath => "InvalidPath",
            Reason::InvalidPathType => "InvalidPathType",
            Reason::MissingService => "MissingService",
            Reason::MissingPort => "MissingPort",
            Reason::UnsupportedBackend => "UnsupportedBackend",
            Reason::ConflictingRule => "ConflictingRule",
            Reason::InvalidAnnotation | Reason::InvalidPolicy => "InvalidAnnotation",
            Reason::MissingSecret => "MissingSecret",
            Reason::InvalidSecret => "InvalidSecret",
            Reason::UnknownAppProtocol => "UnknownAppProtocol",
            Reason::MissingNodePort => "MissingNodePort",
            Reason::HostNotOwned => "HostNotOwned",
            Reason::CertificateNameMismatch => "CertificateNameMismatch",
            Reason::NormalizedPath => "NormalizedPath",
            Reason::NoPrimary => "NoPrimary",
        }
    }
}

/// Something about an Ingress that is not served as written: where, why, and (through its
/// reason) with what effect.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub ingress: ObjectRef,
    pub reason: Reason,
    pub message: String,
}

impl Reason {
    /// What a finding of this reason does.
    pub fn effect(&self) -> Effect {
        match self {
            Reason::ConflictingRule => Effect::Conflicting,
            Reason::InvalidAnnotation
            | Reason::MissingSecret
            | Reason::InvalidSecret
            | Reason::UnknownAppProtocol
            | Reason::CertificateNameMismatch
            | Reason::NormalizedPath => Effect::Defaulted,
            Reason::InvalidHost
            | Reason::InvalidPath
            | Reason::InvalidPathType
            | Reason::MissingService
            | Reason::MissingPort
            | Reason::UnsupportedBackend
            | Reason::MissingNodePort
            | Reason::HostNotOwned
            | Reason::InvalidPolicy
            | Reason::NoPrimary => Effect::Skipped,
        }
    }
}

impl Finding {
    /// What this finding did ([`Reason::effect`]).
    pub fn effect(&self) -> Effect {
        self.reason.effect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::build;
    use crate::fixtures::{backend, class_policy, ingress, service};
    use crate::model::Inputs;

    #[test]
    fn each_finding_says_whether_it_skipped_defaulted_or_lost_to_an_older_object() {
        let inputs = Inputs {
            ingresses: vec![
                ingress("default", "old")
                    .created(1)
                    .host("a.test")
                    .path("/", "Prefix", backend("web", 80))
                    .build(),
                ingress("default", "new")
                    .created(2)
                    .annotation("sluice.dev/read-timeout", "soon")
                    .host("a.test")
                    .path("/", "Prefix", backend("web", 80))
                    .path("/ghost", "Prefix", backend("ghost", 80))
                    .build(),
            ],
            services: vec![service("default", "web").port("http", 80).build()],
            ..Inputs::default()
        };
        let snapshot = build(&inputs, &class_policy());
        let effects: Vec<(&str, Effect)> = snapshot
            .skipped
            .iter()
            .map(|f| (f.reason.as_str(), f.effect()))
            .collect();
        assert_eq!(
            effects,
            [
                ("MissingService", Effect::Skipped),
                ("ConflictingRule", Effect::Conflicting),
                ("InvalidAnnotation", Effect::Defaulted),
            ],
            "{:?}",
            snapshot.skipped
        );
    }
}
