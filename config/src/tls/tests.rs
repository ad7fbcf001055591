use super::*;
use crate::model::TlsInput;

const DAY: i64 = 86_400;
const NOW: i64 = 1_700_000_000;

fn facts(key: KeyAlgorithm, key_bits: u32, signature_bits: u32, expires_in_days: i64) -> CertFacts {
    CertFacts {
        key,
        key_bits,
        signature_bits,
        not_before: NOW - 30 * DAY,
        not_after: NOW + expires_in_days * DAY,
    }
}

use KeyAlgorithm::{Ecdsa, Other, Rsa};

#[test]
fn selection_skips_invalid_certificates_and_keeps_the_best_of_each_key_type() {
    let not_yet = CertFacts {
        not_before: NOW + DAY,
        ..facts(Ecdsa, 384, 192, 90)
    };
    for (name, candidates, want) in [
        ("nothing", vec![], (None, None, None)),
        (
            "one of each",
            vec![facts(Rsa, 2048, 128, 90), facts(Ecdsa, 256, 128, 90)],
            (Some(1), Some(0), None),
        ),
        (
            "expired is skipped",
            vec![facts(Rsa, 4096, 256, -1), facts(Rsa, 2048, 128, 10)],
            (None, Some(1), None),
        ),
        (
            "not yet valid is skipped",
            vec![not_yet, facts(Ecdsa, 256, 128, 10)],
            (Some(1), None, None),
        ),
        (
            "only expired means none",
            vec![facts(Rsa, 2048, 128, -1), facts(Ecdsa, 256, 128, -5)],
            (None, None, None),
        ),
        (
            "stronger signature beats larger key",
            vec![facts(Rsa, 4096, 63, 90), facts(Rsa, 2048, 128, 90)],
            (None, Some(1), None),
        ),
        (
            "larger key beats later expiry",
            vec![facts(Rsa, 2048, 128, 300), facts(Rsa, 3072, 128, 30)],
            (None, Some(1), None),
        ),
        (
            "later expiry breaks the tie",
            vec![facts(Ecdsa, 256, 128, 30), facts(Ecdsa, 256, 128, 60)],
            (Some(1), None, None),
        ),
        (
            "equal facts keep the oldest Ingress's",
            vec![facts(Ecdsa, 256, 128, 30), facts(Ecdsa, 256, 128, 30)],
            (Some(0), None, None),
        ),
        (
            "other keys only without ECDSA or RSA",
            vec![facts(Other, 256, 128, 30), facts(Rsa, 2048, 128, 30)],
            (None, Some(1), None),
        ),
        (
            "other keys alone are served",
            vec![facts(Other, 256, 128, 30)],
            (None, None, Some(0)),
        ),
    ] {
        let c = choose(&candidates, NOW);
        assert_eq!((c.ecdsa, c.rsa, c.other), want, "{name}");
    }
}

fn ingress(name: &str, tls: Vec<TlsInput>, annotations: &[(&str, &str)]) -> IngressInput {
    IngressInput {
        namespace: "web".into(),
        name: name.into(),
        class_name: Some("sluice".into()),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        rules: vec![crate::model::RuleInput {
            host: Some("rule.test".into()),
            paths: vec![],
        }],
        tls,
        ..Default::default()
    }
}

fn tls(hosts: &[&str], secret: Option<&str>) -> TlsInput {
    TlsInput {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        secret_name: secret.map(str::to_string),
    }
}

