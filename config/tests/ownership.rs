//! Host ownership between namespaces, through the whole snapshot build: only the owning
//! namespace sets a host's TLS and client authentication, and with `deny` only it routes there.

use sluice_config::build::{build_with, BuildDefaults, Target};
use sluice_config::fixtures::{self, backend, class_policy, secret};
use sluice_config::model::*;
use sluice_config::ownership::{CrossNamespacePaths, HostOwners};
use sluice_config::tls::ClientAuthMode;
use sluice_config::Reason;

/// An Ingress with a `/` rule per host to Service `app`, one `spec.tls` entry and annotations.
fn ingress(
    ns: &str,
    name: &str,
    created: i64,
    rules: &[(&str, &str)],
    tls: (&[&str], Option<&str>),
    annotations: &[(&str, &str)],
) -> IngressInput {
    let b = rules.iter().fold(
        fixtures::ingress(ns, name)
            .created(created)
            .annotations(annotations),
        |b, (host, path)| b.host(host).path(path, "Prefix", backend("app", 80)),
    );
    if tls.0.is_empty() && tls.1.is_none() {
        b.build()
    } else {
        b.tls(tls.0, tls.1).build()
    }
}

fn inputs(ingresses: Vec<IngressInput>) -> Inputs {
    let mut services = Vec::new();
    let mut secrets = Vec::new();
    for ns in ["default", "tenant-b", "evil"] {
        services.push(fixtures::service(ns, "app").port("http", 80).build());
        for (name, keys) in [
            ("site-tls", &["tls.crt", "tls.key"][..]),
            ("ca", &["ca.crt"]),
        ] {
            secrets.push(secret(ns, name, keys));
        }
    }
    Inputs {
        ingresses,
        services,
        secrets,
        ..Default::default()
    }
}

const VERIFY: &[(&str, &str)] = &[
    ("sluice.dev/client-auth", "verify"),
    ("sluice.dev/client-ca-secret", "ca"),
];

#[test]
fn a_foreign_namespace_cannot_set_the_tls_policy_of_a_host_it_does_not_own() {
    // The cases: an older foreign Ingress turning client-auth off, a newer one bringing
    // its own certificate, and a foreign passthrough. Make `tls::policy` ignore ownership and
    // the owner's `verify` and certificate are lost.
    let owner = ingress(
        "default",
        "mtls",
        2,
        &[("mtls.test", "/")],
        (&["mtls.test"], Some("site-tls")),
        VERIFY,
    );
    for (foreign, annotations) in [
        (
            ingress(
                "tenant-b",
                "older",
                1,
                &[("other.test", "/")],
                (&["mtls.test"], Some("site-tls")),
                &[("sluice.dev/client-auth", "off")],
            ),
            "off",
        ),
        (
            ingress(
                "evil",
                "newer",
                3,
                &[("other.test", "/")],
                (&["mtls.test"], Some("site-tls")),
                &[],
            ),
            "certificate",
        ),
        (
            ingress(
                "evil",
                "passthrough",
                3,
                &[],
                (&["mtls.test"], None),
                &[("sluice.dev/client-auth", "passthrough")],
            ),
            "passthrough",
        ),
    ] {
        let who = foreign.object_ref();
        let snap = build_with(
            &inputs(vec![owner.clone(), foreign]),
            &class_policy(),
            &BuildDefaults::default(),
        );
        let host = snap.tls.find("mtls.test").expect("mtls.test has TLS");
        assert_eq!(
            host.client_auth.mode,
            ClientAuthMode::Verify,
            "{annotations}"
        );
        assert_eq!(
            host.client_auth.ca_secret,
            Some(ObjectRef::new("default", "ca")),
            "{annotations}"
        );
        assert_eq!(
            host.secrets,
            vec![ObjectRef::new("default", "site-tls")],
            "{annotations}"
        );
        let reported: Vec<_> = snap.skipped.iter().filter(|s| s.ingress == who).collect();
        assert_eq!(reported.len(), 1, "{annotations}: {:?}", snap.skipped);
        assert_eq!(reported[0].reason, Reason::HostNotOwned);
        assert!(
            reported[0]
                .message
                .contains("host `mtls.test` is owned by namespace default"),
            "{}",
            reported[0].message
        );
        // The foreign Secret is not read for the owner's host.
        assert!(snap.tls.uses.iter().all(|u| u.ingress != who));
    }
}

