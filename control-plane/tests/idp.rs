//! The IdP receivers through `app(state).oneshot(req)`: back-channel logout tokens and
//! SETs signed with the test keys (jwt-simple, ES256 — the IdP's key `es256-a` in an
//! inline JWKS, `es256-b` playing another IdP's), each refusal with its code and
//! nothing revoked; and over a real server, key rotation from a JWKS URL.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_control_plane::config::ServerConfig;
use epochgate_control_plane::idp::config::{parse, Env};
use epochgate_control_plane::store::AuditFilter;
use epochgate_control_plane::AppState;
use jwt_simple::prelude::*;
use serde_json::{json, Value};

use crate::common::{send, test_store, Answer, TestApp, ADMIN, EDGE, LIFETIME_S};

const ISSUER: &str = "https://idp.test";
const SSF_TOKEN: &str = "ssf-push-token-0123456789abcdef";
const BCL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";

struct Vars;

impl Env for Vars {
    fn var(&self, name: &str) -> Option<String> {
        (name == "SSF_TOKEN").then(|| SSF_TOKEN.to_string())
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

/// The IdP's signing key (`es256-a`, kid `a`); `other` is another IdP's (`es256-b`).
fn key(name: &str, kid: &str) -> ES256KeyPair {
    ES256KeyPair::from_pem(&fixture(&format!("{name}.pem")))
        .unwrap()
        .with_key_id(kid)
}

fn jwk(name: &str, kid: &str) -> Value {
    let pk = ES256PublicKey::from_pem(&fixture(&format!("{name}.pub.pem"))).unwrap();
    let raw = pk.public_key().to_bytes_uncompressed();
    json!({"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
           "x": b64(&raw[1..33]), "y": b64(&raw[33..65])})
}

/// Signs exactly `claims` (no claim added) with `typ` in the header.
fn mint(key: &ES256KeyPair, typ: Option<&str>, claims: Value) -> String {
    let custom: serde_json::Map<String, Value> = claims.as_object().unwrap().clone();
    let mut c = Claims::with_custom_claims(custom, Duration::from_secs(60));
    c.issued_at = None;
    c.expires_at = None;
    c.invalid_before = None;
    let options = HeaderOptions {
        signature_type: typ.map(str::to_string),
        ..Default::default()
    };
    key.sign_with_options(c, &options).unwrap()
}

/// A token with a hand-made header and no real signature.
fn forged(header: Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes()),
        b64(signature)
    )
}

fn now() -> i64 {
    epochgate_tests::now_s()
}

fn idp_json() -> Value {
    json!({"idps": [
        {"name": "corp", "issuer": ISSUER, "client_id": "portal",
         "jwks": {"keys": [jwk("es256-a", "a")]},
         "tenant": {"fixed": "acme"},
         "events": ["backchannel-logout", "session-revoked"],
         "ssf": {"bearer_token_env": "SSF_TOKEN", "audience": "https://epochgate.test",
                 "subjects": {"opaque": "session"}}},
        {"name": "partner", "issuer": "https://partner.test", "client_id": "portal",
         "jwks": {"keys": [jwk("es256-b", "b")]},
         "tenant": {"claim": "org", "map": {"org-1": "globex"}},
         "events": ["backchannel-logout", "session-revoked", "credential-change"],
         "ssf": {"bearer_token_env": "SSF_TOKEN", "subjects": {"email": "user"}}}
    ]})
}

async fn app() -> TestApp {
    app_with(idp_json()).await
}

async fn app_with(idps: Value) -> TestApp {
    let ts = test_store().await;
    let mut config = ServerConfig::new(ADMIN, EDGE, LIFETIME_S, 60).unwrap();
    config.idps = parse(idps.to_string().as_bytes(), &Vars).unwrap();
    TestApp {
        state: AppState::new(Arc::clone(&ts.store), config),
        _store: ts,
    }
}

fn logout_claims(extra: Value) -> Value {
    let mut c = json!({"iss": ISSUER, "aud": "portal", "iat": now(), "exp": now() + 120,
        "jti": format!("j-{}", rand_jti()), "sub": "alice", "sid": "s-1",
        "events": {BCL_EVENT: {}}});
    merge(&mut c, extra);
    c
}

/// Sets `extra`'s members in `claims`; a `null` removes the claim.
fn merge(claims: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
}

