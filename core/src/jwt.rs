//! JWT parsing and signature verification.
//!
//! `core` parses the token itself — strict base64url, exactly three segments, JSON header
//! and claims — and hands *(key, signing input, signature)* to a [`SignatureVerifier`].
//! The key is chosen by `kid` among the configured keys, and the key's pinned algorithm
//! decides: the token's `alg` header must name that algorithm and never chooses one
//! (RFC 8725 §3.1; `none` never passes). [`PureRustVerifier`] is the default; the filter
//! can add one backed by Envoy's native `verify_signature`, with no change here.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike, ECDSAP384PublicKeyLike, ES256PublicKey, ES384PublicKey,
    Ed25519PublicKey, EdDSAPublicKeyLike,
};
use serde_json::{Map, Value};
use superboring::hash::MessageDigest;
use superboring::pkey::{PKey, Public};
use superboring::rsa::{Padding, Rsa};
use superboring::sign::Verifier;

/// The algorithms a key can be pinned to (RFC 7518 names, case-sensitive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(clippy::upper_case_acronyms)]
pub enum Algorithm {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

/// An `alg` that no key can be pinned to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unsupported algorithm {0:?} (use one of HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)")]
pub struct UnsupportedAlgorithm(pub String);

impl FromStr for Algorithm {
    type Err = UnsupportedAlgorithm;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "HS256" => Algorithm::HS256,
            "HS384" => Algorithm::HS384,
            "HS512" => Algorithm::HS512,
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "EdDSA" => Algorithm::EdDSA,
            other => return Err(UnsupportedAlgorithm(other.to_string())),
        })
    }
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::HS384 => "HS384",
            Algorithm::HS512 => "HS512",
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::HS384 | Algorithm::ES384 => {
                MessageDigest::sha384()
            }
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::HS512 => MessageDigest::sha512(),
            _ => MessageDigest::sha256(),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parsed key material, ready to verify (parsed once per configuration, not per request).
#[derive(Clone)]
pub enum KeyMaterial {
    Hmac(Vec<u8>),
    /// The key, and its DER SubjectPublicKeyInfo.
    Rsa(Box<(PKey<Public>, Vec<u8>)>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_compact::PublicKey),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            KeyMaterial::Hmac(_) => "Hmac(..)",
            KeyMaterial::Rsa(_) => "Rsa(..)",
            KeyMaterial::P256(_) => "P256(..)",
            KeyMaterial::P384(_) => "P384(..)",
            KeyMaterial::Ed25519(_) => "Ed25519(..)",
        })
    }
}

/// Why a key could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a {alg} key needs {expected}")]
    WrongMaterial {
        alg: Algorithm,
        expected: &'static str,
    },
    #[error("the {alg} key is not a valid {what}")]
    Unreadable { alg: Algorithm, what: &'static str },
    #[error("an {alg} secret must be at least {min} bytes (RFC 7518 §3.2), got {got}")]
    WeakSecret {
        alg: Algorithm,
        min: usize,
        got: usize,
    },
    #[error("an RSA key must be at least 2048 bits, got {0}")]
    WeakRsa(u32),
    #[error("JWK: {0}")]
    Jwk(String),
}

/// One configured key: its `kid`, its pinned algorithm, and its material.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub material: KeyMaterial,
    /// The public key as DER SubjectPublicKeyInfo (RSA and EC keys), for hosts that
    /// verify natively (Envoy's `verify_signature`): derived once, when the key is loaded.
    pub spki_der: Option<Vec<u8>>,
}

fn b64url(s: &str) -> Result<Vec<u8>, ()> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| ())
}

impl VerificationKey {
    fn assemble(kid: Option<String>, alg: Algorithm, material: KeyMaterial) -> Self {
        use p256::pkcs8::EncodePublicKey as _;
        let spki_der = match &material {
            KeyMaterial::Hmac(_) | KeyMaterial::Ed25519(_) => None,
            KeyMaterial::Rsa(rsa) => Some(rsa.1.clone()),
            KeyMaterial::P256(vk) => vk.to_public_key_der().ok().map(|d| d.as_bytes().to_vec()),
            KeyMaterial::P384(vk) => {
                use p384::pkcs8::EncodePublicKey as _;
                vk.to_public_key_der().ok().map(|d| d.as_bytes().to_vec())
            }
        };
        Self {
            kid,
            alg,
            material,
            spki_der,
        }
    }

