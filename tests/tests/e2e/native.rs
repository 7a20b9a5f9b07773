//! Native signature verification (Envoy's `verify_signature`, BoringSSL) and the pure-Rust
//! path agree on the same tokens: valid, tampered, signed by the wrong key.

use std::time::Duration;

use epochgate_tests::{now_s, repo_root, Options, Stack};
use jwt_simple::prelude::*;
use serde_json::json;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures").join(name)).unwrap()
}

fn claims(user: &str) -> JWTClaims<serde_json::Value> {
    let mut c =
        Claims::with_custom_claims(json!({"tid": "acme"}), Duration::from_secs(3600).into())
            .with_subject(user)
            .with_issuer("https://idp.e2e.test")
            .with_audience("portal");
    c.issued_at = Some(UnixTimeStamp::from_secs(now_s() as u64 - 60));
    c
}

fn tamper(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
    let payload =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &parts[1])
            .unwrap();
    let evil = String::from_utf8(payload)
        .unwrap()
        .replace("\"sub\":\"42\"", "\"sub\":\"1\"");
    parts[1] = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, evil);
    parts.join(".")
}

#[test]
fn native_and_pure_rust_verification_agree() {
    let keys = json!([
        {"kid": "r1", "alg": "RS256", "public_key_pem": fixture("rs256-a.pub.pem")},
        {"kid": "e1", "alg": "ES256", "public_key_pem": fixture("es256-a.pub.pem")}
    ]);
    let rs_a = RS256KeyPair::from_pem(&fixture("rs256-a.pem"))
        .unwrap()
        .with_key_id("r1");
    let rs_b = RS256KeyPair::from_pem(&fixture("rs256-b.pem"))
        .unwrap()
        .with_key_id("r1");
    let es_a = ES256KeyPair::from_pem(&fixture("es256-a.pem"))
        .unwrap()
        .with_key_id("e1");
    let es_b = ES256KeyPair::from_pem(&fixture("es256-b.pem"))
        .unwrap()
        .with_key_id("e1");
    let mut cases: Vec<(String, String, u16)> = Vec::new();
    for i in 0..4 {
        // Several ECDSA signatures: some have r or s with the top bit set (DER zero pad).
        let user = "42";
        let rs = rs_a.sign(claims(user)).unwrap();
        let es = es_a.sign(claims(user)).unwrap();
        cases.push((format!("valid RS256 #{i}"), rs.clone(), 200));
        cases.push((format!("valid ES256 #{i}"), es.clone(), 200));
        cases.push((format!("tampered RS256 #{i}"), tamper(&rs), 401));
        cases.push((format!("tampered ES256 #{i}"), tamper(&es), 401));
    }
    cases.push((
        "RS256 by the wrong key".into(),
        rs_b.sign(claims("42")).unwrap(),
        401,
    ));
    cases.push((
        "ES256 by the wrong key".into(),
        es_b.sign(claims("42")).unwrap(),
        401,
    ));

    let native = Stack::start_with(Options {
        filter: json!({"keys": keys, "token_cache_size": 0}),
        ..Options::default()
    });
    let pure = Stack::start_with(Options {
        filter: json!({"keys": keys, "token_cache_size": 0, "native_verify": false}),
        ..Options::default()
    });
    assert!(
        native
            .envoy
            .log()
            .contains("RS*/ES* native (verify_signature)"),
        "the native path is on"
    );
    assert!(pure.envoy.log().contains("signatures: all in Rust"));
    for (name, token, want) in &cases {
        let (a, b) = (
            native.get_with_token("/", token).status,
            pure.get_with_token("/", token).status,
        );
        assert_eq!((a, b), (*want, *want), "{name}: native {a}, pure Rust {b}");
    }
    // The host really verified them (counted on the filter VMs' next tick).
    let counted = epochgate_tests::wait_for(
        "native verifications to be counted",
        Duration::from_secs(5),
        || {
            let n = native.stat("wasmcustom.epochgate.native_verifications")?;
            (n as usize >= cases.len()).then_some(n)
        },
    );
    println!("native verifications: {counted} of {} tokens", cases.len());
    assert_eq!(
        pure.stat("wasmcustom.epochgate.native_verifications"),
        Some(0)
    );
}
