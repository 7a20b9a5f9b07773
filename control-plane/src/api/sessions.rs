//! The sessions the edges see: their reports in (edge token), and the admin reads out
//! (`sessions:read`). What "active" and "revoked" mean is in [`crate::sessions`].

use axum::extract::State;
use axum::Json;
use epochgate_core::sessions::{SessionReport, MAX_BATCH};
use epochgate_core::state::Target;
use serde::{Deserialize, Serialize};

use super::admin::{authorize, TenantPath, UserPath};
use super::extract::{check_id, AdminAuth, ApiPath, ApiQuery, EdgeAuth, OptionalJson, RemoteAddr};
use super::ApiError;
use crate::now_ms;
use crate::rbac::Scope;
use crate::sessions::{
    list_users, user_sessions, SessionsAnswer, UsersAnswer, DEFAULT_USERS_LIMIT, MAX_USERS_LIMIT,
};
use crate::state::AppState;

/// The largest report body accepted (500 sessions of a few hundred bytes each).
pub const MAX_REPORT_BYTES: usize = 512 * 1024;

/// The query of `POST /v1/sync/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// The reporting edge's id (as on `/v1/sync`).
    pub edge: Option<String>,
}

/// The answer to a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAnswer {
    pub accepted: u64,
}

/// `POST /v1/sync/sessions?edge=E`: an edge's batch of sessions seen, recorded under the
/// edge its credential names (with the shared demo token, `edge`). The batch is
/// checked whole (every id, device and address); a bad one refuses it, naming the entry.
pub async fn report(
    State(state): State<AppState>,
    EdgeAuth(identity): EdgeAuth,
    ApiQuery(q): ApiQuery<ReportQuery>,
    OptionalJson(body): OptionalJson<SessionReport>,
) -> Result<Json<ReportAnswer>, ApiError> {
    if let Some(e) = &q.edge {
        check_id("edge", e)?;
    }
    // The edge from the credential, as for receipts (see `sync::which_edge`).
    let edge = super::sync::which_edge(&identity, q.edge.as_deref())?.edge;
    let report = body.ok_or_else(|| {
        ApiError::bad_request("invalid_body", "the body is a JSON `{\"sessions\": [...]}`")
    })?;
    if report.sessions.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("`sessions` holds more than {MAX_BATCH} entries"),
        ));
    }
    for (i, s) in report.sessions.iter().enumerate() {
        s.validate()
            .map_err(|e| ApiError::bad_request("invalid_field", format!("sessions[{i}]: {e}")))?;
    }
    let accepted = state.store().record_sessions(edge, report.sessions).await?;
    Ok(Json(ReportAnswer { accepted }))
}

/// The query of `GET /v1/tenants/{tenant}/users`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// Only users whose id contains this (case-insensitive).
    pub q: Option<String>,
    pub limit: Option<u32>,
}

/// The idle window in ms (`--session-idle`).
pub fn idle_ms(state: &AppState) -> u64 {
    u64::try_from(state.config().session_idle.as_millis()).unwrap_or(u64::MAX)
}

/// `sessions:read` on the target's tenant; a refusal is audited (`read_sessions`).
async fn authorize_read(
    state: &AppState,
    auth: &AdminAuth,
    remote: RemoteAddr,
    target: &Target,
) -> Result<(), ApiError> {
    authorize(
        state,
        auth,
        remote,
        Scope::SessionsRead,
        "read_sessions",
        target,
        None,
    )
    .await
}

/// `GET /v1/tenants/{tenant}/users?q=&limit=`: the users with active sessions.
pub async fn users(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<TenantPath>,
    ApiQuery(q): ApiQuery<UsersQuery>,
) -> Result<Json<UsersAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    let limit = q.limit.unwrap_or(DEFAULT_USERS_LIMIT);
    if limit == 0 || limit > MAX_USERS_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_USERS_LIMIT}"),
        ));
    }
    let query = q.q.filter(|s| !s.is_empty());
    if query.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(ApiError::bad_request(
            "invalid_query",
            "`q` is longer than 256 bytes",
        ));
    }
    let target = Target::Tenant {
        tenant: p.tenant.clone(),
    };
    authorize_read(&state, &auth, remote, &target).await?;
    let answer = list_users(
        state.store(),
        &p.tenant,
        query,
        limit,
        now_ms(),
        idle_ms(&state),
    )
    .await?;
    Ok(Json(answer))
}

/// `GET /v1/tenants/{tenant}/users/{user}/sessions`: one user's sessions seen within the
/// idle window, revoked ones marked.
pub async fn user_sessions_handler(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<UserPath>,
) -> Result<Json<SessionsAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    check_id("user", &p.user)?;
    let target = Target::User {
        tenant: p.tenant.clone(),
        user: p.user.clone(),
    };
    authorize_read(&state, &auth, remote, &target).await?;
    let answer =
        user_sessions(state.store(), &p.tenant, &p.user, now_ms(), idle_ms(&state)).await?;
    Ok(Json(answer))
}
