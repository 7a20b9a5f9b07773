//! Admin API: the four revocations and the read-only views.
//!
//! Every write answers 200 only after its transaction committed (the store returns
//! then), so a 200 means the revocation survives a crash and edges will receive it.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use epochgate_core::state::Target;
use serde::Deserialize;

use super::extract::{check_id, AdminAuth, ApiPath, ApiQuery, OptionalJson, RemoteAddr};
use super::{
    ApiError, AuditAnswer, EdgeView, EdgesAnswer, Propagation, RevocationsAnswer, RevokeAnswer,
};
use crate::config::MAX_WAIT_S;
use crate::now_ms;
use crate::rbac::{Denied, Scope};
use crate::state::AppState;
use crate::store::{action_name, target_tenant, AuditFilter, AuditRecord, RevokeRequest};

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
    /// Tenant and global logouts only: log out at this future time (RFC 3339) instead of
    /// now. Until then the edges pass the affected requests with an
    /// `epochgate-logout-at` response header, so clients can warn the user.
    #[serde(default)]
    pub at: Option<String>,
}

/// The longest a logout may be scheduled ahead.
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 31 * 24 * 3600 * 1000;

/// Turns a tenant or global logout with `at` into its scheduled form.
fn scheduled(
    target: Target,
    at: Option<&str>,
    now_ms: u64,
) -> Result<(Target, Option<u64>), ApiError> {
    let Some(at) = at else {
        return Ok((target, None));
    };
    let at_ms = epochgate_core::decision::parse_rfc3339(at).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_field",
            format!("`at` is not an RFC 3339 time (e.g. 2026-11-29T02:00:00Z): {at:?}"),
        )
    })?;
    if at_ms <= now_ms {
        return Err(ApiError::bad_request(
            "invalid_field",
            "`at` is not in the future; leave it out to log out now",
        ));
    }
    if at_ms > now_ms + MAX_SCHEDULE_AHEAD_MS {
        return Err(ApiError::bad_request(
            "invalid_field",
            "`at` is more than 31 days ahead",
        ));
    }
    let target = match target {
        Target::Tenant { tenant } => Target::ScheduledTenant { tenant },
        Target::Global => Target::ScheduledGlobal,
        _ => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "`at` is for tenant and global logouts; a user or session is logged out now",
            ))
        }
    };
    Ok((target, Some(at_ms)))
}

#[derive(Debug, Deserialize)]
pub struct TenantPath {
    pub tenant: String,
}

#[derive(Debug, Deserialize)]
pub struct UserPath {
    pub tenant: String,
    pub user: String,
}

#[derive(Debug, Deserialize)]
pub struct SessionPath {
    pub tenant: String,
    pub sid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    pub limit: Option<u32>,
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

/// The query of an admin write: `?wait=5`, `?wait=2.5`, `?wait=5s`, `?wait=500ms`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteQuery {
    pub wait: Option<String>,
}

/// Parses a `wait` value into a duration of at most [`MAX_WAIT_S`] seconds.
pub fn parse_wait(value: &str) -> Result<Duration, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "invalid_query",
            format!(
                "`wait` must be seconds (`5`, `2.5`, `5s`) or milliseconds (`500ms`), at most {MAX_WAIT_S} s; got {value:?}"
            ),
        )
    };
    let v = value.trim();
    let (number, scale) = if let Some(ms) = v.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = v.strip_suffix('s') {
        (s, 1.0)
    } else {
        (v, 1.0)
    };
    let n: f64 = number.parse().map_err(|_| bad())?;
    let secs = n * scale;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_WAIT_S as f64 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Refuses `denied`, after writing the attempt to the audit log.
async fn refuse(
    state: &AppState,
    auth: &AdminAuth,
    remote: RemoteAddr,
    action: &str,
    target: Target,
    reason: Option<String>,
    denied: Denied,
) -> ApiError {
    let record = AuditRecord {
        at_ms: now_ms(),
        actor: auth.actor.clone(),
        action: action.to_string(),
        outcome: "denied".into(),
        target,
        reason: Some(match reason {
            Some(r) => format!("refused: {denied}; reason given: {r}"),
            None => format!("refused: {denied}"),
        }),
        source: remote.0.map(|a| a.to_string()),
        request_id: Some(auth.request_id.clone()),
    };
    match state.store().record_audit(record).await {
        Ok(head) => state.anchor(&head),
        Err(err) => tracing::error!(error = %err, "cannot audit a refused attempt"),
    }
    tracing::warn!(actor = %auth.actor, action, %denied, "refused");
    ApiError::forbidden(denied.to_string())
}

