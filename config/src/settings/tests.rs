//! The settings file, from text to [`Settings`]: defaults, values, and errors naming the file,
//! line and key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Settings, ConfigError> {
    Settings::from_toml(text, Path::new("/etc/sluice/sluice.toml"))
}

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let s = parse("").unwrap();
    assert_eq!(s.http_listen, vec!["0.0.0.0:8080".parse().unwrap()]);
    assert_eq!(s.admin_listen, "0.0.0.0:10254".parse().unwrap());
    assert_eq!(s.connect_timeout, Duration::from_secs(2));
    assert_eq!(s.connect_retries, 2);
    assert_eq!(s.load_balance, Balance::RoundRobin);
    assert_eq!(s.ejection.consecutive_failures, 5);
    assert_eq!(s.ejection.base, Duration::from_secs(10));
    assert_eq!(s.ejection.max, Duration::from_secs(300));
    assert_eq!(s.controller_name, "sluice.dev/ingress-controller");
    assert_eq!(s.ingress_class, "sluice");
    assert!(!s.watch_ingress_without_class);
    assert_eq!(s.cross_namespace_paths, DEFAULT_CROSS_NAMESPACE_PATHS);
    assert_eq!(
        s.source,
        SourceSettings::Files {
            directory: PathBuf::from("/etc/sluice/manifests"),
            poll_interval: Duration::from_millis(250)
        }
    );
    assert_eq!(s, Settings::defaults().clone_with_source(s.source.clone()));
}

impl Settings {
    fn clone_with_source(mut self, source: SourceSettings) -> Settings {
        self.source = source;
        self
    }
}

#[test]
fn values_in_the_file_replace_defaults() {
    let s = parse(
        "[server]\nhttp_listen = [\"127.0.0.1:80\", \"[::1]:80\"]\nworker_threads = 3\n\
         [upstream]\nread_timeout_ms = 1500\nload_balance = \"ewma\"\n[source]\nkind = \"kubernetes\"\n\
         [source.kubernetes]\nnamespace = \"web\"\n[log]\nformat = \"json\"\n",
    )
    .unwrap();
    assert_eq!(s.http_listen.len(), 2);
    assert_eq!(s.worker_threads_or(8), 3);
    assert_eq!(s.read_timeout, Duration::from_millis(1500));
    assert_eq!(s.load_balance, Balance::Ewma);
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(
        s.source,
        SourceSettings::Kubernetes(KubernetesSettings {
            namespaces: vec!["web".into()],
            ..Default::default()
        })
    );
}

#[test]
fn the_kubernetes_source_watches_a_list_of_namespaces_and_still_reads_the_single_one() {
    let namespaces = |text: &str| match parse(text).map(|s| s.source) {
        Ok(SourceSettings::Kubernetes(k)) => Ok(k.namespaces),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e.to_string()),
    };
    let base = "[source]\nkind = \"kubernetes\"\n[source.kubernetes]\n";
    assert_eq!(namespaces(base), Ok(vec![]));
    assert_eq!(
        namespaces(&format!(
            "{base}namespaces = [\"team-b\", \"team-a\", \"team-b\"]\n"
        )),
        Ok(vec!["team-a".to_string(), "team-b".to_string()])
    );
    assert_eq!(
        namespaces(&format!("{base}namespace = \"web\"\n")),
        Ok(vec!["web".to_string()])
    );
    let both = namespaces(&format!("{base}namespace = \"a\"\nnamespaces = [\"b\"]\n"));
    assert!(
        both.as_ref()
            .unwrap_err()
            .contains("source.kubernetes.namespace"),
        "{both:?}"
    );
    for bad in ["", "Team", "a_b", "-a"] {
        let err = namespaces(&format!("{base}namespaces = [\"{bad}\"]\n")).unwrap_err();
        assert!(err.contains("source.kubernetes.namespaces"), "{bad}: {err}");
    }
}

#[test]
fn the_target_type_defaults_to_ip_and_instance_can_be_chosen() {
    assert_eq!(parse("").unwrap().target_type, TargetType::Ip);
    let s = parse("[upstream]\ntarget_type = \"instance\"\n").unwrap();
    assert_eq!(s.target_type.name(), "instance");
    let err = parse("[upstream]\ntarget_type = \"pod\"\n").unwrap_err();
    assert!(err.to_string().contains("upstream.target_type"), "{err}");
}

