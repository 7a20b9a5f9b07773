//! Epochgate's Cloudflare Worker glue (`wasm32-unknown-unknown`, wasm-bindgen): thin, `core`
//! decides.
//!
//! Per request the worker takes the token, has `core` verify it and apply the revocation
//! rule against the isolate's copy of the epochs, and either proxies the request to the
//! configured origin (identity headers added, spoofed ones stripped) or answers `core`'s
//! deny response. The epochs live in isolate-global memory, refreshed from the control
//! plane's `/v1/sync` at most once per `refresh_ms`, never by two requests at once, in
//! the background (`ctx.waitUntil`) — a request waits for a sync only when the state is
//! stale (then `on_stale` applies, as in the filter). Each isolate reports as an edge:
//! `<deployment>-<random id>`.
//!
//! # Layout
//! - [`settings`]: the bindings (vars and secrets) → validated settings, with `core`'s
//!   config parser; errors name the binding and field.
//! - [`refresh`]: the isolate's state and the sync bookkeeping (when to sync, applying an
//!   answer, backoff).
//! - [`host`]: the [`host::Host`] trait (time, the sync GET, the report POST, WebCrypto,
//!   logging).
//! - [`verify`]: signatures — HMAC in Rust, the rest through WebCrypto.
//! - [`sessions`]: the sessions this isolate sees, reported in the background.
//! - [`relay`]: the deployment's Durable Object that holds the one long poll and tells
//!   isolates of changes; an isolate's questions to it.
//! - [`edge`]: the per-request path over a host: refresh plan, decision (its signature
//!   step awaited), [`edge::Outcome`].
//! - `js` (wasm only): the `fetch` export, the real host, and the conversions between
//!   JS requests/responses and the types above.

pub mod edge;
pub mod host;
pub mod refresh;
pub mod relay;
pub mod sessions;
pub mod settings;
pub mod verify;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
mod js;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

/// `version (git hash)`, logged once per isolate.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("EPOCHGATE_GIT_HASH"),
    ")"
);

/// A response the glue answers itself (a bad configuration, an unreachable origin):
/// `{"error": …, "detail": …}`, never cached. (JSON written by hand: the only JSON the
/// Worker writes, not worth a serializer in the `.wasm`.)
pub fn error_response(status: u16, error: &str, detail: &str) -> epochgate_core::Response {
    fn quoted(out: &mut String, s: &str) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    let mut body = String::from("{\"error\":");
    quoted(&mut body, error);
    body.push_str(",\"detail\":");
    quoted(&mut body, detail);
    body.push('}');
    epochgate_core::Response {
        status,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body: body.into_bytes(),
        grpc_status: None,
        grpc_message: None,
    }
}

/// Header values in JS are ByteStrings: each byte of the wire value is one UTF-16 code
/// unit ≤ 0xFF. This maps them back to the bytes `core` reads (a non-UTF-8 byte in a
/// token header is then an `invalid_token`, as in the filter). A code unit above 0xFF
/// cannot come from the wire; it maps to `?`, which no token or cookie contains.
pub fn byte_string_to_bytes(value: &str) -> Vec<u8> {
    value
        .chars()
        .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
        .collect()
}

/// The inverse of [`byte_string_to_bytes`], for header values handed back to JS.
pub fn bytes_to_byte_string(value: &[u8]) -> String {
    value.iter().map(|&b| char::from(b)).collect()
}

/// The path and query of a request URL (`https://host/a/b?c=d#e` → `/a/b?c=d`): what
/// `core` sees as the path and what is appended to the origin.
pub fn path_and_query(url: &str) -> String {
    let url = url.split('#').next().unwrap_or_default();
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    match after_scheme.find(['/', '?']) {
        Some(i) if after_scheme[i..].starts_with('/') => after_scheme[i..].to_string(),
        Some(i) => format!("/{}", &after_scheme[i..]),
        None => "/".to_string(),
    }
}
