//! Bearer tokens: named, each with a role (`read`, `operate`, `admin`, each allowing what the
//! one before it does) and optionally limited to one client. A token's secret is kept only as
//! its SHA-256 and compared in constant time; its `Debug` shows its name and role, never the
//! secret.

use std::fmt;

use failed_tasks_domain::ClientId;
use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::HttpConfig;

/// A bearer token's secret. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token; `None` when `value` is empty (an empty token would let anyone in).
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.is_empty()).then_some(Self(value))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a token may do. Each role allows everything the roles before it allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Every read: the listings, one task, statistics, groups, notifications.
    Read,
    /// Also the operator's actions: retry, cancel, resolve (one task or every match).
    Operate,
    /// Also recording and removing failures and reporting attempts.
    Admin,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 3] = [Role::Read, Role::Operate, Role::Admin];

    /// The role's name in settings and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    /// The role named `name`, if any.
    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A token with a name (shown in logs and in what it did), a role and, optionally, the one
/// client whose failures it may see and act on.
#[derive(Clone)]
pub struct NamedToken {
    name: String,
    role: Role,
    client: Option<ClientId>,
    hash: [u8; 32],
}

impl NamedToken {
    /// A token called `name` with `role` whose secret is `secret`; `None` when the secret is
    /// empty. Only the secret's SHA-256 is kept.
    pub fn new(name: impl Into<String>, role: Role, secret: &str) -> Option<Self> {
        (!secret.is_empty()).then(|| Self {
            name: name.into(),
            role,
            client: None,
            hash: digest(secret),
        })
    }

    /// The same token, limited to `client`: every read and action it makes is filtered to
    /// that client's failures.
    pub fn limited_to(mut self, client: ClientId) -> Self {
        self.client = Some(client);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The client it is limited to, if any.
    pub fn client(&self) -> Option<&ClientId> {
        self.client.as_ref()
    }
}

impl fmt::Debug for NamedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NamedToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("client", &self.client)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Every token the adapter accepts: the named ones and the single-token settings
/// (`admin_token` as a token named `admin`, `operate_token` as `operate`, `read_token` as
/// `read`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Tokens {
    all: Vec<NamedToken>,
}

impl Tokens {
    pub(crate) fn of(config: &HttpConfig) -> Tokens {
        let single = [
            (&config.admin_token, Role::Admin),
            (&config.operate_token, Role::Operate),
            (&config.read_token, Role::Read),
        ];
        let mut all: Vec<NamedToken> = single
            .into_iter()
            .filter_map(|(token, role)| NamedToken::new(role.as_str(), role, &token.as_ref()?.0))
            .collect();
        all.extend(config.tokens.iter().cloned());
        Tokens { all }
    }

    /// The token presented in `headers`, if it is one of ours. Every token is compared (in
    /// constant time), so the time taken does not tell which one matched.
    pub(crate) fn caller(&self, headers: &HeaderMap) -> Option<&NamedToken> {
        let presented = digest(presented(headers)?);
        let mut found = None;
        for token in &self.all {
            if bool::from(token.hash.ct_eq(&presented)) && found.is_none() {
                found = Some(token);
            }
        }
        found
    }

    /// Whether some token has `role` or a higher one.
    pub(crate) fn any_with(&self, role: Role) -> bool {
        self.all.iter().any(|t| t.role >= role)
    }

    /// Whether the read routes need a token: as soon as a `read` token or a token limited to
    /// one client is configured (otherwise such a token would limit nothing).
    pub(crate) fn reads_need_a_token(&self) -> bool {
        self.all
            .iter()
            .any(|t| t.role == Role::Read || t.client.is_some())
    }
}

/// Problems with a set of tokens that no single token shows: two with the same name or the
/// same secret. Names the tokens, never a secret.
pub fn check_tokens(config: &HttpConfig) -> Result<(), String> {
    let all = Tokens::of(config).all;
    for (i, a) in all.iter().enumerate() {
        for b in &all[..i] {
            if a.name == b.name {
                return Err(format!("two tokens are named {:?}", a.name));
            }
            if a.hash == b.hash {
                return Err(format!(
                    "the tokens {:?} and {:?} have the same secret",
                    b.name, a.name
                ));
            }
        }
    }
    Ok(())
}

/// The token a request presents in `Authorization: Bearer <token>`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn config(tokens: Vec<NamedToken>) -> HttpConfig {
        HttpConfig {
            admin_token: Token::new("s3cret"),
            tokens,
            ..HttpConfig::default()
        }
    }

    #[test]
    fn bearer_tokens() {
        let t = Token::new("s3cret").unwrap();
        assert!(Token::new("").is_none());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        let tokens = Tokens::of(&config(Vec::new()));
        let mut h = HeaderMap::new();
        assert!(tokens.caller(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(tokens.caller(&h).map(NamedToken::name), Some("admin"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer s3cret"));
        assert!(tokens.caller(&h).is_some());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cre"));
        assert!(tokens.caller(&h).is_none());
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic s3cret"));
        assert!(tokens.caller(&h).is_none());
    }

    #[test]
    fn named_tokens_show_no_secret_and_roles_are_ordered() {
        let t = NamedToken::new("alice", Role::Operate, "hunter2-secret").unwrap();
        let shown = format!("{t:?}");
        assert!(
            shown.contains("alice") && shown.contains("Operate"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(NamedToken::new("x", Role::Read, "").is_none());
        assert!(Role::Read < Role::Operate && Role::Operate < Role::Admin);
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn duplicate_names_and_secrets_are_refused_without_showing_the_secret() {
        let same_name = config(vec![NamedToken::new("admin", Role::Read, "other").unwrap()]);
        let err = check_tokens(&same_name).unwrap_err();
        assert!(err.contains("\"admin\""), "{err}");
        let same_secret = config(vec![NamedToken::new("bob", Role::Read, "s3cret").unwrap()]);
        let err = check_tokens(&same_secret).unwrap_err();
        assert!(err.contains("bob") && !err.contains("s3cret"), "{err}");
        assert!(check_tokens(&config(vec![
            NamedToken::new("bob", Role::Read, "b").unwrap()
        ]))
        .is_ok());
    }

    #[test]
    fn reads_need_a_token_once_a_read_or_client_limited_token_exists() {
        assert!(!Tokens::of(&config(Vec::new())).reads_need_a_token());
        let op = NamedToken::new("op", Role::Operate, "o").unwrap();
        assert!(!Tokens::of(&config(vec![op.clone()])).reads_need_a_token());
        let limited = op.limited_to(ClientId::parse("c1").unwrap());
        assert!(Tokens::of(&config(vec![limited])).reads_need_a_token());
        let reader = NamedToken::new("r", Role::Read, "r").unwrap();
        assert!(Tokens::of(&config(vec![reader])).reads_need_a_token());
    }
}
