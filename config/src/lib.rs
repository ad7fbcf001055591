//! The pure model of sluice: what the proxy should do, with no I/O.
//!
//! - [`settings`]: the text of the TOML settings file, validated into [`Settings`] (the proxy
//!   reads the file).
//! - [`model`]: Ingress-shaped inputs, which both sources (a folder of manifests, the API
//!   server) produce.
//! - [`build`]: one pure function from inputs to an immutable [`Snapshot`]: routes, backend
//!   targets, ready endpoints, and every rule skipped with its reason.
//! - [`canary`]: canary Ingresses, which split the traffic of another Ingress's rules.
//! - [`annotations`]: per-Ingress annotations (upstream timeouts), parsed while building.
//! - [`targets`]: `ip` or `instance` targets: a Service's pods, or its NodePort on Nodes.
//! - `fixtures` (tests only, and the `fixtures` feature): builders of model inputs.
//! - [`cidr`]: address ranges (`server.trusted_proxies`).
//! - [`health`]: per-Service active health checks (annotations and their settings defaults).
//! - [`ownership`]: which namespace owns a host (its TLS policy, and with `deny` its routes).
//! - [`path`]: request paths normalized before matching (dot segments, slashes, escapes).
//! - [`rules`]: per-route traffic rules (redirects, rewrites, header changes) of the policy
//!   annotations, which fail closed.
//! - [`regex_paths`]: the regex paths of a host, matched in one pass.
//! - [`routes`]: the route table and `find`, with the matching precedence documented there.
//! - [`tls`]: which certificates serve which names, client authentication, redirects, and the
//!   order in which certificates covering the same name are chosen.
//!
//! No tokio, no sockets, no Pingora: everything here is tested in milliseconds.

pub mod annotations;
pub mod build;
pub mod canary;
pub mod cidr;
pub mod finding;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod health;
pub mod hostmap;
pub mod model;
pub mod ownership;
pub mod path;
pub mod regex_paths;
pub mod report;
pub mod routes;
pub mod rules;
pub mod settings;
pub mod targets;
pub mod tls;

pub use build::{build, ClassPolicy, PoolKey, Snapshot, Target};
pub use finding::{Effect, Finding, Reason};
pub use routes::{RouteEntry, RouteTable};
pub use settings::{ConfigError, Ejection, Settings};

pub use build::{build_refs, build_with, BuildDefaults};
pub use targets::TargetType;
