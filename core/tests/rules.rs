//! One test per rule of DESIGN.md and per kind of bad input: each gets its deny reason,
//! nothing panics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_core::config::ConfigError;
use epochgate_core::state::{RevocationState, Target};
use epochgate_core::sync::SyncStatus;
use epochgate_core::{Config, Decision, DenyReason, Engine, RequestInfo};
use serde_json::{json, Value};

const SECRET: &str = "rules-test-secret-0123456789abcdef";
const NOW_MS: u64 = 1_800_000_000_000;
const NOW_S: i64 = 1_800_000_000;

fn config(extra: Value) -> Config {
    let mut c = json!({
        "keys": [{"kid": "k1", "alg": "HS256", "secret": SECRET}],
        "issuer": "https://idp.test",
        "audiences": ["portal"],
        "default_tenant": "default",
        "token_sources": [
            {"header": "authorization", "prefix": "Bearer "},
            {"cookie": "session", "cookie_path": "/app", "cookie_domain": "portal.example.com"}
        ],
        "login_url": "https://portal.example.com/login",
        "routes": [{"prefix": "/app", "web": true}],
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    Config::from_json(c.to_string().as_bytes()).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn sign(header: &Value, claims: &Value, secret: &str) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), secret.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn claims() -> Value {
    json!({"iss": "https://idp.test", "aud": "portal", "sub": "42", "tid": "acme", "sid": "s1",
           "iat": NOW_S - 600, "exp": NOW_S + 3000})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            base.as_object_mut().unwrap().remove(k);
        } else {
            base[k] = v.clone();
        }
    }
    base
}

fn token(claims: &Value) -> String {
    sign(
        &json!({"alg": "HS256", "kid": "k1", "typ": "JWT"}),
        claims,
        SECRET,
    )
}

fn fresh() -> SyncStatus {
    SyncStatus {
        stream: "s".into(),
        version: 1,
        synced_at_ms: NOW_MS - 1000,
        horizon_s: 86_400,
    }
}

fn decide_headers(
    engine: &Engine,
    headers: Vec<(&str, Vec<u8>)>,
    state: &RevocationState,
) -> Decision {
    let headers: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .map(|(n, v)| (n.to_string(), v))
        .collect();
    engine.decide(
        RequestInfo {
            headers: &headers,
            path: "/api/orders",
        },
        state,
        Some(&fresh()),
        NOW_MS,
    )
}

fn decide(engine: &Engine, token: &str, state: &RevocationState) -> Decision {
    decide_headers(
        engine,
        vec![("authorization", format!("Bearer {token}").into_bytes())],
        state,
    )
}

fn reason(d: &Decision) -> Option<DenyReason> {
    match d {
        Decision::Deny { reason, .. } => Some(*reason),
        Decision::Allow { .. } => None,
    }
}

fn engine() -> Engine {
    Engine::new(config(json!({})))
}

#[track_caller]
fn assert_denied(t: &str, want: DenyReason) {
    let d = decide(&engine(), t, &RevocationState::new());
    assert_eq!(reason(&d), Some(want), "{d:?}");
}

