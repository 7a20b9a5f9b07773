//! The admin console at `/console/`: Settings → Users → Logout, in a browser.
//!
//! Server-rendered HTML ([`views`], maud templates compiled into the binary) with a
//! little plain JavaScript (`static/console.js`: dialogs, the typed confirmation, the
//! Edges page's refresh) and no build step. Every page and action goes through the
//! admin API's own handlers with the signed-in admin's credential, so RBAC decides
//! what the server accepts exactly as for the API (a refusal is a 403 page, audited as
//! the API audits it), and the same checks decide what is shown (no Logout All button
//! without `sessions:revoke_all`, no tenant picker for a tenant admin, no Audit or
//! Edges without their permissions).
//!
//! # Security
//! - Sign-in ([`auth`]) with an admin credential (or, with `--console-oidc`, through
//!   the admins' IdP: authorization code + PKCE, [`oidc`]) into a server-side session
//!   ([`session`]): the browser gets an `HttpOnly`, `SameSite=Strict` cookie on
//!   `/console` (`Secure` unless reached on a loopback host); `--console-idle`.
//! - Every state change is a POST carrying the session's CSRF token (compared in
//!   constant time); a cross-site `Sec-Fetch-Site` is refused too.
//! - Every response: `Content-Security-Policy: default-src 'self'; …; frame-ancestors
//!   'none'` (no inline script or style), `X-Frame-Options: DENY`, `nosniff`,
//!   `Referrer-Policy: no-referrer`, `Cache-Control: no-store`.
//! - No secret in a URL: credentials go in POST bodies, the session in a cookie.
//!
//! # Layout
//! - this file: the router, the signed-in extractor ([`Signed`]), the pages.
//! - [`actions`]: the POSTs (Logout, End session, Logout All, Cancel).
//! - [`auth`]: sign-in and sign-out; [`oidc`]: the IdP sign-in.
//! - [`session`]: the server-side sessions, cookies, CSRF tokens.
//! - [`views`]: the templates.

use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use maud::Markup;
use serde::Deserialize;

use crate::api::admin::{self, AuditQuery, TenantPath, UserPath};
use crate::api::extract::{request_id, AdminAuth, ApiPath, ApiQuery, RemoteAddr};
use crate::api::sessions::{self as api_sessions, idle_ms, UsersQuery};
use crate::api::ApiError;
use crate::now_ms;
use crate::rbac::{Principal, Scope};
use crate::state::AppState;

pub mod actions;
pub mod auth;
pub mod oidc;
pub mod session;
pub mod views;

use session::{cookie, on_loopback, Current, COOKIE_NAME};
use views::Chrome;

/// The console's CSP: nothing but this origin, no inline code, never framed.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'; object-src 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// The console's routes (merged into [`crate::app`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/login/oidc", get(oidc::start))
        .route("/console/login/oidc/callback", get(oidc::callback))
        .route("/console/logout", post(auth::sign_out))
        .route("/console/users", get(pick_tenant))
        .route("/console/tenants/{tenant}/users", get(users))
        .route("/console/tenants/{tenant}/users/{user}", get(user))
        .route("/console/tenants/{tenant}/logout-all", get(logout_all_page))
        .route(
            "/console/tenants/{tenant}/users/{user}/logout",
            post(actions::logout_user),
        )
        .route(
            "/console/tenants/{tenant}/sessions/{sid}/revoke",
            post(actions::end_session),
        )
        .route(
            "/console/tenants/{tenant}/logout",
            post(actions::logout_all),
        )
        .route(
            "/console/tenants/{tenant}/schedule/cancel",
            post(actions::cancel_schedule),
        )
        .route("/console/audit", get(audit))
        .route("/console/edges", get(edges))
        .route(
            "/console/static/console.css",
            get(|| async { asset("text/css; charset=utf-8", CSS) }),
        )
        .route(
            "/console/static/console.js",
            get(|| async { asset("text/javascript; charset=utf-8", JS) }),
        )
        .route("/console/{*rest}", get(not_found))
        .layer(axum::middleware::map_response(security_headers))
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.entry(CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [(CONTENT_TYPE, content_type), (CACHE_CONTROL, "no-cache")],
        body,
    )
        .into_response()
}

