//! Claim validation and mapping: `exp`/`nbf` with skew, `iss`, `aud`, and the identity
//! (user, tenant, session, issued-at, session start) under configurable names.

use serde_json::{Map, Value};

use crate::config::Config;
use crate::ids::validate_id;
use crate::jwt::TokenError;

/// Who a verified token speaks for, and when its login happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub tenant: String,
    pub session: Option<String>,
    /// Who acts as `user` (RFC 8693 `act`, impersonation), the current actor first, then
    /// the earlier ones of a delegation chain. A logout of any of them, or of `user`,
    /// ends the token.
    pub actors: Vec<Actor>,
    /// `iat` (seconds), if present.
    pub issued_at: Option<i64>,
    /// `auth_time` if present, else `iat` (seconds): what the revocation rule compares.
    pub session_start: i64,
    /// `exp` (seconds).
    pub expires_at: f64,
}

/// An acting user: `act.sub`, in `act`'s tenant claim if it has one, else the token's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub tenant: String,
    pub user: String,
}

/// How deep an `act` chain may nest.
const MAX_ACT_DEPTH: usize = 8;

fn actors(
    claims: &Map<String, Value>,
    names: &crate::config::ClaimNames,
    tenant: &str,
) -> Result<Vec<Actor>, TokenError> {
    let bad = || TokenError::BadClaim(names.actor.clone());
    let mut out = Vec::new();
    let mut current = claims.get(&names.actor);
    while let Some(act) = current {
        let act = act.as_object().ok_or_else(bad)?;
        if out.len() == MAX_ACT_DEPTH {
            return Err(bad());
        }
        let user = id_claim(act, "sub")?.ok_or_else(bad)?;
        let tenant = id_claim(act, &names.tenant)?.unwrap_or_else(|| tenant.to_string());
        out.push(Actor { tenant, user });
        current = act.get(&names.actor);
    }
    Ok(out)
}

/// A NumericDate (RFC 7519 §2): a JSON number, possibly non-integer.
pub fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            _ => Err(TokenError::BadClaim(name.to_string())),
        },
        Some(_) => Err(TokenError::BadClaim(name.to_string())),
    }
}

fn id_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => {
            validate_id(s).map_err(|_| TokenError::BadClaim(name.to_string()))?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(TokenError::BadClaim(name.to_string())),
    }
}

/// Whether the token's `aud` (a string, or a list of which one suffices) names one of
/// `accepted`. A missing or malformed `aud` matches nothing.
pub fn audience_matches(claims: &Map<String, Value>, accepted: &[String]) -> bool {
    let ok = |a: &Value| a.as_str().is_some_and(|a| accepted.iter().any(|x| x == a));
    match claims.get("aud") {
        Some(a @ Value::String(_)) => ok(a),
        Some(Value::Array(list)) => list.iter().any(ok),
        _ => false,
    }
}

/// Validates the claims at `now_ms` and maps them to an [`Identity`].
///
/// `exp` is required (a token that never expires is never compacted away); `iat` or
/// `auth_time` is required (the revocation rule needs a session start); neither may lie
/// in the future beyond the skew, or a token could outlive every logout.
pub fn validate(
    claims: &Map<String, Value>,
    config: &Config,
    now_ms: u64,
) -> Result<Identity, TokenError> {
    // u64 ms to f64 seconds is exact well past the year 3000.
    let now_s = now_ms as f64 / 1000.0;
    let skew = f64::from(config.clock_skew_s);
    let names = &config.claims;

    let exp = numeric_date(claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, &names.issued_at)?;
    let auth_time = numeric_date(claims, &names.session_start)?;

    if now_s >= exp + skew {
        return Err(TokenError::Expired);
    }
    if matches!(nbf, Some(nbf) if nbf > now_s + skew) {
        return Err(TokenError::NotYetValid);
    }
    if matches!(iat, Some(t) if t > now_s + skew) {
        return Err(TokenError::IssuedInFuture("iat"));
    }
    if matches!(auth_time, Some(t) if t > now_s + skew) {
        return Err(TokenError::IssuedInFuture("auth_time"));
    }

    if let Some(issuer) = &config.issuer {
        match claims.get("iss") {
            Some(Value::String(iss)) if iss == issuer => {}
            _ => return Err(TokenError::Issuer),
        }
    }
    if !config.audiences.is_empty() && !audience_matches(claims, &config.audiences) {
        return Err(TokenError::Audience);
    }

    let user = id_claim(claims, &names.user)?
        .ok_or_else(|| TokenError::MissingClaim(names.user.clone()))?;
    let tenant = match id_claim(claims, &names.tenant)? {
        Some(t) => t,
        None => config
            .default_tenant
            .clone()
            .ok_or_else(|| TokenError::MissingClaim(names.tenant.clone()))?,
    };
    let session = id_claim(claims, &names.session)?;
    let actors = actors(claims, names, &tenant)?;

    // `as` saturates: 1e300 becomes i64::MAX, which no epoch ever reaches — but such a
    // token was refused above as issued in the future.
    let session_start = auth_time.or(iat).map(|t| t.floor() as i64).ok_or_else(|| {
        TokenError::MissingClaim(format!("{} or {}", names.issued_at, names.session_start))
    })?;

    Ok(Identity {
        user,
        tenant,
        session,
        actors,
        issued_at: iat.map(|t| t.floor() as i64),
        session_start,
        expires_at: exp,
    })
}
