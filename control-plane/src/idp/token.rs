//! What logout tokens and SETs have in common: a JWS from one IdP, checked with core's
//! parser and verifier under the IdP's pinned algorithms, then its issuer, audience,
//! issue time and `jti`. Each refusal is a [`Refusal`] that names what failed; the
//! receivers answer it as 400 (back-channel logout: `{"error", "detail"}`; SET push:
//! RFC 8935's `{"err", "description"}`).
//!
//! The algorithm is never the token's choice: the `kid` picks a key and the key's
//! pinned algorithm (from its JWK, or the IdP's `default_alg`) must be the token's
//! `alg`; `none` never parses, and HMAC is refused outright — an IdP's JWKS holds public
//! keys, and a token "signed" with one of them as an HMAC secret is the classic forgery.

use std::str::FromStr;
use std::sync::Arc;

use epochgate_core::claims::{audience_matches, numeric_date};
use epochgate_core::ids::validate_id;
use epochgate_core::jwt::{
    self, normalize_typ, verify_signature, Algorithm, KeySet, ParsedToken, PureRustVerifier,
    TokenError,
};
use serde_json::{Map, Value};

use super::config::{is_hmac, IdpConfig, TenantRule};
use super::keys::{KeyError, KeySource};

/// The largest logout token or SET parsed.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why an event is refused (400). `Display` is the detail sent back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    ContentType(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("{0}")]
    Request(String),
    #[error("the bearer token is missing or wrong: {0}")]
    Authentication(&'static str),
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Typ(String),
    #[error("{0}")]
    Alg(String),
    #[error("{0}")]
    UnknownKey(String),
    #[error("the signature does not verify with the IdP's key")]
    Signature,
    #[error("`iss` is {got}, not this IdP's {want:?}")]
    Issuer { got: String, want: String },
    #[error("`aud` does not name {0:?}")]
    Audience(String),
    #[error("{0}")]
    IssuedAt(String),
    #[error("{0}")]
    Expiry(String),
    #[error("{0}")]
    Events(String),
    #[error("{0}")]
    Subject(String),
    #[error("the token carries a `nonce`: a logout token never does (it would let an ID token pass as one)")]
    Nonce,
    #[error("{0}")]
    Jti(String),
    #[error("`jti` {0:?} was accepted before: a replay")]
    Replayed(String),
    #[error("{0}")]
    Tenant(String),
    #[error("{0}")]
    Claim(String),
}

impl Refusal {
    /// The back-channel logout answer's `error`: what failed.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::ContentType(_) => "invalid_content_type",
            Refusal::BodyTooLarge(_) => "body_too_large",
            Refusal::Request(_) => "invalid_request",
            Refusal::Authentication(_) => "authentication_failed",
            Refusal::Malformed(_) => "malformed_token",
            Refusal::Typ(_) => "invalid_typ",
            Refusal::Alg(_) => "invalid_alg",
            Refusal::UnknownKey(_) => "unknown_key",
            Refusal::Signature => "invalid_signature",
            Refusal::Issuer { .. } => "invalid_iss",
            Refusal::Audience(_) => "invalid_aud",
            Refusal::IssuedAt(_) => "invalid_iat",
            Refusal::Expiry(_) => "invalid_exp",
            Refusal::Events(_) => "invalid_events",
            Refusal::Subject(_) => "invalid_subject",
            Refusal::Nonce => "nonce_present",
            Refusal::Jti(_) => "invalid_jti",
            Refusal::Replayed(_) => "jti_replayed",
            Refusal::Tenant(_) => "unknown_tenant",
            Refusal::Claim(_) => "invalid_claim",
        }
    }

    /// RFC 8935 §2.4's error code for the same refusal.
    pub fn set_err(&self) -> &'static str {
        match self {
            Refusal::Authentication(_) => "authentication_failed",
            Refusal::Alg(_) | Refusal::UnknownKey(_) | Refusal::Signature => "invalid_key",
            Refusal::Issuer { .. } => "invalid_issuer",
            Refusal::Audience(_) => "invalid_audience",
            _ => "invalid_request",
        }
    }
}

/// A refusal, or keys that cannot be had now (answered 503: the event may be sent again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    Refused(Refusal),
    Keys(KeyError),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

/// A token whose signature verified with one of the IdP's keys; its claims are not
/// judged yet.
#[derive(Debug)]
pub struct Signed {
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
}

fn malformed(err: TokenError) -> Refusal {
    match err {
        TokenError::AlgNone(alg) => Refusal::Alg(format!(
            "`alg` {alg:?} is an unsecured token; every event must be signed"
        )),
        other => Refusal::Malformed(other.to_string()),
    }
}

/// Parses `token`, checks its `alg` against the IdP's, and verifies its signature with
/// the IdP's keys (fetching them again once for an unknown `kid`).
pub async fn verify(token: &str, idp: &IdpConfig, keys: &KeySource) -> Result<Signed, Failure> {
    let parsed = jwt::parse(token, MAX_TOKEN_BYTES).map_err(malformed)?;
    let alg = Algorithm::from_str(&parsed.alg).map_err(|e| Refusal::Alg(format!("`alg`: {e}")))?;
    if is_hmac(alg) {
        return Err(Refusal::Alg(format!(
            "`alg` {alg} is refused: an IdP signs with its private key, never a shared secret"
        ))
        .into());
    }
    if !idp.allows(alg) {
        return Err(
            Refusal::Alg(format!("`alg` {alg} is not one of this IdP's `algorithms`")).into(),
        );
    }
    let held = keys.current().await.map_err(Failure::Keys)?;
    match check_signature(&parsed, &held) {
        Err(Refusal::UnknownKey(detail)) => {
            let kid = parsed.kid.clone().unwrap_or_default();
            match keys
                .refresh_for_unknown_kid(&kid, &held)
                .await
                .map_err(Failure::Keys)?
            {
                Some(fresh) => check_signature(&parsed, &fresh)?,
                None => return Err(Refusal::UnknownKey(detail).into()),
            }
        }
        other => other?,
    }
    Ok(Signed {
        header: parsed.header,
        claims: parsed.claims,
    })
}

