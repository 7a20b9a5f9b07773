//! Admin API: the four revocations, cancelling a pending scheduled logout, and the
//! read-only views.
//!
//! Every write answers 200 only after its transaction committed (the store returns
//! then), so a 200 means the revocation survives a crash and edges will receive it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
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
use crate::store::{
    action_name, cancel_action_name, target_tenant, AuditFilter, AuditRecord, CancelOutcome,
    EdgeRecord, RevokeRequest, StoreStatus,
};

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

/// An RFC 3339 time (`2026-11-29T02:00:00Z`, `…T03:00:00.5+01:00`) in ms since the Unix
/// epoch, by the `time` crate: a day that does not exist (`2026-11-31`) is refused, not
/// rolled over into another.
pub fn parse_at(at: &str) -> Result<u64, ApiError> {
    let bad = |why: String| {
        ApiError::bad_request(
            "invalid_field",
            format!("`at` is not an RFC 3339 time (e.g. 2026-11-29T02:00:00Z): {at:?}: {why}"),
        )
    };
    let t = time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .map_err(|e| bad(e.to_string()))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|_| bad("before 1970".into()))
}

/// Turns a tenant or global logout with `at` into its scheduled form.
fn scheduled(
    target: Target,
    at: Option<&str>,
    now_ms: u64,
) -> Result<(Target, Option<u64>), ApiError> {
    let Some(at) = at else {
        return Ok((target, None));
    };
    let at_ms = parse_at(at)?;
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

/// A caller's `reason` for the audit log: empty is none; over [`MAX_REASON_BYTES`] is a 400.
pub(crate) fn checked_reason(reason: Option<String>) -> Result<Option<String>, ApiError> {
    let reason = reason.filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > MAX_REASON_BYTES) {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("`reason` is longer than {MAX_REASON_BYTES} bytes"),
        ));
    }
    Ok(reason)
}

/// Refuses `denied`, after writing the attempt to the audit log.
pub(crate) async fn refuse(
    state: &AppState,
    auth: &AdminAuth,
    remote: RemoteAddr,
    action: &str,
    target: Target,
    reason: Option<String>,
    denied: Denied,
) -> ApiError {
    if let Err(retry) = state.refusals().allow(&auth.admin.actor) {
        state.metrics().refusal_limited();
        tracing::debug!(actor = %auth.actor, action, "refused again: rate-limited, not audited");
        return ApiError::rate_limited(retry);
    }
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
        Ok(head) => state.anchor(&head).await,
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
    let reason = checked_reason(body.as_ref().and_then(|b| b.reason.clone()))?;
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
    committed(state, done, &actor, "revocation committed", wait, warnings).await
}

