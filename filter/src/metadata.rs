//! Reading the payload that Envoy's `jwt_authn` verified (`payload_in_metadata`) out of
//! the request's dynamic metadata.
//!
//! The host hands the `metadata` property over as a serialized
//! `envoy.config.core.v3.Metadata` protobuf: `filter_metadata` is a `map<string,
//! google.protobuf.Struct>`. This is a small, strict decoder of exactly that (Struct,
//! Value, ListValue) into JSON — no protobuf library in the wasm. Anything malformed is
//! `None`, which the filter treats as "no verified payload" (a deny on protected routes).

use serde_json::{Map, Number, Value};

struct Reader<'a> {
    buf: &'a [u8],
}

enum Field<'a> {
    Varint(u64),
    Fixed64([u8; 8]),
    Bytes(&'a [u8]),
    Fixed32,
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.buf.split_first()?;
            self.buf = rest;
            value |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    /// The next `(field number, value)`, `None` at the end; `Some(Err)` when malformed.
    fn next(&mut self) -> Option<Result<(u64, Field<'a>), ()>> {
        if self.buf.is_empty() {
            return None;
        }
        Some(self.field().ok_or(()))
    }

    fn field(&mut self) -> Option<(u64, Field<'a>)> {
        let key = self.varint()?;
        let value = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(self.take(8)?.try_into().ok()?),
            2 => {
                let len = usize::try_from(self.varint()?).ok()?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            _ => return None,
        };
        Some((key >> 3, value))
    }
}

fn fields(buf: &[u8]) -> impl Iterator<Item = Result<(u64, Field<'_>), ()>> {
    let mut r = Reader { buf };
    std::iter::from_fn(move || r.next())
}

/// A map entry (`key = 1`, `value = 2`).
fn map_entry(buf: &[u8]) -> Option<(String, &[u8])> {
    let (mut key, mut value) = (None, &[][..]);
    for f in fields(buf) {
        match f.ok()? {
            (1, Field::Bytes(b)) => key = Some(String::from_utf8(b.to_vec()).ok()?),
            (2, Field::Bytes(b)) => value = b,
            _ => {}
        }
    }
    Some((key?, value))
}

/// `google.protobuf.Struct` → a JSON object.
fn decode_struct(buf: &[u8], depth: usize) -> Option<Map<String, Value>> {
    let mut map = Map::new();
    for f in fields(buf) {
        if let (1, Field::Bytes(entry)) = f.ok()? {
            let (key, value) = map_entry(entry)?;
            map.insert(key, decode_value(value, depth + 1)?);
        }
    }
    Some(map)
}

/// `google.protobuf.Value` → JSON.
fn decode_value(buf: &[u8], depth: usize) -> Option<Value> {
    if depth > 32 {
        return None;
    }
    let mut value = Value::Null;
    for f in fields(buf) {
        value = match f.ok()? {
            (1, Field::Varint(_)) => Value::Null,
            (2, Field::Fixed64(b)) => {
                let n = f64::from_le_bytes(b);
                // Integral claims (`exp`, `iat`) stay integers, as the IdP wrote them.
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    Value::Number(Number::from(n as i64))
                } else {
                    Value::Number(Number::from_f64(n)?)
                }
            }
            (3, Field::Bytes(b)) => Value::String(String::from_utf8(b.to_vec()).ok()?),
            (4, Field::Varint(v)) => Value::Bool(v != 0),
            (5, Field::Bytes(b)) => Value::Object(decode_struct(b, depth + 1)?),
            (6, Field::Bytes(b)) => {
                let mut list = Vec::new();
                for item in fields(b) {
                    if let (1, Field::Bytes(v)) = item.ok()? {
                        list.push(decode_value(v, depth + 1)?);
                    }
                }
                Value::Array(list)
            }
            _ => value,
        };
    }
    Some(value)
}

