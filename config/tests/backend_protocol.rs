//! Which protocol a route speaks to its endpoints: `sluice.dev/backend-protocol`, else the
//! Service port's `appProtocol`, else HTTP/1.1.

#![allow(clippy::unwrap_used)]
use sluice_config::annotations::{BackendProtocol, BACKEND_PROTOCOL};
use sluice_config::build::build;
use sluice_config::fixtures::{backend, class_policy, ingress, named_backend, service};
use sluice_config::model::*;
use sluice_config::Reason;

/// One Ingress (optionally annotated) with a rule and a default backend, both to a Service
/// port (optionally with an appProtocol). Returns the protocol of the rule and of the default
/// backend, and the reasons of everything skipped.
fn resolve(
    annotation: Option<&str>,
    app_protocol: Option<&str>,
) -> (
    Option<BackendProtocol>,
    Option<BackendProtocol>,
    Vec<Reason>,
) {
    let backend = named_backend("app", "web");
    let ingress = ingress("ns", "ing")
        .default_backend(backend.clone())
        .host("a.test")
        .path("/api", "Prefix", backend);
    let ingress = match annotation {
        Some(v) => ingress.annotation(BACKEND_PROTOCOL, v),
        None => ingress,
    };
    let service = service("ns", "app")
        .port("web", 8443)
        .app_protocol(app_protocol)
        .build();
    let snap = build(
        &Inputs {
            ingresses: vec![ingress.build()],
            services: vec![service],
            ..Default::default()
        },
        &class_policy(),
    );
    let rule = snap.routes.find("a.test", "/api").unwrap();
    let default = snap.routes.find("other.test", "/").unwrap();
    (
        snap.policy(rule).unwrap().protocol,
        snap.policy(default).unwrap().protocol,
        snap.skipped.iter().map(|s| s.reason.clone()).collect(),
    )
}

#[test]
fn the_annotation_beats_app_protocol_which_beats_plain_http() {
    use BackendProtocol::*;
    use Reason::*;
    for (annotation, app, want, skipped) in [
        (None, None, None, vec![]),
        (Some("HTTPS"), None, Some(Https), vec![]),
        (Some("grpc"), Some("https"), Some(Grpc), vec![]),
        (Some("H2C"), Some("nonsense"), Some(H2c), vec![]),
        (None, Some("https"), Some(Https), vec![]),
        (None, Some("kubernetes.io/h2c"), Some(H2c), vec![]),
        (None, Some("h2c"), Some(H2c), vec![]),
        (None, Some("grpc"), Some(Grpc), vec![]),
        (None, Some("grpcs"), Some(Grpcs), vec![]),
        (None, Some("kubernetes.io/ws"), Some(Http), vec![]),
        (None, Some("kubernetes.io/wss"), Some(Https), vec![]),
        (None, Some("http"), Some(Http), vec![]),
        // Unknown appProtocols are reported for each backend that uses the port.
        (
            None,
            Some("example.com/thrift"),
            None,
            vec![UnknownAppProtocol, UnknownAppProtocol],
        ),
        // A bad annotation is reported once and the appProtocol decides.
        (
            Some("HTTP3"),
            Some("grpc"),
            Some(Grpc),
            vec![InvalidAnnotation],
        ),
        (Some("HTTP3"), None, None, vec![InvalidAnnotation]),
    ] {
        let (rule, default, reasons) = resolve(annotation, app);
        assert_eq!(rule, want, "{annotation:?} {app:?}");
        assert_eq!(default, want, "the default backend: {annotation:?} {app:?}");
        assert_eq!(reasons, skipped, "{annotation:?} {app:?}");
    }
}

#[test]
fn two_ingresses_of_different_protocols_share_one_pool_with_two_targets() {
    let make = |name: &str, host: &str, protocol: &str| {
        ingress("ns", name)
            .annotation(BACKEND_PROTOCOL, protocol)
            .host(host)
            .path("/", "Prefix", backend("app", 80))
            .build()
    };
    let snap = build(
        &Inputs {
            ingresses: vec![make("h2", "a.test", "H2C"), make("h1", "b.test", "HTTP")],
            services: vec![service("ns", "app").port("", 80).build()],
            ..Default::default()
        },
        &class_policy(),
    );
    let a = snap.routes.find("a.test", "/").unwrap();
    let b = snap.routes.find("b.test", "/").unwrap();
    assert_ne!(a.target, b.target);
    assert_eq!(snap.target(a), snap.target(b));
    assert_eq!(snap.policy(a).unwrap().protocol, Some(BackendProtocol::H2c));
    assert_eq!(
        snap.policy(b).unwrap().protocol,
        Some(BackendProtocol::Http)
    );
}