#[test]
fn request_limits_default_as_nginx_and_trusted_proxies_are_validated_ranges() {
    let s = parse("").unwrap();
    assert_eq!(s.max_request_body_bytes, 1024 * 1024);
    assert_eq!(s.client_body_timeout, Duration::from_secs(60));
    assert!(!s.underscores_in_headers);
    assert!(s.trusted_proxies.is_empty());
    let s = parse(
        "[server]\nmax_request_body_bytes = 0\nclient_body_timeout_secs = 5\n\
         underscores_in_headers = true\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\"]\n",
    )
    .unwrap();
    assert_eq!(s.max_request_body_bytes, 0);
    assert_eq!(s.client_body_timeout, Duration::from_secs(5));
    assert!(s.underscores_in_headers);
    assert!(s.trusted_proxies[0].contains("10.1.2.3".parse().unwrap()));
    assert!(!s.trusted_proxies[0].contains("11.1.2.3".parse().unwrap()));
    assert!(s.trusted_proxies[1].contains("fd00::1".parse().unwrap()));
    let err = parse("[server]\ntrusted_proxies = [\"10.0.0.1/8\"]\n").unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                key: "server.trusted_proxies",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("10.0.0.1/8"), "{err}");
    let err = parse("[server]\nclient_body_timeout_secs = 0\n").unwrap_err();
    assert!(
        err.to_string().contains("server.client_body_timeout_secs"),
        "{err}"
    );
}

