//! The resolved route: everything a request needs once its host and path have matched.
//!
//! At publish, each (Ingress rule, backend) of the snapshot becomes one immutable [`Route`]
//! behind an `Arc`: its pool (shared with every other route to the same Service port reached
//! the same way), the upstream policy of its Ingress's annotations, whether its hosts redirect
//! plain HTTP, its metric handles, and its ordered per-route filters. The route table of the live
//! state ([`crate::state::Live::routes`]) leads straight to it, so the request path reads one
//! object instead of assembling a route from parallel tables.
//!
//! Routes are shared between publishes: a route whose Ingress, policy and pool are unchanged is
//! the same `Arc` in the next live state, and so is a host whose routes are all unchanged.

use std::sync::Arc;

use sluice_config::annotations::UpstreamPolicy;
use sluice_config::model::ObjectRef;

use crate::metrics::RouteMetrics;
use crate::pool::Pool;

/// One matched rule, resolved.
pub struct Route {
    /// The Ingress that owns the rule.
    pub ingress: ObjectRef,
    /// Where requests go: `None` when the backend could not be resolved (a missing Service or
    /// port, an unsupported backend), which answers 503, never a shorter path's backend.
    pub pool: Option<Arc<Pool>>,
    /// Timeouts, protocol, balancing, affinity and body limits of the Ingress's annotations.
    pub policy: UpstreamPolicy,
    /// Plain HTTP to a host with TLS is redirected to https (`sluice.dev/ssl-redirect`).
    pub ssl_redirect: bool,
    /// The route's request counters and histograms.
    pub metrics: Arc<RouteMetrics>,
    /// Per-route request and response rules, applied in order.
    pub filters: Box<[Filter]>,
}

/// A per-route rule applied to a request before it is forwarded, or to its response. None
/// exists yet: rewrites, redirects, header changes, canaries, access control and rate limits
/// are added here, each carried by the routes of the Ingresses that ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {}

impl Route {
    /// Whether `other` says the same as this route: same Ingress, policy, redirect, filters, and
    /// the very same pool and metrics. A publish keeps the older `Arc` for such a route.
    pub fn same_as(&self, other: &Route) -> bool {
        self.ingress == other.ingress
            && self.policy == other.policy
            && self.ssl_redirect == other.ssl_redirect
            && self.filters == other.filters
            && Arc::ptr_eq(&self.metrics, &other.metrics)
            && match (&self.pool, &other.pool) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}
