//! "Sign in with your IdP": the OpenID Connect authorization code flow with PKCE
//! (RFC 7636, `S256`), for admins whose IdP issues the admin JWTs (`--admin-jwt-config`).
//!
//! `GET /console/login/oidc` sends the browser to the IdP's authorization endpoint with
//! a fresh `state`, `nonce` and code challenge; the verifier stays on the server, keyed
//! by `state` and bound to the browser by the sign-in cookie. The callback checks both,
//! redeems the code (with the verifier) at the token endpoint, and takes the **access
//! token** as the admin credential: it must pass the same admin-JWT verification and
//! RBAC as on the API (audience, issuer, keys, tenant claim, permissions). Endpoints
//! come from the issuer's discovery document (`/.well-known/openid-configuration`),
//! fetched on first use and kept for an hour.
//!
//! `--console-oidc FILE`: `{"issuer", "client_id", "client_secret" (optional: a public
//! client otherwise), "redirect_uri" (this console's
//! `…/console/login/oidc/callback`), "scopes" (default `openid`), "extra_params"
//! (optional, added to both requests, e.g. `{"resource": "…"}` or `{"audience": "…"}`
//! so that the IdP issues a JWT access token for the control plane)}`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_core::ids::percent_encode;
use serde::Deserialize;

use super::session::{cookie, on_loopback, random_token, same_token, set_cookie, LOGIN_COOKIE};
use super::{auth, html, see_other, views};
use crate::api::extract::RemoteAddr;
use crate::now_ms;
use crate::rbac::Principal;
use crate::state::AppState;

/// How long a started sign-in may take.
pub const PENDING_TTL_MS: u64 = 10 * 60 * 1000;

/// Sign-ins in progress kept at most.
pub const MAX_PENDING: usize = 1000;

/// The `--console-oidc` file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    pub issuer: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    pub redirect_uri: String,
    #[serde(default = "default_scopes")]
    pub scopes: String,
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
}

fn default_scopes() -> String {
    "openid".into()
}

impl OidcConfig {
    /// Parses and checks the file: http(s) URLs, a non-empty client id.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let c: OidcConfig = serde_json::from_slice(json).map_err(|e| e.to_string())?;
        for (name, url) in [("issuer", &c.issuer), ("redirect_uri", &c.redirect_uri)] {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                return Err(format!("`{name}` must be an http(s) URL"));
            }
        }
        if !c.redirect_uri.ends_with("/console/login/oidc/callback") {
            return Err(
                "`redirect_uri` must be this console's …/console/login/oidc/callback".into(),
            );
        }
        if c.client_id.is_empty() {
            return Err("`client_id` is empty".into());
        }
        Ok(c)
    }
}

/// The endpoints of the issuer's discovery document.
#[derive(Debug, Clone, Deserialize)]
pub struct Endpoints {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
}

/// One sign-in in progress.
#[derive(Debug, Clone)]
pub struct Pending {
    pub verifier: String,
    /// The sign-in cookie of the browser that started it.
    pub browser: String,
    pub created_ms: u64,
}

/// `S256`: `BASE64URL(SHA-256(verifier))`.
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(hmac_sha256::Hash::hash(verifier.as_bytes()))
}

/// The authorization request URL.
pub fn authorization_url(
    c: &OidcConfig,
    endpoint: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> String {
    let mut url = format!(
        "{endpoint}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}&code_challenge={}&code_challenge_method=S256",
        if endpoint.contains('?') { '&' } else { '?' },
        percent_encode(&c.client_id),
        percent_encode(&c.redirect_uri),
        percent_encode(&c.scopes),
        code_challenge(verifier),
    );
    for (k, v) in &c.extra_params {
        url.push_str(&format!("&{}={}", percent_encode(k), percent_encode(v)));
    }
    url
}

async fn endpoints(state: &AppState, c: &OidcConfig) -> Result<Endpoints, String> {
    if let Some(e) = state.console().oidc_endpoints(now_ms()) {
        return Ok(e);
    }
    let url = format!(
        "{}/.well-known/openid-configuration",
        c.issuer.trim_end_matches('/')
    );
    let e: Endpoints = http()?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("cannot fetch {url}: {e}"))?
        .error_for_status()
        .map_err(|e| format!("{url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url} is not a discovery document: {e}"))?;
    state.console().set_oidc_endpoints(e.clone(), now_ms());
    Ok(e)
}

fn http() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

fn unavailable(why: &str) -> Response {
    tracing::warn!(why, "console: IdP sign-in failed");
    html(
        StatusCode::BAD_GATEWAY,
        views::error_page(
            None,
            502,
            "The sign-in with your IdP could not complete; the control plane's log has the cause.",
        ),
    )
}