    /// An HMAC key (HS256/384/512), at least as long as the hash output.
    pub fn hmac(kid: Option<String>, alg: Algorithm, secret: Vec<u8>) -> Result<Self, KeyError> {
        let min = match alg {
            Algorithm::HS256 => 32,
            Algorithm::HS384 => 48,
            Algorithm::HS512 => 64,
            _ => {
                return Err(KeyError::WrongMaterial {
                    alg,
                    expected: "a public key (public_key_pem or jwk), not a secret",
                })
            }
        };
        if secret.len() < min {
            return Err(KeyError::WeakSecret {
                alg,
                min,
                got: secret.len(),
            });
        }
        Ok(Self::assemble(kid, alg, KeyMaterial::Hmac(secret)))
    }

    /// A public key in PEM (SubjectPublicKeyInfo; PKCS#1 too for RSA).
    pub fn from_pem(kid: Option<String>, alg: Algorithm, pem: &str) -> Result<Self, KeyError> {
        let material = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                return Err(KeyError::WrongMaterial {
                    alg,
                    expected: "a secret, not a PEM public key",
                })
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                let rsa = Rsa::public_key_from_pem(pem.as_bytes())
                    .or_else(|_| Rsa::public_key_from_pem_pkcs1(pem.as_bytes()))
                    .map_err(|_| KeyError::Unreadable {
                        alg,
                        what: "RSA public key PEM",
                    })?;
                rsa_material(alg, rsa)?
            }
            Algorithm::ES256 => KeyMaterial::P256(
                *ES256PublicKey::from_pem(pem)
                    .map_err(|_| KeyError::Unreadable {
                        alg,
                        what: "P-256 public key PEM",
                    })?
                    .public_key()
                    .as_ref(),
            ),
            Algorithm::ES384 => KeyMaterial::P384(
                *ES384PublicKey::from_pem(pem)
                    .map_err(|_| KeyError::Unreadable {
                        alg,
                        what: "P-384 public key PEM",
                    })?
                    .public_key()
                    .as_ref(),
            ),
            Algorithm::EdDSA => KeyMaterial::Ed25519(
                *Ed25519PublicKey::from_pem(pem)
                    .map_err(|_| KeyError::Unreadable {
                        alg,
                        what: "Ed25519 public key PEM",
                    })?
                    .public_key()
                    .as_ref(),
            ),
        };
        Ok(Self::assemble(kid, alg, material))
    }

    /// A JWK (RFC 7517): `RSA` (`n`, `e`), `EC` (`crv`, `x`, `y`), `OKP` (`Ed25519`, `x`)
    /// or `oct` (`k`). The algorithm is the pinned one; the JWK's `kty`/`crv` must fit it.
    pub fn from_jwk(kid: Option<String>, alg: Algorithm, jwk: &Value) -> Result<Self, KeyError> {
        let field = |name: &str| -> Result<Vec<u8>, KeyError> {
            let s = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| KeyError::Jwk(format!("missing string member `{name}`")))?;
            b64url(s).map_err(|_| KeyError::Jwk(format!("`{name}` is not base64url")))
        };
        let kty = jwk
            .get("kty")
            .and_then(Value::as_str)
            .ok_or_else(|| KeyError::Jwk("missing `kty`".into()))?;
        let crv = jwk.get("crv").and_then(Value::as_str);
        let fits = |want_kty: &str, want_crv: Option<&str>| {
            if kty != want_kty || (want_crv.is_some() && crv != want_crv) {
                Err(KeyError::Jwk(format!(
                    "a {alg} key needs kty {want_kty}{}, got kty {kty}{}",
                    want_crv.map(|c| format!("/crv {c}")).unwrap_or_default(),
                    crv.map(|c| format!("/crv {c}")).unwrap_or_default()
                )))
            } else {
                Ok(())
            }
        };
        let material = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                fits("oct", None)?;
                return Self::hmac(kid, alg, field("k")?);
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => {
                fits("RSA", None)?;
                let n = superboring::bn::BigNum::from_slice(&field("n")?)
                    .map_err(|_| KeyError::Jwk("bad `n`".into()))?;
                let e = superboring::bn::BigNum::from_slice(&field("e")?)
                    .map_err(|_| KeyError::Jwk("bad `e`".into()))?;
                let rsa = Rsa::from_public_components(n, e).map_err(|_| KeyError::Unreadable {
                    alg,
                    what: "RSA public key",
                })?;
                rsa_material(alg, rsa)?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                fits(
                    "EC",
                    Some(if alg == Algorithm::ES256 {
                        "P-256"
                    } else {
                        "P-384"
                    }),
                )?;
                let mut sec1 = vec![4u8];
                sec1.extend(field("x")?);
                sec1.extend(field("y")?);
                if alg == Algorithm::ES256 {
                    KeyMaterial::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(
                        |_| KeyError::Unreadable {
                            alg,
                            what: "P-256 point",
                        },
                    )?)
                } else {
                    KeyMaterial::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).map_err(
                        |_| KeyError::Unreadable {
                            alg,
                            what: "P-384 point",
                        },
                    )?)
                }
            }
            Algorithm::EdDSA => {
                fits("OKP", Some("Ed25519"))?;
                KeyMaterial::Ed25519(
                    ed25519_compact::PublicKey::from_slice(&field("x")?).map_err(|_| {
                        KeyError::Unreadable {
                            alg,
                            what: "Ed25519 public key",
                        }
                    })?,
                )
            }
        };
        Ok(Self::assemble(kid, alg, material))
    }
}

