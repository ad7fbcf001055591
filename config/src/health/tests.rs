//! Unit tests of the per-Service active health check annotations and their settings defaults.

use super::*;

fn of(pairs: &[(&str, &str)]) -> (HealthCheckOverrides, Vec<BadAnnotation>) {
    let a = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    service_health_check(&a)
}

#[test]
fn a_service_without_annotations_keeps_the_settings_defaults() {
    let (o, bad) = of(&[("other.example/x", "y")]);
    assert!(o.is_empty());
    assert!(bad.is_empty());
    let defaults = HealthCheck::default();
    assert_eq!(defaults.with(&o), defaults);
    assert!(!defaults.is_active());
    assert_eq!(defaults.path, "/");
    assert_eq!(defaults.interval, Duration::from_secs(5));
    assert_eq!(defaults.timeout, Duration::from_secs(2));
    assert_eq!(
        (defaults.healthy_threshold, defaults.unhealthy_threshold),
        (2, 3)
    );
    assert_eq!(defaults.success_codes.to_string(), "200-399");
}

#[test]
fn every_annotation_replaces_its_default() {
    let (o, bad) = of(&[
        (HEALTH_CHECK, "http"),
        (HEALTH_CHECK_PATH, "/healthz?full=1"),
        (HEALTH_CHECK_PORT, "8081"),
        (HEALTH_CHECK_INTERVAL, "100ms"),
        (HEALTH_CHECK_TIMEOUT, "1"),
        (HEALTH_CHECK_HEALTHY_THRESHOLD, "1"),
        (HEALTH_CHECK_UNHEALTHY_THRESHOLD, " 10 "),
        (HEALTH_CHECK_SUCCESS_CODES, "200,204-206"),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    let c = HealthCheck::default().with(&o);
    assert_eq!(
        c,
        HealthCheck {
            kind: CheckKind::Http,
            path: "/healthz?full=1".into(),
            port: Some(8081),
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 10,
            success_codes: SuccessCodes(vec![(200, 200), (204, 206)]),
        }
    );
    assert!(c.success_codes.contains(205));
    assert!(!c.success_codes.contains(201));
    // `none` on the Service turns off checks the settings turn on; traffic-port undoes a
    // default port.
    let settings = HealthCheck {
        kind: CheckKind::Tcp,
        port: Some(9000),
        ..HealthCheck::default()
    };
    let (o, bad) = of(&[(HEALTH_CHECK, "none"), (HEALTH_CHECK_PORT, "traffic-port")]);
    assert!(bad.is_empty());
    let c = settings.with(&o);
    assert!(!c.is_active());
    assert_eq!(c.port, None);
}

#[test]
fn https_asks_for_tls_probes_with_the_same_path_and_codes_as_http() {
    let (o, bad) = of(&[
        (HEALTH_CHECK, " https "),
        (HEALTH_CHECK_PATH, "/ready"),
        (HEALTH_CHECK_SUCCESS_CODES, "204"),
    ]);
    assert!(bad.is_empty(), "{bad:?}");
    let c = HealthCheck::default().with(&o);
    assert_eq!(c.kind, CheckKind::Https);
    assert_eq!(c.kind.name(), "https");
    assert!(c.is_active());
    assert_eq!(c.path, "/ready");
    assert_eq!(c.success_codes, SuccessCodes(vec![(204, 204)]));
    // A kind that is not one is reported, naming the one to use.
    let (o, bad) = of(&[(HEALTH_CHECK, "tls")]);
    assert_eq!(o.kind, None);
    assert_eq!(
        bad[0].to_string(),
        "annotation `sluice.dev/health-check`: `tls` is not http, https, tcp or none; \
         the default is used"
    );
}

#[test]
fn a_bad_value_is_reported_and_only_that_field_keeps_its_default() {
    for (key, value) in [
        (HEALTH_CHECK, "grpc"),
        (HEALTH_CHECK_PATH, "healthz"),
        (HEALTH_CHECK_PATH, "/a b"),
        (HEALTH_CHECK_PORT, "0"),
        (HEALTH_CHECK_PORT, "http"),
        (HEALTH_CHECK_PORT, "70000"),
        (HEALTH_CHECK_INTERVAL, "soon"),
        (HEALTH_CHECK_TIMEOUT, "0s"),
        (HEALTH_CHECK_HEALTHY_THRESHOLD, "0"),
        (HEALTH_CHECK_UNHEALTHY_THRESHOLD, "101"),
        (HEALTH_CHECK_SUCCESS_CODES, "2xx"),
        (HEALTH_CHECK_SUCCESS_CODES, "399-200"),
        (HEALTH_CHECK_SUCCESS_CODES, "200,"),
        (HEALTH_CHECK_SUCCESS_CODES, "99"),
    ] {
        let (o, bad) = of(&[(HEALTH_CHECK, "tcp"), (key, value)]);
        let keys: Vec<&str> = bad.iter().map(|b| b.key).collect();
        assert_eq!(keys, vec![key], "{key}: {value}");
        let c = HealthCheck::default().with(&o);
        let d = HealthCheck::default();
        if key != HEALTH_CHECK {
            assert_eq!(c.kind, CheckKind::Tcp, "{key}: {value}");
        }
        let expected = HealthCheck { kind: c.kind, ..d };
        assert_eq!(c, expected, "{key}: {value}");
    }
    let (_, bad) = of(&[(HEALTH_CHECK_INTERVAL, "5 minutes")]);
    assert_eq!(
        bad[0].to_string(),
        "annotation `sluice.dev/health-check-interval`: `5 minutes` is not a duration such \
         as 500ms, 5s or 1m; the default is used"
    );
}

#[test]
fn a_refused_health_check_annotation_says_what_the_value_should_be() {
    for (key, value, error, reason) in [
        (
            HEALTH_CHECK,
            "grpc",
            AnnotationError::NotACheckKind,
            "is not http, https, tcp or none",
        ),
        (
            HEALTH_CHECK_PATH,
            "healthz",
            AnnotationError::NotAnAbsolutePath,
            "is not an absolute path such as /healthz",
        ),
        (
            HEALTH_CHECK_PORT,
            "0",
            AnnotationError::NotAPort,
            "is not a port number (1 to 65535) or traffic-port",
        ),
        (
            HEALTH_CHECK_HEALTHY_THRESHOLD,
            "101",
            AnnotationError::NotAThreshold,
            "is not a whole number from 1 to 100",
        ),
        (
            HEALTH_CHECK_SUCCESS_CODES,
            "299-200",
            AnnotationError::NotSuccessCodes,
            "is not a list of statuses and ranges such as 200,204 or 200-399",
        ),
    ] {
        let (o, bad) = of(&[(key, value)]);
        assert!(o.is_empty(), "{key}");
        assert_eq!(bad.len(), 1, "{key}");
        assert_eq!(bad[0].error, error, "{key}");
        assert_eq!(
            bad[0].to_string(),
            format!("annotation `{key}`: `{value}` {reason}; the default is used")
        );
    }
}
