//! The receivers' HTTP side.
//!
//! | route | body | answer |
//! |---|---|---|
//! | `POST /v1/idp/{name}/backchannel-logout` | `application/x-www-form-urlencoded`, `logout_token=<JWT>` | 200 `{"target", "epoch_ms", "version"}`; 400 `{"error", "detail"}`; both `Cache-Control: no-store` |
//! | `POST /v1/idp/{name}/events` | `application/secevent+jwt`, the SET; `Authorization: Bearer <ssf token>` | 202 (empty); 400 `{"err", "description"}` (RFC 8935 §2.3) |
//!
//! Bad input is always a 400 that says what failed and changes nothing — an oversize
//! body too (not axum's 413), since an IdP reads only "not 200". A 5xx means the event
//! could not be judged (keys not fetchable: 503 with `Retry-After`; the store failing:
//! 500) and may be sent again. An unknown IdP, or a receiver the IdP's `events` do not
//! enable, is 404.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::config::EventKind;
use super::set::SetOutcome;
use super::token::{self, Failure, Refusal};
use super::{logout, set, Accepted, Idp, Outcome, Receiver};
use crate::api::extract::{request_id, ApiPath, RemoteAddr};
use crate::api::{ApiError, MAX_BODY_BYTES};
use crate::auth::bearer_token;
use crate::state::AppState;
use crate::store::{ReplayKey, Revocation, RevokeRequest};

/// `{name}` of the receivers' paths.
#[derive(Debug, Deserialize)]
pub struct IdpPath {
    name: String,
}

/// Why an accepted event did not become a revocation.
enum CommitError {
    Replayed(String),
    Store(crate::store::StoreError),
}

/// Commits `accepted` with its `jti`, audited as `idp:<name>`.
async fn commit(
    state: &AppState,
    idp: &Idp,
    receiver: Receiver,
    accepted: Accepted,
    remote: RemoteAddr,
    headers: &HeaderMap,
) -> Result<Revocation, CommitError> {
    let now = crate::now_ms();
    let mut reason = accepted.reason;
    if reason.len() > crate::api::admin::MAX_REASON_BYTES {
        let mut end = crate::api::admin::MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    let request = RevokeRequest {
        target: accepted.target,
        now_ms: now,
        at_ms: None,
        actor: idp.config.actor(),
        reason: Some(reason),
        source: remote.0.map(|a| a.to_string()),
        request_id: Some(request_id(headers)),
    };
    let key = ReplayKey {
        scope: format!("{}/{}", idp.config.name, receiver.name()),
        jti: accepted.jti.clone(),
        until_ms: accepted.replay_until_ms.max(now),
        now_ms: now,
    };
    match state.store().revoke_once(request, key).await {
        Ok(Some(done)) => {
            state.anchor(&done.audit).await;
            tracing::info!(
                idp = %idp.config.name,
                receiver = receiver.name(),
                target = ?done.target,
                epoch_ms = done.epoch_ms,
                version = done.version,
                jti = %accepted.jti,
                "IdP logout committed"
            );
            Ok(done)
        }
        Ok(None) => Err(CommitError::Replayed(accepted.jti)),
        Err(err) => Err(CommitError::Store(err)),
    }
}

/// The `Content-Type`'s media type (parameters and case aside) must be `want`.
fn require_media_type(headers: &HeaderMap, want: &str) -> Result<(), Refusal> {
    let got = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match got {
        Some(t) if t == want => Ok(()),
        other => Err(Refusal::ContentType(format!(
            "Content-Type is {}, not {want}",
            other.map_or_else(|| "missing".to_string(), |t| format!("{t:?}"))
        ))),
    }
}

fn body_or_refusal(body: Result<Bytes, BytesRejection>) -> Result<Bytes, Refusal> {
    body.map_err(|rej| {
        if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Refusal::BodyTooLarge(MAX_BODY_BYTES)
        } else {
            Refusal::Request(format!("the body cannot be read: {}", rej.body_text()))
        }
    })
}

/// The one `logout_token` of a form body.
fn logout_token(headers: &HeaderMap, body: &[u8]) -> Result<String, Refusal> {
    require_media_type(headers, "application/x-www-form-urlencoded")?;
    let mut token = None;
    for (name, value) in form_urlencoded::parse(body) {
        if name == "logout_token" {
            if token.is_some() {
                return Err(Refusal::Request("`logout_token` is given twice".into()));
            }
            token = Some(value.into_owned());
        }
    }
    token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Refusal::Request("the form has no `logout_token`".into()))
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn unavailable(detail: String) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable", detail)
}