#[test]
fn valid_token_passes_with_identity() {
    let d = decide(&engine(), &token(&claims()), &RevocationState::new());
    let Decision::Allow {
        identity: Some(id),
        stale: false,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(
        (id.user.as_str(), id.tenant.as_str(), id.session.as_deref()),
        ("42", "acme", Some("s1"))
    );
    assert_eq!(id.session_start, NOW_S - 600);
}

#[test]
fn alg_none_is_refused_in_any_case() {
    for alg in ["none", "None", "NONE"] {
        let input = format!(
            "{}.{}",
            b64(json!({"alg": alg}).to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        assert_denied(&format!("{input}."), DenyReason::InvalidToken);
        assert_denied(
            &format!("{input}.{}", b64(b"sig")),
            DenyReason::InvalidToken,
        );
    }
}

#[test]
fn token_alg_must_match_the_keys_pinned_alg() {
    // HS384 header for an HS256 key, signed correctly with HMAC-SHA384 over the secret.
    let header = json!({"alg": "HS384", "kid": "k1"});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    let sig = hmac_sha512::sha384::HMAC::mac(input.as_bytes(), SECRET.as_bytes());
    assert_denied(&format!("{input}.{}", b64(&sig)), DenyReason::InvalidToken);
}

#[test]
fn tampered_payload_is_refused() {
    let good = token(&claims());
    let parts: Vec<&str> = good.split('.').collect();
    let evil = b64(with(claims(), json!({"sub": "1"})).to_string().as_bytes());
    assert_denied(
        &format!("{}.{evil}.{}", parts[0], parts[2]),
        DenyReason::InvalidToken,
    );
}

#[test]
fn wrong_secret_is_refused() {
    let t = sign(
        &json!({"alg": "HS256", "kid": "k1"}),
        &claims(),
        "another-secret-0123456789abcdefgh",
    );
    assert_denied(&t, DenyReason::InvalidToken);
}

#[test]
fn unknown_kid_is_invalid_with_a_static_key_set() {
    let t = sign(&json!({"alg": "HS256", "kid": "nope"}), &claims(), SECRET);
    assert_denied(&t, DenyReason::InvalidToken);
}

#[test]
fn token_without_kid_tries_keys_of_its_alg() {
    let t = sign(&json!({"alg": "HS256"}), &claims(), SECRET);
    assert_eq!(
        reason(&decide(&engine(), &t, &RevocationState::new())),
        None
    );
}

#[test]
fn expired_and_not_yet_valid_with_skew() {
    assert_denied(
        &token(&with(claims(), json!({"exp": NOW_S - 61}))),
        DenyReason::TokenExpired,
    );
    assert_eq!(
        reason(&decide(
            &engine(),
            &token(&with(claims(), json!({"exp": NOW_S - 59}))),
            &RevocationState::new()
        )),
        None
    );
    assert_denied(
        &token(&with(claims(), json!({"nbf": NOW_S + 61}))),
        DenyReason::TokenNotYetValid,
    );
    assert_eq!(
        reason(&decide(
            &engine(),
            &token(&with(claims(), json!({"nbf": NOW_S + 59}))),
            &RevocationState::new()
        )),
        None
    );
}

#[test]
fn issued_in_the_future_is_refused_so_it_cannot_outlive_a_logout() {
    assert_denied(
        &token(&with(claims(), json!({"iat": NOW_S + 3600}))),
        DenyReason::TokenNotYetValid,
    );
    assert_denied(
        &token(&with(claims(), json!({"auth_time": NOW_S + 3600}))),
        DenyReason::TokenNotYetValid,
    );
}

#[test]
fn missing_or_malformed_claims_are_invalid() {
    for extra in [
        json!({"sub": null}),
        json!({"sub": ""}),
        json!({"sub": 42}),
        json!({"sub": "a\u{0007}b"}),
        json!({"iat": null}),
        json!({"exp": null}),
        json!({"exp": "tomorrow"}),
        json!({"iat": "yesterday"}),
        json!({"sid": 7}),
        json!({"tid": ""}),
        json!({"iss": "https://evil.test"}),
        json!({"iss": null}),
        json!({"aud": "other"}),
        json!({"aud": ["other", "x"]}),
        json!({"aud": null}),
    ] {
        let d = decide(
            &engine(),
            &token(&with(claims(), extra.clone())),
            &RevocationState::new(),
        );
        assert_eq!(reason(&d), Some(DenyReason::InvalidToken), "{extra}: {d:?}");
    }
}

#[test]
fn missing_iat_with_auth_time_uses_auth_time() {
    let t = token(&with(
        claims(),
        json!({"iat": null, "auth_time": NOW_S - 10}),
    ));
    let Decision::Allow {
        identity: Some(id), ..
    } = decide(&engine(), &t, &RevocationState::new())
    else {
        panic!()
    };
    assert_eq!(id.session_start, NOW_S - 10);
}

#[test]
fn missing_tenant_without_default_is_invalid() {
    let engine = Engine::new(config(json!({"default_tenant": null})));
    let d = decide(
        &engine,
        &token(&with(claims(), json!({"tid": null}))),
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::InvalidToken));
}

#[test]
fn malformed_tokens_are_invalid() {
    let good = token(&claims());
    let p: Vec<&str> = good.split('.').collect();
    for bad in [
        "".to_string(),
        "abc".to_string(),
        format!("{}.{}", p[0], p[1]),
        format!("{good}.x"),
        format!("{}.{}.{}=", p[0], p[1], p[2]),
        format!("{}.{}+.{}", p[0], p[1], p[2]),
        format!("{}.{}.{}", p[0], b64(b"not json"), p[2]),
        format!("{}.{}.{}", p[0], b64(b"[1,2]"), p[2]),
        format!("{}.{}.{}", b64(b"{\"alg\":5}"), p[1], p[2]),
        format!("{}.{}.{}", b64(b"\xff\xfe"), p[1], p[2]),
        format!(
            "{}.{}.{}",
            b64(json!({"alg":"HS256","kid":"k1","crit":["exp"]})
                .to_string()
                .as_bytes()),
            p[1],
            p[2]
        ),
        format!(
            "{}.{}.{}",
            b64(json!({"alg":"HS256","kid":7}).to_string().as_bytes()),
            p[1],
            p[2]
        ),
    ] {
        let d = decide(&engine(), &bad, &RevocationState::new());
        assert_eq!(reason(&d), Some(DenyReason::InvalidToken), "{bad}: {d:?}");
    }
}

#[test]
fn token_over_8_kib_is_refused_before_parsing() {
    let big = token(&with(claims(), json!({"pad": "a".repeat(8192)})));
    assert!(big.len() > 8192);
    assert_denied(&big, DenyReason::InvalidToken);
    let d = decide(&engine(), &big, &RevocationState::new());
    let Decision::Deny { detail, .. } = d else {
        panic!()
    };
    assert!(detail.contains("larger than 8192"), "{detail}");
}

#[test]
fn non_utf8_header_bytes_are_invalid_not_a_panic() {
    let mut value = format!("Bearer {}", token(&claims())).into_bytes();
    value.push(0xff);
    let d = decide_headers(
        &engine(),
        vec![("authorization", value)],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::InvalidToken));
    // A non-UTF-8 byte in an unrelated header is no business of ours.
    let d = decide_headers(
        &engine(),
        vec![
            ("x-other", vec![0xc3, 0x28]),
            (
                "authorization",
                format!("Bearer {}", token(&claims())).into_bytes(),
            ),
        ],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), None);
    let d = decide_headers(
        &engine(),
        vec![("cookie", b"session=\xff\xfe".to_vec())],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::InvalidToken));
}

