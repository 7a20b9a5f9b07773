//! JWT parsing and signature verification.
//!
//! `core` parses the token itself — strict base64url, exactly three segments, JSON header
//! and claims — and hands *(key, signing input, signature)* to a [`SignatureVerifier`].
//! The key is chosen by `kid` among the configured keys, and the key's pinned algorithm
//! decides: the token's `alg` header must name that algorithm and never chooses one
//! (RFC 8725 §3.1; `none` never passes). [`PureRustVerifier`] is the default; the filter
//! adds one backed by Envoy's native `verify_signature` and the Worker verifies with
//! WebCrypto, with no change here.
//!
//! Public keys are loaded without any crypto crate ([`crate::der`]): every key keeps its
//! DER SubjectPublicKeyInfo, which hosts import, and — when the build has pure-Rust code
//! for its algorithm ([`crate::pure`]) — the parsed form that code needs.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use crate::der::ecdsa_raw_to_der;
use crate::der::{self, Curve, PublicKeyInfo};
pub use crate::pure::PureRustVerifier;

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

    /// The hash the algorithm signs with (`"sha256"`, `"sha384"`, `"sha512"`): the name
    /// Envoy's `verify_signature` takes, WebCrypto's without the dash.
    pub fn hash(self) -> &'static str {
        match self {
            Algorithm::HS384 | Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => "sha384",
            Algorithm::HS512 | Algorithm::RS512 | Algorithm::PS512 => "sha512",
            Algorithm::HS256
            | Algorithm::RS256
            | Algorithm::PS256
            | Algorithm::ES256
            | Algorithm::EdDSA => "sha256",
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
    /// An RSA, EC (P-256, P-384) or Ed25519 public key.
    Public(PublicKey),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print secrets.
        f.write_str(match self {
            KeyMaterial::Hmac(_) => "Hmac(..)",
            KeyMaterial::Public(_) => "Public(..)",
        })
    }
}

/// A public key: its DER SubjectPublicKeyInfo, in one canonical encoding (what Envoy's
/// `verify_signature` and WebCrypto's `importKey("spki", …)` take), and its pure-Rust
/// form where the build has one. Shared, not copied, when a key set is cloned.
#[derive(Clone)]
pub struct PublicKey(Arc<PublicInner>);

struct PublicInner {
    spki: Vec<u8>,
    prepared: crate::pure::Prepared,
}

impl PublicKey {
    pub fn spki_der(&self) -> &[u8] {
        &self.0.spki
    }

    pub(crate) fn prepared(&self) -> &crate::pure::Prepared {
        &self.0.prepared
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
    #[error("an RSA key must be at most 4096 bits, got {0}")]
    LargeRsa(u32),
    #[error("JWK: {0}")]
    Jwk(String),
}

/// One configured key: its `kid`, its pinned algorithm, and its material.
#[derive(Debug, Clone)]
pub struct VerificationKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub material: KeyMaterial,
}

fn b64url(s: &str) -> Result<Vec<u8>, ()> {
    crate::b64::decode_url_no_pad(s).map_err(|_| ())
}

/// What a public key of this algorithm is called in errors.
fn public_key_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "P-256 public key",
        Algorithm::ES384 => "P-384 public key",
        Algorithm::EdDSA => "Ed25519 public key",
        _ => "RSA public key",
    }
}

/// The DER inside a PEM block (`-----BEGIN <label>-----`): `(label, der)`.
fn pem_decode(pem: &str) -> Option<(&str, Vec<u8>)> {
    let rest = pem.trim().strip_prefix("-----BEGIN ")?;
    let (label, rest) = rest.split_once("-----")?;
    let (body, end) = rest.split_once("-----END ")?;
    if end.trim_end() != format!("{label}-----") {
        return None;
    }
    let b64: String = body.split_ascii_whitespace().collect();
    crate::b64::decode_standard(b64)
        .ok()
        .map(|der| (label, der))
}

impl VerificationKey {
    fn assemble(kid: Option<String>, alg: Algorithm, material: KeyMaterial) -> Self {
        Self { kid, alg, material }
    }

    /// The public key as DER SubjectPublicKeyInfo (RSA, EC, Ed25519 keys), for hosts
    /// that verify natively.
    pub fn spki_der(&self) -> Option<&[u8]> {
        match &self.material {
            KeyMaterial::Hmac(_) => None,
            KeyMaterial::Public(public) => Some(public.spki_der()),
        }
    }

