//! Unit tests of the per-Ingress annotations: parsing, defaults and the reasons bad values are
//! reported with.

use super::*;

#[test]
fn durations_take_a_unit_and_a_bare_number_means_seconds() {
    for (text, ms) in [
        ("500ms", 500),
        ("5s", 5_000),
        ("1m", 60_000),
        ("2h", 7_200_000),
        ("30", 30_000),
        (" 7s ", 7_000),
        ("1 s", 1_000),
    ] {
        assert_eq!(
            parse_duration(text),
            Ok(Duration::from_millis(ms)),
            "{text}"
        );
    }
}

#[test]
fn bad_durations_are_refused_with_a_reason() {
    for text in [
        "",
        "ms",
        "5x",
        "1.5s",
        "-1s",
        "5 sec",
        "0",
        "0ms",
        "25h",
        "99999999999999999999",
    ] {
        assert!(parse_duration(text).is_err(), "{text}");
    }
}

#[test]
fn a_bad_timeout_is_reported_and_the_others_still_apply() {
    let annotations: BTreeMap<String, String> = [
        (READ_TIMEOUT, "300ms"),
        (CONNECT_TIMEOUT, "soon"),
        ("other.example/x", "y"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (policy, bad) = upstream_policy(&annotations);
    assert_eq!(
        policy.timeouts,
        Timeouts {
            connect: None,
            read: Some(Duration::from_millis(300)),
            send: None,
        }
    );
    assert_eq!(bad.len(), 1);
    assert_eq!(
        bad[0].to_string(),
        "annotation `sluice.dev/connect-timeout`: `soon` is not a duration such as 500ms, \
         5s or 1m; the default is used"
    );
}

fn policy_of(pairs: &[(&str, &str)]) -> (UpstreamPolicy, Vec<BadAnnotation>) {
    let annotations = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    upstream_policy(&annotations)
}

#[test]
fn the_balancing_annotations_choose_the_algorithm_and_its_key() {
    let header = Balance::ConsistentHash(HashBy::Header("x-user".into()));
    for (pairs, want, bad_keys) in [
        (vec![(LOAD_BALANCE, "ewma")], Some(Balance::Ewma), vec![]),
        (
            vec![(LOAD_BALANCE, " least-request ")],
            Some(Balance::LeastRequest),
            vec![],
        ),
        (
            vec![(LOAD_BALANCE, "round-robin")],
            Some(Balance::RoundRobin),
            vec![],
        ),
        (
            vec![(LOAD_BALANCE, "consistent-hash"), (HASH_BY, "$http_X_User")],
            Some(header.clone()),
            vec![],
        ),
        (vec![(HASH_BY, "$http_x-user")], Some(header), vec![]),
        (
            vec![(HASH_BY, "$remote_addr")],
            Some(Balance::ConsistentHash(HashBy::RemoteAddr)),
            vec![],
        ),
        (
            vec![(HASH_BY, "$cookie_Session")],
            Some(Balance::ConsistentHash(HashBy::Cookie("Session".into()))),
            vec![],
        ),
        (vec![(LOAD_BALANCE, "random")], None, vec![LOAD_BALANCE]),
        (
            vec![(LOAD_BALANCE, "consistent-hash")],
            None,
            vec![LOAD_BALANCE],
        ),
        (vec![(HASH_BY, "$request_uri")], None, vec![HASH_BY]),
        (vec![(HASH_BY, "$http_")], None, vec![HASH_BY]),
        (
            vec![(LOAD_BALANCE, "consistent-hash"), (HASH_BY, "uri")],
            None,
            vec![HASH_BY],
        ),
        (
            vec![(LOAD_BALANCE, "ewma"), (HASH_BY, "$remote_addr")],
            Some(Balance::Ewma),
            vec![HASH_BY],
        ),
    ] {
        let (policy, bad) = policy_of(&pairs);
        assert_eq!(policy.balance, want, "{pairs:?}");
        let keys: Vec<&str> = bad.iter().map(|b| b.key).collect();
        assert_eq!(keys, bad_keys, "{pairs:?}");
    }
}

#[test]
fn cookie_affinity_takes_a_name_and_a_max_age_with_defaults() {
    let (p, bad) = policy_of(&[(AFFINITY, "cookie")]);
    assert_eq!(
        p.affinity,
        Some(CookieAffinity {
            name: "SLUICE_AFFINITY".into(),
            max_age: None
        })
    );
    assert!(bad.is_empty());
    let (p, bad) = policy_of(&[
        (AFFINITY, "cookie"),
        (SESSION_COOKIE_NAME, "route"),
        (SESSION_COOKIE_MAX_AGE, "3600"),
    ]);
    assert_eq!(
        p.affinity,
        Some(CookieAffinity {
            name: "route".into(),
            max_age: Some(Duration::from_secs(3600))
        })
    );
    assert!(bad.is_empty());
    let (p, bad) = policy_of(&[(AFFINITY, "cookie"), (SESSION_COOKIE_NAME, "a b;")]);
    assert_eq!(p.affinity.map(|a| a.name), Some("SLUICE_AFFINITY".into()));
    assert_eq!(bad[0].key, SESSION_COOKIE_NAME);
    let (p, bad) = policy_of(&[(AFFINITY, "ip")]);
    assert_eq!(p.affinity, None);
    assert_eq!(bad[0].key, AFFINITY);
}

#[test]
fn the_backend_protocol_annotation_ignores_case_and_reports_bad_values() {
    for (value, want) in [
        ("HTTP", Some(BackendProtocol::Http)),
        ("https", Some(BackendProtocol::Https)),
        ("h2c", Some(BackendProtocol::H2c)),
        (" GRPC ", Some(BackendProtocol::Grpc)),
        ("GrPcS", Some(BackendProtocol::Grpcs)),
    ] {
        let (p, bad) = policy_of(&[(BACKEND_PROTOCOL, value)]);
        assert_eq!(p.protocol, want, "{value}");
        assert!(bad.is_empty(), "{value}");
    }
    for value in ["", "HTTP2", "FCGI", "AJP", "grpc-web", "tcp"] {
        let (p, bad) = policy_of(&[(BACKEND_PROTOCOL, value)]);
        assert_eq!(p.protocol, None, "{value}");
        assert_eq!(bad.len(), 1, "{value}");
        assert_eq!(bad[0].key, BACKEND_PROTOCOL);
    }
}

#[test]
fn app_protocols_map_to_backend_protocols() {
    for (value, want) in [
        ("http", Some(BackendProtocol::Http)),
        ("HTTP", Some(BackendProtocol::Http)),
        ("https", Some(BackendProtocol::Https)),
        ("kubernetes.io/h2c", Some(BackendProtocol::H2c)),
        ("h2c", Some(BackendProtocol::H2c)),
        ("grpc", Some(BackendProtocol::Grpc)),
        ("grpcs", Some(BackendProtocol::Grpcs)),
        ("kubernetes.io/ws", Some(BackendProtocol::Http)),
        ("kubernetes.io/wss", Some(BackendProtocol::Https)),
        ("tcp", None),
        ("example.com/custom", None),
        ("", None),
    ] {
        assert_eq!(BackendProtocol::from_app_protocol(value), want, "{value}");
    }
}

#[test]
fn body_sizes_follow_nginx_grammar_with_1024_based_suffixes() {
    for (text, want) in [
        ("0", 0),
        ("100", 100),
        ("1k", 1024),
        ("8K", 8 * 1024),
        ("1m", 1 << 20),
        ("10M", 10 << 20),
        ("2g", 2 << 30),
        (" 1m ", 1 << 20),
    ] {
        assert_eq!(parse_size(text), Ok(want), "{text}");
    }
    for bad in [
        "",
        "m",
        "1.5m",
        "1mb",
        "-1",
        "1t",
        "99999999999999999999",
        "1 m",
    ] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
}

#[test]
fn request_annotations_set_raw_paths_body_limits_and_body_timeouts() {
    let (policy, bad) = policy_of(&[
        (FORWARD_RAW_PATH, "true"),
        (PROXY_BODY_SIZE, "8m"),
        (CLIENT_BODY_TIMEOUT, "5s"),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    assert!(policy.forward_raw_path);
    assert_eq!(policy.max_body_bytes, Some(8 << 20));
    assert_eq!(policy.client_body_timeout, Some(Duration::from_secs(5)));
    // Bad values are reported and the defaults stay.
    let (policy, bad) = policy_of(&[
        (FORWARD_RAW_PATH, "yes"),
        (PROXY_BODY_SIZE, "lots"),
        (CLIENT_BODY_TIMEOUT, "0"),
    ]);
    let keys: Vec<_> = bad.iter().map(|b| b.key).collect();
    assert_eq!(
        keys,
        [FORWARD_RAW_PATH, PROXY_BODY_SIZE, CLIENT_BODY_TIMEOUT]
    );
    assert!(!policy.forward_raw_path);
    assert_eq!(policy.max_body_bytes, None);
    assert_eq!(policy.client_body_timeout, None);
}

#[test]
fn without_annotations_every_default_applies() {
    let (policy, bad) = upstream_policy(&BTreeMap::new());
    assert_eq!(policy, UpstreamPolicy::default());
    assert!(bad.is_empty());
}

#[test]
fn a_refused_annotation_is_reported_with_its_value_and_the_reason_users_read() {
    // These lines reach Events and `sluice check` as they are: a reworded reason fails here.
    for (pairs, error, line) in [
        (
            vec![(LOAD_BALANCE, "consistent-hash")],
            AnnotationError::NeedsHashBy,
            "annotation `sluice.dev/load-balance`: `consistent-hash` needs \
             `sluice.dev/hash-by` to say what to hash; the default is used",
        ),
        (
            vec![(LOAD_BALANCE, "ewma"), (HASH_BY, "$remote_addr")],
            AnnotationError::HashByUnused { balance: "ewma" },
            "annotation `sluice.dev/hash-by`: `$remote_addr` is not used: \
             `sluice.dev/load-balance` is `ewma`; the default is used",
        ),
        (
            vec![(AFFINITY, "ip")],
            AnnotationError::NotCookieAffinity,
            "annotation `sluice.dev/affinity`: `ip` is not `cookie`, the one kind of \
             affinity; the default is used",
        ),
        (
            vec![(PROXY_BODY_SIZE, "8mb")],
            AnnotationError::NotASize,
            "annotation `sluice.dev/proxy-body-size`: `8mb` is not a size such as 512k, 8m \
             or 1g; the default is used",
        ),
        (
            vec![(READ_TIMEOUT, "0")],
            AnnotationError::ZeroDuration,
            "annotation `sluice.dev/read-timeout`: `0` is zero; a timeout must be positive; \
             the default is used",
        ),
    ] {
        let (_, bad) = policy_of(&pairs);
        assert_eq!(bad.len(), 1, "{pairs:?}");
        assert_eq!(bad[0].error, error, "{pairs:?}");
        assert_eq!(bad[0].to_string(), line);
    }
}
