//! Hostile tokens (RFC 8725 and friends): each gets its deny reason, nothing panics, and
//! a valid token right after still passes with the same engine.
//!
//! The same list runs through a real Envoy in `tests/tests/e2e/hostile_tokens.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use epochgate_core::state::RevocationState;
use epochgate_core::sync::SyncStatus;
use epochgate_core::{Config, Decision, DenyReason, Engine, RequestInfo};
use serde_json::{json, Value};

const SECRET: &str = "hostile-test-secret-0123456789abcdef";
const NOW_MS: u64 = 1_800_000_000_000;
const NOW_S: i64 = 1_800_000_000;
const RSA_PUB_PEM: &str = include_str!("../../tests/fixtures/rs256-a.pub.pem");

fn engine() -> Engine {
    let c = json!({
        "keys": [
            {"kid": "k1", "alg": "HS256", "secret": SECRET},
            {"kid": "rsa", "alg": "RS256", "public_key_pem": RSA_PUB_PEM},
        ],
        "issuer": "https://idp.test",
        "audiences": ["portal"],
        "token_sources": [
            {"header": "authorization", "prefix": "Bearer "},
            {"cookie": "session", "cookie_path": "/", "cookie_domain": "portal.example.com"}
        ],
    });
    Engine::new(Config::from_json(c.to_string().as_bytes()).unwrap())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs raw header and payload JSON text (so duplicate keys survive) with HS256.
fn sign_raw(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), secret);
    format!("{input}.{}", b64(&sig))
}

fn claims() -> Value {
    json!({"iss": "https://idp.test", "aud": "portal", "sub": "42", "tid": "acme",
           "iat": NOW_S - 600, "exp": NOW_S + 3000})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    base
}

fn signed(header: Value, claims: &Value) -> String {
    sign_raw(&header.to_string(), &claims.to_string(), SECRET.as_bytes())
}

fn token(claims: &Value) -> String {
    signed(json!({"alg": "HS256", "kid": "k1", "typ": "JWT"}), claims)
}

