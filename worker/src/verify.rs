//! Signatures in the Worker: every one through the runtime's WebCrypto
//! (`crypto.subtle.verify`, native code in workerd and on Cloudflare) — so the Worker
//! carries no hash, HMAC, RSA, elliptic-curve or Ed25519 code of its own.
//!
//! WebCrypto is asynchronous and `core`'s decision is not: the request path takes
//! `core`'s decision up to its signature step ([`epochgate_core::Engine::begin`]), has the
//! pending signature checked here, and hands the verdict to
//! [`epochgate_core::Engine::finish`] — the same rules, in the same order, as the filter's
//! synchronous `decide_with`.

use epochgate_core::decision::PendingSignature;
use epochgate_core::jwt::{Algorithm, AlgorithmSupport, KeyMaterial, VerificationKey};

use crate::host::{Host, Level};

/// What the Worker can verify: every algorithm, all in WebCrypto.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerVerifier;

impl AlgorithmSupport for WorkerVerifier {
    fn supports(&self, _alg: Algorithm) -> Result<(), String> {
        Ok(())
    }
}

/// How WebCrypto names an algorithm: the parameters of `importKey(…)` and of
/// `verify(…)` (Web Cryptography API: RSASSA-PKCS1-v1_5, RSA-PSS, ECDSA, HMAC; Ed25519
/// from Secure Curves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebCryptoAlgorithm {
    /// `name` of both parameter objects.
    pub name: &'static str,
    /// `hash` of the import (RSA, HMAC) or of the verify (ECDSA) parameters.
    pub hash: Option<&'static str>,
    /// `namedCurve` of the import parameters (ECDSA).
    pub named_curve: Option<&'static str>,
    /// `saltLength` of the verify parameters (RSA-PSS: the hash length, RFC 7518 §3.5).
    pub salt_length: Option<u32>,
}

impl WebCryptoAlgorithm {
    /// The WebCrypto form of a JWS algorithm.
    pub fn of(alg: Algorithm) -> Self {
        let hash = |alg: Algorithm| match alg.hash() {
            "sha384" => "SHA-384",
            "sha512" => "SHA-512",
            _ => "SHA-256",
        };
        let plain = |name| Self {
            name,
            hash: None,
            named_curve: None,
            salt_length: None,
        };
        match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Self {
                hash: Some(hash(alg)),
                ..plain("HMAC")
            },
            Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => Self {
                hash: Some(hash(alg)),
                ..plain("RSASSA-PKCS1-v1_5")
            },
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => Self {
                hash: Some(hash(alg)),
                salt_length: Some(match alg {
                    Algorithm::PS384 => 48,
                    Algorithm::PS512 => 64,
                    _ => 32,
                }),
                ..plain("RSA-PSS")
            },
            Algorithm::ES256 => Self {
                hash: Some("SHA-256"),
                named_curve: Some("P-256"),
                ..plain("ECDSA")
            },
            Algorithm::ES384 => Self {
                hash: Some("SHA-384"),
                named_curve: Some("P-384"),
                ..plain("ECDSA")
            },
            Algorithm::EdDSA => plain("Ed25519"),
        }
    }

    /// Whether the verify parameters name the hash (ECDSA); RSA and HMAC name it at
    /// import.
    pub fn hash_at_verify(&self) -> bool {
        self.named_curve.is_some()
    }
}

/// The key as WebCrypto imports it: `("raw", secret)` for HMAC, `("spki", DER)` for
/// public keys.
pub fn import_form(key: &VerificationKey) -> (&'static str, &[u8]) {
    match &key.material {
        KeyMaterial::Hmac(secret) => ("raw", secret),
        KeyMaterial::Public(public) => ("spki", public.spki_der()),
    }
}

/// The verdict on a pending signature: whether any of its keys verifies it, asked of
/// the host's WebCrypto one key after the other. A key WebCrypto cannot use (it refused
/// to import it, or the check threw) verifies nothing and is logged.
pub async fn verify<H: Host>(host: &H, edge_id: &str, pending: &PendingSignature<'_>) -> bool {
    let (input, signature) = (pending.signing_input(), pending.signature());
    for key in pending.keys() {
        match host.verify_signature(key, input, signature).await {
            Ok(true) => return true,
            Ok(false) => {}
            Err(why) => host.log(
                Level::Error,
                &format!(
                    "[{edge_id}] WebCrypto cannot check a {} signature with key {}: {why}",
                    key.alg,
                    key.kid.as_deref().unwrap_or("(no kid)")
                ),
            ),
        }
    }
    false
}
