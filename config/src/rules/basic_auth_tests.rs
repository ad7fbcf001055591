use super::*;
use crate::rules::{filters, BadRule};

fn parse(pairs: &[(&str, &str)]) -> (Vec<Filter>, Vec<BadRule>) {
    let annotations: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    filters(&annotations)
}

// Hashes as htpasswd files hold them. These tests only read their form (the proxy's tests check
// passwords): the bcrypt one is a well-formed cost-4 value written by hand; the `{SHA}` one is
// base64(SHA-1("secret")) and the apr1 one `openssl passwd -apr1 -salt abcdefgh secret`.
const BCRYPT: &str = "$2y$04$W1zVTnWRPcIOtxDbCsNy0OTW0/BMBcnUcuuFMcvbGvnyCSyH.KiM.";
const SHA: &str = "{SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=";
const APR1: &str = "$apr1$abcdefgh$h9FWgUz3n9YxylKLlR5SQ/";

#[test]
fn basic_auth_annotations_become_one_filter_before_redirects() {
    let (f, bad) = parse(&[
        (AUTH_TYPE, "basic"),
        (AUTH_SECRET, "users"),
        (AUTH_REALM, "Staff only"),
        ("sluice.dev/temporal-redirect", "/elsewhere"),
    ]);
    assert_eq!(bad, vec![]);
    assert_eq!(
        f[0],
        Filter::BasicAuth(BasicAuth {
            secret: "users".into(),
            secret_type: SecretType::AuthFile,
            realm: "Staff only".into(),
            forward_authorization: false,
            users: None,
        })
    );
    assert_eq!(
        f[0].to_string(),
        "basic auth users (auth-file) realm \"Staff only\""
    );
    assert!(matches!(f[1], Filter::Redirect { .. }));
    let (f, _) = parse(&[
        (AUTH_TYPE, "basic"),
        (AUTH_SECRET, "users"),
        (AUTH_SECRET_TYPE, "auth-map"),
        (AUTH_FORWARD_AUTHORIZATION, "true"),
    ]);
    let Filter::BasicAuth(rule) = &f[0] else {
        panic!("{f:?}")
    };
    assert_eq!(rule.secret_type, SecretType::AuthMap);
    assert_eq!(rule.realm, DEFAULT_REALM);
    assert!(rule.forward_authorization);
}

#[test]
fn any_bad_or_incomplete_basic_auth_annotation_fails_the_routes_closed() {
    for pairs in [
        &[(AUTH_TYPE, "digest"), (AUTH_SECRET, "users")][..],
        &[(AUTH_TYPE, "basic")],
        &[(AUTH_TYPE, "basic"), (AUTH_SECRET, "Users")],
        &[(AUTH_TYPE, "basic"), (AUTH_SECRET, "other/users")],
        &[
            (AUTH_TYPE, "basic"),
            (AUTH_SECRET, "users"),
            (AUTH_SECRET_TYPE, "auth"),
        ],
        &[
            (AUTH_TYPE, "basic"),
            (AUTH_SECRET, "users"),
            (AUTH_REALM, "a \"quoted\" realm"),
        ],
        &[
            (AUTH_TYPE, "basic"),
            (AUTH_SECRET, "users"),
            (AUTH_FORWARD_AUTHORIZATION, "yes"),
        ],
        // A Secret named without the type would leave the route open: refused.
        &[(AUTH_SECRET, "users")],
        &[(AUTH_REALM, "x")],
    ] {
        let (f, bad) = parse(pairs);
        assert_eq!(f, [Filter::Invalid], "{pairs:?}");
        assert_eq!(bad.len(), 1, "{pairs:?}: {bad:?}");
    }
    let (_, bad) = parse(&[(AUTH_SECRET, "users")]);
    assert_eq!(
        bad[0].to_string(),
        "annotation `sluice.dev/auth-secret`: `users` is set without `sluice.dev/auth-type`; the Ingress's routes answer 503"
    );
}

#[test]
fn htpasswd_files_read_each_accepted_hash_kind_and_skip_comments() {
    let text = format!("# staff\n\nann:{BCRYPT}\r\nbob:{SHA}\n carol:{APR1} \n");
    let users = parse_htpasswd(text.as_bytes()).unwrap();
    assert_eq!(users.get("ann"), Some(&PasswordHash::Bcrypt(BCRYPT.into())));
    assert_eq!(
        users.get("bob"),
        Some(&PasswordHash::Sha1("5en6G6MezRroT3XKqkdPOmY/BfQ=".into()))
    );
    assert_eq!(
        users.get("carol"),
        Some(&PasswordHash::Apr1 {
            salt: "abcdefgh".into(),
            digest: "h9FWgUz3n9YxylKLlR5SQ/".into()
        })
    );
    assert_eq!(users.0.len(), 3);
}