/// The object at `filter_metadata[namespace][key]` of a serialized `Metadata`.
pub fn payload(metadata: &[u8], namespace: &str, key: &str) -> Option<Map<String, Value>> {
    for f in fields(metadata) {
        if let (1, Field::Bytes(entry)) = f.ok()? {
            let (ns, strukt) = map_entry(entry)?;
            if ns == namespace {
                match decode_struct(strukt, 0)?.remove(key)? {
                    Value::Object(map) => return Some(map),
                    _ => return None,
                }
            }
        }
    }
    None
}

/// Builds a serialized `Metadata` holding a `jwt_authn` payload, for the glue's tests.
#[cfg(test)]
pub mod tests_support {
    pub fn metadata_with_payload(payload: &serde_json::Value) -> Vec<u8> {
        let mut outer = serde_json::Map::new();
        outer.insert("jwt_payload".into(), payload.clone());
        super::tests::metadata("envoy.filters.http.jwt_authn", &outer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes_field(n: u64, b: &[u8], out: &mut Vec<u8>) {
        varint(n << 3 | 2, out);
        varint(b.len() as u64, out);
        out.extend_from_slice(b);
    }

    fn entry(key: &str, value: &[u8]) -> Vec<u8> {
        let mut e = Vec::new();
        bytes_field(1, key.as_bytes(), &mut e);
        bytes_field(2, value, &mut e);
        e
    }

    fn value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        match v {
            Value::Null => {
                varint(1 << 3, &mut out);
                varint(0, &mut out);
            }
            Value::Number(n) => {
                varint(2 << 3 | 1, &mut out);
                out.extend_from_slice(&n.as_f64().unwrap().to_le_bytes());
            }
            Value::String(s) => bytes_field(3, s.as_bytes(), &mut out),
            Value::Bool(b) => {
                varint(4 << 3, &mut out);
                varint(u64::from(*b), &mut out);
            }
            Value::Object(m) => bytes_field(5, &strukt(m), &mut out),
            Value::Array(a) => {
                let mut list = Vec::new();
                for item in a {
                    bytes_field(1, &value(item), &mut list);
                }
                bytes_field(6, &list, &mut out);
            }
        }
        out
    }

    fn strukt(m: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in m {
            bytes_field(1, &entry(k, &value(v)), &mut out);
        }
        out
    }

    pub(super) fn metadata(ns: &str, s: &Map<String, Value>) -> Vec<u8> {
        let mut out = Vec::new();
        bytes_field(1, &entry(ns, &strukt(s)), &mut out);
        out
    }

    #[test]
    fn decodes_a_jwt_authn_payload() {
        let payload = serde_json::json!({"sub": "auth0|42", "tid": "acme", "iat": 1_800_000_000, "exp": 1_800_003_600.5,
            "aud": ["portal", "api"], "act": {"sub": "agent"}, "email_verified": true, "nothing": null});
        let mut outer = Map::new();
        outer.insert("jwt_payload".into(), payload.clone());
        let md = metadata("envoy.filters.http.jwt_authn", &outer);
        let got = payload_of(&md);
        assert_eq!(Value::Object(got), payload);
        assert!(super::payload(&md, "other", "jwt_payload").is_none());
        assert!(super::payload(&md, "envoy.filters.http.jwt_authn", "other").is_none());
    }

    fn payload_of(md: &[u8]) -> Map<String, Value> {
        payload(md, "envoy.filters.http.jwt_authn", "jwt_payload").unwrap()
    }

    #[test]
    fn malformed_bytes_are_none_never_a_panic() {
        let mut outer = Map::new();
        outer.insert("jwt_payload".into(), serde_json::json!({"sub": "42"}));
        let md = metadata("envoy.filters.http.jwt_authn", &outer);
        for cut in 0..md.len() {
            let _ = payload(&md[..cut], "envoy.filters.http.jwt_authn", "jwt_payload");
        }
        assert!(payload(&[0xff; 16], "a", "b").is_none());
        assert!(payload(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f], "a", "b").is_none());
    }
}
