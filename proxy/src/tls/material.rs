//! The material of Secrets: the bytes of `tls.crt`, `tls.key` and `ca.crt`, and for a Secret
//! that basic auth reads ([`crate::auth::basic`]) every key.
//!
//! Sources keep this beside the model inputs (which only say which keys a Secret has), and hand
//! both to [`crate::state::State::publish_with`]. Nothing else of a Secret is kept.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use sluice_config::model::ObjectRef;
use sluice_config::tls::{CA_CERT_KEY, TLS_CERT_KEY, TLS_KEY_KEY};

/// The keys of one Secret that TLS reads. Compared whole to notice a change.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecretData {
    pub tls_crt: Option<Arc<[u8]>>,
    pub tls_key: Option<Arc<[u8]>>,
    pub ca_crt: Option<Arc<[u8]>>,
    /// Every key with its bytes, kept only for a Secret that basic auth may read
    /// ([`SecretData::with_every_key`]); `None` for the others.
    pub keys: Option<Arc<BTreeMap<String, Arc<[u8]>>>>,
}

/// The material of every Secret a source holds, by `namespace/name`.
pub type SecretMaterial = BTreeMap<ObjectRef, Arc<SecretData>>;

impl SecretData {
    /// The TLS keys of a Secret: `data` (already base64-decoded by the deserializer), else
    /// `stringData` (as written in hand-made manifests). Empty values count as absent.
    pub fn from_secret(s: &Secret) -> SecretData {
        let get = |key: &str| -> Option<Arc<[u8]>> {
            let bytes: Option<&[u8]> = s
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| b.0.as_slice())
                .or_else(|| {
                    s.string_data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|v| v.as_bytes())
                });
            bytes.filter(|b| !b.is_empty()).map(Arc::from)
        };
        SecretData {
            tls_crt: get(TLS_CERT_KEY),
            tls_key: get(TLS_KEY_KEY),
            ca_crt: get(CA_CERT_KEY),
            keys: None,
        }
    }

    /// [`SecretData::from_secret`] with every key kept (`data`, then `stringData` for a key
    /// `data` lacks; empty values too, as an auth-map user may have none), for an auth Secret.
    pub fn with_every_key(s: &Secret) -> SecretData {
        let mut keys: BTreeMap<String, Arc<[u8]>> = BTreeMap::new();
        for (k, v) in s.string_data.iter().flatten() {
            keys.insert(k.clone(), Arc::from(v.as_bytes()));
        }
        for (k, v) in s.data.iter().flatten() {
            keys.insert(k.clone(), Arc::from(v.0.as_slice()));
        }
        SecretData {
            keys: Some(Arc::new(keys)),
            ..SecretData::from_secret(s)
        }
    }

    /// The content basic auth reads of this Secret: every key, when they were kept.
    pub fn auth_content(&self) -> Option<Vec<(&str, &[u8])>> {
        let keys = self.keys.as_ref()?;
        Some(keys.iter().map(|(k, v)| (k.as_str(), &**v)).collect())
    }
}
