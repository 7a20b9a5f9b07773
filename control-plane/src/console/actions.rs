//! The console's state changes: each a POST with the session's CSRF token, carried out
//! by the admin API's own handler with the signed-in admin (same RBAC, same audit
//! entry), waiting up to [`WAIT`] for the live edges so the next page can show the
//! propagation receipt. Then a 303 back (post/redirect/get), the outcome kept for the
//! next page.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use serde::Deserialize;

use super::session::{same_token, Flash};
use super::views::{describe, receipt, t, users_url};
use super::{error_response, html, see_other, ConsoleForm, Signed};
use epochgate_core::state::Target;

use crate::api::admin::{self, RevokeBody, SessionPath, TenantPath, UserPath, WriteQuery};
use crate::api::extract::{check_id, ApiPath};
use crate::api::{ApiError, RevokeAnswer};
use crate::state::AppState;

/// How long an action waits for the live edges to apply it (the receipt).
pub const WAIT: &str = "5s";

/// The fields of a console form (each action reads the ones it needs).
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    pub csrf: String,
    pub return_to: Option<String>,
    pub reason: Option<String>,
    /// Logout All: the tenant's name, typed.
    pub confirm: Option<String>,
    /// Logout All: `now` or `at`.
    pub when: Option<String>,
    /// Logout All at a scheduled time: `YYYY-MM-DDTHH:MM[:SS]` (UTC).
    pub at: Option<String>,
}

/// The refusal of a form without this session's CSRF token, or sent from another site.
fn check_csrf(signed: &Signed, headers: &HeaderMap, form: &ActionForm) -> Option<Response> {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "same-origin" && v != "none");
    if cross_site || !same_token(&signed.session.csrf, &form.csrf) {
        tracing::warn!(actor = %signed.auth.actor, cross_site, "console: a form without a valid CSRF token refused");
        return Some(html(
            StatusCode::FORBIDDEN,
            super::views::error_page(
                Some(&signed.chrome),
                403,
                "This form is not valid any more (its security token does not match this sign-in). \
                 Nothing was changed: reload the page and try again.",
            ),
        ));
    }
    None
}

/// Where to go after the action: the form's `return_to` if it is a console page.
fn back_to(form: &ActionForm, default: String) -> String {
    form.return_to
        .as_deref()
        .filter(|r| {
            r.starts_with("/console/")
                && !r.contains("//")
                && !r.contains('\\')
                && !r.chars().any(char::is_control)
        })
        .map(str::to_string)
        .unwrap_or(default)
}

fn reason(form: &ActionForm) -> Option<String> {
    form.reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
}

/// The outcome kept for the next page, then the redirect; a refusal (403) is its page.
fn finish(
    state: &AppState,
    signed: &Signed,
    result: Result<Json<RevokeAnswer>, ApiError>,
    done: impl FnOnce(&RevokeAnswer) -> String,
    to: String,
) -> Response {
    let flash = match result {
        Ok(Json(answer)) => {
            let mut text = done(&answer);
            for w in &answer.warnings {
                text.push_str(&format!(" Warning: {w}"));
            }
            Flash {
                ok: true,
                text,
                receipt: answer.propagation.as_ref().map(receipt),
            }
        }
        Err(e) if e.status == StatusCode::FORBIDDEN || e.status == StatusCode::UNAUTHORIZED => {
            return error_response(Some(&signed.chrome), &e)
        }
        Err(e) => Flash {
            ok: false,
            text: format!("Nothing was changed: {}", e.detail),
            receipt: None,
        },
    };
    state.console().set_flash(&signed.session.key, flash);
    see_other(&to)
}

/// Carries out `target`'s revocation as the signed-in admin, through the API's own
/// write path (ids checked, authorization, audit), waiting for the edges' receipt.
async fn revoke(
    state: &AppState,
    signed: &Signed,
    target: Target,
    reason: Option<String>,
    at: Option<String>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    match &target {
        Target::User { tenant, user } => {
            check_id("tenant", tenant)?;
            check_id("user", user)?;
        }
        Target::Session { tenant, sid } => {
            check_id("tenant", tenant)?;
            check_id("sid", sid)?;
        }
        Target::Tenant { tenant } | Target::ScheduledTenant { tenant } => {
            check_id("tenant", tenant)?
        }
        Target::Global | Target::ScheduledGlobal => {}
    }
    admin::revoke(
        state,
        signed.auth.clone(),
        signed.remote,
        target,
        Some(RevokeBody { reason, at }),
        WriteQuery {
            wait: Some(WAIT.into()),
        },
    )
    .await
}

/// A one-click action (Logout, End session): CSRF, then the revocation, then back.
async fn one_click(
    state: &AppState,
    signed: &Signed,
    headers: &HeaderMap,
    form: &ActionForm,
    tenant: &str,
    target: Target,
    done: impl FnOnce(&RevokeAnswer) -> String,
) -> Response {
    if let Some(r) = check_csrf(signed, headers, form) {
        return r;
    }
    let to = back_to(form, users_url(tenant));
    let result = revoke(state, signed, target, reason(form), None).await;
    finish(state, signed, result, done, to)
}

/// `POST /console/tenants/{tenant}/users/{user}/logout`.
pub async fn logout_user(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    ApiPath(p): ApiPath<UserPath>,
    ConsoleForm(form): ConsoleForm<ActionForm>,
) -> Response {
    let message = format!("Logged out {}.", t(&p.user));
    let target = Target::User {
        tenant: p.tenant.clone(),
        user: p.user,
    };
    one_click(&state, &signed, &headers, &form, &p.tenant, target, |_| {
        message
    })
    .await
}