#[test]
fn an_htpasswd_file_with_any_unusable_line_is_refused_whole() {
    for (text, want) in [
        ("".to_string(), "lists no user"),
        ("# only a comment\n".into(), "lists no user"),
        (
            format!("ann:{SHA}\nno colon here\n"),
            "line 2 is not `user:hash`",
        ),
        (format!(":{SHA}"), "line 1 is not `user:hash`"),
        // crypt(3) DES and plain text are not accepted.
        (
            "ann:rl0Ek7pVSvhLo".into(),
            "line 1: the hash of user `ann` is not bcrypt",
        ),
        (
            "ann:secret".into(),
            "line 1: the hash of user `ann` is not bcrypt",
        ),
        ("ann:$1$abc$def".into(), "not bcrypt"),
        ("ann:{SHA}short".into(), "not bcrypt"),
        (format!("ann:{}", &BCRYPT[..59]), "not bcrypt"),
        (
            "ann:$apr1$toolongsalt$h9FWgUz3n9YxylKLlR5SQ/".into(),
            "not bcrypt",
        ),
        (
            format!("ann:{SHA}\nann:{APR1}"),
            "line 2: user `ann` is listed twice",
        ),
    ] {
        let e = parse_htpasswd(text.as_bytes()).unwrap_err().to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
    let e = parse_htpasswd(&[b'a', b':', 0xff]).unwrap_err();
    assert_eq!(e.to_string(), "key `auth` is not UTF-8 text");
}

#[test]
fn an_auth_map_reads_one_user_per_key() {
    let users = parse_auth_map([
        ("ann", BCRYPT.as_bytes()),
        ("bob", b" {SHA}5en6G6MezRroT3XKqkdPOmY/BfQ=\n"),
    ])
    .unwrap();
    assert_eq!(users.0.len(), 2);
    assert!(matches!(users.get("bob"), Some(PasswordHash::Sha1(_))));
    let e = parse_auth_map([("ann", b"plain".as_slice())]).unwrap_err();
    assert!(e.to_string().starts_with("key `ann`: the hash"), "{e}");
}

fn snapshot_with(annotations: &[(&str, &str)]) -> Snapshot {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let (filters, _) = filters(&annotations);
    Snapshot {
        ingresses: vec![crate::build::ServedIngress {
            object: ObjectRef::new("team", "web"),
            annotations,
            ssl_redirect: false,
            filters: filters.into(),
        }],
        ..Default::default()
    }
}

#[test]
fn resolving_fills_in_the_users_or_fails_the_ingress_closed_with_a_finding() {
    let annotations = [(AUTH_TYPE, "basic"), (AUTH_SECRET, "users")];
    let file = format!("ann:{SHA}\n");
    let mut asked = Vec::new();
    let mut s = snapshot_with(&annotations);
    resolve(&mut s, |key| {
        asked.push(key.clone());
        Some(vec![("auth", file.as_bytes()), ("other", b"x".as_slice())])
    });
    assert_eq!(asked, [ObjectRef::new("team", "users")]);
    assert_eq!(s.skipped, vec![]);
    let Filter::BasicAuth(rule) = &s.ingresses[0].filters[0] else {
        panic!("{:?}", s.ingresses[0].filters)
    };
    assert_eq!(rule.users.as_ref().map(|u| u.0.len()), Some(1));

    for (content, reason, message) in [
        (None, Reason::MissingSecret, "Secret `users` does not exist"),
        (
            Some(vec![("other", b"x".as_slice())]),
            Reason::InvalidSecret,
            "Secret `users` has no `auth` key",
        ),
        (
            Some(vec![("auth", b"ann:plain".as_slice())]),
            Reason::InvalidSecret,
            "Secret `users` line 1: the hash of user `ann`",
        ),
    ] {
        let mut s = snapshot_with(&annotations);
        resolve(&mut s, |_| content.clone());
        assert_eq!(&*s.ingresses[0].filters, &[Filter::Invalid]);
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(s.skipped[0].reason, reason);
        assert!(
            s.skipped[0].message.contains(message),
            "{}",
            s.skipped[0].message
        );
        assert_eq!(s.skipped[0].ingress, ObjectRef::new("team", "web"));
    }
}

#[test]
fn only_a_complete_basic_auth_rule_names_a_secret_to_read() {
    let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        secret_of(
            "team",
            &map(&[(AUTH_TYPE, "basic"), (AUTH_SECRET, "users")])
        ),
        Some(ObjectRef::new("team", "users"))
    );
    assert_eq!(secret_of("team", &map(&[(AUTH_SECRET, "users")])), None);
    assert_eq!(
        secret_of("team", &map(&[(AUTH_TYPE, "basic"), (AUTH_SECRET, "a/b")])),
        None
    );
}