fn secret(name: &str, type_: &str, keys: &[&str]) -> SecretInput {
    SecretInput {
        namespace: "web".into(),
        name: name.into(),
        type_: type_.into(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
    }
}

fn secrets() -> Vec<SecretInput> {
    vec![
        secret("a-tls", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
        secret("b-tls", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
        secret("wild-tls", TLS_SECRET_TYPE, &["tls.crt", "tls.key"]),
        secret("opaque", "Opaque", &["tls.crt", "tls.key"]),
        secret("no-key", TLS_SECRET_TYPE, &["tls.crt"]),
        secret("ca", TLS_SECRET_TYPE, &["ca.crt", "tls.crt", "tls.key"]),
        secret("other-ca", "Opaque", &["ca.crt"]),
    ]
}

fn build(ingresses: &[IngressInput]) -> (TlsPolicy, Vec<Finding>) {
    let served: Vec<&IngressInput> = ingresses.iter().collect();
    let mut skipped = Vec::new();
    let owners = crate::ownership::Ownership::compute(&served, &Default::default());
    let p = policy(&served, &secrets(), &owners, &mut skipped);
    (p, skipped)
}

fn names(p: &TlsPolicy, name: &str) -> Option<Vec<String>> {
    p.find(name)
        .map(|h| h.secrets.iter().map(|s| s.name.clone()).collect())
}

#[test]
fn names_find_their_secrets_exact_before_wildcard_and_across_ingresses() {
    let (p, skipped) = build(&[
        ingress(
            "old",
            vec![
                tls(&["a.test", "*.shop.test"], Some("a-tls")),
                tls(&[], None),
            ],
            &[],
        ),
        ingress(
            "new",
            vec![
                tls(&["a.test"], Some("b-tls")),
                tls(&["eu.shop.test"], Some("wild-tls")),
            ],
            &[],
        ),
    ]);
    assert!(skipped.is_empty(), "{skipped:?}");
    for (name, want) in [
        ("a.test", Some(vec!["a-tls", "b-tls"])),
        ("A.Test.", Some(vec!["a-tls", "b-tls"])),
        ("a.test:8443", Some(vec!["a-tls", "b-tls"])),
        ("eu.shop.test", Some(vec!["wild-tls"])),
        ("us.shop.test", Some(vec!["a-tls"])),
        ("shop.test", None),
        ("x.us.shop.test", None),
        // An entry without hosts covers the Ingress's rule hosts, with the default certificate.
        ("rule.test", Some(vec![])),
        ("other.test", None),
    ] {
        let want = want.map(|v| v.into_iter().map(str::to_string).collect::<Vec<_>>());
        assert_eq!(names(&p, name), want, "{name}");
    }
}

#[test]
fn unusable_secrets_are_reported_and_their_hosts_get_the_default_certificate() {
    for (secret_name, reason, text) in [
        ("missing", Reason::MissingSecret, "does not exist"),
        ("opaque", Reason::InvalidSecret, "of type `Opaque`"),
        ("no-key", Reason::InvalidSecret, "lacks tls.crt or tls.key"),
    ] {
        let (p, skipped) = build(&[ingress(
            "i",
            vec![
                tls(&["a.test"], Some(secret_name)),
                tls(&["b.test"], Some("b-tls")),
            ],
            &[],
        )]);
        assert_eq!(names(&p, "a.test"), Some(vec![]), "{secret_name}");
        assert_eq!(names(&p, "b.test"), Some(vec!["b-tls".to_string()]));
        assert_eq!(skipped.len(), 1, "{secret_name}: {skipped:?}");
        assert_eq!(skipped[0].reason, reason);
        assert!(skipped[0].message.contains(text), "{}", skipped[0].message);
        assert!(skipped[0]
            .message
            .contains("a.test get the default certificate"));
    }
    let (_, skipped) = build(&[ingress("i", vec![tls(&["Bad_Host"], Some("a-tls"))], &[])]);
    assert_eq!(skipped[0].reason, Reason::InvalidHost);
    assert!(skipped[0].message.starts_with("spec.tls[0].hosts[0]"));
}

fn auth(p: &TlsPolicy, name: &str) -> (ClientAuthMode, Option<String>, u32) {
    let h = p.find(name).expect("a TLS host");
    (
        h.client_auth.mode,
        h.client_auth.ca_secret.as_ref().map(|s| s.name.clone()),
        h.client_auth.verify_depth,
    )
}

#[test]
fn client_auth_annotations_set_each_tls_host_and_bad_values_fail_closed() {
    use ClientAuthMode::*;
    let ca = Some("ca".to_string());
    for (annotations, want, reasons) in [
        (vec![], (Off, None, 0), vec![]),
        (
            vec![("sluice.dev/client-auth", "off")],
            (Off, None, 1),
            vec![],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "verify"),
                ("sluice.dev/client-ca-secret", "ca"),
            ],
            (Verify, ca.clone(), 1),
            vec![],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "optional"),
                ("sluice.dev/client-ca-secret", "other-ca"),
                ("sluice.dev/client-verify-depth", "3"),
            ],
            (Optional, Some("other-ca".to_string()), 3),
            vec![],
        ),
        (
            vec![("sluice.dev/client-ca-secret", "ca")],
            (Verify, ca.clone(), 1),
            vec![],
        ),
        (
            vec![("sluice.dev/client-auth", "passthrough")],
            (Passthrough, None, 1),
            vec![],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "verfy"),
                ("sluice.dev/client-ca-secret", "ca"),
            ],
            (Verify, None, 1),
            vec![Reason::InvalidAnnotation],
        ),
        (
            vec![("sluice.dev/client-auth", "verify")],
            (Verify, None, 1),
            vec![Reason::InvalidAnnotation],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "optional"),
                ("sluice.dev/client-ca-secret", "other/ca"),
            ],
            (Optional, None, 1),
            vec![Reason::InvalidAnnotation],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "verify"),
                ("sluice.dev/client-ca-secret", "gone"),
            ],
            (Verify, None, 1),
            vec![Reason::MissingSecret],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "verify"),
                ("sluice.dev/client-ca-secret", "a-tls"),
            ],
            (Verify, None, 1),
            vec![Reason::InvalidSecret],
        ),
        (
            vec![
                ("sluice.dev/client-auth", "verify"),
                ("sluice.dev/client-ca-secret", "ca"),
                ("sluice.dev/client-verify-depth", "-1"),
            ],
            (Verify, ca.clone(), 1),
            vec![Reason::InvalidAnnotation],
        ),
    ] {
        let (p, skipped) = build(&[ingress(
            "i",
            vec![tls(&["a.test", "*.b.test"], Some("a-tls"))],
            &annotations,
        )]);
        let (mode, ca, depth) = auth(&p, "a.test");
        // Without annotations the depth stays at its zero default: it is unused.
        let depth = if annotations.is_empty() { 0 } else { depth };
        assert_eq!((mode, ca, depth), want, "{annotations:?}");
        assert_eq!(auth(&p, "x.b.test").0, want.0, "{annotations:?}");
        let got: Vec<_> = skipped.iter().map(|s| s.reason.clone()).collect();
        assert_eq!(got, reasons, "{annotations:?}: {skipped:?}");
    }
}

