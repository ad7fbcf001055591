//! Per-Ingress annotations: what an Ingress may change about how its requests reach the upstream.
//!
//! Annotations are read once per Ingress while a snapshot is built ([`crate::build`]) and apply
//! to every rule of that Ingress, its `defaultBackend` included. A value that does not parse is
//! reported (as a skipped rule with reason `InvalidAnnotation`) and the default is used instead:
//! a typo never takes an Ingress off the air.
//!
//! | annotation | value | default |
//! |---|---|---|
//! | `sluice.dev/connect-timeout` | a duration | `upstream.connect_timeout_ms` |
//! | `sluice.dev/read-timeout` | a duration | `upstream.read_timeout_ms` |
//! | `sluice.dev/send-timeout` | a duration | `upstream.write_timeout_ms` |
//! | `sluice.dev/load-balance` | `round-robin`, `least-request`, `ewma`, `consistent-hash` | `upstream.load_balance` |
//! | `sluice.dev/hash-by` | `$remote_addr`, `$http_<header>`, `$cookie_<name>` | none |
//!
//! | `sluice.dev/affinity` | `cookie` | none |
//! | `sluice.dev/session-cookie-name` | a cookie name | `SLUICE_AFFINITY` |
//! | `sluice.dev/session-cookie-max-age` | a duration (sent in whole seconds) | none: a session cookie |
//! | `sluice.dev/backend-protocol` | `HTTP`, `HTTPS`, `H2C`, `GRPC`, `GRPCS` (any case) | the Service port's `appProtocol`, else `HTTP` |
//! | `sluice.dev/forward-raw-path` | `true` or `false` | `false`: the upstream receives the normalized path |
//! | `sluice.dev/proxy-body-size` | a size, `0` for no limit | `server.max_request_body_bytes`; none for GRPC and GRPCS |
//! | `sluice.dev/client-body-timeout` | a duration | `server.client_body_timeout_secs`; none for GRPC and GRPCS |
//!
//! `sluice.dev/target-type` and `sluice.dev/target-node-labels` (pods or Nodes as targets) are
//! parsed in [`crate::targets`].
//!
//! `sluice.dev/hash-by` alone asks for `consistent-hash` (as ingress-nginx's `upstream-hash-by`
//! does); `consistent-hash` without it is reported and the default algorithm is used.
//!
//! A duration is a whole number with a unit, `500ms`, `5s`, `1m` or `1h`; a bare number means
//! seconds, as in ingress-nginx's `proxy-*-timeout` annotations. Zero is refused.

use std::collections::BTreeMap;
use std::time::Duration;

/// Time allowed to open a TCP connection to an endpoint.
pub const CONNECT_TIMEOUT: &str = "sluice.dev/connect-timeout";
/// Time allowed between two reads from an endpoint (504 when exceeded).
pub const READ_TIMEOUT: &str = "sluice.dev/read-timeout";
/// Time allowed between two writes to an endpoint (504 when exceeded).
pub const SEND_TIMEOUT: &str = "sluice.dev/send-timeout";
/// The balancing algorithm of the Ingress's routes.
pub const LOAD_BALANCE: &str = "sluice.dev/load-balance";
/// The key of consistent hashing.
pub const HASH_BY: &str = "sluice.dev/hash-by";

/// Session affinity; `cookie` is the one kind.
pub const AFFINITY: &str = "sluice.dev/affinity";
/// The name of the affinity cookie.
pub const SESSION_COOKIE_NAME: &str = "sluice.dev/session-cookie-name";
/// The `Max-Age` of the affinity cookie.
pub const SESSION_COOKIE_MAX_AGE: &str = "sluice.dev/session-cookie-max-age";
/// The affinity cookie's name when the Ingress names none.
pub const DEFAULT_SESSION_COOKIE_NAME: &str = "SLUICE_AFFINITY";

/// The protocol spoken to the Ingress's endpoints (see [`BackendProtocol`]).
pub const BACKEND_PROTOCOL: &str = "sluice.dev/backend-protocol";

