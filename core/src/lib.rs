//! Epochgate's core: everything that decides, nothing that does I/O.
//!
//! The filter (proxy-wasm), the worker (Cloudflare) and the control plane share this
//! crate. Time is always passed in (`now_ms`), never read here; shared data, headers and
//! HTTP calls stay in the glue, which hands `core` what it needs and acts on its
//! [`Decision`].
//!
//! # Layout
//! - [`config`]: raw → validated configuration (filter, worker, sync loop), typed errors.
//! - [`path`]: the path as the app reads it; route prefixes on segment boundaries.
//! - [`names`]: header and cookie names as app servers read them (`_`/`-`, PHP's rules).
//! - [`token`]: taking the token from headers and cookies; ambiguity is refused.
//! - [`jwt`]: strict JWT parsing, pinned-algorithm keys, the [`jwt::SignatureVerifier`] seam.
//! - [`b64`]: strict base64 and base64url decoding.
//! - [`der`]: reading and writing public keys (SubjectPublicKeyInfo) without crypto crates.
//! - [`pure`]: the pure-Rust verifier, one cargo feature per algorithm family.
//! - [`cache`]: the verified-token cache (signature and claims only, never revocation).
//! - [`claims`]: `exp`/`nbf`/`iss`/`aud` and the identity (user, tenant, session, start).
//! - [`ids`]: opaque id validation and percent-encoding.
//! - [`rotation`]: a request with an unknown `kid` waits (bounded) for the JWKS refresh.
//! - [`sessions`]: the sessions an edge sees (recorded on the request path, batched,
//!   reported to the control plane), device summaries and client addresses.
//! - [`state`]: the epoch keys, [`state::RevocationState`] (how an edge takes changes),
//!   the revocation rule and the session horizon.
//! - [`sync`]: the sync protocol's wire types, and [`sync::client`]: the edge's sync
//!   client (sans-IO), once for every edge.
//! - [`watch`]: when a long-lived request (a stream, a download) is judged again.
//! - [`decision`]: [`Engine::decide`] and the deny responses.

pub mod b64;
pub mod cache;
pub mod claims;
pub mod config;
pub mod decision;
pub mod der;
pub mod ids;
pub mod jwt;
pub mod names;
pub mod path;
pub mod pure;
pub mod rotation;
pub mod sessions;
pub mod state;
pub mod sync;
pub mod token;
pub mod watch;

pub use config::Config;
pub use decision::{
    Decision, DenyReason, Engine, HeaderEdit, Inputs, RequestInfo, Response, ResponseKind,
};

#[cfg(feature = "conformance")]
pub mod conformance;
