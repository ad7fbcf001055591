//! The HTTPS listener's OpenSSL settings and handshake callbacks.
//!
//! Settings: Mozilla intermediate (TLS 1.2 and 1.3, its cipher list), ALPN `h2` then `http/1.1`,
//! server cipher preference (so that a client offering both gets ECDSA: the ECDSA suites and
//! signature algorithms come first in the server's lists), session tickets and a session cache.
//!
//! One handshake, in OpenSSL's order:
//! 1. **servername callback** (every handshake, also resumed ones): finds the name's entry in the
//!    live store and keeps it on the connection, so the whole handshake sees one store. A resumed
//!    session skips certificate selection and client verification, and in TLS 1.3 it may come
//!    from a handshake with another name; so on a name that verifies client certificates the
//!    session's certificate is verified again, against this name's CA, now. In `verify` mode a
//!    session that fails is refused with a fatal alert, exactly as a full handshake without a
//!    valid certificate fails.
//! 2. **certificate callback** (full handshakes; Pingora's [`TlsAccept::certificate_callback`]):
//!    hands OpenSSL the chosen certificates (ECDSA and RSA when both exist; OpenSSL picks by what
//!    the client offers) and, for client authentication, the verify mode, trust store, depth and
//!    the CA names to advertise.
//! 3. **handshake complete** ([`TlsAccept::handshake_complete_callback`]): builds [`ConnTls`],
//!    which Pingora keeps in the connection's TLS digest for every request on it.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use openssl::ex_data::Index;
use openssl::ssl::{
    NameType, SniError, Ssl, SslAlert, SslOptions, SslRef, SslVerifyMode, SslVersion,
};
use openssl::stack::Stack;
use pingora_core::listeners::tls::TlsSettings;
use pingora_core::listeners::TlsAccept;
use pingora_core::protocols::tls::TlsRef;
use sluice_config::tls::ClientAuthMode;

use super::client_auth::{verify_resumed, ConnTls};
use super::store::{HostEntry, TlsStore};
use crate::metrics::Metrics;
use crate::state::State;

/// Why a handshake failed, as far as sluice can tell (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Failure {
    /// Anything OpenSSL or Pingora refused on its own: protocol, cipher, a client that left.
    Other = 0,
    /// A host in `verify` mode got no certificate or one that does not verify.
    ClientCertificate = 1,
    /// A resumed session whose certificate does not verify for this host.
    ResumptionRefused = 2,
}

impl Failure {
    fn label(v: u8) -> &'static str {
        match v {
            1 => "client_certificate",
            2 => "resumption_refused",
            _ => "other",
        }
    }
}

/// What one handshake carries between callbacks; dropped with the connection's `SSL`.
struct Handshake {
    store: Arc<TlsStore>,
    entry: Option<Arc<HostEntry>>,
    /// The verdict on a resumed session's certificate.
    resumed_verdict: Option<Result<(), super::certs::VerifyError>>,
    completed: AtomicBool,
    failure: Arc<AtomicU8>,
    metrics: Arc<Metrics>,
}

impl Drop for Handshake {
    fn drop(&mut self) {
        if !self.completed.load(Ordering::Acquire) {
            let reason = Failure::label(self.failure.load(Ordering::Acquire));
            self.metrics
                .tls_handshakes
                .with_label_values(&["failed"])
                .inc();
            self.metrics
                .tls_handshake_failures
                .with_label_values(&[reason])
                .inc();
        }
    }
}