#[test]
fn missing_token_and_wrong_scheme() {
    let d = decide_headers(&engine(), vec![], &RevocationState::new());
    assert_eq!(reason(&d), Some(DenyReason::MissingToken));
    let d = decide_headers(
        &engine(),
        vec![("authorization", b"Basic dXNlcjpwdw==".to_vec())],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::InvalidToken));
    // The scheme is case-insensitive (RFC 7235).
    let d = decide_headers(
        &engine(),
        vec![(
            "authorization",
            format!("bearer {}", token(&claims())).into_bytes(),
        )],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), None);
}

#[test]
fn token_from_cookie_passes() {
    let t = token(&claims());
    let d = decide_headers(
        &engine(),
        vec![(
            "cookie",
            format!("theme=dark; session={t}; x=1").into_bytes(),
        )],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), None);
    // HTTP/2 splits cookies over several headers.
    let d = decide_headers(
        &engine(),
        vec![
            ("cookie", b"theme=dark".to_vec()),
            ("cookie", format!("session={t}").into_bytes()),
        ],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), None);
}

#[test]
fn two_sources_with_different_tokens_are_ambiguous() {
    let a = token(&claims());
    let b = token(&with(claims(), json!({"sub": "43"})));
    let d = decide_headers(
        &engine(),
        vec![
            ("authorization", format!("Bearer {a}").into_bytes()),
            ("cookie", format!("session={b}").into_bytes()),
        ],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::AmbiguousToken));
    // The same token in both is fine.
    let d = decide_headers(
        &engine(),
        vec![
            ("authorization", format!("Bearer {a}").into_bytes()),
            ("cookie", format!("session={a}").into_bytes()),
        ],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), None);
    // Two Authorization headers are refused, even if equal.
    let d = decide_headers(
        &engine(),
        vec![
            ("authorization", format!("Bearer {a}").into_bytes()),
            ("authorization", format!("Bearer {a}").into_bytes()),
        ],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::AmbiguousToken));
    // Envoy hands a repeated header over as one value joined with ','.
    let d = decide_headers(
        &engine(),
        vec![(
            "authorization",
            format!("Bearer {a},Bearer {a}").into_bytes(),
        )],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::AmbiguousToken));
    let d = decide_headers(
        &engine(),
        vec![("cookie", format!("session={a}; session={b}").into_bytes())],
        &RevocationState::new(),
    );
    assert_eq!(reason(&d), Some(DenyReason::AmbiguousToken));
}

