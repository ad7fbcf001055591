//! Basic authentication of a route: the `sluice.dev/auth-*` annotations read into a
//! [`BasicAuth`] filter, and the users of its Secret read into [`Users`].
//!
//! | annotation | value |
//! |---|---|
//! | `sluice.dev/auth-type` | `basic` (the only type) |
//! | `sluice.dev/auth-secret` | the name of a Secret in the Ingress's namespace |
//! | `sluice.dev/auth-secret-type` | `auth-file` (default): an htpasswd file under the key `auth`; `auth-map`: one key per user, its value the hash |
//! | `sluice.dev/auth-realm` | the realm of the `WWW-Authenticate` challenge (default [`DEFAULT_REALM`]) |
//! | `sluice.dev/auth-forward-authorization` | `"true"`: the `Authorization` header goes upstream (removed by default) |
//!
//! The filter names its Secret; the Secret's content is read where the proxy holds it, and
//! [`resolve`] fills in the users when the snapshot is published. A Secret that is missing or
//! that holds no usable user list makes the Ingress's routes answer 503 (fail closed) and is
//! reported ([`Reason::MissingSecret`], [`Reason::InvalidSecret`]).
//!
//! Accepted hashes, one per user ([`PasswordHash`]): bcrypt (`$2a$`, `$2b$`, `$2x$`, `$2y$`, as
//! `htpasswd -B` writes), `{SHA}` (base64 of SHA-1, `htpasswd -s`) and `$apr1$` (Apache's MD5
//! crypt, `htpasswd -m`, the default of `htpasswd`). Crypt(3) DES and plain-text entries are
//! refused: the whole Secret is then invalid, never a partial user list.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::{Filter, Parser, RuleError};
use crate::annotations::parse_bool;
use crate::build::Snapshot;
use crate::finding::{Finding, Reason};
use crate::model::ObjectRef;

pub const AUTH_TYPE: &str = "sluice.dev/auth-type";
pub const AUTH_SECRET: &str = "sluice.dev/auth-secret";
pub const AUTH_SECRET_TYPE: &str = "sluice.dev/auth-secret-type";
pub const AUTH_REALM: &str = "sluice.dev/auth-realm";
pub const AUTH_FORWARD_AUTHORIZATION: &str = "sluice.dev/auth-forward-authorization";

/// The realm of the challenge when `sluice.dev/auth-realm` sets none.
pub const DEFAULT_REALM: &str = "Authentication Required";
/// The Secret key that holds the htpasswd file of an `auth-file` Secret.
pub const AUTH_FILE_KEY: &str = "auth";
/// The longest realm accepted, in bytes.
pub const MAX_REALM_BYTES: usize = 256;

/// How the Secret lists its users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecretType {
    /// An htpasswd file under the key `auth`.
    AuthFile,
    /// One key per user, its value the user's hash.
    AuthMap,
}

/// The `sluice.dev/auth-type: basic` rule of a route.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BasicAuth {
    /// The Secret's name, in the Ingress's namespace.
    pub secret: String,
    pub secret_type: SecretType,
    /// The realm of the challenge: visible ASCII and spaces, no `"` or `\`.
    pub realm: String,
    /// Whether the client's `Authorization` header goes upstream.
    pub forward_authorization: bool,
    /// The users of the Secret, filled in by [`resolve`]; `None` until then.
    pub users: Option<Arc<Users>>,
}

impl fmt::Display for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.secret_type {
            SecretType::AuthFile => "auth-file",
            SecretType::AuthMap => "auth-map",
        };
        write!(
            f,
            "basic auth {} ({kind}) realm \"{}\"",
            self.secret, self.realm
        )?;
        if self.forward_authorization {
            f.write_str(" forward-authorization")?;
        }
        Ok(())
    }
}

/// A user's password hash, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PasswordHash {
    /// A bcrypt hash, as written (`$2y$05$...`, 60 characters).
    Bcrypt(String),
    /// `{SHA}` entries: the base64 of the SHA-1 of the password, as written (28 characters).
    Sha1(String),
    /// `$apr1$salt$digest`: the salt (up to 8 characters) and the 22-character digest.
    Apr1 { salt: String, digest: String },
}

/// The users of an auth Secret: name to hash, sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Users(pub BTreeMap<String, PasswordHash>);

impl Users {
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.0.get(user)
    }
}

/// Why an auth Secret's content cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsersError {
    #[error("has no `{AUTH_FILE_KEY}` key")]
    NoAuthKey,
    #[error("lists no user")]
    Empty,
    #[error("{at} is not UTF-8 text")]
    NotText { at: String },
    #[error("{at} is not `user:hash`")]
    NotAnEntry { at: String },
    #[error("{at}: user `{user}` is listed twice")]
    RepeatedUser { at: String, user: String },
    #[error(
        "{at}: the hash of user `{user}` is not bcrypt ($2y$...), {{SHA}} or $apr1$ (crypt and plain text are not accepted)"
    )]
    UnsupportedHash { at: String, user: String },
}

