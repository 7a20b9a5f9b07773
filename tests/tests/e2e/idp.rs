//! Logouts that start at the identity provider, end to end: a real OpenID Provider
//! (npm `oidc-provider`) signs users in with the code flow and, on RP-initiated logout
//! or when it ends a user's sessions, posts back-channel logout tokens to the real
//! `epochgate` binary; a Shared Signals transmitter (keys and SETs made with PyJWT)
//! pushes CAEP events; the real Envoy with the built `.wasm`, configured with the IdP's
//! JWKS, must then deny exactly the sessions that ended. Hostile events are refused with
//! a 400 that says why, and revoke nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use epochgate_tests::idp::{pyjwt, Browser, OidcProvider, RESOURCE};
use epochgate_tests::{free_port, http, now_s, Options, Reply, Response, Stack, Upstream};
use serde_json::{json, Value};

const SSF_TOKEN: &str = "lab-ssf-push-token-0123456789";
const LAB_ISSUER: &str = "https://transmitter.lab.test";
const BCL_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";
const SESSION_REVOKED: &str = "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
const DEADLINE: Duration = Duration::from_secs(5);

fn post(port: u16, path: &str, headers: &[(&str, &[u8])], body: &[u8]) -> Response {
    http::request("127.0.0.1", port, "POST", path, headers, body).unwrap()
}

fn backchannel_logout(port: u16, idp: &str, token: &str) -> Response {
    post(
        port,
        &format!("/v1/idp/{idp}/backchannel-logout"),
        &[("content-type", b"application/x-www-form-urlencoded")],
        format!("logout_token={token}").as_bytes(),
    )
}

fn push_set(port: u16, idp: &str, token: &str, bearer: Option<&str>) -> Response {
    let auth = bearer.map(|b| format!("Bearer {b}")).unwrap_or_default();
    let mut headers: Vec<(&str, &[u8])> = vec![("content-type", b"application/secevent+jwt")];
    if bearer.is_some() {
        headers.push(("authorization", auth.as_bytes()));
    }
    post(
        port,
        &format!("/v1/idp/{idp}/events"),
        &headers,
        token.as_bytes(),
    )
}

/// The state version (`GET /v1/edges`: `/healthz` tells nothing about the state).
fn version(stack: &Stack) -> u64 {
    stack.cp.edges()["version"].as_u64().unwrap()
}

fn jti() -> String {
    format!("jti-{}-{}", epochgate_tests::now_ms(), rand_suffix())
}

fn rand_suffix() -> u32 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn logout_claims(extra: Value) -> Value {
    let mut c = json!({"iss": LAB_ISSUER, "aud": "portal", "iat": now_s(), "exp": now_s() + 120,
        "jti": jti(), "sub": "dave", "sid": "d-1", "events": {BCL_EVENT: {}}});
    merge(&mut c, extra);
    c
}

fn set_claims(extra: Value) -> Value {
    let mut c = json!({"iss": LAB_ISSUER, "aud": "https://epochgate.test", "iat": now_s(),
        "jti": jti(), "sub_id": {"format": "opaque", "id": "d-2"},
        "events": {SESSION_REVOKED: {"initiating_entity": "policy",
                                     "reason_admin": {"en": "risk engine: impossible travel"}}}});
    merge(&mut c, extra);
    c
}

fn merge(c: &mut Value, extra: Value) {
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
}