/// Checks `scope` on the target's tenant; a refusal is audited.
pub(crate) async fn authorize(
    state: &AppState,
    auth: &AdminAuth,
    remote: RemoteAddr,
    scope: Scope,
    action: &str,
    target: &Target,
    reason: Option<String>,
) -> Result<(), ApiError> {
    match auth.admin.authorize(scope, target_tenant(target)) {
        Ok(()) => Ok(()),
        Err(denied) => {
            Err(refuse(state, auth, remote, action, target.clone(), reason, denied).await)
        }
    }
}

/// One revocation for `auth` (every write route, and the console's actions): checks,
/// authorization (a refusal audited), commit, audit, and with `wait` the receipt.
pub(crate) async fn revoke(
    state: &AppState,
    auth: AdminAuth,
    remote: RemoteAddr,
    target: Target,
    body: Option<RevokeBody>,
    query: WriteQuery,
) -> Result<Json<RevokeAnswer>, ApiError> {
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    let reason = body
        .as_ref()
        .and_then(|b| b.reason.clone())
        .filter(|r| !r.is_empty());
    if let Some(reason) = &reason {
        if reason.len() > MAX_REASON_BYTES {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("`reason` is longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
    }
    let now = now_ms();
    let at = body.as_ref().and_then(|b| b.at.clone());
    let (target, at_ms) = scheduled(target, at.as_deref(), now)?;
    let scope = match target {
        Target::User { .. } | Target::Session { .. } => Scope::Revoke,
        Target::Tenant { .. }
        | Target::Global
        | Target::ScheduledTenant { .. }
        | Target::ScheduledGlobal => Scope::RevokeAll,
    };
    authorize(
        state,
        &auth,
        remote,
        scope,
        action_name(&target),
        &target,
        reason.clone(),
    )
    .await?;
    let mut warnings = Vec::new();
    if let Some(tenant) = target_tenant(&target) {
        let known = state.config().credentials.mentions_tenant(tenant)
            || state.store().tenant_seen(tenant.to_string()).await?;
        if !known {
            warnings.push(format!(
                "tenant {tenant:?} was never mentioned before (no revocation, audit entry or credential names it); \
                 there is no tenant registry, so check its spelling against the `tid` your IdP issues"
            ));
        }
    }
    let request = RevokeRequest {
        target,
        now_ms: now,
        at_ms,
        actor: auth.actor,
        reason,
        source: remote.0.map(|a| a.to_string()),
        request_id: Some(auth.request_id),
    };
    let actor = request.actor.clone();
    let done = state.store().revoke(request).await?;
    state.anchor(&done.audit);
    state.metrics().admin_write();
    tracing::info!(
        target = ?done.target,
        epoch_ms = done.epoch_ms,
        version = done.version,
        actor = %actor,
        "revocation committed"
    );
    let propagation = match wait {
        Some(wait) => Some(await_edges(state, done.version, wait).await?),
        None => None,
    };
    Ok(Json(RevokeAnswer {
        target: done.target,
        epoch_ms: done.epoch_ms,
        version: done.version,
        audit: done.audit,
        propagation,
        warnings,
    }))
}

/// The live edges (seen within the window) and which of them hold `version`.
async fn edge_progress(
    state: &AppState,
    version: u64,
    started: Instant,
) -> Result<Propagation, ApiError> {
    let status = state.store().status().await?;
    let now = now_ms();
    let window = u64::try_from(state.config().edge_live_window.as_millis()).unwrap_or(u64::MAX);
    let mut edges = 0;
    let mut acked = 0;
    let mut lagging = Vec::new();
    for e in state.store().edges().await? {
        if now.saturating_sub(e.last_seen_ms) > window {
            continue;
        }
        edges += 1;
        let same_stream = e.stream.as_deref() == Some(status.stream.as_str());
        if same_stream && e.applied_version >= version {
            acked += 1;
        } else {
            lagging.push(e.id);
        }
    }
    Ok(Propagation {
        edges,
        acked,
        lagging,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Waits until every live edge has applied `version`, or `wait` runs out. Woken by this
/// replica's receipts at once, and by other replicas' (through the store) within 50 ms.
async fn await_edges(
    state: &AppState,
    version: u64,
    wait: Duration,
) -> Result<Propagation, ApiError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + wait;
    let mut receipts = state.receipts();
    loop {
        let progress = edge_progress(state, version, started).await?;
        if progress.lagging.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(progress);
        }
        tokio::select! {
            _ = receipts.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// `POST /v1/tenants/{tenant}/users/{user}/logout`: ends every session of one user.
pub async fn logout_user(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<UserPath>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    check_id("user", &p.user)?;
    let target = Target::User {
        tenant: p.tenant,
        user: p.user,
    };
    revoke(&state, auth, remote, target, body, query).await
}

/// `POST /v1/tenants/{tenant}/logout`: ends every session of every user of one tenant.
pub async fn logout_tenant(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<TenantPath>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    revoke(
        &state,
        auth,
        remote,
        Target::Tenant { tenant: p.tenant },
        body,
        query,
    )
    .await
}

/// `POST /v1/tenants/{tenant}/sessions/{sid}/revoke`: ends one session id.
pub async fn revoke_session(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<SessionPath>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    check_id("sid", &p.sid)?;
    let target = Target::Session {
        tenant: p.tenant,
        sid: p.sid,
    };
    revoke(&state, auth, remote, target, body, query).await
}

/// `POST /v1/logout`: ends every session of every tenant.
pub async fn logout_all_tenants(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiQuery(query): ApiQuery<WriteQuery>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    revoke(&state, auth, remote, Target::Global, body, query).await
}

/// `GET /v1/tenants/{tenant}/revocations`: what an edge enforces for this tenant now.
pub async fn tenant_revocations(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<TenantPath>,
) -> Result<Json<RevocationsAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    let target = Target::Tenant {
        tenant: p.tenant.clone(),
    };
    authorize(
        &state,
        &auth,
        remote,
        Scope::RevocationsRead,
        "read_revocations",
        &target,
        None,
    )
    .await?;
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
    auth: AdminAuth,
    remote: RemoteAddr,
) -> Result<Json<EdgesAnswer>, ApiError> {
    // Edges serve every tenant; any admin with the permission may see them.
    if !auth.admin.scopes.contains(&Scope::EdgesRead) {
        let denied = Denied::MissingScope(Scope::EdgesRead);
        return Err(refuse(
            &state,
            &auth,
            remote,
            "read_edges",
            Target::Global,
            None,
            denied,
        )
        .await);
    }
    let status = state.store().status().await?;
    let now = now_ms();
    let window = u64::try_from(state.config().edge_live_window.as_millis()).unwrap_or(u64::MAX);
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
                live: now.saturating_sub(e.last_seen_ms) <= window,
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

/// `GET /v1/audit?limit=N&tenant=&actor=&action=&outcome=&since_ms=&until_ms=`: the
/// newest matching entries first. A tenant admin sees its own tenant's entries only.
pub async fn audit(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditAnswer>, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_LIMIT);
    if limit == 0 || limit > MAX_AUDIT_LIMIT {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_AUDIT_LIMIT}"),
        ));
    }
    if let Some(t) = &q.tenant {
        check_id("tenant", t)?;
    }
    if let Some(o) = &q.outcome {
        if o != "ok" && o != "denied" {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`outcome` is `ok` or `denied`",
            ));
        }
    }
    // A tenant admin asking without `tenant` gets its own tenant.
    let tenant = q
        .tenant
        .clone()
        .or_else(|| auth.admin.tenant().map(str::to_string));
    let target = match &tenant {
        Some(t) => Target::Tenant { tenant: t.clone() },
        None => Target::Global,
    };
    authorize(
        &state,
        &auth,
        remote,
        Scope::AuditRead,
        "read_audit",
        &target,
        None,
    )
    .await?;
    let entries = state
        .store()
        .audit(AuditFilter {
            limit,
            tenant,
            actor: q.actor,
            action: q.action,
            outcome: q.outcome,
            since_ms: q.since_ms,
            until_ms: q.until_ms,
        })
        .await?;
    Ok(Json(AuditAnswer { entries }))
}