fn rsa_material(alg: Algorithm, rsa: Rsa<Public>) -> Result<KeyMaterial, KeyError> {
    let bits = rsa.bits();
    if bits < 2048 {
        return Err(KeyError::WeakRsa(bits));
    }
    let unreadable = || KeyError::Unreadable {
        alg,
        what: "RSA public key",
    };
    let der = rsa.public_key_to_der().map_err(|_| unreadable())?;
    let pkey = PKey::from_rsa(rsa).map_err(|_| unreadable())?;
    Ok(KeyMaterial::Rsa(Box::new((pkey, der))))
}

/// Whether a JWK is a symmetric (HMAC) key: its `kty` is `oct`, or its `alg` an `HS*`.
/// Such a key is a shared secret; one published at a URL is no secret at all, so a
/// remote JWKS never contributes one.
fn is_symmetric(jwk: &Value) -> bool {
    jwk.get("kty").and_then(Value::as_str) == Some("oct")
        || jwk
            .get("alg")
            .and_then(Value::as_str)
            .is_some_and(|a| a.starts_with("HS"))
}

/// Parses a JWKS fetched from a URL: as [`parse_jwks`], but symmetric keys are skipped,
/// and a document that yields no usable key is an error — the caller keeps the keys it
/// had rather than lock everyone out.
pub fn parse_remote_jwks(
    doc: &Value,
    default_alg: Option<Algorithm>,
) -> Result<(Vec<VerificationKey>, Vec<String>), String> {
    let (keys, skipped) = parse_key_list(remote_key_list(doc)?, default_alg, false);
    if keys.is_empty() {
        return Err(format!("no usable key ({})", skipped.join("; ")));
    }
    Ok((keys, skipped))
}

/// What the fetcher checks before it hands a remote JWKS on (it does not know the
/// filter's `jwks_default_alg`): a `keys` list that is not empty and holds at least one
/// asymmetric signing key that names a supported `alg` or names none.
pub fn check_remote_jwks(doc: &Value) -> Result<(), String> {
    let list = remote_key_list(doc)?;
    let plausible = list.iter().any(|jwk| {
        !is_symmetric(jwk)
            && matches!(jwk.get("use").and_then(Value::as_str), None | Some("sig"))
            && matches!(
                jwk.get("kty").and_then(Value::as_str),
                Some("RSA" | "EC" | "OKP")
            )
            && match jwk.get("alg") {
                None => true,
                Some(a) => a.as_str().is_some_and(|a| a.parse::<Algorithm>().is_ok()),
            }
    });
    if plausible {
        Ok(())
    } else {
        Err("no usable signing key (only symmetric, encryption or unsupported keys)".into())
    }
}

fn remote_key_list(doc: &Value) -> Result<&Vec<Value>, String> {
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: no `keys` array")?;
    if list.is_empty() {
        return Err("the `keys` list is empty".into());
    }
    Ok(list)
}

/// Parses a JWKS document (`{"keys": [...]}`). Keys this verifier cannot use are skipped,
/// each with the reason: encryption keys (`use` other than `sig`), unknown key types or
/// algorithms, and keys without `alg` when no `default_alg` is configured (a key never
/// verifies under a guessed algorithm). Only a document that is not a JWKS is an error.
pub fn parse_jwks(
    doc: &Value,
    default_alg: Option<Algorithm>,
) -> Result<(Vec<VerificationKey>, Vec<String>), String> {
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWKS: no `keys` array")?;
    Ok(parse_key_list(list, default_alg, true))
}

