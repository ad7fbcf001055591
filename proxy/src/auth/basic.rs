//! Basic authentication at request time (`sluice.dev/auth-type: basic`, see
//! [`sluice_config::rules::basic_auth`]).
//!
//! A request passes when its one `Authorization: Basic` header names a user of the route's
//! Secret with the right password; otherwise it gets 401 with `WWW-Authenticate: Basic
//! realm="..."` ([`Refusal::Challenge`]) and nothing is forwarded. The check runs in
//! `request_filter` once the route is decided (after its source ranges and redirects), before
//! any upstream connection.
//!
//! Verdicts are cached per credential ([`CACHE_TTL`], at most [`CACHE_MAX_ENTRIES`] in all) so
//! a client sending the same header on every request costs one bcrypt verification per
//! [`CACHE_TTL`], not one per request. The cache is keyed by the SHA-256 of the Secret's users
//! and the header value (no password is kept): routes of one Secret share their verdicts, and
//! a change of the users (a password changed, a user removed) files the next verdicts under
//! another key, so no old verdict is found. A cache miss on a bcrypt user is verified on a
//! blocking thread, never on a request worker, at most [`MAX_CONCURRENT_BCRYPT`] at once. Hash
//! comparisons are constant-time (bcrypt's own, and `CRYPTO_memcmp` for `{SHA}` and apr1).
//!
//! An unknown user is refused at once, without a hash to compare (as nginx does): the time of
//! the answer can tell a listed user from an unlisted one; passwords are what is protected.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use openssl::hash::{hash, MessageDigest};
use pingora_http::RequestHeader;
use sluice_config::rules::basic_auth::{self as rule, PasswordHash, Users};
use sluice_config::Snapshot;

use crate::router::Refusal;
use crate::tls::SecretMaterial;

/// How long a verdict on one credential is reused.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// The most verdicts remembered, process-wide (about 80 bytes each); past it, expired verdicts
/// are dropped, and if none are, all of them, so a flood of distinct credentials costs memory
/// only up to this.
pub const CACHE_MAX_ENTRIES: usize = 8192;

/// The verdicts of every route, by the SHA-256 of (the users' fingerprint, the `Authorization`
/// value): shared by every route whose Secret lists the same users, kept across publishes while
/// the users stay the same, and never found again once they change.
static VERDICTS: VerdictCache = VerdictCache::new();

/// Whether a credential passed, and until when that holds, by key.
type Verdicts = HashMap<[u8; 32], (bool, Instant)>;

/// Verdicts by key, at most [`CACHE_MAX_ENTRIES`].
pub struct VerdictCache(Mutex<Option<Verdicts>>);

