//! Signature verification in pure Rust, one cargo feature per algorithm family, so that a
//! build carries only the crates its host cannot replace:
//!
//! | feature | algorithms | crate |
//! |---|---|---|
//! | `pure-hmac` | HS256, HS384, HS512 | `hmac-sha256`, `hmac-sha512` |
//! | `pure-rsa` | RS256/384/512, PS256/384/512 | `rsa` (big integers), `sha2` |
//! | `pure-p256` | ES256 | `p256` |
//! | `pure-p384` | ES384 | `p384` |
//! | `pure-ed25519` | EdDSA (Ed25519) | `ed25519-compact` |
//!
//! `pure-rust` turns them all on (the control plane and the native tests). The filter asks
//! Envoy's `verify_signature` for RS*/ES* and needs `pure-hmac`, `pure-ed25519` for EdDSA
//! and `pure-rsa` for PS*; the Worker asks WebCrypto for all of them and needs none.
//! Without its feature an algorithm is refused when the engine is built
//! ([`PureRustVerifier`]'s [`AlgorithmSupport`]), never failed silently on a request.

use crate::der::PublicKeyInfo;
use crate::jwt::{Algorithm, AlgorithmSupport, KeyMaterial, SignatureVerifier, VerificationKey};

/// A public key parsed for this build's pure-Rust verifier, once, when the key is loaded
/// (`None` when the build has no pure-Rust code for its algorithm: a host verifies it).
#[derive(Clone)]
pub(crate) enum Prepared {
    None,
    #[cfg(feature = "pure-rsa")]
    Rsa(rsa::RsaPublicKey),
    #[cfg(feature = "pure-p256")]
    P256(p256::ecdsa::VerifyingKey),
    #[cfg(feature = "pure-p384")]
    P384(p384::ecdsa::VerifyingKey),
    #[cfg(feature = "pure-ed25519")]
    Ed25519(ed25519_compact::PublicKey),
}

/// The pure-Rust form of a key whose structure [`crate::der`] has already checked;
/// `Err` when the crate refuses it (e.g. a point not on the curve).
pub(crate) fn prepare(alg: Algorithm, key: &PublicKeyInfo<'_>) -> Result<Prepared, ()> {
    // Without any pure-Rust feature nothing here reads its arguments.
    let _ = (alg, key);
    #[cfg(feature = "pure-rsa")]
    if let PublicKeyInfo::Rsa { n, e } = key {
        use rsa::BigUint;
        return rsa::RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
            .map(Prepared::Rsa)
            .map_err(|_| ());
    }
    #[cfg(feature = "pure-p256")]
    if let PublicKeyInfo::Ec {
        curve: crate::der::Curve::P256,
        point,
    } = key
    {
        return p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(Prepared::P256)
            .map_err(|_| ());
    }
    #[cfg(feature = "pure-p384")]
    if let PublicKeyInfo::Ec {
        curve: crate::der::Curve::P384,
        point,
    } = key
    {
        return p384::ecdsa::VerifyingKey::from_sec1_bytes(point)
            .map(Prepared::P384)
            .map_err(|_| ());
    }
    #[cfg(feature = "pure-ed25519")]
    if let PublicKeyInfo::Ed25519(raw) = key {
        return ed25519_compact::PublicKey::from_slice(raw)
            .map(Prepared::Ed25519)
            .map_err(|_| ());
    }
    Ok(Prepared::None)
}

/// Signature verification in pure Rust, as the build's features allow (see the module
/// doc).
#[derive(Debug, Clone, Copy, Default)]
pub struct PureRustVerifier;