fn parse_key_list(
    list: &[Value],
    default_alg: Option<Algorithm>,
    symmetric_ok: bool,
) -> (Vec<VerificationKey>, Vec<String>) {
    let mut keys = Vec::with_capacity(list.len());
    let mut skipped = Vec::new();
    for (i, jwk) in list.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
        let name = format!(
            "keys[{i}]{}",
            kid.as_ref()
                .map(|k| format!(" (kid {k:?})"))
                .unwrap_or_default()
        );
        if !symmetric_ok && is_symmetric(jwk) {
            skipped.push(format!(
                "{name}: a symmetric (oct/HS*) key is never taken from a URL"
            ));
            continue;
        }
        if let Some(u) = jwk.get("use").and_then(Value::as_str) {
            if u != "sig" {
                skipped.push(format!("{name}: `use` is {u:?}, not \"sig\""));
                continue;
            }
        }
        let alg = match (jwk.get("alg").and_then(Value::as_str), default_alg) {
            (Some(a), _) => match a.parse::<Algorithm>() {
                Ok(a) => a,
                Err(e) => {
                    skipped.push(format!("{name}: {e}"));
                    continue;
                }
            },
            (None, Some(a)) => a,
            (None, None) => {
                skipped.push(format!(
                    "{name}: no `alg` and no jwks_default_alg configured"
                ));
                continue;
            }
        };
        match VerificationKey::from_jwk(kid, alg, jwk) {
            Ok(key) => keys.push(key),
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    (keys, skipped)
}

/// Re-encodes a JWS ECDSA signature (raw `r || s`, RFC 7518 §3.4) as DER
/// `SEQUENCE { INTEGER r, INTEGER s }` — minimal integers, a leading zero when the top
/// bit is set — for verifiers that take DER (BoringSSL). `None` unless `raw` is exactly
/// `2 * scalar_len` bytes.
pub fn ecdsa_raw_to_der(raw: &[u8], scalar_len: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * scalar_len || scalar_len == 0 || scalar_len > 66 {
        return None;
    }
    let integer = |bytes: &[u8]| {
        let start = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        let mut v = bytes[start..].to_vec();
        if v[0] & 0x80 != 0 {
            v.insert(0, 0);
        }
        let mut out = vec![0x02, u8::try_from(v.len()).ok()?];
        out.extend(v);
        Some(out)
    };
    let (r, s) = raw.split_at(scalar_len);
    let mut body = integer(r)?;
    body.extend(integer(s)?);
    let mut der = vec![0x30];
    let len = body.len();
    if len < 0x80 {
        der.push(u8::try_from(len).ok()?);
    } else {
        der.push(0x81);
        der.push(u8::try_from(len).ok()?);
    }
    der.extend(body);
    Some(der)
}

/// The configured keys.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<VerificationKey>,
}

impl KeySet {
    /// Refuses a `kid` configured twice (`Err(kid)`).
    pub fn new(keys: Vec<VerificationKey>) -> Result<Self, String> {
        for (i, k) in keys.iter().enumerate() {
            if let Some(kid) = &k.kid {
                if keys[..i].iter().any(|o| o.kid.as_deref() == Some(kid)) {
                    return Err(kid.clone());
                }
            }
        }
        Ok(Self { keys })
    }

