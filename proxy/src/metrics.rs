//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Names carry the `sluice_` prefix and base units (seconds, bytes); counters end in `_total`.
//! Labels are bounded by the number of Ingress backends: never a raw path, host or client address.
//! The request path never looks a label set up by hashing: each route gets a [`RouteMetrics`]
//! when a snapshot is published, holding its own counters, created on first use per method and
//! status class.
//!
//! A route's series live exactly as long as the route: when a publish no longer has a route with
//! a given (namespace, Ingress, Service), [`RouteMetrics::retire`] removes its series from the
//! registry, so Ingresses that come and go under fresh names (preview environments) leave
//! nothing behind in memory or in `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::limiter::LimitReason;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets in seconds, from 0.5 ms to 30 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The methods that get their own label value; any other is `OTHER`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "OTHER",
];
/// The outcomes of an external auth subrequest.
pub const AUTH_OUTCOMES: [&str; 5] = ["allowed", "unauthorized", "forbidden", "failed", "timeout"];

/// Status classes; index 0 is for requests answered without a status (client gone).
const CLASSES: [&str; 6] = ["none", "1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(method: &str) -> usize {
    METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1)
}

fn class_index(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100),
        _ => 0,
    }
}

/// Every metric sluice exports.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    connect_errors: IntCounterVec,
    retries: IntCounterVec,
    requests_limited: IntCounterVec,
    pub requests_in_flight: IntGauge,
    pub downstream_connections: IntGauge,
    /// Client connections closed at accept by a cap, by cap (`process`, `client`).
    pub downstream_connections_refused: IntCounterVec,
    /// Connections closed before HTTP under `server.proxy_protocol`, by reason
    /// (`untrusted_peer`, `invalid_header`, `closed`).
    pub proxy_protocol_refused: IntCounterVec,
    pub pool_endpoints: IntGaugeVec,
    pub last_sync: prometheus::Gauge,
    pub snapshot_build: Histogram,
    /// Publishes by what they rebuilt: `endpoints` (pools only), `hosts` (the hosts an Ingress
    /// edit touches), `full` (everything).
    pub publishes: IntCounterVec,
    pub watched_objects: IntGaugeVec,
    pub watch_restarts: IntCounterVec,
    pub rules_skipped: IntGaugeVec,
    pub access_log_dropped: IntCounter,
    /// Request copies of `sluice.dev/mirror-target` not delivered, by reason (`full`,
    /// `no_endpoint`, `too_large`, `failed`).
    pub mirror_dropped: IntCounterVec,
    /// Ingresses whose pending Events were dropped because the Event writer fell behind.
    pub events_dropped: IntCounter,
    /// Subrequests of `sluice.dev/auth-url` by Ingress and outcome ([`AUTH_OUTCOMES`]).
    auth_duration: HistogramVec,
    /// Auth answers taken from the cache instead of a subrequest.
    pub auth_cache_hits: IntCounter,
    /// Finished handshakes by result: `full`, `resumed`, `failed`.
    pub tls_handshakes: IntCounterVec,
    /// Failed handshakes by reason: `client_certificate`, `resumption_refused`, `other`.
    pub tls_handshake_failures: IntCounterVec,
}

