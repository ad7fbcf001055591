//! The SNI certificate store: parsed certificates and client-auth settings per name, built whole
//! at each publish and read by handshakes without locks.
//!
//! [`TlsStoreBuilder`] lives with the state writer and keeps what it parsed, keyed by Secret and
//! compared by content, so a publish parses only Secrets whose bytes changed. Problems found while
//! parsing (malformed PEM, a key that does not match its certificate) are reported as skipped
//! rules of every Ingress that uses the Secret, and only its names fall back to the default
//! certificate. A certificate is a candidate only for the names it covers (its SANs, or its CN
//! without SANs); for the other names that list its Secret it is skipped and reported.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use sluice_config::finding::{Finding, Reason};
use sluice_config::hostmap::{normalize_host, HostKey, HostMap};
use sluice_config::model::ObjectRef;
use sluice_config::tls::{choose, covers, ClientAuthMode, SecretPurpose, TlsPolicy};

use super::certs::{CertError, ClientCa, ServingCert};
use super::material::{SecretData, SecretMaterial};

/// How a name treats client certificates, resolved to parsed trust.
#[derive(Debug)]
pub struct ClientAuthEntry {
    pub mode: ClientAuthMode,
    /// `None` with `Verify` or `Optional`: nothing verifies (fails closed).
    pub ca: Option<Arc<ClientCa>>,
    pub verify_depth: u32,
}

/// Everything a handshake needs for one name.
#[derive(Debug)]
pub struct HostEntry {
    /// The name as written (`a.example.com`, `*.example.com`), or `default`.
    pub name: String,
    /// Usable candidates, in policy order; empty means the default certificate.
    pub certs: Vec<Arc<ServingCert>>,
    /// `None` when the name asks for no client certificate.
    pub client_auth: Option<ClientAuthEntry>,
}

impl HostEntry {
    /// The certificates to serve at `now` (Unix seconds): the best valid one of each key type,
    /// ECDSA first (see `sluice_config::tls::choose`). Empty when none is valid.
    pub fn select(&self, now: i64) -> Vec<&Arc<ServingCert>> {
        let facts: Vec<_> = self.certs.iter().map(|c| c.facts).collect();
        choose(&facts, now)
            .indices()
            .filter_map(|i| self.certs.get(i))
            .collect()
    }
}

/// The immutable store handshakes read.
#[derive(Debug)]
pub struct TlsStore {
    names: HostMap<Arc<HostEntry>>,
    default: Arc<HostEntry>,
}

impl TlsStore {
    /// A store that serves `default` for every name.
    pub fn only_default(default: Vec<Arc<ServingCert>>) -> TlsStore {
        TlsStore {
            names: HostMap::default(),
            default: Arc::new(HostEntry {
                name: "default".to_string(),
                certs: default,
                client_auth: None,
            }),
        }
    }

    /// The entry for a server name: exact, else a wildcard one label up; `None` for no SNI or a
    /// name no Ingress lists.
    pub fn find(&self, server_name: Option<&str>) -> Option<&Arc<HostEntry>> {
        self.names.get_named(&normalize_host(server_name?))
    }

    pub fn default_entry(&self) -> &Arc<HostEntry> {
        &self.default
    }

    /// The certificates to serve for a name at `now`: the name's own when one is valid, else the
    /// default certificate.
    pub fn certificates_for<'a>(
        &'a self,
        entry: Option<&'a HostEntry>,
        now: i64,
    ) -> Vec<&'a Arc<ServingCert>> {
        if let Some(e) = entry {
            let chosen = e.select(now);
            if !chosen.is_empty() {
                return chosen;
            }
        }
        let chosen = self.default.select(now);
        if chosen.is_empty() {
            // An expired default is still better than no certificate at all.
            return self.default.certs.iter().take(1).collect();
        }
        chosen
    }
}

/// What the builder remembers of one Secret between publishes.
struct Parsed<T> {
    data: Arc<SecretData>,
    result: Result<Arc<T>, CertError>,
}

/// Builds stores, parsing each Secret once per content change.
pub struct TlsStoreBuilder {
    /// The certificate used when no default Secret is set or it is unusable.
    fallback: Arc<ServingCert>,
    default_secret: Option<ObjectRef>,
    certs: HashMap<ObjectRef, Parsed<ServingCert>>,
    cas: HashMap<ObjectRef, Parsed<ClientCa>>,
    /// The default Secret as last parsed.
    default_parsed: Option<Parsed<ServingCert>>,
    /// The last default-Secret problem logged, to say it once.
    default_problem: Option<String>,
}

