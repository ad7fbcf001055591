//! Parsing certificate material once, when a Secret (or the default certificate) changes.

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openssl::stack::{Stack, StackRef};
use openssl::x509::store::{X509Store, X509StoreBuilder};
use openssl::x509::{X509Name, X509Ref, X509StoreContext, X509};
use sluice_config::tls::{CertFacts, KeyAlgorithm};

/// Why certificate material cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("{key} is missing")]
    Missing { key: &'static str },
    #[error("{key} holds no PEM certificate")]
    NoCertificate { key: &'static str },
    #[error("{key} is not valid PEM: {detail}")]
    Malformed { key: &'static str, detail: String },
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    #[error("cannot build a certificate: {0}")]
    Build(String),
}

/// Why the default certificate files cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    #[error("{path}: {source}", path = .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{certificate} and {key}: {error}", certificate = .certificate.display(), key = .key.display())]
    Material {
        certificate: PathBuf,
        key: PathBuf,
        #[source]
        error: CertError,
    },
}

/// Why a client certificate is not trusted; the text follows `FAILED:` in the verdict header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("no trusted CA is configured")]
    NoTrustedCa,
    /// OpenSSL's reason, such as `certificate has expired`.
    #[error("{0}")]
    Rejected(String),
    #[error("certificate chain too long")]
    ChainTooLong,
}

fn detail(e: openssl::error::ErrorStack) -> String {
    // OpenSSL error stacks repeat file and line details; the first reason says enough.
    e.errors()
        .first()
        .and_then(|e| e.reason().map(str::to_string))
        .unwrap_or_else(|| e.to_string())
}

/// A certificate with its chain and key, ready to hand to a handshake.
pub struct ServingCert {
    pub leaf: X509,
    /// Intermediates, in the order `tls.crt` lists them after the leaf.
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
    pub facts: CertFacts,
    /// The names it is valid for ([`names`]), compared with `sluice_config::tls::covers`.
    pub names: Vec<String>,
    /// Where it came from, for logs: `Secret ns/name`, a file path, `generated`.
    pub source: String,
}

impl std::fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCert")
            .field("source", &self.source)
            .field("facts", &self.facts)
            .field("names", &self.names)
            .finish()
    }
}

/// Unix seconds of an ASN.1 time.
fn unix(t: &Asn1TimeRef) -> Option<i64> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    Some(i64::from(d.days) * 86_400 + i64::from(d.secs))
}

/// Security bits of a certificate's signature, by its hash (see `CertFacts::signature_bits`).
fn signature_bits(cert: &X509Ref) -> u32 {
    let nid = cert.signature_algorithm().object().nid();
    let Some(algs) = nid.signature_algorithms() else {
        return 0;
    };
    match algs.digest {
        Nid::MD5 => 0,
        Nid::SHA1 => 63,
        Nid::SHA224 => 112,
        Nid::SHA256 => 128,
        Nid::SHA384 => 192,
        Nid::SHA512 => 256,
        _ => {
            let pkey = algs.pkey.as_raw();
            if pkey == Id::ED25519.as_raw() || algs.pkey == Nid::RSASSAPSS {
                128
            } else if pkey == Id::ED448.as_raw() {
                224
            } else {
                0
            }
        }
    }
}

/// The selection facts of a certificate and its key.
pub fn facts(leaf: &X509Ref, key: &PKey<Private>) -> CertFacts {
    let alg = match key.id() {
        Id::EC => KeyAlgorithm::Ecdsa,
        Id::RSA => KeyAlgorithm::Rsa,
        _ => KeyAlgorithm::Other,
    };
    CertFacts {
        key: alg,
        key_bits: key.bits(),
        signature_bits: signature_bits(leaf),
        not_before: unix(leaf.not_before()).unwrap_or(i64::MAX),
        not_after: unix(leaf.not_after()).unwrap_or(i64::MIN),
    }
}

/// The names a certificate is valid for, lowercased: its DNS and IP subject alternative names, or
/// its common names when it has neither (as clients check them, RFC 6125).
pub fn names(leaf: &X509Ref) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(sans) = leaf.subject_alt_names() {
        for san in &sans {
            if let Some(dns) = san.dnsname() {
                out.push(dns.to_ascii_lowercase());
            } else if let Some(ip) = san.ipaddress() {
                let ip = match ip.len() {
                    4 => <[u8; 4]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    16 => <[u8; 16]>::try_from(ip).ok().map(std::net::IpAddr::from),
                    _ => None,
                };
                out.extend(ip.map(|ip| ip.to_string()));
            }
        }
    }
    if out.is_empty() {
        for cn in leaf.subject_name().entries_by_nid(Nid::COMMONNAME) {
            if let Ok(cn) = cn.data().to_string() {
                out.push(cn.to_ascii_lowercase());
            }
        }
    }
    out
}