/// A metric registration that cannot fail unless two metrics share a name, which the
/// constructor below rules out; kept as a typed error all the same.
#[derive(Debug, thiserror::Error)]
#[error("registering metric: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let route = &["namespace", "ingress", "service"];
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let hist = |name: &str, help: &str| {
            HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec())
        };
        Ok(Metrics {
            requests: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_requests_total",
                    "Requests by route, method and status class"
                ),
                &["namespace", "ingress", "service", "method", "status_class"],
            )?),
            request_duration: reg!(HistogramVec::new(
                hist(
                    "sluice_request_duration_seconds",
                    "Time from request start to the end of the response"
                ),
                route,
            )?),
            upstream_duration: reg!(HistogramVec::new(
                hist(
                    "sluice_upstream_duration_seconds",
                    "Time from picking an endpoint to the end of its response"
                ),
                route,
            )?),
            connect_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_upstream_connect_errors_total",
                    "Failed connects to endpoints"
                ),
                route,
            )?),
            retries: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_upstream_retries_total",
                    "Requests retried on another endpoint"
                ),
                route,
            )?),
            requests_limited: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_requests_limited_total",
                    "Requests refused by a route's sluice.dev/limit-* annotations, by reason (rate, connections)"
                ),
                &["namespace", "ingress", "service", "reason"],
            )?),
            requests_in_flight: reg!(IntGauge::new(
                "sluice_requests_in_flight",
                "Requests being served now"
            )?),
            downstream_connections: reg!(IntGauge::new(
                "sluice_downstream_connections_open",
                "Client connections open on the proxy listeners"
            )?),
            downstream_connections_refused: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_downstream_connections_refused_total",
                    "Client connections closed at accept by a connection cap"
                ),
                &["limit"],
            )?),
            proxy_protocol_refused: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_proxy_protocol_refused_total",
                    "Connections closed before HTTP for a missing, invalid or untrusted PROXY protocol header"
                ),
                &["reason"],
            )?),
            pool_endpoints: reg!(IntGaugeVec::new(
                Opts::new(
                    "sluice_pool_endpoints",
                    "Endpoints of each pool by state (ready, ejected, unhealthy)"
                ),
                &["namespace", "service", "port", "state"],
            )?),
            last_sync: reg!(prometheus::Gauge::new(
                "sluice_last_sync_timestamp_seconds",
                "Unix time of the last successful snapshot publish"
            )?),
            snapshot_build: reg!(Histogram::with_opts(hist(
                "sluice_snapshot_build_duration_seconds",
                "Time to build and apply a snapshot"
            ))?),
            publishes: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_publishes_total",
                    "Publishes by what they rebuilt: endpoints (pools only), hosts (the hosts an Ingress edit touches), full"
                ),
                &["scope"],
            )?),
            watched_objects: reg!(IntGaugeVec::new(
                Opts::new("sluice_watched_objects", "Objects known by kind"),
                &["kind"],
            )?),
            watch_restarts: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_watch_restarts_total",
                    "Watch streams that failed and were restarted, by kind"
                ),
                &["kind"],
            )?),
            rules_skipped: reg!(IntGaugeVec::new(
                Opts::new(
                    "sluice_rules_skipped",
                    "Rules not served as written, by reason"
                ),
                &["reason"],
            )?),
            events_dropped: reg!(IntCounter::new(
                "sluice_events_dropped_total",
                "Ingresses whose pending Events were dropped because the Event writer fell behind"
            )?),
            mirror_dropped: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_mirror_dropped_total",
                    "Request copies for mirror targets not delivered, by reason (full, no_endpoint, too_large, failed)"
                ),
                &["reason"],
            )?),
            auth_duration: reg!(HistogramVec::new(
                hist(
                    "sluice_auth_request_duration_seconds",
                    "Time of each external auth subrequest, by Ingress and outcome (allowed, unauthorized, forbidden, failed, timeout)"
                ),
                &["namespace", "ingress", "outcome"],
            )?),
            auth_cache_hits: reg!(IntCounter::new(
                "sluice_auth_cache_hits_total",
                "External auth answers taken from the cache instead of a subrequest"
            )?),
            access_log_dropped: reg!(IntCounter::new(
                "sluice_access_log_dropped_total",
                "Access log lines dropped because the writer fell behind"
            )?),
            tls_handshakes: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_tls_handshakes_total",
                    "TLS handshakes on the HTTPS listeners by result (full, resumed, failed)"
                ),
                &["result"],
            )?),
            tls_handshake_failures: reg!(IntCounterVec::new(
                Opts::new(
                    "sluice_tls_handshake_failures_total",
                    "Failed TLS handshakes by reason (client_certificate, resumption_refused, other)"
                ),
                &["reason"],
            )?),
            registry,
        })
    }

    /// The metrics of one route (or of unrouted requests, with empty labels).
    pub fn route(self: &Arc<Self>, namespace: &str, ingress: &str, service: &str) -> RouteMetrics {
        let labels = [namespace, ingress, service];
        RouteMetrics {
            metrics: self.clone(),
            labels: [
                namespace.to_string(),
                ingress.to_string(),
                service.to_string(),
            ],
            requests: OnceLock::new(),
            retired: AtomicBool::new(false),
            duration: OnceLock::new(),
            upstream: OnceLock::new(),
            limited: Default::default(),
            connect_errors: self.connect_errors.with_label_values(&labels),
            retries: self.retries.with_label_values(&labels),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// The counters of one route, resolved once per snapshot. Its request counters and duration
/// histograms are created in the registry by the first request that counts into them, so a
/// route that sees no traffic holds no histogram (a cluster of thousands of idle routes pays
/// for none); its error and retry counters exist from the start, at zero.
pub struct RouteMetrics {
    metrics: Arc<Metrics>,
    labels: [String; 3],
    /// The request counters by method and status class, allocated by the first request (an
    /// idle route holds one pointer, not 54 cells).
    requests: OnceLock<Box<RequestCounters>>,
    /// Set once the route is gone and its series are removed from the registry.
    retired: AtomicBool,
    duration: OnceLock<Histogram>,
    upstream: OnceLock<Histogram>,
    /// Requests refused by the route's limits, by [`LimitReason`], created on first use.
    limited: [OnceLock<IntCounter>; 2],
    connect_errors: IntCounter,
    retries: IntCounter,
}

type RequestCounters = [[OnceLock<IntCounter>; CLASSES.len()]; METHODS.len()];

/// A series of one route, created on first use by `create` and taken out again by `remove`
/// when the route was retired meanwhile.
fn route_series<'a, T>(
    retired: &AtomicBool,
    cell: &'a OnceLock<T>,
    create: impl FnOnce() -> T,
    remove: impl FnOnce(),
) -> Option<&'a T> {
    if let Some(series) = cell.get() {
        return Some(series);
    }
    if retired.load(Ordering::Acquire) {
        // A request that outlived its route: creating the series now would leak it.
        return None;
    }
    let series = cell.get_or_init(create);
    // Retired while the series was being created: take it out again (removing twice is
    // harmless, so whichever of the two runs last leaves the registry clean).
    if retired.load(Ordering::Acquire) {
        remove();
    }
    Some(series)
}

