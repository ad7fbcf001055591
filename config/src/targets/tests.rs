//! Unit tests of `ip` and `instance` targets: Node selection, the annotations, and snapshot
//! building with both.

use super::*;

fn node(
    name: &str,
    ip: &str,
    ready: bool,
    unschedulable: bool,
    labels: &[(&str, &str)],
) -> NodeInput {
    NodeInput {
        name: name.into(),
        internal_ips: if ip.is_empty() {
            vec![]
        } else {
            vec![ip.into()]
        },
        ready,
        unschedulable,
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn only_ready_schedulable_nodes_with_an_internal_ip_that_match_the_labels_are_targets() {
    let nodes = vec![
        node(
            "ready",
            "10.0.0.1",
            true,
            false,
            &[("pool", "edge"), ("zone", "a")],
        ),
        node(
            "not-ready",
            "10.0.0.2",
            false,
            false,
            &[("pool", "edge"), ("zone", "a")],
        ),
        node(
            "cordoned",
            "10.0.0.3",
            true,
            true,
            &[("pool", "edge"), ("zone", "a")],
        ),
        node("no-ip", "", true, false, &[("pool", "edge"), ("zone", "a")]),
        node(
            "other-zone",
            "10.0.0.5",
            true,
            false,
            &[("pool", "edge"), ("zone", "b")],
        ),
        node("unlabelled", "10.0.0.6", true, false, &[]),
        node("bad-ip", "not-an-ip", true, false, &[]),
    ];
    let sel = |s: &str| NodeSelector::parse(s).unwrap();
    for (selector, want) in [
        (
            NodeSelector::default(),
            vec!["10.0.0.1", "10.0.0.5", "10.0.0.6"],
        ),
        (sel("pool=edge"), vec!["10.0.0.1", "10.0.0.5"]),
        (sel("pool=edge,zone=a"), vec!["10.0.0.1"]),
        (sel(" zone=b , pool=edge "), vec!["10.0.0.5"]),
        (sel("pool=core"), vec![]),
    ] {
        let got: Vec<String> = node_targets(&nodes, &selector, 30080)
            .iter()
            .map(|a| {
                assert_eq!(a.port(), 30080);
                a.ip().to_string()
            })
            .collect();
        assert_eq!(got, want, "{selector}");
    }
}

#[test]
fn a_dual_stack_node_is_one_target_at_its_first_internal_ip() {
    let mut n = node("dual", "fd00::1", true, false, &[]);
    n.internal_ips.push("10.0.0.1".into());
    let got = node_targets(&[n], &NodeSelector::default(), 30000);
    assert_eq!(got, vec!["[fd00::1]:30000".parse().unwrap()]);
}

#[test]
fn node_label_filters_are_parsed_or_refused_with_a_reason() {
    for (text, ok) in [
        ("pool=edge", true),
        ("pool=edge,zone=a", true),
        ("node.kubernetes.io/instance-type=m5.large", true),
        ("role=", true),
        ("pool=edge,pool=edge", true),
        ("", false),
        ("pool", false),
        ("pool=edge,", false),
        ("=edge", false),
        ("pool=edge,pool=core", false),
        ("pool=-edge", false),
        ("po ol=edge", false),
        ("Bad_Prefix.com/x=y", false),
        ("pool!=edge", false),
    ] {
        assert_eq!(NodeSelector::parse(text).is_ok(), ok, "{text:?}");
    }
}

#[test]
fn the_annotations_choose_the_target_type_and_bad_values_keep_the_default() {
    let instance = |s: &str| {
        TargetType::Instance(if s.is_empty() {
            NodeSelector::default()
        } else {
            NodeSelector::parse(s).unwrap()
        })
    };
    for (pairs, default, want, bad_keys) in [
        (vec![], TargetType::Ip, TargetType::Ip, vec![]),
        (vec![], instance(""), instance(""), vec![]),
        (
            vec![(TARGET_TYPE, "instance")],
            TargetType::Ip,
            instance(""),
            vec![],
        ),
        (
            vec![(TARGET_TYPE, " ip ")],
            instance(""),
            TargetType::Ip,
            vec![],
        ),
        (
            vec![(TARGET_TYPE, "node")],
            TargetType::Ip,
            TargetType::Ip,
            vec![TARGET_TYPE],
        ),
        (
            vec![(TARGET_TYPE, "instance"), (TARGET_NODE_LABELS, "pool=edge")],
            TargetType::Ip,
            instance("pool=edge"),
            vec![],
        ),
        // The settings' default applies the filter too.
        (
            vec![(TARGET_NODE_LABELS, "pool=edge")],
            instance(""),
            instance("pool=edge"),
            vec![],
        ),
        (
            vec![(TARGET_TYPE, "instance"), (TARGET_NODE_LABELS, "pool edge")],
            TargetType::Ip,
            instance(""),
            vec![TARGET_NODE_LABELS],
        ),
        (
            vec![(TARGET_NODE_LABELS, "pool=edge")],
            TargetType::Ip,
            TargetType::Ip,
            vec![TARGET_NODE_LABELS],
        ),
    ] {
        let (got, bad) = target_type(&annotations(&pairs), &default);
        assert_eq!(got, want, "{pairs:?}");
        let keys: Vec<&str> = bad.iter().map(|b| b.key).collect();
        assert_eq!(keys, bad_keys, "{pairs:?}");
    }
}

// Snapshot building with instance targets.

use crate::build::{build_with, BuildDefaults, PoolKey, Target};
use crate::finding::Reason;
use crate::fixtures::{self, backend, class_policy};
use crate::model::*;

/// Service `web/app` (NodePort: port 80, nodePort 30080) and `web/internal` (ClusterIP:
/// port 80), one pod 10.1.0.1:8080 each, and four Nodes.
fn cluster() -> Inputs {
    let service = |name: &str, type_: &str, node_port: Option<i32>| {
        fixtures::service("web", name)
            .type_(type_)
            .port("http", 80)
            .node_port(node_port)
            .build()
    };
    let slice = |service: &str| {
        fixtures::slice("web", service)
            .name(&format!("{service}-1"))
            .port("http", 8080)
            .endpoint("10.1.0.1", None)
            .build()
    };
    Inputs {
        services: vec![
            service("app", "NodePort", Some(30080)),
            service("internal", "ClusterIP", None),
        ],
        slices: vec![slice("app"), slice("internal")],
        nodes: vec![
            node("a", "10.0.0.1", true, false, &[("pool", "edge")]),
            node("b", "10.0.0.2", true, false, &[("pool", "core")]),
            node("c", "10.0.0.3", false, false, &[("pool", "edge")]),
            node("d", "10.0.0.4", true, true, &[("pool", "edge")]),
        ],
        ..Default::default()
    }
}

/// An Ingress `name` whose one rule sends `/{name}` to `service` port 80.
fn ingress(name: &str, service: &str, pairs: &[(&str, &str)]) -> IngressInput {
    fixtures::ingress("web", name)
        .annotations(pairs)
        .rule(None)
        .path(&format!("/{name}"), "Prefix", backend(service, 80))
        .build()
}

fn target_of<'a>(snap: &'a crate::Snapshot, path: &str) -> &'a Target {
    let entry = snap.routes.find("any", path).expect("a route");
    snap.target(entry).expect("a target")
}