/// `"true"`: the upstream receives the request path as the client wrote it (for signed URLs and
/// keys with `//`); matching still uses the normalized path ([`crate::path`]).
pub const FORWARD_RAW_PATH: &str = "sluice.dev/forward-raw-path";
/// The largest request body accepted (413 beyond it); `0` for no limit.
pub const PROXY_BODY_SIZE: &str = "sluice.dev/proxy-body-size";
/// Time allowed between two reads of the request body from the client.
pub const CLIENT_BODY_TIMEOUT: &str = "sluice.dev/client-body-timeout";

/// The longest duration an annotation may give: one day. Longer values are almost certainly a
/// unit mistake (`60000` meant as milliseconds is 16 hours as seconds).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// Upstream timeouts of one route; `None` uses the settings' default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timeouts {
    pub connect: Option<Duration>,
    pub read: Option<Duration>,
    pub send: Option<Duration>,
}

/// What an Ingress's annotations ask of its upstreams. Every route target carries one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UpstreamPolicy {
    pub timeouts: Timeouts,
    /// `None`: the settings' `upstream.load_balance`.
    pub balance: Option<Balance>,
    /// Cookie session affinity: a client that sends the cookie goes back to its endpoint while
    /// that endpoint is ready; the balancing algorithm places clients without it.
    pub affinity: Option<CookieAffinity>,
    /// The protocol to the endpoints: `sluice.dev/backend-protocol`, else (filled in when the
    /// target is resolved) the Service port's `appProtocol`; `None`: HTTP/1.1.
    pub protocol: Option<BackendProtocol>,
    /// The upstream receives the path as the client wrote it, not the normalized one.
    pub forward_raw_path: bool,
    /// The largest request body in bytes, `Some(0)` for no limit; `None`: the settings'
    /// `server.max_request_body_bytes` (no limit for GRPC and GRPCS routes).
    pub max_body_bytes: Option<u64>,
    /// Time allowed between two body reads from the client; `None`: the settings'
    /// `server.client_body_timeout_secs` (not applied to GRPC and GRPCS routes).
    pub client_body_timeout: Option<Duration>,
}

/// The cookie that pins a client to an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CookieAffinity {
    pub name: String,
    /// `None`: a session cookie (no `Max-Age`).
    pub max_age: Option<Duration>,
}

/// How a route spreads its requests over the endpoints of its pool.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Balance {
    /// Each endpoint in turn; the turn is shared by every worker thread.
    RoundRobin,
    /// The less loaded of two endpoints drawn at random (power of two choices), by requests in
    /// flight.
    LeastRequest,
    /// The better of two endpoints drawn at random, by peak-EWMA latency times requests in
    /// flight.
    Ewma,
    /// The endpoint a request's key hashes to (rendezvous hashing): the same key goes to the same
    /// endpoint while it stays, and only the keys of an endpoint that goes move.
    ConsistentHash(HashBy),
}

impl Balance {
    /// The annotation value naming this algorithm.
    pub fn name(&self) -> &'static str {
        match self {
            Balance::RoundRobin => "round-robin",
            Balance::LeastRequest => "least-request",
            Balance::Ewma => "ewma",
            Balance::ConsistentHash(_) => "consistent-hash",
        }
    }

    /// An algorithm that needs no key, by name (as in `upstream.load_balance`).
    pub fn keyless(name: &str) -> Option<Balance> {
        match name.trim() {
            "round-robin" => Some(Balance::RoundRobin),
            "least-request" => Some(Balance::LeastRequest),
            "ewma" => Some(Balance::Ewma),
            _ => None,
        }
    }
}

/// What a consistent hash is keyed by (`sluice.dev/hash-by`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashBy {
    /// `$remote_addr`: the client's IP address (without the port).
    RemoteAddr,
    /// `$http_<name>`: a request header, lowercased, `_` read as `-` (as nginx does).
    Header(String),
    /// `$cookie_<name>`: a cookie's value; the name is case-sensitive.
    Cookie(String),
}