/// `POST /console/tenants/{tenant}/sessions/{sid}/revoke`.
pub async fn end_session(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    ApiPath(p): ApiPath<SessionPath>,
    ConsoleForm(form): ConsoleForm<ActionForm>,
) -> Response {
    let target = Target::Session {
        tenant: p.tenant.clone(),
        sid: p.sid,
    };
    one_click(&state, &signed, &headers, &form, &p.tenant, target, |a| {
        format!("Ended {}.", describe(&a.target))
    })
    .await
}

/// A `datetime-local` value (UTC) as RFC 3339: `2026-12-02T20:00` → `…T20:00:00Z`.
pub fn at_rfc3339(local: &str) -> Option<String> {
    let v = local.trim();
    match v.len() {
        16 => Some(format!("{v}:00Z")),
        19 => Some(format!("{v}Z")),
        _ if v.ends_with('Z') => Some(v.to_string()),
        _ => None,
    }
}

/// `POST /console/tenants/{tenant}/logout`: Logout All Users, now or at a time — only
/// with the tenant's name typed and a reason.
pub async fn logout_all(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    ApiPath(p): ApiPath<TenantPath>,
    ConsoleForm(form): ConsoleForm<ActionForm>,
) -> Response {
    if let Some(r) = check_csrf(&signed, &headers, &form) {
        return r;
    }
    let to = back_to(&form, users_url(&p.tenant));
    let refuse = |text: String| {
        state.console().set_flash(
            &signed.session.key,
            Flash {
                ok: false,
                text,
                receipt: None,
            },
        );
        see_other(&to)
    };
    if form.confirm.as_deref().map(str::trim) != Some(p.tenant.as_str()) {
        return refuse(format!(
            "Nothing was changed: type the tenant name ({}) exactly to confirm.",
            t(&p.tenant)
        ));
    }
    let Some(why) = reason(&form) else {
        return refuse("Nothing was changed: give a reason (it goes to the audit log).".into());
    };
    let at = match form.when.as_deref() {
        Some("at") => match form.at.as_deref().and_then(at_rfc3339) {
            Some(at) => Some(at),
            None => {
                return refuse("Nothing was changed: pick the time of the scheduled logout.".into())
            }
        },
        _ => None,
    };
    let scheduled = at.is_some();
    let tenant = p.tenant.clone();
    let result = revoke(
        &state,
        &signed,
        Target::Tenant { tenant: p.tenant },
        Some(why),
        at,
    )
    .await;
    finish(
        &state,
        &signed,
        result,
        |a| {
            if scheduled {
                format!(
                    "Scheduled the logout of every user of tenant {} at {}.",
                    t(&tenant),
                    epochgate_core::decision::rfc3339(a.epoch_ms)
                )
            } else {
                format!("Logged out every user of tenant {}.", t(&tenant))
            }
        },
        to,
    )
}

/// `POST /console/tenants/{tenant}/schedule/cancel`: cancels the tenant's pending
/// scheduled logout (one whose time has passed has taken effect and stays).
pub async fn cancel_schedule(
    State(state): State<AppState>,
    signed: Signed,
    headers: HeaderMap,
    ApiPath(p): ApiPath<TenantPath>,
    ConsoleForm(form): ConsoleForm<ActionForm>,
) -> Response {
    if let Some(r) = check_csrf(&signed, &headers, &form) {
        return r;
    }
    let to = back_to(&form, users_url(&p.tenant));
    let tenant = p.tenant.clone();
    let result = cancel_tenant_schedule(&state, &signed, p, reason(&form)).await;
    finish(
        &state,
        &signed,
        result,
        |_| format!("Cancelled the scheduled logout of tenant {}.", t(&tenant)),
        to,
    )
}

/// The pending scheduled logout of the tenant, cancelled through the API's own handler
/// (the same RBAC, audit and receipt): 404 when there is none, 409 when its time has
/// passed — it took effect, and a logout is never undone.
async fn cancel_tenant_schedule(
    state: &AppState,
    signed: &Signed,
    p: TenantPath,
    reason: Option<String>,
) -> Result<Json<RevokeAnswer>, ApiError> {
    check_id("tenant", &p.tenant)?;
    admin::cancel(
        state,
        signed.auth.clone(),
        signed.remote,
        Target::ScheduledTenant { tenant: p.tenant },
        Some(RevokeBody { reason, at: None }),
        WriteQuery {
            wait: Some(WAIT.into()),
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_local_values_become_utc_rfc3339() {
        assert_eq!(
            at_rfc3339("2026-12-02T20:00").as_deref(),
            Some("2026-12-02T20:00:00Z")
        );
        assert_eq!(
            at_rfc3339("2026-12-02T20:00:30").as_deref(),
            Some("2026-12-02T20:00:30Z")
        );
        assert_eq!(at_rfc3339(""), None);
    }

    #[test]
    fn only_console_pages_are_returned_to() {
        let f = |r: &str| ActionForm {
            return_to: Some(r.into()),
            ..ActionForm::default()
        };
        let d = || "/console/users".to_string();
        assert_eq!(
            back_to(&f("/console/tenants/a/users"), d()),
            "/console/tenants/a/users"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console//x",
            "/v1/logout",
            "/console/\\x",
        ] {
            assert_eq!(back_to(&f(bad), d()), d(), "{bad}");
        }
    }
}
