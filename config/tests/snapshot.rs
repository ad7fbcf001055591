//! Snapshot building from Ingress-shaped inputs: class selection, merging, conflicts, backend
//! resolution and endpoint readiness.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use sluice_config::build::{build, is_served, ClassPolicy, Target};
use sluice_config::fixtures::{self, backend, class_policy, path};
use sluice_config::model::*;
use sluice_config::Reason;

fn svc(ns: &str, name: &str, ports: &[(&str, i32)]) -> ServiceInput {
    ports
        .iter()
        .fold(fixtures::service(ns, name), |b, (n, p)| b.port(n, *p))
        .build()
}

fn slice(
    ns: &str,
    service: &str,
    ports: &[(&str, i32)],
    eps: &[(&str, Option<bool>)],
) -> EndpointSliceInput {
    let b = ports
        .iter()
        .fold(fixtures::slice(ns, service), |b, (n, p)| b.port(n, *p));
    eps.iter()
        .fold(b, |b, (a, ready)| b.endpoint(a, *ready))
        .build()
}

fn ingress(
    name: &str,
    created: Option<i64>,
    host: Option<&str>,
    paths: Vec<PathInput>,
) -> IngressInput {
    let b = fixtures::ingress("default", name);
    let b = match created {
        Some(t) => b.created(t),
        None => b,
    };
    b.rule(host).paths(paths).build()
}

/// The pool a request for (host, path) resolves to, as `service:port`, or `unresolved`.
fn route(inputs: &Inputs, host: &str, p: &str) -> Option<String> {
    let snap = build(inputs, &class_policy());
    let entry = snap.routes.find(host, p)?;
    Some(match snap.target(entry)? {
        Target::Pool(k) => format!("{}:{}", k.service, k.port),
        Target::Unresolved { .. } => "unresolved".into(),
    })
}

fn base_services() -> Vec<ServiceInput> {
    vec![
        svc("default", "a", &[("http", 80)]),
        svc("default", "b", &[("http", 80)]),
    ]
}