fn logout(state: &mut RevocationState, target: Target, epoch_ms: u64) {
    state.set(&target, Some(epoch_ms));
}

#[test]
fn user_logout_revokes_earlier_tokens_and_not_later_logins() {
    let mut s = RevocationState::new();
    let epoch = (NOW_S as u64 - 100) * 1000 + 400;
    logout(
        &mut s,
        Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        },
        epoch,
    );
    let e = engine();
    assert_eq!(
        reason(&decide(&e, &token(&claims()), &s)),
        Some(DenyReason::SessionRevoked)
    );
    assert_eq!(
        reason(&decide(
            &e,
            &token(&with(claims(), json!({"iat": NOW_S - 100}))),
            &s
        )),
        Some(DenyReason::SessionRevoked)
    );
    assert_eq!(
        reason(&decide(
            &e,
            &token(&with(claims(), json!({"iat": NOW_S - 99}))),
            &s
        )),
        None
    );
    // refresh-minted token of the old login: new iat, old auth_time
    let refreshed = with(
        claims(),
        json!({"iat": NOW_S - 5, "auth_time": NOW_S - 600}),
    );
    assert_eq!(
        reason(&decide(&e, &token(&refreshed), &s)),
        Some(DenyReason::SessionRevoked)
    );
    assert_eq!(
        reason(&decide(
            &e,
            &token(&with(claims(), json!({"sub": "43"}))),
            &s
        )),
        None
    );
}

#[test]
fn tenant_global_and_session_revocations() {
    let e = engine();
    let mut s = RevocationState::new();
    logout(
        &mut s,
        Target::Tenant {
            tenant: "acme".into(),
        },
        NOW_MS - 1000,
    );
    assert_eq!(
        reason(&decide(&e, &token(&claims()), &s)),
        Some(DenyReason::SessionRevoked)
    );
    assert_eq!(
        reason(&decide(
            &e,
            &token(&with(claims(), json!({"tid": "globex"}))),
            &s
        )),
        None
    );

    let mut s = RevocationState::new();
    logout(&mut s, Target::Global, NOW_MS - 1000);
    assert_eq!(
        reason(&decide(
            &e,
            &token(&with(claims(), json!({"tid": "globex"}))),
            &s
        )),
        Some(DenyReason::SessionRevoked)
    );

    let mut s = RevocationState::new();
    logout(
        &mut s,
        Target::Session {
            tenant: "acme".into(),
            sid: "s1".into(),
        },
        NOW_MS - 1000,
    );
    assert_eq!(
        reason(&decide(&e, &token(&claims()), &s)),
        Some(DenyReason::SessionRevoked)
    );
    assert_eq!(
        reason(&decide(
            &e,
            &token(&with(claims(), json!({"sid": "s2"}))),
            &s
        )),
        None
    );
}

