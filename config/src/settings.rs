//! The TOML settings file and its validation.
//!
//! # Pipeline
//!
//! ```text
//! sluice.toml --(toml + serde, deny_unknown_fields)--> file::File --(validate)--> Settings
//! ```
//!
//! `file::File` mirrors the file one to one and is never used outside this module; the rest of
//! sluice reads only the validated [`Settings`]. Every value has a default (the `DEFAULT_*`
//! constants below, each with its unit), so an empty file is a valid configuration. A value in the
//! file replaces its default; nothing else (environment, flags) overrides the file, except
//! `RUST_LOG`, which replaces `log.level` when it is set.
//!
//! Errors name the file, the line and column, and the dotted key at fault ([`ConfigError`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::annotations::Balance;
use crate::cidr::Cidr;
use crate::health::HealthCheck;
use crate::ownership::{CrossNamespacePaths, HostOwners};
use crate::targets::TargetType;

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
pub const DEFAULT_LOAD_BALANCE: &str = "round-robin";
/// What routes dial unless their Ingress says otherwise: `ip` (the Service's pod addresses) or
/// `instance` (the Service port's nodePort on every ready Node).
pub const DEFAULT_TARGET_TYPE: &str = "ip";
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

/// Why a settings file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read the file: {source}", path = .path.display())]
    FileOpen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("{path}:{line}:{column}: key `{key}`: {message}", path = .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    /// The file parsed but a value is out of range or inconsistent.
    #[error("{path}: key `{key}`: {message}", path = .path.display())]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// Where the objects that make routes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSettings {
    /// A folder of Kubernetes YAML manifests, re-read when a file changes.
    Files {
        directory: PathBuf,
        poll_interval: Duration,
    },
    /// The Kubernetes API server.
    Kubernetes(KubernetesSettings),
}

/// How the Kubernetes source reaches and scopes the API server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KubernetesSettings {
    /// Watch only these namespaces (Ingresses, Services, EndpointSlices and TLS Secrets);
    /// empty watches all namespaces. Sorted, without duplicates.
    pub namespaces: Vec<String>,
    /// Path of a kubeconfig file; `None` uses `$KUBECONFIG` or the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use; `None` uses the current context.
    pub context: Option<String>,
}

/// Who writes Ingress status and Events when several instances run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderElection {
    /// Without election every instance acts as leader (right for a single replica).
    pub enabled: bool,
    pub lease_name: String,
    /// `None`: the namespace in `$POD_NAMESPACE`, else `default`.
    pub lease_namespace: Option<String>,
    pub lease_duration: Duration,
    pub renew_period: Duration,
    /// This instance's name in the Lease; `None`: `$POD_NAME`, else host name and process id.
    pub identity: Option<String>,
}

/// What the leader writes into `status.loadBalancer.ingress` of served Ingresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    /// Static addresses: IPs go to `ip`, anything else to `hostname`.
    pub addresses: Vec<String>,
    /// `namespace/name` of a Service whose load-balancer status is copied (used when
    /// `addresses` is empty).
    pub publish_service: Option<(String, String)>,
    /// The most Events written per second (at least 1).
    pub events_per_second: u32,
    /// The most Ingresses waiting for their Events (at least 1).
    pub events_max_pending: usize,
}

/// The shape of access-log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per request.
    Json,
    /// nginx's `combined` format followed by durations, upstream, route and request id.
    Combined,
}

/// Log verbosity and shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The certificate served when no Secret covers the requested name (or the client sent no SNI).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DefaultCertificate {
    /// A certificate generated at start (self-signed, said in the log).
    #[default]
    SelfSigned,
    /// PEM files: the certificate (optionally followed by its chain) and its private key.
    Files { certificate: PathBuf, key: PathBuf },
    /// A `kubernetes.io/tls` Secret, `namespace/name`.
    Secret(crate::model::ObjectRef),
}

/// TLS at the edge: the HTTPS listeners and what they serve by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// HTTPS listeners; empty means no HTTPS at all (and no redirects).
    pub https_listen: Vec<SocketAddr>,
    pub default_certificate: DefaultCertificate,
    /// Redirect plain-HTTP requests for hosts with TLS to https (each Ingress may opt out).
    pub ssl_redirect: bool,
    /// The port redirects point at (443 is left out of the URL); 0 means the bound port of the
    /// first HTTPS listener.
    pub redirect_port: u16,
}

/// When a failing endpoint stops getting requests, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    /// Consecutive failed connects or 5xx answers that eject an endpoint; 0: never eject.
    pub consecutive_failures: u32,
    /// The first ejection's length; it doubles with each ejection not separated by a success.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
}

/// The validated settings that the rest of sluice reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub http_listen: Vec<SocketAddr>,
    pub admin_listen: SocketAddr,
    /// Worker threads of the proxy; never 0 (resolved from the core count by the caller when the
    /// file says 0, see [`Settings::worker_threads_or`]).
    pub worker_threads: usize,
    pub shutdown_grace_period: Duration,
    pub max_request_header_bytes: usize,
    /// The largest request body; 0 for no limit (see [`DEFAULT_MAX_REQUEST_BODY_BYTES`]).
    pub max_request_body_bytes: u64,
    /// Time allowed between two reads of a request body from the client.
    pub client_body_timeout: Duration,
    /// Whether headers with `_` in their names are forwarded.
    pub underscores_in_headers: bool,
    /// Peers whose `X-Request-Id` is kept; from any other peer a new id is generated.
    pub trusted_proxies: Vec<Cidr>,
    pub client_header_timeout: Duration,
    pub client_send_timeout: Duration,
    pub keepalive_timeout: Duration,
    /// Requests per client connection: HTTP/1.1 marks the last `Connection: close`, HTTP/2
    /// sends a graceful GOAWAY after that many streams.
    pub keepalive_requests: u32,
    /// `None`: derived from the file limit ([`Settings::max_connections_or`]).
    pub max_connections: Option<usize>,
    /// `None`: no per-client-address cap.
    pub max_connections_per_client: Option<usize>,
    /// The drain window after SIGTERM (part of the grace period, never longer).
    pub drain: Duration,
    pub keepalive_pool_size: usize,
    pub keepalive_idle_timeout: Duration,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub connect_retries: usize,
    /// The balancing algorithm of routes whose Ingress names none; never consistent hashing,
    /// which needs a per-Ingress key.
    pub load_balance: Balance,
    /// Passive ejection of failing endpoints.
    pub ejection: Ejection,
    /// What routes whose Ingress sets no `sluice.dev/target-type` dial (never with a node-label
    /// filter, which is set per Ingress).
    pub target_type: TargetType,
    /// The active health check of Services whose annotations do not say otherwise
    /// (`[upstream.health_check]`); by default none.
    pub health_check: HealthCheck,
    pub controller_name: String,
    pub ingress_class: String,
    /// Serve Ingresses that name no class, even without a default IngressClass of ours.
    pub watch_ingress_without_class: bool,
    /// `controller.host_owners`: the namespace that owns each listed host pattern.
    pub host_owners: HostOwners,
    /// `controller.cross_namespace_paths`.
    pub cross_namespace_paths: CrossNamespacePaths,
    pub source: SourceSettings,
    pub leader_election: LeaderElection,
    pub status: StatusSettings,
    /// `None`: no access log.
    pub access_log: Option<AccessLogFormat>,
    /// A `tracing` filter directive such as `info` or `sluice=debug,info`.
    pub log_level: String,
    pub log_format: LogFormat,
    pub tls: TlsSettings,
}

