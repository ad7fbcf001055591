//! Basic auth (`sluice.dev/auth-type: basic`) over real loopback sockets, on both sources: the
//! users of an htpasswd or auth-map Secret, the 401 challenge, what goes upstream, and a
//! missing, malformed or changed Secret.
//!
//! Hashes are of the password `secret` unless said otherwise: bcrypt made here by the `bcrypt`
//! crate at cost 4 (the lowest, to keep debug builds quick), `{SHA}` is base64(SHA-1) as
//! `printf secret | openssl sha1 -binary | base64` prints it, apr1 as
//! `openssl passwd -apr1 -salt abcdefgh secret` prints it.

use serde_json::Value;

use crate::access::guarded_routes as routes;
use crate::support::*;

const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
const APR1: &str = "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/";

fn bcrypt_of(password: &str) -> String {
    bcrypt::hash(password, 4).unwrap()
}

/// An Opaque Secret `name` in `default` with these `stringData` keys.
fn secret(name: &str, keys: &[(&str, &str)]) -> String {
    let mut out = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\n\
         type: Opaque\nstringData:\n"
    );
    for (k, v) in keys {
        out.push_str(&format!("  {k}: |\n"));
        for line in v.lines() {
            out.push_str(&format!("    {line}\n"));
        }
    }
    out.push_str("---\n");
    out
}

/// `auth-type: basic` with Secret `users`, and `more` annotations.
fn basic<'a>(more: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut out = basic_from("users");
    out.extend_from_slice(more);
    out
}

/// `auth-type: basic` with Secret `secret`.
fn basic_from(secret: &str) -> Vec<(&str, &str)> {
    vec![
        ("sluice.dev/auth-type", "basic"),
        ("sluice.dev/auth-secret", secret),
    ]
}

/// A GET of `host` with `Authorization: Basic base64(user:password)` when given.
async fn get_as(s: &Sluice, host: &str, user_password: Option<&str>) -> Reply {
    let mut req = request(host, "/");
    if let Some(up) = user_password {
        let value = format!("Basic {}", openssl::base64::encode_block(up.as_bytes()));
        req.headers_mut()
            .insert("authorization", value.parse().unwrap());
    }
    H1::connect(s.addr).await.send(req).await.unwrap()
}

/// Replaces the objects as the source reads them: the manifests file, or the API server's
/// copies of the same objects.
fn publish(s: &Sluice, manifests: &str) {
    match &s.api {
        Some(api) => {
            let docs: Vec<Value> = serde_saphyr::from_multiple(manifests).unwrap();
            for doc in docs.into_iter().filter(|d| !d.is_null()) {
                api.apply(doc);
            }
        }
        None => s.write_manifest("routes.yaml", manifests),
    }
}

/// Waits until `user_password` on `host` gets `status`.
async fn wait_for_status(s: &Sluice, host: &str, user_password: Option<&str>, status: u16) {
    eventually(
        STEP,
        &format!("{host} as {user_password:?} answers {status}"),
        || async move { (get_as(s, host, user_password).await.status == status).then_some(()) },
    )
    .await;
}

/// On the kubernetes source, waits for a Warning Event of `reason` on Ingress `name`.
async fn wait_for_event(s: &Sluice, name: &str, reason: &str) {
    let Some(api) = &s.api else { return };
    eventually(STEP, &format!("a {reason} Warning Event on {name}"), || {
        let warned = api.list("Event").iter().any(|e| {
            (e["regarding"]["name"] == name || e["involvedObject"]["name"] == name)
                && e["type"] == "Warning"
                && e["reason"] == reason
        });
        async move { warned.then_some(()) }
    })
    .await;
}

async fn each_hash_kind_admits_its_user_and_anything_else_gets_the_challenge() {
    let a = Backend::start("a").await;
    let file = format!(
        "# staff\nann:{}\nbob:{SHA}\ncarol:{APR1}\n",
        bcrypt_of("secret")
    );
    let manifests = secret("users", &[("auth", &file)])
        + &routes(
            &a,
            &[
                (
                    "staff.test",
                    &basic(&[("sluice.dev/auth-realm", "Staff only")]),
                ),
                ("open.test", &[]),
            ],
        );
    let s = Sluice::start(&manifests).await;
    for user in ["ann", "bob", "carol"] {
        let r = get_as(&s, "staff.test", Some(&format!("{user}:secret"))).await;
        assert_eq!(r.status, 200, "{user}: {}", r.body);
        assert_eq!(r.backend(), "a");
    }
    for credentials in [
        Some("ann:wrong"),
        Some("bob:Secret"),
        Some("carol:"),
        Some("dave:secret"),
        None,
    ] {
        let r = get_as(&s, "staff.test", credentials).await;
        assert_eq!(r.status, 401, "{credentials:?}: {}", r.body);
        assert_eq!(
            r.headers["www-authenticate"], "Basic realm=\"Staff only\"",
            "{credentials:?}"
        );
        assert!(r.body.starts_with("401 Unauthorized"), "{}", r.body);
    }
    // A route without the annotation is not affected.
    assert_eq!(get_as(&s, "open.test", None).await.status, 200);
    assert_eq!(a.hits(), 4, "a refused request reached the backend");
    assert_eq!(s.skipped(), vec![]);
}

