//! sluice: a Kubernetes Ingress controller on Pingora, controller and data plane in one process.
//!
//! - [`objects`]: the Kubernetes objects a source holds and their translation into model inputs.
//! - [`files`]: the files source (a folder of manifests).
//! - [`k8s`]: the Kubernetes source: watchers, leader election, Ingress status, Events.
//! - [`state`]: the live snapshot the request path reads and the one way it changes.
//! - [`pool`]: endpoint pools (pingora-load-balancing glue).
//! - [`health`]: active health checks of the pools whose Service asks for them.
//! - [`auth`]: per-route authentication (basic auth).
//! - [`router`]: the `ProxyHttp` implementation; the one place errors become statuses.
//! - [`ext_auth`]: the subrequests of `sluice.dev/auth-url`.
//! - [`tls`]: the HTTPS listener, the SNI certificate store, client certificates.
//! - [`admin`]: `/healthz`, `/readyz` and `/metrics`.
//! - [`metrics`], [`access_log`]: Prometheus metrics and the per-request log.
//! - [`settings`]: reading the settings file (validated by `sluice-config`).
//! - [`server`]: starting, running and draining it all; [`connections`]: caps on open client
//!   connections.
//!
//! The pure model (settings, routes, snapshot building) is the `sluice-config` crate.

pub mod access_log;
pub mod admin;
pub mod auth;
pub mod connections;
pub mod ext_auth;
pub mod files;
pub mod health;
pub mod k8s;
pub mod limiter;
pub mod logging;
pub mod metrics;
pub mod mirror;
pub mod objects;
pub mod pool;
pub mod proxy_protocol;
pub mod request;
pub mod route;
pub mod router;
pub mod server;
pub mod settings;
pub mod state;
pub mod store;
pub mod text;
pub mod tls;

pub use server::{start, start_with, Running, StartError};
