//! An Ingress edit rebuilds only the hosts it touches, and what it publishes is exactly what a
//! whole build of the same store gives: the same routes (Ingress, pool, policy), default
//! backend, pools, findings and served Ingresses. Each step below edits one store, publishes it
//! (incrementally where the edit allows), and compares with a state built whole from a copy.

use std::sync::Arc;

use sluice_config::fixtures::*;
use sluice_config::model::{IngressInput, ObjectRef};
use sluice_config::ownership::CrossNamespacePaths;
use sluice_config::{BuildDefaults, Ejection, Finding};

use super::{ApplyReport, Live, State};
use crate::metrics::Metrics;
use crate::store::{Entry, IngressMeta, Kind, Store};
use crate::tls::certs::ServingCert;
use crate::tls::TlsStoreBuilder;

fn state(defaults: &BuildDefaults) -> State {
    let fallback = Arc::new(ServingCert::self_signed().expect("a certificate"));
    State::new(
        class_policy(),
        Ejection {
            consecutive_failures: 0,
            base: std::time::Duration::from_secs(1),
            max: std::time::Duration::from_secs(1),
        },
        Arc::new(Metrics::new().expect("metrics")),
        TlsStoreBuilder::new(fallback, None),
    )
    .with_defaults(defaults.clone())
}

/// Everything a request or a report can tell of a live state.
#[allow(clippy::type_complexity)]
fn describe(
    live: &Live,
) -> (
    Vec<String>,
    Vec<String>,
    Vec<Finding>,
    Vec<(String, String)>,
) {
    let pool = |p: Option<&Arc<crate::pool::Pool>>| {
        p.map_or("none".to_string(), |p| {
            format!("{} {:?}", p.key(), p.endpoints())
        })
    };
    let route = |r: &super::Route| {
        let mirrors: Vec<String> = r
            .filters
            .iter()
            .filter_map(|f| match f {
                super::Filter::Mirror(p) => Some(pool(Some(p))),
                _ => None,
            })
            .collect();
        let canary = r.canary.as_ref().map(|c| {
            format!(
                "canary {} -> {} {:?} {:?}",
                c.ingress,
                pool(c.pool.as_ref()),
                c.policy,
                c.rule
            )
        });
        format!(
            "{} -> {} {:?} ssl_redirect={} filters={} mirrors={mirrors:?} {canary:?}",
            r.ingress,
            pool(r.pool.as_ref()),
            r.policy,
            r.ssl_redirect,
            r.filters.len(),
        )
    };
    let mut routes: Vec<String> = live
        .routes
        .hosts()
        .into_iter()
        .flat_map(|(host, h)| {
            h.iter()
                .map(|(path, kind, r)| format!("{host} {kind:?} {path}: {}", route(r)))
                .collect::<Vec<_>>()
        })
        .collect();
    routes.sort();
    routes.extend(
        live.routes
            .default_backend()
            .map(|r| format!("default: {}", route(r))),
    );
    let mut pools: Vec<String> = live.pools.keys().map(|k| k.to_string()).collect();
    pools.sort();
    let mut redirects: Vec<(String, String)> = live
        .host_redirects
        .iter()
        .map(|(a, b)| (a.clone(), b.clone()))
        .collect();
    redirects.sort();
    (routes, pools, live.skipped.to_vec(), redirects)
}

fn publishes(s: &State, scope: &str) -> u64 {
    s.metrics().publishes.with_label_values(&[scope]).get()
}

struct Cluster {
    store: Store,
    state: State,
    defaults: BuildDefaults,
}

