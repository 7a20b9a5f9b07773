//! Tokens signed with the asymmetric test keys in `tests/fixtures` (by jwt-simple, not by
//! the code under test), for the edges' signature checks: each algorithm's key as the
//! filter configuration takes it, and per algorithm valid tokens, a tampered one and one
//! signed by another key, each with the status an edge must answer.

use jwt_simple::prelude::*;
use serde_json::{json, Value};

use crate::{repo_root, Stack};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures").join(name)).unwrap()
}

/// The algorithms the fixtures sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Ps256,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    pub fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The `kid` its key is configured under.
    pub fn kid(self) -> String {
        format!("k-{}", self.name().to_ascii_lowercase())
    }

    fn pair(self) -> (&'static str, &'static str) {
        match self {
            Alg::Rs256 | Alg::Rs384 | Alg::Ps256 => ("rs256-a", "rs256-b"),
            Alg::Es256 => ("es256-a", "es256-b"),
            Alg::Es384 => ("es384-a", "es384-b"),
            Alg::EdDsa => ("ed25519-a", "ed25519-b"),
        }
    }

    /// The configured key: its `-a` public key as PEM.
    pub fn key(self) -> Value {
        let pem = fixture(&format!("{}.pub.pem", self.pair().0));
        json!({"kid": self.kid(), "alg": self.name(), "public_key_pem": pem})
    }

    /// A token for `user` (tenant `acme`), signed with the `-a` key, or the `-b` one
    /// (`wrong_key`) under the same `kid`.
    pub fn token(self, user: &str, wrong_key: bool) -> String {
        let (a, b) = self.pair();
        let pem = fixture(&format!("{}.pem", if wrong_key { b } else { a }));
        let claims = Stack::claims(user, "acme", json!({}));
        let mut c = Claims::with_custom_claims(
            json!({"tid": claims["tid"]}),
            jwt_simple::prelude::Duration::from_secs(3600),
        )
        .with_subject(user)
        .with_issuer(claims["iss"].as_str().unwrap())
        .with_audience(claims["aud"].as_str().unwrap());
        c.issued_at = Some(UnixTimeStamp::from_secs(claims["iat"].as_u64().unwrap()));
        let kid = self.kid();
        match self {
            Alg::Rs256 => RS256KeyPair::from_pem(&pem)
                .unwrap()
                .with_key_id(&kid)
                .sign(c),
            Alg::Rs384 => RS384KeyPair::from_pem(&pem)
                .unwrap()
                .with_key_id(&kid)
                .sign(c),
            Alg::Ps256 => PS256KeyPair::from_pem(&pem)
                .unwrap()
                .with_key_id(&kid)
                .sign(c),
            Alg::Es256 => ES256KeyPair::from_pem(&pem)
                .unwrap()
                .with_key_id(&kid)
                .sign(c),
            Alg::Es384 => ES384KeyPair::from_pem(&pem)
                .unwrap()
                .with_key_id(&kid)
                .sign(c),
            Alg::EdDsa => Ed25519KeyPair::from_pem(&pem)
                .unwrap()
                .with_key_id(&kid)
                .sign(c),
        }
        .unwrap()
    }
}

/// The `keys` of a filter configuration with each algorithm's key.
pub fn keys(algs: &[Alg]) -> Value {
    Value::Array(algs.iter().map(|a| a.key()).collect())
}

/// A token with its payload changed after signing (`sub` 42 → 1).
pub fn tamper(token: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let payload = String::from_utf8(b64.decode(&parts[1]).unwrap()).unwrap();
    parts[1] = b64.encode(payload.replace("\"sub\":\"42\"", "\"sub\":\"1\""));
    parts.join(".")
}

/// Per algorithm: `valid` good tokens of user 42 (several: some ECDSA signatures have a
/// top bit set, which DER must pad), a tampered one and one by the wrong key, each with
/// the status an edge answers (200 or 401).
pub fn cases(algs: &[Alg], valid: usize) -> Vec<(String, String, u16)> {
    let mut out = Vec::new();
    for &alg in algs {
        for i in 0..valid {
            let token = alg.token("42", false);
            if i == 0 {
                out.push((format!("tampered {}", alg.name()), tamper(&token), 401));
            }
            out.push((format!("valid {} #{i}", alg.name()), token, 200));
        }
        out.push((
            format!("{} by the wrong key", alg.name()),
            alg.token("42", true),
            401,
        ));
    }
    out
}
