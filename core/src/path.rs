//! The path as the app will read it, for matching route prefixes.
//!
//! App servers do not read the bytes of a path the way a proxy compares them: servlet
//! containers drop `;params` from every segment (`/;/admin` is `//admin`, i.e. `/admin`),
//! most frameworks percent-decode before routing (`/%61dmin` is `/admin`), some decode
//! twice or turn `\` into `/`, many treat `/Admin` as `/admin`, and workerd, unlike Envoy
//! with `merge_slashes`, hands over `//admin` as it came. So a route rule applies to a
//! path only when every common reading of it agrees:
//!
//! - [`canonical`] gives the path an app resolves — query cut off, `%XX` of ordinary
//!   characters decoded, runs of `/` merged — or says why the path is [`Ambiguous`]:
//!   any `;` or `#`, a `\`, an escape of `/`, `\`, `.`, `;` or `%`, a bad escape, a dot segment,
//!   a byte outside visible ASCII (an unreadable, e.g. non-UTF-8, path), a decoded
//!   character whose case folds to ASCII in some runtimes (`İ`, `ı`, `ſ`, the Kelvin sign).
//! - [`RoutePrefix::matches`] matches on segment boundaries: `/login` matches `/login`,
//!   `/login/…` (and `/login?…`, the query being cut), never `/loginx` or `/login-admin`;
//!   a prefix written with a trailing `*` (`/assets*`) matches any path that starts with
//!   the rest.
//!
//! What a glue does with an ambiguous path is in [`crate::decision`]: the strictest rule
//! (token required, no exemption), never the default.

use std::borrow::Cow;
use std::fmt;

/// Why a path has no single reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ambiguous {
    /// Not an absolute path (`*`, empty).
    NotAbsolute,
    /// A `#`: no client sends a fragment; an app may cut the path there or not.
    Fragment,
    /// A byte outside visible ASCII: space, control, or a raw non-ASCII (e.g. non-UTF-8)
    /// byte, which apps decode as Latin-1, UTF-8 or not at all.
    Unreadable,
    /// `;`: servlet containers drop `;params` from every segment before they resolve it.
    Parameter,
    /// `\`: some servers read it as `/`.
    Backslash,
    /// `%2F`, `%5C`, `%2E`, `%3B` or `%25`: decoded once or twice, the path changes shape.
    EncodedSeparator,
    /// A `%` not followed by two hex digits, or an escape of a control byte or of bytes
    /// that are not UTF-8.
    BadEscape,
    /// A `.` or `..` segment (Envoy's `normalize_path` removes them; an app may resolve
    /// them differently).
    DotSegment,
    /// A decoded character whose lower or upper case is ASCII in some runtimes (Java's
    /// `equalsIgnoreCase("İ", "i")`): `/ADMİN` may route to `/admin`.
    CaseFold,
    /// The route rule depends on letter case (`/Admin` vs `/admin`) while routes are
    /// matched case-sensitively: many upstreams treat both the same.
    LetterCase,
}

impl Ambiguous {
    pub fn describe(self) -> &'static str {
        match self {
            Ambiguous::NotAbsolute => "not an absolute path",
            Ambiguous::Fragment => "a `#`",
            Ambiguous::Unreadable => "a byte outside visible ASCII",
            Ambiguous::Parameter => "a `;` path parameter",
            Ambiguous::Backslash => "a backslash",
            Ambiguous::EncodedSeparator => "an encoded `/`, `\\`, `.`, `;` or `%`",
            Ambiguous::BadEscape => "a malformed or control-byte `%` escape",
            Ambiguous::DotSegment => "a dot segment",
            Ambiguous::CaseFold => "a character whose case folds to ASCII",
            Ambiguous::LetterCase => "its route depends on letter case",
        }
    }
}