    /// A key set from keys of unknown provenance (a remote JWKS): a `kid` listed twice
    /// keeps its first key.
    pub fn lenient(keys: Vec<VerificationKey>) -> Self {
        let mut kept: Vec<VerificationKey> = Vec::with_capacity(keys.len());
        for key in keys {
            let dup = key.kid.is_some() && kept.iter().any(|k| k.kid == key.kid);
            if !dup {
                kept.push(key);
            }
        }
        Self { keys: kept }
    }

    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    pub fn by_kid(&self, kid: &str) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Verifies a signature over `signing_input` (`header.payload`) with a key, under the
/// key's pinned algorithm.
pub trait SignatureVerifier {
    fn verify(&self, key: &VerificationKey, signing_input: &[u8], signature: &[u8]) -> bool;
}

/// Signature verification in pure Rust (works on every target).
#[derive(Debug, Clone, Copy, Default)]
pub struct PureRustVerifier;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SignatureVerifier for PureRustVerifier {
    fn verify(&self, key: &VerificationKey, input: &[u8], signature: &[u8]) -> bool {
        match (&key.material, key.alg) {
            (KeyMaterial::Hmac(secret), Algorithm::HS256) => {
                constant_time_eq(&hmac_sha256::HMAC::mac(input, secret), signature)
            }
            (KeyMaterial::Hmac(secret), Algorithm::HS384) => {
                constant_time_eq(&hmac_sha512::sha384::HMAC::mac(input, secret), signature)
            }
            (KeyMaterial::Hmac(secret), Algorithm::HS512) => {
                constant_time_eq(&hmac_sha512::HMAC::mac(input, secret), signature)
            }
            (KeyMaterial::Rsa(rsa), alg) => {
                let pkey = &rsa.0;
                let padding = match alg {
                    Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 => Padding::PKCS1,
                    Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => Padding::PKCS1_PSS,
                    _ => return false,
                };
                let Ok(mut verifier) = Verifier::new(alg.digest(), pkey) else {
                    return false;
                };
                verifier.set_rsa_padding(padding).is_ok()
                    && verifier.update(input).is_ok()
                    && verifier.verify(signature).unwrap_or(false)
            }
            (KeyMaterial::P256(vk), Algorithm::ES256) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(signature)
                    .map(|sig| vk.verify(input, &sig).is_ok())
                    .unwrap_or(false)
            }
            (KeyMaterial::P384(vk), Algorithm::ES384) => {
                use p384::ecdsa::signature::Verifier as _;
                p384::ecdsa::Signature::from_slice(signature)
                    .map(|sig| vk.verify(input, &sig).is_ok())
                    .unwrap_or(false)
            }
            (KeyMaterial::Ed25519(pk), Algorithm::EdDSA) => {
                ed25519_compact::Signature::from_slice(signature)
                    .map(|sig| pk.verify(input, &sig).is_ok())
                    .unwrap_or(false)
            }
            // Material and algorithm are matched when the key is built; anything else
            // never verifies.
            _ => false,
        }
    }
}

/// What went wrong with a token. Each maps to a deny reason ([`TokenError::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is larger than {0} bytes")]
    TooLarge(usize),
    #[error("token does not have three segments")]
    Segments,
    #[error("token {0} is not strict base64url")]
    Base64(&'static str),
    #[error("token {0} is not a JSON object")]
    Json(&'static str),
    #[error("token header has no string `alg`")]
    NoAlg,
    #[error("unsecured token (alg {0:?}) refused")]
    AlgNone(String),
    #[error("token header `crit` names extensions this verifier does not understand")]
    Crit,
    #[error("token kid {0:?} is not a configured key")]
    UnknownKid(String),
    #[error("token alg {token:?} is not the {key} pinned for its key")]
    AlgMismatch { token: String, key: Algorithm },
    #[error("no configured key for alg {0:?}")]
    NoKeyForAlg(String),
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet (nbf)")]
    NotYetValid,
    #[error("token issued in the future ({0})")]
    IssuedInFuture(&'static str),
    #[error("token issuer does not match")]
    Issuer,
    #[error("token audience does not match")]
    Audience,
    #[error("token claim `{0}` is missing")]
    MissingClaim(String),
    #[error("token claim `{0}` is malformed")]
    BadClaim(String),
    #[error("token typ {found:?} is not the required {want:?}")]
    WrongType { found: Option<String>, want: String },
}

/// The parts of a token that signature verification needs.
#[derive(Debug)]
pub struct ParsedToken<'a> {
    pub alg: String,
    pub kid: Option<String>,
    /// The whole header, for what looks at more than `alg` and `kid` (explicit typing:
    /// `typ` `at+jwt` at the edges with `require_typ`, `logout+jwt` and `secevent+jwt` at
    /// the control plane's IdP receivers).
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    /// `header.payload`, exactly as received.
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
}

impl ParsedToken<'_> {
    /// The header's `typ`, if it is a string.
    pub fn typ(&self) -> Option<&str> {
        self.header.get("typ").and_then(Value::as_str)
    }
}

/// A JSON value parsed with duplicate member names refused, at any depth.
///
/// `serde_json` keeps the last of two equal names silently. RFC 7515 §4 and RFC 7519 §4
/// allow a parser to either reject such a document or keep the last member; RFC 8725
/// §3 asks for the stricter reading. Two `sub`s (or two `alg`s) mean two parsers can
/// read two different tokens from the same bytes — an IdP's logging, an upstream and
/// this filter could disagree on who the token speaks for. So they are refused.
/// Nesting stays bounded by `serde_json`'s recursion limit (128), which applies here too.
struct StrictValue(Value);