/// Parses `$remote_addr`, `$http_<name>` or `$cookie_<name>`.
pub fn parse_hash_by(text: &str) -> Result<HashBy, AnnotationError> {
    let text = text.trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    if text == "$remote_addr" {
        return Ok(HashBy::RemoteAddr);
    }
    if let Some(name) = text.strip_prefix("$http_") {
        if token(name) {
            return Ok(HashBy::Header(name.to_ascii_lowercase().replace('_', "-")));
        }
    }
    if let Some(name) = text.strip_prefix("$cookie_") {
        if token(name) {
            return Ok(HashBy::Cookie(name.to_string()));
        }
    }
    Err(AnnotationError::NotAHashKey)
}

/// Why an annotation's value is not used. Each message follows the value it is about
/// (`` `soon` is not a duration ... ``, see [`BadAnnotation`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    #[error("is not a duration such as 500ms, 5s or 1m")]
    NotADuration,
    #[error("is longer than a day")]
    LongerThanADay,
    #[error("is zero; a timeout must be positive")]
    ZeroDuration,
    #[error("is not a size such as 512k, 8m or 1g")]
    NotASize,
    #[error("is not \"true\" or \"false\"")]
    NotABool,
    #[error("is not $remote_addr, $http_<header> or $cookie_<name>")]
    NotAHashKey,
    #[error("is not round-robin, least-request, ewma or consistent-hash")]
    NotAnAlgorithm,
    /// `consistent-hash` without [`HASH_BY`].
    #[error("needs `{HASH_BY}` to say what to hash")]
    NeedsHashBy,
    /// [`HASH_BY`] beside an algorithm that hashes nothing.
    #[error("is not used: `{LOAD_BALANCE}` is `{balance}`")]
    HashByUnused { balance: &'static str },
    #[error("is not `cookie`, the one kind of affinity")]
    NotCookieAffinity,
    #[error("is not a cookie name")]
    NotACookieName,
    #[error("is not HTTP, HTTPS, H2C, GRPC or GRPCS")]
    NotAProtocol,
    #[error("is not `ip` or `instance`")]
    NotATargetType,
    /// [`crate::targets::TARGET_NODE_LABELS`] with the `ip` target type.
    #[error("is not used: the target type is `ip`, not `instance`")]
    NodeLabelsUnused,
    #[error(transparent)]
    NodeLabels(#[from] crate::targets::NodeSelectorError),
    #[error("is not http, https, tcp or none")]
    NotACheckKind,
    #[error("is not an absolute path such as /healthz")]
    NotAnAbsolutePath,
    #[error("is not a port number (1 to 65535) or traffic-port")]
    NotAPort,
    #[error("is not a whole number from 1 to {}", crate::health::MAX_THRESHOLD)]
    NotAThreshold,
    #[error("is not a list of statuses and ranges such as 200,204 or 200-399")]
    NotSuccessCodes,
    #[error("is not a header name")]
    NotAHeaderName,
    #[error("is not a header value of visible characters")]
    NotAHeaderValue,
    #[error("is not a whole number (a total must be positive)")]
    NotAWeight,
    #[error("is over the weight total; the total is used")]
    WeightOverTotal,
}

/// An annotation whose value is not used, with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAnnotation {
    pub key: &'static str,
    pub value: String,
    pub error: AnnotationError,
}

impl std::fmt::Display for BadAnnotation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "annotation `{}`: `{}` {}; the default is used",
            self.key, self.value, self.error
        )
    }
}

/// The value of annotation `key` as `parse` reads it; `None` when the annotation is absent, or
/// when `parse` refuses it, which is then reported in `bad` with `parse`'s error.
pub fn parse_annotation<T>(
    annotations: &BTreeMap<String, String>,
    bad: &mut Vec<BadAnnotation>,
    key: &'static str,
    parse: impl FnOnce(&str) -> Result<T, AnnotationError>,
) -> Option<T> {
    let value = annotations.get(key)?;
    match parse(value) {
        Ok(v) => Some(v),
        Err(error) => {
            bad.push(BadAnnotation {
                key,
                value: value.clone(),
                error,
            });
            None
        }
    }
}