/// Reads a password hash; `None` for a kind sluice does not accept or a malformed one.
pub fn parse_hash(text: &str) -> Option<PasswordHash> {
    let b64 = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/')
    };
    if let Some(rest) = text.strip_prefix("{SHA}") {
        let ok = rest.len() == 28
            && rest.ends_with('=')
            && rest[..27]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
        return ok.then(|| PasswordHash::Sha1(rest.to_string()));
    }
    if let Some(rest) = text.strip_prefix("$apr1$") {
        let (salt, digest) = rest.split_once('$')?;
        let ok = !salt.is_empty() && salt.len() <= 8 && digest.len() == 22;
        return (ok && b64(salt) && b64(digest)).then(|| PasswordHash::Apr1 {
            salt: salt.to_string(),
            digest: digest.to_string(),
        });
    }
    let bcrypt = ["$2a$", "$2b$", "$2x$", "$2y$"]
        .iter()
        .any(|p| text.starts_with(p));
    let cost = text.get(4..6).and_then(|c| c.parse::<u32>().ok());
    let ok = bcrypt
        && text.len() == 60
        && text.as_bytes().get(6) == Some(&b'$')
        && cost.is_some_and(|c| (4..=31).contains(&c))
        && b64(&text[7..]);
    ok.then(|| PasswordHash::Bcrypt(text.to_string()))
}

/// The users of an htpasswd file: `user:hash` lines; empty lines and `#` comments skipped.
pub fn parse_htpasswd(text: &[u8]) -> Result<Users, UsersError> {
    let text = std::str::from_utf8(text).map_err(|_| UsersError::NotText {
        at: format!("key `{AUTH_FILE_KEY}`"),
    })?;
    let entries = text
        .lines()
        .enumerate()
        .map(|(i, line)| (i, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(i, line)| {
            let at = format!("line {}", i + 1);
            match line.split_once(':') {
                Some((user, hash)) if !user.is_empty() => Ok((at, user, hash)),
                _ => Err(UsersError::NotAnEntry { at }),
            }
        });
    collect(entries)
}

/// The users of an `auth-map` Secret: each key a user, its value the hash.
pub fn parse_auth_map<'a>(
    data: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Users, UsersError> {
    let entries = data.into_iter().map(|(user, value)| {
        let at = format!("key `{user}`");
        let hash =
            std::str::from_utf8(value).map_err(|_| UsersError::NotText { at: at.clone() })?;
        Ok((at, user, hash.trim()))
    });
    collect(entries)
}

fn collect<'a>(
    entries: impl Iterator<Item = Result<(String, &'a str, &'a str), UsersError>>,
) -> Result<Users, UsersError> {
    let mut users = BTreeMap::new();
    for entry in entries {
        let (at, user, hash) = entry?;
        let user = user.to_string();
        let Some(hash) = parse_hash(hash) else {
            return Err(UsersError::UnsupportedHash { at, user });
        };
        if users.contains_key(&user) {
            return Err(UsersError::RepeatedUser { at, user });
        }
        users.insert(user, hash);
    }
    if users.is_empty() {
        return Err(UsersError::Empty);
    }
    Ok(Users(users))
}

/// What [`resolve`] knows of an auth Secret: `None` when no such Secret is held, else its keys
/// with their bytes.
pub type SecretContent<'a> = Option<Vec<(&'a str, &'a [u8])>>;

/// The users of `rule`'s Secret from its `content`; `Err` is the finding's reason and message.
pub fn users_of(rule: &BasicAuth, content: SecretContent<'_>) -> Result<Users, (Reason, String)> {
    let Some(data) = content else {
        return Err((
            Reason::MissingSecret,
            format!(
                "annotation `{AUTH_SECRET}`: Secret `{}` does not exist; the Ingress's routes answer 503",
                rule.secret
            ),
        ));
    };
    let users = match rule.secret_type {
        SecretType::AuthFile => data
            .iter()
            .find(|(k, _)| *k == AUTH_FILE_KEY)
            .ok_or(UsersError::NoAuthKey)
            .and_then(|(_, v)| parse_htpasswd(v)),
        SecretType::AuthMap => parse_auth_map(data),
    };
    users.map_err(|e| {
        (
            Reason::InvalidSecret,
            format!(
                "annotation `{AUTH_SECRET}`: Secret `{}` {e}; the Ingress's routes answer 503",
                rule.secret
            ),
        )
    })
}

