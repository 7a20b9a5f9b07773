//! Per-edge credentials: `POST /v1/edge-tokens` makes one (the token is answered once;
//! the store keeps its SHA-256), `GET /v1/edge-tokens` lists them, `POST
//! /v1/edge-tokens/{edge}/revoke` ends every token of an edge. Each needs `edges:manage`
//! on every tenant (an edge reads every tenant's revocations); each write is audited.
//!
//! Why: with one shared token any edge could report any other's applied version — and
//! so forge the receipts `?wait=` counts. With its own token, an edge's receipts are
//! its credential's, whatever its `?edge=` says (that only names the instance).

use axum::extract::State;
use axum::Json;
use epochgate_core::state::Target;
use serde::{Deserialize, Serialize};

use super::admin::{checked_reason, refuse};
use super::extract::{check_id, AdminAuth, ApiPath, OptionalJson, RemoteAddr};
use super::ApiError;
use crate::now_ms;
use crate::rbac::{key_digest_hex, Scope};
use crate::state::AppState;
use crate::store::{AuditHead, AuditRecord, EdgeCredential, NewEdgeCredential};

/// The prefix of every per-edge token (so a leaked one is recognisable in a scan).
pub const TOKEN_PREFIX: &str = "ege_";

/// `POST /v1/edge-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The edge's name: what `GET /v1/edges` and the metrics show for it.
    pub edge: String,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `POST /v1/edge-tokens/{edge}/revoke` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to a create: the token, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAnswer {
    pub id: String,
    pub edge: String,
    pub token: String,
    pub created_ms: u64,
    pub audit: AuditHead,
}

/// `GET /v1/edge-tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAnswer {
    pub edge_tokens: Vec<EdgeCredential>,
}

/// The answer to a revoke.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedAnswer {
    pub edge: String,
    /// How many live tokens were revoked.
    pub revoked: u64,
    pub audit: AuditHead,
}

#[derive(Debug, Deserialize)]
pub struct EdgePath {
    edge: String,
}

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| ApiError::internal("no randomness", &e))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The audit row of an edge-token action: the edge (and token id) in front of the
/// caller's reason, the target global (an edge serves every tenant).
fn audit_record(
    auth: &AdminAuth,
    remote: RemoteAddr,
    action: &str,
    what: String,
    reason: Option<String>,
) -> AuditRecord {
    AuditRecord {
        at_ms: now_ms(),
        actor: auth.actor.clone(),
        action: action.to_string(),
        outcome: "ok".into(),
        target: Target::Global,
        reason: Some(match reason {
            Some(r) => format!("{what}: {r}"),
            None => what,
        }),
        source: remote.0.map(|a| a.to_string()),
        request_id: Some(auth.request_id.clone()),
    }
}

/// `edges:manage` on every tenant; a refusal is audited.
async fn authorize(
    state: &AppState,
    auth: &AdminAuth,
    remote: RemoteAddr,
    action: &str,
) -> Result<(), ApiError> {
    match auth.admin.authorize(Scope::EdgesManage, None) {
        Ok(()) => Ok(()),
        Err(denied) => Err(refuse(state, auth, remote, action, Target::Global, None, denied).await),
    }
}

/// `POST /v1/edge-tokens`: a new token for an edge (an edge may hold several while it
/// rotates; revoking the edge ends them all).
pub async fn create(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    OptionalJson(body): OptionalJson<CreateBody>,
) -> Result<Json<CreatedAnswer>, ApiError> {
    let body = body.ok_or_else(|| {
        ApiError::bad_request("invalid_json", "the body must be {\"edge\": \"<name>\"}")
    })?;
    check_id("edge", &body.edge)?;
    let reason = checked_reason(body.reason)?;
    authorize(&state, &auth, remote, "create_edge_token").await?;
    let token = format!("{TOKEN_PREFIX}{}", random_hex(24)?);
    let id = random_hex(8)?;
    let record = audit_record(
        &auth,
        remote,
        "create_edge_token",
        format!("edge {:?}, token {id}", body.edge),
        reason,
    );
    let created_ms = record.at_ms;
    let credential = NewEdgeCredential {
        id: id.clone(),
        edge: body.edge.clone(),
        sha256: key_digest_hex(&token),
        created_ms,
        created_by: auth.actor.clone(),
    };
    let audit = state
        .store()
        .create_edge_credential(credential, record)
        .await?;
    state.anchor(&audit).await;
    tracing::info!(edge = %body.edge, id = %id, actor = %auth.actor, "edge token created");
    Ok(Json(CreatedAnswer {
        id,
        edge: body.edge,
        token,
        created_ms,
        audit,
    }))
}

/// `GET /v1/edge-tokens`: every token's id, edge, creator and state (never the token).
pub async fn list(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
) -> Result<Json<ListAnswer>, ApiError> {
    authorize(&state, &auth, remote, "list_edge_tokens").await?;
    Ok(Json(ListAnswer {
        edge_tokens: state.store().edge_credentials().await?,
    }))
}

/// `POST /v1/edge-tokens/{edge}/revoke`: the edge's tokens stop working at once (an
/// open long-poll of it answers nothing more; its next request is refused).
pub async fn revoke(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<EdgePath>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokedAnswer>, ApiError> {
    check_id("edge", &p.edge)?;
    let reason = checked_reason(body.and_then(|b| b.reason))?;
    authorize(&state, &auth, remote, "revoke_edge_token").await?;
    let record = audit_record(
        &auth,
        remote,
        "revoke_edge_token",
        format!("edge {:?}", p.edge),
        reason,
    );
    let Some((revoked, audit)) = state
        .store()
        .revoke_edge_credentials(p.edge.clone(), record)
        .await?
    else {
        return Err(ApiError::not_found(format!(
            "edge {:?} has no live edge token",
            p.edge
        )));
    };
    state.anchor(&audit).await;
    tracing::info!(edge = %p.edge, revoked, actor = %auth.actor, "edge tokens revoked");
    Ok(Json(RevokedAnswer {
        edge: p.edge,
        revoked,
        audit,
    }))
}