/// A 303 to `location` (after a POST, and for redirects between pages).
pub fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    r
}

/// An HTML page with a status.
pub fn html(status: StatusCode, markup: Markup) -> Response {
    (
        status,
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        markup.into_string(),
    )
        .into_response()
}

/// An API refusal or failure as a console page (403: "Not allowed: …").
pub fn error_response(chrome: Option<&Chrome>, err: &ApiError) -> Response {
    html(
        err.status,
        views::error_page(chrome, err.status.as_u16(), &err.detail),
    )
}

/// A signed-in admin on a console request: who (re-authenticated now), the session, and
/// the page chrome. Without a live session, the request is sent to the sign-in page.
pub struct Signed {
    pub auth: AdminAuth,
    pub session: Current,
    pub remote: RemoteAddr,
    pub chrome: Chrome,
    /// Whether cookies set on this request carry `Secure`.
    pub secure: bool,
}

impl Signed {
    /// Whether the admin may use `scope` on `tenant` (what decides a button is shown;
    /// the server checks again, through the API's handler, when it is used).
    pub fn may(&self, scope: Scope, tenant: &str) -> bool {
        self.auth.admin.authorize(scope, Some(tenant)).is_ok()
    }

    pub fn is_global(&self) -> bool {
        self.auth.admin.tenant().is_none()
    }
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let now = now_ms();
        let idle = state.config().console_idle;
        let to_login = || see_other("/console/login");
        let id = cookie(&parts.headers, COOKIE_NAME).ok_or_else(to_login)?;
        let session = state
            .console()
            .current(&id, now, idle)
            .ok_or_else(to_login)?;
        let admin = match state
            .config()
            .credentials
            .authenticate(&session.credential, now)
        {
            Ok(Principal::Admin(admin)) => admin,
            // An admin JWT that expired, a key no longer configured: sign in again.
            _ => {
                state.console().end(&session.key);
                return Err(see_other("/console/login?expired=1"));
            }
        };
        let remote = RemoteAddr::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let flash = state.console().take_flash(&session.key);
        let chrome = Chrome {
            actor: admin.actor.clone(),
            scope: match admin.tenant() {
                Some(t) => format!("tenant {}", views::t(t)),
                None => "every tenant".into(),
            },
            csrf: session.csrf.clone(),
            can_audit: admin.scopes.contains(&Scope::AuditRead),
            can_edges: admin.scopes.contains(&Scope::EdgesRead),
            now_ms: now,
            flash,
        };
        Ok(Signed {
            auth: AdminAuth {
                actor: admin.actor.clone(),
                admin,
                request_id: request_id(&parts.headers),
            },
            session,
            remote,
            chrome,
            secure: !on_loopback(&parts.headers),
        })
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Signed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Signed as FromRequestParts<AppState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

/// A urlencoded form whose rejection is a console page.
pub struct ConsoleForm<T>(pub T);

impl<T, S> FromRequest<S> for ConsoleForm<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Response> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(ConsoleForm(v)),
            Err(rej) => Err(html(
                StatusCode::BAD_REQUEST,
                views::error_page(None, 400, &rej.body_text()),
            )),
        }
    }
}

async fn home(signed: Signed) -> Response {
    match signed.auth.admin.tenant() {
        Some(t) => see_other(&views::users_url(t)),
        None => see_other("/console/users"),
    }
}

async fn not_found(signed: Option<Signed>) -> Response {
    html(
        StatusCode::NOT_FOUND,
        views::error_page(
            signed.as_ref().map(|s| &s.chrome),
            404,
            "There is no such page in the console.",
        ),
    )
}

#[derive(Debug, Deserialize)]
pub struct PickQuery {
    tenant: Option<String>,
}

