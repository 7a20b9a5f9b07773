//! The rules an operator puts in front of a real portal: routes, gRPC, header hygiene,
//! impersonation, scheduled logouts, JWKS, and chaining after Envoy's `jwt_authn`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_core::decision::LOGOUT_AT_HEADER;
use epochgate_core::jwt::{parse_jwks, KeySet};
use epochgate_core::state::{RevocationState, Target};
use epochgate_core::sync::SyncStatus;
use epochgate_core::{Config, Decision, DenyReason, Engine, HeaderEdit, Inputs, RequestInfo};
use serde_json::{json, Value};

const SECRET: &str = "production-test-secret-0123456789abcdef";
const NOW_MS: u64 = 1_800_000_000_000;
const NOW_S: i64 = 1_800_000_000;

fn engine(extra: Value) -> Engine {
    let mut c = json!({
        "keys": [{"kid": "k1", "alg": "HS256", "secret": SECRET}],
        "default_tenant": "d",
        "token_sources": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "sess"}],
        "login_url": "https://portal.test/login?prompt=login",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    Engine::new(Config::from_json(c.to_string().as_bytes()).unwrap())
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn sign_with(kid: &str, claims: &Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(json!({"alg": "HS256", "kid": kid}).to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!(
        "{input}.{}",
        b64(&hmac_sha256::HMAC::mac(input.as_bytes(), secret.as_bytes()))
    )
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"sub": "42", "tid": "acme", "iat": NOW_S - 600, "exp": NOW_S + 3000});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn token(extra: Value) -> String {
    sign_with("k1", &claims(extra), SECRET)
}

fn fresh() -> SyncStatus {
    SyncStatus {
        stream: "s".into(),
        version: 1,
        synced_at_ms: NOW_MS,
        horizon_s: 86_400,
    }
}

fn run(e: &Engine, path: &str, headers: &[(&str, &[u8])], state: &RevocationState) -> Decision {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    e.decide(
        RequestInfo {
            headers: &headers,
            path,
        },
        state,
        Some(&fresh()),
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

fn edits(d: &Decision) -> Vec<HeaderEdit> {
    match d {
        Decision::Allow { request_edits, .. } => request_edits.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exempt_routes_skip_the_check_but_still_strip_spoofed_headers() {
    let e = engine(
        json!({"routes": [{"prefix": "/login", "exempt": true}, {"prefix": "/healthz", "exempt": true}]}),
    );
    let none = RevocationState::new();
    let d = run(
        &e,
        "/login?next=/app",
        &[("x-epochgate-user", b"admin")],
        &none,
    );
    assert_eq!(
        edits(&d),
        vec![HeaderEdit::Remove("x-epochgate-user".into())]
    );
    assert!(matches!(d, Decision::Allow { identity: None, .. }));
    assert!(run(
        &e,
        "/healthz",
        &[("authorization", b"Bearer garbage")],
        &none
    )
    .is_allow());
    assert_eq!(
        reason(&run(&e, "/api", &[], &none)),
        Some(DenyReason::MissingToken)
    );
}

#[test]
fn exemptions_never_apply_to_ambiguous_paths() {
    let e = engine(json!({"routes": [{"prefix": "/login", "exempt": true}]}));
    let none = RevocationState::new();
    for path in [
        "/login/../admin",
        "/login/%2e%2e/admin",
        "/login%2fadmin",
        "/login/./x",
        "/login/..",
        "/login\\..\\admin",
    ] {
        assert_eq!(
            reason(&run(&e, path, &[], &none)),
            Some(DenyReason::MissingToken),
            "{path}"
        );
    }
}

#[test]
fn require_token_per_prefix_and_longest_prefix_wins() {
    let e = engine(json!({"routes": [
        {"prefix": "/public", "require_token": false},
        {"prefix": "/public/account", "require_token": true}
    ]}));
    let none = RevocationState::new();
    let d = run(&e, "/public/news", &[], &none);
    assert!(matches!(d, Decision::Allow { identity: None, .. }), "{d:?}");
    assert_eq!(
        reason(&run(&e, "/public/account", &[], &none)),
        Some(DenyReason::MissingToken)
    );
    // A token that is present is still checked on an optional route.
    let mut revoked = RevocationState::new();
    revoked.set(
        &Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        },
        Some(NOW_MS),
    );
    assert_eq!(
        reason(&run(
            &e,
            "/public/news",
            &[("authorization", &bearer(&token(json!({}))))],
            &revoked
        )),
        Some(DenyReason::SessionRevoked)
    );
    let e = engine(
        json!({"require_token": false, "routes": [{"prefix": "/api", "require_token": true}]}),
    );
    assert!(run(&e, "/", &[], &none).is_allow());
    assert!(!run(&e, "/api/x", &[], &none).is_allow());
}

#[test]
fn web_or_api_by_route_or_accept() {
    let e = engine(
        json!({"routes": [{"prefix": "/app", "web": true}, {"prefix": "/api", "web": false}]}),
    );
    let none = RevocationState::new();
    let status = |d: Decision| match d {
        Decision::Deny { response, .. } => response.status,
        other => panic!("{other:?}"),
    };
    assert_eq!(status(run(&e, "/app/home", &[], &none)), 302);
    assert_eq!(
        status(run(&e, "/api/x", &[("accept", b"text/html")], &none)),
        401
    );
    assert_eq!(
        status(run(&e, "/other", &[("accept", b"text/html")], &none)),
        302
    );
    let Decision::Deny { response, .. } = run(&e, "/app", &[], &none) else {
        panic!()
    };
    let location = response
        .headers
        .iter()
        .find(|(n, _)| n == "location")
        .unwrap()
        .1
        .clone();
    assert_eq!(
        location,
        "https://portal.test/login?prompt=login&reason=missing_token"
    );
}

#[test]
fn grpc_requests_are_denied_the_grpc_way() {
    let e = engine(json!({}));
    let d = run(
        &e,
        "/pkg.Svc/Method",
        &[("content-type", b"application/grpc+proto")],
        &RevocationState::new(),
    );
    let Decision::Deny { response, .. } = d else {
        panic!()
    };
    assert_eq!(response.status, 200);
    assert_eq!(response.grpc_status, Some(16));
    assert!(response.body.is_empty());
    assert!(response
        .headers
        .contains(&("grpc-status".into(), "16".into())));
    assert!(response
        .headers
        .contains(&("grpc-message".into(), "missing_token".into())));
    let t = token(json!({}));
    let d = e.decide(
        RequestInfo {
            headers: &[
                ("content-type".into(), b"application/grpc".to_vec()),
                ("authorization".into(), bearer(&t)),
            ],
            path: "/x",
        },
        &RevocationState::new(),
        None,
        NOW_MS,
    );
    let Decision::Deny { response, .. } = d else {
        panic!()
    };
    assert_eq!(
        response.grpc_status,
        Some(14),
        "unavailable, not unauthenticated"
    );
}

#[test]
fn strip_token_removes_the_header_and_only_the_session_cookie() {
    let e = engine(json!({"strip_token": true}));
    let t = token(json!({}));
    let d = run(
        &e,
        "/",
        &[("authorization", &bearer(&t))],
        &RevocationState::new(),
    );
    assert!(edits(&d).contains(&HeaderEdit::Remove("authorization".into())));
    let cookie = format!("theme=dark; sess={t}; lang=en");
    let d = run(
        &e,
        "/",
        &[("cookie", cookie.as_bytes())],
        &RevocationState::new(),
    );
    assert!(
        edits(&d).contains(&HeaderEdit::Set(
            "cookie".into(),
            b"theme=dark; lang=en".to_vec()
        )),
        "{:?}",
        edits(&d)
    );
    let only = format!("sess={t}");
    let d = run(
        &e,
        "/",
        &[("cookie", only.as_bytes())],
        &RevocationState::new(),
    );
    assert!(edits(&d).contains(&HeaderEdit::Remove("cookie".into())));
    // Without strip_token the token stays.
    let d = run(
        &engine(json!({})),
        "/",
        &[("authorization", &bearer(&t))],
        &RevocationState::new(),
    );
    assert!(!edits(&d).contains(&HeaderEdit::Remove("authorization".into())));
}

#[test]
fn identity_headers_replace_spoofed_ones() {
    let e = engine(json!({}));
    let t = token(json!({"sid": "s1", "act": {"sub": "agent-7", "tid": "support"}}));
    let d = run(
        &e,
        "/",
        &[
            ("authorization", &bearer(&t)),
            ("x-epochgate-user", b"root"),
            ("x-epochgate-user", b"root2"),
        ],
        &RevocationState::new(),
    );
    let edits = edits(&d);
    assert_eq!(
        edits
            .iter()
            .filter(|e| **e == HeaderEdit::Remove("x-epochgate-user".into()))
            .count(),
        1
    );
    for (n, v) in [
        ("x-epochgate-user", "42"),
        ("x-epochgate-tenant", "acme"),
        ("x-epochgate-session", "s1"),
        ("x-epochgate-actor", "agent-7"),
    ] {
        assert!(
            edits.contains(&HeaderEdit::Set(n.into(), v.as_bytes().to_vec())),
            "{n}: {edits:?}"
        );
    }
    // Removal comes before the identity is set.
    let remove = edits
        .iter()
        .position(|e| matches!(e, HeaderEdit::Remove(_)))
        .unwrap();
    let set = edits
        .iter()
        .position(|e| matches!(e, HeaderEdit::Set(..)))
        .unwrap();
    assert!(remove < set);
}

#[test]
fn impersonation_tokens_end_with_the_actor_or_the_subject() {
    let e = engine(json!({}));
    let t = token(json!({"act": {"sub": "agent-7", "tid": "support", "act": {"sub": "lead-1"}}}));
    let mut s = RevocationState::new();
    s.set(
        &Target::User {
            tenant: "support".into(),
            user: "agent-7".into(),
        },
        Some(NOW_MS - 1000),
    );
    assert_eq!(
        reason(&run(&e, "/", &[("authorization", &bearer(&t))], &s)),
        Some(DenyReason::SessionRevoked)
    );
    // The earlier actor of the chain: in the inner act's tenant, here the token's.
    let mut s = RevocationState::new();
    s.set(
        &Target::User {
            tenant: "acme".into(),
            user: "lead-1".into(),
        },
        Some(NOW_MS - 1000),
    );
    assert_eq!(
        reason(&run(&e, "/", &[("authorization", &bearer(&t))], &s)),
        Some(DenyReason::SessionRevoked)
    );
    let mut s = RevocationState::new();
    s.set(
        &Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        },
        Some(NOW_MS - 1000),
    );
    assert_eq!(
        reason(&run(&e, "/", &[("authorization", &bearer(&t))], &s)),
        Some(DenyReason::SessionRevoked)
    );
    // The subject's own token, without act, is not affected by the actor's logout.
    let mut s = RevocationState::new();
    s.set(
        &Target::User {
            tenant: "support".into(),
            user: "agent-7".into(),
        },
        Some(NOW_MS - 1000),
    );
    assert!(run(
        &e,
        "/",
        &[("authorization", &bearer(&token(json!({}))))],
        &s
    )
    .is_allow());
    // A malformed act is refused.
    for bad in [
        json!({"act": "agent"}),
        json!({"act": {"tid": "x"}}),
        json!({"act": {"sub": ""}}),
    ] {
        assert_eq!(
            reason(&run(
                &e,
                "/",
                &[("authorization", &bearer(&token(bad.clone())))],
                &s
            )),
            Some(DenyReason::InvalidToken),
            "{bad}"
        );
    }
}

#[test]
fn scheduled_logout_is_announced_then_applies() {
    let e = engine(json!({}));
    let t = token(json!({}));
    let at = NOW_MS + 600_000;
    let mut s = RevocationState::new();
    s.set(
        &Target::ScheduledTenant {
            tenant: "acme".into(),
        },
        Some(at),
    );
    let d = run(&e, "/", &[("authorization", &bearer(&t))], &s);
    let Decision::Allow {
        response_headers, ..
    } = d
    else {
        panic!()
    };
    assert_eq!(
        response_headers,
        vec![(
            LOGOUT_AT_HEADER.to_string(),
            "2027-01-15T08:10:00Z".to_string()
        )]
    );
    let headers = vec![("authorization".to_string(), bearer(&t))];
    let later = e.decide(
        RequestInfo {
            headers: &headers,
            path: "/",
        },
        &s,
        Some(&SyncStatus {
            synced_at_ms: at,
            ..fresh()
        }),
        at,
    );
    assert_eq!(reason(&later), Some(DenyReason::SessionRevoked));
}

const RSA_N: &str = "7QQPUYmtZnZnHPskPZ8EQQlURArf5I6iVpDEnU5SlsK9Q7NJIDYtwUttPdTxNnqDOuztrLdUp7erKWGbNiJzjmnev0ul9G-vBfv0Bybs_8I4ljuQugUNMq47aREKCwKhJ3M_AUpBjcyuD5dzgYG6PTBU1our_E6CBELAizBm4IiQgqxY0eBEq5kgW4T-YE_pTa4YizztJBJdyL0uaZg8AGGiS2EiFV3VndDH7dq0StA6ILphgX3V0HPHBWqnWbzBpEhGV0nb7n6xdxDN7VkHmTAPgVVbKLwNSHSfuVfDM1gYYk7IKpoz-nMdJvFfWWfV64u7A6ecSfQUe8D3JhEUlw";

#[test]
fn jwks_documents_load_usable_keys_and_say_why_others_are_skipped() {
    let k = b64(SECRET.as_bytes());
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "h1", "alg": "HS256", "k": k},
        {"kty": "RSA", "kid": "r1", "n": RSA_N, "e": "AQAB"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "alg": "RSA-OAEP", "n": RSA_N, "e": "AQAB"},
        {"kty": "EC", "kid": "bad", "alg": "ES256", "crv": "P-256", "x": "AA", "y": "AA"}
    ]});
    let (keys, skipped) = parse_jwks(&doc, None).unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(
        skipped[0].contains("r1") && skipped[0].contains("no `alg`"),
        "{skipped:?}"
    );
    let (keys, _) = parse_jwks(&doc, Some("RS256".parse().unwrap())).unwrap();
    assert_eq!(keys.len(), 2, "a JWK without alg takes the configured one");
    assert!(parse_jwks(&json!({"nope": 1}), None).is_err());
    // Inline JWKS in the config: strict.
    let c = Config::from_json(
        json!({"jwks": {"keys": [{"kty": "oct", "kid": "h1", "alg": "HS256", "k": k}]}})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert!(c.keys.by_kid("h1").is_some());
    let err = Config::from_json(json!({"jwks": doc}).to_string().as_bytes()).unwrap_err();
    assert_eq!(err.field, "jwks");
}

