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
use crate::state::{AppState, EdgeSample};

/// `GET /healthz`: 200 when the store answers, 503 otherwise. Says nothing else: the
/// state's version and stream are for the admin API and `/metrics`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    match state.store().status().await {
        Ok(_) => Json(json!({ "status": "ok" })).into_response(),
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

/// `GET /metrics`: OpenMetrics text (prometheus-client; see [`crate::state::Metrics`]).
pub async fn metrics(State(state): State<AppState>) -> Response {
    let version = *state.store().subscribe().borrow();
    let edges = match (state.store().status().await, state.store().edges().await) {
        (Ok(status), Ok(records)) => Some(
            super::admin::edge_views(
                records,
                &status,
                crate::now_ms(),
                state.config().edge_live_window,
            )
            .into_iter()
            .map(|(v, _)| EdgeSample {
                edge: v.id,
                live: v.live,
                lag: v.lag,
                instances: v.instances,
            })
            .collect::<Vec<_>>(),
        ),
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(error = %err, "metrics: cannot list edges");
            None
        }
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(version, edges.as_deref(), |r| {
            state.idps().register_metrics(r)
        }),
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