impl Cluster {
    fn new(defaults: BuildDefaults) -> Cluster {
        let store = Store::default();
        for (ns, name) in [("shop", "web"), ("shop", "api"), ("blog", "web")] {
            let svc = service(ns, name).port("http", 80).build();
            store.apply(
                Kind::Service,
                ObjectRef::new(ns, name),
                Entry::Service(Arc::new(svc), Vec::new()),
            );
            let addr = format!("127.0.0.{}", 1 + name.len() + ns.len());
            let eps = slice(ns, name)
                .port("http", 8080)
                .endpoint(&addr, Some(true))
                .build();
            store.apply(
                Kind::EndpointSlice,
                ObjectRef::new(ns, format!("{name}-1")),
                Entry::Slice(Arc::new(eps)),
            );
        }
        let state = state(&defaults);
        let cluster = Cluster {
            store,
            state,
            defaults,
        };
        cluster.ingress(
            ingress("shop", "first")
                .created(100)
                .host("a.test")
                .path("/", "Prefix", backend("web", 80))
                .build(),
        );
        cluster.ingress(
            ingress("blog", "other")
                .created(100)
                .host("b.test")
                .path("/", "Prefix", backend("web", 80))
                .build(),
        );
        assert_eq!(cluster.publish("full").served.len(), 2);
        cluster
    }

    fn ingress(&self, input: IngressInput) {
        self.store.apply(
            Kind::Ingress,
            input.object_ref(),
            Entry::Ingress(Arc::new(input), IngressMeta::default()),
        );
    }

    fn delete(&self, namespace: &str, name: &str) {
        self.store
            .delete(Kind::Ingress, &ObjectRef::new(namespace, name));
    }

    /// Publishes the store's changes, expecting a publish of `scope`, and checks the result
    /// against a whole build of the same store.
    fn publish(&self, scope: &str) -> ApplyReport {
        let before = publishes(&self.state, scope);
        let report = self
            .state
            .publish_store_blocking(&self.store)
            .expect("a publish with a report");
        assert_eq!(
            publishes(&self.state, scope),
            before + 1,
            "expected a publish of scope {scope}"
        );
        let whole = state(&self.defaults);
        let shared = self.store.shared();
        let expected = whole.publish_refs(&shared.refs(), &self.store.secret_material());
        assert_eq!(
            describe(&self.state.live()),
            describe(&whole.live()),
            "after a publish of scope {scope}"
        );
        assert_eq!(report.served, expected.served);
        assert_eq!(report.skipped, expected.skipped);
        report
    }
}

fn findings(report: &ApplyReport) -> Vec<String> {
    report.skipped.iter().map(|f| f.message.clone()).collect()
}

