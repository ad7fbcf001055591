//! Client authentication, per host, by annotations.
//!
//! # How the annotations of several Ingresses combine
//!
//! The annotations of an Ingress apply to every name in its `spec.tls`. When several Ingresses of
//! the owning namespace set them for a name, the strictest mode applies (`verify` > `optional` >
//! `passthrough` > `off`), the CA and the verify depth come from the oldest Ingress that sets
//! each, and every overruled Ingress is reported. A bad value fails closed: the name requires a
//! client certificate that nothing can verify, so handshakes for it fail until the annotation is
//! fixed.
//!

use super::*;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Requested {
    pub(super) auth: ClientAuth,
    /// `sluice.dev/client-ca-secret` is set for a mode that verifies (even if unusable).
    pub(super) sets_ca: bool,
    /// `sluice.dev/client-verify-depth` is set (even if invalid).
    pub(super) sets_depth: bool,
    /// The mode is not a known value: its hosts fail closed whatever else is set.
    pub(super) broken: bool,
}

/// The client authentication an Ingress's annotations ask for (`None` when it sets none), and
/// what is wrong with them. Errors fail closed.
pub(super) fn client_auth_of(ingress: &IngressInput) -> (Option<Requested>, Vec<String>) {
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
pub(super) struct Resolved {
    pub(super) auth: ClientAuth,
    /// The Ingress whose mode applies.
    pub(super) from: ObjectRef,
    /// The Ingress whose CA applies, if one does.
    pub(super) ca_from: Option<ObjectRef>,
    /// (Ingress, message) for every request that is overruled.
    pub(super) overruled: Vec<(ObjectRef, String)>,
}

/// A host's client authentication from what the owning namespace's Ingresses ask for (oldest
/// first): the strictest mode, the CA and depth of the oldest Ingress that sets each; a bad mode
/// anywhere fails closed.
pub(super) fn resolve_client_auth(
    host: &str,
    requests: &[(ObjectRef, Requested)],
) -> Option<Resolved> {
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
