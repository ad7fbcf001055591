//! Benchmarks of sluice; see benches/README.md.
//!
//! This library makes the synthetic cluster the criterion benches measure: `n` hosts, each with
//! its own Ingress, Service and EndpointSlice, a few wildcard hosts among them, several Exact and
//! Prefix paths per host, and one default backend. [`queries`] gives request (host, path) pairs
//! for each kind of lookup, each with the Service it must reach, so the benches can check that
//! they measure what they claim to.
//!
//! [`scale`] makes the large cluster of the wrk scale bench (`wrk/scale.sh`) as Kubernetes
//! objects, for the files source and the fake API server.

pub mod scale;

use sluice_config::build::{ClassPolicy, Snapshot, Target};
use sluice_config::model::{
    BackendInput, EndpointInput, EndpointSliceInput, IngressClassInput, IngressInput, Inputs,
    PathInput, PortRef, RuleInput, ServiceInput, ServicePortInput, SlicePortInput,
};

/// The class every synthetic Ingress uses, and the policy that serves it.
pub const CLASS: &str = "sluice";
const CONTROLLER: &str = "sluice.dev/ingress-controller";
/// Namespaces the synthetic objects are spread over.
const NAMESPACES: usize = 64;
/// Endpoints behind each Service port.
const ENDPOINTS_PER_SERVICE: usize = 3;

/// The policy that serves the synthetic Ingresses.
pub fn policy() -> ClassPolicy {
    ClassPolicy {
        controller: CONTROLLER.to_string(),
        class_name: CLASS.to_string(),
        serve_classless: false,
    }
}

/// How many of `hosts` are wildcard hosts: a few (at least 2, then one in 500).
pub fn wildcard_count(hosts: usize) -> usize {
    (hosts / 500).max(2).min(hosts / 2)
}

fn namespace(i: usize) -> String {
    format!("team-{}", i % NAMESPACES)
}

/// The exact host of host index `i` (written lowercase, as a rule must be).
pub fn exact_host(i: usize) -> String {
    format!("app-{i}.team-{}.example.com", i % NAMESPACES)
}

/// The suffix of wildcard number `w`: the rule is `*.{suffix}`.
pub fn wildcard_suffix(w: usize) -> String {
    format!("wild-{w}.example.com")
}

fn service_name(i: usize) -> String {
    format!("svc-{i}")
}

fn wildcard_service_name(w: usize) -> String {
    format!("wsvc-{w}")
}

fn path(path: &str, path_type: &str, service: &str, port: PortRef) -> PathInput {
    PathInput {
        path: Some(path.to_string()),
        path_type: Some(path_type.to_string()),
        backend: BackendInput::Service {
            name: service.to_string(),
            port,
        },
    }
}

fn http() -> PortRef {
    PortRef::Name("http".to_string())
}

/// A Service with ports `http` (80) and `api` (8080), and its EndpointSlice mapping them to
/// 8000 and 9000 on three loopback addresses.
fn service_and_slice(ns: &str, name: &str, n: usize) -> (ServiceInput, EndpointSliceInput) {
    let service = ServiceInput {
        namespace: ns.to_string(),
        name: name.to_string(),
        type_: "ClusterIP".to_string(),
        ports: vec![
            ServicePortInput {
                name: "http".to_string(),
                port: 80,
                ..Default::default()
            },
            ServicePortInput {
                name: "api".to_string(),
                port: 8080,
                ..Default::default()
            },
        ],
        ..Default::default()
    };
    let endpoints = (0..ENDPOINTS_PER_SERVICE)
        .map(|k| EndpointInput {
            addresses: vec![format!("127.{}.{}.{}", (n >> 8) & 255, n & 255, k + 1)],
            ready: Some(true),
            ..Default::default()
        })
        .collect();
    let slice = EndpointSliceInput {
        namespace: ns.to_string(),
        name: format!("{name}-x1y2z"),
        service: name.to_string(),
        address_type: "IPv4".to_string(),
        ports: vec![
            SlicePortInput {
                name: "http".to_string(),
                port: Some(8000),
            },
            SlicePortInput {
                name: "api".to_string(),
                port: Some(9000),
            },
        ],
        endpoints,
    };
    (service, slice)
}