/// `/console/users[?tenant=T]`: a tenant admin goes to its tenant; a global admin picks.
async fn pick_tenant(
    State(state): State<AppState>,
    signed: Signed,
    Query(q): Query<PickQuery>,
) -> Response {
    // The tenant asked for, if any: its page decides (a tenant admin asking for another
    // tenant gets the refusal there, audited).
    if let Some(t) = q.tenant.filter(|t| !t.trim().is_empty()) {
        return see_other(&views::users_url(t.trim()));
    }
    if let Some(t) = signed.auth.admin.tenant() {
        return see_other(&views::users_url(t));
    }
    let now = now_ms();
    let known = state
        .store()
        .session_tenants(now.saturating_sub(idle_ms(&state)))
        .await
        .unwrap_or_default();
    html(StatusCode::OK, views::pick_tenant(&signed.chrome, &known))
}

/// What the Logout All dialog says it reaches, and the tenant's pending schedules.
async fn logout_all_reach<'a>(
    state: &AppState,
    users: &crate::sessions::UsersAnswer,
    schedules: &'a [crate::store::Entry],
) -> views::LogoutAll<'a> {
    let now = now_ms();
    let window = u64::try_from(state.config().edge_live_window.as_millis()).unwrap_or(u64::MAX);
    let live_edges = state
        .store()
        .edges()
        .await
        .map(|edges| {
            edges
                .iter()
                .filter(|e| now.saturating_sub(e.last_seen_ms) <= window)
                .count() as u64
        })
        .unwrap_or(0);
    views::LogoutAll {
        users: users.total_users,
        sessions: users.total_sessions,
        live_edges,
        schedules,
    }
}

/// The tenant's pending scheduled logouts (its own and the global one).
async fn pending_schedules(state: &AppState, tenant: &str) -> Vec<crate::store::Entry> {
    let now = now_ms();
    state
        .store()
        .tenant_revocations(tenant.to_string())
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.target.is_scheduled() && e.epoch_ms > now)
        .collect()
}

fn idle_min(state: &AppState) -> u64 {
    state.config().session_idle.as_secs() / 60
}

/// The tenant's active users, through the API's handler (RBAC, a refusal audited).
async fn tenant_users(
    state: &AppState,
    signed: &Signed,
    tenant: &str,
    q: Option<String>,
) -> Result<crate::sessions::UsersAnswer, ApiError> {
    api_sessions::users(
        State(state.clone()),
        signed.auth.clone(),
        signed.remote,
        ApiPath(TenantPath {
            tenant: tenant.to_string(),
        }),
        ApiQuery(UsersQuery { q, limit: None }),
    )
    .await
    .map(|Json(a)| a)
}

/// `/console/tenants/{tenant}/users?q=`: the users with active sessions.
async fn users(
    State(state): State<AppState>,
    signed: Signed,
    ApiPath(p): ApiPath<TenantPath>,
    Query(q): Query<UsersQuery>,
) -> Response {
    let query = q.q.clone().filter(|s| !s.is_empty());
    let answer = match tenant_users(&state, &signed, &p.tenant, query.clone()).await {
        Ok(a) => a,
        Err(e) => return error_response(Some(&signed.chrome), &e),
    };
    let tenant = p.tenant.as_str();
    let picker = if signed.is_global() {
        Some(
            state
                .store()
                .session_tenants(now_ms().saturating_sub(idle_ms(&state)))
                .await
                .unwrap_or_default(),
        )
    } else {
        None
    };
    let schedules = pending_schedules(&state, tenant).await;
    let logout_all = if signed.may(Scope::RevokeAll, tenant) {
        Some(logout_all_reach(&state, &answer, &schedules).await)
    } else {
        None
    };
    let page = views::UsersPage {
        chrome: &signed.chrome,
        tenant,
        query: query.as_deref(),
        answer: &answer,
        picker: picker.as_deref(),
        can_logout: signed.may(Scope::Revoke, tenant),
        logout_all,
        idle_min: idle_min(&state),
    };
    html(StatusCode::OK, views::users(&page))
}