#[test]
fn the_strictest_client_auth_of_a_host_applies_and_a_weaker_one_is_reported() {
    let verify = [
        ("sluice.dev/client-auth", "verify"),
        ("sluice.dev/client-ca-secret", "ca"),
    ];
    let (p, skipped) = build(&[
        ingress("old", vec![tls(&["a.test"], Some("a-tls"))], &verify),
        ingress("silent", vec![tls(&["a.test"], Some("b-tls"))], &[]),
        ingress(
            "weaker",
            vec![tls(&["a.test", "c.test"], Some("b-tls"))],
            &[("sluice.dev/client-auth", "off")],
        ),
        ingress("same", vec![tls(&["a.test"], None)], &verify),
    ]);
    assert_eq!(auth(&p, "a.test").0, ClientAuthMode::Verify);
    assert_eq!(auth(&p, "c.test").0, ClientAuthMode::Off);
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert_eq!(skipped[0].ingress.name, "weaker");
    assert_eq!(skipped[0].reason, Reason::ConflictingRule);
    assert!(
        skipped[0].message.contains("web/old"),
        "{}",
        skipped[0].message
    );
    // The CA is recorded as used by the Ingress that set it.
    assert!(p.uses.iter().any(|u| u.secret.name == "ca"
        && u.ingress.name == "old"
        && u.purpose == SecretPurpose::ClientCa));
}

