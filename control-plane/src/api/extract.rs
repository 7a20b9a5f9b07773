//! Extractors whose every rejection is an [`ApiError`], so no axum plain-text error
//! ever reaches a client, and the bearer checks that run before anything else is read.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use epochgate_core::ids::validate_id;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::auth::bearer_token;
use crate::now_ms;
use crate::rbac::{key_digest_hex, Admin, AuthError, Principal};
use crate::state::AppState;
use crate::store::EdgeCredential;

/// The header a client may set to name the person behind the admin token in the audit
/// log (the CLI sends `$USER`). Informative only: whoever holds the token can set it.
pub const ACTOR_HEADER: &str = "x-epochgate-actor";

/// Who a bearer credential is: the configured credentials first, then (for a token
/// none of them knows) the per-edge credentials in the store.
enum Who {
    Admin(Admin),
    Edge(EdgeIdentity),
}

/// How an edge authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeIdentity {
    /// DEMO: the shared `--edge-token`; the edge names itself with `?edge=`.
    Shared,
    /// Its own credential: the edge is the credential's, whatever `?edge=` says.
    Credential {
        credential: EdgeCredential,
        /// Hex SHA-256 of the token, to check it again before a long-poll answers.
        sha256: String,
    },
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    value
        .to_str()
        .ok()
        .and_then(bearer_token)
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not `Bearer <token>`"))
}

async fn who(parts: &Parts, state: &AppState) -> Result<Who, ApiError> {
    let token = bearer(parts)?;
    match state.config().credentials.authenticate(token, now_ms()) {
        Ok(Principal::Admin(admin)) => Ok(Who::Admin(admin)),
        Ok(Principal::Edge) => Ok(Who::Edge(EdgeIdentity::Shared)),
        Err(AuthError::Unknown) => {
            let sha256 = key_digest_hex(token);
            edge_credential(state, &sha256)
                .await
                .map(|credential| Who::Edge(EdgeIdentity::Credential { credential, sha256 }))
        }
        Err(e) => Err(ApiError::unauthorized(e.to_string())),
    }
}

/// The live stored edge credential whose token has this digest.
pub async fn edge_credential(state: &AppState, sha256: &str) -> Result<EdgeCredential, ApiError> {
    judge_credential(
        state
            .store()
            .edge_credential_by_digest(sha256.to_string())
            .await?,
    )
}

/// A stored credential (`None`: not stored) may be used only while it is not revoked.
pub fn judge_credential(found: Option<EdgeCredential>) -> Result<EdgeCredential, ApiError> {
    match found {
        Some(c) if c.revoked_ms.is_none() => Ok(c),
        Some(c) => Err(ApiError::unauthorized(format!(
            "the edge token {} of edge {:?} was revoked",
            c.id, c.edge
        ))),
        None => Err(ApiError::unauthorized(AuthError::Unknown.to_string())),
    }
}

/// The request's id for the audit log, as [`super::access::request_id`] settled it.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

/// The header carrying a request id (kept in the audit log).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An admin request: who (for authorization and the audit log) and which request.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub admin: Admin,
    /// The audit log's actor: the credential's name, plus the operator the client named.
    pub actor: String,
    pub request_id: String,
}

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let admin = match who(parts, state).await? {
            Who::Admin(admin) => admin,
            Who::Edge(_) => {
                return Err(ApiError::forbidden(
                    "an edge token can only read /v1/sync; use an admin credential",
                ))
            }
        };
        let actor = match parts.headers.get(ACTOR_HEADER) {
            None => admin.actor.clone(),
            Some(value) => {
                let name = value.to_str().map_err(|_| {
                    ApiError::bad_request("invalid_header", format!("{ACTOR_HEADER} is not text"))
                })?;
                validate_id(name).map_err(|e| {
                    ApiError::bad_request("invalid_header", format!("{ACTOR_HEADER} {e}"))
                })?;
                format!("{} ({name})", admin.actor)
            }
        };
        super::access::record_credential(&admin.actor);
        Ok(AdminAuth {
            admin,
            actor,
            request_id: request_id(&parts.headers),
        })
    }
}

/// An edge request (`/v1/sync` only).
#[derive(Debug, Clone)]
pub struct EdgeAuth(pub EdgeIdentity);

impl FromRequestParts<AppState> for EdgeAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match who(parts, state).await? {
            Who::Edge(identity) => {
                match &identity {
                    EdgeIdentity::Shared => super::access::record_credential("edge-token"),
                    EdgeIdentity::Credential { credential, .. } => {
                        super::access::record_credential(&format!("edge:{}", credential.edge))
                    }
                }
                Ok(EdgeAuth(identity))
            }
            Who::Admin(_) => Err(ApiError::forbidden(
                "/v1/sync takes an edge token; admin credentials are for the admin API",
            )),
        }
    }
}

/// `Path` with JSON errors. axum percent-decodes each segment (`auth0%7C5f` is
/// `auth0|5f`, `a%2Fb` is `a/b`) after routing, so ids holding `/` stay one segment.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(value))
    }
}

/// `Query` with JSON errors.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(value))
    }
}

/// The peer address, when the server was started with connect info (absent in
/// `oneshot` tests). Not `X-Forwarded-For`: that header is whatever the client says.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for RemoteAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Ok(RemoteAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| *addr),
        ))
    }
}

/// An optional JSON body: empty (or only whitespace) is `None`; anything else must be
/// `application/json` and parse as `T`. Errors name the offending field.
#[derive(Debug)]
pub struct OptionalJson<T>(pub Option<T>);

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T, S> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(req.headers());
        let bytes = Bytes::from_request(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        if !json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a request body must be JSON with `Content-Type: application/json`",
            ));
        }
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(value) => Ok(OptionalJson(Some(value))),
            Err(err) => {
                let path = err.path().to_string();
                let inner = err.into_inner();
                let detail = if path == "." || path.is_empty() {
                    format!("invalid JSON body: {inner}")
                } else {
                    format!("invalid JSON body at `{path}`: {inner}")
                };
                Err(ApiError::bad_request("invalid_json", detail))
            }
        }
    }
}

/// Checks a path id with the ids every edge accepts, naming the parameter on refusal.
pub fn check_id(name: &str, value: &str) -> Result<(), ApiError> {
    validate_id(value).map_err(|e| ApiError::bad_request("invalid_id", format!("`{name}` {e}")))
}
