//! From the file's mirror to validated [`Settings`]: ranges, consistency between keys, and
//! paths taken relative to the file; and toml's errors turned into ones naming the line, column
//! and dotted key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::file::{File, HealthCheckFile, Kubernetes, SourceKind, Tls};
use super::{
    ConfigError, DefaultCertificate, Ejection, KubernetesSettings, LeaderElection, Settings,
    SourceSettings, StatusSettings, TlsSettings,
};
use crate::cidr::Cidr;
use crate::health::HealthCheck;
use crate::ownership::HostOwners;

/// Turns a toml error into one naming the line, column and dotted key.
pub(super) fn parse_error(text: &str, path: &Path, e: &toml::de::Error) -> ConfigError {
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

/// The errors of one file: each names the file and the dotted key.
#[derive(Clone, Copy)]
struct At<'a>(&'a Path);

impl At<'_> {
    fn invalid(self, key: &'static str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: self.0.to_path_buf(),
            key,
            message,
        }
    }

    /// A listening address with a port.
    fn addr(self, key: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
        s.parse::<SocketAddr>().map_err(|_| {
            self.invalid(
                key,
                format!("`{s}` is not an address with a port, such as 0.0.0.0:8080"),
            )
        })
    }

    fn positive_ms(self, key: &'static str, ms: u64) -> Result<Duration, ConfigError> {
        self.positive(key, ms).map(Duration::from_millis)
    }

    /// A list of CIDR strings (see [`Cidr`]).
    fn ranges(self, key: &'static str, list: &[String]) -> Result<Vec<Cidr>, ConfigError> {
        list.iter()
            .map(|s| s.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.invalid(key, e.to_string()))
    }

    fn positive_secs(self, key: &'static str, secs: u64) -> Result<Duration, ConfigError> {
        self.positive(key, secs).map(Duration::from_secs)
    }

    fn positive(self, key: &'static str, n: u64) -> Result<u64, ConfigError> {
        if n == 0 {
            Err(self.invalid(key, "must be greater than 0".to_string()))
        } else {
            Ok(n)
        }
    }
}

impl HealthCheckFile {
    fn validate(self, path: &Path) -> Result<HealthCheck, ConfigError> {
        use crate::health::{parse_path, parse_threshold, SuccessCodes};
        let at = At(path);
        let threshold = |key: &'static str, n: u32| {
            parse_threshold(&n.to_string()).map_err(|m| at.invalid(key, format!("`{n}` {m}")))
        };
        Ok(HealthCheck {
            kind: self.kind,
            path: parse_path(&self.path).map_err(|m| {
                at.invalid("upstream.health_check.path", format!("`{}` {m}", self.path))
            })?,
            port: (self.port != 0).then_some(self.port),
            interval: at.positive_ms("upstream.health_check.interval_ms", self.interval_ms)?,
            timeout: at.positive_ms("upstream.health_check.timeout_ms", self.timeout_ms)?,
            healthy_threshold: threshold(
                "upstream.health_check.healthy_threshold",
                self.healthy_threshold,
            )?,
            unhealthy_threshold: threshold(
                "upstream.health_check.unhealthy_threshold",
                self.unhealthy_threshold,
            )?,
            success_codes: SuccessCodes::parse(&self.success_codes).map_err(|m| {
                at.invalid(
                    "upstream.health_check.success_codes",
                    format!("`{}` {m}", self.success_codes),
                )
            })?,
        })
    }
}

