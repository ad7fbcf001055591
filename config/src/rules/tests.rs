use super::*;

fn parse(pairs: &[(&str, &str)]) -> (Vec<Filter>, Vec<BadRule>) {
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
