//! Shared-data keys besides the epochs (`core::state::keys`) and the sync status.

/// The remote JWKS document, as fetched.
pub const JWKS: &str = "jwks";
/// Changes whenever [`JWKS`] does: the filter VMs re-parse only then.
pub const JWKS_VERSION: &str = "jwks/version";
/// Set by a filter VM that met an unknown `kid`: asks the sync service for a refresh.
pub const JWKS_REFRESH: &str = "jwks/refresh";