impl Settings {
    /// Worker threads to start, with 0 in the file meaning `cores`.
    pub fn worker_threads_or(&self, cores: usize) -> usize {
        if self.worker_threads == 0 {
            cores.max(1)
        } else {
            self.worker_threads
        }
    }

    /// The process's cap on open client connections: the configured one, else derived from the
    /// soft limit on open files `nofile`: half of what is left after 128 descriptors reserved
    /// for the admin listener, logs and the API-server client (each client connection may hold
    /// an upstream connection too), at most 50 000 and at least 16.
    pub fn max_connections_or(&self, nofile: u64) -> usize {
        self.max_connections.unwrap_or_else(|| {
            let derived = nofile.saturating_sub(128) / 2;
            derived.clamp(16, 50_000) as usize
        })
    }

    /// Reads and validates a settings file. Relative paths inside it are taken relative to the
    /// folder the file is in.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::FileOpen {
            path: path.to_path_buf(),
            source,
        })?;
        Settings::parse(&text, path)
    }

    /// Validates settings text as if read from `path` (used for error messages and for resolving
    /// relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let file: file::File = toml::from_str(text).map_err(|e| parse_error(text, path, &e))?;
        file.validate(path)
    }

    /// The settings of an empty file.
    pub fn defaults() -> Settings {
        // An empty document always parses and validates: every key has a valid default.
        match Settings::parse("", Path::new("sluice.toml")) {
            Ok(s) => s,
            Err(e) => unreachable!("the built-in defaults are invalid: {e}"),
        }
    }
}

/// Turns a toml error into one naming the line, column and dotted key.
fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
    let start = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    ConfigError::Parse {
        path: path.to_path_buf(),
        line,
        column,
        key: key_at(text, start),
        message: e.message().trim().to_string(),
    }
}

/// The dotted key of the `key = value` line holding byte `offset`, prefixed by its table header.
fn key_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut key = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            table = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
        }
        if offset >= pos && offset < pos + line.len().max(1) {
            if let Some((k, _)) = trimmed.split_once('=') {
                key = k.trim().trim_matches('"').to_string();
            }
            break;
        }
        pos += line.len();
    }
    match (table.is_empty(), key.is_empty()) {
        (_, true) if !table.is_empty() => table,
        (true, _) => key,
        (false, false) => format!("{table}.{key}"),
        _ => String::from("(document)"),
    }
}

/// The serde mirror of the file. Field names are the TOML keys.
mod file {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct File {
        pub server: Server,
        pub upstream: Upstream,
        pub controller: Controller,
        pub source: Source,
        pub leader_election: LeaderElectionFile,
        pub status: Status,
        pub log: Log,
        pub access_log: AccessLog,
        pub tls: Tls,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Tls {
        pub https_listen: Vec<String>,
        pub default_certificate_file: String,
        pub default_key_file: String,
        pub default_secret: String,
        pub ssl_redirect: bool,
        pub redirect_port: u16,
    }