/// A synthetic cluster with `hosts` host entries: `hosts - wildcard_count(hosts)` exact hosts and
/// the rest wildcards, one Ingress (with its Service and EndpointSlice) per host.
///
/// Every exact host has `/api` and `/api/v1/users` (Prefix), `/healthz` and `/static/app.js`
/// (Exact) and `/docs` (ImplementationSpecific); even-numbered hosts also have `/` (Prefix), so
/// odd-numbered ones have paths that match nothing. Wildcards have `/` and `/api` (Prefix). The
/// oldest Ingress also sets the default backend (`svc-0`).
pub fn inputs(hosts: usize) -> Inputs {
    let wildcards = wildcard_count(hosts);
    let exact = hosts - wildcards;
    let mut inputs = Inputs {
        classes: vec![IngressClassInput {
            name: CLASS.to_string(),
            controller: CONTROLLER.to_string(),
            is_default: false,
        }],
        ..Default::default()
    };
    let mut created = 1_700_000_000i64;
    for i in 0..exact {
        let ns = namespace(i);
        let svc = service_name(i);
        let mut paths = vec![
            path("/api", "Prefix", &svc, PortRef::Number(8080)),
            path("/api/v1/users", "Prefix", &svc, http()),
            path("/healthz", "Exact", &svc, http()),
            path("/static/app.js", "Exact", &svc, http()),
            path("/docs", "ImplementationSpecific", &svc, http()),
        ];
        if i % 2 == 0 {
            paths.push(path("/", "Prefix", &svc, http()));
        }
        created += 1;
        inputs.ingresses.push(IngressInput {
            namespace: ns.clone(),
            name: format!("ing-{i}"),
            created: Some(created),
            class_name: Some(CLASS.to_string()),
            default_backend: (i == 0).then(|| BackendInput::Service {
                name: svc.clone(),
                port: http(),
            }),
            rules: vec![RuleInput {
                host: Some(exact_host(i)),
                paths,
            }],
            ..Default::default()
        });
        let (s, sl) = service_and_slice(&ns, &svc, i);
        inputs.services.push(s);
        inputs.slices.push(sl);
    }
    for w in 0..wildcards {
        let ns = namespace(w);
        let svc = wildcard_service_name(w);
        created += 1;
        inputs.ingresses.push(IngressInput {
            namespace: ns.clone(),
            name: format!("wild-{w}"),
            created: Some(created),
            class_name: Some(CLASS.to_string()),
            rules: vec![RuleInput {
                host: Some(format!("*.{}", wildcard_suffix(w))),
                paths: vec![
                    path("/", "Prefix", &svc, http()),
                    path("/api", "Prefix", &svc, PortRef::Number(8080)),
                ],
            }],
            ..Default::default()
        });
        let (s, sl) = service_and_slice(&ns, &svc, exact + w);
        inputs.services.push(s);
        inputs.slices.push(sl);
    }
    inputs
}

/// The kinds of lookup the benches measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// An exact host and an Exact path (`/healthz`): two hash lookups.
    ExactHostExactPath,
    /// An exact host and a deep path under a Prefix rule
    /// (`/api/v1/users/12345/orders/678/items` under `/api/v1/users`).
    DeepPrefix,
    /// An exact host, a path only `/` matches.
    RootFallback,
    /// A host only a wildcard covers (`user-7.wild-1.example.com`).
    WildcardHost,
    /// A mixed-case host with a port (`App-3.Team-3.Example.COM:8080`): normalisation allocates.
    MixedCaseHostWithPort,
    /// An unknown host: falls to the default backend.
    MissHost,
    /// A known host without a `/` rule and a path none of its rules match: the default backend.
    MissPath,
}

impl Case {
    pub const ALL: [Case; 7] = [
        Case::ExactHostExactPath,
        Case::DeepPrefix,
        Case::RootFallback,
        Case::WildcardHost,
        Case::MixedCaseHostWithPort,
        Case::MissHost,
        Case::MissPath,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::ExactHostExactPath => "exact_host_exact_path",
            Case::DeepPrefix => "exact_host_deep_prefix",
            Case::RootFallback => "exact_host_root_fallback",
            Case::WildcardHost => "wildcard_host",
            Case::MixedCaseHostWithPort => "mixed_case_host_with_port",
            Case::MissHost => "miss_unknown_host",
            Case::MissPath => "miss_path_default_backend",
        }
    }
}

