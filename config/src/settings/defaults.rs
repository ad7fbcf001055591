//! The value of every key the file leaves out, each with its unit.
//!
//! Re-exported by [`crate::settings`], so `settings::DEFAULT_*` names them. The defaults of
//! `[upstream.health_check]` are [`crate::health::HealthCheck::default`].

use crate::annotations::Balance;
use crate::ownership::CrossNamespacePaths;
use crate::targets::TargetType;

use super::{AccessLogFormat, LogFormat};

/// Where plain HTTP is served when `server.http_listen` is not set.
pub const DEFAULT_HTTP_LISTEN: &str = "0.0.0.0:8080";
/// Where `/healthz`, `/readyz` (and later `/metrics`) are served when `server.admin_listen` is not set.
pub const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:10254";
/// Worker threads of the proxy runtime; 0 means one per CPU core.
pub const DEFAULT_WORKER_THREADS: usize = 0;
/// How long, in seconds, in-flight requests may run after SIGTERM before the process exits.
pub const DEFAULT_SHUTDOWN_GRACE_PERIOD_SECS: u64 = 20;
/// Largest request head (request line plus headers), in bytes, answered with anything but 431.
pub const DEFAULT_MAX_REQUEST_HEADER_BYTES: usize = 32 * 1024;
/// Largest request body, in bytes, accepted before 413 (1 MiB, as ingress-nginx); 0 means no
/// limit. Routes of GRPC or GRPCS backends have no limit unless their Ingress sets one.
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 1024 * 1024;
/// Time allowed, in seconds, between two reads of a request body from the client (as nginx's
/// `client_body_timeout`); not applied to GRPC and GRPCS routes.
pub const DEFAULT_CLIENT_BODY_TIMEOUT_SECS: u64 = 60;
/// Whether request headers with `_` in their names reach the upstream (false: dropped, as
/// nginx's `underscores_in_headers off`).
pub const DEFAULT_UNDERSCORES_IN_HEADERS: bool = false;
/// Total time, in seconds, allowed for a request head (and, on a new connection, for its TLS
/// handshake and protocol detection); not per read.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT_SECS: u64 = 60;
/// Time allowed, in seconds, for one write to the client to make progress (a client that stops
/// reading is dropped after it).
pub const DEFAULT_CLIENT_SEND_TIMEOUT_SECS: u64 = 60;
/// How long, in seconds, an idle client connection (HTTP/1.1 between requests, HTTP/2 with no
/// stream open) is kept.
pub const DEFAULT_KEEPALIVE_TIMEOUT_SECS: u64 = 75;
/// Requests, in requests, served on one client connection: HTTP/1.1 closes it after the last,
/// HTTP/2 sends a graceful GOAWAY after that many streams.
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// Open client connections per process, in connections; 0 derives the cap from the file limit
/// (see [`Settings::max_connections_or`]).
pub const DEFAULT_MAX_CONNECTIONS: usize = 0;
/// Open client connections per client address, in connections; 0 means no per-client cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 0;
/// After SIGTERM, how long, in seconds, requests arriving on already-open keepalive
/// connections are still served (with `Connection: close`) before idle ones are closed.
pub const DEFAULT_DRAIN_SECS: u64 = 5;
/// The status, 429 or 503, of a request refused by a route's `sluice.dev/limit-*` annotations
/// (ingress-nginx answers 503).
pub const DEFAULT_LIMIT_STATUS: u16 = 429;
/// Idle upstream connections kept for reuse, in connections, across all upstreams.
pub const DEFAULT_KEEPALIVE_POOL_SIZE: usize = 512;
/// How long, in seconds, an idle upstream connection is kept before it is closed.
pub const DEFAULT_KEEPALIVE_IDLE_TIMEOUT_SECS: u64 = 60;
/// Time allowed, in milliseconds, to open a TCP connection to an endpoint.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Time allowed, in milliseconds, between two reads from an upstream (504 when exceeded).
pub const DEFAULT_READ_TIMEOUT_MS: u64 = 60_000;
/// Time allowed, in milliseconds, between two writes to an upstream (504 when exceeded).
pub const DEFAULT_WRITE_TIMEOUT_MS: u64 = 60_000;
/// How routes spread requests over a pool unless their Ingress says otherwise
/// (`round-robin`, `least-request` or `ewma`).
pub const DEFAULT_LOAD_BALANCE: Balance = Balance::RoundRobin;
/// What routes dial unless their Ingress says otherwise: `ip` (the Service's pod addresses) or
/// `instance` (the Service port's nodePort on every ready Node).
pub const DEFAULT_TARGET_TYPE: TargetType = TargetType::Ip;
/// Consecutive failures (failed connects or 5xx answers), in requests, that eject an endpoint;
/// 0 turns passive ejection off.
pub const DEFAULT_EJECT_CONSECUTIVE_FAILURES: u32 = 5;
/// How long, in milliseconds, an endpoint is first ejected; each further ejection without a
/// success in between doubles it.
pub const DEFAULT_EJECT_BASE_MS: u64 = 10_000;
/// The longest ejection, in milliseconds.
pub const DEFAULT_EJECT_MAX_MS: u64 = 300_000;
/// How many times, in attempts, a failed connect is retried on another endpoint before 502.
pub const DEFAULT_CONNECT_RETRIES: usize = 2;
/// The `spec.controller` value of the IngressClasses this instance serves.
pub const DEFAULT_CONTROLLER_NAME: &str = "sluice.dev/ingress-controller";
/// The IngressClass name this instance owns (also accepted in the legacy annotation).
pub const DEFAULT_INGRESS_CLASS: &str = "sluice";
/// Whether rules from other namespaces may route on a host another namespace owns: `allow`
/// (merged, as ingress-nginx does) or `deny`.
pub const DEFAULT_CROSS_NAMESPACE_PATHS: CrossNamespacePaths = CrossNamespacePaths::Allow;
/// How often, in milliseconds, the files source looks for changed manifests.
pub const DEFAULT_FILES_POLL_INTERVAL_MS: u64 = 250;
/// The Lease that elects the one instance writing Ingress status and Events.
pub const DEFAULT_LEASE_NAME: &str = "sluice-leader";
/// How long, in seconds, a Lease holder stays leader without renewing.
pub const DEFAULT_LEASE_DURATION_SECS: u64 = 15;
/// How often, in seconds, the leader renews the Lease and followers try to take it.
pub const DEFAULT_LEASE_RENEW_PERIOD_SECS: u64 = 5;
/// The folder of manifests read by the files source, relative to the settings file.
pub const DEFAULT_FILES_DIRECTORY: &str = "manifests";
/// Events the leader writes to the API server, in Events per second at most (one second's
/// worth may go at once).
pub const DEFAULT_EVENTS_PER_SECOND: u32 = 10;
/// Ingresses, at most, waiting for their Events to be written; beyond it the oldest are dropped
/// (counted in `sluice_events_dropped_total`, warned about at most every 30 s).
pub const DEFAULT_EVENTS_MAX_PENDING: usize = 1_000;
/// Whether plain-HTTP requests for a host with TLS are redirected (308) to https.
pub const DEFAULT_SSL_REDIRECT: bool = true;
/// The port written into https redirects; 443 is left out of the URL.
pub const DEFAULT_HTTPS_REDIRECT_PORT: u16 = 443;
/// The `tracing` filter of the log when `RUST_LOG` is not set.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The shape of log lines: `text` or `json`.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Text;
/// Whether every request is written to the access log.
pub const DEFAULT_ACCESS_LOG_ENABLED: bool = true;
/// The shape of access-log lines: `json` or `combined`.
pub const DEFAULT_ACCESS_LOG_FORMAT: AccessLogFormat = AccessLogFormat::Json;
/// Whether instances elect a leader to write Ingress status and Events.
pub const DEFAULT_LEADER_ELECTION_ENABLED: bool = true;