/// A built store and the problems found building it.
pub struct Built {
    pub store: TlsStore,
    pub skipped: Vec<Finding>,
}

fn cached<T>(
    cache: &mut HashMap<ObjectRef, Parsed<T>>,
    key: &ObjectRef,
    data: &Arc<SecretData>,
    parse: impl FnOnce(&SecretData) -> Result<T, CertError>,
) -> Result<Arc<T>, CertError> {
    if let Some(p) = cache.get(key) {
        if Arc::ptr_eq(&p.data, data) || p.data == *data {
            return p.result.clone();
        }
    }
    let result = parse(data).map(Arc::new);
    match &result {
        Ok(_) => tracing::info!(secret = %key, "parsed TLS material"),
        Err(e) => tracing::debug!(secret = %key, error = %e, "TLS material unusable"),
    }
    cache.insert(
        key.clone(),
        Parsed {
            data: data.clone(),
            result: result.clone(),
        },
    );
    result
}

fn serving(key: &ObjectRef, d: &SecretData) -> Result<ServingCert, CertError> {
    let crt = d
        .tls_crt
        .as_deref()
        .ok_or(CertError::Missing { key: "tls.crt" })?;
    let k = d
        .tls_key
        .as_deref()
        .ok_or(CertError::Missing { key: "tls.key" })?;
    ServingCert::parse(crt, k, format!("Secret {key}"))
}

fn client_ca(d: &SecretData) -> Result<ClientCa, CertError> {
    let ca = d
        .ca_crt
        .as_deref()
        .ok_or(CertError::Missing { key: "ca.crt" })?;
    ClientCa::parse(ca)
}

impl TlsStoreBuilder {
    pub fn new(fallback: Arc<ServingCert>, default_secret: Option<ObjectRef>) -> Self {
        TlsStoreBuilder {
            fallback,
            default_secret,
            certs: HashMap::new(),
            cas: HashMap::new(),
            default_parsed: None,
            default_problem: None,
        }
    }

    /// The store before any Secret is known.
    pub fn initial(&self) -> TlsStore {
        TlsStore::only_default(vec![self.fallback.clone()])
    }