#[test]
fn remote_keys_verify_and_an_unknown_kid_is_retryable_only_with_remote_jwks() {
    let remote_secret = "remote-jwks-secret-0123456789abcdefgh";
    let doc = json!({"keys": [{"kty": "oct", "kid": "r1", "alg": "HS256", "k": b64(remote_secret.as_bytes())}]});
    let remote = KeySet::new(parse_jwks(&doc, None).unwrap().0).unwrap();
    let t = sign_with("r1", &claims(json!({})), remote_secret);
    let headers = vec![("authorization".to_string(), bearer(&t))];
    let req = RequestInfo {
        headers: &headers,
        path: "/",
    };
    let state = RevocationState::new();
    let status = fresh();
    let e = engine(json!({"remote_jwks": true}));
    let with_remote = Inputs {
        remote_keys: Some(&remote),
        ..Inputs::new(&state, Some(&status), NOW_MS)
    };
    assert!(e.decide_with(req, &with_remote).is_allow());
    let without = Inputs::new(&state, Some(&status), NOW_MS);
    let d = e.decide_with(req, &without);
    assert_eq!(reason(&d), Some(DenyReason::UnknownKey));
    let Decision::Deny { response, .. } = d else {
        panic!()
    };
    assert_eq!(response.status, 503);
    assert!(response
        .headers
        .contains(&("retry-after".into(), "1".into())));
    // Static keys only: an unknown kid is just invalid.
    assert_eq!(
        reason(&engine(json!({})).decide_with(req, &without)),
        Some(DenyReason::InvalidToken)
    );
}