impl ServingCert {
    /// Reads a certificate (and chain) file and its key file.
    pub fn from_files(certificate: &Path, key: &Path) -> Result<ServingCert, CertFileError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| CertFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        let (crt, k) = (read(certificate)?, read(key)?);
        ServingCert::parse(&crt, &k, certificate.display().to_string()).map_err(|error| {
            CertFileError::Material {
                certificate: certificate.to_path_buf(),
                key: key.to_path_buf(),
                error,
            }
        })
    }

    /// Parses `tls.crt` (the certificate, then any chain) and `tls.key`, and checks that the key
    /// belongs to the certificate.
    pub fn parse(crt: &[u8], key: &[u8], source: String) -> Result<ServingCert, CertError> {
        let mut certs = X509::stack_from_pem(crt).map_err(|e| CertError::Malformed {
            key: "tls.crt",
            detail: detail(e),
        })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate { key: "tls.crt" });
        }
        let leaf = certs.remove(0);
        let key = PKey::private_key_from_pem(key).map_err(|e| CertError::Malformed {
            key: "tls.key",
            detail: detail(e),
        })?;
        let matches = leaf
            .public_key()
            .map(|public| public.public_eq(&key))
            .unwrap_or(false);
        if !matches {
            return Err(CertError::KeyMismatch);
        }
        Ok(ServingCert {
            facts: facts(&leaf, &key),
            names: names(&leaf),
            leaf,
            chain: certs,
            key,
            source,
        })
    }

    /// A self-signed ECDSA P-256 certificate for when no default certificate is configured (or
    /// its Secret is not there yet). Clients cannot verify it; it only lets a handshake finish so
    /// that the client gets a proper answer. (P-256 rather than RSA: generating it takes a
    /// millisecond.)
    pub fn self_signed() -> Result<ServingCert, CertError> {
        ServingCert::self_signed_for(&[])
    }

    /// A self-signed ECDSA P-256 certificate whose subject alternative names are `dns` (none:
    /// only the common name `sluice default certificate`).
    pub fn self_signed_for(dns: &[&str]) -> Result<ServingCert, CertError> {
        let build = || -> Result<ServingCert, openssl::error::ErrorStack> {
            let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
            let key = PKey::from_ec_key(openssl::ec::EcKey::generate(&group)?)?;
            let mut name = openssl::x509::X509NameBuilder::new()?;
            name.append_entry_by_nid(Nid::COMMONNAME, "sluice default certificate")?;
            let name = name.build();
            let mut b = X509::builder()?;
            b.set_version(2)?;
            let serial = openssl::bn::BigNum::from_u32(1)?.to_asn1_integer()?;
            b.set_serial_number(&serial)?;
            b.set_subject_name(&name)?;
            b.set_issuer_name(&name)?;
            b.set_pubkey(&key)?;
            b.set_not_before(&*Asn1Time::days_from_now(0)?)?;
            b.set_not_after(&*Asn1Time::days_from_now(3650)?)?;
            if !dns.is_empty() {
                let mut san = openssl::x509::extension::SubjectAlternativeName::new();
                for d in dns {
                    san.dns(d);
                }
                let ext = san.build(&b.x509v3_context(None, None))?;
                b.append_extension(ext)?;
            }
            b.sign(&key, MessageDigest::sha256())?;
            let leaf = b.build();
            Ok(ServingCert {
                facts: facts(&leaf, &key),
                names: names(&leaf),
                leaf,
                chain: Vec::new(),
                key,
                source: "generated".to_string(),
            })
        };
        build().map_err(|e| CertError::Build(detail(e)))
    }
}

/// How many intermediates [`ClientCa::learn`] keeps per CA.
const MAX_LEARNED_INTERMEDIATES: usize = 32;

/// Trusted client CAs from a `ca.crt`, ready to verify client certificates.
pub struct ClientCa {
    pub store: X509Store,
    /// Subject names sent in the CertificateRequest, so clients pick a matching certificate.
    pub names: Vec<X509Name>,
    /// Intermediates of chains that verified in full handshakes. A resumed session keeps the
    /// client certificate but not the intermediates the client sent, so re-verifying it on
    /// resumption needs them from here. They confer no trust: every chain still has to end at a
    /// certificate of `ca.crt`.
    learned: Mutex<Vec<X509>>,
}

impl std::fmt::Debug for ClientCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCa")
            .field("names", &self.names.len())
            .finish()
    }
}

impl ClientCa {
    pub fn parse(pem: &[u8]) -> Result<ClientCa, CertError> {
        let certs = X509::stack_from_pem(pem).map_err(|e| CertError::Malformed {
            key: "ca.crt",
            detail: detail(e),
        })?;
        if certs.is_empty() {
            return Err(CertError::NoCertificate { key: "ca.crt" });
        }
        let build = || -> Result<ClientCa, openssl::error::ErrorStack> {
            let mut store = X509StoreBuilder::new()?;
            let mut names = Vec::new();
            for c in &certs {
                names.push(c.subject_name().to_owned()?);
                store.add_cert(c.clone())?;
            }
            Ok(ClientCa {
                store: store.build(),
                names,
                learned: Mutex::new(Vec::new()),
            })
        };
        build().map_err(|e| CertError::Build(detail(e)))
    }
}

