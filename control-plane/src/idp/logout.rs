//! OpenID Connect Back-Channel Logout 1.0, §2.6 "Logout Token Validation", step by step,
//! on a token whose signature already verified ([`super::token::verify`]):
//!
//! - `typ`: `logout+jwt` (§2.4's explicit typing); an untyped token or a generic `JWT`
//!   is accepted from IdPs that predate it; any other type (an access token's `at+jwt`,
//!   a SET's `secevent+jwt`) is refused;
//! - `iss` is the IdP's, `aud` names the client id, `iat` is recent (`max_token_age_s`,
//!   with the skew), `exp` (when present) has not passed;
//! - `events` holds `http://schemas.openid.net/event/backchannel-logout` with an object;
//! - `sub` and/or `sid` is present; `nonce` is not;
//! - `jti` is present (a replay is refused by the store, which remembers each `jti`
//!   until its `iat` could no longer pass).
//!
//! Then §2.7: with a `sid`, only that session is logged out, even when `sub` is there
//! too; with `sub` alone, every session of the user.

use epochgate_core::claims::numeric_date;
use epochgate_core::state::Target;
use serde_json::Value;

use super::config::IdpConfig;
use super::token::{
    check_audience, check_issued_at, check_issuer, id_claim, jti, replay_until_ms, tenant, typ_is,
    Refusal, Signed,
};
use super::Accepted;

/// The event a logout token must carry.
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// Checks a verified logout token's claims at `now_ms`; the revocation it asks for.
pub fn check(signed: &Signed, idp: &IdpConfig, now_ms: u64) -> Result<Accepted, Refusal> {
    let claims = &signed.claims;
    if typ_is(&signed.header, "logout+jwt") == Some(false)
        && typ_is(&signed.header, "jwt") != Some(true)
    {
        return Err(Refusal::Typ(format!(
            "`typ` {} is not logout+jwt",
            signed
                .header
                .get("typ")
                .map(Value::to_string)
                .unwrap_or_default()
        )));
    }
    check_issuer(claims, &idp.issuer)?;
    check_audience(claims, &idp.client_id)?;
    let iat = check_issued_at(claims, idp, now_ms)?;
    if let Some(exp) =
        numeric_date(claims, "exp").map_err(|_| Refusal::Expiry("`exp` is not a number".into()))?
    {
        if now_ms as f64 / 1000.0 >= exp + idp.clock_skew_s as f64 {
            return Err(Refusal::Expiry(
                "`exp` has passed: the token expired".into(),
            ));
        }
    }
    match claims.get("events") {
        Some(Value::Object(events)) => match events.get(BACKCHANNEL_LOGOUT_EVENT) {
            Some(Value::Object(_)) => {}
            Some(_) => {
                return Err(Refusal::Events(format!(
                    "`events[\"{BACKCHANNEL_LOGOUT_EVENT}\"]` must be a JSON object"
                )))
            }
            None => {
                return Err(Refusal::Events(format!(
                    "`events` does not hold {BACKCHANNEL_LOGOUT_EVENT}: not a logout token"
                )))
            }
        },
        Some(_) => return Err(Refusal::Events("`events` is not a JSON object".into())),
        None => {
            return Err(Refusal::Events(
                "`events` is missing: not a logout token".into(),
            ))
        }
    }
    if claims.contains_key("nonce") {
        return Err(Refusal::Nonce);
    }
    let sub = id_claim(claims, "sub")?;
    let sid = id_claim(claims, "sid")?;
    let jti = jti(claims)?;
    let tenant = tenant(&idp.tenant, claims)?;
    let (target, what) = match (sid, sub) {
        (Some(sid), _) => (Target::Session { tenant, sid }, "the session (sid)"),
        (None, Some(user)) => (
            Target::User { tenant, user },
            "every session of the user (sub, no sid)",
        ),
        (None, None) => {
            return Err(Refusal::Subject(
                "the token has neither `sid` nor `sub`: it names no one to log out".into(),
            ))
        }
    };
    Ok(Accepted {
        target,
        reason: format!("OIDC back-channel logout of {what}, jti {jti}"),
        replay_until_ms: replay_until_ms(iat, idp),
        jti,
    })
}