fn endpoints(snap: &crate::Snapshot, path: &str) -> Vec<String> {
    match target_of(snap, path) {
        Target::Pool(key) => snap.endpoints[key].iter().map(|a| a.to_string()).collect(),
        t => panic!("{path}: {t:?}"),
    }
}

#[test]
fn ip_and_instance_routes_to_one_service_port_get_separate_pools() {
    let mut inputs = cluster();
    inputs.ingresses = vec![
        ingress("ip", "app", &[]),
        ingress("explicit-ip", "app", &[(TARGET_TYPE, "ip")]),
        ingress("instance", "app", &[(TARGET_TYPE, "instance")]),
        ingress(
            "edge",
            "app",
            &[(TARGET_TYPE, "instance"), (TARGET_NODE_LABELS, "pool=edge")],
        ),
        ingress(
            "core",
            "app",
            &[(TARGET_TYPE, "instance"), (TARGET_NODE_LABELS, "pool=core")],
        ),
    ];
    let snap = build_with(&inputs, &class_policy(), &BuildDefaults::default());
    assert!(snap.skipped.is_empty(), "{:?}", snap.skipped);
    for (path, want) in [
        ("/ip", vec!["10.1.0.1:8080"]),
        ("/explicit-ip", vec!["10.1.0.1:8080"]),
        ("/instance", vec!["10.0.0.1:30080", "10.0.0.2:30080"]),
        ("/edge", vec!["10.0.0.1:30080"]),
        ("/core", vec!["10.0.0.2:30080"]),
    ] {
        assert_eq!(endpoints(&snap, path), want, "{path}");
    }
    // One pool for both ip routes, one per distinct node filter: four in all.
    let keys: Vec<&PoolKey> = snap.endpoints.keys().collect();
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(keys.iter().all(|k| k.service == "app" && k.port == 80));
}