/// Fills in the users of every basic-auth filter of `snapshot` from the Secrets `content`
/// returns (asked with the Secret's `namespace/name`). An Ingress whose Secret is missing or
/// unusable has its filters replaced by [`Filter::Invalid`] (its routes answer 503) and is
/// reported in the snapshot's findings.
pub fn resolve<'a>(
    snapshot: &mut Snapshot,
    mut content: impl FnMut(&ObjectRef) -> SecretContent<'a>,
) {
    let mut found = Vec::new();
    for ingress in &mut snapshot.ingresses {
        let Some(rule) = ingress.filters.iter().find_map(|f| match f {
            Filter::BasicAuth(rule) => Some(rule),
            _ => None,
        }) else {
            continue;
        };
        let key = ObjectRef::new(&ingress.object.namespace, &rule.secret);
        let filters: Arc<[Filter]> = match users_of(rule, content(&key)) {
            Ok(users) => {
                let users = Arc::new(users);
                ingress
                    .filters
                    .iter()
                    .map(|f| match f {
                        Filter::BasicAuth(rule) => Filter::BasicAuth(BasicAuth {
                            users: Some(users.clone()),
                            ..rule.clone()
                        }),
                        f => f.clone(),
                    })
                    .collect()
            }
            Err((reason, message)) => {
                found.push(Finding {
                    ingress: ingress.object.clone(),
                    reason,
                    message,
                });
                Arc::new([Filter::Invalid])
            }
        };
        ingress.filters = filters;
    }
    if !found.is_empty() {
        snapshot.skipped.extend(found);
        snapshot.skipped.sort();
    }
}

/// The Secret an Ingress's basic auth reads, by name in its namespace; `None` without
/// `sluice.dev/auth-type: basic` (or with values [`filter`] refuses).
pub fn secret_of(namespace: &str, annotations: &BTreeMap<String, String>) -> Option<ObjectRef> {
    if annotations.get(AUTH_TYPE).map(|v| v.trim()) != Some("basic") {
        return None;
    }
    let name = annotations.get(AUTH_SECRET)?.trim();
    is_secret_name(name).then(|| ObjectRef::new(namespace, name))
}

/// A Secret name: a DNS subdomain (lowercase labels joined by dots, 253 bytes at most).
fn is_secret_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(crate::routes::is_dns_label)
}

fn parse_type(text: &str) -> Result<(), RuleError> {
    match text.trim() {
        "basic" => Ok(()),
        _ => Err(RuleError::NotOneOf("basic")),
    }
}

fn parse_secret(text: &str) -> Result<String, RuleError> {
    let name = text.trim();
    if is_secret_name(name) {
        Ok(name.to_string())
    } else {
        Err(RuleError::NotASecretName)
    }
}

fn parse_secret_type(text: &str) -> Result<SecretType, RuleError> {
    match text.trim() {
        "auth-file" => Ok(SecretType::AuthFile),
        "auth-map" => Ok(SecretType::AuthMap),
        _ => Err(RuleError::NotOneOf("auth-file, auth-map")),
    }
}

fn parse_realm(text: &str) -> Result<String, RuleError> {
    let realm = text.trim();
    let ok = !realm.is_empty()
        && realm.len() <= MAX_REALM_BYTES
        && realm
            .bytes()
            .all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\');
    if ok {
        Ok(realm.to_string())
    } else {
        Err(RuleError::NotARealm)
    }
}

/// The basic-auth filter the annotations ask for; a refused value is recorded in `p`. The
/// other `auth-*` keys without `auth-type` are refused as unused, so a typo fails closed
/// instead of leaving the route open.
pub(super) fn filter(p: &mut Parser<'_>) -> Option<Filter> {
    let wanted = p.get(AUTH_TYPE, parse_type);
    let secret = p.get(AUTH_SECRET, parse_secret);
    let secret_type = p.get(AUTH_SECRET_TYPE, parse_secret_type);
    let realm = p.get(AUTH_REALM, parse_realm);
    let forward = p.get(AUTH_FORWARD_AUTHORIZATION, |v| Ok(parse_bool(v)?));
    let present = |p: &Parser<'_>, key| p.annotations.contains_key(key);
    if !present(p, AUTH_TYPE) {
        for key in [
            AUTH_SECRET,
            AUTH_SECRET_TYPE,
            AUTH_REALM,
            AUTH_FORWARD_AUTHORIZATION,
        ] {
            if present(p, key) {
                p.refuse(key, RuleError::Unused { needs: AUTH_TYPE });
            }
        }
        return None;
    }
    wanted?;
    if !present(p, AUTH_SECRET) {
        p.refuse(AUTH_TYPE, RuleError::Unused { needs: AUTH_SECRET });
        return None;
    }
    Some(Filter::BasicAuth(BasicAuth {
        secret: secret?,
        secret_type: secret_type.unwrap_or(SecretType::AuthFile),
        realm: realm.unwrap_or_else(|| DEFAULT_REALM.to_string()),
        forward_authorization: forward.unwrap_or(false),
        users: None,
    }))
}

#[cfg(test)]
#[path = "basic_auth_tests.rs"]
mod tests;