#[cfg(feature = "pure-hmac")]
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AlgorithmSupport for PureRustVerifier {
    fn supports(&self, alg: Algorithm) -> Result<(), String> {
        let feature = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                (cfg!(feature = "pure-hmac"), "pure-hmac")
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => (cfg!(feature = "pure-rsa"), "pure-rsa"),
            Algorithm::ES256 => (cfg!(feature = "pure-p256"), "pure-p256"),
            Algorithm::ES384 => (cfg!(feature = "pure-p384"), "pure-p384"),
            Algorithm::EdDSA => (cfg!(feature = "pure-ed25519"), "pure-ed25519"),
        };
        match feature {
            (true, _) => Ok(()),
            (false, name) => Err(format!(
                "this build verifies {alg} only through its host: pure-Rust {alg} needs epochgate-core's cargo feature `{name}`"
            )),
        }
    }
}

impl SignatureVerifier for PureRustVerifier {
    fn verify(&self, key: &VerificationKey, input: &[u8], signature: &[u8]) -> bool {
        let public = match (&key.material, key.alg) {
            #[cfg(feature = "pure-hmac")]
            (KeyMaterial::Hmac(secret), Algorithm::HS256) => {
                return constant_time_eq(&hmac_sha256::HMAC::mac(input, secret), signature)
            }
            #[cfg(feature = "pure-hmac")]
            (KeyMaterial::Hmac(secret), Algorithm::HS384) => {
                return constant_time_eq(&hmac_sha512::sha384::HMAC::mac(input, secret), signature)
            }
            #[cfg(feature = "pure-hmac")]
            (KeyMaterial::Hmac(secret), Algorithm::HS512) => {
                return constant_time_eq(&hmac_sha512::HMAC::mac(input, secret), signature)
            }
            (KeyMaterial::Public(public), _) => public,
            _ => return false,
        };
        let _ = (input, signature);
        match (public.prepared(), key.alg) {
            #[cfg(feature = "pure-rsa")]
            (Prepared::Rsa(rsa), alg) => verify_rsa(rsa, alg, input, signature),
            #[cfg(feature = "pure-p256")]
            (Prepared::P256(vk), Algorithm::ES256) => {
                use p256::ecdsa::signature::Verifier as _;
                p256::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| vk.verify(input, &sig).is_ok())
            }
            #[cfg(feature = "pure-p384")]
            (Prepared::P384(vk), Algorithm::ES384) => {
                use p384::ecdsa::signature::Verifier as _;
                p384::ecdsa::Signature::from_slice(signature)
                    .is_ok_and(|sig| vk.verify(input, &sig).is_ok())
            }
            #[cfg(feature = "pure-ed25519")]
            (Prepared::Ed25519(pk), Algorithm::EdDSA) => {
                ed25519_compact::Signature::from_slice(signature)
                    .is_ok_and(|sig| pk.verify(input, &sig).is_ok())
            }
            // No pure-Rust code for this key in this build (the engine refuses such keys
            // unless a host verifies them), or material and algorithm do not match:
            // never verifies.
            _ => false,
        }
    }
}

/// RSASSA-PKCS1-v1_5 (RS*) or RSASSA-PSS with MGF1 and a salt as long as the hash
/// (PS*, RFC 7518 §3.5).
#[cfg(feature = "pure-rsa")]
fn verify_rsa(key: &rsa::RsaPublicKey, alg: Algorithm, input: &[u8], signature: &[u8]) -> bool {
    use rsa::{Pkcs1v15Sign, Pss};
    use sha2::{Digest, Sha256, Sha384, Sha512};
    let result = match alg {
        Algorithm::RS256 => key.verify(
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input),
            signature,
        ),
        Algorithm::RS384 => key.verify(
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(input),
            signature,
        ),
        Algorithm::RS512 => key.verify(
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(input),
            signature,
        ),
        Algorithm::PS256 => key.verify(Pss::new::<Sha256>(), &Sha256::digest(input), signature),
        Algorithm::PS384 => key.verify(Pss::new::<Sha384>(), &Sha384::digest(input), signature),
        Algorithm::PS512 => key.verify(Pss::new::<Sha512>(), &Sha512::digest(input), signature),
        _ => return false,
    };
    result.is_ok()
}
