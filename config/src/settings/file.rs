//! The serde mirror of the file. Field names are the TOML keys; a key the file leaves out
//! takes its `DEFAULT_*` value.
//!
//! A value chosen from a list is deserialized straight into its enum ([`Named`]): a name outside
//! the list is refused while parsing, with its line, column and key, and a message listing the
//! names it may take.

use serde::{Deserialize, Deserializer};

use super::defaults::*;
use super::{AccessLogFormat, LogFormat};
use crate::annotations::Balance;
use crate::health::{CheckKind, HealthCheck};
use crate::ownership::CrossNamespacePaths;
use crate::targets::TargetType;

/// A value of the file spelled as one of a few names.
pub trait Named: Sized {
    /// What a value is, in errors: "an algorithm".
    const WHAT: &'static str;
    /// Every name accepted, with its value, in the order errors list them.
    fn names() -> Vec<(&'static str, Self)>;
    /// A name refused with a reason of its own, rather than as unknown.
    fn refused(_name: &str) -> Option<NameError> {
        None
    }
}

/// Why a name is not one of a [`Named`] value's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A name outside the list.
    #[error("`{name}` is not {what}; use {choices}")]
    Unknown {
        name: String,
        what: &'static str,
        /// The names accepted, quoted: `"text" or "json"`.
        choices: String,
    },
    /// `upstream.load_balance = "consistent-hash"`, which only an Ingress can key.
    #[error("consistent-hash needs a key; set it per Ingress with sluice.dev/hash-by")]
    ConsistentHashNeedsKey,
}

/// Reads `text` (surrounding whitespace ignored) as one of `T`'s names.
pub fn from_name<T: Named>(text: &str) -> Result<T, NameError> {
    let name = text.trim();
    if let Some(e) = T::refused(name) {
        return Err(e);
    }
    let names = T::names();
    let quoted: Vec<String> = names.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    match names.into_iter().find(|(n, _)| *n == name) {
        Some((_, value)) => Ok(value),
        None => Err(NameError::Unknown {
            name: text.to_string(),
            what: T::WHAT,
            choices: match quoted.split_last() {
                Some((last, [])) => last.clone(),
                Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
                None => String::new(),
            },
        }),
    }
}

/// `deserialize_with` for a [`Named`] field.
fn named<'de, D: Deserializer<'de>, T: Named>(d: D) -> Result<T, D::Error> {
    let text = String::deserialize(d)?;
    from_name(&text).map_err(serde::de::Error::custom)
}

/// `source.kind`: where the objects that make routes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Files,
    Kubernetes,
}

impl Named for SourceKind {
    const WHAT: &'static str = "a source";
    fn names() -> Vec<(&'static str, Self)> {
        vec![
            ("files", SourceKind::Files),
            ("kubernetes", SourceKind::Kubernetes),
        ]
    }
}

/// `upstream.load_balance`: the algorithms that need no key.
impl Named for Balance {
    const WHAT: &'static str = "an algorithm";
    fn names() -> Vec<(&'static str, Self)> {
        [Balance::RoundRobin, Balance::LeastRequest, Balance::Ewma]
            .into_iter()
            .map(|b| (b.name(), b))
            .collect()
    }
    fn refused(name: &str) -> Option<NameError> {
        (name == "consistent-hash").then_some(NameError::ConsistentHashNeedsKey)
    }
}

/// `upstream.target_type`, without a node filter (that is set per Ingress).
impl Named for TargetType {
    const WHAT: &'static str = "a target type";
    fn names() -> Vec<(&'static str, Self)> {
        vec![
            ("ip", TargetType::Ip),
            ("instance", TargetType::Instance(Default::default())),
        ]
    }
}

/// `upstream.health_check.kind`.
impl Named for CheckKind {
    const WHAT: &'static str = "a kind";
    fn names() -> Vec<(&'static str, Self)> {
        [
            CheckKind::None,
            CheckKind::Http,
            CheckKind::Https,
            CheckKind::Tcp,
        ]
        .into_iter()
        .map(|k| (k.name(), k))
        .collect()
    }
}