#[test]
fn proxy_protocol_is_off_by_default_and_needs_the_peers_it_believes() {
    assert_eq!(parse("").unwrap().proxy_protocol, None);
    let s = parse("[server]\nproxy_protocol = true\nproxy_protocol_trusted = [\"10.0.0.0/8\"]\n")
        .unwrap();
    let trusted = s.proxy_protocol.unwrap();
    assert!(trusted[0].contains("10.9.8.7".parse().unwrap()));
    for bad in [
        "[server]\nproxy_protocol = true\n",
        "[server]\nproxy_protocol = true\nproxy_protocol_trusted = [\"lb\"]\n",
    ] {
        let err = parse(bad).unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::Invalid {
                    key: "server.proxy_protocol_trusted",
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn an_unknown_key_is_named_with_its_line() {
    let err = parse("[server]\nworker_threads = 2\nworker_thread = 3\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("sluice.toml:3:"), "{text}");
    assert!(text.contains("`server.worker_thread`"), "{text}");
    assert!(text.contains("unknown field"), "{text}");
}

#[test]
fn a_value_of_the_wrong_type_is_named_with_its_key() {
    let err = parse("[upstream]\n\nconnect_timeout_ms = \"2s\"\n").unwrap_err();
    let text = err.to_string();
    assert!(text.contains(":3:"), "{text}");
    assert!(text.contains("`upstream.connect_timeout_ms`"), "{text}");
}

#[test]
fn an_unknown_table_is_refused() {
    let err = parse("[servr]\nx = 1\n").unwrap_err();
    assert!(err.to_string().contains("servr"), "{err}");
}

#[test]
fn out_of_range_values_are_refused_with_their_key() {
    for (text, key) in [
        (
            "[server]\nhttp_listen = [\"localhost\"]",
            "server.http_listen",
        ),
        ("[server]\nhttp_listen = []", "server.http_listen"),
        ("[server]\nadmin_listen = \"nope\"", "server.admin_listen"),
        (
            "[upstream]\nconnect_timeout_ms = 0",
            "upstream.connect_timeout_ms",
        ),
        (
            "[upstream]\nconnect_retries = 99",
            "upstream.connect_retries",
        ),
        (
            "[upstream]\neject_base_ms = 5000\neject_max_ms = 1000",
            "upstream.eject_max_ms",
        ),
        (
            "[status]\npublish_service = \"nope\"",
            "status.publish_service",
        ),
        (
            "[status]\nevents_per_second = 0",
            "status.events_per_second",
        ),
        (
            "[status]\nevents_max_pending = 0",
            "status.events_max_pending",
        ),
        (
            "[leader_election]\nrenew_period_secs = 30",
            "leader_election.renew_period_secs",
        ),
        (
            "[leader_election]\nlease_duration_secs = 0",
            "leader_election.lease_duration_secs",
        ),
        (
            "[server]\nmax_request_header_bytes = 10",
            "server.max_request_header_bytes",
        ),
    ] {
        match parse(text) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
        }
    }
}

#[test]
fn host_owners_and_cross_namespace_paths_are_read_and_bad_entries_name_their_key() {
    let s = parse("").unwrap();
    assert!(s.host_owners.is_empty());
    assert_eq!(s.cross_namespace_paths, CrossNamespacePaths::Allow);
    let s = parse(
        "[controller]\ncross_namespace_paths = \"deny\"\n\
         [controller.host_owners]\n\"*.team-a.example.com\" = \"team-a\"\n\"pay.example.com\" = \"payments\"\n",
    )
    .unwrap();
    assert_eq!(s.cross_namespace_paths, CrossNamespacePaths::Deny);
    let key = crate::routes::parse_rule_host(Some("app.team-a.example.com")).unwrap();
    assert_eq!(s.host_owners.owner_of(&key).map(|o| o.0), Some("team-a"));
    for (text, names) in [
        (
            "[controller.host_owners]\n\"Bad_Host\" = \"a\"\n",
            "`Bad_Host`",
        ),
        (
            "[controller.host_owners]\n\"a.test\" = \"Team A\"\n",
            "`Team A`",
        ),
    ] {
        match parse(text) {
            Err(
                e @ ConfigError::Invalid {
                    key: "controller.host_owners",
                    ..
                },
            ) => {
                assert!(e.to_string().contains(names), "{e}")
            }
            other => panic!("{text}: expected an Invalid error, got {other:?}"),
        }
    }
    let err = parse("[controller]\ncross_namespace_paths = \"maybe\"\n").unwrap_err();
    assert!(
        matches!(&err, ConfigError::Parse { key, line: 2, .. } if key == "controller.cross_namespace_paths"),
        "{err:?}"
    );
    let err = parse("[controller.host_owners]\n\"a.test\" = 3\n").unwrap_err();
    assert!(matches!(&err, ConfigError::Parse { .. }), "{err:?}");
}

#[test]
fn tls_is_off_by_default_with_redirects_on_and_a_generated_certificate() {
    let s = parse("").unwrap();
    assert_eq!(
        s.tls,
        TlsSettings {
            https_listen: vec![],
            default_certificate: DefaultCertificate::SelfSigned,
            ssl_redirect: true,
            redirect_port: 443,
        }
    );
}

#[test]
fn tls_settings_are_read_with_paths_relative_to_the_file() {
    let s = parse(
        "[tls]\nhttps_listen = [\"127.0.0.1:8443\"]\ndefault_certificate_file = \"certs/tls.crt\"\n\
         default_key_file = \"/keys/tls.key\"\nssl_redirect = false\nredirect_port = 0\n",
    )
    .unwrap();
    assert_eq!(s.tls.https_listen, vec!["127.0.0.1:8443".parse().unwrap()]);
    assert_eq!(
        s.tls.default_certificate,
        DefaultCertificate::Files {
            certificate: PathBuf::from("/etc/sluice/certs/tls.crt"),
            key: PathBuf::from("/keys/tls.key"),
        }
    );
    assert!(!s.tls.ssl_redirect);
    assert_eq!(s.tls.redirect_port, 0);
    let s = parse("[tls]\ndefault_secret = \"edge/wildcard\"\n").unwrap();
    assert_eq!(
        s.tls.default_certificate,
        DefaultCertificate::Secret(crate::model::ObjectRef::new("edge", "wildcard"))
    );
}

#[test]
fn inconsistent_tls_settings_are_refused_with_their_key() {
    for (text, key) in [
        ("[tls]\nhttps_listen = [\"443\"]", "tls.https_listen"),
        (
            "[tls]\ndefault_certificate_file = \"a.crt\"",
            "tls.default_key_file",
        ),
        (
            "[tls]\ndefault_key_file = \"a.key\"",
            "tls.default_certificate_file",
        ),
        ("[tls]\ndefault_secret = \"nope\"", "tls.default_secret"),
        (
            "[tls]\ndefault_secret = \"a/b\"\ndefault_certificate_file = \"a.crt\"\ndefault_key_file = \"a.key\"",
            "tls.default_secret",
        ),
    ] {
        match parse(text) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
        }
    }
    let err = parse("[tls]\nhttps_port = 1\n").unwrap_err();
    assert!(err.to_string().contains("`tls.https_port`"), "{err}");
}

#[test]
fn health_check_defaults_are_off_and_the_file_can_turn_them_on() {
    use crate::health::{CheckKind, SuccessCodes};
    let s = parse("").unwrap();
    assert_eq!(s.health_check, HealthCheck::default());
    assert_eq!(s.health_check.kind, CheckKind::None);
    let s = parse(
        "[upstream.health_check]\nkind = \"http\"\npath = \"/ready\"\nport = 8081\n\
         interval_ms = 1000\ntimeout_ms = 500\nhealthy_threshold = 1\nunhealthy_threshold = 4\n\
         success_codes = \"200-299\"\n",
    )
    .unwrap();
    assert_eq!(
        s.health_check,
        HealthCheck {
            kind: CheckKind::Http,
            path: "/ready".into(),
            port: Some(8081),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            healthy_threshold: 1,
            unhealthy_threshold: 4,
            success_codes: SuccessCodes(vec![(200, 299)]),
        }
    );
    for (text, key) in [
        ("path = \"ready\"", "upstream.health_check.path"),
        ("interval_ms = 0", "upstream.health_check.interval_ms"),
        ("timeout_ms = 0", "upstream.health_check.timeout_ms"),
        (
            "healthy_threshold = 0",
            "upstream.health_check.healthy_threshold",
        ),
        (
            "unhealthy_threshold = 1000",
            "upstream.health_check.unhealthy_threshold",
        ),
        (
            "success_codes = \"ok\"",
            "upstream.health_check.success_codes",
        ),
    ] {
        match parse(&format!("[upstream.health_check]\n{text}\n")) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
        }
    }
    let s = parse("[upstream.health_check]\nkind = \"https\"\n").unwrap();
    assert_eq!(s.health_check.kind, CheckKind::Https);
    let err = parse("[upstream.health_check]\ninterval = 5\n").unwrap_err();
    assert!(
        err.to_string().contains("`upstream.health_check.interval`"),
        "{err}"
    );
}

#[test]
fn client_connection_limits_have_nginx_like_defaults_and_can_be_set() {
    let s = parse("").unwrap();
    assert_eq!(s.client_header_timeout, Duration::from_secs(60));
    assert_eq!(s.client_send_timeout, Duration::from_secs(60));
    assert_eq!(s.keepalive_timeout, Duration::from_secs(75));
    assert_eq!(s.keepalive_requests, 1000);
    assert_eq!(s.max_connections, None);
    assert_eq!(s.max_connections_per_client, None);
    assert_eq!(s.drain, Duration::from_secs(5));
    let s = parse(
        "[server]\nclient_header_timeout_secs = 10\nclient_send_timeout_secs = 20\n\
         keepalive_timeout_secs = 5\nkeepalive_requests = 3\nmax_connections = 900\n\
         max_connections_per_client = 40\ndrain_secs = 0\n",
    )
    .unwrap();
    assert_eq!(s.client_header_timeout, Duration::from_secs(10));
    assert_eq!(s.client_send_timeout, Duration::from_secs(20));
    assert_eq!(s.keepalive_timeout, Duration::from_secs(5));
    assert_eq!(s.keepalive_requests, 3);
    assert_eq!(s.max_connections_or(1024), 900);
    assert_eq!(s.max_connections_per_client, Some(40));
    assert_eq!(s.drain, Duration::ZERO);
    for (text, key) in [
        (
            "client_header_timeout_secs = 0",
            "server.client_header_timeout_secs",
        ),
        (
            "client_send_timeout_secs = 0",
            "server.client_send_timeout_secs",
        ),
        (
            "keepalive_timeout_secs = 0",
            "server.keepalive_timeout_secs",
        ),
        ("keepalive_requests = 0", "server.keepalive_requests"),
        (
            "shutdown_grace_period_secs = 3\ndrain_secs = 4",
            "server.drain_secs",
        ),
    ] {
        match parse(&format!("[server]\n{text}\n")) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{text}"),
            other => panic!("{text}: expected an Invalid error for {key}, got {other:?}"),
        }
    }
}