fn handshake_index() -> Option<Index<Ssl, Handshake>> {
    static INDEX: OnceLock<Option<Index<Ssl, Handshake>>> = OnceLock::new();
    *INDEX.get_or_init(|| Ssl::new_ex_index().ok())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The servername callback: see the module docs.
fn on_server_name(state: &State, ssl: &mut SslRef, alert: &mut SslAlert) -> Result<(), SniError> {
    let store = state.live().tls.clone();
    let entry = store.find(ssl.servername(NameType::HOST_NAME)).cloned();
    let mut resumed_verdict = None;
    let mut refuse = false;
    if ssl.session_reused() {
        if let Some(e) = &entry {
            let mode = e.client_auth.as_ref().map(|a| a.mode);
            if matches!(
                mode,
                Some(ClientAuthMode::Verify | ClientAuthMode::Optional)
            ) {
                let verdict = verify_resumed(ssl, e);
                refuse = mode == Some(ClientAuthMode::Verify) && verdict.is_err();
                resumed_verdict = Some(verdict);
            }
        }
    }
    let handshake = Handshake {
        store,
        entry,
        resumed_verdict,
        completed: AtomicBool::new(false),
        failure: Arc::new(AtomicU8::new(if refuse {
            Failure::ResumptionRefused as u8
        } else {
            Failure::Other as u8
        })),
        metrics: state.metrics().clone(),
    };
    if let Some(index) = handshake_index() {
        // A HelloRetryRequest runs this twice; the second replaces the first, which then must
        // not count as a failed handshake.
        if let Some(previous) = ssl.ex_data(index) {
            previous.completed.store(true, Ordering::Release);
        }
        ssl.set_ex_data(index, handshake);
    }
    if refuse {
        *alert = SslAlert::HANDSHAKE_FAILURE;
        return Err(SniError::ALERT_FATAL);
    }
    Ok(())
}

/// Pingora's handshake callbacks, reading the live state.
pub struct Callbacks {
    state: Arc<State>,
}

impl Callbacks {
    /// Sets the certificates and client authentication of a full handshake.
    fn configure(&self, ssl: &mut SslRef) -> Result<(), openssl::error::ErrorStack> {
        let (store, entry, failure) = match handshake_index().and_then(|i| ssl.ex_data(i)) {
            Some(h) => (h.store.clone(), h.entry.clone(), Some(h.failure.clone())),
            None => {
                let store = self.state.live().tls.clone();
                let entry = store.find(ssl.servername(NameType::HOST_NAME)).cloned();
                (store, entry, None)
            }
        };
        for cert in store.certificates_for(entry.as_deref(), now()) {
            ssl.set_certificate(&cert.leaf)?;
            ssl.set_private_key(&cert.key)?;
            for c in &cert.chain {
                ssl.add_chain_cert(c.clone())?;
            }
        }
        let Some(auth) = entry.as_ref().and_then(|e| e.client_auth.as_ref()) else {
            return Ok(());
        };
        match auth.mode {
            ClientAuthMode::Off => {}
            ClientAuthMode::Verify | ClientAuthMode::Optional => {
                let strict = auth.mode == ClientAuthMode::Verify;
                let mode = if strict {
                    SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT
                } else {
                    SslVerifyMode::PEER
                };
                match &auth.ca {
                    Some(ca) => {
                        pingora_core::tls::ext::ssl_set_verify_cert_store(ssl, &ca.store)?;
                        let mut names = Stack::new()?;
                        for n in &ca.names {
                            names.push(openssl::x509::X509NameRef::to_owned(n)?)?;
                        }
                        ssl.set_client_ca_list(names);
                    }
                    // Fails closed: an empty trust store verifies nothing.
                    None => {
                        let empty = openssl::x509::store::X509StoreBuilder::new()?.build();
                        pingora_core::tls::ext::ssl_set_verify_cert_store(ssl, &empty)?;
                    }
                }
                ssl.param_mut().set_depth(auth.verify_depth as i32);
                ssl.set_verify_callback(mode, move |ok, _ctx| {
                    if strict {
                        if !ok {
                            if let Some(f) = &failure {
                                f.store(Failure::ClientCertificate as u8, Ordering::Release);
                            }
                        }
                        ok
                    } else {
                        // Optional: the request carries the result; the handshake goes on.
                        true
                    }
                });
                if strict {
                    if let Some(f) = handshake_index().and_then(|i| ssl.ex_data(i)) {
                        // Without a certificate OpenSSL fails before any verify callback.
                        f.failure
                            .store(Failure::ClientCertificate as u8, Ordering::Release);
                    }
                }
            }
            ClientAuthMode::Passthrough => {
                ssl.set_verify_callback(SslVerifyMode::PEER, |_, _| true);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl TlsAccept for Callbacks {
    /// Called by Pingora in the middle of a full handshake, once OpenSSL needs a certificate.
    async fn certificate_callback(&self, ssl: &mut TlsRef) -> () {
        if let Err(e) = self.configure(ssl) {
            // The handshake then fails for want of a certificate; the reason goes to the log.
            tracing::warn!(error = %e, "cannot configure a TLS handshake");
        }
    }

    /// Called by Pingora after every successful handshake; the value lands in the connection's
    /// TLS digest.
    async fn handshake_complete_callback(
        &self,
        ssl: &TlsRef,
    ) -> Option<Arc<dyn std::any::Any + Send + Sync>> {
        let handshake = handshake_index().and_then(|i| ssl.ex_data(i));
        let conn = match handshake {
            Some(h) => {
                h.completed.store(true, Ordering::Release);
                ConnTls::from_handshake(ssl, h.entry.as_deref(), h.resumed_verdict.clone())
            }
            None => {
                let store = self.state.live().tls.clone();
                let entry = store.find(ssl.servername(NameType::HOST_NAME)).cloned();
                ConnTls::from_handshake(ssl, entry.as_deref(), None)
            }
        };
        let result = if conn.resumed { "resumed" } else { "full" };
        self.state
            .metrics()
            .tls_handshakes
            .with_label_values(&[result])
            .inc();
        Some(Arc::new(conn))
    }
}

/// The settings of an HTTPS listener serving from `state`.
pub fn settings(state: Arc<State>) -> pingora_error::Result<TlsSettings> {
    let callbacks = Callbacks {
        state: state.clone(),
    };
    let mut settings = TlsSettings::with_callbacks(Box::new(callbacks))?;
    settings.enable_h2();
    let conf = |e: openssl::error::ErrorStack| {
        pingora_error::Error::because(
            pingora_error::ErrorType::InternalError,
            "configuring TLS",
            e,
        )
    };
    settings
        .set_min_proto_version(Some(SslVersion::TLS1_2))
        .map_err(conf)?;
    settings.set_options(SslOptions::CIPHER_SERVER_PREFERENCE | SslOptions::PRIORITIZE_CHACHA);
    // Sessions are only resumed within this context; OpenSSL also needs it set to resume
    // sessions that carry a client certificate.
    settings.set_session_id_context(b"sluice").map_err(conf)?;
    settings.set_servername_callback(move |ssl, alert| on_server_name(&state, ssl, alert));
    Ok(settings)
}