/// The pool namespace serving (host, path), or `None`.
fn served_by(snap: &sluice_config::Snapshot, host: &str, path: &str) -> Option<String> {
    let entry = snap.routes.find(host, path)?;
    match snap.target(entry)? {
        Target::Pool(k) => Some(k.namespace.clone()),
        Target::Unresolved { .. } => None,
    }
}

#[test]
fn host_owners_decide_ownership_before_first_come_and_deny_keeps_other_namespaces_off_a_host() {
    // tenant-b squats app.test first; default serves / and /admin there later.
    let squatter = ingress(
        "tenant-b",
        "squat",
        1,
        &[("app.test", "/public")],
        (&["app.test"], None),
        &[("sluice.dev/client-auth", "off")],
    );
    let owner = ingress(
        "default",
        "app",
        2,
        &[("app.test", "/"), ("app.test", "/admin")],
        (&["app.test"], Some("site-tls")),
        VERIFY,
    );
    let owned_by_default = HostOwners::new([("app.test", "default")]).unwrap();
    for (name, host_owners, cross, mode, public, reasons) in [
        (
            "first come: the squatter owns the host",
            HostOwners::default(),
            CrossNamespacePaths::Allow,
            ClientAuthMode::Off,
            Some("tenant-b"),
            vec![("default/app", Reason::HostNotOwned)],
        ),
        (
            "host_owners: the configured namespace owns it, paths still merge",
            owned_by_default.clone(),
            CrossNamespacePaths::Allow,
            ClientAuthMode::Verify,
            Some("tenant-b"),
            vec![("tenant-b/squat", Reason::HostNotOwned)],
        ),
        (
            "host_owners and deny: the squatter's path is skipped too",
            owned_by_default.clone(),
            CrossNamespacePaths::Deny,
            ClientAuthMode::Verify,
            Some("default"),
            vec![
                ("tenant-b/squat", Reason::HostNotOwned),
                ("tenant-b/squat", Reason::HostNotOwned),
            ],
        ),
        (
            "first come and deny: the owner's own later rules are the foreign ones",
            HostOwners::default(),
            CrossNamespacePaths::Deny,
            ClientAuthMode::Off,
            Some("tenant-b"),
            vec![
                ("default/app", Reason::HostNotOwned),
                ("default/app", Reason::HostNotOwned),
                ("default/app", Reason::HostNotOwned),
            ],
        ),
    ] {
        let defaults = BuildDefaults {
            host_owners,
            cross_namespace_paths: cross,
            ..Default::default()
        };
        let snap = build_with(
            &inputs(vec![squatter.clone(), owner.clone()]),
            &class_policy(),
            &defaults,
        );
        let host = snap.tls.find("app.test").expect("app.test has TLS");
        assert_eq!(host.client_auth.mode, mode, "{name}");
        assert_eq!(
            served_by(&snap, "app.test", "/public/x").as_deref(),
            public,
            "{name}"
        );
        let got: Vec<(String, Reason)> = snap
            .skipped
            .iter()
            .filter(|s| s.reason == Reason::HostNotOwned)
            .map(|s| (s.ingress.to_string(), s.reason.clone()))
            .collect();
        let want: Vec<(String, Reason)> = reasons
            .into_iter()
            .map(|(i, r)| (i.to_string(), r))
            .collect();
        assert_eq!(got, want, "{name}: {:?}", snap.skipped);
    }
}