    /// A public key for `alg`: its structure checked (the right kind of key and curve;
    /// an RSA modulus of 2048 to 4096 bits, odd, with an odd exponent from 3 to 2^33 − 1),
    /// re-encoded canonically, and parsed by the pure-Rust verifier where the build has
    /// one for `alg` (which checks the rest, e.g. that a point is on its curve; hosts
    /// check it when they import the key).
    fn public(alg: Algorithm, key: &PublicKeyInfo<'_>) -> Result<KeyMaterial, KeyError> {
        let unreadable = || KeyError::Unreadable {
            alg,
            what: public_key_name(alg),
        };
        match (alg, key) {
            (
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
                PublicKeyInfo::Rsa { n, e },
            ) => {
                let bits = n.first().map_or(0, |top| {
                    (n.len() as u32 - 1) * 8 + (8 - top.leading_zeros())
                });
                if bits < 2048 {
                    return Err(KeyError::WeakRsa(bits));
                }
                if bits > 4096 {
                    return Err(KeyError::LargeRsa(bits));
                }
                let e_value = if e.len() <= 8 {
                    e.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b))
                } else {
                    u64::MAX
                };
                let odd = |x: &[u8]| x.last().is_some_and(|b| b & 1 == 1);
                if !odd(n) || !odd(e) || !(3..=(1 << 33) - 1).contains(&e_value) {
                    return Err(unreadable());
                }
            }
            (
                Algorithm::ES256,
                PublicKeyInfo::Ec {
                    curve: Curve::P256, ..
                },
            )
            | (
                Algorithm::ES384,
                PublicKeyInfo::Ec {
                    curve: Curve::P384, ..
                },
            )
            | (Algorithm::EdDSA, PublicKeyInfo::Ed25519(_)) => {}
            _ => return Err(unreadable()),
        }
        let prepared = crate::pure::prepare(alg, key).map_err(|()| unreadable())?;
        Ok(KeyMaterial::Public(PublicKey(Arc::new(PublicInner {
            spki: der::encode_spki(key),
            prepared,
        }))))
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

    /// A public key in PEM (SubjectPublicKeyInfo, `BEGIN PUBLIC KEY`; for RSA also
    /// PKCS#1, `BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(kid: Option<String>, alg: Algorithm, pem: &str) -> Result<Self, KeyError> {
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(KeyError::WrongMaterial {
                alg,
                expected: "a secret, not a PEM public key",
            });
        }
        let unreadable = || KeyError::Unreadable {
            alg,
            what: match alg {
                Algorithm::ES256 => "P-256 public key PEM",
                Algorithm::ES384 => "P-384 public key PEM",
                Algorithm::EdDSA => "Ed25519 public key PEM",
                _ => "RSA public key PEM",
            },
        };
        let (label, der) = pem_decode(pem).ok_or_else(unreadable)?;
        let info = match label {
            "PUBLIC KEY" => der::parse_spki(&der),
            "RSA PUBLIC KEY" => der::parse_rsa_public_key(&der),
            _ => None,
        }
        .ok_or_else(unreadable)?;
        let material = Self::public(alg, &info).map_err(|e| match e {
            KeyError::Unreadable { .. } => unreadable(),
            other => other,
        })?;
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
                // Unsigned big-endian; some IdPs pad with a zero byte.
                let unpadded = |mut v: Vec<u8>| {
                    let zeros = v.iter().take_while(|b| **b == 0).count();
                    v.drain(..zeros);
                    v
                };
                let (n, e) = (unpadded(field("n")?), unpadded(field("e")?));
                Self::public(alg, &PublicKeyInfo::Rsa { n: &n, e: &e })?
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let curve = if alg == Algorithm::ES256 {
                    Curve::P256
                } else {
                    Curve::P384
                };
                fits(
                    "EC",
                    Some(if curve == Curve::P256 {
                        "P-256"
                    } else {
                        "P-384"
                    }),
                )?;
                let (x, y) = (field("x")?, field("y")?);
                let len = curve.field_len();
                if x.len() != len || y.len() != len {
                    return Err(KeyError::Unreadable {
                        alg,
                        what: if curve == Curve::P256 {
                            "P-256 point"
                        } else {
                            "P-384 point"
                        },
                    });
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend(x);
                point.extend(y);
                Self::public(
                    alg,
                    &PublicKeyInfo::Ec {
                        curve,
                        point: &point,
                    },
                )
                .map_err(|_| KeyError::Unreadable {
                    alg,
                    what: if curve == Curve::P256 {
                        "P-256 point"
                    } else {
                        "P-384 point"
                    },
                })?
            }
            Algorithm::EdDSA => {
                fits("OKP", Some("Ed25519"))?;
                let x = field("x")?;
                if x.len() != 32 {
                    return Err(KeyError::Unreadable {
                        alg,
                        what: "Ed25519 public key",
                    });
                }
                Self::public(alg, &PublicKeyInfo::Ed25519(&x))?
            }
        };
        Ok(Self::assemble(kid, alg, material))
    }
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

/// Which algorithms a verifier can check at all. An engine refuses, when it is built, a
/// key whose algorithm its verifier cannot check (`Err` says why: which cargo feature or
/// host function it needs), so that no token fails for a reason the operator cannot see.
pub trait AlgorithmSupport {
    fn supports(&self, alg: Algorithm) -> Result<(), String>;
}

/// Verifies a signature over `signing_input` (`header.payload`) with a key, under the
/// key's pinned algorithm.
pub trait SignatureVerifier: AlgorithmSupport {
    fn verify(&self, key: &VerificationKey, signing_input: &[u8], signature: &[u8]) -> bool;
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

/// The keys a token's signature is checked with: the one its `kid` names, or, without
/// `kid`, every key pinned to the token's `alg` — among the configured keys and the
/// remote JWKS's, if any. The signature is good if any of them verifies it.
pub fn candidate_keys<'k>(
    token: &ParsedToken<'_>,
    keys: &'k KeySet,
    remote: Option<&'k KeySet>,
) -> Result<Vec<&'k VerificationKey>, TokenError> {
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
            Ok(vec![key])
        }
        None => {
            let candidates: Vec<_> = keys
                .keys()
                .iter()
                .chain(remote.map(KeySet::keys).unwrap_or_default())
                .filter(|k| k.alg.name() == token.alg)
                .collect();
            if candidates.is_empty() {
                return Err(TokenError::NoKeyForAlg(token.alg.clone()));
            }
            Ok(candidates)
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

/// Checks the signature with its [`candidate_keys`].
pub fn verify_signature(
    token: &ParsedToken<'_>,
    keys: &KeySet,
    remote: Option<&KeySet>,
    verifier: &dyn SignatureVerifier,
) -> Result<(), TokenError> {
    let input = token.signing_input.as_bytes();
    let verified = candidate_keys(token, keys, remote)?
        .into_iter()
        .any(|k| verifier.verify(k, input, &token.signature));
    if verified {
        Ok(())
    } else {
        Err(TokenError::Signature)
    }
}