#[test]
fn the_default_connection_cap_leaves_room_below_the_file_limit() {
    let s = parse("").unwrap();
    // Half of what is left after the reserve: each client connection may hold an upstream one.
    assert_eq!(s.max_connections_or(1024), 448);
    assert_eq!(s.max_connections_or(512), 192);
    // Bounded on both sides.
    assert_eq!(s.max_connections_or(1 << 20), 50_000);
    assert_eq!(s.max_connections_or(100), 16);
}

#[test]
fn a_value_outside_its_list_is_refused_with_its_line_key_and_the_names_it_may_take() {
    // Enumerated values are serde enums: refused while parsing, so the error also has the line.
    for (text, key, message) in [
        (
            "[source]\nkind = \"consul\"",
            "source.kind",
            "`consul` is not a source; use \"files\" or \"kubernetes\"",
        ),
        (
            "[upstream]\nload_balance = \"random\"",
            "upstream.load_balance",
            "`random` is not an algorithm; use \"round-robin\", \"least-request\" or \"ewma\"",
        ),
        (
            "[upstream]\nload_balance = \"consistent-hash\"",
            "upstream.load_balance",
            "consistent-hash needs a key; set it per Ingress with sluice.dev/hash-by",
        ),
        (
            "[upstream]\ntarget_type = \"node\"",
            "upstream.target_type",
            "`node` is not a target type; use \"ip\" or \"instance\"",
        ),
        (
            "[upstream.health_check]\nkind = \"grpc\"",
            "upstream.health_check.kind",
            "`grpc` is not a kind; use \"none\", \"http\", \"https\" or \"tcp\"",
        ),
        (
            "[log]\nformat = \"xml\"",
            "log.format",
            "`xml` is not a format; use \"text\" or \"json\"",
        ),
        (
            "[access_log]\nformat = \"apache\"",
            "access_log.format",
            "`apache` is not a format; use \"json\" or \"combined\"",
        ),
    ] {
        match parse(text) {
            Err(ConfigError::Parse {
                key: k,
                line: 2,
                message: m,
                ..
            }) => {
                assert_eq!(k, key, "{text}");
                assert_eq!(m, message, "{text}");
            }
            other => panic!("{text}: expected a Parse error on line 2 for {key}, got {other:?}"),
        }
    }
    let err = parse("[log]\n\nformat = \"xml\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/etc/sluice/sluice.toml:3:10: key `log.format`: `xml` is not a format"),
        "{err}"
    );
}