/// `/console/tenants/{tenant}/logout-all`: the Logout All dialog as a page (no JS).
async fn logout_all_page(
    State(state): State<AppState>,
    signed: Signed,
    ApiPath(p): ApiPath<TenantPath>,
) -> Response {
    let answer = match tenant_users(&state, &signed, &p.tenant, None).await {
        Ok(a) => a,
        Err(e) => return error_response(Some(&signed.chrome), &e),
    };
    if !signed.may(Scope::RevokeAll, &p.tenant) {
        let denied = ApiError::forbidden(format!(
            "this credential lacks the `{}` permission on tenant {:?}",
            Scope::RevokeAll,
            p.tenant
        ));
        return error_response(Some(&signed.chrome), &denied);
    }
    let schedules = pending_schedules(&state, &p.tenant).await;
    let la = logout_all_reach(&state, &answer, &schedules).await;
    html(
        StatusCode::OK,
        views::logout_all_page(&signed.chrome, &p.tenant, &la, idle_min(&state)),
    )
}

/// `/console/tenants/{tenant}/users/{user}`: one user's sessions.
async fn user(
    State(state): State<AppState>,
    signed: Signed,
    ApiPath(p): ApiPath<UserPath>,
) -> Response {
    let can_logout = signed.may(Scope::Revoke, &p.tenant);
    match api_sessions::user_sessions_handler(
        State(state.clone()),
        signed.auth.clone(),
        signed.remote,
        ApiPath(p),
    )
    .await
    {
        Ok(Json(answer)) => html(
            StatusCode::OK,
            views::user(&signed.chrome, &answer, can_logout, idle_min(&state)),
        ),
        Err(e) => error_response(Some(&signed.chrome), &e),
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditForm {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    outcome: Option<String>,
}

/// `/console/audit`: the log (a tenant admin sees its tenant's), and for a global admin
/// the chain's verification.
async fn audit(
    State(state): State<AppState>,
    signed: Signed,
    Query(f): Query<AuditForm>,
) -> Response {
    let some = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let filters = views::AuditFilters {
        tenant: some(f.tenant),
        actor: some(f.actor),
        action: some(f.action),
        outcome: some(f.outcome),
    };
    let entries = match admin::audit(
        State(state.clone()),
        signed.auth.clone(),
        signed.remote,
        ApiQuery(AuditQuery {
            limit: Some(200),
            tenant: filters.tenant.clone(),
            actor: filters.actor.clone(),
            action: filters.action.clone(),
            outcome: filters.outcome.clone(),
            ..AuditQuery::default()
        }),
    )
    .await
    {
        Ok(Json(a)) => a.entries,
        Err(e) => return error_response(Some(&signed.chrome), &e),
    };
    let global = signed.is_global();
    let chain = if global && signed.auth.admin.authorize(Scope::AuditRead, None).is_ok() {
        verify_chain(&state).await
    } else {
        None
    };
    html(
        StatusCode::OK,
        views::audit(&signed.chrome, &filters, &entries, chain.as_ref(), global),
    )
}

/// The chain checked against the anchor file, if one is configured.
async fn verify_chain(state: &AppState) -> Option<crate::audit::Verification> {
    let chain = state.store().audit_chain().await.ok()?;
    let anchors = match &state.config().audit_anchor {
        Some(path) => crate::audit::read_anchor(path).unwrap_or_default(),
        None => Vec::new(),
    };
    Some(crate::audit::verify(&chain, &anchors))
}

/// `/console/edges`.
async fn edges(State(state): State<AppState>, signed: Signed) -> Response {
    match admin::edges(State(state.clone()), signed.auth.clone(), signed.remote).await {
        Ok(Json(answer)) => html(StatusCode::OK, views::edges(&signed.chrome, &answer)),
        Err(e) => error_response(Some(&signed.chrome), &e),
    }
}