#[test]
fn paths_from_several_ingresses_merge_under_one_host() {
    let inputs = Inputs {
        ingresses: vec![
            ingress(
                "one",
                Some(1),
                Some("x.test"),
                vec![path("/", "Prefix", backend("a", 80))],
            ),
            ingress(
                "two",
                Some(2),
                Some("x.test"),
                vec![path("/api", "Prefix", backend("b", 80))],
            ),
        ],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(route(&inputs, "x.test", "/api/v1").as_deref(), Some("b:80"));
    assert_eq!(route(&inputs, "x.test", "/apix").as_deref(), Some("a:80"));
    assert_eq!(route(&inputs, "y.test", "/"), None);
}

#[test]
fn an_identical_rule_goes_to_the_oldest_ingress_whatever_the_input_order() {
    let young = ingress(
        "young",
        Some(200),
        Some("x.test"),
        vec![path("/", "Prefix", backend("b", 80))],
    );
    let old = ingress(
        "old",
        Some(100),
        Some("x.test"),
        vec![path("/", "Prefix", backend("a", 80))],
    );
    for order in [
        vec![young.clone(), old.clone()],
        vec![old.clone(), young.clone()],
    ] {
        let inputs = Inputs {
            ingresses: order,
            services: base_services(),
            ..Default::default()
        };
        assert_eq!(route(&inputs, "x.test", "/").as_deref(), Some("a:80"));
        let snap = build(&inputs, &class_policy());
        assert_eq!(snap.skipped.len(), 1);
        assert_eq!(snap.skipped[0].ingress.name, "young");
        assert_eq!(snap.skipped[0].reason, Reason::ConflictingRule);
        assert!(snap.skipped[0].message.contains("default/old"));
    }
}

#[test]
fn equal_timestamps_break_ties_by_namespace_then_name() {
    let mut z = ingress(
        "z",
        Some(5),
        Some("x.test"),
        vec![path("/", "Prefix", backend("b", 80))],
    );
    let a = ingress(
        "a",
        Some(5),
        Some("x.test"),
        vec![path("/", "Prefix", backend("a", 80))],
    );
    let inputs = Inputs {
        ingresses: vec![z.clone(), a.clone()],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(route(&inputs, "x.test", "/").as_deref(), Some("a:80"));
    // A timestamp always beats none.
    z.created = Some(1);
    let mut a2 = a;
    a2.created = None;
    let inputs = Inputs {
        ingresses: vec![a2, z],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(route(&inputs, "x.test", "/").as_deref(), Some("b:80"));
}

#[test]
fn exact_and_prefix_of_the_same_path_are_different_rules() {
    let inputs = Inputs {
        ingresses: vec![
            ingress(
                "one",
                Some(1),
                None,
                vec![path("/p", "Prefix", backend("a", 80))],
            ),
            ingress(
                "two",
                Some(2),
                None,
                vec![path("/p", "Exact", backend("b", 80))],
            ),
        ],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(route(&inputs, "h", "/p").as_deref(), Some("b:80"));
    assert_eq!(route(&inputs, "h", "/p/q").as_deref(), Some("a:80"));
    assert!(build(&inputs, &class_policy()).skipped.is_empty());
}

#[test]
fn implementation_specific_behaves_as_prefix() {
    let inputs = Inputs {
        ingresses: vec![ingress(
            "one",
            Some(1),
            None,
            vec![path("/docs", "ImplementationSpecific", backend("a", 80))],
        )],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(route(&inputs, "h", "/docs/x").as_deref(), Some("a:80"));
    assert_eq!(route(&inputs, "h", "/docsx"), None);
}

#[test]
fn bad_rules_are_skipped_with_reasons_and_others_still_serve() {
    let inputs = Inputs {
        ingresses: vec![ingress(
            "mixed",
            Some(1),
            Some("x.test"),
            vec![
                path("no-slash", "Prefix", backend("a", 80)),
                path("/typo", "Prefx", backend("a", 80)),
                path("/good", "Prefix", backend("a", 80)),
                path("/ghost", "Prefix", backend("ghost", 80)),
                path("/badport", "Prefix", backend("a", 81)),
                PathInput {
                    path: Some("/untyped".into()),
                    path_type: None,
                    backend: backend("a", 80),
                },
            ],
        )],
        services: base_services(),
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    let reasons: Vec<_> = snap.skipped.iter().map(|s| s.reason.clone()).collect();
    assert_eq!(
        reasons,
        vec![
            Reason::InvalidPath,
            Reason::InvalidPathType,
            Reason::InvalidPathType,
            Reason::MissingService,
            Reason::MissingPort
        ]
    );
    assert!(snap
        .skipped
        .iter()
        .any(|s| s.message.contains("paths[0]") && s.message.contains("`no-slash`")));
    assert_eq!(route(&inputs, "x.test", "/good").as_deref(), Some("a:80"));
    // An unresolvable backend answers for its own path (503 upstream), never a shorter one.
    assert_eq!(
        route(&inputs, "x.test", "/ghost/x").as_deref(),
        Some("unresolved")
    );
    assert_eq!(
        route(&inputs, "x.test", "/badport").as_deref(),
        Some("unresolved")
    );
    assert_eq!(route(&inputs, "x.test", "/typo"), None);
}

#[test]
fn an_invalid_host_skips_only_its_rule() {
    let ing = fixtures::ingress("default", "one")
        .created(1)
        .host("Bad_Host")
        .path("/", "Prefix", backend("a", 80))
        .host("ok.test")
        .path("/", "Prefix", backend("b", 80))
        .build();
    let inputs = Inputs {
        ingresses: vec![ing],
        services: base_services(),
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    assert_eq!(snap.skipped.len(), 1);
    assert_eq!(snap.skipped[0].reason, Reason::InvalidHost);
    assert_eq!(route(&inputs, "ok.test", "/").as_deref(), Some("b:80"));
}

#[test]
fn the_default_backend_of_the_oldest_ingress_catches_unmatched_requests() {
    let mut one = ingress(
        "one",
        Some(1),
        Some("x.test"),
        vec![path("/api", "Prefix", backend("a", 80))],
    );
    one.default_backend = Some(backend("b", 80));
    let mut two = ingress("two", Some(2), None, vec![]);
    two.default_backend = Some(backend("a", 80));
    let inputs = Inputs {
        ingresses: vec![two, one],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(route(&inputs, "x.test", "/other").as_deref(), Some("b:80"));
    assert_eq!(route(&inputs, "nowhere.test", "/").as_deref(), Some("b:80"));
    let snap = build(&inputs, &class_policy());
    assert_eq!(snap.skipped[0].ingress.name, "two");
}

#[test]
fn a_named_service_port_resolves_to_its_number_and_slice_port() {
    let inputs = Inputs {
        ingresses: vec![ingress(
            "one",
            Some(1),
            None,
            vec![path(
                "/",
                "Prefix",
                BackendInput::Service {
                    name: "web".into(),
                    port: PortRef::Name("http".into()),
                },
            )],
        )],
        services: vec![svc("default", "web", &[("metrics", 9090), ("http", 80)])],
        slices: vec![slice(
            "default",
            "web",
            &[("metrics", 19090), ("http", 8080)],
            &[
                ("10.0.0.1", Some(true)),
                ("10.0.0.2", None),
                ("10.0.0.3", Some(false)),
            ],
        )],
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    let (key, eps) = snap.endpoints.iter().next().unwrap();
    assert_eq!(key.port, 80);
    // Ready and condition-less endpoints are used, on the slice port named like the Service port.
    let want: Vec<SocketAddr> = vec![
        "10.0.0.1:8080".parse().unwrap(),
        "10.0.0.2:8080".parse().unwrap(),
    ];
    assert_eq!(eps, &want);
}

#[test]
fn endpoints_merge_across_slices_of_one_service_and_ignore_other_services() {
    let mut second = slice("default", "a", &[("http", 8080)], &[("10.0.0.9", None)]);
    second.name = "a-second".into();
    let inputs = Inputs {
        ingresses: vec![ingress(
            "one",
            Some(1),
            None,
            vec![path("/", "Prefix", backend("a", 80))],
        )],
        services: base_services(),
        slices: vec![
            slice("default", "a", &[("http", 8080)], &[("10.0.0.1", None)]),
            second,
            slice("default", "b", &[("http", 8080)], &[("10.0.0.5", None)]),
            slice("other", "a", &[("http", 8080)], &[("10.0.0.6", None)]),
        ],
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    assert_eq!(snap.endpoints.len(), 1);
    let eps: Vec<String> = snap
        .endpoints
        .values()
        .next()
        .unwrap()
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(eps, vec!["10.0.0.1:8080", "10.0.0.9:8080"]);
}

#[test]
fn a_backend_in_another_namespace_is_not_found() {
    let mut ing = ingress(
        "one",
        Some(1),
        None,
        vec![path("/", "Prefix", backend("a", 80))],
    );
    ing.namespace = "team".into();
    let inputs = Inputs {
        ingresses: vec![ing],
        services: base_services(),
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    assert_eq!(snap.skipped[0].reason, Reason::MissingService);
}

#[test]
fn class_selection_follows_ingress_classes_and_the_legacy_annotation() {
    let ours = IngressClassInput {
        name: "edge".into(),
        controller: "sluice.dev/ingress-controller".into(),
        is_default: false,
    };
    let theirs = IngressClassInput {
        name: "nginx".into(),
        controller: "k8s.io/ingress-nginx".into(),
        is_default: true,
    };
    let our_default = IngressClassInput {
        is_default: true,
        ..ours.clone()
    };
    let ing = |class: Option<&str>, legacy: Option<&str>| {
        let b = fixtures::ingress("", "").class(class);
        match legacy {
            Some(v) => b.annotation("kubernetes.io/ingress.class", v),
            None => b,
        }
        .build()
    };
    let classless_policy = ClassPolicy {
        serve_classless: true,
        ..class_policy()
    };
    let cases: Vec<(IngressInput, Vec<IngressClassInput>, ClassPolicy, bool)> = vec![
        (
            ing(Some("edge"), None),
            vec![ours.clone()],
            class_policy(),
            true,
        ),
        (
            ing(Some("nginx"), None),
            vec![ours.clone(), theirs.clone()],
            class_policy(),
            false,
        ),
        // Our class name with no IngressClass object (a folder of manifests) is served...
        (ing(Some("sluice"), None), vec![], class_policy(), true),
        // ...but not when an IngressClass of that name belongs to someone else.
        (
            ing(Some("sluice"), None),
            vec![IngressClassInput {
                name: "sluice".into(),
                controller: "other".into(),
                is_default: false,
            }],
            class_policy(),
            false,
        ),
        (ing(Some("unknown"), None), vec![], class_policy(), false),
        (
            ing(None, None),
            vec![ours.clone(), theirs.clone()],
            class_policy(),
            false,
        ),
        (
            ing(None, None),
            vec![our_default.clone()],
            class_policy(),
            true,
        ),
        (ing(None, None), vec![], classless_policy.clone(), true),
        (ing(None, Some("sluice")), vec![], class_policy(), true),
        (
            ing(None, Some("nginx")),
            vec![our_default.clone()],
            classless_policy,
            false,
        ),
        (
            ing(Some("edge"), Some("nginx")),
            vec![ours.clone()],
            class_policy(),
            false,
        ),
    ];
    for (i, (ingress, classes, policy, want)) in cases.into_iter().enumerate() {
        assert_eq!(is_served(&ingress, &classes, &policy), want, "case {i}");
    }
}

#[test]
fn ingresses_of_other_classes_make_no_routes() {
    let mut theirs = ingress(
        "theirs",
        Some(1),
        Some("x.test"),
        vec![path("/", "Prefix", backend("b", 80))],
    );
    theirs.class_name = Some("nginx".into());
    let ours = ingress(
        "ours",
        Some(2),
        Some("x.test"),
        vec![path("/", "Prefix", backend("a", 80))],
    );
    let inputs = Inputs {
        ingresses: vec![theirs, ours],
        services: base_services(),
        classes: vec![IngressClassInput {
            name: "nginx".into(),
            controller: "k8s.io/ingress-nginx".into(),
            is_default: false,
        }],
        ..Default::default()
    };
    assert_eq!(route(&inputs, "x.test", "/").as_deref(), Some("a:80"));
    assert!(build(&inputs, &class_policy()).skipped.is_empty());
}

#[test]
fn building_twice_gives_equal_snapshots() {
    let inputs = Inputs {
        ingresses: vec![
            ingress(
                "one",
                Some(1),
                Some("x.test"),
                vec![path("/", "Prefix", backend("a", 80))],
            ),
            ingress(
                "two",
                None,
                Some("*.test"),
                vec![path("/", "Prefix", backend("b", 80))],
            ),
        ],
        services: base_services(),
        ..Default::default()
    };
    let mut reversed = inputs.clone();
    reversed.ingresses.reverse();
    assert_eq!(
        build(&inputs, &class_policy()),
        build(&reversed, &class_policy())
    );
}

#[test]
fn timeout_annotations_give_each_ingress_its_own_target_over_one_pool() {
    use std::time::Duration;
    let mut short = ingress(
        "short",
        Some(1),
        Some("x.test"),
        vec![path("/short", "Prefix", backend("a", 80))],
    );
    short.annotations = BTreeMap::from([
        ("sluice.dev/read-timeout".to_string(), "300ms".to_string()),
        ("sluice.dev/send-timeout".to_string(), "later".to_string()),
    ]);
    let long = ingress(
        "long",
        Some(2),
        Some("x.test"),
        vec![path("/long", "Prefix", backend("a", 80))],
    );
    let inputs = Inputs {
        ingresses: vec![short, long],
        services: base_services(),
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    let short = snap.routes.find("x.test", "/short").unwrap();
    let long = snap.routes.find("x.test", "/long").unwrap();
    assert_ne!(short.target, long.target);
    assert_eq!(
        snap.target(short),
        snap.target(long),
        "one pool behind both"
    );
    assert_eq!(snap.endpoints.len(), 1);
    let timeouts = snap.policy(short).unwrap().timeouts;
    assert_eq!(timeouts.read, Some(Duration::from_millis(300)));
    assert_eq!(timeouts.send, None, "a bad value leaves the default");
    assert_eq!(snap.policy(long).unwrap().timeouts.read, None);
    // The bad value is reported once for its Ingress, and its rules are still served.
    assert_eq!(snap.skipped.len(), 1);
    assert_eq!(snap.skipped[0].reason, Reason::InvalidAnnotation);
    assert_eq!(snap.skipped[0].ingress.name, "short");
    assert!(
        snap.skipped[0].message.contains("sluice.dev/send-timeout"),
        "{}",
        snap.skipped[0].message
    );
}

#[test]
fn a_terminating_endpoint_gets_no_new_requests_even_while_it_serves() {
    let mut s = slice(
        "default",
        "a",
        &[("http", 8080)],
        &[("10.0.0.1", None), ("10.0.0.2", None)],
    );
    // As the API shows a pod being deleted that still answers.
    s.endpoints[1].serving = Some(true);
    s.endpoints[1].terminating = Some(true);
    let inputs = Inputs {
        ingresses: vec![ingress(
            "one",
            Some(1),
            None,
            vec![path("/", "Prefix", backend("a", 80))],
        )],
        services: base_services(),
        slices: vec![s],
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    let eps: Vec<String> = snap
        .endpoints
        .values()
        .flatten()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(eps, vec!["10.0.0.1:8080"]);
}

#[test]
fn health_check_annotations_of_a_service_reach_its_pools_and_bad_ones_are_reported_per_ingress() {
    use sluice_config::health::{CheckKind, HEALTH_CHECK, HEALTH_CHECK_INTERVAL};
    let mut checked = svc("default", "a", &[("http", 80)]);
    checked.annotations = [(HEALTH_CHECK, "http"), (HEALTH_CHECK_INTERVAL, "often")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let inputs = Inputs {
        ingresses: vec![
            ingress(
                "one",
                Some(1),
                Some("a.test"),
                // Two rules to the same Service: reported once for this Ingress.
                vec![
                    path("/", "Prefix", backend("a", 80)),
                    path("/x", "Prefix", backend("a", 80)),
                ],
            ),
            ingress(
                "two",
                Some(2),
                Some("b.test"),
                vec![
                    path("/", "Prefix", backend("a", 80)),
                    path("/b", "Prefix", backend("b", 80)),
                ],
            ),
            ingress(
                "three",
                Some(3),
                Some("c.test"),
                vec![path("/", "Prefix", backend("b", 80))],
            ),
        ],
        services: vec![checked, svc("default", "b", &[("http", 80)])],
        ..Default::default()
    };
    let snap = build(&inputs, &class_policy());
    let keys: Vec<String> = snap.health_checks.keys().map(|k| k.to_string()).collect();
    assert_eq!(
        keys,
        vec!["default/a:80"],
        "only the annotated Service's pool"
    );
    let overrides = snap.health_checks.values().next().unwrap();
    assert_eq!(overrides.kind, Some(CheckKind::Http));
    assert_eq!(
        overrides.interval, None,
        "the bad interval keeps its default"
    );
    let reported: Vec<(String, Reason)> = snap
        .skipped
        .iter()
        .map(|s| (s.ingress.name.clone(), s.reason.clone()))
        .collect();
    assert_eq!(
        reported,
        vec![
            ("one".to_string(), Reason::InvalidAnnotation),
            ("two".to_string(), Reason::InvalidAnnotation),
        ]
    );
    assert!(
        snap.skipped[0]
            .message
            .contains("Service default/a: annotation `sluice.dev/health-check-interval`"),
        "{}",
        snap.skipped[0].message
    );
    // The rules still serve.
    assert_eq!(route(&inputs, "a.test", "/x"), Some("a:80".into()));
}

/// Requests are matched by their normalized path, so a rule written in another form would
/// never match as written: it is served normalized and reported; one above the root is
/// skipped. A second rule that normalizes to an existing one is a conflict like any other.
#[test]
fn rule_paths_are_normalized_and_a_changed_one_is_reported() {
    let inputs = Inputs {
        ingresses: vec![ingress(
            "odd",
            Some(1),
            Some("x.test"),
            vec![
                path("//api/./v1/", "Prefix", backend("a", 80)),
                path("/%61dmin;x", "Exact", backend("b", 80)),
                path("/../etc", "Prefix", backend("b", 80)),
                path("/api/v1", "Prefix", backend("b", 80)),
            ],
        )],
        services: base_services(),
        ..Default::default()
    };
    assert_eq!(
        route(&inputs, "x.test", "/api/v1/x").as_deref(),
        Some("a:80")
    );
    assert_eq!(route(&inputs, "x.test", "/admin").as_deref(), Some("b:80"));
    assert_eq!(route(&inputs, "x.test", "/etc"), None);
    let snap = build(&inputs, &class_policy());
    let reasons: Vec<(&Reason, &str)> = snap
        .skipped
        .iter()
        .map(|s| (&s.reason, s.message.as_str()))
        .collect();
    assert!(
        reasons.iter().any(|(r, m)| **r == Reason::NormalizedPath
            && m.contains("`//api/./v1/` is served as `/api/v1/`")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(r, m)| **r == Reason::NormalizedPath
            && m.contains("`/%61dmin;x` is served as `/admin`")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, m)| **r == Reason::InvalidPath && m.contains("`/../etc`")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|(r, _)| **r == Reason::ConflictingRule),
        "{reasons:?}"
    );
}