impl VerdictCache {
    pub const fn new() -> VerdictCache {
        VerdictCache(Mutex::new(None))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Verdicts) -> T) -> T {
        // The map is whole after any panic (each change is one insert, retain or clear).
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(guard.get_or_insert_with(HashMap::new))
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<bool> {
        self.with(|v| {
            let (ok, until) = v.get(key)?;
            (*until > now).then_some(*ok)
        })
    }

    fn put(&self, key: [u8; 32], ok: bool, now: Instant) {
        self.with(|v| {
            if v.len() >= CACHE_MAX_ENTRIES {
                v.retain(|_, (_, until)| *until > now);
                if v.len() >= CACHE_MAX_ENTRIES {
                    v.clear();
                }
            }
            v.insert(key, (ok, now + CACHE_TTL));
        });
    }

    /// How many verdicts are remembered.
    pub fn len(&self) -> usize {
        self.with(|v| v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Default for VerdictCache {
    fn default() -> Self {
        VerdictCache::new()
    }
}

/// The most bcrypt verifications that run at once, process-wide: a flood of wrong passwords for
/// a bcrypt user waits its turn instead of taking every blocking thread (each verification at
/// cost 10 is tens of milliseconds of CPU).
pub const MAX_CONCURRENT_BCRYPT: usize = 4;

static BCRYPT_SLOTS: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(MAX_CONCURRENT_BCRYPT);

/// A route's compiled basic-auth rule.
#[derive(PartialEq)]
pub struct BasicAuth {
    rule: rule::BasicAuth,
    users: Arc<Users>,
    /// The SHA-256 of every user and hash: what the verdicts of these users are filed under.
    fingerprint: [u8; 32],
    challenge: HeaderValue,
}

impl BasicAuth {
    /// The rule compiled; `None` when its users were not resolved (the route fails closed).
    pub fn new(rule: &rule::BasicAuth) -> Option<BasicAuth> {
        let users = rule.users.clone()?;
        let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\"", rule.realm)).ok()?;
        let mut fingerprint = openssl::sha::Sha256::new();
        for (user, hash) in &users.0 {
            let (kind, text, salt) = match hash {
                PasswordHash::Bcrypt(h) => ("bcrypt", h.as_str(), ""),
                PasswordHash::Sha1(h) => ("sha", h.as_str(), ""),
                PasswordHash::Apr1 { salt, digest } => ("apr1", digest.as_str(), salt.as_str()),
            };
            for part in [user.as_str(), kind, text, salt] {
                fingerprint.update(part.as_bytes());
                fingerprint.update(&[0]);
            }
        }
        Some(BasicAuth {
            rule: rule.clone(),
            users,
            fingerprint: fingerprint.finish(),
            challenge,
        })
    }

    /// What the verdict on an `Authorization` value is filed under.
    fn key(&self, authorization: &[u8]) -> [u8; 32] {
        let mut key = openssl::sha::Sha256::new();
        key.update(&self.fingerprint);
        key.update(authorization);
        key.finish()
    }

    /// Whether the client's `Authorization` header goes upstream.
    pub fn forwards_authorization(&self) -> bool {
        self.rule.forward_authorization
    }

    /// `Ok` when the request carries the credentials of a user of the Secret, else the 401
    /// challenge.
    pub async fn authorize(&self, req: &RequestHeader) -> Result<(), Refusal> {
        self.authorize_with(&VERDICTS, req).await
    }

    /// [`BasicAuth::authorize`] with the verdicts of `cache`.
    async fn authorize_with(
        &self,
        cache: &VerdictCache,
        req: &RequestHeader,
    ) -> Result<(), Refusal> {
        let challenge = || Refusal::Challenge {
            www_authenticate: self.challenge.clone(),
        };
        let mut values = req.headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(challenge());
        };
        let key = self.key(value.as_bytes());
        let now = Instant::now();
        if let Some(ok) = cache.get(&key, now) {
            return if ok { Ok(()) } else { Err(challenge()) };
        }
        let ok = match credentials(value.as_bytes()) {
            Some((user, password)) => match self.users.get(&user) {
                Some(PasswordHash::Bcrypt(h)) => {
                    // The semaphore is never closed; without a slot the request still waits
                    // for the verification.
                    let _slot = BCRYPT_SLOTS.acquire().await.ok();
                    let h = h.clone();
                    let verify = move || bcrypt::verify(password, &h).unwrap_or(false);
                    tokio::task::spawn_blocking(verify).await.unwrap_or(false)
                }
                Some(h) => verify_cheap(h, &password),
                None => false,
            },
            None => false,
        };
        cache.put(key, ok, now);
        if ok {
            Ok(())
        } else {
            Err(challenge())
        }
    }
}

/// Fills in the users of the snapshot's basic-auth rules from the Secrets in `material`
/// ([`rule::resolve`]): a missing or malformed Secret fails its Ingress closed and is reported.
/// Publishing and `sluice check` both use it.
pub fn resolve_secrets(snapshot: &mut Snapshot, material: &SecretMaterial) {
    rule::resolve(snapshot, |key| material.get(key)?.auth_content());
}

/// The user and password of an `Authorization: Basic <base64(user:password)>` value (the
/// scheme in any case); `None` for any other value. The password is bytes, as a client may
/// send any (the user must be UTF-8, as the Secret's users are).
fn credentials(value: &[u8]) -> Option<(String, Vec<u8>)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let token = token.trim();
    if token.is_empty() {
        return None;
    }
    let decoded = openssl::base64::decode_block(token).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?;
    let password = decoded.get(colon + 1..).unwrap_or_default().to_vec();
    (!user.is_empty()).then(|| (user.to_string(), password))
}

