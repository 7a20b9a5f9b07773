//! Native signature verification through Envoy's foreign function `verify_signature`
//! (BoringSSL): RSA and ECDSA in pure-Rust wasm are 10–20× slower than native, and their
//! crates are most of a pure-Rust filter's size.
//!
//! Arguments and result are the serialized `VerifySignatureArguments` (1 `hash_function`,
//! 2 `public_key` as DER SubjectPublicKeyInfo, 3 `signature`, 4 `text`) and
//! `VerifySignatureResult` (1 `result` bool, 2 `error`) of Envoy's
//! `source/extensions/common/wasm/ext/verify_signature.proto`. ECDSA signatures are
//! re-encoded from JWS's raw `r || s` to DER. RS256/384/512 and ES256/384 go to the host;
//! Envoy sets no PSS padding and has no Ed25519, so PS* and EdDSA are verified in Rust
//! when the filter is built with them (cargo features `pss` and `eddsa`, both default), and
//! everything is when it is built with `pure-rust` and the host has no such function (or
//! `native_verify` is off). An algorithm this build cannot verify on this host is refused
//! at `on_configure`.

use std::sync::atomic::{AtomicU64, Ordering};

use epochgate_core::jwt::{
    ecdsa_raw_to_der, Algorithm, AlgorithmSupport, PureRustVerifier, SignatureVerifier,
    VerificationKey,
};

/// Signatures verified by the host so far in this VM (reported as a counter on tick).
pub static NATIVE_CALLS: AtomicU64 = AtomicU64::new(0);

/// Calls the host's `verify_signature` with serialized arguments; `None` when the host
/// has no such function or the call failed.
pub type ForeignCall = fn(&[u8]) -> Option<Vec<u8>>;

/// RS*/ES* through the host, the rest (or all, without a host function) in Rust.
#[derive(Debug, Clone, Copy)]
pub struct NativeVerifier {
    call: Option<ForeignCall>,
}

impl NativeVerifier {
    /// Pure Rust only.
    pub fn pure() -> Self {
        Self { call: None }
    }

    /// Through `call` where it applies.
    pub fn with(call: ForeignCall) -> Self {
        Self { call: Some(call) }
    }

    pub fn is_native(&self) -> bool {
        self.call.is_some()
    }

    /// Asks the host to import a key it would verify (with an empty signature, which
    /// never verifies): `Err` with the host's reason when it cannot parse the key, so that
    /// a bad key (say, an EC point off its curve) is refused at `on_configure`, not on
    /// every request. `Ok` for keys the host does not verify.
    pub fn probe(&self, key: &VerificationKey) -> Result<(), String> {
        let (Some(call), Some(der), Some(hash)) = (self.call, key.spki_der(), native_hash(key.alg))
        else {
            return Ok(());
        };
        let Some(answer) = call(&encode_arguments(hash, der, &[], b"probe")) else {
            return Ok(());
        };
        match decode_result(&answer) {
            // BoringSSL's EVP_parse_public_key refused the key (Envoy's words).
            VerifyResult { error: Some(e), .. } if e.contains("initialize") => Err(format!(
                "Envoy's verify_signature cannot import this {} key: {e}",
                key.alg
            )),
            _ => Ok(()),
        }
    }
}

/// The hash Envoy verifies an algorithm with, for the algorithms it verifies.
fn native_hash(alg: Algorithm) -> Option<&'static str> {
    match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::ES256
        | Algorithm::ES384 => Some(alg.hash()),
        _ => None,
    }
}

fn field(out: &mut Vec<u8>, number: u8, bytes: &[u8]) {
    out.push(number << 3 | 2);
    let mut len = bytes.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(bytes);
}

/// Serializes `VerifySignatureArguments`.
pub fn encode_arguments(hash: &str, public_key: &[u8], signature: &[u8], text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(public_key.len() + signature.len() + text.len() + 32);
    field(&mut out, 1, hash.as_bytes());
    field(&mut out, 2, public_key);
    field(&mut out, 3, signature);
    field(&mut out, 4, text);
    out
}

/// A decoded `VerifySignatureResult`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VerifyResult {
    /// Field 1: only an explicit `true` verifies.
    pub verified: bool,
    /// Field 2: the host's reason, when it gives one.
    pub error: Option<String>,
}

/// Reads a `VerifySignatureResult`; anything unreadable is "not verified".
pub fn decode_result(bytes: &[u8]) -> VerifyResult {
    let mut out = VerifyResult::default();
    let mut i = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *bytes.get(*i)?;
            *i += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    };
    while i < bytes.len() {
        let Some(key) = varint(&mut i) else {
            return VerifyResult::default();
        };
        match (key >> 3, key & 7) {
            (number, 0) => {
                let Some(v) = varint(&mut i) else {
                    return VerifyResult::default();
                };
                if number == 1 {
                    out.verified = v == 1;
                }
            }
            (number, 2) => {
                let Some(len) = varint(&mut i).and_then(|l| usize::try_from(l).ok()) else {
                    return VerifyResult::default();
                };
                let Some(value) = i.checked_add(len).and_then(|end| bytes.get(i..end)) else {
                    return VerifyResult::default();
                };
                i += len;
                if number == 2 {
                    out.error = Some(String::from_utf8_lossy(value).into_owned());
                }
            }
            _ => return VerifyResult::default(),
        }
    }
    out
}

