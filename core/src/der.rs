//! Just enough DER to read and write the public keys a JWT verifier meets: X.509
//! SubjectPublicKeyInfo (RFC 5280 §4.1.2.7) for RSA (RFC 3279 §2.3.1), EC P-256/P-384
//! (RFC 5480) and Ed25519 (RFC 8410), PKCS#1 `RSAPublicKey` (RFC 8017 §A.1.1), and the
//! DER form of an ECDSA signature.
//!
//! Hosts verify natively from the SubjectPublicKeyInfo (Envoy's `verify_signature` and
//! WebCrypto's `importKey("spki", …)` both take it), so `core` needs no big-integer or
//! elliptic-curve code to load a key: it reads the structure, checks what can be checked
//! on bytes (lengths, RSA modulus size and exponent), and writes the key back in one
//! canonical encoding — the host sees exactly what was checked.

/// DER tags used here.
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const NULL: u8 = 0x05;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;

/// Algorithm and curve identifiers (the OIDs' DER content bytes).
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// The NIST curves a key can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
}

impl Curve {
    /// The length of a coordinate (and of a scalar) in bytes.
    pub fn field_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
        }
    }

    fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
        }
    }
}

/// A public key read from DER, its numbers as big-endian bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyInfo<'a> {
    /// Modulus and public exponent, without leading zero bytes.
    Rsa { n: &'a [u8], e: &'a [u8] },
    /// The uncompressed point `04 || x || y`.
    Ec { curve: Curve, point: &'a [u8] },
    /// The 32-byte public key.
    Ed25519(&'a [u8]),
}

/// One TLV: `(tag, contents, rest)`. Only DER's definite, minimal lengths are read.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n || rest[0] == 0 {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        if len < 0x80 {
            return None;
        }
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The contents of a TLV with tag `want`, and what follows it.
fn expect(input: &[u8], want: u8) -> Option<(&[u8], &[u8])> {
    let (tag, contents, rest) = tlv(input)?;
    (tag == want).then_some((contents, rest))
}

/// The contents of exactly one TLV with tag `want`, nothing after it.
fn only(input: &[u8], want: u8) -> Option<&[u8]> {
    let (contents, rest) = expect(input, want)?;
    rest.is_empty().then_some(contents)
}

/// A positive INTEGER's magnitude, without its sign byte; `None` for a negative or
/// non-minimal encoding.
fn positive_integer(contents: &[u8]) -> Option<&[u8]> {
    match contents {
        [] => None,
        [first, ..] if first & 0x80 != 0 => None,
        [0, next, ..] if next & 0x80 == 0 => None,
        [0, rest @ ..] if !rest.is_empty() => Some(rest),
        other => Some(other),
    }
}

/// A PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub fn parse_rsa_public_key(der: &[u8]) -> Option<PublicKeyInfo<'_>> {
    let seq = only(der, SEQUENCE)?;
    let (n, rest) = expect(seq, INTEGER)?;
    let e = only(rest, INTEGER)?;
    Some(PublicKeyInfo::Rsa {
        n: positive_integer(n)?,
        e: positive_integer(e)?,
    })
}

/// A SubjectPublicKeyInfo for RSA, P-256, P-384 or Ed25519; `None` for anything else
/// (other algorithms or curves, compressed points, trailing bytes).
pub fn parse_spki(der: &[u8]) -> Option<PublicKeyInfo<'_>> {
    let spki = only(der, SEQUENCE)?;
    let (alg_id, rest) = expect(spki, SEQUENCE)?;
    let key = only(rest, BIT_STRING)?;
    // No unused bits: every key here is a whole number of bytes.
    let key = key.strip_prefix(&[0])?;
    let (alg, params) = expect(alg_id, OID)?;
    match alg {
        OID_RSA_ENCRYPTION => {
            // RFC 3279: parameters NULL; some encoders omit them.
            if !(params.is_empty() || params == [NULL, 0]) {
                return None;
            }
            parse_rsa_public_key(key)
        }
        OID_EC_PUBLIC_KEY => {
            let curve = match only(params, OID)? {
                OID_P256 => Curve::P256,
                OID_P384 => Curve::P384,
                _ => return None,
            };
            (key.len() == 1 + 2 * curve.field_len() && key[0] == 4)
                .then_some(PublicKeyInfo::Ec { curve, point: key })
        }
        // RFC 8410: parameters absent.
        OID_ED25519 if params.is_empty() && key.len() == 32 => Some(PublicKeyInfo::Ed25519(key)),
        _ => None,
    }
}

/// Appends one TLV.
fn put(out: &mut Vec<u8>, tag: u8, contents: &[u8]) {
    out.push(tag);
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(contents);
}

fn tlv_vec(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(contents.len() + 4);
    put(&mut out, tag, contents);
    out
}

/// A non-negative big-endian number as a minimal DER INTEGER.
fn put_unsigned(out: &mut Vec<u8>, magnitude: &[u8]) {
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let digits = &magnitude[start..];
    let mut contents = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_none_or(|b| b & 0x80 != 0) {
        contents.push(0);
    }
    contents.extend_from_slice(digits);
    put(out, INTEGER, &contents);
}

fn spki(alg_id: &[u8], key: &[u8]) -> Vec<u8> {
    let mut bits = Vec::with_capacity(key.len() + 1);
    bits.push(0);
    bits.extend_from_slice(key);
    let mut body = tlv_vec(SEQUENCE, alg_id);
    put(&mut body, BIT_STRING, &bits);
    tlv_vec(SEQUENCE, &body)
}

