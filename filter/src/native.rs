//! Native signature verification through Envoy's foreign function `verify_signature`
//! (BoringSSL): RSA and ECDSA in pure-Rust wasm are 10–20× slower than native.
//!
//! Arguments and result are the serialized `VerifySignatureArguments` (1 `hash_function`,
//! 2 `public_key` as DER SubjectPublicKeyInfo, 3 `signature`, 4 `text`) and
//! `VerifySignatureResult` (1 `result` bool, 2 `error`) of Envoy's
//! `source/extensions/common/wasm/ext/verify_signature.proto`. ECDSA signatures are
//! re-encoded from JWS's raw `r || s` to DER. Envoy sets no PSS padding, so PS* (and
//! EdDSA) stay in Rust; so does everything when the host has no such function.

use std::sync::atomic::{AtomicU64, Ordering};

use epochgate_core::jwt::{
    ecdsa_raw_to_der, Algorithm, PureRustVerifier, SignatureVerifier, VerificationKey,
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

/// Reads `VerifySignatureResult.result` (field 1, a varint bool): only an explicit
/// `true` verifies.
pub fn decode_result(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        let key = bytes[i];
        i += 1;
        match (key >> 3, key & 7) {
            (1, 0) => return bytes.get(i).is_some_and(|b| *b == 1),
            (_, 0) => {
                while bytes.get(i).is_some_and(|b| b & 0x80 != 0) {
                    i += 1;
                }
                i += 1;
            }
            (_, 2) => {
                let mut len = 0usize;
                let mut shift = 0;
                while let Some(b) = bytes.get(i) {
                    i += 1;
                    len |= usize::from(b & 0x7f) << shift;
                    shift += 7;
                    if b & 0x80 == 0 || shift > 28 {
                        break;
                    }
                }
                i = i.saturating_add(len);
            }
            _ => return false,
        }
    }
    false
}

impl SignatureVerifier for NativeVerifier {
    fn verify(&self, key: &VerificationKey, input: &[u8], signature: &[u8]) -> bool {
        let native = match (self.call, &key.spki_der) {
            (Some(call), Some(der)) => {
                let plan = match key.alg {
                    Algorithm::RS256 => Some(("sha256", signature.to_vec())),
                    Algorithm::RS384 => Some(("sha384", signature.to_vec())),
                    Algorithm::RS512 => Some(("sha512", signature.to_vec())),
                    Algorithm::ES256 => ecdsa_raw_to_der(signature, 32).map(|s| ("sha256", s)),
                    Algorithm::ES384 => ecdsa_raw_to_der(signature, 48).map(|s| ("sha384", s)),
                    _ => None,
                };
                match plan {
                    // A malformed ECDSA signature never verifies.
                    None if matches!(key.alg, Algorithm::ES256 | Algorithm::ES384) => return false,
                    None => None,
                    Some((hash, sig)) => call(&encode_arguments(hash, der, &sig, input)).map(|r| {
                        NATIVE_CALLS.fetch_add(1, Ordering::Relaxed);
                        decode_result(&r)
                    }),
                }
            }
            _ => None,
        };
        native.unwrap_or_else(|| PureRustVerifier.verify(key, input, signature))
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
        assert!(decode_result(&[0x08, 1]));
        assert!(!decode_result(&[0x08, 0]));
        assert!(!decode_result(&[]));
        assert!(!decode_result(&[0x12, 3, b'b', b'a', b'd']));
        assert!(decode_result(&[0x12, 1, b'x', 0x08, 1]));
        assert!(!decode_result(&[0x0d, 0, 0, 0, 0]));
    }

    #[test]
    fn ecdsa_signatures_become_minimal_der() {
        let mut raw = [0u8; 64];
        raw[0] = 0x80; // r: top bit set → a leading zero
        raw[31] = 1;
        raw[63] = 7; // s: 7 → one byte
        let der = ecdsa_raw_to_der(&raw, 32).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        assert_eq!(&der[der.len() - 3..], &[0x02, 1, 7]);
        assert_eq!(usize::from(der[1]), der.len() - 2);
        assert!(ecdsa_raw_to_der(&raw[..63], 32).is_none());
        let zeros = ecdsa_raw_to_der(&[0u8; 96], 48).unwrap();
        assert_eq!(zeros, vec![0x30, 6, 0x02, 1, 0, 0x02, 1, 0]);
    }
}