impl fmt::Display for Ambiguous {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// The value of a hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path an app resolves, for route matching: the query cut off,
/// `%XX` escapes of ordinary characters decoded, runs of `/` merged into one. Borrowed
/// (no allocation) unless there was something to decode or merge.
pub fn canonical(path: &str) -> Result<Cow<'_, str>, Ambiguous> {
    let end = path.find('?').unwrap_or(path.len());
    let path = &path[..end];
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(Ambiguous::NotAbsolute);
    }
    let mut rewrite = false;
    let mut prev = 0u8;
    for &b in bytes {
        match b {
            b';' => return Err(Ambiguous::Parameter),
            b'#' => return Err(Ambiguous::Fragment),
            b'\\' => return Err(Ambiguous::Backslash),
            b'%' => rewrite = true,
            b'/' if prev == b'/' => rewrite = true,
            0x21..=0x7e => {}
            _ => return Err(Ambiguous::Unreadable),
        }
        prev = b;
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return Err(Ambiguous::DotSegment);
    }
    if !rewrite {
        return Ok(Cow::Borrowed(path));
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(Ambiguous::BadEscape);
            };
            let decoded = h * 16 + l;
            match decoded {
                b'/' | b'\\' | b'.' | b';' | b'%' => return Err(Ambiguous::EncodedSeparator),
                0x00..=0x1f | 0x7f => return Err(Ambiguous::BadEscape),
                _ => out.push(decoded),
            }
            i += 3;
            continue;
        }
        if !(b == b'/' && out.last() == Some(&b'/')) {
            out.push(b);
        }
        i += 1;
    }
    let decoded = String::from_utf8(out).map_err(|_| Ambiguous::BadEscape)?;
    // Their simple case mappings land in ASCII: ı→I, İ→i (Java), ſ→S, K (Kelvin)→k.
    if decoded.contains(['\u{130}', '\u{131}', '\u{17f}', '\u{212a}']) {
        return Err(Ambiguous::CaseFold);
    }
    Ok(Cow::Owned(decoded))
}

/// A route prefix, as configured: `stem`, and whether it ended with `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePrefix {
    /// Without the `*`; canonical (see [`RoutePrefix::parse`]).
    pub stem: String,
    /// `true` for `/assets*`: any path starting with the stem, segment boundary or not.
    pub wildcard: bool,
}

impl RoutePrefix {
    /// A prefix as written in the configuration: an absolute path in the form an app
    /// reads it (no escapes, `;`, `\`, `//`, dot segments, query), optionally ending with
    /// `*`; with `fold`, in lower case.
    pub fn parse(written: &str, fold: bool) -> Result<Self, String> {
        let (stem, wildcard) = match written.strip_suffix('*') {
            Some(stem) => (stem, true),
            None => (written, false),
        };
        if !stem.starts_with('/') {
            return Err("must start with `/`".into());
        }
        if stem.contains('*') {
            return Err("`*` may only end a prefix".into());
        }
        match canonical(stem) {
            Ok(Cow::Borrowed(c)) if c.len() == stem.len() => {}
            _ => {
                return Err(
                    "must be a path as the app reads it: no `%` escapes, `;`, `\\`, `//`, dot \
                     segments, query or spaces"
                        .into(),
                )
            }
        }
        let stem = if fold {
            stem.to_ascii_lowercase()
        } else {
            stem.to_string()
        };
        Ok(Self { stem, wildcard })
    }

    /// Whether a canonical path lies under this prefix: the stem followed by nothing or a
    /// `/` (or anything, for a wildcard).
    pub fn matches(&self, path: &str) -> bool {
        self.matches_with(path, |a, b| a == b)
    }

    /// [`RoutePrefix::matches`], ignoring ASCII case.
    pub fn matches_ignoring_case(&self, path: &str) -> bool {
        self.matches_with(path, <[u8]>::eq_ignore_ascii_case)
    }

    fn matches_with(&self, path: &str, eq: impl Fn(&[u8], &[u8]) -> bool) -> bool {
        let (p, stem) = (path.as_bytes(), self.stem.as_bytes());
        p.len() >= stem.len()
            && eq(&p[..stem.len()], stem)
            && (self.wildcard
                || stem.ends_with(b"/")
                || matches!(p.get(stem.len()), None | Some(b'/')))
    }
}

impl fmt::Display for RoutePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.stem, if self.wildcard { "*" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed_and_lose_only_their_query() {
        assert!(matches!(
            canonical("/api/orders"),
            Ok(Cow::Borrowed("/api/orders"))
        ));
        assert_eq!(canonical("/login?next=/admin").unwrap(), "/login");
        assert_eq!(canonical("/a?q#frag").unwrap(), "/a");
        assert_eq!(canonical("/login#/../admin"), Err(Ambiguous::Fragment));
        assert_eq!(canonical("/").unwrap(), "/");
    }