impl AlgorithmSupport for NativeVerifier {
    fn supports(&self, alg: Algorithm) -> Result<(), String> {
        if self.call.is_some() && native_hash(alg).is_some() {
            return Ok(());
        }
        PureRustVerifier.supports(alg).map_err(|_| match alg {
            Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512 => format!(
                "{alg} needs the filter built with cargo feature `pss` (Envoy's verify_signature sets no PSS padding)"
            ),
            Algorithm::EdDSA => "EdDSA needs the filter built with cargo feature `eddsa` (Envoy's verify_signature has no Ed25519)".to_string(),
            _ => format!(
                "{alg} is verified by Envoy's verify_signature, which this host lacks or `native_verify: false` turned off; build the filter with cargo feature `pure-rust` to verify it in Rust"
            ),
        })
    }
}

impl SignatureVerifier for NativeVerifier {
    fn verify(&self, key: &VerificationKey, input: &[u8], signature: &[u8]) -> bool {
        let (Some(call), Some(der), Some(hash)) = (self.call, key.spki_der(), native_hash(key.alg))
        else {
            return PureRustVerifier.verify(key, input, signature);
        };
        let der_signature;
        let host_signature = match key.alg {
            Algorithm::ES256 | Algorithm::ES384 => {
                let scalar = if key.alg == Algorithm::ES256 { 32 } else { 48 };
                // A malformed ECDSA signature never verifies.
                let Some(der) = ecdsa_raw_to_der(signature, scalar) else {
                    return false;
                };
                der_signature = der;
                &der_signature
            }
            _ => signature,
        };
        match call(&encode_arguments(hash, der, host_signature, input)) {
            Some(answer) => {
                NATIVE_CALLS.fetch_add(1, Ordering::Relaxed);
                decode_result(&answer).verified
            }
            // The call failed: fail closed, unless this build can verify it in Rust.
            None => PureRustVerifier.verify(key, input, signature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_the_proto_layout() {
        let a = encode_arguments("sha256", &[1, 2], &[3], b"h.p");
        assert_eq!(
            a,
            [
                &[0x0a, 6][..],
                b"sha256",
                &[0x12, 2, 1, 2],
                &[0x1a, 1, 3],
                &[0x22, 3],
                b"h.p"
            ]
            .concat()
        );
        let long = encode_arguments("s", &[0u8; 300], &[], &[]);
        assert_eq!(&long[3..6], &[0x12, 0xac, 0x02]);
    }

    #[test]
    fn results_verify_only_on_an_explicit_true() {
        let verified = |b: &[u8]| decode_result(b).verified;
        assert!(verified(&[0x08, 1]));
        assert!(!verified(&[0x08, 0]));
        assert!(!verified(&[]));
        assert!(!verified(&[0x12, 3, b'b', b'a', b'd']));
        assert!(verified(&[0x12, 1, b'x', 0x08, 1]));
        assert!(!verified(&[0x0d, 0, 0, 0, 0]));
        // Truncated or overlong fields are unreadable, not verified.
        assert!(!verified(&[0x08, 1, 0x12, 5, b'x']));
        assert!(!verified(&[0x08, 1, 0x12, 0xff]));
        assert!(!verified(&[0x08, 0x81]));
        assert_eq!(
            decode_result(&[0x12, 3, b'b', b'a', b'd']).error.as_deref(),
            Some("bad")
        );
    }

    fn es256_key() -> VerificationKey {
        let pem = include_str!("../../tests/fixtures/es256-a.pub.pem");
        VerificationKey::from_pem(Some("e".into()), Algorithm::ES256, pem).unwrap()
    }

    #[test]
    fn algorithms_go_to_the_host_or_to_rust_or_are_refused_with_the_feature_named() {
        let native = NativeVerifier::with(crate::fake::verify_signature);
        let pure = NativeVerifier::pure();
        for alg in [
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::ES256,
            Algorithm::ES384,
        ] {
            assert_eq!(native.supports(alg), Ok(()), "{alg} through the host");
            // Without the host function only a pure-Rust build verifies them.
            match PureRustVerifier.supports(alg) {
                Ok(()) => assert_eq!(pure.supports(alg), Ok(())),
                Err(_) => {
                    let e = pure.supports(alg).unwrap_err();
                    assert!(
                        e.contains("pure-rust") && e.contains("verify_signature"),
                        "{e}"
                    );
                }
            }
        }
        for (alg, feature) in [(Algorithm::PS256, "`pss`"), (Algorithm::EdDSA, "`eddsa`")] {
            // Envoy cannot: only the build decides.
            match PureRustVerifier.supports(alg) {
                Ok(()) => assert_eq!(native.supports(alg), Ok(())),
                Err(_) => assert!(native.supports(alg).unwrap_err().contains(feature)),
            }
        }
        assert_eq!(native.supports(Algorithm::HS256), Ok(()));
    }

    #[test]
    fn a_key_the_host_cannot_import_is_refused_and_a_failed_call_fails_closed() {
        let key = es256_key();
        assert_eq!(
            NativeVerifier::with(crate::fake::verify_signature).probe(&key),
            Ok(())
        );
        let refusing = NativeVerifier::with(|_| {
            let e = b"Failed to initialize digest verify.";
            Some([&[0x08, 0, 0x12, e.len() as u8][..], e].concat())
        });
        let why = refusing.probe(&key).unwrap_err();
        assert!(why.contains("cannot import this ES256 key"), "{why}");
        // A host call that fails (no answer): never verified, unless Rust can check it.
        let failing = NativeVerifier::with(|_| None);
        let sig = [1u8; 64];
        let verdict = failing.verify(&key, b"h.p", &sig);
        assert!(!verdict);
        // A malformed ECDSA signature never reaches the host.
        let counting = NativeVerifier::with(crate::fake::verify_signature);
        crate::fake::VERIFY_CALLS.with(|c| c.set(0));
        assert!(!counting.verify(&key, b"h.p", &[1u8; 63]));
        assert_eq!(crate::fake::VERIFY_CALLS.with(|c| c.get()), 0);
    }
}
