//! The TOML settings file and its validation.
//!
//! # Pipeline
//!
//! ```text
//! text --(toml + serde, deny_unknown_fields)--> file::File --(validate)--> Settings
//! ```
//!
//! The caller reads the file (the proxy does, in `sluice::settings::load`) and hands its text and
//! path to [`Settings::from_toml`]: this crate does no I/O. The path names the file in errors and
//! anchors the relative paths inside it.
//!
//! - `file` mirrors the file one to one, with a serde enum for every value chosen from a list
//!   (source, algorithm, target type, health-check kind, log and access-log formats,
//!   cross-namespace paths); it is never used outside this module, and the rest of sluice reads
//!   only the validated [`Settings`].
//! - `validate` turns it into [`Settings`]: ranges, consistency between keys, paths.
//! - [`defaults`]: every value has a default (the `DEFAULT_*` constants, each with its unit),
//!   so an empty file is a valid configuration.
//!
//! A value in the file replaces its default; nothing else (environment, flags) overrides the
//! file, except `RUST_LOG`, which replaces `log.level` when it is set.
//!
//! Errors name the file, the line and column, and the dotted key at fault ([`ConfigError`]):
//! a value of the wrong type or outside its list is refused while parsing, with its line and
//! column; a value that parsed but is out of range or inconsistent with another is refused by
//! validation, with its key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::annotations::Balance;
use crate::cidr::Cidr;
use crate::health::HealthCheck;
use crate::ownership::{CrossNamespacePaths, HostOwners};
use crate::targets::TargetType;

pub mod defaults;
mod file;
#[cfg(test)]
mod tests;
mod validate;

pub use defaults::*;

/// Why a settings file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all (reported by the caller that reads it).
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
    /// Proxies whose forwarding headers are believed (the client address from
    /// `X-Forwarded-For`, `X-Forwarded-Proto`/`-Host`/`-Port`, `X-Request-Id`).
    pub trusted_proxies: Vec<Cidr>,
    /// `server.proxy_protocol`: `Some` with `server.proxy_protocol_trusted` (never empty) when
    /// every connection must start with a PROXY protocol header from one of those peers.
    pub proxy_protocol: Option<Vec<Cidr>>,
    /// `access.denylist_source_range`: clients in these ranges get 403 on every route.
    pub denylist_source_range: Vec<Cidr>,
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
    /// `server.limit_status`: 429 or 503, the status of a request over a route's limits.
    pub limit_status: u16,
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

    /// Validates the text of a settings file read from `path`: `path` names the file in errors,
    /// and relative paths inside it are taken relative to the folder it is in.
    pub fn from_toml(text: &str, path: &Path) -> Result<Settings, ConfigError> {
        let file: file::File =
            toml::from_str(text).map_err(|e| validate::parse_error(text, path, &e))?;
        file.validate(path)
    }

    /// The settings of an empty file.
    pub fn defaults() -> Settings {
        // An empty document always parses and validates: every key has a valid default.
        match Settings::from_toml("", Path::new("sluice.toml")) {
            Ok(s) => s,
            Err(e) => unreachable!("the built-in defaults are invalid: {e}"),
        }
    }
}
