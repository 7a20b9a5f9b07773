//! Keys and the signature step: every key form loads to the canonical SubjectPublicKeyInfo
//! hosts import, what cannot be a good key is refused when it loads, a verifier's missing
//! algorithm is refused when the engine is built, and the decision split at the signature
//! step decides exactly as the synchronous path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use epochgate_core::cache::TokenCache;
use epochgate_core::conformance::Vectors;
use epochgate_core::decision::Step;
use epochgate_core::jwt::{
    Algorithm, AlgorithmSupport, KeyError, PureRustVerifier, SignatureVerifier, VerificationKey,
};
use epochgate_core::state::RevocationState;
use epochgate_core::{Config, Decision, DenyReason, Engine, Inputs, RequestInfo};
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// The DER inside a PEM file, as OpenSSL wrote it.
fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

fn unreadable(alg: Algorithm, what: &'static str) -> KeyError {
    KeyError::Unreadable { alg, what }
}

fn rsa_jwk(n: &[u8], e: &[u8]) -> Value {
    json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)})
}

/// `n` of a `bits`-bit odd modulus (not a real key: only its size and parity matter).
fn modulus(bits: usize) -> Vec<u8> {
    let mut n = vec![0xa5u8; bits / 8];
    n[0] |= 0x80;
    *n.last_mut().unwrap() |= 1;
    n
}

#[test]
fn every_key_form_loads_to_the_canonical_spki() {
    for (alg, name) in [
        (Algorithm::RS256, "rs256-a.pub.pem"),
        (Algorithm::PS512, "rs256-a.pub.pem"),
        (Algorithm::ES256, "es256-a.pub.pem"),
        (Algorithm::ES384, "es384-a.pub.pem"),
        (Algorithm::EdDSA, "ed25519-a.pub.pem"),
    ] {
        let pem = fixture(name);
        let key = VerificationKey::from_pem(None, alg, &pem).unwrap();
        assert_eq!(key.spki_der(), Some(&pem_der(&pem)[..]), "{alg} {name}");
    }
    // The same RSA key as a JWK (with a zero byte padding `n`, as some IdPs send it)
    // and as PKCS#1: the same SubjectPublicKeyInfo.
    let spki = pem_der(&fixture("rs256-a.pub.pem"));
    let pem =
        VerificationKey::from_pem(None, Algorithm::RS256, &fixture("rs256-a.pub.pem")).unwrap();
    let vectors = Vectors::algorithms().unwrap();
    let key = |kid: &str| {
        vectors
            .keys
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    };
    let jwk = key("rs384")["jwk"].clone();
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let padded = rsa_jwk(&[&[0u8][..], &n].concat(), &e);
    let from_jwk = VerificationKey::from_jwk(None, Algorithm::RS384, &padded).unwrap();
    assert_eq!(from_jwk.spki_der(), Some(&spki[..]));
    let pkcs1 = key("rs512")["public_key_pem"].as_str().unwrap().to_string();
    assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
    let from_pkcs1 = VerificationKey::from_pem(None, Algorithm::RS512, &pkcs1).unwrap();
    assert_eq!(from_pkcs1.spki_der(), pem.spki_der());
    // HMAC keys have none: hosts that verify them take the secret.
    let hs = VerificationKey::hmac(None, Algorithm::HS256, vec![7; 32]).unwrap();
    assert_eq!(hs.spki_der(), None);
}

#[test]
fn keys_that_cannot_be_good_are_refused_when_they_load() {
    use Algorithm::*;
    let e = [1u8, 0, 1];
    let jwk = |alg, v: &Value| VerificationKey::from_jwk(None, alg, v).unwrap_err();
    assert_eq!(
        jwk(RS256, &rsa_jwk(&modulus(1024), &e)),
        KeyError::WeakRsa(1024)
    );
    assert_eq!(
        jwk(PS256, &rsa_jwk(&modulus(8192), &e)),
        KeyError::LargeRsa(8192)
    );
    for bad_e in [&[2u8][..], &[1], &[0x01, 0, 0, 0, 0, 0x01]] {
        // Even, 1, or above 2^33 − 1.
        assert_eq!(
            jwk(RS256, &rsa_jwk(&modulus(2048), bad_e)),
            unreadable(RS256, "RSA public key"),
            "{bad_e:?}"
        );
    }
    let mut even = modulus(2048);
    *even.last_mut().unwrap() &= 0xfe;
    assert_eq!(
        jwk(RS256, &rsa_jwk(&even, &e)),
        unreadable(RS256, "RSA public key")
    );
    // The right kind of key for the algorithm, and of the right size.
    let pem = |alg, name: &str| VerificationKey::from_pem(None, alg, &fixture(name)).unwrap_err();
    assert_eq!(
        pem(ES256, "rs256-a.pub.pem"),
        unreadable(ES256, "P-256 public key PEM")
    );
    assert_eq!(
        pem(ES256, "es384-a.pub.pem"),
        unreadable(ES256, "P-256 public key PEM")
    );
    assert_eq!(
        pem(RS256, "ed25519-a.pub.pem"),
        unreadable(RS256, "RSA public key PEM")
    );
    assert_eq!(
        pem(EdDSA, "es256-a.pub.pem"),
        unreadable(EdDSA, "Ed25519 public key PEM")
    );
    // Not a public key PEM at all.
    for text in [
        fixture("es256-a.pem"),
        fixture("es256-a.pub.pem").replace("PUBLIC KEY", "CERTIFICATE"),
        fixture("es256-a.pub.pem").replace("MFkw", "MFkw!"),
        fixture("es256-a.pub.pem") + "trailing",
    ] {
        assert_eq!(
            VerificationKey::from_pem(None, ES256, &text).unwrap_err(),
            unreadable(ES256, "P-256 public key PEM"),
            "{text}"
        );
    }
    let ec = |crv: &str, x: &[u8], y: &[u8]| json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
    assert_eq!(
        jwk(ES384, &ec("P-384", &[1; 32], &[1; 32])),
        unreadable(ES384, "P-384 point")
    );
    // A point off the curve: this build has pure-Rust P-256, which checks (a host
    // checks it when it imports the key: the filter asks Envoy at on_configure).
    assert_eq!(
        jwk(ES256, &ec("P-256", &[1; 32], &[1; 32])),
        unreadable(ES256, "P-256 point")
    );
    let okp = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode([9u8; 31])});
    assert_eq!(jwk(EdDSA, &okp), unreadable(EdDSA, "Ed25519 public key"));
}

