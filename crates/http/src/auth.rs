//! Bearer tokens for the admin API (and, optionally, the read API).

use std::fmt;

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use subtle::ConstantTimeEq;

/// A bearer token. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token; `None` when `value` is empty (an empty token would let anyone in).
    pub fn new(value: impl Into<String>) -> Option<Self> {
        let value = value.into();
        (!value.is_empty()).then_some(Self(value))
    }

    /// Whether `presented` is this token, compared in constant time (only the length leaks).
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The token a request presents in `Authorization: Bearer <token>`.
pub(crate) fn presented(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether the request presents one of `accepted`.
pub(crate) fn allowed(headers: &HeaderMap, accepted: &[&Token]) -> bool {
    presented(headers).is_some_and(|p| accepted.iter().any(|t| t.matches(p)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn bearer_tokens() {
        let t = Token::new("s3cret").unwrap();
        assert!(Token::new("").is_none());
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        let mut h = HeaderMap::new();
        assert!(!allowed(&h, &[&t]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert!(allowed(&h, &[&t]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("bearer s3cret"));
        assert!(allowed(&h, &[&t]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer s3cre"));
        assert!(!allowed(&h, &[&t]));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic s3cret"));
        assert!(!allowed(&h, &[&t]));
    }
}
