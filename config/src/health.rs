//! Active health checks: what a Service's annotations and the settings ask sluice to probe.
//!
//! Checks are set per Service (as the AWS Load Balancer Controller does), by annotations on the
//! Service object, and apply to every pool (Service port) of that Service that a route uses.
//! Each annotation replaces one field of the settings' `[upstream.health_check]` defaults
//! ([`HealthCheck`], built by [`crate::settings`]); the resolved check is
//! [`HealthCheck::with`]. A value that does not parse is reported (a skipped rule with reason
//! `InvalidAnnotation` on every Ingress routing to the Service) and that field keeps its
//! default: a typo never turns checks off, nor takes a Service off the air.
//!
//! | annotation | value | default |
//! |---|---|---|
//! | `sluice.dev/health-check` | `http`, `https`, `tcp` or `none` | `upstream.health_check.kind` (`none`) |
//! | `sluice.dev/health-check-path` | an absolute path (and query) for `http` and `https` | `/` |
//! | `sluice.dev/health-check-port` | a port number, or `traffic-port` | the traffic port |
//! | `sluice.dev/health-check-interval` | a duration | `5s` |
//! | `sluice.dev/health-check-timeout` | a duration | `2s` |
//! | `sluice.dev/health-check-healthy-threshold` | passes in a row, 1 to 100 | `2` |
//! | `sluice.dev/health-check-unhealthy-threshold` | failures in a row, 1 to 100 | `3` |
//! | `sluice.dev/health-check-success-codes` | codes and ranges, `200,204` or `200-399` | `200-399` |
//!
//! Durations parse as the Ingress annotations' do ([`crate::annotations::parse_duration`]).
//!
//! The kind is chosen by the user, never from the routes' upstream protocol: one Service port
//! may be routed as `HTTPS` by one Ingress and `HTTP` by another, and the probe must not
//! change with whichever Ingress came last. A Service whose endpoints speak only TLS asks for
//! `https`; one whose endpoints speak only HTTP/2 (gRPC, H2C) asks for `tcp`, as both HTTP
//! kinds speak HTTP/1.1.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::annotations::{parse_annotation, parse_duration, AnnotationError, BadAnnotation};

/// `http`, `https`, `tcp` or `none`: whether and how the Service's endpoints are probed.
pub const HEALTH_CHECK: &str = "sluice.dev/health-check";
/// The path (and query) an HTTP check requests.
pub const HEALTH_CHECK_PATH: &str = "sluice.dev/health-check-path";
/// The port probed on each endpoint's address, instead of the port requests go to.
pub const HEALTH_CHECK_PORT: &str = "sluice.dev/health-check-port";
/// Time between two probes of one endpoint.
pub const HEALTH_CHECK_INTERVAL: &str = "sluice.dev/health-check-interval";
/// Time a probe may take (connect, request and response head) before it counts as failed.
pub const HEALTH_CHECK_TIMEOUT: &str = "sluice.dev/health-check-timeout";
/// Passes in a row that bring an unhealthy endpoint back into rotation.
pub const HEALTH_CHECK_HEALTHY_THRESHOLD: &str = "sluice.dev/health-check-healthy-threshold";
/// Failures in a row that take a healthy endpoint out of rotation.
pub const HEALTH_CHECK_UNHEALTHY_THRESHOLD: &str = "sluice.dev/health-check-unhealthy-threshold";
/// The HTTP statuses that pass.
pub const HEALTH_CHECK_SUCCESS_CODES: &str = "sluice.dev/health-check-success-codes";

/// The `User-Agent` of every HTTP probe, so backends can tell probes from traffic.
pub const USER_AGENT: &str = "sluice-health-check";

/// The most consecutive results a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 100;

/// How endpoints are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    /// No probes: every endpoint stays in rotation (passive ejection still applies).
    None,
    /// `GET path`; a status within the success codes, within the timeout, passes.
    Http,
    /// A TCP connection opened within the timeout passes.
    Tcp,
    /// As [`CheckKind::Http`], over TLS: for endpoints that speak only HTTPS, which a plain
    /// probe would find failing. The certificate is not verified, as the upstream connection's
    /// is not.
    Https,
}

impl CheckKind {
    /// Parses `http`, `https`, `tcp` or `none`.
    pub fn parse(text: &str) -> Option<CheckKind> {
        match text.trim() {
            "none" => Some(CheckKind::None),
            "http" => Some(CheckKind::Http),
            "tcp" => Some(CheckKind::Tcp),
            "https" => Some(CheckKind::Https),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::None => "none",
            CheckKind::Http => "http",
            CheckKind::Tcp => "tcp",
            CheckKind::Https => "https",
        }
    }
}

/// The HTTP statuses that pass a check: inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SuccessCodes(pub Vec<(u16, u16)>);

impl Default for SuccessCodes {
    /// `200-399`, as the AWS Load Balancer Controller's default success codes (redirects pass).
    fn default() -> Self {
        SuccessCodes(vec![(200, 399)])
    }
}

impl SuccessCodes {
    /// Parses a comma-separated list of codes (`200`) and ranges (`200-299`), each within
    /// 100..=599.
    pub fn parse(text: &str) -> Result<SuccessCodes, AnnotationError> {
        let err = || AnnotationError::NotSuccessCodes;
        let code = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
        };
        let mut out = Vec::new();
        for part in text.split(',') {
            let range = match part.split_once('-') {
                Some((a, b)) => (code(a).ok_or_else(err)?, code(b).ok_or_else(err)?),
                None => {
                    let c = code(part).ok_or_else(err)?;
                    (c, c)
                }
            };
            if range.0 > range.1 {
                return Err(err());
            }
            out.push(range);
        }
        Ok(SuccessCodes(out))
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&status))
    }
}

