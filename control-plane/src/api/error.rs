//! One error type for the HTTP boundary: every failure, ours or axum's, answers
//! `{"error": "<code>", "detail": "<human text>"}` with its status. Internal errors are
//! logged here and answered with a generic detail, so nothing of the store's internals
//! (paths, SQL) reaches a client.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::store::StoreError;

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable code (`invalid_id`, `unauthorized`, …).
    pub code: &'static str,
    /// What went wrong, for a human; names the field when one is at fault.
    pub detail: String,
    /// `Retry-After` seconds (429, 503).
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    /// 429: this credential was refused too often; try again after `retry`.
    pub fn rate_limited(retry: std::time::Duration) -> Self {
        let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
        ApiError {
            retry_after: Some(secs.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "this credential was refused too often; try again in {} s (refusals past the limit are not audited)",
                    secs.max(1)
                ),
            )
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// Logs `err` with `context` and answers 500 without its text.
    pub fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; the control plane's log has the cause",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        ApiError::internal("store operation failed", &err)
    }
}

impl From<PathRejection> for ApiError {
    fn from(rej: PathRejection) -> Self {
        if rej.status().is_server_error() {
            return ApiError::internal("path extraction is misconfigured", &rej.body_text());
        }
        ApiError::bad_request("invalid_path", rej.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rej: QueryRejection) -> Self {
        ApiError::bad_request("invalid_query", rej.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rej: BytesRejection) -> Self {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "request body is larger than {} bytes",
                    super::MAX_BODY_BYTES
                ),
            );
        }
        ApiError::bad_request("invalid_body", rej.body_text())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(ErrorBody {
            error: self.code,
            detail: &self.detail,
        });
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6750: tell the client which scheme is expected.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"epochgate\""),
            );
        }
        response
    }
}
