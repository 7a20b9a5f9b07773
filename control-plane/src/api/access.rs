//! Access logs: one line per request, when it is answered — method, route (the pattern,
//! never the ids in the path), status, latency, the credential's name (`admin`,
//! `key:NAME`, `jwt:SUB`, `edge:NAME`, `edge-token` for the shared one; never a token),
//! and the request id — over `tracing`, with tower-http's trace layer.
//!
//! The request id is settled first ([`request_id`]): the client's `x-request-id` when
//! it is a valid id of at most 128 bytes, else a fresh one; it is answered back in the
//! same header and kept in the audit log, so one id ties a client's call, the access
//! log line and the audit entry together.

use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderValue, Response};
use axum::middleware::Next;
use epochgate_core::ids::validate_id;
use tracing::Span;

use super::extract::REQUEST_ID_HEADER;

/// The id a request gets when it brings none.
fn fresh_id() -> String {
    let mut bytes = [0u8; 8];
    // Without randomness the id is only less unique; the request still goes on.
    let _ = getrandom::getrandom(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Middleware: settles the request's id (see the module doc) and answers it back.
pub async fn request_id(mut req: Request, next: Next) -> axum::response::Response {
    let given = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128 && validate_id(v).is_ok())
        .map(str::to_string);
    let id = given.unwrap_or_else(fresh_id);
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("-"));
    req.headers_mut().insert(REQUEST_ID_HEADER, value.clone());
    let mut response = next.run(req).await;
    response.headers_mut().insert(REQUEST_ID_HEADER, value);
    response
}

/// The span every request runs in; `credential` is filled in once it is known
/// ([`record_credential`]).
pub fn span<B>(req: &axum::http::Request<B>) -> Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("(no route)", MatchedPath::as_str);
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        request_id,
        credential = tracing::field::Empty,
    )
}

/// Names the request's credential in its access log line.
pub fn record_credential(name: &str) {
    Span::current().record("credential", name);
}

/// The access log line.
pub fn on_response<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
    tracing::info!(
        target: "epochgate::access",
        status = response.status().as_u16(),
        latency_ms,
        "answered"
    );
}