#[test]
fn disagreeing_modes_resolve_to_the_strictest_with_ca_and_depth_from_the_oldest_that_sets_them() {
    use ClientAuthMode::*;
    let verify_ca = |ca: &'static str| {
        vec![
            ("sluice.dev/client-auth", "verify"),
            ("sluice.dev/client-ca-secret", ca),
        ]
    };
    let mode = |m: &'static str| vec![("sluice.dev/client-auth", m)];
    let ca = |n: &str| Some(n.to_string());
    // Each row: the annotations of Ingresses `i0`, `i1`, ... (oldest first), all listing
    // a.test; the resolved (mode, CA, depth); the Ingresses reported as overruled.
    for (name, requests, want, reported) in [
        ("one alone", vec![mode("off")], (Off, None, 1), vec![]),
        (
            "verify beats an older off",
            vec![mode("off"), verify_ca("ca")],
            (Verify, ca("ca"), 1),
            vec!["i0"],
        ),
        (
            "optional beats a newer passthrough",
            vec![
                vec![
                    ("sluice.dev/client-auth", "optional"),
                    ("sluice.dev/client-ca-secret", "other-ca"),
                ],
                mode("passthrough"),
            ],
            (Optional, ca("other-ca"), 1),
            vec!["i1"],
        ),
        (
            "passthrough beats off",
            vec![mode("passthrough"), mode("off")],
            (Passthrough, None, 1),
            vec!["i1"],
        ),
        (
            "the CA comes from the oldest that sets one, even under a stricter mode",
            vec![
                vec![
                    ("sluice.dev/client-auth", "optional"),
                    ("sluice.dev/client-ca-secret", "other-ca"),
                ],
                verify_ca("ca"),
            ],
            (Verify, ca("other-ca"), 1),
            vec!["i0", "i1"],
        ),
        (
            "the depth comes from the oldest that sets it",
            vec![
                verify_ca("ca"),
                vec![
                    ("sluice.dev/client-auth", "verify"),
                    ("sluice.dev/client-ca-secret", "ca"),
                    ("sluice.dev/client-verify-depth", "4"),
                ],
                vec![
                    ("sluice.dev/client-auth", "verify"),
                    ("sluice.dev/client-ca-secret", "ca"),
                    ("sluice.dev/client-verify-depth", "2"),
                ],
            ],
            (Verify, ca("ca"), 4),
            vec!["i2"],
        ),
        (
            "a bad mode anywhere fails closed",
            vec![verify_ca("ca"), mode("verfy")],
            (Verify, None, 1),
            vec![],
        ),
        (
            "verify without any CA fails closed",
            vec![mode("verify"), mode("optional")],
            (Verify, None, 1),
            vec!["i1"],
        ),
    ] {
        let ingresses: Vec<IngressInput> = requests
            .iter()
            .enumerate()
            .map(|(i, a)| ingress(&format!("i{i}"), vec![tls(&["a.test"], None)], a))
            .collect();
        let (p, skipped) = build(&ingresses);
        assert_eq!(auth(&p, "a.test"), want, "{name}");
        let mut got: Vec<&str> = skipped
            .iter()
            .filter(|s| s.reason == Reason::ConflictingRule)
            .map(|s| s.ingress.name.as_str())
            .collect();
        got.dedup();
        assert_eq!(got, reported, "{name}: {skipped:?}");
    }
}

#[test]
fn a_certificate_covers_a_name_only_through_its_names_or_a_one_label_wildcard() {
    for (cert, name, want) in [
        (vec!["a.test"], "a.test", true),
        (vec!["A.Test."], "a.test", true),
        (vec!["a.test"], "b.test", false),
        (vec!["*.shop.test"], "eu.shop.test", true),
        (vec!["*.shop.test"], "*.shop.test", true),
        (vec!["*.shop.test"], "shop.test", false),
        (vec!["*.shop.test"], "x.eu.shop.test", false),
        (vec!["eu.shop.test"], "*.shop.test", false),
        (vec!["e*.shop.test"], "eu.shop.test", false),
        (vec!["*.test"], "a.test", false),
        (vec!["attacker.example"], "secure.test", false),
        (vec!["x.test", "secure.test"], "secure.test", true),
        (vec!["127.0.0.1"], "127.0.0.1", true),
        (vec![], "a.test", false),
    ] {
        assert_eq!(covers(&cert, name), want, "{cert:?} covers {name}");
    }
}

#[test]
fn ssl_redirect_is_on_unless_the_annotation_says_false() {
    for (value, want) in [
        (None, Ok(true)),
        (Some("true"), Ok(true)),
        (Some("false"), Ok(false)),
        (Some(" false "), Ok(false)),
    ] {
        let i = match value {
            Some(v) => ingress("i", vec![], &[(SSL_REDIRECT_ANNOTATION, v)]),
            None => ingress("i", vec![], &[]),
        };
        assert_eq!(ssl_redirect(&i), want, "{value:?}");
    }
    assert!(ssl_redirect(&ingress("i", vec![], &[(SSL_REDIRECT_ANNOTATION, "no")])).is_err());
}
