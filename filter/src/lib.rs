//! Epochgate's proxy-wasm glue (`wasm32-wasip1`): thin, `core` decides.
//!
//! One `.wasm` holds two roots, told apart by `root_id`:
//! - [`SYNC_ROOT_ID`]: the singleton service VM (`envoy.bootstrap.wasm`, `singleton:
//!   true`) that long-polls the control plane and writes the epochs into shared data;
//! - [`FILTER_ROOT_ID`] (or any other): the HTTP filter, one VM per worker thread, that
//!   verifies each request's token and checks it against the epochs.
//!
//! Both use the same `vm_id`, since shared data is keyed by it.
//!
//! # Layout
//! - [`host`]: the host behind small traits ([`host::Host`], [`host::HttpHost`],
//!   [`host::SyncHost`]) and the real proxy-wasm implementation.
//! - [`http`]: the per-request path, and the streams it keeps an eye on.
//! - [`metadata`]: the `jwt_authn` payload out of the dynamic metadata (protobuf).
//! - [`native`]: RS*/ES* through Envoy's native `verify_signature`.
//! - [`sessions`]: the sessions seen, recorded per filter VM and sent by the sync VM.
//! - [`shared_keys`]: shared-data keys besides the epochs.
//! - [`sync_service`]: the long-poll loop.
//! - `roots` (wasm only): the proxy-wasm root and HTTP contexts wiring it together.

pub mod host;
pub mod http;
pub mod metadata;
pub mod native;
pub mod sessions;
pub mod shared_keys;
pub mod sync_service;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

#[cfg(target_arch = "wasm32")]
mod roots;

/// The `root_id` of the sync service.
pub const SYNC_ROOT_ID: &str = "epochgate_sync";
/// The `root_id` of the HTTP filter.
pub const FILTER_ROOT_ID: &str = "epochgate_filter";

/// `version (git hash)`, logged once when a VM starts.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("EPOCHGATE_GIT_HASH"),
    ")"
);

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn proxy_wasm::traits::RootContext> {
        Box::new(roots::Root::new(context_id))
    });
}}