    /// Builds the store for `policy` from `material`, parsing only what changed.
    pub fn build(&mut self, policy: &TlsPolicy, material: &SecretMaterial) -> Built {
        let mut failed: BTreeMap<(ObjectRef, SecretPurpose), CertError> = BTreeMap::new();
        // Secrets whose certificate does not cover some of the names listing them: its names,
        // and those names.
        let mut uncovered: BTreeMap<ObjectRef, (Vec<String>, BTreeSet<String>)> = BTreeMap::new();
        let mut names = HostMap::default();
        for (name, host) in policy.hosts() {
            let mut certs = Vec::new();
            for key in &host.secrets {
                let Some(data) = material.get(key) else {
                    continue;
                };
                match cached(&mut self.certs, key, data, |d| serving(key, d)) {
                    Ok(c) if covers(&c.names, &name) => certs.push(c),
                    Ok(c) => {
                        uncovered
                            .entry(key.clone())
                            .or_insert_with(|| (c.names.clone(), BTreeSet::new()))
                            .1
                            .insert(name.clone());
                    }
                    Err(e) => {
                        failed.insert((key.clone(), SecretPurpose::Certificate), e);
                    }
                }
            }
            let client_auth = match host.client_auth.mode {
                ClientAuthMode::Off => None,
                mode => {
                    let verifies =
                        matches!(mode, ClientAuthMode::Verify | ClientAuthMode::Optional);
                    let mut ca = None;
                    if let (true, Some(key)) = (verifies, &host.client_auth.ca_secret) {
                        if let Some(data) = material.get(key) {
                            match cached(&mut self.cas, key, data, client_ca) {
                                Ok(c) => ca = Some(c),
                                Err(e) => {
                                    failed.insert((key.clone(), SecretPurpose::ClientCa), e);
                                }
                            }
                        }
                    }
                    Some(ClientAuthEntry {
                        mode,
                        ca,
                        verify_depth: host.client_auth.verify_depth,
                    })
                }
            };
            let entry = Arc::new(HostEntry {
                name: name.clone(),
                certs,
                client_auth,
            });
            let key = match name.strip_prefix("*.") {
                Some(suffix) => HostKey::Wildcard(suffix),
                None => HostKey::Exact(&name),
            };
            names.insert(&key, entry);
        }

        let default = self.default_certs(material);
        // Forget Secrets no longer used, so a deleted Secret's key material does not linger.
        let used = policy.secrets();
        self.certs
            .retain(|k, _| used.contains(&(k.clone(), SecretPurpose::Certificate)));
        self.cas
            .retain(|k, _| used.contains(&(k.clone(), SecretPurpose::ClientCa)));

        let mut skipped = Vec::new();
        for u in &policy.uses {
            let Some((names, hosts)) = uncovered.get(&u.secret) else {
                continue;
            };
            let hosts: Vec<&str> = u
                .hosts
                .iter()
                .filter(|h| u.purpose == SecretPurpose::Certificate && hosts.contains(*h))
                .map(String::as_str)
                .collect();
            if hosts.is_empty() {
                continue;
            }
            let names = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            skipped.push(Finding {
                ingress: u.ingress.clone(),
                reason: Reason::CertificateNameMismatch,
                message: format!(
                    "Secret {}: its certificate is for {names}, which does not cover {}; it is not served for them",
                    u.secret,
                    hosts.join(", ")
                ),
            });
        }
        for u in &policy.uses {
            let Some(e) = failed.get(&(u.secret.clone(), u.purpose)) else {
                continue;
            };
            let hosts = u.hosts.join(", ");
            let consequence = match u.purpose {
                SecretPurpose::Certificate => format!("{hosts} get the default certificate"),
                SecretPurpose::ClientCa => format!("{hosts} refuse every client certificate"),
            };
            skipped.push(Finding {
                ingress: u.ingress.clone(),
                reason: Reason::InvalidSecret,
                message: format!("Secret {}: {e}; {consequence}", u.secret),
            });
        }
        Built {
            store: TlsStore {
                names,
                default: Arc::new(HostEntry {
                    name: "default".to_string(),
                    certs: default,
                    client_auth: None,
                }),
            },
            skipped,
        }
    }

