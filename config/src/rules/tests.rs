use super::*;

pub(super) fn parse(pairs: &[(&str, &str)]) -> (Vec<Filter>, Vec<BadRule>) {
    let annotations: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    filters(&annotations)
}

#[test]
fn an_ingress_without_policy_annotations_has_no_filters() {
    assert_eq!(
        parse(&[("sluice.dev/read-timeout", "5s")]),
        (vec![], vec![])
    );
}

#[test]
fn valid_policy_annotations_become_filters_in_request_order() {
    let (filters, bad) = parse(&[
        (PERMANENT_REDIRECT, "https://example.com/new"),
        (PERMANENT_REDIRECT_CODE, "308"),
        (REDIRECT_KEEP_QUERY, "true"),
        (APP_ROOT, "/app"),
        (REWRITE_TARGET, "/v2/$1"),
        (X_FORWARDED_PREFIX, "/api"),
        (UPSTREAM_VHOST, "Internal.Example.com"),
        (REQUEST_HEADERS, "X-A: 1\n\nX-B:  two words "),
        (REQUEST_HEADERS_REMOVE, "Cookie, x-debug"),
        (RESPONSE_HEADERS_REMOVE, "Server"),
    ]);
    assert_eq!(bad, vec![]);
    let shown: Vec<String> = filters.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "redirect 308 https://example.com/new keep-query",
            "app-root /app",
            "rewrite /v2/$1",
            "x-forwarded-prefix /api",
            "upstream-vhost internal.example.com",
            "request headers set x-a x-b, remove cookie x-debug",
            "response headers remove server",
        ]
    );
    assert!(filters.contains(&Filter::RequestHeaders(HeaderChanges {
        set: vec![
            ("x-a".into(), "1".into()),
            ("x-b".into(), "two words".into())
        ],
        remove: vec!["cookie".into(), "x-debug".into()],
    })));
}

#[test]
fn a_temporal_redirect_is_302_and_a_permanent_one_301_by_default() {
    let (f, _) = parse(&[(TEMPORAL_REDIRECT, "/elsewhere")]);
    assert_eq!(
        f,
        [Filter::Redirect {
            code: 302,
            location: "/elsewhere".into(),
            keep_query: false
        }]
    );
    let (f, _) = parse(&[(PERMANENT_REDIRECT, "http://a.test")]);
    assert!(matches!(f[..], [Filter::Redirect { code: 301, .. }]));
}

#[test]
fn any_invalid_policy_value_leaves_only_the_invalid_filter() {
    for (key, value) in [
        (PERMANENT_REDIRECT, "ftp://x"),
        (PERMANENT_REDIRECT, "//evil.test/x"),
        (PERMANENT_REDIRECT, "https://a b"),
        (PERMANENT_REDIRECT_CODE, "300"),
        (TEMPORAL_REDIRECT, "relative"),
        (REDIRECT_KEEP_QUERY, "yes"),
        (APP_ROOT, "app"),
        (FROM_TO_WWW_REDIRECT, "on"),
        (REWRITE_TARGET, "/x/$host"),
        (REWRITE_TARGET, "/x/$0"),
        (REWRITE_PREFIX, "/v2?x"),
        (X_FORWARDED_PREFIX, "/a\r\nX-Evil: 1"),
        (UPSTREAM_VHOST, "a b"),
        (UPSTREAM_VHOST, "a.test:99999"),
        (REQUEST_HEADERS, "X-A 1"),
        (REQUEST_HEADERS, "X A: 1"),
        (REQUEST_HEADERS, "X-A: 1\u{7}"),
        (REQUEST_HEADERS, "X-A: 1\nx-a: 2"),
        (REQUEST_HEADERS, ""),
        (RESPONSE_HEADERS_REMOVE, "a,,b"),
    ] {
        let (f, bad) = parse(&[(key, value)]);
        assert_eq!(f, [Filter::Invalid], "{key}: {value:?}");
        assert_eq!(bad.len(), 1, "{key}: {value:?}: {bad:?}");
        assert_eq!(bad[0].key, key);
        assert!(bad[0]
            .to_string()
            .ends_with("the Ingress's routes answer 503"));
    }
}

#[test]
fn protected_headers_cannot_be_set_or_removed() {
    for name in [
        "Connection",
        "Transfer-Encoding",
        "Host",
        "X-Forwarded-For",
        "x-forwarded-prefix",
        "X-Real-IP",
        "X-Request-Id",
        "X-Client-Cert-Subject",
        "Content-Length",
        "Upgrade",
    ] {
        for (key, value) in [
            (REQUEST_HEADERS, format!("{name}: x")),
            (REQUEST_HEADERS_REMOVE, name.to_string()),
            (RESPONSE_HEADERS, format!("{name}: x")),
            (RESPONSE_HEADERS_REMOVE, name.to_string()),
        ] {
            let (f, bad) = parse(&[(key, &value)]);
            assert_eq!(f, [Filter::Invalid], "{key}: {value}");
            assert!(
                matches!(&bad[0].error, RuleError::ProtectedHeader { .. }),
                "{key}: {value}: {bad:?}"
            );
        }
    }
}

