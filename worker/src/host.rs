//! What the worker needs from its runtime, behind a small trait: the real one is in
//! `js` (workerd / Cloudflare: `Date.now()`, `fetch`, `crypto.subtle`, `console`); native
//! tests use [`crate::fake::FakeHost`] with time and answers injected.

use std::future::Future;

use epochgate_core::jwt::VerificationKey;

/// Log levels, mapped to `console.log` / `console.warn` / `console.error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// The answer to a GET (status and body), or why there is none.
pub type GetResult = Result<(u16, Vec<u8>), String>;

pub trait Host {
    /// Wall-clock time in ms.
    fn now_ms(&self) -> u64;

    /// `GET url` with `Authorization: Bearer <bearer>`, given up after `timeout_ms`:
    /// the answer's status and body, or why there is none.
    fn get(&self, url: &str, bearer: &str, timeout_ms: u64) -> impl Future<Output = GetResult>;

    /// `GET url` with no credential (the IdP's public JWKS), given up after `timeout_ms`.
    fn get_public(&self, url: &str, timeout_ms: u64) -> impl Future<Output = GetResult>;

    /// `POST url` with a JSON `body` and `Authorization: Bearer <bearer>` (the session
    /// reports), given up after `timeout_ms`.
    fn post(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> impl Future<Output = GetResult>;

    /// Resolves after `ms` (a timer; lets other requests run meanwhile).
    fn sleep(&self, ms: u64) -> impl Future<Output = ()>;

    /// WebCrypto's verdict on `signature` over `input` with a key, under the key's pinned
    /// algorithm (see [`crate::verify::WebCryptoAlgorithm`]): `Err` when the runtime cannot
    /// import the key or run the check.
    fn verify_signature(
        &self,
        key: &VerificationKey,
        input: &[u8],
        signature: &[u8],
    ) -> impl Future<Output = Result<bool, String>>;

    fn log(&self, level: Level, message: &str);
}