impl RouteMetrics {
    /// Counts one finished request.
    pub fn count(&self, method: &str, status: u16) {
        let (m, c) = (method_index(method), class_index(status));
        let requests = &self.metrics.requests;
        let labels = self.request_labels(m, c);
        if let Some(counter) = route_series(
            &self.retired,
            &self.requests.get_or_init(Box::default)[m][c],
            || requests.with_label_values(&labels),
            || {
                let _ = requests.remove_label_values(&labels);
            },
        ) {
            counter.inc();
        }
    }

    fn route_labels(&self) -> [&str; 3] {
        let [ns, ing, svc] = &self.labels;
        [ns, ing, svc]
    }

    /// These metrics with their duration histograms created now, not by the first request.
    pub fn with_durations(self) -> Self {
        let labels = self.route_labels();
        self.duration
            .get_or_init(|| self.metrics.request_duration.with_label_values(&labels));
        self.upstream
            .get_or_init(|| self.metrics.upstream_duration.with_label_values(&labels));
        self
    }

    /// Observes a request's total duration.
    pub fn observe_duration(&self, seconds: f64) {
        self.observe(&self.metrics.request_duration, &self.duration, seconds);
    }

    /// Observes the time to the upstream's response header.
    pub fn observe_upstream(&self, seconds: f64) {
        self.observe(&self.metrics.upstream_duration, &self.upstream, seconds);
    }

    fn observe(&self, vec: &HistogramVec, cell: &OnceLock<Histogram>, seconds: f64) {
        let labels = self.route_labels();
        if let Some(h) = route_series(
            &self.retired,
            cell,
            || vec.with_label_values(&labels),
            || {
                let _ = vec.remove_label_values(&labels);
            },
        ) {
            h.observe(seconds);
        }
    }