#[test]
fn every_name_of_an_enumerated_value_is_accepted() {
    use crate::health::CheckKind;
    let s = parse(
        "[source]\nkind = \"files\"\n[log]\nformat = \"text\"\n[access_log]\nformat = \"combined\"\n\
         [upstream]\nload_balance = \"least-request\"\ntarget_type = \"ip\"\n\
         [upstream.health_check]\nkind = \"tcp\"\n",
    )
    .unwrap();
    assert!(matches!(s.source, SourceSettings::Files { .. }));
    assert_eq!(s.log_format, LogFormat::Text);
    assert_eq!(s.access_log, Some(AccessLogFormat::Combined));
    assert_eq!(s.load_balance, Balance::LeastRequest);
    assert_eq!(s.target_type, TargetType::Ip);
    assert_eq!(s.health_check.kind, CheckKind::Tcp);
    let s =
        parse("[access_log]\nenabled = false\n[upstream.health_check]\nkind = \"none\"\n").unwrap();
    assert_eq!(s.access_log, None);
    assert_eq!(s.health_check.kind, CheckKind::None);
}

#[test]
fn the_global_denylist_is_a_list_of_validated_ranges_named_by_its_key() {
    assert!(parse("").unwrap().denylist_source_range.is_empty());
    let s = parse("[access]\ndenylist_source_range = [\"192.0.2.0/24\", \"::1\"]\n").unwrap();
    assert!(s.denylist_source_range[0].contains("192.0.2.9".parse().unwrap()));
    assert!(s.denylist_source_range[1].contains("::1".parse().unwrap()));
    let err = parse("[access]\ndenylist_source_range = [\"192.0.2.1/24\"]\n").unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                key: "access.denylist_source_range",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("192.0.2.1/24"), "{err}");
    let err = parse("[access]\nallowlist = []\n").unwrap_err();
    assert!(err.to_string().contains("allowlist"), "{err}");
}

#[test]
fn the_limit_status_is_429_by_default_503_on_request_and_nothing_else() {
    assert_eq!(parse("").unwrap().limit_status, 429);
    assert_eq!(
        parse("[server]\nlimit_status = 503\n")
            .unwrap()
            .limit_status,
        503
    );
    let err = parse("[server]\nlimit_status = 200\n").unwrap_err();
    assert!(
        matches!(
            &err,
            ConfigError::Invalid {
                key: "server.limit_status",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("429 or 503"), "{err}");
}