impl ClientCa {
    /// Remembers the intermediates of a chain that verified (the peer chain a server sees lists
    /// the certificates after the client's own).
    pub fn learn(&self, chain: &StackRef<X509>) {
        let Ok(mut learned) = self.learned.lock() else {
            return;
        };
        for c in chain {
            if learned.len() >= MAX_LEARNED_INTERMEDIATES {
                return;
            }
            let der = c.to_der().ok();
            let known = learned.iter().any(|l| l.to_der().ok() == der);
            if !known {
                learned.push(c.to_owned());
            }
        }
    }

    /// Verifies a client certificate against these CAs, allowing at most `depth` intermediates;
    /// `Err` carries OpenSSL's reason. Used for resumed sessions, where OpenSSL verifies nothing.
    pub fn verify(&self, leaf: &X509Ref, depth: u32) -> Result<(), VerifyError> {
        let run = || -> Result<Result<(), VerifyError>, openssl::error::ErrorStack> {
            let mut untrusted = Stack::new()?;
            if let Ok(learned) = self.learned.lock() {
                for c in learned.iter() {
                    untrusted.push(c.clone())?;
                }
            }
            let mut ctx = X509StoreContext::new()?;
            ctx.init(&self.store, leaf, &untrusted, |c| {
                if !c.verify_cert()? {
                    return Ok(Err(VerifyError::Rejected(
                        c.error().error_string().to_string(),
                    )));
                }
                // The chain holds the leaf and the trust anchor around the intermediates.
                let intermediates = c.chain().map(|ch| ch.len()).unwrap_or(0).saturating_sub(2);
                if intermediates > depth as usize {
                    return Ok(Err(VerifyError::ChainTooLong));
                }
                Ok(Ok(()))
            })
        };
        run().unwrap_or_else(|e| Err(VerifyError::Rejected(detail(e))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem(c: &ServingCert) -> (Vec<u8>, Vec<u8>) {
        (
            c.leaf.to_pem().unwrap(),
            c.key.private_key_to_pem_pkcs8().unwrap(),
        )
    }

    #[test]
    fn a_certificate_parses_with_its_facts_and_a_foreign_key_is_refused() {
        let a = ServingCert::self_signed().unwrap();
        let b = ServingCert::self_signed().unwrap();
        let (crt, key) = pem(&a);
        let parsed = ServingCert::parse(&crt, &key, "test".into()).unwrap();
        assert_eq!(parsed.facts.key, KeyAlgorithm::Ecdsa);
        assert_eq!(parsed.facts.key_bits, 256);
        assert_eq!(parsed.facts.signature_bits, 128);
        assert!(parsed.facts.not_after - parsed.facts.not_before > 3000 * 86_400);
        let (_, other_key) = pem(&b);
        assert_eq!(
            ServingCert::parse(&crt, &other_key, "test".into()).unwrap_err(),
            CertError::KeyMismatch
        );
        assert!(matches!(
            ServingCert::parse(b"not pem", &key, "test".into()),
            Err(CertError::NoCertificate { .. }) | Err(CertError::Malformed { .. })
        ));
        assert!(matches!(
            ServingCert::parse(&crt, b"garbage", "test".into()),
            Err(CertError::Malformed { key: "tls.key", .. })
        ));
        assert!(ClientCa::parse(&crt).is_ok());
        assert_eq!(parsed.names, vec!["sluice default certificate".to_string()]);
        let named = ServingCert::self_signed_for(&["A.test", "*.b.test"]).unwrap();
        assert_eq!(
            named.names,
            vec!["a.test".to_string(), "*.b.test".to_string()]
        );
        assert!(ClientCa::parse(b"").is_err());
    }

    #[test]
    fn default_certificate_files_that_are_missing_or_do_not_match_are_refused_naming_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let (crt, key) = pem(&ServingCert::self_signed().unwrap());
        let (_, other_key) = pem(&ServingCert::self_signed().unwrap());
        let (crt_path, key_path, other_path) = (
            dir.path().join("tls.crt"),
            dir.path().join("tls.key"),
            dir.path().join("other.key"),
        );
        std::fs::write(&crt_path, crt).unwrap();
        std::fs::write(&key_path, key).unwrap();
        std::fs::write(&other_path, other_key).unwrap();
        let served = ServingCert::from_files(&crt_path, &key_path).unwrap();
        assert_eq!(served.source, crt_path.display().to_string());

        let gone = dir.path().join("gone.key");
        match ServingCert::from_files(&crt_path, &gone) {
            Err(e @ CertFileError::Read { .. }) => {
                assert!(
                    e.to_string().starts_with(&format!("{}: ", gone.display())),
                    "{e}"
                )
            }
            other => panic!("expected a read error, got {other:?}"),
        }
        match ServingCert::from_files(&crt_path, &other_path) {
            Err(
                e @ CertFileError::Material {
                    error: CertError::KeyMismatch,
                    ..
                },
            ) => assert_eq!(
                e.to_string(),
                format!(
                    "{} and {}: tls.key does not match the certificate in tls.crt",
                    crt_path.display(),
                    other_path.display()
                )
            ),
            other => panic!("expected a key mismatch, got {other:?}"),
        }
    }
}
