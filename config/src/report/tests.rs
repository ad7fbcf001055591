//! Unit tests of the text report of a snapshot.

use super::*;
use crate::build::build;
use crate::fixtures::{backend, class_policy, ingress, path, secret, service, slice};
use crate::model::*;

#[test]
fn the_report_lists_routes_defaults_and_skips_per_ingress() {
    let svc = service("web", "app").port("http", 80).build();
    let slice = slice("web", "app")
        .name("app-1")
        .port("http", 8080)
        .endpoint("10.0.0.1", None)
        .build();
    let ingress = ingress("web", "site")
        .default_backend(backend("app", 80))
        .host("*.site.test")
        .paths([
            path("/", "Prefix", backend("app", 80)),
            path("/gone", "Exact", backend("missing", 80)),
            path("relative", "Prefix", backend("app", 80)),
        ])
        .build();
    let snapshot = build(
        &Inputs {
            ingresses: vec![ingress],
            services: vec![svc],
            slices: vec![slice],
            ..Default::default()
        },
        &class_policy(),
    );
    let text = render(&snapshot);
    let expected = "\
Ingress web/site
  route    *.site.test / (Prefix) -> web/app:80 (1 ready endpoint)
  route    *.site.test /gone (Exact) -> 503: spec.rules[0].http.paths[1]: Service web/missing does not exist
  default  -> web/app:80 (1 ready endpoint)
  skipped  InvalidPath: spec.rules[0].http.paths[2]: path `relative` does not start with `/`
  skipped  MissingService: spec.rules[0].http.paths[1]: Service web/missing does not exist
";
    assert_eq!(text, expected);
}

#[test]
fn the_report_shows_which_secret_serves_which_names_and_client_auth() {
    let ingress = ingress("web", "tls")
        .annotation("sluice.dev/client-auth", "verify")
        .annotation("sluice.dev/client-ca-secret", "ca")
        .tls(&["a.test", "*.b.test"], Some("site"))
        .build();
    let snapshot = build(
        &Inputs {
            ingresses: vec![ingress],
            secrets: vec![
                secret("web", "site", &["tls.crt", "tls.key"]),
                secret("web", "ca", &["ca.crt"]),
            ],
            ..Default::default()
        },
        &class_policy(),
    );
    let expected = "\
Ingress web/tls
  tls      *.b.test, a.test client certificates checked against Secret web/ca
  tls      *.b.test, a.test <- Secret web/site
  tls      *.b.test client-auth verify
  tls      a.test client-auth verify
";
    assert_eq!(render(&snapshot), expected);
}

#[test]
fn a_route_shows_what_its_annotations_change() {
    let policy = UpstreamPolicy {
        timeouts: crate::annotations::Timeouts {
            read: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        },
        balance: Some(Balance::ConsistentHash(HashBy::Header("x-user".into()))),
        affinity: None,
        ..Default::default()
    };
    assert_eq!(
        describe_policy(&policy),
        "consistent-hash by header x-user, read-timeout 300ms"
    );
    let grpc = UpstreamPolicy {
        protocol: Some(BackendProtocol::Grpc),
        ..policy
    };
    assert_eq!(
        describe_policy(&grpc),
        "consistent-hash by header x-user, read-timeout 300ms, protocol GRPC"
    );
    let http = UpstreamPolicy {
        protocol: Some(BackendProtocol::Http),
        ..Default::default()
    };
    assert_eq!(describe_policy(&http), "");
    assert_eq!(describe_policy(&UpstreamPolicy::default()), "");
    let requests = UpstreamPolicy {
        max_body_bytes: Some(8 << 20),
        client_body_timeout: Some(std::time::Duration::from_secs(5)),
        forward_raw_path: true,
        ..Default::default()
    };
    assert_eq!(
        describe_policy(&requests),
        "body up to 8388608 bytes, client-body-timeout 5000ms, raw path upstream"
    );
    let unlimited = UpstreamPolicy {
        max_body_bytes: Some(0),
        ..Default::default()
    };
    assert_eq!(describe_policy(&unlimited), "body unlimited");
}

#[test]
fn an_empty_snapshot_says_so() {
    assert_eq!(render(&Snapshot::default()), "no Ingress is served\n");
}

#[test]
fn the_report_shows_each_routes_filters_and_the_www_redirect() {
    let svc = service("web", "app").port("http", 80).build();
    let site = ingress("web", "site")
        .created(1)
        .annotation("sluice.dev/rewrite-target", "/v2$1")
        .annotation("sluice.dev/response-headers", "X-A: 1\nX-B: 2")
        .annotation("sluice.dev/from-to-www-redirect", "true")
        .host("site.test")
        .path("/api", "Prefix", backend("app", 80))
        .build();
    let broken = ingress("web", "broken")
        .created(2)
        .annotation("sluice.dev/app-root", "app")
        .host("site.test")
        .path("/x", "Exact", backend("app", 80))
        .build();
    let snapshot = build(
        &Inputs {
            ingresses: vec![site, broken],
            services: vec![svc],
            ..Default::default()
        },
        &class_policy(),
    );
    let expected = "\
Ingress web/broken
  route    site.test /x (Exact) -> web/app:80 (0 ready endpoints) [503: invalid policy annotation]
  skipped  InvalidAnnotation: annotation `sluice.dev/app-root`: `app` is not a path starting with /; the Ingress's routes answer 503
Ingress web/site
  route    site.test /api (Prefix) -> web/app:80 (0 ready endpoints) [rewrite /v2$1, response headers set x-a x-b]
  redirect www.site.test -> site.test (308)
";
    assert_eq!(render(&snapshot), expected);
}
