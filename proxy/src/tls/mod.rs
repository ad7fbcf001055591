//! TLS at the edge: the HTTPS listener, the SNI certificate store and client certificates.
//!
//! ```text
//! Secrets (files or API) --publish--> certs::parse (once per Secret change)
//!        --> store::TlsStore (immutable, in the live state, swapped whole with the routes)
//! handshake --> listener::Callbacks: SNI -> store lookup -> certificates + client-auth settings
//!           --> client_auth::ConnTls (SNI, verification result, headers) on the connection
//! request   --> router: 308 redirect, 421 on Host/SNI mismatch, client-certificate headers
//! ```
//!
//! The selection order and the client-auth policy are pure and live in `sluice_config::tls`;
//! this module holds what needs OpenSSL. Nothing is parsed during a handshake: a handshake does a
//! hash lookup, compares precomputed validity times, and hands already-parsed certificates and
//! trust stores to OpenSSL.

pub mod certs;
pub mod client_auth;
pub mod listener;
pub mod material;
pub mod store;

pub use client_auth::ConnTls;
pub use material::{SecretData, SecretMaterial};
pub use store::{TlsStore, TlsStoreBuilder};