/// `GET /console/login/oidc`.
pub async fn start(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(c) = state.config().console_oidc.clone() else {
        return html(
            StatusCode::NOT_FOUND,
            views::error_page(None, 404, "No IdP sign-in is configured (--console-oidc)."),
        );
    };
    let ep = match endpoints(&state, &c).await {
        Ok(e) => e,
        Err(e) => return unavailable(&e),
    };
    let (st, nonce, verifier, browser) = (
        random_token(),
        random_token(),
        random_token(),
        random_token(),
    );
    if browser.is_empty() || verifier.is_empty() {
        return unavailable("no randomness");
    }
    state.console().add_pending(
        st.clone(),
        Pending {
            verifier: verifier.clone(),
            browser: browser.clone(),
            created_ms: now_ms(),
        },
    );
    let mut r = see_other(&authorization_url(
        &c,
        &ep.authorization_endpoint,
        &st,
        &nonce,
        &verifier,
    ));
    let secure = !on_loopback(&headers);
    // SameSite=Lax would be needed for the cookie to come back on the IdP's top-level
    // redirect; a Strict cookie is not sent then. The binding cookie is therefore Lax,
    // HttpOnly, and worthless on its own (it only matches one pending `state`).
    let binding = set_cookie(LOGIN_COOKIE, &browser, secure, Some(600))
        .replace("SameSite=Strict", "SameSite=Lax");
    if let Ok(v) = HeaderValue::from_str(&binding) {
        r.headers_mut().append(SET_COOKIE, v);
    }
    r
}

#[derive(Debug, Deserialize)]
pub struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
}

/// `GET /console/login/oidc/callback?code&state`.
pub async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    remote: RemoteAddr,
    Query(q): Query<Callback>,
) -> Response {
    let Some(c) = state.config().console_oidc.clone() else {
        return see_other("/console/login");
    };
    if let Some(e) = q.error {
        tracing::warn!(error = %e, "console: the IdP refused the sign-in");
        return see_other("/console/login?error=idp");
    }
    let (Some(code), Some(st)) = (q.code, q.state) else {
        return see_other("/console/login?error=idp");
    };
    let browser = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let Some(pending) = state.console().take_pending(&st, now_ms()) else {
        return see_other("/console/login?error=idp");
    };
    if !same_token(&pending.browser, &browser) {
        tracing::warn!(remote = ?remote.0, "console: an IdP callback from another browser refused");
        return see_other("/console/login?error=idp");
    }
    let ep = match endpoints(&state, &c).await {
        Ok(e) => e,
        Err(e) => return unavailable(&e),
    };
    let mut form: Vec<(String, String)> = vec![
        ("grant_type".into(), "authorization_code".into()),
        ("code".into(), code),
        ("redirect_uri".into(), c.redirect_uri.clone()),
        ("client_id".into(), c.client_id.clone()),
        ("code_verifier".into(), pending.verifier),
    ];
    form.extend(c.extra_params.iter().map(|(k, v)| (k.clone(), v.clone())));
    let client = match http() {
        Ok(h) => h,
        Err(e) => return unavailable(&e),
    };
    let mut req = client.post(&ep.token_endpoint).form(&form);
    if let Some(secret) = &c.client_secret {
        req = req.basic_auth(&c.client_id, Some(secret));
    }
    let answer: TokenAnswer = match req.send().await {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(a) => a,
            Err(e) => {
                return unavailable(&format!(
                    "the token answer is not JSON with access_token: {e}"
                ))
            }
        },
        Ok(r) => {
            let status = r.status();
            let body = r.text().await.unwrap_or_default();
            return unavailable(&format!(
                "the token endpoint answered {status}: {}",
                body.chars().take(200).collect::<String>()
            ));
        }
        Err(e) => return unavailable(&format!("cannot reach the token endpoint: {e}")),
    };
    match state
        .config()
        .credentials
        .authenticate(&answer.access_token, now_ms())
    {
        Ok(Principal::Admin(admin)) => auth::start_session(
            &state,
            &headers,
            answer.access_token,
            &admin.actor,
            remote,
            true,
        ),
        Ok(Principal::Edge) | Err(_) => {
            tracing::warn!(
                "console: the IdP's access token is not an admin JWT of this control plane"
            );
            auth::login_page(
                &state,
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("Your IdP signed you in, but its token is not an admin credential here (audience, issuer, tenant or permissions)."),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn the_config_is_checked_and_the_request_carries_pkce() {
        let c = OidcConfig::from_json(
            br#"{"issuer":"https://idp.example.com","client_id":"console","redirect_uri":"https://cp.example.com/console/login/oidc/callback","extra_params":{"resource":"urn:epochgate"}}"#,
        )
        .unwrap();
        let url = authorization_url(&c, "https://idp.example.com/auth", "st", "n", "v");
        assert!(url.starts_with("https://idp.example.com/auth?response_type=code&client_id=console&redirect_uri=https%3A%2F%2Fcp.example.com%2Fconsole%2Flogin%2Foidc%2Fcallback&scope=openid&state=st&nonce=n&code_challenge="), "{url}");
        assert!(
            url.ends_with("&code_challenge_method=S256&resource=urn%3Aepochgate"),
            "{url}"
        );
        for bad in [
            r#"{"issuer":"idp","client_id":"c","redirect_uri":"https://x/console/login/oidc/callback"}"#,
            r#"{"issuer":"https://i","client_id":"c","redirect_uri":"https://x/elsewhere"}"#,
            r#"{"issuer":"https://i","client_id":"","redirect_uri":"https://x/console/login/oidc/callback"}"#,
            r#"{"issuer":"https://i","client_id":"c","redirect_uri":"https://x/console/login/oidc/callback","nope":1}"#,
        ] {
            assert!(OidcConfig::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
