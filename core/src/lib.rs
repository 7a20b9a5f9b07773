//! Epochgate's core: everything that decides, nothing that does I/O.
//!
//! The filter (proxy-wasm), the worker (Cloudflare) and the control plane share this
//! crate. Time is always passed in (`now_ms`), never read here; shared data, headers and
//! HTTP calls stay in the glue, which hands `core` what it needs and acts on its
//! [`Decision`].
//!
//! # Layout
//! - [`config`]: raw → validated configuration (filter, worker, sync loop), typed errors.
//! - [`token`]: taking the token from headers and cookies; ambiguity is refused.
//! - [`jwt`]: strict JWT parsing, pinned-algorithm keys, the [`jwt::SignatureVerifier`] seam.
//! - [`cache`]: the verified-token cache (signature and claims only, never revocation).
//! - [`claims`]: `exp`/`nbf`/`iss`/`aud` and the identity (user, tenant, session, start).
//! - [`ids`]: opaque id validation and percent-encoding.
//! - [`state`]: the epoch keys, [`state::RevocationState`] and the revocation rule.
//! - [`sync`]: the sync protocol's wire types and how an edge applies them.
//! - [`sessions`]: the sessions an edge sees (recorded on the request path, batched,
//!   reported to the control plane), device summaries and client addresses.
//! - [`decision`]: [`Engine::decide`] and the deny responses.

pub mod cache;
pub mod claims;
pub mod config;
pub mod decision;
pub mod ids;
pub mod jwt;
pub mod sessions;
pub mod state;
pub mod sync;
pub mod token;

pub use config::Config;
pub use decision::{
    Decision, DenyReason, Engine, HeaderEdit, Inputs, RequestInfo, Response, ResponseKind,
};

#[cfg(feature = "conformance")]
pub mod conformance;