fn with_retry_after(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

fn refused(idp: &Idp, receiver: Receiver, refusal: &Refusal, remote: RemoteAddr) {
    idp.count(receiver, Outcome::Refused);
    tracing::warn!(
        idp = %idp.config.name,
        receiver = receiver.name(),
        error = refusal.code(),
        detail = %refusal,
        remote = ?remote.0,
        "IdP event refused; nothing revoked"
    );
}

/// `POST /v1/idp/{name}/backchannel-logout`: an OpenID Connect Back-Channel Logout.
pub async fn backchannel_logout(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<IdpPath>,
    remote: RemoteAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let receiver = Receiver::BackchannelLogout;
    let Some(idp) = state.idps().get(&path.name) else {
        return no_store(
            ApiError::not_found(format!("no IdP {:?} in --idp-config", path.name)).into_response(),
        );
    };
    if !idp.config.honours(EventKind::BackchannelLogout) {
        return no_store(
            ApiError::not_found(format!(
                "IdP {:?} takes no back-channel logouts (its `events` leave out backchannel-logout)",
                path.name
            ))
            .into_response(),
        );
    }
    let judged = async {
        let body = body_or_refusal(body)?;
        let token = logout_token(&headers, &body)?;
        let signed = token::verify(&token, &idp.config, &idp.keys).await?;
        Ok::<_, Failure>(logout::check(&signed, &idp.config, crate::now_ms())?)
    }
    .await;
    let response = match judged {
        Ok(accepted) => match commit(&state, idp, receiver, accepted, remote, &headers).await {
            Ok(done) => {
                idp.count(receiver, Outcome::Accepted);
                Json(json!({"target": done.target, "epoch_ms": done.epoch_ms, "version": done.version}))
                    .into_response()
            }
            Err(CommitError::Replayed(jti)) => {
                let refusal = Refusal::Replayed(jti);
                refused(idp, receiver, &refusal, remote);
                ApiError::bad_request(refusal.code(), refusal.to_string()).into_response()
            }
            Err(CommitError::Store(err)) => ApiError::from(err).into_response(),
        },
        Err(Failure::Refused(refusal)) => {
            refused(idp, receiver, &refusal, remote);
            ApiError::bad_request(refusal.code(), refusal.to_string()).into_response()
        }
        Err(Failure::Keys(err)) => with_retry_after(unavailable(err.to_string()).into_response()),
    };
    no_store(response)
}

/// RFC 8935 §2.3's error answer.
fn set_error(refusal: &Refusal) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"err": refusal.set_err(), "description": refusal.to_string()})),
    )
        .into_response()
}

/// `POST /v1/idp/{name}/events`: a Security Event Token pushed by the IdP's Shared
/// Signals transmitter (RFC 8935).
pub async fn set_push(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<IdpPath>,
    remote: RemoteAddr,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let receiver = Receiver::SetPush;
    let Some((idp, ssf)) = state
        .idps()
        .get(&path.name)
        .and_then(|idp| idp.config.ssf.as_ref().map(|ssf| (idp, ssf)))
    else {
        return ApiError::not_found(format!(
            "no IdP {:?} with an `ssf` section in --idp-config",
            path.name
        ))
        .into_response();
    };
    let judged = async {
        let presented = headers
            .get(AUTHORIZATION)
            .ok_or(Refusal::Authentication("no Authorization header"))?
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(Refusal::Authentication(
                "the Authorization header is not `Bearer <token>`",
            ))?;
        if !ssf.bearer.matches(presented) {
            return Err(Refusal::Authentication("not this IdP's push token").into());
        }
        let body = body_or_refusal(body)?;
        require_media_type(&headers, "application/secevent+jwt")?;
        let token = std::str::from_utf8(&body)
            .map_err(|_| Refusal::Malformed("the body is not UTF-8".into()))?
            .trim();
        let signed = token::verify(token, &idp.config, idp.set_keys()).await?;
        Ok::<_, Failure>(set::check(&signed, &idp.config, ssf, crate::now_ms())?)
    }
    .await;
    match judged {
        Ok(SetOutcome::Revoke(accepted)) => {
            match commit(&state, idp, receiver, accepted, remote, &headers).await {
                Ok(_) => {
                    idp.count(receiver, Outcome::Accepted);
                    StatusCode::ACCEPTED.into_response()
                }
                Err(CommitError::Replayed(jti)) => {
                    let refusal = Refusal::Replayed(jti);
                    refused(idp, receiver, &refusal, remote);
                    set_error(&refusal)
                }
                Err(CommitError::Store(err)) => ApiError::from(err).into_response(),
            }
        }
        Ok(SetOutcome::Ignore { jti, why }) => {
            idp.count(receiver, Outcome::Ignored);
            tracing::info!(idp = %idp.config.name, %jti, %why, "SET accepted; nothing to revoke");
            StatusCode::ACCEPTED.into_response()
        }
        Err(Failure::Refused(refusal)) => {
            refused(idp, receiver, &refusal, remote);
            set_error(&refusal)
        }
        Err(Failure::Keys(err)) => with_retry_after(
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"err": "temporarily_unavailable", "description": err.to_string()})),
            )
                .into_response(),
        ),
    }
}
