//! An IdP's signing keys, as the tests need them: ES256 key pairs with a `kid`, the JWK
//! each publishes, and the tokens each signs — for JWKS documents the in-process upstream
//! serves (see [`crate::Reply::Document`]) and keys that rotate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

/// One signing key of an IdP.
pub struct SigningKey {
    key: ES256KeyPair,
    pub kid: String,
}

impl SigningKey {
    /// A fresh ES256 key pair with this `kid`.
    pub fn es256(kid: &str) -> Self {
        Self {
            key: ES256KeyPair::generate().with_key_id(kid),
            kid: kid.to_string(),
        }
    }

    /// Its public JWK, as an IdP's JWKS lists it.
    pub fn jwk(&self) -> Value {
        let point = self.key.public_key().public_key().to_bytes_uncompressed();
        json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(&point[1..33]), "y": URL_SAFE_NO_PAD.encode(&point[33..65]),
        })
    }

    /// A token with these claims (`iat` and `exp` among them), signed with this key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut custom = claims.clone();
        let object = custom.as_object_mut().unwrap();
        let iat = object.remove("iat").and_then(|v| v.as_u64()).unwrap();
        let exp = object.remove("exp").and_then(|v| v.as_u64()).unwrap();
        let mut c = Claims::with_custom_claims(custom, Duration::from_secs(3600));
        c.issued_at = Some(Duration::from_secs(iat));
        c.expires_at = Some(Duration::from_secs(exp));
        self.key.sign(c).unwrap()
    }
}

/// A JWKS document listing these keys.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}