/// Parses a duration: a whole number and a unit (`ms`, `s`, `m`, `h`), or a bare number of
/// seconds. Surrounding whitespace is ignored; zero and values over [`MAX_DURATION`] are refused.
pub fn parse_duration(text: &str) -> Result<Duration, AnnotationError> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| AnnotationError::NotADuration)?;
    let millis_per_unit = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(AnnotationError::NotADuration),
    };
    let d = n
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or(AnnotationError::LongerThanADay)?;
    if d.is_zero() {
        return Err(AnnotationError::ZeroDuration);
    }
    Ok(d)
}

/// Parses a size as nginx's `client_max_body_size` does: a whole number of bytes with an
/// optional `k`/`K`, `m`/`M` or `g`/`G` suffix (1024-based). `0` means no limit.
pub fn parse_size(text: &str) -> Result<u64, AnnotationError> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let shift = match unit {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        _ => return Err(AnnotationError::NotASize),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or(AnnotationError::NotASize)
}

/// Parses `"true"` or `"false"`.
pub fn parse_bool(text: &str) -> Result<bool, AnnotationError> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(AnnotationError::NotABool),
    }
}

/// The upstream policy an Ingress's annotations describe, and every annotation not used.
pub fn upstream_policy(
    annotations: &BTreeMap<String, String>,
) -> (UpstreamPolicy, Vec<BadAnnotation>) {
    let mut bad = Vec::new();
    let mut duration =
        |key: &'static str| parse_annotation(annotations, &mut bad, key, parse_duration);
    let timeouts = Timeouts {
        connect: duration(CONNECT_TIMEOUT),
        read: duration(READ_TIMEOUT),
        send: duration(SEND_TIMEOUT),
    };
    let balance = balance(annotations, &mut bad);
    let affinity = affinity(annotations, &mut bad);
    let protocol = backend_protocol(annotations, &mut bad);
    let forward_raw_path =
        parse_annotation(annotations, &mut bad, FORWARD_RAW_PATH, parse_bool).unwrap_or(false);
    let max_body_bytes = parse_annotation(annotations, &mut bad, PROXY_BODY_SIZE, parse_size);
    let client_body_timeout =
        parse_annotation(annotations, &mut bad, CLIENT_BODY_TIMEOUT, parse_duration);
    (
        UpstreamPolicy {
            timeouts,
            balance,
            affinity,
            protocol,
            forward_raw_path,
            max_body_bytes,
            client_body_timeout,
        },
        bad,
    )
}

/// The cookie affinity the annotations ask for, if any.
fn affinity(
    annotations: &BTreeMap<String, String>,
    bad: &mut Vec<BadAnnotation>,
) -> Option<CookieAffinity> {
    let kind = annotations.get(AFFINITY)?;
    if kind.trim() != "cookie" {
        bad.push(BadAnnotation {
            key: AFFINITY,
            value: kind.clone(),
            error: AnnotationError::NotCookieAffinity,
        });
        return None;
    }
    // A cookie name is an RFC 6265 token.
    let is_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    let name = match annotations.get(SESSION_COOKIE_NAME) {
        Some(n) if is_token(n.trim()) => n.trim().to_string(),
        Some(n) => {
            bad.push(BadAnnotation {
                key: SESSION_COOKIE_NAME,
                value: n.clone(),
                error: AnnotationError::NotACookieName,
            });
            DEFAULT_SESSION_COOKIE_NAME.to_string()
        }
        None => DEFAULT_SESSION_COOKIE_NAME.to_string(),
    };
    let max_age = parse_annotation(annotations, bad, SESSION_COOKIE_MAX_AGE, parse_duration);
    Some(CookieAffinity { name, max_age })
}