#[test]
fn stale_state_follows_on_stale() {
    let deny = engine();
    let headers = vec![(
        "authorization".to_string(),
        format!("Bearer {}", token(&claims())).into_bytes(),
    )];
    let req = RequestInfo {
        headers: &headers,
        path: "/api",
    };
    let old = SyncStatus {
        synced_at_ms: NOW_MS - 301_000,
        ..fresh()
    };
    for status in [None, Some(&old)] {
        let d = deny.decide(req, &RevocationState::new(), status, NOW_MS);
        let Decision::Deny {
            reason, response, ..
        } = d
        else {
            panic!()
        };
        assert_eq!(reason, DenyReason::StateUnavailable);
        assert_eq!(response.status, 503);
        assert!(response.headers.iter().any(|(n, _)| n == "retry-after"));
    }
    let allow = Engine::new(config(json!({"on_stale": "allow"})));
    let d = allow.decide(req, &RevocationState::new(), None, NOW_MS);
    assert!(matches!(d, Decision::Allow { stale: true, .. }), "{d:?}");
    // Stale is "what changed since the last sync is unknown", not "what is known is
    // void": every revocation held is still enforced, with either policy.
    let mut held = RevocationState::new();
    logout(
        &mut held,
        Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        },
        NOW_MS - 1_000,
    );
    for engine in [&allow, &deny] {
        for status in [None, Some(&old)] {
            let d = engine.decide(req, &held, status, NOW_MS);
            assert_eq!(reason(&d), Some(DenyReason::SessionRevoked), "{d:?}");
        }
    }
    // A bad token is still refused while stale.
    let bad = vec![("authorization".to_string(), b"Bearer x.y.z".to_vec())];
    let d = allow.decide(
        RequestInfo {
            headers: &bad,
            path: "/",
        },
        &RevocationState::new(),
        None,
        NOW_MS,
    );
    assert_eq!(reason(&d), Some(DenyReason::InvalidToken));
}

fn response_of(d: Decision) -> epochgate_core::Response {
    match d {
        Decision::Deny { response, .. } => response,
        other => panic!("{other:?}"),
    }
}

fn header<'a>(r: &'a epochgate_core::Response, name: &str) -> Option<&'a str> {
    r.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn api_deny_is_401_json_with_www_authenticate() {
    let mut s = RevocationState::new();
    logout(
        &mut s,
        Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        },
        NOW_MS,
    );
    let r = response_of(decide(&engine(), &token(&claims()), &s));
    assert_eq!(r.status, 401);
    assert_eq!(r.body, br#"{"error":"session_revoked"}"#);
    assert_eq!(header(&r, "content-type"), Some("application/json"));
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="session revoked""#)
    );
}