impl Kubernetes {
    /// The namespaces to watch: `namespaces`, or the older `namespace` alone (setting both
    /// is an error); each a namespace name (an RFC 1123 label).
    fn namespaces(&self, path: &Path) -> Result<Vec<String>, ConfigError> {
        let at = At(path);
        let mut out: Vec<String> = match non_empty(&self.namespace) {
            Some(_) if !self.namespaces.is_empty() => {
                return Err(at.invalid(
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
            return Err(at.invalid(
                "source.kubernetes.namespaces",
                format!("`{bad}` is not a namespace name (lowercase letters, digits and '-', at most 63)"),
            ));
        }
        out.sort();
        out.dedup();
        Ok(out)
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
    fn validate(self, path: &Path) -> Result<TlsSettings, ConfigError> {
        let at = At(path);
        let https_listen = self
            .https_listen
            .iter()
            .map(|s| at.addr("tls.https_listen", s))
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
                return Err(at.invalid(
                    "tls.default_secret",
                    "set either default_secret or the default certificate files, not both".into(),
                ))
            }
            ((Some(certificate), Some(key)), None) => DefaultCertificate::Files {
                certificate: relative(certificate),
                key: relative(key),
            },
            ((Some(_), None), None) => {
                return Err(at.invalid(
                    "tls.default_key_file",
                    "is needed with default_certificate_file".into(),
                ))
            }
            ((None, Some(_)), None) => {
                return Err(at.invalid(
                    "tls.default_certificate_file",
                    "is needed with default_key_file".into(),
                ))
            }
            ((None, None), Some(s)) => match namespace_name(&s) {
                Some((ns, name)) => {
                    DefaultCertificate::Secret(crate::model::ObjectRef::new(ns, name))
                }
                None => {
                    return Err(
                        at.invalid("tls.default_secret", format!("`{s}` is not namespace/name"))
                    )
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
    pub(super) fn validate(self, path: &Path) -> Result<Settings, ConfigError> {
        let at = At(path);

        if self.server.http_listen.is_empty() {
            return Err(at.invalid("server.http_listen", "needs at least one address".into()));
        }
        let http_listen = self
            .server
            .http_listen
            .iter()
            .map(|s| at.addr("server.http_listen", s))
            .collect::<Result<Vec<_>, _>>()?;
        let admin_listen = at.addr("server.admin_listen", &self.server.admin_listen)?;
        if self.server.worker_threads > 1024 {
            return Err(at.invalid("server.worker_threads", "must be at most 1024".into()));
        }
        if self.server.max_request_header_bytes < 1024 {
            return Err(at.invalid(
                "server.max_request_header_bytes",
                "must be at least 1024 bytes".into(),
            ));
        }
        let client_header_timeout = at.positive_secs(
            "server.client_header_timeout_secs",
            self.server.client_header_timeout_secs,
        )?;
        let client_send_timeout = at.positive_secs(
            "server.client_send_timeout_secs",
            self.server.client_send_timeout_secs,
        )?;
        let keepalive_timeout = at.positive_secs(
            "server.keepalive_timeout_secs",
            self.server.keepalive_timeout_secs,
        )?;
        if self.server.keepalive_requests == 0 {
            return Err(at.invalid("server.keepalive_requests", "must be at least 1".into()));
        }
        if self.server.drain_secs > self.server.shutdown_grace_period_secs {
            return Err(at.invalid(
                "server.drain_secs",
                "must be at most server.shutdown_grace_period_secs".into(),
            ));
        }
        let client_body_timeout = at.positive_secs(
            "server.client_body_timeout_secs",
            self.server.client_body_timeout_secs,
        )?;
        let trusted_proxies = at.ranges("server.trusted_proxies", &self.server.trusted_proxies)?;
        let proxy_protocol_trusted = at.ranges(
            "server.proxy_protocol_trusted",
            &self.server.proxy_protocol_trusted,
        )?;
        if self.server.proxy_protocol && proxy_protocol_trusted.is_empty() {
            return Err(at.invalid(
                "server.proxy_protocol_trusted",
                "must list the load balancers whose PROXY protocol header is believed when \
                 server.proxy_protocol is true ([\"0.0.0.0/0\", \"::/0\"] believes every peer)"
                    .into(),
            ));
        }
        let proxy_protocol = self.server.proxy_protocol.then_some(proxy_protocol_trusted);
        let denylist_source_range = at.ranges(
            "access.denylist_source_range",
            &self.access.denylist_source_range,
        )?;
        if !matches!(self.server.limit_status, 429 | 503) {
            return Err(at.invalid(
                "server.limit_status",
                format!("`{}` is not 429 or 503", self.server.limit_status),
            ));
        }
        if self.upstream.connect_retries > 16 {
            return Err(at.invalid("upstream.connect_retries", "must be at most 16".into()));
        }

        let ejection = Ejection {
            consecutive_failures: self.upstream.eject_consecutive_failures,
            base: at.positive_ms("upstream.eject_base_ms", self.upstream.eject_base_ms)?,
            max: at.positive_ms("upstream.eject_max_ms", self.upstream.eject_max_ms)?,
        };
        if ejection.max < ejection.base {
            return Err(at.invalid(
                "upstream.eject_max_ms",
                "must be at least upstream.eject_base_ms".into(),
            ));
        }

        let source = match self.source.kind {
            SourceKind::Files => {
                let dir = PathBuf::from(&self.source.files.directory);
                let directory = if dir.is_absolute() {
                    dir
                } else {
                    path.parent().unwrap_or(Path::new(".")).join(dir)
                };
                SourceSettings::Files {
                    directory,
                    poll_interval: at.positive_ms(
                        "source.files.poll_interval_ms",
                        self.source.files.poll_interval_ms,
                    )?,
                }
            }
            SourceKind::Kubernetes => SourceSettings::Kubernetes(KubernetesSettings {
                namespaces: self.source.kubernetes.namespaces(path)?,
                kubeconfig: non_empty(&self.source.kubernetes.kubeconfig).map(PathBuf::from),
                context: non_empty(&self.source.kubernetes.context),
            }),
        };

        if self.log.level.trim().is_empty() {
            return Err(at.invalid("log.level", "must not be empty".into()));
        }
        if self.controller.name.trim().is_empty() {
            return Err(at.invalid("controller.name", "must not be empty".into()));
        }
        if self.controller.ingress_class.trim().is_empty() {
            return Err(at.invalid("controller.ingress_class", "must not be empty".into()));
        }
        let host_owners = HostOwners::new(
            self.controller
                .host_owners
                .iter()
                .map(|(p, ns)| (p.as_str(), ns.as_str())),
        )
        .map_err(|e| at.invalid("controller.host_owners", e.to_string()))?;

        let le = &self.leader_election;
        if le.lease_duration_secs == 0 {
            return Err(at.invalid(
                "leader_election.lease_duration_secs",
                "must be greater than 0".into(),
            ));
        }
        if le.renew_period_secs == 0 || le.renew_period_secs >= le.lease_duration_secs {
            return Err(at.invalid(
                "leader_election.renew_period_secs",
                "must be greater than 0 and less than lease_duration_secs".into(),
            ));
        }
        if le.lease_name.trim().is_empty() {
            return Err(at.invalid("leader_election.lease_name", "must not be empty".into()));
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
                    return Err(at.invalid(
                        "status.publish_service",
                        format!("`{s}` is not namespace/name"),
                    ))
                }
            },
        };
        if self.status.addresses.iter().any(|a| a.trim().is_empty()) {
            return Err(at.invalid("status.addresses", "an address is empty".into()));
        }
        if self.status.events_per_second == 0 {
            return Err(at.invalid("status.events_per_second", "must be at least 1".into()));
        }
        if self.status.events_max_pending == 0 {
            return Err(at.invalid("status.events_max_pending", "must be at least 1".into()));
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

        let tls = self.tls.validate(path)?;
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
            proxy_protocol,
            denylist_source_range,
            client_header_timeout,
            client_send_timeout,
            keepalive_timeout,
            keepalive_requests: self.server.keepalive_requests,
            max_connections: (self.server.max_connections != 0)
                .then_some(self.server.max_connections),
            max_connections_per_client: (self.server.max_connections_per_client != 0)
                .then_some(self.server.max_connections_per_client),
            drain: Duration::from_secs(self.server.drain_secs),
            limit_status: self.server.limit_status,
            keepalive_pool_size: self.upstream.keepalive_pool_size,
            keepalive_idle_timeout: Duration::from_secs(self.upstream.keepalive_idle_timeout_secs),
            connect_timeout: at.positive_ms(
                "upstream.connect_timeout_ms",
                self.upstream.connect_timeout_ms,
            )?,
            read_timeout: at
                .positive_ms("upstream.read_timeout_ms", self.upstream.read_timeout_ms)?,
            write_timeout: at
                .positive_ms("upstream.write_timeout_ms", self.upstream.write_timeout_ms)?,
            connect_retries: self.upstream.connect_retries,
            load_balance: self.upstream.load_balance,
            ejection,
            target_type: self.upstream.target_type,
            health_check,
            controller_name: self.controller.name,
            ingress_class: self.controller.ingress_class,
            watch_ingress_without_class: self.controller.watch_ingress_without_class,
            host_owners,
            cross_namespace_paths: self.controller.cross_namespace_paths,
            source,
            access_log: self.access_log.enabled.then_some(self.access_log.format),
            log_level: self.log.level,
            log_format: self.log.format,
        })
    }
}