#[test]
fn logouts_from_the_idp_reach_envoy_and_hostile_events_revoke_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let keydir = dir.path().display().to_string();
    let cp_port = free_port();
    let idp = OidcProvider::start(
        dir.path(),
        free_port(),
        &format!("http://127.0.0.1:{cp_port}/v1/idp/local/backchannel-logout"),
    );
    // The transmitter: its keys made by PyJWT, its JWKS served over HTTP.
    let keys = pyjwt(&json!({"dir": keydir, "keys": ["lab", "rogue"]}));
    let mut lab_jwk = keys["jwks"]["lab"].clone();
    lab_jwk["kid"] = json!("lab-1");
    let jwks = Upstream::start_with(Reply::Document {
        content_type: "application/json",
        body: Arc::new(Mutex::new(json!({"keys": [lab_jwk]}).to_string())),
    });
    let idp_config = json!({"idps": [
        {"name": "local", "issuer": idp.issuer, "discovery_url": idp.discovery_url(),
         "client_id": "portal", "tenant": {"fixed": "acme"}},
        {"name": "lab", "issuer": LAB_ISSUER, "client_id": "portal",
         "jwks_uri": format!("http://127.0.0.1:{}/jwks", jwks.port),
         "tenant": {"fixed": "acme"}, "events": ["backchannel-logout", "session-revoked"],
         "ssf": {"bearer_token_env": "LAB_SSF_TOKEN", "audience": "https://epochgate.test",
                 "subjects": {"opaque": "session"}}}]});
    let config_path = dir.path().join("idps.json");
    std::fs::write(&config_path, idp_config.to_string()).unwrap();
    let mut stack = Stack::start_with(Options {
        filter: json!({"jwks": idp.jwks(), "jwks_default_alg": "RS256", "issuer": idp.issuer,
                       "audiences": [RESOURCE], "default_tenant": "acme"}),
        control_plane_port: Some(cp_port),
        control_plane_args: vec!["--idp-config".into(), config_path.display().to_string()],
        control_plane_env: vec![("LAB_SSF_TOKEN".into(), SSF_TOKEN.into())],
        ..Options::default()
    });

    // Two sessions of one user, from two browsers, pass through Envoy.
    let mut laptop = Browser::new(&idp);
    let mut phone = Browser::new(&idp);
    let on_laptop = laptop.sign_in("alice");
    let on_phone = phone.sign_in("alice");
    let (sid_laptop, sid_phone) = (on_laptop.access_claim("sid"), on_phone.access_claim("sid"));
    assert_ne!(sid_laptop, sid_phone, "two sign-ins, two IdP sessions");
    for t in [&on_laptop, &on_phone] {
        let r = stack.get_with_token("/api/orders", &t.access_token);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = stack.upstream.last().unwrap();
    assert_eq!(seen.header("x-epochgate-user"), Some("alice"));
    assert_eq!(seen.header("x-epochgate-session"), sid_phone.as_str());

    // The laptop signs out at the IdP (RP-initiated logout): the IdP posts a logout
    // token with that session's sid; Envoy denies the laptop, the phone still passes.
    let xsrf = laptop.start_sign_out(&on_laptop);
    let started = Instant::now();
    laptop.confirm_sign_out(&xsrf);
    let took = wait_status(&stack, &on_laptop.access_token, 401, started);
    println!(
        "IdP logout (RP-initiated, back-channel) → Envoy denies: {} ms",
        took.as_millis()
    );
    let r = stack.get_with_token("/api/orders", &on_laptop.access_token);
    assert_eq!(r.json()["error"], "session_revoked");
    let r = stack.get_with_token("/api/orders", &on_phone.access_token);
    assert_eq!(r.status, 200, "only the sid was logged out: {}", r.text());
    let audit = stack
        .cp
        .admin("GET", "/v1/audit?actor=idp:local", "")
        .json();
    let entry = &audit["entries"][0];
    assert_eq!(entry["action"], "revoke_session");
    assert_eq!(entry["target"]["sid"], sid_laptop);

    // The risk engine revokes a session over Shared Signals: a PyJWT-minted CAEP SET.
    let mut tablet = Browser::new(&idp);
    let on_tablet = tablet.sign_in("carol");
    assert_eq!(
        stack.get_with_token("/", &on_tablet.access_token).status,
        200
    );
    let sid_tablet = on_tablet.access_claim("sid");
    let set = pyjwt(&json!({"dir": keydir, "keys": ["lab"], "tokens": [
        {"key": "lab", "headers": {"kid": "lab-1", "typ": "secevent+jwt"},
         "claims": set_claims(json!({"sub_id": {"format": "opaque", "id": sid_tablet}}))}]}));
    let started = Instant::now();
    let r = push_set(
        cp_port,
        "lab",
        set["tokens"][0].as_str().unwrap(),
        Some(SSF_TOKEN),
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let took = wait_status(&stack, &on_tablet.access_token, 401, started);
    println!(
        "CAEP session-revoked SET → Envoy denies: {} ms",
        took.as_millis()
    );

    hostile_events_are_refused(&mut stack, &keydir);

    // The IdP ends every session of the user (no sid): the phone is denied too, and a
    // new sign-in (from the next second on) passes.
    let started = Instant::now();
    let r = idp.end_sessions("alice");
    assert_eq!(r.status, 200, "{}", r.text());
    let took = wait_status(&stack, &on_phone.access_token, 401, started);
    println!(
        "IdP ends the user's sessions (sub only) → Envoy denies: {} ms",
        took.as_millis()
    );
    std::thread::sleep(Duration::from_millis(1100));
    let again = Browser::new(&idp).sign_in("alice");
    let r = stack.get_with_token("/", &again.access_token);
    assert_eq!(r.status, 200, "signing in again works: {}", r.text());
}

/// Polls Envoy every 10 ms until `token` gets `status`; the time since `started`.
fn wait_status(stack: &Stack, token: &str, status: u16, started: Instant) -> Duration {
    epochgate_tests::wait_for(&format!("status {status}"), DEADLINE, || {
        (stack.get_with_token("/api/orders", token).status == status).then_some(())
    });
    started.elapsed()
}

/// Every hostile input, minted by PyJWT where it is a token: a 400 naming what failed,
/// and the state version unchanged. A replay is refused again after a restart.
fn hostile_events_are_refused(stack: &mut Stack, keydir: &str) {
    let cp = stack.cp.port;
    let lab = |claims: Value, typ: &str| json!({"key": "lab", "headers": {"kid": "lab-1", "typ": typ}, "claims": claims});
    let good_logout = logout_claims(json!({}));
    let good_set = set_claims(json!({}));
    let minted = pyjwt(&json!({"dir": keydir, "keys": ["lab", "rogue"], "tokens": [
        lab(good_logout.clone(), "logout+jwt"),
        lab(logout_claims(json!({"aud": "another-client"})), "logout+jwt"),
        lab(logout_claims(json!({"iat": now_s() - 3600, "exp": now_s() + 60})), "logout+jwt"),
        lab(logout_claims(json!({"nonce": "n-0S6_WzA2Mj"})), "logout+jwt"),
        {"unsigned": true, "headers": {"typ": "logout+jwt"}, "claims": logout_claims(json!({}))},
        {"hmac_with_public_key": "lab", "headers": {"kid": "lab-1", "typ": "logout+jwt"}, "claims": logout_claims(json!({}))},
        {"key": "rogue", "headers": {"kid": "lab-1", "typ": "logout+jwt"}, "claims": logout_claims(json!({}))},
        lab(good_set.clone(), "secevent+jwt"),
        lab(set_claims(json!({"aud": "https://someone-else.test"})), "secevent+jwt"),
        lab(set_claims(json!({"iat": now_s() - 3600})), "secevent+jwt"),
        {"unsigned": true, "headers": {"typ": "secevent+jwt"}, "claims": set_claims(json!({}))},
        {"hmac_with_public_key": "lab", "headers": {"kid": "lab-1", "typ": "secevent+jwt"}, "claims": set_claims(json!({}))},
        {"key": "rogue", "headers": {"kid": "lab-1", "typ": "secevent+jwt"}, "claims": set_claims(json!({}))},
    ]}));
    let t = |i: usize| minted["tokens"][i].as_str().unwrap().to_string();

    // One valid logout token and one valid SET, accepted once each.
    assert_eq!(backchannel_logout(cp, "lab", &t(0)).status, 200);
    assert_eq!(push_set(cp, "lab", &t(7), Some(SSF_TOKEN)).status, 202);
    let before = version(stack);

    let form = |body: &str| body.as_bytes().to_vec();
    let bcl_cases: Vec<(&str, &str, Response, &str)> = vec![
        (
            "replayed jti",
            "lab",
            backchannel_logout(cp, "lab", &t(0)),
            "jti_replayed",
        ),
        (
            "wrong aud",
            "lab",
            backchannel_logout(cp, "lab", &t(1)),
            "invalid_aud",
        ),
        (
            "old iat",
            "lab",
            backchannel_logout(cp, "lab", &t(2)),
            "invalid_iat",
        ),
        (
            "a nonce",
            "lab",
            backchannel_logout(cp, "lab", &t(3)),
            "nonce_present",
        ),
        (
            "alg none",
            "lab",
            backchannel_logout(cp, "lab", &t(4)),
            "invalid_alg",
        ),
        (
            "HMAC keyed with the public key",
            "lab",
            backchannel_logout(cp, "lab", &t(5)),
            "invalid_alg",
        ),
        (
            "signed by another key under the IdP's kid",
            "lab",
            backchannel_logout(cp, "lab", &t(6)),
            "invalid_signature",
        ),
        (
            "another IdP's token",
            "local",
            backchannel_logout(cp, "local", &t(0)),
            "unknown_key",
        ),
        (
            "oversize body",
            "lab",
            post(
                cp,
                "/v1/idp/lab/backchannel-logout",
                &[("content-type", b"application/x-www-form-urlencoded")],
                &form(&format!("logout_token={}&pad={}", t(0), "x".repeat(20_000))),
            ),
            "body_too_large",
        ),
        (
            "wrong content type",
            "lab",
            post(
                cp,
                "/v1/idp/lab/backchannel-logout",
                &[("content-type", b"application/json")],
                &form(&format!("{{\"logout_token\":\"{}\"}}", t(0))),
            ),
            "invalid_content_type",
        ),
    ];
    for (what, idp, r, code) in &bcl_cases {
        assert_eq!(r.status, 400, "{what} at {idp}: {}", r.text());
        assert_eq!(r.json()["error"], *code, "{what}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"), "{what}");
        println!(
            "hostile back-channel logout: {what:<42} → 400 {code}: {}",
            r.json()["detail"].as_str().unwrap()
        );
    }
    let set_cases: Vec<(&str, Response, &str)> = vec![
        (
            "replayed jti",
            push_set(cp, "lab", &t(7), Some(SSF_TOKEN)),
            "invalid_request",
        ),
        (
            "wrong aud",
            push_set(cp, "lab", &t(8), Some(SSF_TOKEN)),
            "invalid_audience",
        ),
        (
            "old iat",
            push_set(cp, "lab", &t(9), Some(SSF_TOKEN)),
            "invalid_request",
        ),
        (
            "alg none",
            push_set(cp, "lab", &t(10), Some(SSF_TOKEN)),
            "invalid_key",
        ),
        (
            "HMAC keyed with the public key",
            push_set(cp, "lab", &t(11), Some(SSF_TOKEN)),
            "invalid_key",
        ),
        (
            "signed by another key under the IdP's kid",
            push_set(cp, "lab", &t(12), Some(SSF_TOKEN)),
            "invalid_key",
        ),
        (
            "no bearer",
            push_set(cp, "lab", &t(7), None),
            "authentication_failed",
        ),
        (
            "wrong bearer",
            push_set(cp, "lab", &t(7), Some("not-the-push-token-0123456789")),
            "authentication_failed",
        ),
        (
            "the edge token as bearer",
            push_set(cp, "lab", &t(7), Some(epochgate_tests::EDGE_TOKEN)),
            "authentication_failed",
        ),
        (
            "wrong content type",
            post(
                cp,
                "/v1/idp/lab/events",
                &[
                    ("content-type", b"application/jwt"),
                    ("authorization", format!("Bearer {SSF_TOKEN}").as_bytes()),
                ],
                t(7).as_bytes(),
            ),
            "invalid_request",
        ),
        (
            "oversize body",
            post(
                cp,
                "/v1/idp/lab/events",
                &[
                    ("content-type", b"application/secevent+jwt"),
                    ("authorization", format!("Bearer {SSF_TOKEN}").as_bytes()),
                ],
                "x".repeat(20_000).as_bytes(),
            ),
            "invalid_request",
        ),
    ];
    for (what, r, err) in &set_cases {
        assert_eq!(r.status, 400, "SET {what}: {}", r.text());
        assert_eq!(r.json()["err"], *err, "SET {what}: {}", r.text());
        println!(
            "hostile SET push: {what:<42} → 400 {err}: {}",
            r.json()["description"].as_str().unwrap()
        );
    }
    assert_eq!(version(stack), before, "a hostile event revoked something");

    // The replay cache is in the store: a restart forgets no jti.
    stack.cp.restart();
    let r = backchannel_logout(cp, "lab", &t(0));
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(
        r.json()["error"],
        "jti_replayed",
        "after a restart: {}",
        r.text()
    );
    assert_eq!(
        push_set(cp, "lab", &t(7), Some(SSF_TOKEN)).json()["err"],
        "invalid_request"
    );
    assert_eq!(version(stack), before);
}