#[test]
fn web_deny_redirects_to_login_and_clears_the_cookie_with_its_path_and_domain() {
    let mut s = RevocationState::new();
    logout(
        &mut s,
        Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        },
        NOW_MS,
    );
    let t = token(&claims());
    let headers = vec![
        (
            "accept".to_string(),
            b"text/html,application/xhtml+xml".to_vec(),
        ),
        ("cookie".to_string(), format!("session={t}").into_bytes()),
    ];
    let e = engine();
    let r = response_of(e.decide(
        RequestInfo {
            headers: &headers,
            path: "/reports",
        },
        &s,
        Some(&fresh()),
        NOW_MS,
    ));
    assert_eq!(r.status, 302);
    assert_eq!(
        header(&r, "location"),
        Some("https://portal.example.com/login?reason=session_revoked")
    );
    let cookie = header(&r, "set-cookie").unwrap();
    assert!(cookie.starts_with("session=; Max-Age=0"), "{cookie}");
    assert!(
        cookie.contains("; Path=/app")
            && cookie.contains("; Domain=portal.example.com")
            && cookie.contains("; Secure"),
        "{cookie}"
    );
    // By path prefix too, without Accept.
    let headers = vec![("cookie".to_string(), format!("session={t}").into_bytes())];
    let r = response_of(e.decide(
        RequestInfo {
            headers: &headers,
            path: "/app/home?x=1",
        },
        &s,
        Some(&fresh()),
        NOW_MS,
    ));
    assert_eq!(r.status, 302);
    // A retryable deny never sends a browser to the login page (a token the stale
    // state holds nothing against).
    let r = response_of(e.decide(
        RequestInfo {
            headers: &headers,
            path: "/app/home",
        },
        &RevocationState::new(),
        None,
        NOW_MS,
    ));
    assert_eq!(r.status, 503);
}

#[test]
fn reserved_headers_and_upstream_identity() {
    let e = engine();
    assert!(e.is_reserved_header("x-epochgate-user"));
    assert!(e.is_reserved_header("X-Epochgate-Anything"));
    assert!(!e.is_reserved_header("x-request-id"));
    let custom = Engine::new(config(
        json!({"upstream_headers": {"user": "x-user", "tenant": "x-tenant", "session": "x-sid"}}),
    ));
    assert!(custom.is_reserved_header("x-user") && custom.is_reserved_header("X-SID"));
    let Decision::Allow {
        identity: Some(id), ..
    } = decide(&e, &token(&claims()), &RevocationState::new())
    else {
        panic!()
    };
    assert_eq!(
        e.upstream_headers(&id),
        vec![
            ("x-epochgate-user", "42"),
            ("x-epochgate-tenant", "acme"),
            ("x-epochgate-session", "s1")
        ]
    );
}

fn config_error(c: Value) -> ConfigError {
    Config::from_json(c.to_string().as_bytes()).unwrap_err()
}