fn decide(engine: &Engine, headers: &[(&str, Vec<u8>)]) -> Decision {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    let status = SyncStatus {
        stream: "s".into(),
        version: 1,
        synced_at_ms: NOW_MS - 1000,
        horizon_s: 86_400,
    };
    engine.decide(
        RequestInfo {
            headers: &headers,
            path: "/api/orders",
        },
        &RevocationState::new(),
        Some(&status),
        NOW_MS,
    )
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

fn reason(d: &Decision) -> Option<DenyReason> {
    match d {
        Decision::Deny { reason, .. } => Some(*reason),
        Decision::Allow { .. } => None,
    }
}

/// Asserts the deny reason of a request, then that a valid token still passes.
#[track_caller]
fn refused_with(what: &str, headers: &[(&str, Vec<u8>)], want: DenyReason) {
    let e = engine();
    let d = decide(&e, headers);
    assert_eq!(reason(&d), Some(want), "{what}: {d:?}");
    let ok = decide(&e, &[("authorization", bearer(&token(&claims())))]);
    assert!(ok.is_allow(), "a valid token after {what}: {ok:?}");
}

#[track_caller]
fn token_refused(what: &str, t: &str, want: DenyReason) {
    refused_with(what, &[("authorization", bearer(t))], want);
}

#[track_caller]
fn token_passes(what: &str, t: &str) {
    let d = decide(&engine(), &[("authorization", bearer(t))]);
    assert!(d.is_allow(), "{what}: {d:?}");
}

#[test]
fn alg_none_in_every_case_with_and_without_signature() {
    for alg in ["none", "None", "NONE", "nOnE"] {
        let h = json!({"alg": alg, "kid": "k1"}).to_string();
        let unsigned = format!(
            "{}.{}.",
            b64(h.as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        token_refused(alg, &unsigned, DenyReason::InvalidToken);
        // A signature computed with the real secret does not make `none` acceptable.
        token_refused(
            alg,
            &sign_raw(&h, &claims().to_string(), SECRET.as_bytes()),
            DenyReason::InvalidToken,
        );
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_pem_as_secret() {
    // The classic key-confusion attack: the verifier must not take the RS256 key's PEM
    // as an HMAC secret because the token says HS256.
    for header in [
        json!({"alg": "HS256", "kid": "rsa"}),
        json!({"alg": "HS256"}),
        json!({"alg": "HS256", "kid": "k1"}),
    ] {
        let t = sign_raw(
            &header.to_string(),
            &claims().to_string(),
            RSA_PUB_PEM.as_bytes(),
        );
        token_refused(&header.to_string(), &t, DenyReason::InvalidToken);
        // And the PEM without its trailing newline, as some tools strip it.
        let t = sign_raw(
            &header.to_string(),
            &claims().to_string(),
            RSA_PUB_PEM.trim_end().as_bytes(),
        );
        token_refused(&header.to_string(), &t, DenyReason::InvalidToken);
    }
}

#[test]
fn hostile_kids_are_unknown_keys_and_never_paths_or_queries() {
    for kid in [
        "../../../../etc/passwd".to_string(),
        "../k1".to_string(),
        "k1/../k1".to_string(),
        "' OR '1'='1".to_string(),
        "k1'; DROP TABLE keys; --".to_string(),
        "k1\u{0000}".to_string(),
        "k".repeat(10 * 1024),
    ] {
        let t = signed(json!({"alg": "HS256", "kid": kid}), &claims());
        token_refused(&kid[..kid.len().min(30)], &t, DenyReason::InvalidToken);
    }
}

#[test]
fn jku_x5u_and_jwk_headers_are_ignored() {
    // A correctly signed token keeps passing whatever URLs its header names (nothing is
    // fetched: core has no I/O, and the e2e test listens on the URL to prove it).
    let t = signed(
        json!({"alg": "HS256", "kid": "k1", "jku": "http://127.0.0.1:9/jwks.json",
               "x5u": "http://127.0.0.1:9/cert.pem"}),
        &claims(),
    );
    token_passes("jku/x5u on a good token", &t);

    // An attacker's own key embedded as `jwk` (and signed with it) verifies nothing.
    let attacker = "attacker-secret-0123456789abcdefghij";
    let header = json!({"alg": "HS256", "kid": "k1",
        "jwk": {"kty": "oct", "k": b64(attacker.as_bytes())},
        "jku": "http://127.0.0.1:9/jwks.json"});
    let t = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        attacker.as_bytes(),
    );
    token_refused("embedded jwk", &t, DenyReason::InvalidToken);
    let header = json!({"alg": "HS256", "kid": "attacker", "jku": "http://127.0.0.1:9/jwks.json"});
    let t = sign_raw(
        &header.to_string(),
        &claims().to_string(),
        attacker.as_bytes(),
    );
    token_refused("jku with an unknown kid", &t, DenyReason::InvalidToken);
}

#[test]
fn crit_with_unknown_names_is_refused() {
    for crit in [
        json!(["exp"]),
        json!(["x-unknown"]),
        json!([]),
        json!("b64"),
    ] {
        let t = signed(
            json!({"alg": "HS256", "kid": "k1", "crit": crit}),
            &claims(),
        );
        token_refused(&crit.to_string(), &t, DenyReason::InvalidToken);
    }
}

#[test]
fn duplicate_member_names_are_refused_in_payload_and_header() {
    let h = r#"{"alg":"HS256","kid":"k1"}"#;
    let body = claims().to_string();
    let inner = body.trim_start_matches('{').trim_end_matches('}');
    // Two `sub`s: one parser would read user 42, another user "admin".
    for payload in [
        format!(r#"{{{inner},"sub":"admin"}}"#),
        format!(r#"{{{inner},"sub":"42"}}"#),
        format!(r#"{{{inner},"exp":1}}"#),
        format!(r#"{{{inner},"act":{{"sub":"a","sub":"b"}}}}"#),
        format!(r#"{{{inner},"x":[{{"k":1,"k":2}}]}}"#),
    ] {
        let t = sign_raw(h, &payload, SECRET.as_bytes());
        token_refused(&payload, &t, DenyReason::InvalidToken);
    }
    for header in [
        r#"{"alg":"HS256","kid":"k1","alg":"none"}"#,
        r#"{"alg":"HS256","kid":"k1","kid":"k1"}"#,
    ] {
        let t = sign_raw(header, &body, SECRET.as_bytes());
        token_refused(header, &t, DenyReason::InvalidToken);
    }
    // The same members without the duplicate pass: the rule is about duplicates only.
    token_passes(
        "no duplicate",
        &sign_raw(
            h,
            &format!(r#"{{{inner},"x":[{{"k":1,"j":2}}]}}"#),
            SECRET.as_bytes(),
        ),
    );
}

#[test]
fn exp_as_string_negative_or_huge() {
    token_refused(
        "exp string",
        &token(&with(claims(), json!({"exp": "1900000000"}))),
        DenyReason::InvalidToken,
    );
    token_refused(
        "exp negative",
        &token(&with(claims(), json!({"exp": -1}))),
        DenyReason::TokenExpired,
    );
    token_refused(
        "exp i64::MIN",
        &token(&with(claims(), json!({"exp": i64::MIN}))),
        DenyReason::TokenExpired,
    );
    // A float in the future is a valid NumericDate (RFC 7519 §2).
    token_passes("exp 1e300", &token(&with(claims(), json!({"exp": 1e300}))));
    token_passes(
        "exp u64::MAX",
        &token(&with(claims(), json!({"exp": u64::MAX}))),
    );
    token_passes(
        "exp fractional",
        &token(&with(claims(), json!({"exp": (NOW_S + 100) as f64 + 0.5}))),
    );
    // A number JSON cannot hold as f64 is not a NumericDate.
    let body = claims()
        .to_string()
        .replace(&format!("\"exp\":{}", NOW_S + 3000), "\"exp\":1e400");
    let t = sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &body, SECRET.as_bytes());
    token_refused("exp 1e400", &t, DenyReason::InvalidToken);
}

#[test]
fn iat_in_the_future_is_not_yet_valid() {
    for iat in [json!(NOW_S + 3600), json!(1e300), json!(u64::MAX)] {
        token_refused(
            &iat.to_string(),
            &token(&with(claims(), json!({"iat": iat}))),
            DenyReason::TokenNotYetValid,
        );
    }
    // Within the clock skew it passes.
    token_passes(
        "iat +30 s",
        &token(&with(claims(), json!({"iat": NOW_S + 30}))),
    );
}

fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

#[test]
fn deeply_nested_json_is_parsed_without_overflow_or_refused() {
    let body = claims().to_string();
    let inner = body.trim_start_matches('{').trim_end_matches('}');
    // 100 levels is within serde_json's recursion limit: a signed token passes,
    // an unsigned one is refused on its signature.
    let payload = format!(r#"{{{inner},"x":{}}}"#, nested(100));
    let good = sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &payload, SECRET.as_bytes());
    token_passes("100-deep payload", &good);
    let bad = sign_raw(
        r#"{"alg":"HS256","kid":"k1"}"#,
        &payload,
        b"wrong-secret-0123456789abcdefghijkl",
    );
    token_refused(
        "100-deep payload, bad signature",
        &bad,
        DenyReason::InvalidToken,
    );
    let header = format!(r#"{{"alg":"HS256","kid":"k1","x":{}}}"#, nested(100));
    token_passes(
        "100-deep header",
        &sign_raw(&header, &body, SECRET.as_bytes()),
    );
    // Past the limit (and objects as well as arrays): refused, no stack overflow.
    for deep in [
        nested(200),
        nested(3000),
        format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200)),
    ] {
        let payload = format!(r#"{{{inner},"x":{deep}}}"#);
        let t = sign_raw(r#"{"alg":"HS256","kid":"k1"}"#, &payload, SECRET.as_bytes());
        // Too deep, or (3000 levels) too large: refused either way.
        token_refused("too deep", &t, DenyReason::InvalidToken);
    }
}

#[test]
fn a_64_kib_token_is_refused_unparsed() {
    let t = token(&with(claims(), json!({"pad": "x".repeat(64 * 1024)})));
    assert!(t.len() > 64 * 1024);
    token_refused("64 KiB", &t, DenyReason::InvalidToken);
    // Just under the limit still parses.
    let small = token(&with(claims(), json!({"pad": "x".repeat(5000)})));
    assert!(small.len() < 8192);
    token_passes("under 8 KiB", &small);
}

#[test]
fn bad_base64_padding_and_characters() {
    let good = token(&claims());
    let p: Vec<&str> = good.split('.').collect();
    let (h, c, s) = (p[0], p[1], p[2]);
    // Standard (not url-safe) base64 of the same bytes, with its padding.
    let std_sig = STANDARD.encode(URL_SAFE_NO_PAD.decode(s).unwrap());
    // A last character with stray low bits: decodes to the same bytes leniently.
    let last = s.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let stray = alphabet.chars().nth(idx ^ 1).unwrap();
    let stray_sig = format!("{}{stray}", &s[..s.len() - 1]);
    for (what, t) in [
        ("padded signature", format!("{h}.{c}.{s}=")),
        ("padded signature x2", format!("{h}.{c}.{s}==")),
        ("padded header", format!("{h}=.{c}.{s}")),
        ("standard alphabet", format!("{h}.{c}.{std_sig}")),
        ("plus", format!("{h}.{c}+.{s}")),
        ("slash", format!("{h}/.{c}.{s}")),
        ("star", format!("{h}.{c}.{s}*")),
        ("space inside", format!("{h}.{} {}.{s}", &c[..4], &c[4..])),
        ("percent", format!("{h}.{c}%3D.{s}")),
        ("non-ascii", format!("{h}.{c}é.{s}")),
        ("impossible length", format!("{h}.{c}A.{s}")),
        ("stray trailing bits", format!("{h}.{c}.{stray_sig}")),
    ] {
        token_refused(what, &t, DenyReason::InvalidToken);
    }
}

#[test]
fn three_segments_only() {
    let good = token(&claims());
    token_passes("three", &good);
    let p: Vec<&str> = good.split('.').collect();
    for (what, t) in [
        ("one", p[0].to_string()),
        ("two", format!("{}.{}", p[0], p[1])),
        ("two with a dot", format!("{}.{}.", p[0], p[1])),
        ("four", format!("{good}.{}", p[2])),
        ("four empty", format!("{good}.")),
        ("five (JWE shape)", format!("{good}.{}.{}", p[2], p[2])),
        ("only dots", "....".to_string()),
    ] {
        token_refused(what, &t, DenyReason::InvalidToken);
    }
}

#[test]
fn two_authorization_headers_are_ambiguous() {
    let a = bearer(&token(&claims()));
    let b = bearer(&token(&with(claims(), json!({"sub": "43"}))));
    refused_with(
        "same token twice",
        &[("authorization", a.clone()), ("authorization", a.clone())],
        DenyReason::AmbiguousToken,
    );
    refused_with(
        "two tokens",
        &[("authorization", a.clone()), ("authorization", b.clone())],
        DenyReason::AmbiguousToken,
    );
    // What Envoy makes of a repeated header: one value joined with ','.
    let mut joined = a.clone();
    joined.push(b',');
    joined.extend_from_slice(&b);
    refused_with(
        "joined",
        &[("authorization", joined)],
        DenyReason::AmbiguousToken,
    );
}

#[test]
fn header_and_cookie_with_different_tokens_are_ambiguous() {
    let a = token(&claims());
    let b = token(&with(claims(), json!({"sub": "43"})));
    refused_with(
        "header and cookie differ",
        &[
            ("authorization", bearer(&a)),
            ("cookie", format!("session={b}").into_bytes()),
        ],
        DenyReason::AmbiguousToken,
    );
    refused_with(
        "two cookies differ",
        &[("cookie", format!("session={a}; session={b}").into_bytes())],
        DenyReason::AmbiguousToken,
    );
    // The same token in both places is one token.
    let d = decide(
        &engine(),
        &[
            ("authorization", bearer(&a)),
            ("cookie", format!("session={a}").into_bytes()),
        ],
    );
    assert!(d.is_allow(), "{d:?}");
}