/// Checks a password against a `{SHA}` or apr1 hash, in constant time over the digest.
fn verify_cheap(hash: &PasswordHash, password: &[u8]) -> bool {
    let (want, got) = match hash {
        PasswordHash::Sha1(want) => (
            want.as_str(),
            openssl::base64::encode_block(&openssl::sha::sha1(password)),
        ),
        PasswordHash::Apr1 { salt, digest } => match apr1(password, salt.as_bytes()) {
            Some(got) => (digest.as_str(), got),
            None => return false,
        },
        PasswordHash::Bcrypt(_) => return false,
    };
    want.len() == got.len() && openssl::memcmp::eq(want.as_bytes(), got.as_bytes())
}

fn md5(parts: &[&[u8]]) -> Option<[u8; 16]> {
    let data: Vec<u8> = parts.concat();
    let digest = hash(MessageDigest::md5(), &data).ok()?;
    digest.as_ref().try_into().ok()
}

/// The 22-character digest of Apache's MD5 crypt (`$apr1$salt$digest`): FreeBSD's MD5 crypt
/// with the magic `$apr1$`.
pub fn apr1(password: &[u8], salt: &[u8]) -> Option<String> {
    const MAGIC: &[u8] = b"$apr1$";
    let alternate = md5(&[password, salt, password])?;
    let mut ctx: Vec<u8> = [password, MAGIC, salt].concat();
    for chunk in (0..password.len()).step_by(16) {
        ctx.extend_from_slice(&alternate[..(password.len() - chunk).min(16)]);
    }
    let mut n = password.len();
    while n > 0 {
        ctx.push(if n & 1 == 1 {
            0
        } else {
            password.first().copied().unwrap_or(0)
        });
        n >>= 1;
    }
    let mut fin = md5(&[&ctx])?;
    for i in 0..1000 {
        let mut round: Vec<u8> = Vec::with_capacity(password.len() * 2 + salt.len() + 32);
        round.extend_from_slice(if i & 1 == 1 { password } else { &fin });
        if i % 3 != 0 {
            round.extend_from_slice(salt);
        }
        if i % 7 != 0 {
            round.extend_from_slice(password);
        }
        round.extend_from_slice(if i & 1 == 1 { &fin } else { password });
        fin = md5(&[&round])?;
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |value: u32, chars: usize| {
        let mut v = value;
        for _ in 0..chars {
            out.push(char::from(ITOA64[(v & 0x3f) as usize]));
            v >>= 6;
        }
    };
    let b = |i: usize| u32::from(fin[i]);
    for (x, y, z) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((b(x) << 16) | (b(y) << 8) | b(z), 4);
    }
    put(b(11), 2);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(users: &[(&str, PasswordHash)]) -> rule::BasicAuth {
        rule::BasicAuth {
            secret: "users".into(),
            secret_type: rule::SecretType::AuthFile,
            realm: "Staff".into(),
            forward_authorization: false,
            users: Some(Arc::new(Users(
                users
                    .iter()
                    .map(|(u, h)| (u.to_string(), h.clone()))
                    .collect(),
            ))),
        }
    }

    fn request(authorization: &[&str]) -> RequestHeader {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        for value in authorization {
            req.append_header(header::AUTHORIZATION, *value).unwrap();
        }
        req
    }

    fn basic(user_password: &str) -> String {
        format!(
            "Basic {}",
            openssl::base64::encode_block(user_password.as_bytes())
        )
    }

    #[test]
    fn apr1_matches_the_digests_openssl_passwd_makes() {
        // `openssl passwd -apr1 -salt r31..... myPassword` and `-salt abcdefgh secret`.
        assert_eq!(
            apr1(b"myPassword", b"r31.....").as_deref(),
            Some("HqJZimcKQFAMYayBlzkrA/")
        );
        assert_eq!(
            apr1(b"secret", b"abcdefgh").as_deref(),
            Some("h9FWgUz3n9YxylKLlR5SQ/")
        );
        // A password longer than one MD5 block takes the same path as nginx's.
        let long = apr1(b"a password of more than sixteen bytes", b"salt").unwrap();
        assert_eq!(long.len(), 22);
        assert_ne!(apr1(b"secreT", b"abcdefgh"), apr1(b"secret", b"abcdefgh"));
    }

    #[test]
    fn credentials_are_read_from_a_basic_authorization_value_only() {
        let ok = |v: &str| credentials(v.as_bytes());
        assert_eq!(
            ok(&basic("ann:se:cret")),
            Some(("ann".into(), "se:cret".into()))
        );
        assert_eq!(ok(&basic("ann:")), Some(("ann".into(), "".into())));
        assert_eq!(
            ok(&basic("ann:x").replace("Basic", "bAsIc")),
            Some(("ann".into(), "x".into()))
        );
        // A password that is not UTF-8 is still a password.
        let latin1 = format!("Basic {}", openssl::base64::encode_block(b"ann:caf\xe9"));
        assert_eq!(ok(&latin1), Some(("ann".into(), b"caf\xe9".to_vec())));
        for bad in [
            basic(":x"),
            basic("no-colon"),
            "Bearer abc".into(),
            "Basic".into(),
            "Basic !!!".into(),
        ] {
            assert_eq!(ok(&bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_request_passes_only_with_one_header_naming_a_user_and_its_password() {
        let bcrypt = bcrypt::hash("secret", 4).unwrap();
        let auth = BasicAuth::new(&rule(&[
            ("ann", PasswordHash::Bcrypt(bcrypt)),
            (
                "bob",
                PasswordHash::Sha1("5en6G6MezRroT3XKqkdPOmY/BfQ=".into()),
            ),
        ]))
        .unwrap();
        let challenge = Err(Refusal::Challenge {
            www_authenticate: HeaderValue::from_static("Basic realm=\"Staff\""),
        });
        for (headers, want) in [
            (vec![basic("ann:secret")], Ok(())),
            (vec![basic("bob:secret")], Ok(())),
            (vec![basic("ann:wrong")], challenge.clone()),
            (vec![basic("carol:secret")], challenge.clone()),
            (vec![], challenge.clone()),
            (
                vec![basic("ann:secret"), basic("ann:secret")],
                challenge.clone(),
            ),
        ] {
            let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
            assert_eq!(auth.authorize(&request(&refs)).await, want, "{headers:?}");
        }
    }

    #[tokio::test]
    async fn the_verdict_cache_stays_within_its_bound_under_a_flood_of_credentials() {
        let auth = BasicAuth::new(&rule(&[(
            "bob",
            PasswordHash::Sha1("5en6G6MezRroT3XKqkdPOmY/BfQ=".into()),
        )]))
        .unwrap();
        let cache = VerdictCache::new();
        for i in 0..CACHE_MAX_ENTRIES * 2 + 7 {
            let header = basic(&format!("bob:guess{i}"));
            let req = request(&[&header]);
            assert!(auth.authorize_with(&cache, &req).await.is_err());
            assert!(cache.len() <= CACHE_MAX_ENTRIES);
        }
        // A verdict is remembered: the right password once checked is found in the cache.
        let header = basic("bob:secret");
        let req = request(&[&header]);
        assert!(auth.authorize_with(&cache, &req).await.is_ok());
        let key = auth.key(header.as_bytes());
        assert_eq!(cache.get(&key, Instant::now()), Some(true));
        assert_eq!(cache.get(&key, Instant::now() + CACHE_TTL), None);
    }

    #[tokio::test]
    async fn a_verdict_is_not_reused_once_the_users_change() {
        let sha = |p: &[u8]| openssl::base64::encode_block(&openssl::sha::sha1(p));
        let before = BasicAuth::new(&rule(&[("bob", PasswordHash::Sha1(sha(b"secret")))])).unwrap();
        let after = BasicAuth::new(&rule(&[("bob", PasswordHash::Sha1(sha(b"other")))])).unwrap();
        let header = basic("bob:secret");
        assert!(before.authorize(&request(&[&header])).await.is_ok());
        // The same header, the same user, a new password: refused, not found in the cache.
        assert!(after.authorize(&request(&[&header])).await.is_err());
        // Routes with the same users share the verdict.
        let same = BasicAuth::new(&rule(&[("bob", PasswordHash::Sha1(sha(b"secret")))])).unwrap();
        assert_eq!(same.key(header.as_bytes()), before.key(header.as_bytes()));
        assert_ne!(after.key(header.as_bytes()), before.key(header.as_bytes()));
    }
}
