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

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{HeaderName, HeaderValue};
use sluice_config::annotations::UpstreamPolicy;
use sluice_config::canary::{Canary, CanaryRule};
use sluice_config::cidr::Cidr;
use sluice_config::model::ObjectRef;
use sluice_config::rules;
use sluice_config::{PoolKey, Snapshot, Target};

use crate::auth::basic::BasicAuth;
use crate::ext_auth::Check;
use crate::limiter::{Limiter, Limiters};
use crate::metrics::RouteMetrics;
use crate::pool::Pool;
use crate::router::{CorsPolicy, RedirectStatus};

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
    /// The rule's canary: another backend that takes some of its requests, after the filters.
    pub canary: Option<CanaryRoute>,
}

/// The canary of a route ([`sluice_config::canary`]): its own pool, balancing and affinity
/// (every other policy is its primary's), its own metrics, and which requests it takes.
pub struct CanaryRoute {
    /// The canary Ingress.
    pub ingress: ObjectRef,
    /// `None` when its backend could not be resolved: the requests it takes answer 503.
    pub pool: Option<Arc<Pool>>,
    pub policy: UpstreamPolicy,
    pub rule: CanaryRule,
    pub metrics: Arc<RouteMetrics>,
}

impl CanaryRoute {
    fn same_as(&self, other: &CanaryRoute) -> bool {
        self.ingress == other.ingress
            && self.policy == other.policy
            && self.rule == other.rule
            && Arc::ptr_eq(&self.metrics, &other.metrics)
            && same_pool(&self.pool, &other.pool)
    }
}