#[test]
fn conflicting_or_unused_companions_are_invalid() {
    for pairs in [
        &[(REWRITE_TARGET, "/a"), (REWRITE_PREFIX, "/b")][..],
        &[(PERMANENT_REDIRECT, "/a"), (TEMPORAL_REDIRECT, "/b")],
        &[(PERMANENT_REDIRECT_CODE, "308")],
        &[(TEMPORAL_REDIRECT, "/a"), (PERMANENT_REDIRECT_CODE, "308")],
        &[(REDIRECT_KEEP_QUERY, "true")],
    ] {
        let (f, bad) = parse(pairs);
        assert_eq!(f, [Filter::Invalid], "{pairs:?}");
        assert!(!bad.is_empty());
    }
}

#[test]
fn www_counterparts_add_or_remove_one_www_label() {
    assert_eq!(
        www_counterpart("example.com").as_deref(),
        Some("www.example.com")
    );
    assert_eq!(
        www_counterpart("www.example.com").as_deref(),
        Some("example.com")
    );
    assert_eq!(www_counterpart("www.com"), None);
}

mod regex_paths {
    use crate::build::build_with;
    use crate::fixtures::{backend, class_policy, ingress, service};
    use crate::model::Inputs;
    use crate::ownership::CrossNamespacePaths;
    use crate::BuildDefaults;

    fn snapshot(ingresses: Vec<crate::model::IngressInput>) -> crate::Snapshot {
        let inputs = Inputs {
            ingresses,
            services: ["a", "b"]
                .iter()
                .flat_map(|ns| {
                    ["web", "admin", "api"].map(|s| service(ns, s).port("http", 80).build())
                })
                .collect(),
            ..Inputs::default()
        };
        let defaults = BuildDefaults {
            cross_namespace_paths: CrossNamespacePaths::Allow,
            ..BuildDefaults::default()
        };
        build_with(&inputs, &class_policy(), &defaults)
    }

    fn service_of(s: &crate::Snapshot, path: &str) -> Option<String> {
        let e = s.routes.find("h.test", path)?;
        match s.target(e)? {
            crate::Target::Pool(k) => Some(k.service.clone()),
            crate::Target::Unresolved { .. } => None,
        }
    }

    #[test]
    fn exact_beats_regex_which_beats_prefix_across_ingresses() {
        let s = snapshot(vec![
            ingress("a", "plain")
                .created(1)
                .host("h.test")
                .path("/", "Prefix", backend("web", 80))
                .path("/api/v1/health", "Exact", backend("admin", 80))
                .path("/api/v1/users", "Prefix", backend("web", 80))
                .build(),
            ingress("a", "regex")
                .created(2)
                .annotation("sluice.dev/use-regex", "true")
                .host("h.test")
                .path(
                    "/api/v[0-9]+/",
                    "ImplementationSpecific",
                    backend("api", 80),
                )
                .path(
                    "/api/v1/(admin|root)$",
                    "ImplementationSpecific",
                    backend("admin", 80),
                )
                .build(),
        ]);
        for (path, want) in [
            ("/api/v1/health", "admin"),
            ("/api/v1/users", "api"),
            ("/api/v2/x", "api"),
            ("/api/v1/admin", "admin"),
            ("/api/v1/admin/x", "api"),
            ("/other", "web"),
        ] {
            assert_eq!(service_of(&s, path).as_deref(), Some(want), "{path}");
        }
        assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    }

    #[test]
    fn a_foreign_namespace_cannot_add_regex_paths_even_where_plain_paths_are_allowed() {
        let s = snapshot(vec![
            ingress("a", "owner")
                .created(1)
                .host("h.test")
                .path("/admin", "Prefix", backend("admin", 80))
                .build(),
            ingress("b", "foreign")
                .created(2)
                .annotation("sluice.dev/use-regex", "true")
                .host("h.test")
                .path("/.*", "ImplementationSpecific", backend("web", 80))
                .path("/plain", "Prefix", backend("web", 80))
                .build(),
        ]);
        assert_eq!(service_of(&s, "/admin/x").as_deref(), Some("admin"));
        assert_eq!(service_of(&s, "/elsewhere"), None);
        // Its plain path is served: `cross_namespace_paths` allows those.
        assert_eq!(service_of(&s, "/plain").as_deref(), Some("web"));
        let reasons: Vec<&str> = s.skipped.iter().map(|f| f.reason.as_str()).collect();
        assert_eq!(reasons, ["HostNotOwned"]);
    }

