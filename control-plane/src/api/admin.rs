//! Admin API: the four revocations and the read-only views.
//!
//! Every write answers 200 only after its transaction committed (the store returns
//! then), so a 200 means the revocation survives a crash and edges will receive it.

use axum::extract::State;
use axum::Json;
use epochgate_core::state::Target;
use serde::Deserialize;

use super::extract::{check_id, AdminAuth, ApiPath, ApiQuery, OptionalJson, RemoteAddr};
use super::{ApiError, AuditAnswer, EdgeView, EdgesAnswer, RevocationsAnswer, RevokeAnswer};
use crate::now_ms;
use crate::state::AppState;
use crate::store::RevokeRequest;

/// The longest `reason` kept in the audit log, in bytes.
pub const MAX_REASON_BYTES: usize = 1024;

/// Audit rows answered when `?limit=` is absent, and the most ever answered.
pub const DEFAULT_AUDIT_LIMIT: u32 = 100;
pub const MAX_AUDIT_LIMIT: u32 = 1000;

/// The optional body of an admin write.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TenantPath {
    tenant: String,
}

#[derive(Debug, Deserialize)]
pub struct UserPath {
    tenant: String,
    user: String,
}

#[derive(Debug, Deserialize)]
pub struct SessionPath {
    tenant: String,
    sid: String,
}

#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    limit: Option<u32>,
}

async fn revoke(
    state: &AppState,
    auth: AdminAuth,
    remote: RemoteAddr,
    target: Target,
    body: Option<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    let reason = body.and_then(|b| b.reason).filter(|r| !r.is_empty());
    if let Some(reason) = &reason {
        if reason.len() > MAX_REASON_BYTES {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("`reason` is longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
    }
    let request = RevokeRequest {
        target,
        now_ms: now_ms(),
        actor: auth.actor,
        reason,
        source: remote.0.map(|a| a.to_string()),
    };
    let actor = request.actor.clone();
    let done = state.store().revoke(request).await?;
    state.metrics().admin_write();
    tracing::info!(
        target = ?done.target,
        epoch_ms = done.epoch_ms,
        version = done.version,
        actor = %actor,
        "revocation committed"
    );
    Ok(Json(done))
}

/// `POST /v1/tenants/{tenant}/users/{user}/logout`: ends every session of one user.
pub async fn logout_user(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<UserPath>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    check_id("user", &p.user)?;
    let target = Target::User {
        tenant: p.tenant,
        user: p.user,
    };
    revoke(&state, auth, remote, target, body).await
}

/// `POST /v1/tenants/{tenant}/logout`: ends every session of every user of one tenant.
pub async fn logout_tenant(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<TenantPath>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    revoke(
        &state,
        auth,
        remote,
        Target::Tenant { tenant: p.tenant },
        body,
    )
    .await
}

/// `POST /v1/tenants/{tenant}/sessions/{sid}/revoke`: ends one session id.
pub async fn revoke_session(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<SessionPath>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    check_id("sid", &p.sid)?;
    let target = Target::Session {
        tenant: p.tenant,
        sid: p.sid,
    };
    revoke(&state, auth, remote, target, body).await
}

/// `POST /v1/logout`: ends every session of every tenant.
pub async fn logout_all_tenants(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    revoke(&state, auth, remote, Target::Global, body).await
}

/// `GET /v1/tenants/{tenant}/revocations`: what an edge enforces for this tenant now.
pub async fn tenant_revocations(
    State(state): State<AppState>,
    _auth: AdminAuth,
    ApiPath(p): ApiPath<TenantPath>,
) -> Result<Json<RevocationsAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    let revocations = state.store().tenant_revocations(p.tenant.clone()).await?;
    Ok(Json(RevocationsAnswer {
        tenant: p.tenant,
        revocations,
    }))
}

/// `GET /v1/edges`: which edges poll, and how far behind each is — the way to see that
/// a logout has reached every live edge.
pub async fn edges(
    State(state): State<AppState>,
    _auth: AdminAuth,
) -> Result<Json<EdgesAnswer>, ApiError> {
    let status = state.store().status().await?;
    let edges = state
        .store()
        .edges()
        .await?
        .into_iter()
        .map(|e| {
            let same_stream = e.stream.as_deref().is_none_or(|s| s == status.stream);
            let lag = if same_stream {
                status.version.saturating_sub(e.applied_version)
            } else {
                status.version
            };
            EdgeView {
                id: e.id,
                stream: e.stream,
                applied_version: e.applied_version,
                lag,
                first_seen_ms: e.first_seen_ms,
                last_seen_ms: e.last_seen_ms,
                remote_addr: e.remote_addr,
            }
        })
        .collect();
    Ok(Json(EdgesAnswer {
        stream: status.stream,
        version: status.version,
        edges,
    }))
}

/// `GET /v1/audit?limit=N`: the newest admin actions first.
pub async fn audit(
    State(state): State<AppState>,
    _auth: AdminAuth,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditAnswer>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_AUDIT_LIMIT}"),
        ));
    }
    let entries = state.store().audit(limit).await?;
    Ok(Json(AuditAnswer { entries }))
}