    /// The default certificate: the default Secret's when set and usable, else the fallback.
    fn default_certs(&mut self, material: &SecretMaterial) -> Vec<Arc<ServingCert>> {
        let Some(key) = self.default_secret.clone() else {
            return vec![self.fallback.clone()];
        };
        let problem = match material.get(&key) {
            None => format!("the default certificate Secret {key} does not exist"),
            Some(data) => {
                let parsed = match &self.default_parsed {
                    Some(p) if p.data == *data => p.result.clone(),
                    _ => {
                        let result = serving(&key, data).map(Arc::new);
                        self.default_parsed = Some(Parsed {
                            data: data.clone(),
                            result: result.clone(),
                        });
                        result
                    }
                };
                match parsed {
                    Ok(c) => {
                        if self.default_problem.take().is_some() {
                            tracing::info!(secret = %key, "the default certificate Secret is usable again");
                        }
                        return vec![c];
                    }
                    Err(e) => format!("the default certificate Secret {key}: {e}"),
                }
            }
        };
        if self.default_problem.as_deref() != Some(problem.as_str()) {
            tracing::warn!("{problem}; serving a generated self-signed certificate instead");
            self.default_problem = Some(problem);
        }
        vec![self.fallback.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_config::model::{IngressInput, Inputs, SecretInput, TlsInput};
    use sluice_config::ClassPolicy;

    fn policy() -> TlsPolicy {
        let ingress = IngressInput {
            namespace: "web".into(),
            name: "site".into(),
            class_name: Some("sluice".into()),
            tls: vec![TlsInput {
                hosts: vec!["a.test".into(), "*.b.test".into()],
                secret_name: Some("site-tls".into()),
            }],
            ..Default::default()
        };
        let secret = SecretInput {
            namespace: "web".into(),
            name: "site-tls".into(),
            type_: "kubernetes.io/tls".into(),
            keys: ["tls.crt".to_string(), "tls.key".to_string()].into(),
        };
        let inputs = Inputs {
            ingresses: vec![ingress],
            secrets: vec![secret],
            ..Default::default()
        };
        let class = ClassPolicy {
            controller: "c".into(),
            class_name: "sluice".into(),
            serve_classless: false,
        };
        sluice_config::build(&inputs, &class).tls
    }

    fn material(crt: &ServingCert, key: &ServingCert) -> SecretMaterial {
        let data = SecretData {
            tls_crt: crt.leaf.to_pem().ok().map(Arc::from),
            tls_key: key.key.private_key_to_pem_pkcs8().ok().map(Arc::from),
            ca_crt: None,
            keys: None,
        };
        [(ObjectRef::new("web", "site-tls"), Arc::new(data))].into()
    }

    fn served(store: &TlsStore, name: &str) -> Option<Arc<ServingCert>> {
        store.find(Some(name))?.certs.first().cloned()
    }

    #[test]
    fn a_secret_is_parsed_once_and_again_only_when_its_bytes_change() {
        let fallback = Arc::new(ServingCert::self_signed().unwrap());
        let (one, two) = (
            ServingCert::self_signed_for(&["a.test", "*.b.test"]).unwrap(),
            ServingCert::self_signed_for(&["a.test", "*.b.test"]).unwrap(),
        );
        let mut b = TlsStoreBuilder::new(fallback.clone(), None);
        let p = policy();
        let first = b.build(&p, &material(&one, &one));
        assert!(first.skipped.is_empty());
        let a = served(&first.store, "a.test").unwrap();
        // Both names share one parsed certificate.
        assert!(Arc::ptr_eq(&a, &served(&first.store, "x.b.test").unwrap()));
        // Equal bytes (even in a new allocation) are not parsed again.
        let again = b.build(&p, &material(&one, &one));
        assert!(Arc::ptr_eq(&a, &served(&again.store, "a.test").unwrap()));
        let rotated = b.build(&p, &material(&two, &two));
        let r = served(&rotated.store, "a.test").unwrap();
        assert!(!Arc::ptr_eq(&a, &r));
        assert_eq!(r.leaf.to_der().unwrap(), two.leaf.to_der().unwrap());

        // A key that does not match: the names fall back to the default, the Ingress hears why.
        let broken = b.build(&p, &material(&one, &two));
        assert!(served(&broken.store, "a.test").is_none());
        let certs = broken
            .store
            .certificates_for(broken.store.find(Some("a.test")).map(|e| &**e), 0);
        assert!(Arc::ptr_eq(certs[0], &fallback));
        assert_eq!(broken.skipped.len(), 1);
        assert_eq!(broken.skipped[0].reason, Reason::InvalidSecret);
        assert_eq!(
            broken.skipped[0].message,
            "Secret web/site-tls: tls.key does not match the certificate in tls.crt; \
             *.b.test, a.test get the default certificate"
        );
    }

    #[test]
    fn a_certificate_serves_only_the_names_it_covers_and_the_others_are_reported() {
        let fallback = Arc::new(ServingCert::self_signed().unwrap());
        let mut b = TlsStoreBuilder::new(fallback.clone(), None);
        let p = policy();
        for (cert_names, a_test, b_wildcard, reported) in [
            (vec!["a.test", "*.b.test"], true, true, None),
            (vec!["a.test"], true, false, Some("*.b.test")),
            (
                vec!["x.b.test", "*.test"],
                false,
                false,
                Some("*.b.test, a.test"),
            ),
            // Without SANs the CN counts: `sluice default certificate` covers neither.
            (vec![], false, false, Some("*.b.test, a.test")),
        ] {
            let cert = ServingCert::self_signed_for(&cert_names).unwrap();
            let built = b.build(&p, &material(&cert, &cert));
            assert_eq!(
                served(&built.store, "a.test").is_some(),
                a_test,
                "{cert_names:?}"
            );
            assert_eq!(
                served(&built.store, "x.b.test").is_some(),
                b_wildcard,
                "{cert_names:?}"
            );
            let got: Vec<&Finding> = built
                .skipped
                .iter()
                .filter(|s| s.reason == Reason::CertificateNameMismatch)
                .collect();
            match reported {
                None => assert!(got.is_empty(), "{cert_names:?}: {got:?}"),
                Some(hosts) => {
                    assert_eq!(got.len(), 1, "{cert_names:?}: {got:?}");
                    assert!(
                        got[0].message.contains(&format!("does not cover {hosts};")),
                        "{}",
                        got[0].message
                    );
                }
            }
        }
    }
}