fn check_signature(parsed: &ParsedToken<'_>, keys: &Arc<KeySet>) -> Result<(), Refusal> {
    verify_signature(parsed, keys, None, &PureRustVerifier).map_err(|e| match e {
        TokenError::UnknownKid(kid) => {
            Refusal::UnknownKey(format!("`kid` {kid:?} is not one of the IdP's keys"))
        }
        TokenError::NoKeyForAlg(alg) => Refusal::UnknownKey(format!(
            "the IdP has no key for `alg` {alg:?} (and the token names no `kid`)"
        )),
        TokenError::AlgMismatch { token, key } => Refusal::Alg(format!(
            "`alg` {token:?} is not the {key} its key is pinned to"
        )),
        TokenError::Signature => Refusal::Signature,
        other => Refusal::Malformed(other.to_string()),
    })
}

/// Whether the header's `typ` is `want` (RFC 7515: a media type, compared without case,
/// `application/` optional; see core's [`normalize_typ`]). Absent is `None`.
pub fn typ_is(header: &Map<String, Value>, want: &str) -> Option<bool> {
    let typ = header.get("typ")?;
    Some(typ.as_str().is_some_and(|t| normalize_typ(t) == want))
}

/// `iss` is exactly `want`.
pub fn check_issuer(claims: &Map<String, Value>, want: &str) -> Result<(), Refusal> {
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == want => Ok(()),
        got => Err(Refusal::Issuer {
            got: got.map_or_else(|| "missing".to_string(), |v| format!("{v}")),
            want: want.to_string(),
        }),
    }
}

/// `aud` names `want` (a string, or a list holding it).
pub fn check_audience(claims: &Map<String, Value>, want: &str) -> Result<(), Refusal> {
    if audience_matches(claims, &[want.to_string()]) {
        Ok(())
    } else {
        Err(Refusal::Audience(want.to_string()))
    }
}

/// `iat` is present, at most `max_age_s` old and not in the future beyond the skew.
/// Returns it (seconds).
pub fn check_issued_at(
    claims: &Map<String, Value>,
    idp: &IdpConfig,
    now_ms: u64,
) -> Result<f64, Refusal> {
    let iat = numeric_date(claims, "iat")
        .map_err(|_| Refusal::IssuedAt("`iat` is not a number".into()))?
        .ok_or_else(|| Refusal::IssuedAt("`iat` is missing".into()))?;
    let now_s = now_ms as f64 / 1000.0;
    let skew = idp.clock_skew_s as f64;
    if iat > now_s + skew {
        return Err(Refusal::IssuedAt(format!(
            "`iat` is {:.0} s in the future (more than the {} s skew)",
            iat - now_s,
            idp.clock_skew_s
        )));
    }
    if iat < now_s - idp.max_token_age_s as f64 - skew {
        return Err(Refusal::IssuedAt(format!(
            "`iat` is {:.0} s old: older than max_token_age_s ({}) plus the skew",
            now_s - iat,
            idp.max_token_age_s
        )));
    }
    Ok(iat)
}

/// The `jti`, a valid id.
pub fn jti(claims: &Map<String, Value>) -> Result<String, Refusal> {
    match claims.get("jti") {
        Some(Value::String(j)) => {
            validate_id(j).map_err(|e| Refusal::Jti(format!("`jti` {e}")))?;
            Ok(j.clone())
        }
        Some(_) => Err(Refusal::Jti("`jti` is not a string".into())),
        None => Err(Refusal::Jti(
            "`jti` is missing: without it a replay cannot be told apart".into(),
        )),
    }
}

/// Until when the `jti` must be remembered: past it, `iat` is too old to pass anyway.
pub fn replay_until_ms(iat_s: f64, idp: &IdpConfig) -> u64 {
    let until_s = iat_s.max(0.0) + (idp.max_token_age_s + idp.clock_skew_s) as f64 + 1.0;
    // Saturating: a future `iat` was refused above, so this stays near now.
    (until_s * 1000.0) as u64
}

/// An id claim (`sub`, `sid`): absent, or a valid id.
pub fn id_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => {
            validate_id(s).map_err(|e| Refusal::Claim(format!("`{name}` {e}")))?;
            Ok(Some(s.clone()))
        }
        Some(_) => Err(Refusal::Claim(format!("`{name}` is not a string"))),
    }
}

/// The tenant of an event of this IdP.
pub fn tenant(rule: &TenantRule, claims: &Map<String, Value>) -> Result<String, Refusal> {
    match rule {
        TenantRule::Fixed(t) => Ok(t.clone()),
        TenantRule::Claim { claim, map } => {
            let value = match claims.get(claim) {
                Some(Value::String(v)) => v,
                Some(_) => return Err(Refusal::Tenant(format!("`{claim}` is not a string"))),
                None => {
                    return Err(Refusal::Tenant(format!(
                        "the tenant claim `{claim}` is missing"
                    )))
                }
            };
            let tenant = match map {
                None => value.clone(),
                Some(map) => map.get(value).cloned().ok_or_else(|| {
                    Refusal::Tenant(format!(
                        "`{claim}` {value:?} is not in this IdP's tenant map"
                    ))
                })?,
            };
            validate_id(&tenant).map_err(|e| Refusal::Tenant(format!("tenant {e}")))?;
            Ok(tenant)
        }
    }
}
