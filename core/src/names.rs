//! Header and cookie names as app servers read them.
//!
//! - **Headers.** CGI, WSGI, Rack and PHP present `X-Epochgate-User` and
//!   `X_Epochgate_User` alike as `HTTP_X_EPOCHGATE_USER`, so two names are the same
//!   header when they agree ignoring ASCII case and `-` vs `_` ([`same_header_name`]).
//! - **Cookies.** PHP percent-decodes a cookie name (`+` as a space), turns ` `, `.` and
//!   `[` into `_` (and reads `name[key]` as an array under `name`), stops at a NUL byte,
//!   and keeps the first of two equal names; ASP.NET compares names case-insensitively.
//!   [`CookieName`] holds a configured name in that reduced form, so any spelling an app
//!   might read as it is recognised.

use crate::path::hex;

/// Whether two header names are one header to a CGI-style app: equal ignoring ASCII case
/// and `-` vs `_`.
#[inline]
pub fn same_header_name(a: &str, b: &str) -> bool {
    same_header_name_bytes(a.as_bytes(), b.as_bytes())
}

/// Whether `name` starts with `prefix` in the sense of [`same_header_name`].
#[inline]
pub fn header_name_starts_with(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && same_header_name_bytes(&name.as_bytes()[..prefix.len()], prefix.as_bytes())
}

#[inline]
fn same_header_name_bytes(a: &[u8], b: &[u8]) -> bool {
    let fold = |c: u8| match c {
        b'_' => b'-',
        c => c.to_ascii_lowercase(),
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// The bytes of a cookie name as PHP & co. read it: percent-decoded (`+` a space), cut
/// at a NUL, ` `/`.`/`[` as `_`, ASCII lower case. With `array_base`, the name stops at
/// its first (decoded) `[`, as PHP's `name[key]` does. No allocation.
fn reduced(raw: &[u8], array_base: bool) -> impl Iterator<Item = u8> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let b = *raw.get(i)?;
        let (byte, len) = match b {
            b'%' => match (
                raw.get(i + 1).and_then(|h| hex(*h)),
                raw.get(i + 2).and_then(|l| hex(*l)),
            ) {
                (Some(h), Some(l)) => (h * 16 + l, 3),
                _ => (b'%', 1),
            },
            b'+' => (b' ', 1),
            b => (b, 1),
        };
        i += len;
        Some(byte)
    })
    .take_while(move |b| *b != 0 && !(array_base && *b == b'['))
    .map(|b| match b {
        b' ' | b'.' | b'[' => b'_',
        b => b.to_ascii_lowercase(),
    })
}

/// A configured cookie name and its reduced form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieName {
    name: String,
    reduced: Vec<u8>,
}

impl CookieName {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            reduced: reduced(name.as_bytes(), false).collect(),
        }
    }

    /// The name exactly as configured.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether an app may read a cookie named `raw` (as sent, untrimmed is fine) as this
    /// one: the exact name, or any spelling that decodes or canonicalizes to it.
    pub fn is_read_as(&self, raw: &[u8]) -> bool {
        let raw = raw.trim_ascii();
        reduced(raw, false).eq(self.reduced.iter().copied())
            || (raw.contains(&b'[') || raw.windows(3).any(|w| w.eq_ignore_ascii_case(b"%5b")))
                && reduced(raw, true).eq(self.reduced.iter().copied())
    }

    /// Whether `raw` is this name byte for byte (after trimming).
    pub fn is_exactly(&self, raw: &[u8]) -> bool {
        raw.trim_ascii() == self.name.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_match_whatever_their_case_and_dash_or_underscore() {
        assert!(same_header_name("x-epochgate-user", "X_Epochgate_User"));
        assert!(same_header_name("x_epochgate_user", "x-epochgate-user"));
        assert!(!same_header_name("x-epochgate-user", "x-epochgate-users"));
        assert!(!same_header_name("xaepochgate-user", "x-epochgate-user"));
        assert!(header_name_starts_with("X_EPOCHGATE_ROLE", "x-epochgate-"));
        assert!(!header_name_starts_with("x-epoch", "x-epochgate-"));
        // Never panics on a name that is not ASCII.
        assert!(!header_name_starts_with("x-epochgaté-user", "x-epochgate-"));
    }

    #[test]
    fn cookie_names_that_php_or_aspnet_read_as_the_session_cookie() {
        let c = CookieName::new("portal_session");
        for raw in [
            "portal_session",
            " portal_session ",
            "portal%5Fsession",
            "portal%5fsession",
            "portal.session",
            "portal session",
            "portal+session",
            "portal[session",
            "Portal_Session",
            "PORTAL%5FSESSION",
            "portal_session[x]",
            "portal_session%5Bx%5D",
            "portal_session%00junk",
            "%70ortal_session",
        ] {
            assert!(c.is_read_as(raw.as_bytes()), "{raw}");
        }
        for raw in [
            "portal_sessions",
            "portal-session",
            "portalsession",
            "session",
            "x[portal_session]",
        ] {
            assert!(!c.is_read_as(raw.as_bytes()), "{raw}");
        }
        assert!(c.is_exactly(b" portal_session"));
        assert!(!c.is_exactly(b"portal%5Fsession"));
    }

    #[test]
    fn a_configured_name_with_a_dot_is_read_as_its_underscore_form() {
        let c = CookieName::new("portal.session");
        assert!(c.is_read_as(b"portal_session"));
        assert!(c.is_read_as(b"portal.session"));
    }
}