fn rand_jti() -> String {
    let mut b = [0u8; 8];
    getrandom::getrandom(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn form(token: &str) -> String {
    format!("logout_token={}", urlencode(token))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn post_raw(
    state: &AppState,
    uri: &str,
    content_type: Option<&str>,
    auth: Option<&str>,
    body: Vec<u8>,
) -> Answer {
    let mut b = Request::builder().method("POST").uri(uri);
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    send(state, b.body(Body::from(body)).unwrap()).await
}

async fn logout(state: &AppState, idp: &str, token: &str) -> Answer {
    post_raw(
        state,
        &format!("/v1/idp/{idp}/backchannel-logout"),
        Some("application/x-www-form-urlencoded"),
        None,
        form(token).into_bytes(),
    )
    .await
}

async fn push(state: &AppState, idp: &str, token: &str) -> Answer {
    post_raw(
        state,
        &format!("/v1/idp/{idp}/events"),
        Some("application/secevent+jwt"),
        Some(&format!("Bearer {SSF_TOKEN}")),
        token.as_bytes().to_vec(),
    )
    .await
}

async fn version(state: &AppState) -> u64 {
    state.store().status().await.unwrap().version
}

#[tokio::test]
async fn a_logout_token_with_sid_revokes_that_session_once() {
    let t = app().await;
    let token = mint(
        &key("es256-a", "a"),
        Some("logout+jwt"),
        logout_claims(json!({})),
    );
    let r = logout(&t.state, "corp", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(
        r.json["target"],
        json!({"scope": "session", "tenant": "acme", "sid": "s-1"})
    );
    let audit = t.state.store().audit(AuditFilter::newest(1)).await.unwrap();
    assert_eq!(audit[0].actor, "idp:corp");
    assert_eq!(audit[0].action, "revoke_session");
    assert!(
        audit[0]
            .reason
            .as_deref()
            .unwrap()
            .contains("back-channel logout"),
        "{:?}",
        audit[0].reason
    );

    // The same token again: refused, nothing new committed.
    let before = version(&t.state).await;
    let r = logout(&t.state, "corp", &token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.error(), "jti_replayed");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(version(&t.state).await, before);
}

#[tokio::test]
async fn a_logout_token_with_sub_only_logs_the_user_out_and_tenants_come_from_the_config() {
    let t = app().await;
    let token = mint(
        &key("es256-a", "a"),
        None,
        logout_claims(json!({"sid": null})),
    );
    let r = logout(&t.state, "corp", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.json["target"],
        json!({"scope": "user", "tenant": "acme", "user": "alice"})
    );
    // A tenant from a mapped claim.
    let token = mint(
        &key("es256-b", "b"),
        Some("JWT"),
        logout_claims(json!({"iss": "https://partner.test", "org": "org-1"})),
    );
    let r = logout(&t.state, "partner", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["target"]["tenant"], "globex");
    let token = mint(
        &key("es256-b", "b"),
        None,
        logout_claims(json!({"iss": "https://partner.test", "org": "org-9"})),
    );
    let r = logout(&t.state, "partner", &token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "unknown_tenant");
}

#[tokio::test]
async fn hostile_logout_tokens_are_refused_with_what_failed_and_revoke_nothing() {
    let t = app().await;
    let a = key("es256-a", "a");
    let other = key("es256-b", "a");
    let typ = Some("logout+jwt");
    let claims = logout_claims(json!({}));
    let hmac = {
        // HS256 "signed" with the IdP's public key as the secret: the key confusion attack.
        let header = json!({"alg": "HS256", "kid": "a", "typ": "logout+jwt"});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = hmac_sha256::HMAC::mac(input.as_bytes(), fixture("es256-a.pub.pem").as_bytes());
        format!("{input}.{}", b64(&sig))
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong aud",
            mint(&a, typ, logout_claims(json!({"aud": "someone-else"}))),
            "invalid_aud",
        ),
        (
            "old iat",
            mint(
                &a,
                typ,
                logout_claims(json!({"iat": now() - 3600, "exp": now() + 60})),
            ),
            "invalid_iat",
        ),
        (
            "iat in the future",
            mint(&a, typ, logout_claims(json!({"iat": now() + 3600}))),
            "invalid_iat",
        ),
        (
            "no iat",
            mint(&a, typ, logout_claims(json!({"iat": null}))),
            "invalid_iat",
        ),
        (
            "expired",
            mint(&a, typ, logout_claims(json!({"exp": now() - 300}))),
            "invalid_exp",
        ),
        (
            "a nonce",
            mint(&a, typ, logout_claims(json!({"nonce": "n-1"}))),
            "nonce_present",
        ),
        (
            "alg none",
            forged(json!({"alg": "none", "typ": "logout+jwt"}), &claims, b""),
            "invalid_alg",
        ),
        ("HMAC with the public key", hmac, "invalid_alg"),
        (
            "another IdP's key, same kid",
            mint(&other, typ, claims.clone()),
            "invalid_signature",
        ),
        (
            "another IdP's issuer",
            mint(
                &a,
                typ,
                logout_claims(json!({"iss": "https://partner.test"})),
            ),
            "invalid_iss",
        ),
        (
            "unknown kid",
            mint(&key("es256-a", "zz"), typ, claims.clone()),
            "unknown_key",
        ),
        (
            "no events",
            mint(&a, typ, logout_claims(json!({"events": null}))),
            "invalid_events",
        ),
        (
            "an ID token's shape",
            mint(
                &a,
                None,
                logout_claims(json!({"events": {"urn:other": {}}})),
            ),
            "invalid_events",
        ),
        (
            "events not an object",
            mint(
                &a,
                typ,
                logout_claims(json!({"events": {BCL_EVENT: "yes"}})),
            ),
            "invalid_events",
        ),
        (
            "neither sid nor sub",
            mint(&a, typ, logout_claims(json!({"sid": null, "sub": null}))),
            "invalid_subject",
        ),
        (
            "a SET's typ",
            mint(&a, Some("secevent+jwt"), claims.clone()),
            "invalid_typ",
        ),
        (
            "an access token's typ",
            mint(&a, Some("at+jwt"), claims.clone()),
            "invalid_typ",
        ),
        (
            "no jti",
            mint(&a, typ, logout_claims(json!({"jti": null}))),
            "invalid_jti",
        ),
        (
            "a control character in sid",
            mint(&a, typ, logout_claims(json!({"sid": "s\u{7}"}))),
            "invalid_claim",
        ),
        ("not a JWT", "garbage".into(), "malformed_token"),
    ];
    let before = version(&t.state).await;
    for (what, token, code) in cases {
        let r = logout(&t.state, "corp", &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(r.error(), code, "{what}: {}", r.text);
        assert_eq!(r.headers["cache-control"], "no-store", "{what}");
    }
    let good = mint(&a, typ, claims.clone());
    for (what, ct, body, code) in [
        (
            "JSON body",
            Some("application/json"),
            format!("{{\"logout_token\":\"{good}\"}}").into_bytes(),
            "invalid_content_type",
        ),
        (
            "no content type",
            None,
            form(&good).into_bytes(),
            "invalid_content_type",
        ),
        (
            "no logout_token",
            Some("application/x-www-form-urlencoded"),
            b"token=x".to_vec(),
            "invalid_request",
        ),
        (
            "logout_token twice",
            Some("application/x-www-form-urlencoded"),
            format!("{}&{}", form(&good), form(&good)).into_bytes(),
            "invalid_request",
        ),
        (
            "oversize body",
            Some("application/x-www-form-urlencoded"),
            format!("{}&pad={}", form(&good), "x".repeat(20_000)).into_bytes(),
            "body_too_large",
        ),
    ] {
        let r = post_raw(&t.state, "/v1/idp/corp/backchannel-logout", ct, None, body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(r.error(), code, "{what}: {}", r.text);
    }
    assert_eq!(
        version(&t.state).await,
        before,
        "a refused token revoked something"
    );
    // A token of one IdP at another's receiver: the other's keys do not know it.
    let r = logout(&t.state, "partner", &good).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error(), "unknown_key");
    let r = logout(&t.state, "nobody", &good).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(version(&t.state).await, before);
    // After all that, the good token still works.
    let r = logout(&t.state, "corp", &good).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

fn set_claims(event: &str, payload: Value, extra: Value) -> Value {
    let mut c = json!({"iss": ISSUER, "aud": "https://epochgate.test", "iat": now(),
        "jti": rand_jti(), "sub_id": {"format": "opaque", "id": "s-9"},
        "events": {event: payload}});
    merge(&mut c, extra);
    c
}

/// The targets of tenant `acme`'s live entries, as JSON.
async fn acme_targets(state: &AppState) -> Vec<Value> {
    let entries = state
        .store()
        .tenant_revocations("acme".into())
        .await
        .unwrap();
    entries
        .iter()
        .map(|e| serde_json::to_value(&e.target).unwrap())
        .collect()
}

fn set_err(r: &Answer) -> &str {
    assert!(
        r.json["description"].is_string(),
        "RFC 8935 error shape: {}",
        r.text
    );
    r.json["err"].as_str().unwrap()
}

#[tokio::test]
async fn caep_session_revoked_sets_revoke_sessions_and_users() {
    let t = app().await;
    let a = key("es256-a", "a");
    let typ = Some("secevent+jwt");
    let reason =
        json!({"initiating_entity": "policy", "reason_admin": {"en": "Landspeed violation"}});
    // An opaque subject this IdP maps to sessions.
    let token = mint(
        &a,
        typ,
        set_claims(SESSION_REVOKED, reason.clone(), json!({})),
    );
    let r = push(&t.state, "corp", &token).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let audit = t.state.store().audit(AuditFilter::newest(1)).await.unwrap();
    assert_eq!(audit[0].actor, "idp:corp");
    assert_eq!(audit[0].action, "revoke_session");
    assert!(audit[0]
        .reason
        .as_deref()
        .unwrap()
        .contains("Landspeed violation"));
    // Replayed: RFC 8935's error shape.
    let r = push(&t.state, "corp", &token).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(set_err(&r), "invalid_request");
    assert!(r.json["description"].as_str().unwrap().contains("replay"));

    // A complex subject with user and session: the session.
    let complex = json!({"format": "complex",
        "user": {"format": "iss_sub", "iss": ISSUER, "sub": "alice"},
        "session": {"format": "opaque", "id": "s-10"},
        "tenant": {"format": "opaque", "id": "ignored"}});
    let token = mint(
        &a,
        typ,
        set_claims(SESSION_REVOKED, reason.clone(), json!({"sub_id": complex})),
    );
    assert_eq!(
        push(&t.state, "corp", &token).await.status,
        StatusCode::ACCEPTED
    );
    let targets = acme_targets(&t.state).await;
    assert!(
        targets.contains(&json!({"scope": "session", "tenant": "acme", "sid": "s-10"})),
        "{targets:?}"
    );
    // iss_sub alone: the user; the legacy event-level `subject` works too.
    let sub = json!({"format": "iss_sub", "iss": ISSUER, "sub": "bob"});
    let mut payload = reason.clone();
    payload["subject"] = sub;
    let token = mint(
        &a,
        typ,
        set_claims(SESSION_REVOKED, payload, json!({"sub_id": null})),
    );
    assert_eq!(
        push(&t.state, "corp", &token).await.status,
        StatusCode::ACCEPTED
    );
    let targets = acme_targets(&t.state).await;
    assert!(
        targets.contains(&json!({"scope": "user", "tenant": "acme", "user": "bob"})),
        "{targets:?}"
    );

    // credential-change is not honoured by corp: accepted, nothing revoked.
    let before = version(&t.state).await;
    let token = mint(
        &a,
        typ,
        set_claims(
            CREDENTIAL_CHANGE,
            json!({"credential_type": "password", "change_type": "update"}),
            json!({}),
        ),
    );
    assert_eq!(
        push(&t.state, "corp", &token).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(version(&t.state).await, before);
}

#[tokio::test]
async fn credential_change_logs_the_user_out_where_honoured() {
    let t = app().await;
    let b = key("es256-b", "b");
    let typ = Some("secevent+jwt");
    let claims = |change: &str| {
        set_claims(
            CREDENTIAL_CHANGE,
            json!({"credential_type": "password", "change_type": change, "reason_admin": {"en": "reset"}}),
            json!({"iss": "https://partner.test", "aud": "portal", "org": "org-1",
                   "sub_id": {"format": "email", "email": "carol@partner.test"}}),
        )
    };
    let before = version(&t.state).await;
    let r = push(&t.state, "partner", &mint(&b, typ, claims("create"))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    assert_eq!(
        version(&t.state).await,
        before,
        "a new credential ends no session"
    );
    let r = push(&t.state, "partner", &mint(&b, typ, claims("update"))).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text);
    let audit = t.state.store().audit(AuditFilter::newest(1)).await.unwrap();
    assert_eq!(audit[0].actor, "idp:partner");
    assert_eq!(audit[0].action, "logout_user");
    assert_eq!(
        serde_json::to_value(&audit[0].target).unwrap(),
        json!({"scope": "user", "tenant": "globex", "user": "carol@partner.test"})
    );
}

#[tokio::test]
async fn hostile_sets_are_refused_with_rfc_8935_errors_and_revoke_nothing() {
    let t = app().await;
    let a = key("es256-a", "a");
    let typ = Some("secevent+jwt");
    let good = set_claims(SESSION_REVOKED, json!({}), json!({}));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "wrong aud",
            mint(
                &a,
                typ,
                set_claims(SESSION_REVOKED, json!({}), json!({"aud": "portal-x"})),
            ),
            "invalid_audience",
            "aud",
        ),
        (
            "wrong iss",
            mint(
                &a,
                typ,
                set_claims(
                    SESSION_REVOKED,
                    json!({}),
                    json!({"iss": "https://evil.test"}),
                ),
            ),
            "invalid_issuer",
            "iss",
        ),
        (
            "old iat",
            mint(
                &a,
                typ,
                set_claims(SESSION_REVOKED, json!({}), json!({"iat": now() - 3600})),
            ),
            "invalid_request",
            "iat",
        ),
        (
            "no typ",
            mint(&a, None, good.clone()),
            "invalid_request",
            "typ",
        ),
        (
            "a logout token's typ",
            mint(&a, Some("logout+jwt"), good.clone()),
            "invalid_request",
            "typ",
        ),
        (
            "a sub claim",
            mint(
                &a,
                typ,
                set_claims(SESSION_REVOKED, json!({}), json!({"sub": "alice"})),
            ),
            "invalid_request",
            "sub",
        ),
        (
            "an exp claim",
            mint(
                &a,
                typ,
                set_claims(SESSION_REVOKED, json!({}), json!({"exp": now() + 60})),
            ),
            "invalid_request",
            "exp",
        ),
        (
            "two events",
            mint(
                &a,
                typ,
                set_claims(
                    SESSION_REVOKED,
                    json!({}),
                    json!({"events": {SESSION_REVOKED: {}, CREDENTIAL_CHANGE: {}}}),
                ),
            ),
            "invalid_request",
            "one",
        ),
        (
            "an unmapped e-mail subject",
            mint(
                &a,
                typ,
                set_claims(
                    SESSION_REVOKED,
                    json!({}),
                    json!({"sub_id": {"format": "email", "email": "a@b.test"}}),
                ),
            ),
            "invalid_request",
            "e-mail",
        ),
        (
            "iss_sub of a stranger",
            mint(
                &a,
                typ,
                set_claims(
                    SESSION_REVOKED,
                    json!({}),
                    json!({"sub_id": {"format": "iss_sub", "iss": "https://x.test", "sub": "a"}}),
                ),
            ),
            "invalid_request",
            "iss",
        ),
        (
            "no subject",
            mint(
                &a,
                typ,
                set_claims(SESSION_REVOKED, json!({}), json!({"sub_id": null})),
            ),
            "invalid_request",
            "sub_id",
        ),
        (
            "another IdP's key",
            mint(&key("es256-b", "a"), typ, good.clone()),
            "invalid_key",
            "signature",
        ),
        (
            "alg none",
            forged(json!({"alg": "none", "typ": "secevent+jwt"}), &good, b""),
            "invalid_key",
            "unsecured",
        ),
        (
            "no jti",
            mint(
                &a,
                typ,
                set_claims(SESSION_REVOKED, json!({}), json!({"jti": null})),
            ),
            "invalid_request",
            "jti",
        ),
    ];
    let before = version(&t.state).await;
    for (what, token, err, needle) in cases {
        let r = push(&t.state, "corp", &token).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(set_err(&r), err, "{what}: {}", r.text);
        assert!(
            r.json["description"].as_str().unwrap().contains(needle),
            "{what}: {}",
            r.text
        );
    }
    let token = mint(&a, typ, good.clone());
    for (what, ct, auth, err) in [
        (
            "no bearer",
            Some("application/secevent+jwt"),
            None,
            "authentication_failed",
        ),
        (
            "wrong bearer",
            Some("application/secevent+jwt"),
            Some("Bearer wrong-token-0123456789".to_string()),
            "authentication_failed",
        ),
        (
            "the admin token",
            Some("application/secevent+jwt"),
            Some(format!("Bearer {ADMIN}")),
            "authentication_failed",
        ),
        (
            "wrong content type",
            Some("application/jwt"),
            Some(format!("Bearer {SSF_TOKEN}")),
            "invalid_request",
        ),
    ] {
        let r = post_raw(
            &t.state,
            "/v1/idp/corp/events",
            ct,
            auth.as_deref(),
            token.clone().into_bytes(),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}: {}", r.text);
        assert_eq!(set_err(&r), err, "{what}: {}", r.text);
    }
    let r = post_raw(
        &t.state,
        "/v1/idp/corp/events",
        Some("application/secevent+jwt"),
        Some(&format!("Bearer {SSF_TOKEN}")),
        vec![b'x'; 20_000],
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.json["description"].as_str().unwrap().contains("larger"),
        "{}",
        r.text
    );
    assert_eq!(
        version(&t.state).await,
        before,
        "a refused SET revoked something"
    );
    assert_eq!(
        push(&t.state, "corp", &token).await.status,
        StatusCode::ACCEPTED
    );
}

#[tokio::test]
async fn receivers_are_only_where_configured() {
    let t = app_with(
        json!({"idps": [{"name": "bcl-only", "issuer": ISSUER, "client_id": "portal",
        "jwks": {"keys": [jwk("es256-a", "a")]}, "tenant": {"fixed": "acme"},
        "events": ["session-revoked"]}]}),
    )
    .await;
    let token = mint(&key("es256-a", "a"), None, logout_claims(json!({})));
    let r = logout(&t.state, "bcl-only", &token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = push(&t.state, "bcl-only", &token).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    let r = send(
        &t.state,
        crate::common::request("GET", "/metrics", None, None),
    )
    .await;
    assert!(r.text.contains(r#"epochgate_idp_events_total{idp="bcl-only",receiver="backchannel_logout",outcome="accepted"} 0"#), "{}", r.text);
}

/// A JWKS served over HTTP that the test can change (the IdP rotating its keys).
fn jwks_server(doc: Value) -> (u16, Arc<Mutex<String>>) {
    let body = Arc::new(Mutex::new(doc.to_string()));
    let upstream = epochgate_tests::Upstream::start_with(epochgate_tests::Reply::Document {
        content_type: "application/json",
        body: Arc::clone(&body),
    });
    (upstream.port, body)
}

#[tokio::test]
async fn rotated_keys_are_fetched_once_per_unknown_kid_and_at_most_every_min_refresh() {
    let (jwks_port, doc) = jwks_server(json!({"keys": [jwk("es256-a", "a")]}));
    // The discovery document points at the JWKS.
    let (disc_port, _disc) = jwks_server(json!({
        "issuer": ISSUER, "jwks_uri": format!("http://127.0.0.1:{jwks_port}/jwks")}));
    let t = app_with(
        json!({"idps": [{"name": "corp", "issuer": ISSUER, "client_id": "portal",
        "discovery_url": format!("http://127.0.0.1:{disc_port}/.well-known/openid-configuration"),
        "tenant": {"fixed": "acme"}, "jwks_min_refresh_s": 1}]}),
    )
    .await;
    let r = logout(
        &t.state,
        "corp",
        &mint(&key("es256-a", "a"), None, logout_claims(json!({}))),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // The IdP rotates to key b (new kid). Right after a fetch: not fetched again.
    *doc.lock().unwrap() = json!({"keys": [jwk("es256-b", "b")]}).to_string();
    let rotated = || mint(&key("es256-b", "b"), None, logout_claims(json!({})));
    let r = logout(&t.state, "corp", &rotated()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.error(), "unknown_key");
    // Once jwks_min_refresh has passed, the unknown kid makes one fetch, and passes.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = logout(&t.state, "corp", &rotated()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn an_idp_whose_keys_cannot_be_fetched_is_answered_503_not_400() {
    let port = epochgate_tests::free_port();
    let t = app_with(
        json!({"idps": [{"name": "corp", "issuer": ISSUER, "client_id": "portal",
        "jwks_uri": format!("http://127.0.0.1:{port}/jwks"), "tenant": {"fixed": "acme"}}]}),
    )
    .await;
    let r = logout(
        &t.state,
        "corp",
        &mint(&key("es256-a", "a"), None, logout_claims(json!({}))),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.error(), "keys_unavailable");
    assert_eq!(r.headers["retry-after"], "5");
    // Bad input is still judged first: no key fetch for a token that does not parse.
    let r = logout(&t.state, "corp", "garbage").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}
