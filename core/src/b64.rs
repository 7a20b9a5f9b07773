//! Strict base64 decoding (RFC 4648), the two forms a verifier reads: base64url without
//! padding (JWS segments, JWK members, `secret_b64url`) and standard base64 with padding
//! (PEM bodies).
//!
//! Strict means one encoding per byte string: no stray characters, no padding where
//! there is none (and the right amount where there is), no non-zero bits left over in the
//! last character. A token whose segment decodes to the same bytes under two spellings
//! would let two parsers disagree about it. (Written here rather than taken from a crate
//! to keep the edges' `.wasm` small; the tests hold it to the `base64` crate's strict
//! engines.)

/// Why a string is not base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid character at offset {0}")]
    Character(usize),
    #[error("invalid length")]
    Length,
    #[error("invalid padding")]
    Padding,
    #[error("non-zero trailing bits")]
    TrailingBits,
}

fn value(c: u8, url: bool) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' if url => 62,
        b'_' if url => 63,
        b'+' if !url => 62,
        b'/' if !url => 63,
        _ => return None,
    })
}

fn decode(input: &[u8], url: bool) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for (i, &c) in input.iter().enumerate() {
        let v = value(c, url).ok_or(DecodeError::Character(i))?;
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    match (input.len() % 4, acc) {
        (1, _) => Err(DecodeError::Length),
        (_, 0) => Ok(out),
        _ => Err(DecodeError::TrailingBits),
    }
}

/// base64url without padding (RFC 4648 §5, as JWS uses it).
pub fn decode_url_no_pad(input: impl AsRef<[u8]>) -> Result<Vec<u8>, DecodeError> {
    decode(input.as_ref(), true)
}

/// Standard base64 with its padding (RFC 4648 §4, as PEM uses it).
pub fn decode_standard(input: impl AsRef<[u8]>) -> Result<Vec<u8>, DecodeError> {
    let input = input.as_ref();
    if input.len() % 4 != 0 {
        return Err(DecodeError::Length);
    }
    let body = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="));
    let body = body.unwrap_or(input);
    if body.contains(&b'=') || body.len() % 4 == 1 {
        return Err(DecodeError::Padding);
    }
    decode(body, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine as _;

    /// Every string of up to 4 characters over an alphabet with the edge cases
    /// (both alphabets, padding, a stray character): the same verdict and bytes as the
    /// `base64` crate's strict engines.
    #[test]
    fn agrees_with_the_base64_crate_on_every_short_string() {
        let alphabet = b"AQgw_-/+=.9";
        let mut inputs: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let longer: Vec<Vec<u8>> = inputs
                .iter()
                .filter(|s| s.len() == inputs.last().map_or(0, Vec::len))
                .flat_map(|s| {
                    alphabet.iter().map(move |c| {
                        let mut t = s.clone();
                        t.push(*c);
                        t
                    })
                })
                .collect();
            inputs.extend(longer);
        }
        for input in &inputs {
            assert_eq!(
                decode_url_no_pad(input).ok(),
                URL_SAFE_NO_PAD.decode(input).ok(),
                "url {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(
                decode_standard(input).ok(),
                STANDARD.decode(input).ok(),
                "standard {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn round_trips_and_says_why() {
        for len in 0..40usize {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(
                decode_url_no_pad(URL_SAFE_NO_PAD.encode(&bytes)),
                Ok(bytes.clone())
            );
            assert_eq!(decode_standard(STANDARD.encode(&bytes)), Ok(bytes));
        }
        assert_eq!(decode_url_no_pad("ab+c"), Err(DecodeError::Character(2)));
        assert_eq!(decode_url_no_pad("abcde"), Err(DecodeError::Length));
        assert_eq!(decode_url_no_pad("QR"), Err(DecodeError::TrailingBits));
        assert_eq!(decode_url_no_pad("QQ"), Ok(b"A".to_vec()));
        assert_eq!(decode_standard("QQ=="), Ok(b"A".to_vec()));
        assert_eq!(decode_standard("QQ="), Err(DecodeError::Length));
        assert_eq!(decode_standard("Q==="), Err(DecodeError::Padding));
        assert_eq!(decode_standard("QQ=A"), Err(DecodeError::Padding));
    }
}