async fn authorization_goes_upstream_only_when_asked() {
    let a = Backend::start("a").await;
    let manifests = secret("users", &[("auth", &format!("bob:{SHA}\n"))])
        + &routes(
            &a,
            &[
                ("kept.test", &basic(&[])),
                (
                    "forwarded.test",
                    &basic(&[("sluice.dev/auth-forward-authorization", "true")]),
                ),
            ],
        );
    let s = Sluice::start(&manifests).await;
    let r = get_as(&s, "kept.test", Some("bob:secret")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.upstream_header("authorization"), Vec::<String>::new());
    let r = get_as(&s, "forwarded.test", Some("bob:secret")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.upstream_header("authorization"),
        [format!(
            "Basic {}",
            openssl::base64::encode_block(b"bob:secret")
        )]
    );
}

async fn an_auth_map_secret_lists_one_user_per_key() {
    let a = Backend::start("a").await;
    let ann = bcrypt_of("ann-pw");
    let manifests = secret("users", &[("ann", &ann), ("bob", SHA)])
        + &routes(
            &a,
            &[(
                "map.test",
                &basic(&[("sluice.dev/auth-secret-type", "auth-map")]),
            )],
        );
    let s = Sluice::start(&manifests).await;
    assert_eq!(get_as(&s, "map.test", Some("ann:ann-pw")).await.status, 200);
    assert_eq!(get_as(&s, "map.test", Some("bob:secret")).await.status, 200);
    assert_eq!(get_as(&s, "map.test", Some("ann:secret")).await.status, 401);
    assert_eq!(a.hits(), 2);
}

async fn a_missing_or_malformed_secret_fails_the_route_closed_and_is_reported() {
    let a = Backend::start("a").await;
    let manifests = secret("broken", &[("auth", "bob:plaintext\n")])
        + &secret("no-auth-key", &[("users", &format!("bob:{SHA}"))])
        + &routes(
            &a,
            &[
                ("missing.test", &basic_from("nowhere")),
                ("broken.test", &basic_from("broken")),
                ("nokey.test", &basic_from("no-auth-key")),
                ("open.test", &[]),
            ],
        );
    let s = Sluice::start(&manifests).await;
    for host in ["missing.test", "broken.test", "nokey.test"] {
        // Fail closed: 503 with or without credentials, never the backend.
        for credentials in [None, Some("bob:secret"), Some("bob:plaintext")] {
            let r = get_as(&s, host, credentials).await;
            assert_eq!(r.status, 503, "{host} {credentials:?}: {}", r.body);
        }
    }
    assert_eq!(get_as(&s, "open.test", None).await.status, 200);
    assert_eq!(a.hits(), 1);
    let found = s.skipped();
    let about = |name: &str| {
        found
            .iter()
            .find(|f| f.ingress.name == name)
            .unwrap_or_else(|| panic!("no finding on {name}: {found:?}"))
    };
    assert_eq!(about("r0").reason.as_str(), "MissingSecret");
    assert!(
        about("r0").message.contains("`nowhere` does not exist"),
        "{found:?}"
    );
    assert_eq!(about("r1").reason.as_str(), "InvalidSecret");
    assert!(about("r1").message.contains("user `bob`"), "{found:?}");
    assert!(about("r2").message.contains("no `auth` key"), "{found:?}");
    wait_for_event(&s, "r0", "MissingSecret").await;
    wait_for_event(&s, "r1", "InvalidSecret").await;
}

async fn a_changed_secret_takes_effect_without_a_restart() {
    let a = Backend::start("a").await;
    let with =
        |file: &str| secret("users", &[("auth", file)]) + &routes(&a, &[("x.test", &basic(&[]))]);
    let s = Sluice::start(&with(&format!("bob:{SHA}\n"))).await;
    assert_eq!(get_as(&s, "x.test", Some("bob:secret")).await.status, 200);
    // A new password for bob: the old one is refused from then on, even though it was
    // accepted (and cached) a moment ago.
    publish(&s, &with(&format!("bob:{}\n", bcrypt_of("rotated"))));
    wait_for_status(&s, "x.test", Some("bob:rotated"), 200).await;
    assert_eq!(get_as(&s, "x.test", Some("bob:secret")).await.status, 401);
    // A malformed update fails the route closed, and a good one opens it again.
    publish(&s, &with("bob:plaintext\n"));
    wait_for_status(&s, "x.test", Some("bob:rotated"), 503).await;
    publish(&s, &with(&format!("carol:{APR1}\n")));
    wait_for_status(&s, "x.test", Some("carol:secret"), 200).await;
    assert_eq!(get_as(&s, "x.test", Some("bob:rotated")).await.status, 401);
}