/// One request to look up, and the Service its route must lead to.
#[derive(Debug, Clone)]
pub struct Query {
    pub host: String,
    pub path: String,
    pub service: String,
}

/// `count` queries of kind `case` against `inputs(hosts)`, spread over the whole table (a fixed
/// stride through the host indices) so that a large table is not measured on one hot entry.
pub fn queries(hosts: usize, case: Case, count: usize) -> Vec<Query> {
    let wildcards = wildcard_count(hosts);
    let exact = hosts - wildcards;
    // A stride coprime with most table sizes, so consecutive queries land far apart.
    let pick = |k: usize, modulo: usize| (k.wrapping_mul(7919) + 13) % modulo.max(1);
    (0..count)
        .map(|k| {
            let i = pick(k, exact);
            let (host, path, service) = match case {
                Case::ExactHostExactPath => {
                    (exact_host(i), "/healthz".to_string(), service_name(i))
                }
                Case::DeepPrefix => (
                    exact_host(i),
                    "/api/v1/users/12345/orders/678/items".to_string(),
                    service_name(i),
                ),
                Case::RootFallback => {
                    let i = i & !1;
                    (
                        exact_host(i),
                        "/products/shoes/42".to_string(),
                        service_name(i),
                    )
                }
                Case::WildcardHost => {
                    let w = pick(k, wildcards);
                    (
                        format!("user-{k}.{}", wildcard_suffix(w)),
                        "/api/orders".to_string(),
                        wildcard_service_name(w),
                    )
                }
                Case::MixedCaseHostWithPort => (
                    format!("App-{i}.Team-{}.Example.COM:8080", i % NAMESPACES),
                    "/healthz".to_string(),
                    service_name(i),
                ),
                Case::MissHost => (
                    format!("nope-{i}.unknown.org"),
                    "/".to_string(),
                    service_name(0),
                ),
                Case::MissPath => {
                    let i = if i | 1 < exact { i | 1 } else { 1 };
                    (exact_host(i), "/nothing/here".to_string(), service_name(0))
                }
            };
            Query {
                host,
                path,
                service,
            }
        })
        .collect()
}

/// The Service a (host, path) lookup leads to, if any.
pub fn lookup_service<'a>(snapshot: &'a Snapshot, host: &str, path: &str) -> Option<&'a str> {
    let entry = snapshot.routes.find(host, path)?;
    match snapshot.target(entry)? {
        Target::Pool(key) => Some(key.service.as_str()),
        Target::Unresolved { .. } => None,
    }
}

/// Checks that every query leads where it says; returns the first that does not.
pub fn check_queries(snapshot: &Snapshot, queries: &[Query]) -> Result<(), String> {
    for q in queries {
        let got = lookup_service(snapshot, &q.host, &q.path);
        if got != Some(q.service.as_str()) {
            return Err(format!(
                "{} {} led to {got:?}, expected {}",
                q.host, q.path, q.service
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_cluster_builds_without_skips_and_every_query_hits_its_service() {
        for hosts in [10, 1000] {
            let snapshot = sluice_config::build(&inputs(hosts), &policy());
            assert!(snapshot.skipped.is_empty(), "{:?}", snapshot.skipped);
            assert_eq!(snapshot.routes.host_count(), hosts);
            assert_eq!(snapshot.ingresses.len(), hosts);
            for case in Case::ALL {
                let qs = queries(hosts, case, 64);
                check_queries(&snapshot, &qs).unwrap_or_else(|e| panic!("{case:?}: {e}"));
            }
        }
    }

    #[test]
    fn prefix_rules_match_whole_elements_in_the_synthetic_cluster() {
        let snapshot = sluice_config::build(&inputs(10), &policy());
        // `/apiary` is not under `/api`; host 1 has no `/` rule, so it goes to the default.
        assert_eq!(
            lookup_service(&snapshot, &exact_host(1), "/apiary"),
            Some("svc-0")
        );
        assert_eq!(
            lookup_service(&snapshot, &exact_host(1), "/api/x"),
            Some("svc-1")
        );
        // A wildcard covers one label only.
        assert_eq!(
            lookup_service(&snapshot, "a.b.wild-0.example.com", "/"),
            Some("svc-0")
        );
    }
}