impl<'de> serde::Deserialize<'de> for StrictValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value without duplicate member names")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(StrictValue(v)) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let StrictValue(value) = map.next_value()?;
            if out.insert(key, value).is_some() {
                return Err(serde::de::Error::custom("duplicate member name"));
            }
        }
        Ok(Value::Object(out))
    }
}

fn json_object(bytes: &[u8], part: &'static str) -> Result<Map<String, Value>, TokenError> {
    match serde_json::from_slice::<StrictValue>(bytes) {
        Ok(StrictValue(Value::Object(map))) => Ok(map),
        _ => Err(TokenError::Json(part)),
    }
}

/// Parses a compact JWS strictly: three segments, strict base64url (no padding, no
/// stray characters or bits), JSON objects for header and claims, no duplicate member
/// names at any depth (see [`StrictValue`]).
pub fn parse(token: &str, max_bytes: usize) -> Result<ParsedToken<'_>, TokenError> {
    if token.len() > max_bytes {
        return Err(TokenError::TooLarge(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Segments);
    };
    let header = json_object(
        &b64url(h).map_err(|_| TokenError::Base64("header"))?,
        "header",
    )?;
    let payload = b64url(p).map_err(|_| TokenError::Base64("payload"))?;
    let signature = b64url(s).map_err(|_| TokenError::Base64("signature"))?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(TokenError::NoAlg)?
        .to_string();
    if alg.eq_ignore_ascii_case("none") {
        return Err(TokenError::AlgNone(alg));
    }
    if header.contains_key("crit") {
        return Err(TokenError::Crit);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(TokenError::BadClaim("kid".into())),
    };
    let claims = json_object(&payload, "payload")?;
    Ok(ParsedToken {
        alg,
        kid,
        header,
        claims,
        signing_input: &token[..h.len() + 1 + p.len()],
        signature,
    })
}

/// Checks the signature with the key the token names (or, without `kid`, any key pinned
/// to the token's `alg`), among the configured keys and the remote JWKS's, if any.
pub fn verify_signature(
    token: &ParsedToken<'_>,
    keys: &KeySet,
    remote: Option<&KeySet>,
    verifier: &dyn SignatureVerifier,
) -> Result<(), TokenError> {
    let input = token.signing_input.as_bytes();
    let all = || {
        keys.keys()
            .iter()
            .chain(remote.map(KeySet::keys).unwrap_or_default())
    };
    match &token.kid {
        Some(kid) => {
            let key = keys
                .by_kid(kid)
                .or_else(|| remote.and_then(|r| r.by_kid(kid)))
                .ok_or_else(|| TokenError::UnknownKid(kid.clone()))?;
            if key.alg.name() != token.alg {
                return Err(TokenError::AlgMismatch {
                    token: token.alg.clone(),
                    key: key.alg,
                });
            }
            if verifier.verify(key, input, &token.signature) {
                Ok(())
            } else {
                Err(TokenError::Signature)
            }
        }
        None => {
            let mut candidates = all().filter(|k| k.alg.name() == token.alg).peekable();
            if candidates.peek().is_none() {
                return Err(TokenError::NoKeyForAlg(token.alg.clone()));
            }
            if candidates.any(|k| verifier.verify(k, input, &token.signature)) {
                Ok(())
            } else {
                Err(TokenError::Signature)
            }
        }
    }
}

/// A `typ` value in the form it is compared: lower case, without `application/` (RFC
/// 7515 §4.1.9 lets a media type drop it; RFC 9068 §4 accepts `at+jwt` and
/// `application/at+jwt`).
pub fn normalize_typ(typ: &str) -> String {
    let typ = typ.trim().to_ascii_lowercase();
    match typ.strip_prefix("application/") {
        Some(rest) => rest.to_string(),
        None => typ,
    }
}

/// Checks the header `typ` against the required one (already normalized): so that an ID
/// token, a logout token or any other JWT of the same IdP is never taken for an access
/// token.
pub fn check_typ(token: &ParsedToken<'_>, want: &str) -> Result<(), TokenError> {
    match token.typ() {
        Some(t) if normalize_typ(t) == want => Ok(()),
        other => Err(TokenError::WrongType {
            found: other.map(str::to_string),
            want: want.to_string(),
        }),
    }
}
