//! Epochgate's core: everything that decides, nothing that does I/O.
//!
//! The filter (proxy-wasm), the worker (Cloudflare) and the control plane share this
//! crate. Time is always passed in (`now_ms`), never read here; shared data, headers and
//! HTTP calls stay in the glue, which hands `core` what it needs and acts on its answer.
//!
//! # Layout
//! - [`ids`]: opaque id validation and percent-encoding.
//! - [`state`]: the epoch keys, [`state::RevocationState`] and the revocation rule.
//! - [`sync`]: the sync protocol's wire types and how an edge applies them.

pub mod ids;
pub mod state;
pub mod sync;