impl std::fmt::Display for SuccessCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?;
            } else {
                write!(f, "{a}-{b}")?;
            }
        }
        Ok(())
    }
}

/// One active health check: the settings' defaults, or those with a Service's annotations
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub kind: CheckKind,
    /// What an HTTP or HTTPS check requests: an absolute path, optionally with a query.
    pub path: String,
    /// The port probed; `None`: the endpoint's own (traffic) port.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passes in a row that make an unhealthy endpoint healthy; at least 1.
    pub healthy_threshold: u32,
    /// Failures in a row that make a healthy endpoint unhealthy; at least 1.
    pub unhealthy_threshold: u32,
    pub success_codes: SuccessCodes,
}

impl Default for HealthCheck {
    /// The built-in defaults (`kind` none), as documented in the settings.
    fn default() -> Self {
        HealthCheck {
            kind: CheckKind::None,
            path: "/".to_string(),
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            success_codes: SuccessCodes::default(),
        }
    }
}

impl HealthCheck {
    /// Whether endpoints are probed at all.
    pub fn is_active(&self) -> bool {
        self.kind != CheckKind::None
    }

    /// This check with `overrides` applied.
    pub fn with(&self, overrides: &HealthCheckOverrides) -> HealthCheck {
        let o = overrides.clone();
        HealthCheck {
            kind: o.kind.unwrap_or(self.kind),
            path: o.path.unwrap_or_else(|| self.path.clone()),
            port: match o.port {
                Some(p) => p,
                None => self.port,
            },
            interval: o.interval.unwrap_or(self.interval),
            timeout: o.timeout.unwrap_or(self.timeout),
            healthy_threshold: o.healthy_threshold.unwrap_or(self.healthy_threshold),
            unhealthy_threshold: o.unhealthy_threshold.unwrap_or(self.unhealthy_threshold),
            success_codes: o
                .success_codes
                .unwrap_or_else(|| self.success_codes.clone()),
        }
    }
}

/// What a Service's health-check annotations set; `None` keeps the settings' value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct HealthCheckOverrides {
    pub kind: Option<CheckKind>,
    pub path: Option<String>,
    /// `Some(None)`: `traffic-port`, the endpoint's own port.
    pub port: Option<Option<u16>>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub healthy_threshold: Option<u32>,
    pub unhealthy_threshold: Option<u32>,
    pub success_codes: Option<SuccessCodes>,
}

impl HealthCheckOverrides {
    /// Whether no annotation set anything.
    pub fn is_empty(&self) -> bool {
        *self == HealthCheckOverrides::default()
    }
}

/// Parses an HTTP (or HTTPS) check's path: absolute, visible ASCII only (it goes on the request line).
pub fn parse_path(text: &str) -> Result<String, AnnotationError> {
    let p = text.trim();
    if p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(p.to_string())
    } else {
        Err(AnnotationError::NotAnAbsolutePath)
    }
}

/// Parses a port number (1 to 65535), or `traffic-port` (`None`).
pub fn parse_port(text: &str) -> Result<Option<u16>, AnnotationError> {
    let t = text.trim();
    if t == "traffic-port" {
        return Ok(None);
    }
    match t.parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(AnnotationError::NotAPort),
    }
}

/// Parses a threshold: a whole number from 1 to [`MAX_THRESHOLD`].
pub fn parse_threshold(text: &str) -> Result<u32, AnnotationError> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_THRESHOLD).contains(&n) => Ok(n),
        _ => Err(AnnotationError::NotAThreshold),
    }
}

/// What a Service's annotations set about its health check, and every annotation not used.
pub fn service_health_check(
    annotations: &BTreeMap<String, String>,
) -> (HealthCheckOverrides, Vec<BadAnnotation>) {
    let mut bad = Vec::new();
    let b = &mut bad;
    let o = HealthCheckOverrides {
        kind: parse_annotation(annotations, b, HEALTH_CHECK, |s| {
            CheckKind::parse(s).ok_or(AnnotationError::NotACheckKind)
        }),
        path: parse_annotation(annotations, b, HEALTH_CHECK_PATH, parse_path),
        port: parse_annotation(annotations, b, HEALTH_CHECK_PORT, parse_port),
        interval: parse_annotation(annotations, b, HEALTH_CHECK_INTERVAL, parse_duration),
        timeout: parse_annotation(annotations, b, HEALTH_CHECK_TIMEOUT, parse_duration),
        healthy_threshold: parse_annotation(
            annotations,
            b,
            HEALTH_CHECK_HEALTHY_THRESHOLD,
            parse_threshold,
        ),
        unhealthy_threshold: parse_annotation(
            annotations,
            b,
            HEALTH_CHECK_UNHEALTHY_THRESHOLD,
            parse_threshold,
        ),
        success_codes: parse_annotation(
            annotations,
            b,
            HEALTH_CHECK_SUCCESS_CODES,
            SuccessCodes::parse,
        ),
    };
    (o, bad)
}

#[cfg(test)]
mod tests;
