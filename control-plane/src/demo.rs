//! **Dev/demo only.** A built-in HS256 key and a token minter, so the demo, the docs and
//! the end-to-end tests can make tokens that the demo Envoy config accepts without an IdP.
//!
//! The secret below is public — it is in this source file. Never configure an edge to
//! trust [`DEMO_KID`] outside a demo or a test: anyone can mint tokens for any user.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

/// The demo key's id (`kid` in the JWT header).
pub const DEMO_KID: &str = "demo";

/// The demo HS256 secret (48 bytes; jwt-simple refuses HMAC keys under 96 bits).
/// PUBLIC: for demos and tests only.
pub const DEMO_HS256_SECRET: &str = "epochgate-demo-hs256-secret-NOT-for-production!!";

/// The `iss` of demo tokens.
pub const DEMO_ISSUER: &str = "https://idp.demo.epochgate.test";

/// The `aud` of demo tokens.
pub const DEMO_AUDIENCE: &str = "portal";

/// What to put in a demo token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoToken {
    pub user: String,
    pub tenant: String,
    pub sid: Option<String>,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// When the login happened (Unix seconds); the revocation rule prefers it to `iat`.
    pub auth_time: Option<u64>,
    /// Lifetime in seconds: `exp = iat + ttl_s`.
    pub ttl_s: u64,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    tid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
    iat: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<u64>,
    exp: u64,
}

fn b64_json(value: &impl Serialize) -> Result<String, serde_json::Error> {
    Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(value)?))
}

/// Mints a demo JWT (HS256, `kid` [`DEMO_KID`], signed with [`DEMO_HS256_SECRET`]) with
/// claims `iss`, `aud`, `sub`, `tid`, `sid` (if given), `iat`, `auth_time` (if given), `exp`.
pub fn mint(token: &DemoToken) -> Result<String, serde_json::Error> {
    let header = b64_json(&Header {
        alg: "HS256",
        typ: "JWT",
        kid: DEMO_KID,
    })?;
    let claims = b64_json(&Claims {
        iss: DEMO_ISSUER,
        aud: DEMO_AUDIENCE,
        sub: &token.user,
        tid: &token.tenant,
        sid: token.sid.as_deref(),
        iat: token.iat,
        auth_time: token.auth_time,
        exp: token.iat.saturating_add(token.ttl_s),
    })?;
    let signing_input = format!("{header}.{claims}");
    let mac = hmac_sha256::HMAC::mac(signing_input.as_bytes(), DEMO_HS256_SECRET.as_bytes());
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jwt_simple::prelude::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Custom {
        tid: String,
        sid: Option<String>,
        auth_time: Option<u64>,
    }

    fn now_s() -> u64 {
        crate::now_ms() / 1000
    }

    #[test]
    fn secret_is_long_enough_for_hs256() {
        assert!(DEMO_HS256_SECRET.len() >= 32);
    }

    #[test]
    fn minted_token_verifies_with_an_independent_library() {
        let iat = now_s() - 10;
        let token = mint(&DemoToken {
            user: "auth0|5f7c8ec7".into(),
            tenant: "acme".into(),
            sid: Some("s-1".into()),
            iat,
            auth_time: Some(iat - 100),
            ttl_s: 3600,
        })
        .unwrap();
        let key = HS256Key::from_bytes(DEMO_HS256_SECRET.as_bytes()).with_key_id(DEMO_KID);
        let options = VerificationOptions {
            allowed_issuers: Some(HashSet::from_strings(&[DEMO_ISSUER])),
            allowed_audiences: Some(HashSet::from_strings(&[DEMO_AUDIENCE])),
            ..Default::default()
        };
        let claims = key.verify_token::<Custom>(&token, Some(options)).unwrap();
        assert_eq!(claims.subject.as_deref(), Some("auth0|5f7c8ec7"));
        assert_eq!(claims.custom.tid, "acme");
        assert_eq!(claims.custom.sid.as_deref(), Some("s-1"));
        assert_eq!(claims.custom.auth_time, Some(iat - 100));
        assert_eq!(claims.issued_at.map(|t| t.as_secs()), Some(iat));
        assert_eq!(claims.expires_at.map(|t| t.as_secs()), Some(iat + 3600));
        let metadata = Token::decode_metadata(&token).unwrap();
        assert_eq!(metadata.key_id(), Some(DEMO_KID));
        assert_eq!(metadata.algorithm(), "HS256");
    }

    #[test]
    fn optional_claims_are_left_out() {
        let token = mint(&DemoToken {
            user: "42".into(),
            tenant: "acme".into(),
            sid: None,
            iat: 1_800_000_000,
            auth_time: None,
            ttl_s: 60,
        })
        .unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "iss": DEMO_ISSUER, "aud": DEMO_AUDIENCE, "sub": "42", "tid": "acme",
                "iat": 1_800_000_000u64, "exp": 1_800_000_060u64
            })
        );
    }
}