/// The balancing algorithm the annotations choose, `None` for the settings' default.
fn balance(
    annotations: &BTreeMap<String, String>,
    bad: &mut Vec<BadAnnotation>,
) -> Option<Balance> {
    let mut report = |key: &'static str, value: &String, error: AnnotationError| {
        bad.push(BadAnnotation {
            key,
            value: value.clone(),
            error,
        })
    };
    let hash_by = annotations.get(HASH_BY);
    let keyed = |report: &mut dyn FnMut(&'static str, &String, AnnotationError)| {
        let value = hash_by?;
        match parse_hash_by(value) {
            Ok(h) => Some(Balance::ConsistentHash(h)),
            Err(error) => {
                report(HASH_BY, value, error);
                None
            }
        }
    };
    let Some(name) = annotations.get(LOAD_BALANCE) else {
        // As in ingress-nginx, a hash key alone asks for consistent hashing.
        return keyed(&mut report);
    };
    if name.trim() == "consistent-hash" {
        if hash_by.is_none() {
            report(LOAD_BALANCE, name, AnnotationError::NeedsHashBy);
        }
        return keyed(&mut report);
    }
    let Some(b) = Balance::keyless(name) else {
        report(LOAD_BALANCE, name, AnnotationError::NotAnAlgorithm);
        return None;
    };
    if let Some(value) = hash_by {
        report(
            HASH_BY,
            value,
            AnnotationError::HashByUnused { balance: b.name() },
        );
    }
    Some(b)
}

/// How sluice talks to a route's endpoints, as ingress-nginx's `backend-protocol` names them.
///
/// Certificates of TLS endpoints are not verified (as ingress-nginx's `proxy_ssl_verify off`):
/// pods usually serve self-signed or cluster-internal certificates, and the connection never
/// leaves the cluster network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BackendProtocol {
    /// HTTP/1.1 over TCP.
    #[default]
    Http,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Https,
    /// HTTP/2 over TCP with prior knowledge (no upgrade, no ALPN).
    H2c,
    /// gRPC: HTTP/2 over TCP with prior knowledge, as `H2c`.
    Grpc,
    /// gRPC over TLS: HTTP/2 negotiated by ALPN `h2`.
    Grpcs,
}

impl BackendProtocol {
    /// The annotation value naming this protocol.
    pub fn name(self) -> &'static str {
        match self {
            BackendProtocol::Http => "HTTP",
            BackendProtocol::Https => "HTTPS",
            BackendProtocol::H2c => "H2C",
            BackendProtocol::Grpc => "GRPC",
            BackendProtocol::Grpcs => "GRPCS",
        }
    }

    /// A `sluice.dev/backend-protocol` value, ASCII case ignored.
    pub fn parse(text: &str) -> Option<BackendProtocol> {
        [
            BackendProtocol::Http,
            BackendProtocol::Https,
            BackendProtocol::H2c,
            BackendProtocol::Grpc,
            BackendProtocol::Grpcs,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(text.trim()))
    }

    /// The protocol a Service port's `appProtocol` names: the IANA service names `http`,
    /// `https`, `grpc`, `grpcs`, and Kubernetes' `kubernetes.io/h2c` (also bare `h2c`),
    /// `kubernetes.io/ws` and `kubernetes.io/wss` (WebSocket is HTTP/1.1 with an Upgrade).
    /// `None` for any other value.
    pub fn from_app_protocol(text: &str) -> Option<BackendProtocol> {
        match text.trim().to_ascii_lowercase().as_str() {
            "http" | "kubernetes.io/ws" => Some(BackendProtocol::Http),
            "https" | "kubernetes.io/wss" => Some(BackendProtocol::Https),
            "h2c" | "kubernetes.io/h2c" => Some(BackendProtocol::H2c),
            "grpc" => Some(BackendProtocol::Grpc),
            "grpcs" => Some(BackendProtocol::Grpcs),
            _ => None,
        }
    }

    /// Whether the endpoint is reached over TLS.
    pub fn tls(self) -> bool {
        matches!(self, BackendProtocol::Https | BackendProtocol::Grpcs)
    }

    /// Whether the endpoint speaks HTTP/2 (and only HTTP/2).
    pub fn h2(self) -> bool {
        matches!(
            self,
            BackendProtocol::H2c | BackendProtocol::Grpc | BackendProtocol::Grpcs
        )
    }
}

/// The protocol `sluice.dev/backend-protocol` names, `None` when absent or bad (reported).
fn backend_protocol(
    annotations: &BTreeMap<String, String>,
    bad: &mut Vec<BadAnnotation>,
) -> Option<BackendProtocol> {
    parse_annotation(annotations, bad, BACKEND_PROTOCOL, |v| {
        BackendProtocol::parse(v).ok_or(AnnotationError::NotAProtocol)
    })
}

#[cfg(test)]
mod tests;