/// A verifier without EdDSA, as a build without its pure-Rust code and without a host
/// that verifies it would be.
#[derive(Debug)]
struct NoEdDsa;

impl AlgorithmSupport for NoEdDsa {
    fn supports(&self, alg: Algorithm) -> Result<(), String> {
        if alg == Algorithm::EdDSA {
            Err("EdDSA needs cargo feature `pure-ed25519`".into())
        } else {
            Ok(())
        }
    }
}

impl SignatureVerifier for NoEdDsa {
    fn verify(&self, key: &VerificationKey, input: &[u8], signature: &[u8]) -> bool {
        PureRustVerifier.verify(key, input, signature)
    }
}

#[test]
fn a_key_the_verifier_cannot_check_is_refused_when_the_engine_is_built() {
    let vectors = Vectors::load().unwrap();
    let e = Engine::with_verifier(vectors.config().unwrap(), NoEdDsa).unwrap_err();
    let index = vectors
        .keys
        .iter()
        .position(|k| k["alg"] == "EdDSA")
        .unwrap();
    assert_eq!(e.field, format!("keys[{index}].alg"));
    assert!(e.to_string().contains("`pure-ed25519`"), "{e}");
    let mut json = vectors.config_json();
    let kept: Vec<Value> = json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["alg"] != "EdDSA")
        .cloned()
        .collect();
    json["keys"] = Value::Array(kept);
    let config = Config::from_json(json.to_string().as_bytes()).unwrap();
    assert!(Engine::with_verifier(config, NoEdDsa).is_ok());
}

#[test]
fn the_split_decision_is_the_synchronous_one_and_caches_what_it_verified() {
    for vectors in Vectors::all().unwrap() {
        let engine = Engine::new(vectors.config().unwrap());
        for case in &vectors.cases {
            let headers = case.headers();
            let req = RequestInfo {
                headers: &headers,
                path: "/api",
            };
            let state = case.revocation_state();
            let st = case.fresh_status();
            let cache = TokenCache::new(10, 60);
            let inputs = Inputs {
                cache: Some(&cache),
                ..Inputs::new(&state, Some(&st), case.now_ms)
            };
            let sync = engine.decide_with(req, &Inputs::new(&state, Some(&st), case.now_ms));
            let split = match engine.begin(req, &inputs) {
                Step::Done(d) => d,
                Step::Verify(pending) => {
                    assert!(!pending.keys().is_empty(), "{}", case.name);
                    let verified = pending.verify_with(&PureRustVerifier);
                    engine.finish(pending, verified, &inputs)
                }
            };
            assert_eq!(split, sync, "{}", case.name);
            // A token whose signature and claims held is now cached: the next request
            // is decided without a signature step, and still gets the revocation rule.
            let signature_ok = !matches!(
                &sync,
                Decision::Deny {
                    reason: DenyReason::InvalidToken
                        | DenyReason::TokenExpired
                        | DenyReason::TokenNotYetValid,
                    ..
                }
            );
            assert_eq!(
                cache.get(&case.token, case.now_ms).is_some(),
                signature_ok,
                "{}: cached iff its signature and claims held",
                case.name
            );
            if signature_ok {
                let Step::Done(again) = engine.begin(req, &inputs) else {
                    panic!("{}: a cached token has no signature step", case.name)
                };
                assert_eq!(again, sync, "{}", case.name);
            }
        }
    }
}

#[test]
fn a_signature_that_does_not_verify_is_an_invalid_token_and_not_cached() {
    let vectors = Vectors::algorithms().unwrap();
    let engine = Engine::new(vectors.config().unwrap());
    let case = vectors
        .cases
        .iter()
        .find(|c| c.name == "valid_es384")
        .unwrap();
    let headers = case.headers();
    let req = RequestInfo {
        headers: &headers,
        path: "/",
    };
    let state = RevocationState::new();
    let cache = TokenCache::new(10, 60);
    let inputs = Inputs {
        cache: Some(&cache),
        ..Inputs::new(&state, None, case.now_ms)
    };
    let Step::Verify(pending) = engine.begin(req, &inputs) else {
        panic!("a fresh token has a signature to check")
    };
    assert_eq!(pending.keys().len(), 1);
    assert_eq!(pending.keys()[0].alg, Algorithm::ES384);
    assert_eq!(pending.signature().len(), 96, "raw r || s");
    assert!(std::str::from_utf8(pending.signing_input())
        .unwrap()
        .starts_with("eyJ"));
    // The host says no (whatever the signature): refused, and nothing cached.
    let Decision::Deny { reason, .. } = engine.finish(pending, false, &inputs) else {
        panic!("refused")
    };
    assert_eq!(reason, DenyReason::InvalidToken);
    assert!(cache.is_empty());
    assert!(matches!(engine.begin(req, &inputs), Step::Verify(_)));
}