crate::through_both_sources!(
    each_hash_kind_admits_its_user_and_anything_else_gets_the_challenge,
    authorization_goes_upstream_only_when_asked,
    an_auth_map_secret_lists_one_user_per_key,
    a_missing_or_malformed_secret_fails_the_route_closed_and_is_reported,
    a_changed_secret_takes_effect_without_a_restart,
);

/// Waits until `n` watches of Secrets are open on `api`.
async fn wait_for_secret_watches(api: &crate::support::fake_apiserver::FakeApiServer, n: usize) {
    let open = api
        .wait_until(STEP, |api| api.open_watches("secrets") == n)
        .await;
    assert!(
        open,
        "{} Secret watches open, not {n}",
        api.open_watches("secrets")
    );
}

/// `sluice check` resolves basic-auth Secrets as the proxy does: it shows the rule, and reports
/// a missing or malformed Secret (exit 1).
#[test]
fn check_shows_basic_auth_and_reports_a_missing_or_malformed_secret() {
    let dir = tempfile::tempdir().unwrap();
    let route = |name: &str, secret: &str| {
        annotate(
            &ingress(
                "default",
                name,
                Some(&format!("{name}.test")),
                &[("/", "Prefix", "web")],
            ),
            &basic_from(secret),
        )
    };
    let manifests = [
        service("default", "web"),
        secret("users", &[("auth", &format!("bob:{SHA}\n"))]),
        secret("broken", &[("auth", "bob:plaintext\n")]),
        route("good", "users"),
        route("gone", "nowhere"),
        route("bad", "broken"),
    ]
    .concat();
    let out = crate::binary::check_folder(dir.path(), &manifests, "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("basic auth users (auth-file) realm \"Authentication Required\""),
        "{stdout}"
    );
    let block = |name: &str| {
        stdout
            .split(&format!("Ingress default/{name}\n"))
            .nth(1)
            .and_then(|b| b.split("\nIngress ").next())
            .unwrap_or("")
            .to_string()
    };
    assert!(block("gone").contains("MissingSecret"), "{stdout}");
    assert!(block("bad").contains("InvalidSecret"), "{stdout}");
    assert!(!block("good").contains("skipped"), "{stdout}");
}

/// The kubernetes source reads an auth Secret by name, with its own watch, and stops when no
/// served Ingress names it: the cluster's other Secrets are never listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_source_watches_only_the_auth_secrets_served_ingresses_name() {
    let a = Backend::start("a").await;
    // An Ingress of another class names `unrelated`: not served, so not read.
    let foreign = annotate(
        &ingress(
            "default",
            "foreign",
            Some("y.test"),
            &[("/", "Prefix", "svc-a")],
        ),
        &basic_from("unrelated"),
    )
    .replace("ingressClassName: sluice", "ingressClassName: other");
    let manifests = secret("users", &[("auth", &format!("bob:{SHA}\n"))])
        + &secret("unrelated", &[("auth", &format!("bob:{SHA}\n"))])
        + &foreign
        + &routes(&a, &[("x.test", &basic(&[]))]);
    let s = KUBE_SOURCE.scope(true, Sluice::start(&manifests)).await;
    let api = s.api.as_ref().unwrap();
    assert_eq!(get_as(&s, "x.test", Some("bob:secret")).await.status, 200);
    // Two lists of Secrets before sluice turned ready (a publish waits for a named Secret's
    // first list): the TLS Secrets and `users`, none of `unrelated`. Then their two watches.
    assert_eq!(api.list_count("secrets"), 2);
    wait_for_secret_watches(api, 2).await;
    assert_eq!(get_as(&s, "y.test", None).await.status, 404);
    // The Secret is deleted: the route fails closed, and says so.
    api.delete("v1", "Secret", "default", "users");
    wait_for_status(&s, "x.test", Some("bob:secret"), 503).await;
    wait_for_event(&s, "r0", "MissingSecret").await;
    // The Ingress stops asking for basic auth: the Secret's watch ends.
    publish(&s, &routes(&a, &[("x.test", &[])]));
    wait_for_status(&s, "x.test", None, 200).await;
    wait_for_secret_watches(api, 1).await;
}
