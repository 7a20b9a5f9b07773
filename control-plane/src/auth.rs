//! Bearer secrets: digests compared in constant time, the token checks, and the bearer
//! header parser. Who may do what (admin token, API keys, admin JWTs, the edge token) is
//! in [`crate::rbac`].
//!
//! Tokens are compared as SHA-256 digests with a constant-time fold, so neither the
//! position of the first wrong byte nor the token's length shows in the response time.
//! The edge token is deliberately a separate credential: it sits in every Envoy's
//! environment and can only read `/v1/sync`; the admin token can only act, never sync.

use std::fmt;

/// The shortest token accepted: shorter ones are guessable.
pub const MIN_TOKEN_LEN: usize = 16;

/// A configured token, kept as its digest. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret {
    digest: [u8; 32],
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    pub fn new(token: &str) -> Self {
        Secret {
            digest: hmac_sha256::Hash::hash(token.as_bytes()),
        }
    }

    /// The SHA-256 of the token.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// Whether `presented` is this token, in time independent of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let other = hmac_sha256::Hash::hash(presented.as_bytes());
        let diff = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Why a token cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "{name} is {len} characters; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)"
    )]
    TooShort { name: &'static str, len: usize },
    #[error("{name} contains whitespace or control characters; it must fit in an `Authorization: Bearer` header")]
    BadCharacters { name: &'static str },
    #[error("the admin token and the edge token must differ: the edge token is handed to every edge proxy")]
    Same,
}

pub(crate) fn check(name: &'static str, token: &str) -> Result<(), TokenError> {
    let len = token.chars().count();
    if len < MIN_TOKEN_LEN {
        return Err(TokenError::TooShort { name, len });
    }
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::BadCharacters { name });
    }
    Ok(())
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive).
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-token-0123456789";
    const EDGE: &str = "edge-token-0123456789";

    #[test]
    fn secrets_match_only_themselves() {
        let s = Secret::new(ADMIN);
        assert!(s.matches(ADMIN));
        assert!(!s.matches(EDGE));
        assert!(!s.matches("admin-token-012345678"));
        assert!(!s.matches(""));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused() {
        assert_eq!(
            check("the admin token", "short").unwrap_err(),
            TokenError::TooShort {
                name: "the admin token",
                len: 5
            }
        );
        assert!(matches!(
            check("x", "admin token 0123456789").unwrap_err(),
            TokenError::BadCharacters { .. }
        ));
        assert!(check("x", ADMIN).is_ok());
        let msg = TokenError::TooShort {
            name: "the admin token",
            len: 3,
        }
        .to_string();
        assert!(msg.contains("at least 16"), "{msg}");
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer "), None);
    }

    #[test]
    fn secret_debug_hides_the_token() {
        assert_eq!(format!("{:?}", Secret::new(ADMIN)), "Secret(..)");
    }
}