    #[test]
    fn slashes_merge_and_ordinary_escapes_decode_as_an_app_reads_them() {
        assert_eq!(canonical("//admin//users/").unwrap(), "/admin/users/");
        assert_eq!(canonical("/%61dmin").unwrap(), "/admin");
        assert_eq!(
            canonical("/files/my%20doc.pdf").unwrap(),
            "/files/my doc.pdf"
        );
        assert_eq!(canonical("/caf%C3%A9").unwrap(), "/café");
    }

    #[test]
    fn any_path_parameter_is_ambiguous() {
        for p in ["/;/admin", "/admin;jsessionid=1", "/x/..;/admin", "/a;"] {
            assert_eq!(canonical(p), Err(Ambiguous::Parameter), "{p}");
        }
    }

    #[test]
    fn encoded_separators_and_double_encoding_are_ambiguous() {
        for p in [
            "/admin%2Fx",
            "/admin%2fx",
            "/a%5Cb",
            "/x/%2e%2e/admin",
            "/a%3Bb",
            "/%2561dmin",
        ] {
            assert_eq!(canonical(p), Err(Ambiguous::EncodedSeparator), "{p}");
        }
    }

    #[test]
    fn dot_segments_backslashes_and_unreadable_bytes_are_ambiguous() {
        assert_eq!(canonical("/x/../admin"), Err(Ambiguous::DotSegment));
        assert_eq!(canonical("/x/./admin"), Err(Ambiguous::DotSegment));
        assert_eq!(canonical("/x/.."), Err(Ambiguous::DotSegment));
        assert_eq!(canonical("/x\\..\\admin"), Err(Ambiguous::Backslash));
        assert_eq!(canonical("/admin/\u{fffd}"), Err(Ambiguous::Unreadable));
        assert_eq!(canonical("/a b"), Err(Ambiguous::Unreadable));
        assert_eq!(canonical("/a\tb"), Err(Ambiguous::Unreadable));
        assert_eq!(canonical("*"), Err(Ambiguous::NotAbsolute));
        assert_eq!(canonical(""), Err(Ambiguous::NotAbsolute));
    }

    #[test]
    fn bad_escapes_and_escaped_controls_are_ambiguous() {
        for p in ["/a%", "/a%4", "/a%zz", "/a%00", "/a%0a", "/a%7f", "/a%ff"] {
            assert_eq!(canonical(p), Err(Ambiguous::BadEscape), "{p}");
        }
    }

    #[test]
    fn characters_that_case_fold_to_ascii_are_ambiguous() {
        for p in ["/ADM%C4%B0N", "/adm%C4%B1n", "/%E2%84%AAey", "/%C5%BFecret"] {
            assert_eq!(canonical(p), Err(Ambiguous::CaseFold), "{p}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let login = RoutePrefix::parse("/login", false).unwrap();
        for p in ["/login", "/login/", "/login/help"] {
            assert!(login.matches(p), "{p}");
        }
        for p in ["/loginx", "/login-admin/x", "/login.php", "/logi", "/"] {
            assert!(!login.matches(p), "{p}");
        }
        let api = RoutePrefix::parse("/api/", false).unwrap();
        assert!(api.matches("/api/orders"));
        assert!(!api.matches("/api"));
        let root = RoutePrefix::parse("/", false).unwrap();
        assert!(root.matches("/anything/at/all"));
    }

    #[test]
    fn a_trailing_wildcard_matches_any_continuation() {
        let assets = RoutePrefix::parse("/assets*", false).unwrap();
        for p in ["/assets", "/assets-v2/app.js", "/assets/x.css", "/assetsx"] {
            assert!(assets.matches(p), "{p}");
        }
        assert!(!assets.matches("/asset"));
        assert!(assets.matches_ignoring_case("/ASSETS-v2"));
        assert!(!assets.matches("/ASSETS-v2"));
    }

    #[test]
    fn prefixes_must_be_written_as_the_app_reads_them() {
        for bad in [
            "login", "/a*b", "/a**", "/a%2Fb", "/a;b", "//a", "/a/../b", "/a b", "/a?x",
        ] {
            assert!(RoutePrefix::parse(bad, false).is_err(), "{bad}");
        }
        assert_eq!(RoutePrefix::parse("/Admin", true).unwrap().stem, "/admin");
        assert_eq!(RoutePrefix::parse("/Admin", false).unwrap().stem, "/Admin");
    }
}
