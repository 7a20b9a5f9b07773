//! Health, metrics, and the JSON answers for unknown routes and wrong methods.
//!
//! `/healthz` and `/metrics` need no credential: a load balancer and a Prometheus scraper
//! should not hold the admin token, and neither route reveals an id or changes anything
//! (metrics are counters only).

use axum::extract::{OriginalUri, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::ApiError;
use crate::state::AppState;
use crate::{GIT_HASH, VERSION};

/// `GET /healthz`: 200 when the store answers, 503 otherwise.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store().status().await {
        Ok(status) => Json(json!({
            "status": "ok",
            "stream": status.stream,
            "version": status.version,
        }))
        .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "health check: the store does not answer");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the store does not answer",
            )
            .into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let version = *state.store().subscribe().borrow();
    let m = state.metrics();
    let body = format!(
        "# HELP epochgate_build_info The running control plane's build.\n\
         # TYPE epochgate_build_info gauge\n\
         epochgate_build_info{{version=\"{VERSION}\",git=\"{GIT_HASH}\"}} 1\n\
         # HELP epochgate_state_version The last committed state version.\n\
         # TYPE epochgate_state_version gauge\n\
         epochgate_state_version {version}\n\
         # HELP epochgate_admin_writes_total Admin revocations committed since start.\n\
         # TYPE epochgate_admin_writes_total counter\n\
         epochgate_admin_writes_total {}\n\
         # HELP epochgate_sync_requests_total Sync requests from edges since start.\n\
         # TYPE epochgate_sync_requests_total counter\n\
         epochgate_sync_requests_total {}\n\
         # HELP epochgate_sync_long_polls_open Sync long-polls held open now.\n\
         # TYPE epochgate_sync_long_polls_open gauge\n\
         epochgate_sync_long_polls_open {}\n",
        m.admin_writes_total(),
        m.sync_requests_total(),
        m.long_polls_open(),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Any path that is not a route.
pub async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::not_found(format!("no route for {}", uri.path()))
}

/// A route asked with a method it does not take.
pub async fn method_not_allowed(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}
