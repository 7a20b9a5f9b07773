//! Sign-in with an admin credential, and sign-out.
//!
//! The sign-in form is protected against login CSRF by a double submit: a random value
//! in a `SameSite=Strict` cookie must come back in the form. The credential is checked
//! by the API's own [`crate::rbac::Credentials::authenticate`]; the edge token and
//! anything else that is not an admin credential are refused.

use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::session::{
    cookie, on_loopback, random_token, same_token, set_cookie, COOKIE_NAME, LOGIN_COOKIE,
};
use super::{html, see_other, views, ConsoleForm, Signed};
use crate::api::extract::RemoteAddr;
use crate::now_ms;
use crate::rbac::Principal;
use crate::state::AppState;

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    expired: Option<String>,
    error: Option<String>,
}

/// The sign-in page with a fresh login-CSRF cookie.
pub fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    let token = random_token();
    let secure = !on_loopback(headers);
    let mut r = html(
        status,
        views::login(&token, error, state.config().console_oidc.is_some()),
    );
    if let Ok(v) = HeaderValue::from_str(&set_cookie(LOGIN_COOKIE, &token, secure, Some(600))) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

/// `GET /console/login`.
pub async fn login_form(
    State(state): State<AppState>,
    signed: Option<Signed>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if signed.is_some() {
        return see_other("/console/");
    }
    let error = if q.expired.is_some() {
        Some(
            "Your console session ended (idle, too old, or its credential expired): sign in again.",
        )
    } else if q.error.is_some() {
        Some("The sign-in with your IdP did not complete: try again.")
    } else {
        None
    };
    login_page(&state, &headers, StatusCode::OK, error)
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    login_csrf: String,
    #[serde(default)]
    credential: String,
}

/// Starts a console session for an admin principal (the password form and the IdP).
///
/// After the IdP's redirect (`from_idp`), the page answers 200 and moves on to the
/// console itself: a navigation that began on another site would not carry the new
/// `SameSite=Strict` cookie on a plain redirect.
pub fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    credential: String,
    actor: &str,
    remote: RemoteAddr,
    from_idp: bool,
) -> Response {
    let secure = !on_loopback(headers);
    let Some(id) = state
        .console()
        .start(credential, now_ms(), state.config().console_idle)
    else {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            views::error_page(None, 503, "Too many console sessions: try again later."),
        );
    };
    tracing::info!(%actor, remote = ?remote.0, idp = from_idp, "console: signed in");
    let mut r = if from_idp {
        html(StatusCode::OK, views::signed_in())
    } else {
        see_other("/console/")
    };
    for c in [
        set_cookie(COOKIE_NAME, &id, secure, None),
        set_cookie(LOGIN_COOKIE, "", secure, Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&c) {
            r.headers_mut().append(SET_COOKIE, v);
        }
    }
    r
}

/// `POST /console/login`.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    remote: RemoteAddr,
    ConsoleForm(form): ConsoleForm<LoginForm>,
) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !same_token(&expected, &form.login_csrf) {
        tracing::warn!(remote = ?remote.0, "console: a sign-in without its CSRF cookie refused");
        return login_page(
            &state,
            &headers,
            StatusCode::FORBIDDEN,
            Some("The sign-in form expired: try again."),
        );
    }
    let credential = form.credential.trim().to_string();
    match state
        .config()
        .credentials
        .authenticate(&credential, now_ms())
    {
        Ok(Principal::Admin(admin)) => {
            start_session(&state, &headers, credential, &admin.actor, remote, false)
        }
        Ok(Principal::Edge) | Err(_) => {
            tracing::warn!(remote = ?remote.0, "console: a sign-in with an unknown credential refused");
            login_page(
                &state,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("That is not an admin credential of this control plane."),
            )
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SignOutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /console/logout`: ends the console session (the admin's, not a user's).
pub async fn sign_out(
    State(state): State<AppState>,
    signed: Signed,
    ConsoleForm(form): ConsoleForm<SignOutForm>,
) -> Response {
    if !same_token(&signed.session.csrf, &form.csrf) {
        return html(
            StatusCode::FORBIDDEN,
            views::error_page(
                Some(&signed.chrome),
                403,
                "This form is not valid any more: reload the page.",
            ),
        );
    }
    state.console().end(&signed.session.key);
    let mut r = see_other("/console/login");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(COOKIE_NAME, "", signed.secure, Some(0))) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r.into_response()
}