/// The answer to a committed write: anchored, counted, logged, and with `?wait=` the
/// edges' progress.
async fn committed(
    state: &AppState,
    done: crate::store::Revocation,
    actor: &str,
    what: &str,
    wait: Option<Duration>,
    warnings: Vec<String>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    state.anchor(&done.audit).await;
    state.metrics().admin_write();
    tracing::info!(
        target = ?done.target,
        epoch_ms = done.epoch_ms,
        version = done.version,
        actor = %actor,
        "{what}"
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

/// The edges as `GET /v1/edges` shows them: one per edge, its instances (a Worker's
/// isolates, several Envoys sharing a credential) folded in — the live ones if any are
/// live — with the lowest applied version and the largest lag among them. `acked(v)`
/// holds when every one of those instances has applied `v` of this stream.
pub fn edge_views(
    records: Vec<EdgeRecord>,
    status: &StoreStatus,
    now_ms: u64,
    live_window: Duration,
) -> Vec<(EdgeView, u64)> {
    let window = u64::try_from(live_window.as_millis()).unwrap_or(u64::MAX);
    let is_live = |r: &EdgeRecord| now_ms.saturating_sub(r.last_seen_ms) <= window;
    // The version an instance holds of this history (0: another stream).
    let held = |r: &EdgeRecord| match r.stream.as_deref() {
        Some(s) if s == status.stream => r.applied_version,
        Some(_) => 0,
        None => r.applied_version,
    };
    let mut by_edge: BTreeMap<String, Vec<EdgeRecord>> = BTreeMap::new();
    for r in records {
        by_edge.entry(r.id.clone()).or_default().push(r);
    }
    by_edge
        .into_iter()
        .filter_map(|(id, all)| {
            let live: Vec<&EdgeRecord> = all.iter().filter(|r| is_live(r)).collect();
            let counted: Vec<&EdgeRecord> = if live.is_empty() {
                all.iter().collect()
            } else {
                live.clone()
            };
            let laggard = counted.iter().min_by_key(|r| held(r)).copied()?;
            let latest = counted.iter().max_by_key(|r| r.last_seen_ms).copied()?;
            // Acknowledged: a stream was named (this one) and the version reached.
            let acked_version = counted
                .iter()
                .map(|r| match r.stream.as_deref() {
                    Some(s) if s == status.stream => r.applied_version,
                    _ => 0,
                })
                .min()
                .unwrap_or(0);
            let view = EdgeView {
                id,
                live: !live.is_empty(),
                instances: u64::try_from(counted.len()).unwrap_or(u64::MAX),
                credential: latest.credential.clone(),
                stream: laggard.stream.clone(),
                applied_version: laggard.applied_version,
                lag: status.version.saturating_sub(held(laggard)),
                first_seen_ms: counted.iter().map(|r| r.first_seen_ms).min().unwrap_or(0),
                last_seen_ms: latest.last_seen_ms,
                remote_addr: latest.remote_addr.clone(),
            };
            Some((view, acked_version))
        })
        .collect()
}

/// The live edges (seen within the window) and which of them hold `version`.
async fn edge_progress(
    state: &AppState,
    version: u64,
    started: Instant,
) -> Result<Propagation, ApiError> {
    let status = state.store().status().await?;
    let views = edge_views(
        state.store().edges().await?,
        &status,
        now_ms(),
        state.config().edge_live_window,
    );
    let mut edges = 0;
    let mut acked = 0;
    let mut lagging = Vec::new();
    for (view, acked_version) in views.into_iter().filter(|(v, _)| v.live) {
        edges += 1;
        if acked_version >= version {
            acked += 1;
        } else {
            lagging.push(view.id);
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

/// Cancels the pending scheduled logout `target` (audited): 404 if there is none, 409
/// if its time has passed — it took effect, and a logout is not undone (the refused
/// attempt is audited too).
pub(crate) async fn cancel(
    state: &AppState,
    auth: AdminAuth,
    remote: RemoteAddr,
    target: Target,
    body: Option<RevokeBody>,
    query: WriteQuery,
) -> Result<Json<RevokeAnswer>, ApiError> {
    let wait = query.wait.as_deref().map(parse_wait).transpose()?;
    if body.as_ref().is_some_and(|b| b.at.is_some()) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "`at` is for scheduling; a cancel takes only a `reason`",
        ));
    }
    let reason = checked_reason(body.as_ref().and_then(|b| b.reason.clone()))?;
    let action = cancel_action_name(&target);
    authorize(
        state,
        &auth,
        remote,
        Scope::RevokeAll,
        action,
        &target,
        reason.clone(),
    )
    .await?;
    let request = RevokeRequest {
        target: target.clone(),
        now_ms: now_ms(),
        at_ms: None,
        actor: auth.actor.clone(),
        reason: reason.clone(),
        source: remote.0.map(|a| a.to_string()),
        request_id: Some(auth.request_id.clone()),
    };
    let done = match state.store().cancel(request).await? {
        CancelOutcome::Cancelled(done) => done,
        CancelOutcome::NotFound => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "no_schedule",
                "there is no scheduled logout to cancel",
            ))
        }
        CancelOutcome::Passed { at_ms } => {
            let at = epochgate_core::decision::rfc3339(at_ms);
            let record = AuditRecord {
                at_ms: now_ms(),
                actor: auth.actor.clone(),
                action: action.to_string(),
                outcome: "denied".into(),
                target,
                reason: Some(format!(
                    "refused: the scheduled logout at {at} has passed{}",
                    reason
                        .map(|r| format!("; reason given: {r}"))
                        .unwrap_or_default()
                )),
                source: remote.0.map(|a| a.to_string()),
                request_id: Some(auth.request_id.clone()),
            };
            match state.store().record_audit(record).await {
                Ok(head) => state.anchor(&head).await,
                Err(err) => tracing::error!(error = %err, "cannot audit a refused cancel"),
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "schedule_passed",
                format!(
                    "the scheduled logout at {at} has passed: it took effect and cannot be undone \
                     (a login after it passes; schedule the next one instead)"
                ),
            ));
        }
    };
    let what = "scheduled logout cancelled";
    committed(state, done, &auth.actor, what, wait, Vec::new()).await
}

/// `DELETE /v1/tenants/{tenant}/scheduled-logout`: cancels the tenant's pending scheduled
/// logout.
pub async fn cancel_tenant_schedule(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiPath(p): ApiPath<TenantPath>,
    ApiQuery(query): ApiQuery<WriteQuery>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    let target = Target::ScheduledTenant { tenant: p.tenant };
    cancel(&state, auth, remote, target, body, query).await
}

/// `DELETE /v1/scheduled-logout`: cancels the pending scheduled logout of every tenant.
pub async fn cancel_global_schedule(
    State(state): State<AppState>,
    auth: AdminAuth,
    remote: RemoteAddr,
    ApiQuery(query): ApiQuery<WriteQuery>,
    OptionalJson(body): OptionalJson<RevokeBody>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    cancel(&state, auth, remote, Target::ScheduledGlobal, body, query).await
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
    let edges = edge_views(
        state.store().edges().await?,
        &status,
        now_ms(),
        state.config().edge_live_window,
    )
    .into_iter()
    .map(|(view, _)| view)
    .collect();
    Ok(Json(EdgesAnswer {
        stream: status.stream,
        version: status.version,
        edges,
        rollback: state.store().last_rollback().await?,
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

#[cfg(test)]
mod tests {
    use super::parse_at;

    #[test]
    fn at_is_parsed_by_a_date_library_and_impossible_dates_are_refused() {
        assert_eq!(parse_at("2027-01-15T08:00:00Z").unwrap(), 1_800_000_000_000);
        assert_eq!(
            parse_at("2027-01-15T09:00:00.25+01:00").unwrap(),
            1_800_000_000_250
        );
        assert_eq!(parse_at("2024-02-29T00:00:00Z").unwrap(), 1_709_164_800_000);
        for bad in [
            "2026-11-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01",
            "1969-12-31T23:59:59Z",
            "tomorrow",
        ] {
            let e = parse_at(bad).unwrap_err();
            assert!(e.detail.contains("RFC 3339"), "{bad}: {}", e.detail);
        }
    }
}