/// `log.format`.
impl Named for LogFormat {
    const WHAT: &'static str = "a format";
    fn names() -> Vec<(&'static str, Self)> {
        vec![("text", LogFormat::Text), ("json", LogFormat::Json)]
    }
}

/// `access_log.format`.
impl Named for AccessLogFormat {
    const WHAT: &'static str = "a format";
    fn names() -> Vec<(&'static str, Self)> {
        vec![
            ("json", AccessLogFormat::Json),
            ("combined", AccessLogFormat::Combined),
        ]
    }
}

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
    pub access: Access,
}

/// `[access]`: who may reach any route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Access {
    /// CIDR strings: clients in these ranges get 403 on every route.
    pub denylist_source_range: Vec<String>,
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
    #[serde(deserialize_with = "named")]
    pub format: AccessLogFormat,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            enabled: DEFAULT_ACCESS_LOG_ENABLED,
            format: DEFAULT_ACCESS_LOG_FORMAT,
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
            enabled: DEFAULT_LEADER_ELECTION_ENABLED,
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
    pub proxy_protocol: bool,
    pub proxy_protocol_trusted: Vec<String>,
    pub client_header_timeout_secs: u64,
    pub client_send_timeout_secs: u64,
    pub keepalive_timeout_secs: u64,
    pub keepalive_requests: u32,
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    pub drain_secs: u64,
    pub limit_status: u16,
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
            proxy_protocol: false,
            proxy_protocol_trusted: Vec::new(),
            client_header_timeout_secs: DEFAULT_CLIENT_HEADER_TIMEOUT_SECS,
            client_send_timeout_secs: DEFAULT_CLIENT_SEND_TIMEOUT_SECS,
            keepalive_timeout_secs: DEFAULT_KEEPALIVE_TIMEOUT_SECS,
            keepalive_requests: DEFAULT_KEEPALIVE_REQUESTS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            drain_secs: DEFAULT_DRAIN_SECS,
            limit_status: DEFAULT_LIMIT_STATUS,
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
    #[serde(deserialize_with = "named")]
    pub load_balance: Balance,
    pub eject_consecutive_failures: u32,
    pub eject_base_ms: u64,
    pub eject_max_ms: u64,
    #[serde(deserialize_with = "named")]
    pub target_type: TargetType,
    pub health_check: HealthCheckFile,
}

/// `[upstream.health_check]`: the defaults of every Service's active health check.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckFile {
    #[serde(deserialize_with = "named")]
    pub kind: CheckKind,
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
            kind: d.kind,
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

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            keepalive_pool_size: DEFAULT_KEEPALIVE_POOL_SIZE,
            keepalive_idle_timeout_secs: DEFAULT_KEEPALIVE_IDLE_TIMEOUT_SECS,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            read_timeout_ms: DEFAULT_READ_TIMEOUT_MS,
            write_timeout_ms: DEFAULT_WRITE_TIMEOUT_MS,
            connect_retries: DEFAULT_CONNECT_RETRIES,
            load_balance: DEFAULT_LOAD_BALANCE,
            eject_consecutive_failures: DEFAULT_EJECT_CONSECUTIVE_FAILURES,
            eject_base_ms: DEFAULT_EJECT_BASE_MS,
            eject_max_ms: DEFAULT_EJECT_MAX_MS,
            target_type: DEFAULT_TARGET_TYPE,
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
    #[serde(deserialize_with = "named")]
    pub kind: SourceKind,
    pub files: Files,
    pub kubernetes: Kubernetes,
}

impl Default for Source {
    fn default() -> Self {
        Source {
            kind: SourceKind::Files,
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    pub level: String,
    #[serde(deserialize_with = "named")]
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: DEFAULT_LOG_LEVEL.to_string(),
            format: DEFAULT_LOG_FORMAT,
        }
    }
}