#[test]
fn bad_config_names_the_field() {
    let key = json!({"kid": "k1", "alg": "HS256", "secret": SECRET});
    let cases = [
        (json!({"keys": []}), "keys"),
        (
            json!({"keys": [{"kid": "k1", "secret": SECRET}]}),
            "keys[0].alg",
        ),
        (
            json!({"keys": [{"kid": "k1", "alg": "HS257", "secret": SECRET}]}),
            "keys[0].alg",
        ),
        (
            json!({"keys": [{"kid": "k1", "alg": "none", "secret": SECRET}]}),
            "keys[0].alg",
        ),
        (
            json!({"keys": [{"kid": "k1", "alg": "HS256", "secret": "short"}]}),
            "keys[0]",
        ),
        (
            json!({"keys": [{"kid": "k1", "alg": "RS256", "secret": SECRET}]}),
            "keys[0]",
        ),
        (
            json!({"keys": [{"kid": "k1", "alg": "RS256", "public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}),
            "keys[0]",
        ),
        (json!({"keys": [key, key]}), "keys"),
        (
            json!({"keys": [key], "token_sources": [{"header": "bad header"}]}),
            "token_sources[0].header",
        ),
        (
            json!({"keys": [key], "token_sources": [{"header": "a", "cookie": "b"}]}),
            "token_sources[0]",
        ),
        (
            json!({"keys": [key], "default_tenant": ""}),
            "default_tenant",
        ),
        (
            json!({"keys": [key], "routes": [{"prefix": "app"}]}),
            "routes[0].prefix",
        ),
        (
            json!({"keys": [key], "claims": {"user": ""}}),
            "claims.user",
        ),
        (
            json!({"keys": [key], "max_staleness_s": 0}),
            "max_staleness_s",
        ),
    ];
    for (c, field) in cases {
        let e = config_error(c.clone());
        assert_eq!(e.field, field, "{c}: {e}");
        assert!(e.to_string().contains(field), "{e}");
    }
    let e = config_error(json!({"keys": [key], "unknown": 1}));
    assert!(e.to_string().contains("unknown field `unknown`"), "{e}");
    let e = Config::from_json(b"{not json").unwrap_err();
    assert!(e.to_string().contains("not a valid configuration"), "{e}");
}

#[test]
fn jwk_keys_load_and_pin_their_algorithm() {
    let k = b64(SECRET.as_bytes());
    let c = Config::from_json(
        json!({"keys": [{"jwk": {"kty": "oct", "k": k, "kid": "k1", "alg": "HS256"}}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(c.keys.keys()[0].kid.as_deref(), Some("k1"));
    // A JWK without alg takes the configured one.
    let c = Config::from_json(
        json!({"keys": [{"alg": "HS256", "jwk": {"kty": "oct", "k": k}}]})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(c.keys.keys()[0].alg.name(), "HS256");
    // Disagreeing algs are a config error.
    let e = config_error(
        json!({"keys": [{"alg": "HS512", "jwk": {"kty": "oct", "k": k, "alg": "HS256"}}]}),
    );
    assert_eq!(e.field, "keys[0].alg");
    let e = config_error(json!({"keys": [{"alg": "ES256", "jwk": {"kty": "oct", "k": k}}]}));
    assert!(e.to_string().contains("kty EC"), "{e}");
}

#[test]
fn a_session_older_than_the_horizon_is_session_expired() {
    // The horizon (max_session_lifetime_s) comes with the sync status.
    let status = SyncStatus {
        horizon_s: 3600,
        ..fresh()
    };
    let e = engine();
    let decide_at = |start: i64, path: &str, accept: &[u8]| {
        let headers = vec![
            (
                "authorization".to_string(),
                format!(
                    "Bearer {}",
                    token(&with(
                        claims(),
                        json!({"iat": NOW_S - 10, "auth_time": start})
                    ))
                )
                .into_bytes(),
            ),
            ("accept".to_string(), accept.to_vec()),
        ];
        e.decide(
            RequestInfo {
                headers: &headers,
                path,
            },
            &RevocationState::new(),
            Some(&status),
            NOW_MS,
        )
    };
    assert!(
        decide_at(NOW_S - 3600, "/api", b"*/*").is_allow(),
        "exactly the horizon"
    );
    let d = decide_at(NOW_S - 3601, "/api", b"*/*");
    assert_eq!(reason(&d), Some(DenyReason::SessionExpired));
    let r = response_of(d);
    assert_eq!(r.status, 401);
    assert_eq!(r.body, br#"{"error":"session_expired"}"#);
    assert_eq!(
        header(&r, "www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="session expired""#)
    );
    // A browser is sent to sign in again.
    let r = response_of(decide_at(NOW_S - 3601, "/app/home", b"text/html"));
    assert_eq!(r.status, 302);
    assert!(header(&r, "location")
        .unwrap()
        .ends_with("reason=session_expired"));
}

#[test]
fn a_host_failure_is_a_500_that_logs_no_one_out() {
    let e = engine();
    let r = e.deny_response(DenyReason::InternalError, epochgate_core::ResponseKind::Web);
    assert_eq!(r.status, 500);
    assert_eq!(r.body, br#"{"error":"internal_error"}"#);
    assert!(header(&r, "location").is_none() && header(&r, "set-cookie").is_none());
    let g = e.deny_response(
        DenyReason::InternalError,
        epochgate_core::ResponseKind::Grpc,
    );
    assert_eq!(g.grpc_status, Some(13));
}
