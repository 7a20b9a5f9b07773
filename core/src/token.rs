//! Taking the token from the request: configured header(s) with a prefix and/or a
//! cookie, in order. Headers are read as bytes (a non-UTF-8 byte is a bad token, never a
//! panic). Two sources carrying different tokens, a token header sent twice, the session
//! cookie twice with different values, or a cookie an app would read as the session
//! cookie under another spelling (`portal%5Fsession`, `portal.session`, `Portal_Session`,
//! one hidden after a `,`; see [`crate::names`]) is ambiguous: refused, so no one can
//! smuggle a second token past the check.

use crate::config::TokenSource;
use crate::names::CookieName;

/// Why no single token could be taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("{0}")]
    Ambiguous(&'static str),
    #[error("{0}")]
    Malformed(&'static str),
}

/// Request headers as the glue sees them: lower-case names, raw values.
pub type Headers = [(String, Vec<u8>)];

fn header_values<'h, 'n>(
    headers: &'h Headers,
    name: &'n str,
) -> impl Iterator<Item = &'h [u8]> + use<'h, 'n> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn from_header<'a>(
    headers: &'a Headers,
    name: &str,
    prefix: &str,
) -> Result<Option<&'a str>, ExtractError> {
    let mut values = header_values(headers, name);
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ExtractError::Ambiguous("token header sent more than once"));
    }
    let value = trim(value);
    let p = prefix.as_bytes();
    if value.len() < p.len() || !value[..p.len()].eq_ignore_ascii_case(p) {
        return Err(ExtractError::Malformed(
            "token header lacks the expected scheme prefix",
        ));
    }
    let token = std::str::from_utf8(trim(&value[p.len()..]))
        .map_err(|_| ExtractError::Malformed("token header is not valid UTF-8"))?;
    // Envoy joins a repeated header into one value with ',' — a character no JWT (nor
    // any RFC 6750 b64token) contains. So a comma means the header came twice.
    if token.contains(',') {
        return Err(ExtractError::Ambiguous(
            "token header sent more than once (joined with ',')",
        ));
    }
    if token.is_empty() {
        return Err(ExtractError::Malformed("token header is empty"));
    }
    Ok(Some(token))
}

/// The `name=value` pairs of every `Cookie` header (HTTP/2 may split cookies over
/// several), trimmed; pairs without `=` are skipped.
fn cookie_pairs(headers: &Headers) -> impl Iterator<Item = (&[u8], &[u8])> {
    header_values(headers, "cookie")
        .flat_map(|value| value.split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = trim(pair);
            let eq = pair.iter().position(|b| *b == b'=')?;
            Some((trim(&pair[..eq]), trim(&pair[eq + 1..])))
        })
}

/// Whether a cookie value hides a cookie an app may read as `cookie`: legacy (RFC 2109)
/// parsers also split cookies at `,`.
fn hides_after_comma(value: &[u8], cookie: &CookieName) -> bool {
    value.contains(&b',')
        && value.split(|b| *b == b',').skip(1).any(|piece| {
            piece
                .iter()
                .position(|b| *b == b'=')
                .is_some_and(|eq| cookie.is_read_as(&piece[..eq]))
        })
}

fn from_cookie<'a>(
    headers: &'a Headers,
    cookie: &CookieName,
) -> Result<Option<&'a str>, ExtractError> {
    let mut found: Option<&'a [u8]> = None;
    for (name, value) in cookie_pairs(headers) {
        if hides_after_comma(value, cookie) {
            return Err(ExtractError::Ambiguous(
                "a cookie value holds `, <session cookie>=` (legacy parsers split there)",
            ));
        }
        if !cookie.is_read_as(name) {
            continue;
        }
        if !cookie.is_exactly(name) {
            // PHP would read `portal%5Fsession` (or `portal.session`, `Portal_Session` in
            // ASP.NET) as the session cookie, possibly instead of the one checked here.
            return Err(ExtractError::Ambiguous(
                "a cookie whose name decodes or canonicalizes to the session cookie's",
            ));
        }
        let mut v = value;
        if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
            v = &v[1..v.len() - 1];
        }
        match found {
            Some(prev) if prev != v => {
                return Err(ExtractError::Ambiguous(
                    "session cookie sent twice with different values",
                ))
            }
            _ => found = Some(v),
        }
    }
    match found {
        None => Ok(None),
        Some([]) => Ok(None),
        Some(v) => std::str::from_utf8(v)
            .map(Some)
            .map_err(|_| ExtractError::Malformed("session cookie is not valid UTF-8")),
    }
}

/// Whether the request carries a cookie an app may read as `cookie` (any spelling).
pub fn has_cookie(headers: &Headers, cookie: &CookieName) -> bool {
    cookie_pairs(headers)
        .any(|(name, value)| cookie.is_read_as(name) || hides_after_comma(value, cookie))
}

/// The `Cookie` header without the cookies `remove` names (by their raw names), or
/// `None` when there was none to remove. An empty result means: drop the header.
pub fn cookies_without(headers: &Headers, remove: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    for value in header_values(headers, "cookie") {
        for pair in value.split(|b| *b == b';') {
            let pair = trim(pair);
            if pair.is_empty() {
                continue;
            }
            let name = pair
                .iter()
                .position(|b| *b == b'=')
                .map_or(pair, |eq| trim(&pair[..eq]));
            if remove(name) {
                removed = true;
            } else {
                kept.push(pair);
            }
        }
    }
    removed.then(|| kept.join(&b"; "[..]))
}

/// The request's token, if any.
pub fn extract<'a>(
    sources: &[TokenSource],
    headers: &'a Headers,
) -> Result<Option<&'a str>, ExtractError> {
    let mut token: Option<&'a str> = None;
    for source in sources {
        let found = match source {
            TokenSource::Header { name, prefix } => from_header(headers, name, prefix)?,
            TokenSource::Cookie { canonical, .. } => from_cookie(headers, canonical)?,
        };
        match (token, found) {
            (Some(a), Some(b)) if a != b => {
                return Err(ExtractError::Ambiguous(
                    "two sources carry different tokens",
                ))
            }
            (None, Some(b)) => token = Some(b),
            _ => {}
        }
    }
    Ok(token)
}
