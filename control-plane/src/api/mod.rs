//! The HTTP surface: admin API, sync API, health and metrics, and the JSON shapes they
//! answer (shared with the CLI client, so the two cannot drift apart).
//!
//! | route | credential | answer |
//! |---|---|---|
//! | `POST /v1/tenants/{tenant}/users/{user}/logout` | admin | [`RevokeAnswer`] |
//! | `POST /v1/tenants/{tenant}/logout` | admin | [`RevokeAnswer`] |
//! | `POST /v1/tenants/{tenant}/sessions/{sid}/revoke` | admin | [`RevokeAnswer`] |
//! | `POST /v1/logout` | admin | [`RevokeAnswer`] |
//! | `GET /v1/tenants/{tenant}/revocations` | admin | [`RevocationsAnswer`] |
//! | `GET /v1/edges` | admin | [`EdgesAnswer`] |
//! | `GET /v1/audit?limit&tenant&actor&action&outcome&since_ms&until_ms` | admin | [`AuditAnswer`] |
//! | `GET /v1/tenants/{tenant}/users?q&limit` | admin | [`crate::sessions::UsersAnswer`] |
//! | `GET /v1/tenants/{tenant}/users/{user}/sessions` | admin | [`crate::sessions::SessionsAnswer`] |
//! | `GET /v1/sync?since&wait&stream&edge` | edge | [`epochgate_core::sync::SyncResponse`] |
//! | `POST /v1/sync/sessions?edge` | edge | [`sessions::ReportAnswer`] |
//! | `/console/…` | console session | HTML ([`crate::console`]) |
//! | `GET /healthz` | none | `{"status":"ok","stream","version"}` |
//! | `GET /readyz` | none | like `/healthz`; 503 while shutting down |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /openapi.json` | none | the OpenAPI document ([`openapi`]) |

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use crate::store::{AuditEntry, Entry};

pub mod admin;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod sessions;
pub mod sync;

pub use error::ApiError;

/// The largest request body accepted (admin bodies hold at most a reason).
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The answer to an admin write, sent after its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeAnswer {
    pub target: epochgate_core::state::Target,
    /// The epoch now stored for the target (never earlier than a previous one).
    pub epoch_ms: u64,
    /// The version this write committed as.
    pub version: u64,
    /// The audit entry written with it.
    pub audit: crate::store::AuditHead,
    /// With `?wait=`: how far the change got before the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation: Option<Propagation>,
    /// Things the caller should check (e.g. a tenant never seen before).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// How far a write got: the live edges (seen within `--edge-live-window`), how many
/// applied it, which did not (yet), and how long the answer waited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propagation {
    pub edges: u64,
    pub acked: u64,
    pub lagging: Vec<String>,
    pub elapsed_ms: u64,
}

/// `GET /v1/tenants/{tenant}/revocations`: the tenant's live entries and the global one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationsAnswer {
    pub tenant: String,
    pub revocations: Vec<Entry>,
}

/// One edge as `GET /v1/edges` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeView {
    pub id: String,
    /// Seen within `--edge-live-window` (counted by `?wait=` receipts).
    pub live: bool,
    /// The stream the edge said it holds (absent before its first snapshot).
    pub stream: Option<String>,
    pub applied_version: u64,
    /// How many versions the edge is behind: `version - applied_version`, or the whole
    /// `version` when it holds another stream (none of this history applies).
    pub lag: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub remote_addr: Option<String>,
}

/// `GET /v1/edges`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgesAnswer {
    pub stream: String,
    pub version: u64,
    pub edges: Vec<EdgeView>,
}

/// `GET /v1/audit`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnswer {
    pub entries: Vec<AuditEntry>,
}

/// The router. Every failure, including unknown routes, wrong methods and axum's
/// extractor rejections, answers JSON (see [`ApiError`]).
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/tenants/{tenant}/users/{user}/logout",
            post(admin::logout_user),
        )
        .route("/v1/tenants/{tenant}/logout", post(admin::logout_tenant))
        .route(
            "/v1/tenants/{tenant}/sessions/{sid}/revoke",
            post(admin::revoke_session),
        )
        .route("/v1/logout", post(admin::logout_all_tenants))
        .route(
            "/v1/tenants/{tenant}/revocations",
            get(admin::tenant_revocations),
        )
        .route("/v1/edges", get(admin::edges))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/tenants/{tenant}/users", get(sessions::users))
        .route(
            "/v1/tenants/{tenant}/users/{user}/sessions",
            get(sessions::user_sessions_handler),
        )
        .route("/v1/sync", get(sync::sync))
        .route(
            "/v1/sync/sessions",
            post(sessions::report).layer(DefaultBodyLimit::max(sessions::MAX_REPORT_BYTES)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(ops::openapi))
        .merge(crate::console::router())
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(ops::method_not_allowed)
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}