/// The SubjectPublicKeyInfo of a key, in one canonical DER encoding.
pub fn encode_spki(key: &PublicKeyInfo<'_>) -> Vec<u8> {
    match key {
        PublicKeyInfo::Rsa { n, e } => {
            let mut numbers = Vec::with_capacity(n.len() + e.len() + 8);
            put_unsigned(&mut numbers, n);
            put_unsigned(&mut numbers, e);
            let mut alg_id = tlv_vec(OID, OID_RSA_ENCRYPTION);
            alg_id.extend_from_slice(&[NULL, 0]);
            spki(&alg_id, &tlv_vec(SEQUENCE, &numbers))
        }
        PublicKeyInfo::Ec { curve, point } => {
            let mut alg_id = tlv_vec(OID, OID_EC_PUBLIC_KEY);
            put(&mut alg_id, OID, curve.oid());
            spki(&alg_id, point)
        }
        PublicKeyInfo::Ed25519(raw) => spki(&tlv_vec(OID, OID_ED25519), raw),
    }
}

/// Re-encodes a JWS ECDSA signature (raw `r || s`, RFC 7518 §3.4) as DER
/// `SEQUENCE { INTEGER r, INTEGER s }` — minimal integers, a leading zero when the top
/// bit is set — for verifiers that take DER (BoringSSL). `None` unless `raw` is exactly
/// `2 * scalar_len` bytes.
pub fn ecdsa_raw_to_der(raw: &[u8], scalar_len: usize) -> Option<Vec<u8>> {
    if raw.len() != 2 * scalar_len || scalar_len == 0 || scalar_len > 66 {
        return None;
    }
    let (r, s) = raw.split_at(scalar_len);
    let mut body = Vec::with_capacity(raw.len() + 6);
    put_unsigned(&mut body, r);
    put_unsigned(&mut body, s);
    Some(tlv_vec(SEQUENCE, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsa_numbers() -> (Vec<u8>, Vec<u8>) {
        let mut n = vec![0xc5u8; 256];
        n[255] |= 1;
        (n, vec![1, 0, 1])
    }

    #[test]
    fn spki_round_trips_for_every_key_kind() {
        let (n, e) = rsa_numbers();
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        let mut point384 = vec![4u8];
        point384.extend([9u8; 96]);
        for key in [
            PublicKeyInfo::Rsa { n: &n, e: &e },
            PublicKeyInfo::Ec {
                curve: Curve::P256,
                point: &point,
            },
            PublicKeyInfo::Ec {
                curve: Curve::P384,
                point: &point384,
            },
            PublicKeyInfo::Ed25519(&[3u8; 32]),
        ] {
            let der = encode_spki(&key);
            assert_eq!(parse_spki(&der), Some(key.clone()), "{key:?}");
        }
    }

    #[test]
    fn rsa_spki_is_the_standard_layout() {
        let (n, e) = rsa_numbers();
        let der = encode_spki(&PublicKeyInfo::Rsa { n: &n, e: &e });
        // SEQUENCE (long length) { SEQUENCE { OID rsaEncryption, NULL }, BIT STRING … }
        assert_eq!(&der[..4], &[0x30, 0x82, 0x01, 0x22]);
        assert_eq!(
            &der[4..19],
            &[
                0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
                0x00
            ]
        );
        assert_eq!(der.len(), 294, "a 2048-bit key's SPKI is 294 bytes");
        // The modulus's top bit is set: a zero byte keeps the INTEGER positive.
        assert_eq!(&der[24..28], &[0x30, 0x82, 0x01, 0x0a]);
        assert_eq!(&der[28..33], &[0x02, 0x82, 0x01, 0x01, 0x00]);
    }

    #[test]
    fn malformed_der_is_refused() {
        let (n, e) = rsa_numbers();
        let good = encode_spki(&PublicKeyInfo::Rsa { n: &n, e: &e });
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(parse_spki(&trailing), None, "trailing bytes");
        assert_eq!(parse_spki(&good[..good.len() - 1]), None, "truncated");
        assert_eq!(parse_spki(&[]), None);
        // A long-form length for a short value is not DER.
        assert_eq!(tlv(&[0x04, 0x81, 0x01, 0xff]), None);
        assert_eq!(tlv(&[0x04, 0x01, 0xff]), Some((0x04, &[0xff][..], &[][..])));
        // Negative and padded integers.
        assert_eq!(positive_integer(&[0x80]), None);
        assert_eq!(positive_integer(&[0x00, 0x01]), None);
        assert_eq!(positive_integer(&[0x00, 0x80]), Some(&[0x80][..]));
        assert_eq!(positive_integer(&[0x00]), Some(&[0x00][..]));
        // A compressed point, an unknown curve.
        let mut compressed = vec![2u8];
        compressed.extend([7u8; 32]);
        let mut alg_id = tlv_vec(OID, OID_EC_PUBLIC_KEY);
        put(&mut alg_id, OID, OID_P256);
        assert_eq!(parse_spki(&spki(&alg_id, &compressed)), None);
        let mut other_curve = tlv_vec(OID, OID_EC_PUBLIC_KEY);
        put(&mut other_curve, OID, &[0x2b, 0x81, 0x04, 0x00, 0x23]);
        let mut point = vec![4u8];
        point.extend([7u8; 64]);
        assert_eq!(parse_spki(&spki(&other_curve, &point)), None);
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
        // P-521-sized signatures need a long-form length.
        let big = ecdsa_raw_to_der(&[0xffu8; 132], 66).unwrap();
        assert_eq!(&big[..3], &[0x30, 0x81, 0x8a]);
    }
}
