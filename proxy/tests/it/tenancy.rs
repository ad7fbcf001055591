//! Host ownership between namespaces, over real TLS on loopback: Ingresses of a namespace that
//! does not own a host cannot change its certificate or client authentication, and with
//! `cross_namespace_paths = "deny"` cannot route on it. Each case is one the squatting tenant of
//! a shared cluster would try.

use openssl::hash::MessageDigest;
use sluice_config::Reason;

use crate::support::pki::*;
use crate::support::*;
use crate::tls::{https, tls_ingress_in, tls_settings};

/// Older than every owner below: first come would hand the hosts to these.
const OLDER: Option<&str> = Some("2024-01-01T00:00:00Z");
const OWNER: Option<&str> = Some("2024-02-01T00:00:00Z");
const NEWER: Option<&str> = Some("2024-03-01T00:00:00Z");

/// `default` owns `mtls.test` and `pass.test` (verify), `secure.test` and `named.test` (their
/// own certificates); `tenant-b` and `evil` list those hosts in `spec.tls` with weaker client
/// authentication, their own client CA or stronger certificates, and a newer `default` Ingress
/// brings a stronger certificate whose names do not cover `named.test`.
struct Tenancy {
    s: Sluice,
    _owner: Backend,
    _foreign: Backend,
    client: Issued,
    stranger: Issued,
}

async fn tenancy() -> Tenancy {
    let clients = Ca::root("client root");
    let client = clients.issue(&Leaf::client("good client").key(Key::P256));
    let strangers = Ca::root("stranger root");
    let stranger = strangers.issue(&Leaf::client("stranger").key(Key::P256));
    let servers = Ca::root("server root");
    let secure = servers.issue(&Leaf::server("owner", &["secure.test"]));
    let named = servers.issue(&Leaf::server("named owner", &["named.test"]));
    // P-384 with SHA-384 beats the owners' RSA 2048 SHA-256 wherever it is a candidate.
    let strong = |cn: &'static str, dns: &'static [&'static str]| {
        Ca::root("attacker root").issue(
            &Leaf::server(cn, dns)
                .key(Key::P384)
                .digest(MessageDigest::sha384()),
        )
    };
    let attacker = strong("attacker.example", &["secure.test"]);
    let wrong_name = strong("attacker.example", &[]);
    let (owner, foreign) = (
        Backend::start("owner").await,
        Backend::start("foreign").await,
    );
    let verify = [
        ("sluice.dev/client-auth", "verify"),
        ("sluice.dev/client-ca-secret", "client-ca"),
    ];
    let manifests = [
        service_with("default", "web", &[owner.addr]),
        service_with("tenant-b", "web", &[foreign.addr]),
        tls_secret("default", "client-ca", None, Some(&clients.cert_pem())),
        tls_secret("default", "secure-tls", Some(&secure), None),
        tls_secret("default", "named-tls", Some(&named), None),
        tls_secret("default", "wrong-name-tls", Some(&wrong_name), None),
        tls_secret("evil", "attacker-tls", Some(&attacker), None),
        tls_secret("evil", "evil-ca", None, Some(&strangers.cert_pem())),
        tls_ingress_in(
            "tenant-b",
            "older",
            OLDER,
            &[("other.test", "web")],
            &[(&["mtls.test"], None)],
            &[("sluice.dev/client-auth", "off")],
        ),
        tls_ingress_in(
            "evil",
            "ca-swap",
            OLDER,
            &[],
            &[(&["mtls.test"], None)],
            &[
                ("sluice.dev/client-auth", "verify"),
                ("sluice.dev/client-ca-secret", "evil-ca"),
            ],
        ),
        tls_ingress_in(
            "evil",
            "pass",
            OLDER,
            &[],
            &[(&["pass.test"], None)],
            &[("sluice.dev/client-auth", "passthrough")],
        ),
        tls_ingress_in(
            "default",
            "mtls",
            OWNER,
            &[("mtls.test", "web"), ("pass.test", "web")],
            &[(&["mtls.test", "pass.test"], None)],
            &verify,
        ),
        tls_ingress_in(
            "default",
            "secure",
            OWNER,
            &[("secure.test", "web"), ("named.test", "web")],
            &[
                (&["secure.test"], Some("secure-tls")),
                (&["named.test"], Some("named-tls")),
            ],
            &[],
        ),
        tls_ingress_in(
            "evil",
            "attacker",
            NEWER,
            &[],
            &[(&["secure.test"], Some("attacker-tls"))],
            &[],
        ),
        tls_ingress_in(
            "default",
            "named-newer",
            NEWER,
            &[],
            &[(&["named.test"], Some("wrong-name-tls"))],
            &[],
        ),
    ]
    .concat();
    let s = Sluice::start_with(&manifests, &tls_settings("")).await;
    Tenancy {
        s,
        _owner: owner,
        _foreign: foreign,
        client,
        stranger,
    }
}

/// The (reason, message) of every rule `ingress` (`namespace/name`) has skipped.
fn skipped_by(s: &Sluice, ingress: &str) -> Vec<(Reason, String)> {
    s.skipped()
        .into_iter()
        .filter(|k| k.ingress.to_string() == ingress)
        .map(|k| (k.reason, k.message))
        .collect()
}