#[test]
fn ingress_edits_on_their_own_hosts_publish_what_a_whole_build_would() {
    let c = Cluster::new(BuildDefaults::default());
    let untouched = c.state.live().routes.find("b.test", "/").cloned();

    // A new path on a served host, then a newer Ingress asking for the same path: it conflicts.
    c.ingress(
        ingress("shop", "second")
            .created(200)
            .host("a.test")
            .path("/api", "Prefix", backend("api", 80))
            .build(),
    );
    c.publish("hosts");
    c.ingress(
        ingress("shop", "third")
            .created(300)
            .host("a.test")
            .path("/", "Prefix", backend("api", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(
        findings(&report)
            .iter()
            .any(|m| m.contains("already served by the older Ingress shop/first")),
        "{report:?}"
    );
    // The oldest goes: the newer one takes the contested path, and its finding goes too.
    c.delete("shop", "first");
    let report = c.publish("hosts");
    assert!(report.skipped.is_empty(), "{report:?}");
    // An invalid annotation is reported, and the routes stay.
    c.ingress(
        ingress("shop", "third")
            .created(300)
            .annotation("sluice.dev/read-timeout", "soon")
            .host("a.test")
            .path("/", "Prefix", backend("api", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    // A backend to a missing Service, and one to another host's Service (a shared pool).
    c.ingress(
        ingress("shop", "fourth")
            .created(400)
            .host("c.test")
            .path("/gone", "Exact", backend("nowhere", 80))
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("hosts");
    c.delete("shop", "fourth");
    c.publish("hosts");
    // Another class: no longer served, its routes go.
    c.ingress(
        ingress("shop", "second")
            .created(200)
            .class(Some("someone-else"))
            .host("a.test")
            .path("/api", "Prefix", backend("api", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(!report.served.contains(&ObjectRef::new("shop", "second")));
    // Hosts no edit touched kept their routes, shared.
    let now = c.state.live().routes.find("b.test", "/").cloned();
    assert!(Arc::ptr_eq(
        &untouched.expect("a route"),
        &now.expect("a route")
    ));
}

#[test]
fn edits_that_reach_past_their_hosts_build_everything() {
    let c = Cluster::new(BuildDefaults::default());
    // A default backend.
    c.ingress(
        ingress("shop", "fallback")
            .created(50)
            .default_backend(backend("web", 80))
            .build(),
    );
    c.publish("full");
    // spec.tls.
    c.ingress(
        ingress("shop", "secure")
            .created(500)
            .host("s.test")
            .path("/", "Prefix", backend("web", 80))
            .tls(&["s.test"], Some("missing"))
            .build(),
    );
    c.publish("full");
    // A wildcard rule.
    c.ingress(
        ingress("blog", "wild")
            .created(600)
            .host("*.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("full");
    // Still eligible edits afterwards are built by host, on top of those.
    c.ingress(
        ingress("blog", "more")
            .created(700)
            .host("b.test")
            .path("/more", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("hosts");
}

#[test]
fn a_change_of_host_owner_moves_the_namespace_rule_and_with_tls_builds_everything() {
    let c = Cluster::new(BuildDefaults {
        cross_namespace_paths: CrossNamespacePaths::Deny,
        ..BuildDefaults::default()
    });
    // blog routes on shop's host: refused while shop owns it.
    c.ingress(
        ingress("blog", "intruder")
            .created(200)
            .host("a.test")
            .path("/blog", "Prefix", backend("web", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(
        findings(&report).iter().any(|m| m.contains("owned by")),
        "{report:?}"
    );
    // shop's only Ingress for the host goes: blog owns it now, and its rule is served. The
    // host has no TLS, so the owner decides nothing past its rules.
    c.delete("shop", "first");
    let report = c.publish("hosts");
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(c.state.live().routes.find("a.test", "/blog").is_some());

    // With TLS on the host, its owner decides its certificate: a new owner builds everything.
    c.ingress(
        ingress("blog", "secure")
            .created(150)
            .host("a.test")
            .path("/secure", "Prefix", backend("web", 80))
            .tls(&["a.test"], Some("missing"))
            .build(),
    );
    c.publish("full");
    c.ingress(
        ingress("shop", "oldest")
            .created(10)
            .host("a.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    let report = c.publish("full");
    assert!(
        findings(&report)
            .iter()
            .any(|m| m.contains("spec.tls[0]: host `a.test` is owned by namespace shop")),
        "{report:?}"
    );
}

#[test]
fn per_route_rules_canaries_and_www_redirects_publish_what_a_whole_build_would() {
    let c = Cluster::new(BuildDefaults::default());
    // Policy annotations: a rewrite, a header, an invalid value (fails closed, reported).
    c.ingress(
        ingress("shop", "rules")
            .created(200)
            .annotation("sluice.dev/rewrite-target", "/v2")
            .annotation("sluice.dev/request-headers", "X-Tenant: shop")
            .host("r.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("hosts");
    c.ingress(
        ingress("shop", "rules")
            .created(200)
            .annotation("sluice.dev/permanent-redirect-code", "299")
            .annotation("sluice.dev/permanent-redirect", "https://elsewhere.test/")
            .host("r.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(!report.skipped.is_empty(), "{report:?}");
    // A mirror to a Service no rule of the rebuilt host names.
    c.ingress(
        ingress("shop", "mirrored")
            .created(220)
            .annotation("sluice.dev/mirror-target", "api:80")
            .host("m.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(
        !findings(&report).iter().any(|m| m.contains("mirror")),
        "{report:?}"
    );
    // Regex paths.
    c.ingress(
        ingress("shop", "regex")
            .created(250)
            .annotation("sluice.dev/use-regex", "true")
            .host("a.test")
            .path(
                "/api/v[0-9]+/",
                "ImplementationSpecific",
                backend("api", 80),
            )
            .build(),
    );
    c.publish("hosts");
    // A canary of a.test's root, then a weight change, then it goes.
    let canary = |weight: &str| {
        ingress("shop", "canary")
            .created(300)
            .annotation("sluice.dev/canary", "true")
            .annotation("sluice.dev/canary-weight", weight)
            .host("a.test")
            .path("/", "Prefix", backend("api", 80))
            .build()
    };
    c.ingress(canary("10"));
    c.publish("hosts");
    c.ingress(canary("30"));
    c.publish("hosts");
    // A mirror.
    c.ingress(
        ingress("shop", "first")
            .created(100)
            .annotation("sluice.dev/mirror-target", "api:80")
            .host("a.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("hosts");
    c.delete("shop", "canary");
    c.publish("hosts");
    // from-to-www-redirect crosses hosts: a whole build, and so does a rule for a host such an
    // Ingress redirects.
    c.ingress(
        ingress("blog", "www")
            .created(400)
            .annotation("sluice.dev/from-to-www-redirect", "true")
            .host("www.blog.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("full");
    assert_eq!(
        c.state
            .live()
            .host_redirects
            .get("blog.test")
            .map(String::as_str),
        Some("www.blog.test")
    );
    c.ingress(
        ingress("blog", "bare")
            .created(500)
            .host("blog.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    c.publish("full");
    assert!(c.state.live().host_redirects.is_empty());
}

#[test]
fn an_auth_url_to_another_namespaces_service_publishes_what_a_whole_build_would() {
    let c = Cluster::new(BuildDefaults::default());
    // The auth Service is in `blog`, which no rule of the rebuilt host names (leaving it out of
    // the Services a partial build reads makes the first publish differ from a whole build).
    c.ingress(
        ingress("shop", "guarded")
            .created(200)
            .annotation(
                "sluice.dev/auth-url",
                "http://web.blog.svc.cluster.local/verify",
            )
            .host("g.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(
        !findings(&report).iter().any(|m| m.contains("auth-url")),
        "{report:?}"
    );
    // One that does not exist is reported by the partial build as by a whole one.
    c.ingress(
        ingress("shop", "guarded")
            .created(200)
            .annotation("sluice.dev/auth-url", "http://nothing.blog.svc/verify")
            .host("g.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    let report = c.publish("hosts");
    assert!(
        findings(&report).iter().any(|m| m.contains("auth-url")),
        "{report:?}"
    );
}

#[test]
fn a_services_bad_health_check_stays_reported_when_one_of_its_hosts_is_rebuilt() {
    let c = Cluster::new(BuildDefaults::default());
    // shop/api has a bad health-check annotation and is reached by one Ingress from two hosts.
    let api = service("shop", "api")
        .port("http", 80)
        .annotation("sluice.dev/health-check", "sometimes")
        .build();
    c.store.apply(
        Kind::Service,
        ObjectRef::new("shop", "api"),
        Entry::Service(Arc::new(api), Vec::new()),
    );
    c.ingress(
        ingress("shop", "two-hosts")
            .created(200)
            .host("c.test")
            .path("/", "Prefix", backend("api", 80))
            .host("d.test")
            .path("/", "Prefix", backend("api", 80))
            .build(),
    );
    let reported = |r: &ApplyReport| findings(r).iter().any(|m| m.contains("Service shop/api"));
    assert!(reported(&c.publish("full")));
    // An older Ingress takes d.test's path: that rule no longer reaches the Service, c.test's
    // still does, and the finding stays (a build of d.test alone would have dropped it).
    c.ingress(
        ingress("shop", "older")
            .created(150)
            .host("d.test")
            .path("/", "Prefix", backend("web", 80))
            .build(),
    );
    assert!(reported(&c.publish("full")));
}