    impl Default for Tls {
        fn default() -> Self {
            Tls {
                https_listen: Vec::new(),
                default_certificate_file: String::new(),
                default_key_file: String::new(),
                default_secret: String::new(),
                ssl_redirect: DEFAULT_SSL_REDIRECT,
                redirect_port: DEFAULT_HTTPS_REDIRECT_PORT,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct AccessLog {
        pub enabled: bool,
        pub format: String,
    }

    impl Default for AccessLog {
        fn default() -> Self {
            AccessLog {
                enabled: true,
                format: "json".to_string(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct LeaderElectionFile {
        pub enabled: bool,
        pub lease_name: String,
        pub lease_namespace: String,
        pub lease_duration_secs: u64,
        pub renew_period_secs: u64,
        pub identity: String,
    }

    impl Default for LeaderElectionFile {
        fn default() -> Self {
            LeaderElectionFile {
                enabled: true,
                lease_name: DEFAULT_LEASE_NAME.to_string(),
                lease_namespace: String::new(),
                lease_duration_secs: DEFAULT_LEASE_DURATION_SECS,
                renew_period_secs: DEFAULT_LEASE_RENEW_PERIOD_SECS,
                identity: String::new(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Status {
        pub addresses: Vec<String>,
        pub publish_service: String,
        pub events_per_second: u32,
        pub events_max_pending: usize,
    }

    impl Default for Status {
        fn default() -> Self {
            Status {
                addresses: Vec::new(),
                publish_service: String::new(),
                events_per_second: DEFAULT_EVENTS_PER_SECOND,
                events_max_pending: DEFAULT_EVENTS_MAX_PENDING,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Server {
        pub http_listen: Vec<String>,
        pub admin_listen: String,
        pub worker_threads: usize,
        pub shutdown_grace_period_secs: u64,
        pub max_request_header_bytes: usize,
        pub max_request_body_bytes: u64,
        pub client_body_timeout_secs: u64,
        pub underscores_in_headers: bool,
        pub trusted_proxies: Vec<String>,
        pub client_header_timeout_secs: u64,
        pub client_send_timeout_secs: u64,
        pub keepalive_timeout_secs: u64,
        pub keepalive_requests: u32,
        pub max_connections: usize,
        pub max_connections_per_client: usize,
        pub drain_secs: u64,
    }

    impl Default for Server {
        fn default() -> Self {
            Server {
                http_listen: vec![DEFAULT_HTTP_LISTEN.to_string()],
                admin_listen: DEFAULT_ADMIN_LISTEN.to_string(),
                worker_threads: DEFAULT_WORKER_THREADS,
                shutdown_grace_period_secs: DEFAULT_SHUTDOWN_GRACE_PERIOD_SECS,
                max_request_header_bytes: DEFAULT_MAX_REQUEST_HEADER_BYTES,
                max_request_body_bytes: DEFAULT_MAX_REQUEST_BODY_BYTES,
                client_body_timeout_secs: DEFAULT_CLIENT_BODY_TIMEOUT_SECS,
                underscores_in_headers: DEFAULT_UNDERSCORES_IN_HEADERS,
                trusted_proxies: Vec::new(),
                client_header_timeout_secs: DEFAULT_CLIENT_HEADER_TIMEOUT_SECS,
                client_send_timeout_secs: DEFAULT_CLIENT_SEND_TIMEOUT_SECS,
                keepalive_timeout_secs: DEFAULT_KEEPALIVE_TIMEOUT_SECS,
                keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
                max_connections: DEFAULT_MAX_CONNECTIONS,
                max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
                drain_secs: DEFAULT_DRAIN_SECS,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Upstream {
        pub keepalive_pool_size: usize,
        pub keepalive_idle_timeout_secs: u64,
        pub connect_timeout_ms: u64,
        pub read_timeout_ms: u64,
        pub write_timeout_ms: u64,
        pub connect_retries: usize,
        pub load_balance: String,
        pub eject_consecutive_failures: u32,
        pub eject_base_ms: u64,
        pub eject_max_ms: u64,
        pub target_type: String,
        pub health_check: HealthCheckFile,
    }

    /// `[upstream.health_check]`: the defaults of every Service's active health check.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct HealthCheckFile {
        pub kind: String,
        pub path: String,
        /// 0: the traffic port.
        pub port: u16,
        pub interval_ms: u64,
        pub timeout_ms: u64,
        pub healthy_threshold: u32,
        pub unhealthy_threshold: u32,
        pub success_codes: String,
    }

    impl Default for HealthCheckFile {
        fn default() -> Self {
            let d = HealthCheck::default();
            HealthCheckFile {
                kind: d.kind.name().to_string(),
                path: d.path,
                port: 0,
                interval_ms: d.interval.as_millis() as u64,
                timeout_ms: d.timeout.as_millis() as u64,
                healthy_threshold: d.healthy_threshold,
                unhealthy_threshold: d.unhealthy_threshold,
                success_codes: d.success_codes.to_string(),
            }
        }
    }

    impl HealthCheckFile {
        fn validate(self, path: &Path) -> Result<HealthCheck, ConfigError> {
            use crate::health::{parse_path, parse_threshold, CheckKind, SuccessCodes};
            let invalid = |key: &'static str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            };
            let positive_ms = |key: &'static str, ms: u64| {
                if ms == 0 {
                    Err(invalid(key, "must be greater than 0".to_string()))
                } else {
                    Ok(Duration::from_millis(ms))
                }
            };
            let kind = CheckKind::parse(&self.kind).ok_or_else(|| {
                invalid(
                    "upstream.health_check.kind",
                    format!(
                        "`{}` is not a kind; use \"none\", \"http\", \"https\" or \"tcp\"",
                        self.kind
                    ),
                )
            })?;
            let threshold = |key: &'static str, n: u32| {
                parse_threshold(&n.to_string()).map_err(|m| invalid(key, format!("`{n}` {m}")))
            };
            Ok(HealthCheck {
                kind,
                path: parse_path(&self.path).map_err(|m| {
                    invalid("upstream.health_check.path", format!("`{}` {m}", self.path))
                })?,
                port: (self.port != 0).then_some(self.port),
                interval: positive_ms("upstream.health_check.interval_ms", self.interval_ms)?,
                timeout: positive_ms("upstream.health_check.timeout_ms", self.timeout_ms)?,
                healthy_threshold: threshold(
                    "upstream.health_check.healthy_threshold",
                    self.healthy_threshold,
                )?,
                unhealthy_threshold: threshold(
                    "upstream.health_check.unhealthy_threshold",
                    self.unhealthy_threshold,
                )?,
                success_codes: SuccessCodes::parse(&self.success_codes).map_err(|m| {
                    invalid(
                        "upstream.health_check.success_codes",
                        format!("`{}` {m}", self.success_codes),
                    )
                })?,
            })
        }
    }

    impl Default for Upstream {
        fn default() -> Self {
            Upstream {
                keepalive_pool_size: DEFAULT_KEEPALIVE_POOL_SIZE,
                keepalive_idle_timeout_secs: DEFAULT_KEEPALIVE_IDLE_TIMEOUT_SECS,
                connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
                read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
                write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
                connect_retries: DEFAULT_CONNECT_RETRIES,
                load_balance: DEFAULT_LOAD_BALANCE.to_string(),
                eject_consecutive_failures: DEFAULT_EJECT_CONSECUTIVE_FAILURES,
                eject_base_ms: DEFAULT_EJECT_BASE_MS,
                eject_max_ms: DEFAULT_EJECT_MAX_MS,
                target_type: DEFAULT_TARGET_TYPE.to_string(),
                health_check: HealthCheckFile::default(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Controller {
        pub name: String,
        pub ingress_class: String,
        pub watch_ingress_without_class: bool,
        pub host_owners: std::collections::BTreeMap<String, String>,
        pub cross_namespace_paths: CrossNamespacePaths,
    }

    impl Default for Controller {
        fn default() -> Self {
            Controller {
                name: DEFAULT_CONTROLLER_NAME.to_string(),
                ingress_class: DEFAULT_INGRESS_CLASS.to_string(),
                watch_ingress_without_class: false,
                host_owners: Default::default(),
                cross_namespace_paths: DEFAULT_CROSS_NAMESPACE_PATHS,
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Source {
        pub kind: String,
        pub files: Files,
        pub kubernetes: Kubernetes,
    }

    impl Default for Source {
        fn default() -> Self {
            Source {
                kind: "files".to_string(),
                files: Files::default(),
                kubernetes: Kubernetes::default(),
            }
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Files {
        pub directory: String,
        pub poll_interval_ms: u64,
    }

    impl Default for Files {
        fn default() -> Self {
            Files {
                directory: DEFAULT_FILES_DIRECTORY.to_string(),
                poll_interval_ms: DEFAULT_FILES_POLL_INTERVAL_MS,
            }
        }
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Kubernetes {
        pub namespaces: Vec<String>,
        /// The single namespace of earlier versions: an alias of a one-element `namespaces`.
        pub namespace: String,
        pub kubeconfig: String,
        pub context: String,
    }

    impl Kubernetes {
        /// The namespaces to watch: `namespaces`, or the older `namespace` alone (setting both
        /// is an error); each a namespace name (an RFC 1123 label).
        fn namespaces(&self, path: &Path) -> Result<Vec<String>, ConfigError> {
            let invalid = |key: &'static str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            };
            let mut out: Vec<String> = match non_empty(&self.namespace) {
                Some(_) if !self.namespaces.is_empty() => {
                    return Err(invalid(
                        "source.kubernetes.namespace",
                        "is the older spelling of namespaces; set only namespaces".into(),
                    ))
                }
                Some(one) => vec![one],
                None => self
                    .namespaces
                    .iter()
                    .map(|n| n.trim().to_string())
                    .collect(),
            };
            if let Some(bad) = out.iter().find(|n| !crate::routes::is_dns_label(n)) {
                return Err(invalid(
                    "source.kubernetes.namespaces",
                    format!("`{bad}` is not a namespace name (lowercase letters, digits and '-', at most 63)"),
                ));
            }
            out.sort();
            out.dedup();
            Ok(out)
        }
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    pub struct Log {
        pub level: String,
        pub format: String,
    }

    impl Default for Log {
        fn default() -> Self {
            Log {
                level: "info".to_string(),
                format: "text".to_string(),
            }
        }
    }

    fn non_empty(s: &str) -> Option<String> {
        (!s.trim().is_empty()).then(|| s.trim().to_string())
    }

    /// `namespace/name`, both parts non-empty.
    fn namespace_name(s: &str) -> Option<(String, String)> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Some((ns.to_string(), name.to_string()))
            }
            _ => None,
        }
    }

    impl Tls {
        fn validate(
            self,
            path: &Path,
            addr: &dyn Fn(&'static str, &str) -> Result<SocketAddr, ConfigError>,
        ) -> Result<TlsSettings, ConfigError> {
            let invalid = |key: &'static str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            };
            let https_listen = self
                .https_listen
                .iter()
                .map(|s| addr("tls.https_listen", s))
                .collect::<Result<Vec<_>, _>>()?;
            let relative = |p: String| {
                let p = PathBuf::from(p);
                if p.is_absolute() {
                    p
                } else {
                    path.parent().unwrap_or(Path::new(".")).join(p)
                }
            };
            let files = (
                non_empty(&self.default_certificate_file),
                non_empty(&self.default_key_file),
            );
            let secret = non_empty(&self.default_secret);
            let default_certificate = match (files, secret) {
                ((Some(_), _), Some(_)) | ((_, Some(_)), Some(_)) => {
                    return Err(invalid(
                        "tls.default_secret",
                        "set either default_secret or the default certificate files, not both"
                            .into(),
                    ))
                }
                ((Some(certificate), Some(key)), None) => DefaultCertificate::Files {
                    certificate: relative(certificate),
                    key: relative(key),
                },
                ((Some(_), None), None) => {
                    return Err(invalid(
                        "tls.default_key_file",
                        "is needed with default_certificate_file".into(),
                    ))
                }
                ((None, Some(_)), None) => {
                    return Err(invalid(
                        "tls.default_certificate_file",
                        "is needed with default_key_file".into(),
                    ))
                }
                ((None, None), Some(s)) => match namespace_name(&s) {
                    Some((ns, name)) => {
                        DefaultCertificate::Secret(crate::model::ObjectRef::new(ns, name))
                    }
                    None => {
                        return Err(invalid(
                            "tls.default_secret",
                            format!("`{s}` is not namespace/name"),
                        ))
                    }
                },
                ((None, None), None) => DefaultCertificate::SelfSigned,
            };
            Ok(TlsSettings {
                https_listen,
                default_certificate,
                ssl_redirect: self.ssl_redirect,
                redirect_port: self.redirect_port,
            })
        }
    }

    impl File {
        pub fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
            let invalid = |key: &'static str, message: String| ConfigError::Invalid {
                path: path.to_path_buf(),
                key,
                message,
            };
            let addr = |key: &'static str, s: &str| {
                s.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        key,
                        format!("`{s}` is not an address with a port, such as 0.0.0.0:8080"),
                    )
                })
            };
            let positive_ms = |key: &'static str, ms: u64| {
                if ms == 0 {
                    Err(invalid(key, "must be greater than 0".to_string()))
                } else {
                    Ok(Duration::from_millis(ms))
                }
            };

            if self.server.http_listen.is_empty() {
                return Err(invalid(
                    "server.http_listen",
                    "needs at least one address".into(),
                ));
            }
            let http_listen = self
                .server
                .http_listen
                .iter()
                .map(|s| addr("server.http_listen", s))
                .collect::<Result<Vec<_>, _>>()?;
            let admin_listen = addr("server.admin_listen", &self.server.admin_listen)?;
            if self.server.worker_threads > 1024 {
                return Err(invalid(
                    "server.worker_threads",
                    "must be at most 1024".into(),
                ));
            }
            if self.server.max_request_header_bytes < 1024 {
                return Err(invalid(
                    "server.max_request_header_bytes",
                    "must be at least 1024 bytes".into(),
                ));
            }
            let positive_secs = |key: &'static str, secs: u64| {
                if secs == 0 {
                    Err(invalid(key, "must be greater than 0".to_string()))
                } else {
                    Ok(Duration::from_secs(secs))
                }
            };
            let client_header_timeout = positive_secs(
                "server.client_header_timeout_secs",
                self.server.client_header_timeout_secs,
            )?;
            let client_send_timeout = positive_secs(
                "server.client_send_timeout_secs",
                self.server.client_send_timeout_secs,
            )?;
            let keepalive_timeout = positive_secs(
                "server.keepalive_timeout_secs",
                self.server.keepalive_timeout_secs,
            )?;
            if self.server.keepalive_requests == 0 {
                return Err(invalid(
                    "server.keepalive_requests",
                    "must be at least 1".into(),
                ));
            }
            if self.server.drain_secs > self.server.shutdown_grace_period_secs {
                return Err(invalid(
                    "server.drain_secs",
                    "must be at most server.shutdown_grace_period_secs".into(),
                ));
            }
            let client_body_timeout = positive_secs(
                "server.client_body_timeout_secs",
                self.server.client_body_timeout_secs,
            )?;
            let trusted_proxies = self
                .server
                .trusted_proxies
                .iter()
                .map(|s| s.parse::<Cidr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("server.trusted_proxies", e.to_string()))?;
            if self.upstream.connect_retries > 16 {
                return Err(invalid(
                    "upstream.connect_retries",
                    "must be at most 16".into(),
                ));
            }

            let load_balance = match Balance::keyless(&self.upstream.load_balance) {
                Some(b) => b,
                None if self.upstream.load_balance.trim() == "consistent-hash" => {
                    return Err(invalid(
                        "upstream.load_balance",
                        "consistent-hash needs a key; set it per Ingress with sluice.dev/hash-by"
                            .into(),
                    ))
                }
                None => {
                    return Err(invalid(
                        "upstream.load_balance",
                        format!(
                            "`{}` is not an algorithm; use \"round-robin\", \"least-request\" or \"ewma\"",
                            self.upstream.load_balance
                        ),
                    ))
                }
            };

            let Some(target_type) = TargetType::parse(&self.upstream.target_type) else {
                return Err(invalid(
                    "upstream.target_type",
                    format!(
                        "`{}` is not a target type; use \"ip\" or \"instance\"",
                        self.upstream.target_type
                    ),
                ));
            };

            let ejection = Ejection {
                consecutive_failures: self.upstream.eject_consecutive_failures,
                base: positive_ms("upstream.eject_base_ms", self.upstream.eject_base_ms)?,
                max: positive_ms("upstream.eject_max_ms", self.upstream.eject_max_ms)?,
            };
            if ejection.max < ejection.base {
                return Err(invalid(
                    "upstream.eject_max_ms",
                    "must be at least upstream.eject_base_ms".into(),
                ));
            }

            let source = match self.source.kind.as_str() {
                "files" => {
                    let dir = PathBuf::from(&self.source.files.directory);
                    let directory = if dir.is_absolute() {
                        dir
                    } else {
                        path.parent().unwrap_or(Path::new(".")).join(dir)
                    };
                    SourceSettings::Files {
                        directory,
                        poll_interval: positive_ms(
                            "source.files.poll_interval_ms",
                            self.source.files.poll_interval_ms,
                        )?,
                    }
                }
                "kubernetes" => SourceSettings::Kubernetes(KubernetesSettings {
                    namespaces: self.source.kubernetes.namespaces(path)?,
                    kubeconfig: non_empty(&self.source.kubernetes.kubeconfig).map(PathBuf::from),
                    context: non_empty(&self.source.kubernetes.context),
                }),
                other => {
                    return Err(invalid(
                        "source.kind",
                        format!("`{other}` is not a source; use \"files\" or \"kubernetes\""),
                    ))
                }
            };

            let log_format = match self.log.format.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(invalid(
                        "log.format",
                        format!("`{other}` is not a format; use \"text\" or \"json\""),
                    ))
                }
            };
            let access_format = match self.access_log.format.as_str() {
                "json" => AccessLogFormat::Json,
                "combined" => AccessLogFormat::Combined,
                other => {
                    return Err(invalid(
                        "access_log.format",
                        format!("`{other}` is not a format; use \"json\" or \"combined\""),
                    ))
                }
            };
            if self.log.level.trim().is_empty() {
                return Err(invalid("log.level", "must not be empty".into()));
            }
            if self.controller.name.trim().is_empty() {
                return Err(invalid("controller.name", "must not be empty".into()));
            }
            if self.controller.ingress_class.trim().is_empty() {
                return Err(invalid(
                    "controller.ingress_class",
                    "must not be empty".into(),
                ));
            }
            let host_owners = HostOwners::new(
                self.controller
                    .host_owners
                    .iter()
                    .map(|(p, ns)| (p.as_str(), ns.as_str())),
            )
            .map_err(|e| invalid("controller.host_owners", e.to_string()))?;

            let le = &self.leader_election;
            if le.lease_duration_secs == 0 {
                return Err(invalid(
                    "leader_election.lease_duration_secs",
                    "must be greater than 0".into(),
                ));
            }
            if le.renew_period_secs == 0 || le.renew_period_secs >= le.lease_duration_secs {
                return Err(invalid(
                    "leader_election.renew_period_secs",
                    "must be greater than 0 and less than lease_duration_secs".into(),
                ));
            }
            if le.lease_name.trim().is_empty() {
                return Err(invalid(
                    "leader_election.lease_name",
                    "must not be empty".into(),
                ));
            }
            let leader_election = LeaderElection {
                enabled: le.enabled,
                lease_name: le.lease_name.trim().to_string(),
                lease_namespace: non_empty(&le.lease_namespace),
                lease_duration: Duration::from_secs(le.lease_duration_secs),
                renew_period: Duration::from_secs(le.renew_period_secs),
                identity: non_empty(&le.identity),
            };
            let publish_service = match non_empty(&self.status.publish_service) {
                None => None,
                Some(s) => match namespace_name(&s) {
                    Some(pair) => Some(pair),
                    None => {
                        return Err(invalid(
                            "status.publish_service",
                            format!("`{s}` is not namespace/name"),
                        ))
                    }
                },
            };
            if self.status.addresses.iter().any(|a| a.trim().is_empty()) {
                return Err(invalid("status.addresses", "an address is empty".into()));
            }
            if self.status.events_per_second == 0 {
                return Err(invalid(
                    "status.events_per_second",
                    "must be at least 1".into(),
                ));
            }
            if self.status.events_max_pending == 0 {
                return Err(invalid(
                    "status.events_max_pending",
                    "must be at least 1".into(),
                ));
            }
            let status = StatusSettings {
                addresses: self
                    .status
                    .addresses
                    .iter()
                    .map(|a| a.trim().to_string())
                    .collect(),
                publish_service,
                events_per_second: self.status.events_per_second,
                events_max_pending: self.status.events_max_pending,
            };

            let tls = self.tls.validate(path, &addr)?;
            let health_check = self.upstream.health_check.validate(path)?;

            Ok(Settings {
                tls,
                leader_election,
                status,
                http_listen,
                admin_listen,
                worker_threads: self.server.worker_threads,
                shutdown_grace_period: Duration::from_secs(self.server.shutdown_grace_period_secs),
                max_request_header_bytes: self.server.max_request_header_bytes,
                max_request_body_bytes: self.server.max_request_body_bytes,
                client_body_timeout,
                underscores_in_headers: self.server.underscores_in_headers,
                trusted_proxies,
                client_header_timeout,
                client_send_timeout,
                keepalive_timeout,
                keepalive_requests: self.server.keepalive_requests,
                max_connections: (self.server.max_connections != 0)
                    .then_some(self.server.max_connections),
                max_connections_per_client: (self.server.max_connections_per_client != 0)
                    .then_some(self.server.max_connections_per_client),
                drain: Duration::from_secs(self.server.drain_secs),
                keepalive_pool_size: self.upstream.keepalive_pool_size,
                keepalive_idle_timeout: Duration::from_secs(
                    self.upstream.keepalive_idle_timeout_secs,
                ),
                connect_timeout: positive_ms(
                    "upstream.connect_timeout_ms",
                    self.upstream.connect_timeout_ms,
                )?,
                read_timeout: positive_ms(
                    "upstream.read_timeout_ms",
                    self.upstream.read_timeout_ms,
                )?,
                write_timeout: positive_ms(
                    "upstream.write_timeout_ms",
                    self.upstream.write_timeout_ms,
                )?,
                connect_retries: self.upstream.connect_retries,
                load_balance,
                ejection,
                target_type,
                health_check,
                controller_name: self.controller.name,
                ingress_class: self.controller.ingress_class,
                watch_ingress_without_class: self.controller.watch_ingress_without_class,
                host_owners,
                cross_namespace_paths: self.controller.cross_namespace_paths,
                source,
                access_log: self.access_log.enabled.then_some(access_format),
                log_level: self.log.level,
                log_format,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Settings, ConfigError> {
        Settings::parse(text, Path::new("/etc/sluice/sluice.toml"))
    }

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let s = parse("").unwrap();
        assert_eq!(s.http_listen, vec!["0.0.0.0:8080".parse().unwrap()]);
        assert_eq!(s.admin_listen, "0.0.0.0:10254".parse().unwrap());
        assert_eq!(s.connect_timeout, Duration::from_secs(2));
        assert_eq!(s.connect_retries, 2);
        assert_eq!(s.load_balance, Balance::RoundRobin);
        assert_eq!(s.ejection.consecutive_failures, 5);
        assert_eq!(s.ejection.base, Duration::from_secs(10));
        assert_eq!(s.ejection.max, Duration::from_secs(300));
        assert_eq!(s.controller_name, "sluice.dev/ingress-controller");
        assert_eq!(s.ingress_class, "sluice");
        assert!(!s.watch_ingress_without_class);
        assert_eq!(s.cross_namespace_paths, DEFAULT_CROSS_NAMESPACE_PATHS);
        assert_eq!(
            s.source,
            SourceSettings::Files {
                directory: PathBuf::from("/etc/sluice/manifests"),
                poll_interval: Duration::from_millis(250)
            }
        );
        assert_eq!(s, Settings::defaults().clone_with_source(s.source.clone()));
    }

    impl Settings {
        fn clone_with_source(mut self, source: SourceSettings) -> Settings {
            self.source = source;
            self
        }
    }

    #[test]
    fn values_in_the_file_replace_defaults() {
        let s = parse(
            "[server]\nhttp_listen = [\"127.0.0.1:80\", \"[::1]:80\"]\nworker_threads = 3\n\
             [upstream]\nread_timeout_ms = 1500\nload_balance = \"ewma\"\n[source]\nkind = \"kubernetes\"\n\
             [source.kubernetes]\nnamespace = \"web\"\n[log]\nformat = \"json\"\n",
        )
        .unwrap();
        assert_eq!(s.http_listen.len(), 2);
        assert_eq!(s.worker_threads_or(8), 3);
        assert_eq!(s.read_timeout, Duration::from_millis(1500));
        assert_eq!(s.load_balance, Balance::Ewma);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(
            s.source,
            SourceSettings::Kubernetes(KubernetesSettings {
                namespaces: vec!["web".into()],
                ..Default::default()
            })
        );
    }

    #[test]
    fn the_kubernetes_source_watches_a_list_of_namespaces_and_still_reads_the_single_one() {
        let namespaces = |text: &str| match parse(text).map(|s| s.source) {
            Ok(SourceSettings::Kubernetes(k)) => Ok(k.namespaces),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let base = "[source]\nkind = \"kubernetes\"\n[source.kubernetes]\n";
        assert_eq!(namespaces(base), Ok(vec![]));
        assert_eq!(
            namespaces(&format!(
                "{base}namespaces = [\"team-b\", \"team-a\", \"team-b\"]\n"
            )),
            Ok(vec!["team-a".to_string(), "team-b".to_string()])
        );
        assert_eq!(
            namespaces(&format!("{base}namespace = \"web\"\n")),
            Ok(vec!["web".to_string()])
        );
        let both = namespaces(&format!("{base}namespace = \"a\"\nnamespaces = [\"b\"]\n"));
        assert!(
            both.as_ref()
                .unwrap_err()
                .contains("source.kubernetes.namespace"),
            "{both:?}"
        );
        for bad in ["", "Team", "a_b", "-a"] {
            let err = namespaces(&format!("{base}namespaces = [\"{bad}\"]\n")).unwrap_err();
            assert!(err.contains("source.kubernetes.namespaces"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_target_type_defaults_to_ip_and_instance_can_be_chosen() {
        assert_eq!(parse("").unwrap().target_type, TargetType::Ip);
        let s = parse("[upstream]\ntarget_type = \"instance\"\n").unwrap();
        assert_eq!(s.target_type.name(), "instance");
        let err = parse("[upstream]\ntarget_type = \"pod\"\n").unwrap_err();
        assert!(err.to_string().contains("upstream.target_type"), "{err}");
    }

    #[test]
    fn request_limits_default_as_nginx_and_trusted_proxies_are_validated_ranges() {
        let s = parse("").unwrap();
        assert_eq!(s.max_request_body_bytes, 1024 * 1024);
        assert_eq!(s.client_body_timeout, Duration::from_secs(60));
        assert!(!s.underscores_in_headers);
        assert!(s.trusted_proxies.is_empty());
        let s = parse(
            "[server]\nmax_request_body_bytes = 0\nclient_body_timeout_secs = 5\n\
             underscores_in_headers = true\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n",
        )
        .unwrap();
        assert_eq!(s.max_request_body_bytes, 0);
        assert_eq!(s.client_body_timeout, Duration::from_secs(5));
        assert!(s.underscores_in_headers);
        assert!(s.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
        assert!(!s.trusted_proxies[0].contains("11.1.2.3".parse().unwrap()));
        assert!(s.trusted_proxies[1].contains("fd00::1".parse().unwrap()));
        let err = parse("[server]\ntrusted_proxies = [\"10.0.0.1/8\"]\n").unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::Invalid {
                    key: "server.trusted_proxies",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("10.0.0.1/8"), "{err}");
        let err = parse("[server]\nclient_body_timeout_secs = 0\n").unwrap_err();
        assert!(
            err.to_string().contains("server.client_body_timeout_secs"),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = parse("[server]\nworker_threads = 2\nworker_thread = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("sluice.toml:3:"), "{text}");
        assert!(text.contains("`server.worker_thread`"), "{text}");
        assert!(text.contains("unknown field"), "{text}");
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_key() {
        let err = parse("[upstream]\n\nconnect_timeout_ms = \"2s\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains(":3:"), "{text}");
        assert!(text.contains("`upstream.connect_timeout_ms`"), "{text}");
    }

    #[test]
    fn an_unknown_table_is_refused() {
        let err = parse("[servr]\nx = 1\n").unwrap_err();
        assert!(err.to_string().contains("servr"), "{err}");
    }

    #[test]
    fn out_of_range_values_are_refused_with_their_key() {
        for (text, key) in [
            (
                "[server]\nhttp_listen = [\"localhost\"]",
                "server.http_listen",
            ),
            ("[server]\nhttp_listen = []", "server.http_listen"),
            ("[server]\nadmin_listen = \"nope\"", "server.admin_listen"),
            (
                "[upstream]\nconnect_timeout_ms = 0",
                "upstream.connect_timeout_ms",
            ),
            (
                "[upstream]\nconnect_retries = 99",
                "upstream.connect_retries",
            ),
            ("[source]\nkind = \"consul\"", "source.kind"),
            (
                "[upstream]\neject_base_ms = 5000\neject_max_ms = 1000",
                "upstream.eject_max_ms",
            ),
            (
                "[upstream]\nload_balance = \"random\"",
                "upstream.load_balance",
            ),
            ("[upstream]\ntarget_type = \"node\"", "upstream.target_type"),
            (
                "[upstream]\nload_balance = \"consistent-hash\"",
                "upstream.load_balance",
            ),
            ("[log]\nformat = \"xml\"", "log.format"),
            ("[access_log]\nformat = \"apache\"", "access_log.format"),
            (
                "[status]\npublish_service = \"nope\"",
                "status.publish_service",
            ),
            (
                "[status]\nevents_per_second = 0",
                "status.events_per_second",
            ),
            (
                "[status]\nevents_max_pending = 0",
                "status.events_max_pending",
            ),
            (
                "[leader_election]\nrenew_period_secs = 30",
                "leader_election.renew_period_secs",
            ),
            (
                "[leader_election]\nlease_duration_secs = 0",
                "leader_election.lease_duration_secs",
            ),
            (
                "[server]\nmax_request_header_bytes = 10",
                "server.max_request_header_bytes",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn host_owners_and_cross_namespace_paths_are_read_and_bad_entries_name_their_key() {
        let s = parse("").unwrap();
        assert!(s.host_owners.is_empty());
        assert_eq!(s.cross_namespace_paths, CrossNamespacePaths::Allow);
        let s = parse(
            "[controller]\ncross_namespace_paths = \"deny\"\n\
             [controller.host_owners]\n\"*.team-a.example.com\" = \"team-a\"\n\"pay.example.com\" = \"payments\"\n",
        )
        .unwrap();
        assert_eq!(s.cross_namespace_paths, CrossNamespacePaths::Deny);
        let key = crate::routes::parse_rule_host(Some("app.team-a.example.com")).unwrap();
        assert_eq!(s.host_owners.owner_of(&key).map(|o| o.0), Some("team-a"));
        for (text, names) in [
            (
                "[controller.host_owners]\n\"Bad_Host\" = \"a\"\n",
                "`Bad_Host`",
            ),
            (
                "[controller.host_owners]\n\"a.test\" = \"Team A\"\n",
                "`Team A`",
            ),
        ] {
            match parse(text) {
                Err(
                    e @ ConfigError::Invalid {
                        key: "controller.host_owners",
                        ..
                    },
                ) => {
                    assert!(e.to_string().contains(names), "{e}")
                }
                other => panic!("{text}: expected an Invalid error, got {other:?}"),
            }
        }
        let err = parse("[controller]\ncross_namespace_paths = \"maybe\"\n").unwrap_err();
        assert!(
            matches!(&err, ConfigError::Parse { key, line: 2, .. } if key == "controller.cross_namespace_paths"),
            "{err:?}"
        );
        let err = parse("[controller.host_owners]\n\"a.test\" = 3\n").unwrap_err();
        assert!(matches!(&err, ConfigError::Parse { .. }), "{err:?}");
    }

    #[test]
    fn tls_is_off_by_default_with_redirects_on_and_a_generated_certificate() {
        let s = parse("").unwrap();
        assert_eq!(
            s.tls,
            TlsSettings {
                https_listen: vec![],
                default_certificate: DefaultCertificate::SelfSigned,
                ssl_redirect: true,
                redirect_port: 443,
            }
        );
    }

    #[test]
    fn tls_settings_are_read_with_paths_relative_to_the_file() {
        let s = parse(
            "[tls]\nhttps_listen = [\"127.0.0.1:8443\"]\ndefault_certificate_file = \"certs/tls.crt\"\n\
             default_key_file = \"/keys/tls.key\"\nssl_redirect = false\nredirect_port = 0\n",
        )
        .unwrap();
        assert_eq!(s.tls.https_listen, vec!["127.0.0.1:8443".parse().unwrap()]);
        assert_eq!(
            s.tls.default_certificate,
            DefaultCertificate::Files {
                certificate: PathBuf::from("/etc/sluice/certs/tls.crt"),
                key: PathBuf::from("/keys/tls.key"),
            }
        );
        assert!(!s.tls.ssl_redirect);
        assert_eq!(s.tls.redirect_port, 0);
        let s = parse("[tls]\ndefault_secret = \"edge/wildcard\"\n").unwrap();
        assert_eq!(
            s.tls.default_certificate,
            DefaultCertificate::Secret(crate::model::ObjectRef::new("edge", "wildcard"))
        );
    }

    #[test]
    fn inconsistent_tls_settings_are_refused_with_their_key() {
        for (text, key) in [
            ("[tls]\nhttps_listen = [\"443\"]", "tls.https_listen"),
            (
                "[tls]\ndefault_certificate_file = \"a.crt\"",
                "tls.default_key_file",
            ),
            (
                "[tls]\ndefault_key_file = \"a.key\"",
                "tls.default_certificate_file",
            ),
            ("[tls]\ndefault_secret = \"nope\"", "tls.default_secret"),
            (
                "[tls]\ndefault_secret = \"a/b\"\ndefault_certificate_file = \"a.crt\"\ndefault_key_file = \"a.key\"",
                "tls.default_secret",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
            }
        }
        let err = parse("[tls]\nhttps_port = 1\n").unwrap_err();
        assert!(err.to_string().contains("`tls.https_port`"), "{err}");
    }

    #[test]
    fn health_check_defaults_are_off_and_the_file_can_turn_them_on() {
        use crate::health::{CheckKind, SuccessCodes};
        let s = parse("").unwrap();
        assert_eq!(s.health_check, HealthCheck::default());
        assert_eq!(s.health_check.kind, CheckKind::None);
        let s = parse(
            "[upstream.health_check]\nkind = \"http\"\npath = \"/ready\"\nport = 8081\n\
             interval_ms = 1000\ntimeout_ms = 500\nhealthy_threshold = 1\nunhealthy_threshold = 4\n\
             success_codes = \"200-299\"\n",
        )
        .unwrap();
        assert_eq!(
            s.health_check,
            HealthCheck {
                kind: CheckKind::Http,
                path: "/ready".into(),
                port: Some(8081),
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                healthy_threshold: 1,
                unhealthy_threshold: 4,
                success_codes: SuccessCodes(vec![(200, 299)]),
            }
        );
        for (text, key) in [
            ("kind = \"grpc\"", "upstream.health_check.kind"),
            ("path = \"ready\"", "upstream.health_check.path"),
            ("interval_ms = 0", "upstream.health_check.interval_ms"),
            ("timeout_ms = 0", "upstream.health_check.timeout_ms"),
            (
                "healthy_threshold = 0",
                "upstream.health_check.healthy_threshold",
            ),
            (
                "unhealthy_threshold = 1000",
                "upstream.health_check.unhealthy_threshold",
            ),
            (
                "success_codes = \"ok\"",
                "upstream.health_check.success_codes",
            ),
        ] {
            match parse(&format!("[upstream.health_check]\n{text}\n")) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
            }
        }
        let s = parse("[upstream.health_check]\nkind = \"https\"\n").unwrap();
        assert_eq!(s.health_check.kind, CheckKind::Https);
        let err = parse("[upstream.health_check]\ninterval = 5\n").unwrap_err();
        assert!(
            err.to_string().contains("`upstream.health_check.interval`"),
            "{err}"
        );
    }

    #[test]
    fn client_connection_limits_have_nginx_like_defaults_and_can_be_set() {
        let s = parse("").unwrap();
        assert_eq!(s.client_header_timeout, Duration::from_secs(60));
        assert_eq!(s.client_send_timeout, Duration::from_secs(60));
        assert_eq!(s.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(s.keepalive_requests, 1000);
        assert_eq!(s.max_connections, None);
        assert_eq!(s.max_connections_per_client, None);
        assert_eq!(s.drain, Duration::from_secs(5));
        let s = parse(
            "[server]\nclient_header_timeout_secs = 10\nclient_send_timeout_secs = 20\n\
             keepalive_timeout_secs = 5\nkeepalive_requests = 3\nmax_connections = 900\n\
             max_connections_per_client = 40\ndrain_secs = 0\n",
        )
        .unwrap();
        assert_eq!(s.client_header_timeout, Duration::from_secs(10));
        assert_eq!(s.client_send_timeout, Duration::from_secs(20));
        assert_eq!(s.keepalive_timeout, Duration::from_secs(5));
        assert_eq!(s.keepalive_requests, 3);
        assert_eq!(s.max_connections_or(1024), 900);
        assert_eq!(s.max_connections_per_client, Some(40));
        assert_eq!(s.drain, Duration::ZERO);
        for (text, key) in [
            (
                "client_header_timeout_secs = 0",
                "server.client_header_timeout_secs",
            ),
            (
                "client_send_timeout_secs = 0",
                "server.client_send_timeout_secs",
            ),
            (
                "keepalive_timeout_secs = 0",
                "server.keepalive_timeout_secs",
            ),
            ("keepalive_requests = 0", "server.keepalive_requests"),
            (
                "shutdown_grace_period_secs = 3\ndrain_secs = 4",
                "server.drain_secs",
            ),
        ] {
            match parse(&format!("[server]\n{text}\n")) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_default_connection_cap_leaves_room_below_the_file_limit() {
        let s = parse("").unwrap();
        // Half of what is left after the reserve: each client connection may hold an upstream one.
        assert_eq!(s.max_connections_or(1024), 448);
        assert_eq!(s.max_connections_or(512), 192);
        // Bounded on both sides.
        assert_eq!(s.max_connections_or(1 << 20), 50_000);
        assert_eq!(s.max_connections_or(100), 16);
    }

    #[test]
    fn a_missing_file_is_reported_with_its_path() {
        let err = Settings::load(Path::new("/nonexistent/sluice.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::FileOpen { .. }));
        assert!(err.to_string().contains("/nonexistent/sluice.toml"));
    }
}