#[test]
fn the_settings_default_makes_routes_without_the_annotation_instance_routes() {
    let mut inputs = cluster();
    inputs.ingresses = vec![
        ingress("plain", "app", &[]),
        ingress("pods", "app", &[(TARGET_TYPE, "ip")]),
    ];
    let defaults = BuildDefaults {
        target_type: TargetType::parse("instance").unwrap(),
        ..Default::default()
    };
    let snap = build_with(&inputs, &class_policy(), &defaults);
    assert_eq!(
        endpoints(&snap, "/plain"),
        vec!["10.0.0.1:30080", "10.0.0.2:30080"]
    );
    assert_eq!(endpoints(&snap, "/pods"), vec!["10.1.0.1:8080"]);
}

#[test]
fn a_service_port_without_a_node_port_is_unresolved_in_instance_mode_only() {
    for (service, pairs, missing_node_port) in [
        ("internal", vec![(TARGET_TYPE, "instance")], true),
        ("internal", vec![], false),
        ("app", vec![(TARGET_TYPE, "instance")], false),
    ] {
        let mut inputs = cluster();
        inputs.ingresses = vec![
            ingress("route", service, &pairs),
            ingress("other", "app", &[]),
        ];
        let snap = build_with(&inputs, &class_policy(), &BuildDefaults::default());
        let reasons: Vec<&Reason> = snap.skipped.iter().map(|s| &s.reason).collect();
        if missing_node_port {
            assert!(
                matches!(target_of(&snap, "/route"), Target::Unresolved { reason } if reason.contains("nodePort")),
                "{service} {pairs:?}"
            );
            assert_eq!(reasons, vec![&Reason::MissingNodePort]);
            assert_eq!(snap.skipped[0].reason.as_str(), "MissingNodePort");
            assert!(
                snap.skipped[0].message.contains("web/internal"),
                "{:?}",
                snap.skipped
            );
        } else {
            assert!(
                matches!(target_of(&snap, "/route"), Target::Pool(_)),
                "{service} {pairs:?}"
            );
            assert!(reasons.is_empty(), "{reasons:?}");
        }
        // The other route keeps serving either way.
        assert_eq!(endpoints(&snap, "/other"), vec!["10.1.0.1:8080"]);
    }
}

#[test]
fn a_bad_target_annotation_is_reported_and_the_route_keeps_serving_with_the_default() {
    let mut inputs = cluster();
    inputs.ingresses = vec![
        ingress("typo", "app", &[(TARGET_TYPE, "instances")]),
        ingress(
            "labels",
            "app",
            &[(TARGET_TYPE, "instance"), (TARGET_NODE_LABELS, "pool")],
        ),
    ];
    let snap = build_with(&inputs, &class_policy(), &BuildDefaults::default());
    let reasons: Vec<&str> = snap.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(reasons, vec!["InvalidAnnotation", "InvalidAnnotation"]);
    assert_eq!(endpoints(&snap, "/typo"), vec!["10.1.0.1:8080"]);
    assert_eq!(
        endpoints(&snap, "/labels"),
        vec!["10.0.0.1:30080", "10.0.0.2:30080"]
    );
}

#[test]
fn the_report_shows_an_instance_route_and_its_node_filter_in_brackets() {
    let mut inputs = cluster();
    inputs.ingresses = vec![
        ingress(
            "edge",
            "app",
            &[
                (TARGET_TYPE, "instance"),
                (TARGET_NODE_LABELS, "pool=edge"),
                ("sluice.dev/load-balance", "ewma"),
            ],
        ),
        ingress("pods", "app", &[]),
    ];
    let text = crate::report::render(&build_with(
        &inputs,
        &class_policy(),
        &BuildDefaults::default(),
    ));
    assert!(
        text.contains(
            "/edge (Prefix) -> web/app:80 (1 ready endpoint) [instance pool=edge, ewma]\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("/pods (Prefix) -> web/app:80 (1 ready endpoint)\n"),
        "{text}"
    );
}

#[test]
fn a_refused_node_label_filter_names_the_label_at_fault() {
    for (text, error, reason) in [
        (
            " ",
            NodeSelectorError::Empty,
            "names no label; write key=value[,key=value...]",
        ),
        (
            "pool=edge,zone",
            NodeSelectorError::NotKeyValue("zone".into()),
            "has `zone`, which is not key=value",
        ),
        (
            "po ol=edge",
            NodeSelectorError::Key("po ol".into()),
            "has `po ol`, which is not a label key",
        ),
        (
            "pool=-edge",
            NodeSelectorError::Value("-edge".into()),
            "has `-edge`, which is not a label value",
        ),
        (
            "pool=edge,pool=core",
            NodeSelectorError::Conflict {
                key: "pool".into(),
                old: "edge".into(),
                new: "core".into(),
            },
            "asks for label `pool` to be both `edge` and `core`",
        ),
    ] {
        let got = NodeSelector::parse(text).unwrap_err();
        assert_eq!(got, error, "{text:?}");
        assert_eq!(got.to_string(), reason, "{text:?}");
    }
}