#[test]
fn jwt_authn_mode_takes_the_verified_payload_and_never_a_header() {
    let e = engine(json!({"mode": "jwt_authn_metadata", "keys": []}));
    let state = RevocationState::new();
    let status = fresh();
    let payload = claims(json!({"sid": "s9"}));
    let map = payload.as_object().unwrap().clone();
    // A client-sent payload header (jwt_authn's forward_payload_header) means nothing.
    let forged = b64(payload.to_string().as_bytes());
    let headers = vec![("x-jwt-payload".to_string(), forged.into_bytes())];
    let req = RequestInfo {
        headers: &headers,
        path: "/",
    };
    let without = Inputs::new(&state, Some(&status), NOW_MS);
    assert_eq!(
        reason(&e.decide_with(req, &without)),
        Some(DenyReason::MissingToken)
    );
    let with = Inputs {
        verified_claims: Some(&map),
        ..Inputs::new(&state, Some(&status), NOW_MS)
    };
    let d = e.decide_with(req, &with);
    let Decision::Allow {
        identity: Some(id), ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (id.user.as_str(), id.session.as_deref()),
        ("42", Some("s9"))
    );
    let mut revoked = RevocationState::new();
    revoked.set(
        &Target::Session {
            tenant: "acme".into(),
            sid: "s9".into(),
        },
        Some(NOW_MS),
    );
    let with = Inputs {
        verified_claims: Some(&map),
        ..Inputs::new(&revoked, Some(&status), NOW_MS)
    };
    assert_eq!(
        reason(&e.decide_with(req, &with)),
        Some(DenyReason::SessionRevoked)
    );
    // Keys are optional in this mode, required otherwise.
    assert_eq!(
        Config::from_json(br#"{"keys": []}"#).unwrap_err().field,
        "keys"
    );
}
