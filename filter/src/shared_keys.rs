//! Shared-data keys besides the epochs (`core::state::keys`) and the sync status.

/// The remote JWKS document, as fetched.
pub const JWKS: &str = "jwks";
/// Changes whenever [`JWKS`] does: the filter VMs re-parse only then.
pub const JWKS_VERSION: &str = "jwks/version";
/// Set by a filter VM that met an unknown `kid`: asks the sync service for a refresh.
pub const JWKS_REFRESH: &str = "jwks/refresh";
/// Set by the sync service when a JWKS fetch fails (the time, ms): a request held for a
/// refresh then stops waiting.
pub const JWKS_FAILED: &str = "jwks/failed";
/// Set by the first filter VM that logged the configuration's warnings, so they are
/// logged once per Envoy, not once per worker thread.
pub const CONFIG_WARNED: &str = "config/warned";
