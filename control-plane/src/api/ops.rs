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

/// `GET /readyz`: 200 when the store answers and the server takes work; 503 while it
/// shuts down (so a load balancer stops sending before the process exits).
pub async fn readyz(State(state): State<AppState>) -> Response {
    if *state.shutdown_signal().borrow() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the control plane is shutting down",
        )
        .into_response();
    }
    healthz(State(state)).await
}

/// `GET /openapi.json`.
pub async fn openapi() -> Json<serde_json::Value> {
    Json(super::openapi::document())
}

/// A Prometheus label value: `\`, `"` and newlines escaped.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let version = *state.store().subscribe().borrow();
    let m = state.metrics();
    let mut edges = String::new();
    match state.store().edges().await {
        Ok(list) => {
            let now = crate::now_ms();
            let window =
                u64::try_from(state.config().edge_live_window.as_millis()).unwrap_or(u64::MAX);
            edges.push_str(
                "# HELP epochgate_edge_lag Versions an edge is behind the current one.\n\
                 # TYPE epochgate_edge_lag gauge\n",
            );
            let mut live = 0;
            for e in &list {
                let is_live = now.saturating_sub(e.last_seen_ms) <= window;
                live += u64::from(is_live);
                edges.push_str(&format!(
                    "epochgate_edge_lag{{edge=\"{}\",live=\"{is_live}\"}} {}\n",
                    label(&e.id),
                    version.saturating_sub(e.applied_version)
                ));
            }
            edges.push_str(&format!(
                "# HELP epochgate_edges_live Edges seen within the live window.\n\
                 # TYPE epochgate_edges_live gauge\n\
                 epochgate_edges_live {live}\n"
            ));
        }
        Err(err) => tracing::warn!(error = %err, "metrics: cannot list edges"),
    }
    let mut body = format!(
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
         epochgate_sync_long_polls_open {}\n\
         # HELP epochgate_audit_anchor_failures_total Audit heads that could not be appended to --audit-anchor.\n\
         # TYPE epochgate_audit_anchor_failures_total counter\n\
         epochgate_audit_anchor_failures_total {}\n{edges}",
        m.admin_writes_total(),
        m.sync_requests_total(),
        m.long_polls_open(),
        m.anchor_failures_total(),
    );
    state.idps().render_metrics(&mut body);
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