/// Whether two routes lead to the very same pool (or both to none).
fn same_pool(a: &Option<Arc<Pool>>, b: &Option<Arc<Pool>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// A per-route rule applied to a request before it is forwarded, or to its response: the
/// Ingress's policy annotations ([`sluice_config::rules`]) compiled once at publish, so the
/// request path parses no name or value. A route without filters pays nothing for them.
#[derive(Clone)]
pub enum Filter {
    /// A policy annotation of the Ingress is invalid: 503, never another route's backend.
    Invalid,
    /// 403 for a client address in `deny`, or outside a non-empty `allow` (deny first).
    SourceRange {
        allow: Box<[Cidr]>,
        deny: Box<[Cidr]>,
    },
    /// 401 without the credentials of a user of the route's Secret ([`crate::auth::basic`]).
    BasicAuth(Arc<BasicAuth>),
    /// Browser origins that may read the route's responses (see `router::cors`).
    Cors(Arc<CorsPolicy>),
    /// Limits per client address, with the state they count, shared by the routes of the
    /// Ingress ([`crate::limiter`]).
    Limits(Arc<Limiter>),
    /// Answer with a redirect; the backend is not contacted.
    Redirect {
        status: RedirectStatus,
        location: String,
        keep_query: bool,
    },
    /// A request for exactly `/` is redirected (302) to this path.
    AppRoot(String),
    /// The path sent upstream becomes this target, `$1`..`$9` the regex path's groups.
    RewriteTarget(String),
    /// The matched prefix of the path is replaced by this path.
    RewritePrefix(String),
    /// The `Host` sent upstream, and the server name of a TLS upstream (no port).
    UpstreamVhost { host: HeaderValue, sni: String },
    /// Headers set on and removed from the upstream request.
    RequestHeaders(HeaderChanges),
    /// Headers set on and removed from the response to the client.
    ResponseHeaders(HeaderChanges),
    /// A copy of each request goes to one endpoint of this pool ([`crate::mirror`]).
    Mirror(Arc<Pool>),
    /// An auth service decides before the request is proxied ([`crate::ext_auth`]).
    ExtAuth(Arc<Check>),
}

impl PartialEq for Filter {
    fn eq(&self, other: &Filter) -> bool {
        use Filter::*;
        match (self, other) {
            (Invalid, Invalid) => true,
            (SourceRange { allow: a, deny: b }, SourceRange { allow: x, deny: y }) => {
                (a, b) == (x, y)
            }
            (
                Redirect {
                    status: a,
                    location: b,
                    keep_query: c,
                },
                Redirect {
                    status: x,
                    location: y,
                    keep_query: z,
                },
            ) => (a, b, c) == (x, y, z),
            (AppRoot(a), AppRoot(b))
            | (RewriteTarget(a), RewriteTarget(b))
            | (RewritePrefix(a), RewritePrefix(b)) => a == b,
            (UpstreamVhost { host: a, sni: b }, UpstreamVhost { host: x, sni: y }) => {
                (a, b) == (x, y)
            }
            (RequestHeaders(a), RequestHeaders(b)) | (ResponseHeaders(a), ResponseHeaders(b)) => {
                a == b
            }
            // The same rule and users: the older route (and its verdict cache) is kept.
            (BasicAuth(a), BasicAuth(b)) => a == b,
            (Cors(a), Cors(b)) => a == b,
            // The same pool, not an equal one: a route is kept only with its very pools; and
            // the same limiter, which the Ingress's routes share.
            (Mirror(a), Mirror(b)) => Arc::ptr_eq(a, b),
            (Limits(a), Limits(b)) => Arc::ptr_eq(a, b),
            (ExtAuth(a), ExtAuth(b)) => a.same_as(b),
            _ => false,
        }
    }
}

/// Header changes with names and values already parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderChanges {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// The route filters of an Ingress's rules, mirrors sent to their pool among `pools`, limits
/// counted by the `ingress`'s limiter among `limiters`. The names and values were validated
/// when the snapshot was built; should one still not parse here, the route fails closed
/// ([`Filter::Invalid`]). A mirror whose pool the snapshot could not resolve (reported) is left
/// out.
pub fn compile(
    rules: &[rules::Filter],
    pools: &HashMap<PoolKey, Arc<Pool>>,
    (limiters, ingress): (&Limiters, &ObjectRef),
) -> Box<[Filter]> {
    let compiled: Option<Vec<Filter>> = rules
        .iter()
        .filter_map(|rule| match rule {
            rules::Filter::Mirror { pool, .. } => {
                let pool = pools.get(pool.as_ref()?)?;
                Some(Some(Filter::Mirror(pool.clone())))
            }
            // An auth Service that could not be resolved fails the route closed.
            rules::Filter::ExtAuth(auth) => {
                Some(Check::compile(auth, pools).map(|c| Filter::ExtAuth(Arc::new(c))))
            }
            rules::Filter::Limits(limits) => {
                Some(Some(Filter::Limits(limiters.get(ingress, limits))))
            }
            rule => Some(compile_one(rule)),
        })
        .collect();
    compiled.unwrap_or_else(|| vec![Filter::Invalid]).into()
}

fn compile_one(rule: &rules::Filter) -> Option<Filter> {
    let value = |v: &str| HeaderValue::from_str(v).ok();
    let changes = |c: &rules::HeaderChanges| -> Option<HeaderChanges> {
        let set = c
            .set
            .iter()
            .map(|(n, v)| Some((HeaderName::from_bytes(n.as_bytes()).ok()?, value(v)?)))
            .collect::<Option<_>>()?;
        let remove = c
            .remove
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
            .collect::<Option<_>>()?;
        Some(HeaderChanges { set, remove })
    };
    Some(match rule {
        rules::Filter::Invalid => Filter::Invalid,
        rules::Filter::SourceRange { allow, deny } => Filter::SourceRange {
            allow: allow.as_slice().into(),
            deny: deny.as_slice().into(),
        },
        rules::Filter::BasicAuth(rule) => Filter::BasicAuth(Arc::new(BasicAuth::new(rule)?)),
        rules::Filter::Redirect {
            code,
            location,
            keep_query,
        } => Filter::Redirect {
            status: RedirectStatus::from_code(*code)?,
            location: location.clone(),
            keep_query: *keep_query,
        },
        rules::Filter::AppRoot(p) => Filter::AppRoot(p.clone()),
        rules::Filter::RewriteTarget(t) => Filter::RewriteTarget(t.clone()),
        rules::Filter::RewritePrefix(p) => Filter::RewritePrefix(p.clone()),
        rules::Filter::ForwardedPrefix(p) => Filter::RequestHeaders(HeaderChanges {
            set: vec![(X_FORWARDED_PREFIX.clone(), value(p)?)],
            remove: Vec::new(),
        }),
        rules::Filter::UpstreamVhost(h) => Filter::UpstreamVhost {
            host: value(h)?,
            sni: h
                .rsplit_once(':')
                .map_or(h.as_str(), |(n, _)| n)
                .to_string(),
        },
        rules::Filter::RequestHeaders(c) => Filter::RequestHeaders(changes(c)?),
        rules::Filter::ResponseHeaders(c) => Filter::ResponseHeaders(changes(c)?),
        rules::Filter::Cors(c) => Filter::Cors(Arc::new(CorsPolicy::new(c)?)),
        rules::Filter::Mirror { .. } | rules::Filter::ExtAuth(_) | rules::Filter::Limits(_) => {
            return None
        }
    })
}

/// The canary route of a snapshot's canary: its pool among `pools`, its metrics among
/// `metrics` (by Ingress and target, as every route's). `None` when the snapshot holds no such
/// Ingress or metrics.
pub fn canary_route(
    snapshot: &Snapshot,
    canary: &Canary,
    pools: &HashMap<PoolKey, Arc<Pool>>,
    metrics: &HashMap<(usize, usize), Arc<RouteMetrics>>,
) -> Option<CanaryRoute> {
    let pool = match snapshot.targets.get(canary.target)? {
        Target::Pool(key) => pools.get(key).cloned(),
        Target::Unresolved { .. } => None,
    };
    Some(CanaryRoute {
        ingress: snapshot.ingresses.get(canary.ingress)?.object.clone(),
        pool,
        policy: snapshot.policies.get(canary.target)?.clone(),
        rule: canary.rule.clone(),
        metrics: metrics.get(&(canary.ingress, canary.target))?.clone(),
    })
}

static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

impl Route {
    /// Whether `other` says the same as this route: same Ingress, policy, redirect, filters,
    /// canary, and the very same pools and metrics. A publish keeps the older `Arc` for such a route.
    pub fn same_as(&self, other: &Route) -> bool {
        self.ingress == other.ingress
            && self.policy == other.policy
            && self.ssl_redirect == other.ssl_redirect
            && self.filters == other.filters
            && Arc::ptr_eq(&self.metrics, &other.metrics)
            && same_pool(&self.pool, &other.pool)
            && match (&self.canary, &other.canary) {
                (Some(a), Some(b)) => a.same_as(b),
                (None, None) => true,
                _ => false,
            }
    }
}