    /// Observes an external auth subrequest of the route's Ingress: its duration and outcome
    /// (one of [`AUTH_OUTCOMES`]). Its series goes with the route's others ([`Self::retire`]).
    pub fn observe_auth(&self, outcome: &str, seconds: f64) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        let [ns, ing, _] = &self.labels;
        self.metrics
            .auth_duration
            .with_label_values(&[ns.as_str(), ing, outcome])
            .observe(seconds);
    }

    /// Counts a request refused by the route's limits.
    pub fn limited(&self, reason: LimitReason) {
        let labels = self.limited_labels(reason);
        let vec = &self.metrics.requests_limited;
        if let Some(counter) = route_series(
            &self.retired,
            &self.limited[reason as usize],
            || vec.with_label_values(&labels),
            || {
                let _ = vec.remove_label_values(&labels);
            },
        ) {
            counter.inc();
        }
    }

    fn limited_labels(&self, reason: LimitReason) -> [&str; 4] {
        let [ns, ing, svc] = &self.labels;
        [ns, ing, svc, reason.label()]
    }

    /// Counts a failed upstream connection attempt.
    pub fn connect_error(&self) {
        self.connect_errors.inc();
    }

    /// Counts a retried upstream attempt.
    pub fn retry(&self) {
        self.retries.inc();
    }

    fn request_labels(&self, m: usize, c: usize) -> [&str; 5] {
        let [ns, ing, svc] = &self.labels;
        [ns, ing, svc, METHODS[m], CLASSES[c]]
    }

    /// Removes every series of this route from the registry: the route is gone. Requests still
    /// in flight on it count into detached series that no scrape shows.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        let [ns, ing, svc] = &self.labels;
        let route = [ns.as_str(), ing, svc];
        let m = &self.metrics;
        let _ = m.request_duration.remove_label_values(&route);
        let _ = m.upstream_duration.remove_label_values(&route);
        let _ = m.connect_errors.remove_label_values(&route);
        let _ = m.retries.remove_label_values(&route);
        for outcome in AUTH_OUTCOMES {
            let _ = m
                .auth_duration
                .remove_label_values(&[ns.as_str(), ing, outcome]);
        }
        for reason in [LimitReason::Rate, LimitReason::Connections] {
            let _ = m
                .requests_limited
                .remove_label_values(&self.limited_labels(reason));
        }
        for method in 0..METHODS.len() {
            for class in 0..CLASSES.len() {
                let _ = m
                    .requests
                    .remove_label_values(&self.request_labels(method, class));
            }
        }
    }

    pub fn labels(&self) -> &[String; 3] {
        &self.labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_fold_into_bounded_labels() {
        assert_eq!(METHODS[method_index("GET")], "GET");
        assert_eq!(METHODS[method_index("BREW")], "OTHER");
        assert_eq!(CLASSES[class_index(204)], "2xx");
        assert_eq!(CLASSES[class_index(503)], "5xx");
        assert_eq!(CLASSES[class_index(0)], "none");
        assert_eq!(CLASSES[class_index(999)], "none");
    }

    #[test]
    fn counted_requests_appear_in_the_text_exposition() {
        let m = Arc::new(Metrics::new().unwrap());
        let r = m.route("shop", "web", "api");
        r.count("GET", 200);
        r.count("GET", 201);
        r.count("BREW", 418);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "sluice_requests_total{ingress=\"web\",method=\"GET\",namespace=\"shop\",service=\"api\",status_class=\"2xx\"} 2"
        ), "{text}");
        assert!(text.contains("method=\"OTHER\""), "{text}");
    }

    #[test]
    fn a_retired_route_leaves_no_series_even_when_a_late_request_counts() {
        let m = Arc::new(Metrics::new().unwrap());
        let gone = m.route("preview", "pr-17", "web");
        let kept = m.route("shop", "web", "api");
        gone.count("GET", 200);
        gone.observe_duration(0.1);
        kept.count("GET", 200);
        gone.retire();
        // A request that was in flight when its route went finishes afterwards.
        gone.count("GET", 200);
        gone.count("POST", 502);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(!text.contains("pr-17"), "{text}");
        assert!(text.contains("ingress=\"web\""), "{text}");
    }
}
