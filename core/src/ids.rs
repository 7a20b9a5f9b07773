//! Ids as the IdP issues them: opaque strings, compared whole.
//!
//! `auth0|5f7c8ec7`, `google-oauth2|1078`, `42@acme`, UUIDs, e-mail addresses and
//! ids containing `/` are all fine. Refused: the empty string, control characters
//! and anything over [`MAX_ID_BYTES`].

use std::fmt;

/// The longest id accepted, in bytes of UTF-8.
pub const MAX_ID_BYTES: usize = 256;

/// Why an id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdError {
    Empty,
    TooLong,
    ControlCharacter,
}

impl fmt::Display for IdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdError::Empty => write!(f, "is empty"),
            IdError::TooLong => write!(f, "is longer than {MAX_ID_BYTES} bytes"),
            IdError::ControlCharacter => write!(f, "contains a control character"),
        }
    }
}

impl std::error::Error for IdError {}

/// Checks an id: any printable UTF-8 up to 256 bytes.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong);
    }
    if id.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter);
    }
    Ok(())
}

/// Percent-encodes every byte outside RFC 3986's unreserved set, so that an id holding
/// `/` (or `%`) can never collide with another when ids are joined with `/`.
pub fn percent_encode(id: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(id.len());
    for &b in id.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The inverse of [`percent_encode`]; `None` for a malformed escape or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_idp_ids_are_accepted() {
        for id in [
            "42",
            "auth0|5f7c8ec7",
            "google-oauth2|1078",
            "42@acme",
            "jane.doe+portal@example.com",
            "0b4c6c3e-7b1f-4a51-9d1e-2f0f3d3b8c11",
            "a/b",
            "Zoë ✓",
        ] {
            assert_eq!(validate_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn empty_long_and_control_ids_are_refused() {
        assert_eq!(validate_id(""), Err(IdError::Empty));
        assert_eq!(validate_id(&"x".repeat(257)), Err(IdError::TooLong));
        assert_eq!(validate_id(&"x".repeat(256)), Ok(()));
        assert_eq!(validate_id("a\nb"), Err(IdError::ControlCharacter));
        assert_eq!(validate_id("a\u{7f}"), Err(IdError::ControlCharacter));
    }

    #[test]
    fn percent_encoding_keeps_slashes_apart() {
        assert_eq!(percent_encode("auth0|5f"), "auth0%7C5f");
        assert_ne!(
            format!("{}/{}", percent_encode("a/b"), percent_encode("c")),
            format!("{}/{}", percent_encode("a"), percent_encode("b/c"))
        );
        assert_eq!(percent_encode("é"), "%C3%A9");
        for id in ["a/b", "auth0|5f", "é ✓", "%41"] {
            assert_eq!(percent_decode(&percent_encode(id)).as_deref(), Some(id));
        }
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
