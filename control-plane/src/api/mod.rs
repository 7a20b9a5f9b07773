//! The HTTP surface: admin API, sync API, health and metrics, and the JSON shapes they
//! answer (shared with the CLI client, so the two cannot drift apart).
//!
//! | route | credential | answer |
//! |---|---|---|
//! | `POST /v1/tenants/{tenant}/users/{user}/logout` | admin | [`RevokeAnswer`] |
//! | `POST /v1/tenants/{tenant}/logout` | admin | [`RevokeAnswer`] |
//! | `POST /v1/tenants/{tenant}/sessions/{sid}/revoke` | admin | [`RevokeAnswer`] |
//! | `POST /v1/logout` | admin | [`RevokeAnswer`] |
//! | `DELETE /v1/tenants/{tenant}/scheduled-logout` | admin | [`RevokeAnswer`] (409 once passed) |
//! | `DELETE /v1/scheduled-logout` | admin | [`RevokeAnswer`] (409 once passed) |
//! | `GET /v1/tenants/{tenant}/revocations` | admin | [`RevocationsAnswer`] |
//! | `GET /v1/edges` | admin | [`EdgesAnswer`] |
//! | `POST /v1/edge-tokens` | admin (`edges:manage`, `*`) | [`edge_tokens::CreatedAnswer`] |
//! | `GET /v1/edge-tokens` | admin (`edges:manage`, `*`) | [`edge_tokens::ListAnswer`] |
//! | `POST /v1/edge-tokens/{edge}/revoke` | admin (`edges:manage`, `*`) | [`edge_tokens::RevokedAnswer`] |
//! | `GET /v1/audit?limit&tenant&actor&action&outcome&since_ms&until_ms` | admin | [`AuditAnswer`] |
//! | `GET /v1/tenants/{tenant}/users?q&limit` | admin | [`crate::sessions::UsersAnswer`] |
//! | `GET /v1/tenants/{tenant}/users/{user}/sessions` | admin | [`crate::sessions::SessionsAnswer`] |
//! | `GET /v1/sync?since&wait&stream&edge` | an edge token | [`epochgate_core::sync::SyncResponse`] |
//! | `POST /v1/idp/{name}/backchannel-logout` | the logout token | see [`crate::idp::http`] |
//! | `POST /v1/idp/{name}/events` | the IdP's SSF push token | see [`crate::idp::http`] |
//! | `POST /v1/sync/sessions?edge` | edge | [`sessions::ReportAnswer`] |
//! | `/console/…` | console session | HTML ([`crate::console`]) |
//! | `GET /healthz` | none | `{"status":"ok"}` (nothing about the state) |
//! | `GET /readyz` | none | like `/healthz`; 503 while shutting down |
//! | `GET /metrics` | none | Prometheus text |
//! | `GET /openapi.json` | none | the OpenAPI document ([`openapi`]) |

use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use axum::Router;
use serde::{Deserialize, Serialize};

use crate::state::AppState;
use crate::store::{AuditEntry, Entry};

pub mod access;
pub mod admin;
pub mod edge_tokens;
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
    /// The edge: its credential's name, or the `?edge=` it gave with the shared token.
    pub id: String,
    /// Seen within `--edge-live-window` (counted by `?wait=` receipts).
    pub live: bool,
    /// The instances folded into this row (the live ones, if any is live): a Worker's
    /// isolates or several Envoys under one credential; 1 with the shared token.
    pub instances: u64,
    /// The id of the credential it last synced with; `null`: the shared demo token.
    pub credential: Option<String>,
    /// The stream the edge said it holds (absent before its first snapshot).
    pub stream: Option<String>,
    /// The lowest version its instances have applied.
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
    /// The last rollback noticed (an edge ahead of the store, or on versions the store
    /// wrote again: a restore from a backup, a failover), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::store::Rollback>,
}

/// `GET /v1/audit`, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnswer {
    pub entries: Vec<AuditEntry>,
}

/// The router. Every failure, including unknown routes, wrong methods and axum's
/// extractor rejections, answers JSON (see [`ApiError`]).
pub fn app(state: AppState) -> Router {
    let metrics_here = !state.config().metrics_separate;
    let router = Router::new()
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
            "/v1/tenants/{tenant}/scheduled-logout",
            delete(admin::cancel_tenant_schedule),
        )
        .route(
            "/v1/scheduled-logout",
            delete(admin::cancel_global_schedule),
        )
        .route(
            "/v1/tenants/{tenant}/revocations",
            get(admin::tenant_revocations),
        )
        .route("/v1/edges", get(admin::edges))
        .route(
            "/v1/edge-tokens",
            post(edge_tokens::create).get(edge_tokens::list),
        )
        .route("/v1/edge-tokens/{edge}/revoke", post(edge_tokens::revoke))
        .route("/v1/audit", get(admin::audit))
        .route("/v1/tenants/{tenant}/users", get(sessions::users))
        .route(
            "/v1/tenants/{tenant}/users/{user}/sessions",
            get(sessions::user_sessions_handler),
        )
        .route("/v1/sync", get(sync::sync))
        .route(
            "/v1/idp/{name}/backchannel-logout",
            post(crate::idp::http::backchannel_logout),
        )
        .route("/v1/idp/{name}/events", post(crate::idp::http::set_push))
        .route(
            "/v1/sync/sessions",
            post(sessions::report).layer(DefaultBodyLimit::max(sessions::MAX_REPORT_BYTES)),
        )
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/openapi.json", get(ops::openapi))
        .merge(crate::console::router());
    let router = if metrics_here {
        router.route("/metrics", get(ops::metrics))
    } else {
        router
    };
    finish(router, state)
}

/// The router of `--metrics-listen`: `/metrics` alone.
pub fn metrics_app(state: AppState) -> Router {
    finish(Router::new().route("/metrics", get(ops::metrics)), state)
}

/// JSON for unknown routes and wrong methods, the body limit, access logs, request ids.
fn finish(router: Router<AppState>, state: AppState) -> Router {
    router
        // After the routes: it applies to the routes registered so far.
        .method_not_allowed_fallback(ops::method_not_allowed)
        .fallback(ops::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // Inside out: the access log sees the settled request id and the matched route.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(access::span)
                .on_request(())
                .on_response(access::on_response)
                .on_failure(()),
        )
        .layer(axum::middleware::from_fn(access::request_id))
        .with_state(state)
}