    #[test]
    fn an_invalid_regex_is_reported_and_its_path_left_out() {
        let s = snapshot(vec![ingress("a", "bad")
            .annotation("sluice.dev/use-regex", "true")
            .host("h.test")
            .path("/x(", "ImplementationSpecific", backend("web", 80))
            .path("/ok/.*", "ImplementationSpecific", backend("api", 80))
            .build()]);
        assert_eq!(service_of(&s, "/ok/1").as_deref(), Some("api"));
        assert_eq!(service_of(&s, "/x("), None);
        assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
        assert_eq!(s.skipped[0].reason.as_str(), "InvalidPath");
        assert!(s.skipped[0].message.contains("regex path `/x(`"));
    }
}

#[test]
fn a_mirror_target_names_a_service_port_by_number_or_name() {
    for (value, port) in [
        ("shadow:8080", PortRef::Number(8080)),
        ("shadow:http", PortRef::Name("http".into())),
    ] {
        let (f, bad) = parse(&[(MIRROR_TARGET, value)]);
        assert_eq!(bad, vec![]);
        assert_eq!(
            f,
            [Filter::Mirror {
                service: "shadow".into(),
                port,
                pool: None
            }]
        );
    }
    for value in ["shadow", "shadow:0", "Shadow:80", "http://shadow/", ":80"] {
        assert_eq!(
            parse(&[(MIRROR_TARGET, value)]).0,
            [Filter::Invalid],
            "{value}"
        );
    }
}

#[test]
fn a_mirror_resolves_to_its_pool_and_a_missing_service_is_reported_without_failing_closed() {
    use crate::build::build;
    use crate::fixtures::{backend, class_policy, ingress, service, slice};
    use crate::model::Inputs;
    let inputs = Inputs {
        ingresses: vec![
            ingress("a", "mirrored")
                .annotation(MIRROR_TARGET, "shadow:80")
                .host("m.test")
                .path("/", "Prefix", backend("web", 80))
                .build(),
            ingress("a", "lost")
                .annotation(MIRROR_TARGET, "ghost:80")
                .host("l.test")
                .path("/", "Prefix", backend("web", 80))
                .build(),
        ],
        services: vec![
            service("a", "web").port("http", 80).build(),
            service("a", "shadow").port("http", 80).build(),
        ],
        slices: vec![slice("a", "shadow")
            .port("http", 9000)
            .endpoint("10.0.0.9", None)
            .build()],
        ..Inputs::default()
    };
    let s = build(&inputs, &class_policy());
    let mirrored = s
        .ingresses
        .iter()
        .find(|i| i.object.name == "mirrored")
        .unwrap();
    let Filter::Mirror {
        pool: Some(key), ..
    } = &mirrored.filters[0]
    else {
        panic!("{:?}", mirrored.filters);
    };
    assert_eq!(s.endpoints[key], ["10.0.0.9:9000".parse().unwrap()]);
    let lost = s
        .ingresses
        .iter()
        .find(|i| i.object.name == "lost")
        .unwrap();
    assert!(matches!(
        &lost.filters[..],
        [Filter::Mirror { pool: None, .. }]
    ));
    let found: Vec<(&str, &str)> = s
        .skipped
        .iter()
        .map(|f| (f.ingress.name.as_str(), f.reason.as_str()))
        .collect();
    assert_eq!(found, [("lost", "MissingService")]);
    // The Ingress keeps serving: a mirror never fails closed.
    assert!(s.routes.find("l.test", "/").is_some());
}

#[test]
fn source_ranges_become_one_filter_ahead_of_the_others_and_bad_ones_fail_closed() {
    let (filters, bad) = parse(&[
        (APP_ROOT, "/app"),
        (ALLOWLIST_SOURCE_RANGE, "10.0.0.0/8, 192.0.2.7,, fd00::/8"),
        (DENYLIST_SOURCE_RANGE, "10.1.0.0/16"),
    ]);
    assert_eq!(bad, vec![]);
    let shown: Vec<String> = filters.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "deny 10.1.0.0/16, allow only 10.0.0.0/8 192.0.2.7/32 fd00::/8",
            "app-root /app"
        ]
    );
    let (filters, _) = parse(&[(DENYLIST_SOURCE_RANGE, "::1")]);
    assert_eq!(filters[0].to_string(), "deny ::1/128");
    for value in ["10.0.0.1/8", "10.0.0.0/8 192.0.2.7", " , ", "example.com"] {
        let (filters, bad) = parse(&[(ALLOWLIST_SOURCE_RANGE, value)]);
        assert_eq!(filters, vec![Filter::Invalid], "{value}");
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0].key, ALLOWLIST_SOURCE_RANGE);
        assert!(
            bad[0].to_string().contains("list of address ranges"),
            "{}",
            bad[0]
        );
    }
}