fn assert_not_owned(s: &Sluice, ingress: &str, host: &str) {
    let got = skipped_by(s, ingress);
    let owned = format!("host `{host}` is owned by namespace default");
    assert!(
        got.iter()
            .any(|(r, m)| *r == Reason::HostNotOwned && m.contains(&owned)),
        "{ingress}: {got:?}"
    );
}

/// Handshakes for `host` fail without a certificate and with the stranger's (another CA's).
async fn assert_refused_without_a_certificate_from_the_ca(t: &Tenancy, host: &str) {
    let opts = ClientTls::sni(host);
    for (what, client) in [
        ("no certificate", opts.clone()),
        (
            "a certificate from another CA",
            opts.clone().cert(&t.stranger),
        ),
    ] {
        let r = https_get(https(&t.s), &client, host, "/").await;
        assert!(r.is_err(), "{host}, {what}: {:?}", r.map(|(r, _)| r.status));
    }
}

#[tokio::test]
async fn an_older_foreign_ingress_cannot_turn_client_auth_off_for_a_host_it_does_not_own() {
    // Before ownership the oldest Ingress (tenant-b/older, `off`) decided: a client without a
    // certificate got 200 from default's backend. Strictest-mode resolution alone would stop
    // that, but not evil/ca-swap's older CA: drop the ownership check and the stranger's
    // certificate gets through.
    let t = tenancy().await;
    let addr = https(&t.s);
    let opts = ClientTls::sni("mtls.test");
    assert_refused_without_a_certificate_from_the_ca(&t, "mtls.test").await;
    let (r, _) = https_get(addr, &opts.clone().cert(&t.client), "mtls.test", "/")
        .await
        .unwrap();
    assert_eq!((r.status, r.backend()), (200, "owner".to_string()));
    // The host still verifies, so plain HTTP is always redirected.
    assert_eq!(t.s.get("mtls.test", "/").await.status, 308);
    assert_not_owned(&t.s, "tenant-b/older", "mtls.test");
    assert_not_owned(&t.s, "evil/ca-swap", "mtls.test");
}

#[tokio::test]
async fn a_foreign_passthrough_cannot_make_a_verify_host_forward_unverified_subjects() {
    // Before ownership the oldest Ingress (evil/pass) decided `passthrough`, and any certificate,
    // or none, reached the backend.
    let t = tenancy().await;
    let addr = https(&t.s);
    let opts = ClientTls::sni("pass.test");
    assert_refused_without_a_certificate_from_the_ca(&t, "pass.test").await;
    let (r, _) = https_get(addr, &opts.clone().cert(&t.client), "pass.test", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.upstream_header("x-client-cert-verified"), vec!["SUCCESS"]);
    assert_not_owned(&t.s, "evil/pass", "pass.test");
}

#[tokio::test]
async fn a_newer_foreign_ingress_with_a_stronger_certificate_cannot_take_over_the_handshake() {
    // Without ownership evil's P-384 certificate was a candidate and, stronger, was served.
    let t = tenancy().await;
    let got = served(https(&t.s), &ClientTls::sni("secure.test")).await;
    assert_eq!(got.cn, "owner");
    assert_not_owned(&t.s, "evil/attacker", "secure.test");
}

#[tokio::test]
async fn a_certificate_whose_names_do_not_cover_the_host_is_not_served_for_it() {
    // Same namespace, newer, stronger, but for CN=attacker.example without SANs: remove the
    // name check in the store and it wins the selection.
    let t = tenancy().await;
    let got = served(https(&t.s), &ClientTls::sni("named.test")).await;
    assert_eq!(got.cn, "named owner");
    let reported = skipped_by(&t.s, "default/named-newer");
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].0, Reason::CertificateNameMismatch);
    assert!(
        reported[0]
            .1
            .contains("attacker.example, which does not cover named.test"),
        "{}",
        reported[0].1
    );
}

#[tokio::test]
async fn with_deny_another_namespace_cannot_serve_paths_on_an_owned_host() {
    let (owner, squatter) = (
        Backend::start("owner").await,
        Backend::start("squatter").await,
    );
    let manifests = [
        service_with("team-a", "web", &[owner.addr]),
        service_with("team-b", "web", &[squatter.addr]),
        ingress(
            "team-a",
            "app",
            Some("app.team-a.test"),
            &[("/", "Prefix", "web")],
        ),
        ingress(
            "team-b",
            "squat",
            Some("app.team-a.test"),
            &[("/admin", "Prefix", "web")],
        ),
    ]
    .concat();
    for (cross, admin) in [("allow", "squatter"), ("deny", "owner")] {
        let settings = format!(
            "{}[controller]\ncross_namespace_paths = \"{cross}\"\n\
             [controller.host_owners]\n\"*.team-a.test\" = \"team-a\"\n",
            test_settings("")
        );
        let s = Sluice::start_with(&manifests, &settings).await;
        let r = s.get("app.team-a.test", "/admin/x").await;
        assert_eq!((r.status, r.backend()), (200, admin.to_string()), "{cross}");
        let reported = skipped_by(&s, "team-b/squat");
        assert_eq!(
            reported.iter().any(|(r, m)| *r == Reason::HostNotOwned
                && m.contains("controller.host_owners `*.team-a.test`")),
            cross == "deny",
            "{cross}: {reported:?}"
        );
    }
}
