//! The JS side, in a JS engine (`wasm-bindgen-test`, run under node by
//! `wasm-bindgen-test-runner`; `make test-worker-wasm`): JS requests to the glue's
//! request (token extraction), deny responses to JS responses, the request to the
//! origin, bindings, the real host's fetch and the refresh bookkeeping over it, and the
//! `fetch` export itself.

use std::cell::RefCell;

use epochgate_core::{Response, ResponseKind};
use serde_json::json;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::wasm_bindgen_test;
use web_sys::{Headers, Request, RequestInit};

use super::*;
use crate::edge::{complete_sync, handle, Outcome};
use crate::fake::FakeHost;
use crate::refresh::IsolateState;
use crate::settings::{Bindings, Settings};
use epochgate_core::sync::client::Event;

const SECRET: &str = "worker-wasm-test-secret-0123456789abcdef";

fn now_s() -> u64 {
    js_sys::Date::now() as u64 / 1000
}

fn hs256(claims: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"k"}"#),
        b64(claims.to_string().as_bytes())
    );
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), SECRET.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn config_json() -> serde_json::Value {
    json!({
        "keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}],
        "default_tenant": "acme",
        "login_url": "https://login.test/",
        "token_sources": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "session"}],
    })
}

fn worker_json(control_plane: &str) -> serde_json::Value {
    json!({"origin": "http://origin.test:8081/base", "control_plane": control_plane, "refresh_ms": 100})
}

fn settings(control_plane: &str) -> Settings {
    Settings::load(&Bindings {
        config: Some(config_json().to_string()),
        worker: Some(worker_json(control_plane).to_string()),
        edge_token: Some("edge-token-0123456789".into()),
        relay: false,
    })
    .unwrap()
}

fn js_request(url: &str, method: &str, headers: &[(&str, &str)], body: Option<&str>) -> Request {
    let h = Headers::new().unwrap();
    for (n, v) in headers {
        h.append(n, v).unwrap();
    }
    let init = RequestInit::new();
    init.set_method(method);
    init.set_headers(&h);
    if let Some(body) = body {
        init.set_body(&JsValue::from_str(body));
    }
    Request::new_with_str_and_init(url, &init).unwrap()
}

async fn text(resp: &web_sys::Response) -> String {
    JsFuture::from(resp.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

async fn request_text(req: &Request) -> String {
    JsFuture::from(req.text().unwrap())
        .await
        .unwrap()
        .as_string()
        .unwrap()
}

fn snapshot_body(version: u64, logout_user_at_ms: Option<u64>) -> Vec<u8> {
    let changes: Vec<serde_json::Value> = logout_user_at_ms
        .map(|ms| json!({"scope": "user", "tenant": "acme", "user": "42", "epoch_ms": ms}))
        .into_iter()
        .collect();
    json!({"stream": "st", "version": version, "snapshot": true, "changes": changes, "max_session_lifetime_s": 86400})
        .to_string()
        .into_bytes()
}

#[wasm_bindgen_test]
fn a_js_request_becomes_headers_as_bytes_and_a_path() {
    let token = hs256(json!({"sub": "42", "iat": now_s() - 10, "exp": now_s() + 600}));
    let req = js_request(
        "https://edge.example/api/x?y=1#frag",
        "GET",
        &[
            ("Authorization", &format!("Bearer {token}")),
            ("Cookie", &format!("a=b; session={token}")),
            ("X-Latin", "caf\u{e9}"),
        ],
        None,
    );
    let incoming = incoming(&req);
    assert_eq!(incoming.path, "/api/x?y=1");
    let get = |n: &str| {
        incoming
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        get("authorization"),
        Some(format!("Bearer {token}").into_bytes())
    );
    // A Latin-1 header byte arrives as that one byte, not as UTF-8.
    assert_eq!(get("x-latin"), Some(b"caf\xe9".to_vec()));
    // Token extraction by core on what the glue built: header and cookie agree.
    let s = settings("http://127.0.0.1:1");
    let token_found = epochgate_core::token::extract(&s.engine.config().sources, &incoming.headers);
    assert_eq!(token_found, Ok(Some(token.as_str())));
}

#[wasm_bindgen_test]
fn the_path_is_judged_as_the_origin_fetch_resolves_it() {
    for (raw, seen) in [
        ("http://h/x/../admin", "/admin"),
        ("http://h/x/./../admin?a=1", "/admin?a=1"),
        ("http://h/x/%2e%2e/admin", "/admin"),
        ("http://h/x\\..\\admin", "/admin"),
        ("http://h//admin", "//admin"),
        ("http://h/;/admin", "/;/admin"),
        ("http://h/admin%2Fx", "/admin%2Fx"),
    ] {
        assert_eq!(resolved_path(raw), seen, "{raw}");
    }
}

#[wasm_bindgen_test]
async fn deny_responses_become_js_responses_with_every_header() {
    let s = settings("http://127.0.0.1:1");
    let web = s.engine.deny_response(
        epochgate_core::DenyReason::SessionRevoked,
        ResponseKind::Web,
    );
    let resp = to_js_response(&web).unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        resp.headers().get("location").unwrap().as_deref(),
        Some("https://login.test/?reason=session_revoked")
    );
    let cookie = resp.headers().get("set-cookie").unwrap().unwrap();
    assert!(cookie.starts_with("session=; Max-Age=0"), "{cookie}");
    assert_eq!(text(&resp).await, "");
    let api = s.engine.deny_response(
        epochgate_core::DenyReason::SessionRevoked,
        ResponseKind::Api,
    );
    let resp = to_js_response(&api).unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp
        .headers()
        .get("www-authenticate")
        .unwrap()
        .unwrap()
        .contains("session revoked"));
    assert_eq!(text(&resp).await, r#"{"error":"session_revoked"}"#);
    let custom = Response {
        status: 503,
        headers: vec![("retry-after".into(), "5".into())],
        body: b"x".to_vec(),
        grpc_status: None,
        grpc_message: None,
    };
    let resp = to_js_response(&custom).unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers().get("retry-after").unwrap().as_deref(),
        Some("5")
    );
}

#[wasm_bindgen_test]
async fn an_allowed_request_goes_to_the_origin_with_identity_and_without_spoofs() {
    let s = settings("http://cp.test");
    let host = FakeHost::at(js_sys::Date::now() as u64);
    host.answer(200, snapshot_body(1, None));
    let state = RefCell::new(IsolateState::new("worker-1".into(), &s.worker, 1, None));
    let token = hs256(json!({"sub": "42", "sid": "s9", "iat": now_s() - 10, "exp": now_s() + 600}));
    let req = js_request(
        "https://edge.example/orders/7?full=1",
        "POST",
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-epochgate-user", "admin"),
            ("content-type", "application/json"),
        ],
        Some(r#"{"qty":2}"#),
    );
    let handled = handle(&state, &s, &host, &incoming(&req)).await;
    let Outcome::Forward { url, edits, .. } = handled.outcome else {
        panic!("must be allowed: {:?}", handled.outcome)
    };
    let out = forward_request(&req, &url, &edits).unwrap();
    assert_eq!(out.url(), "http://origin.test:8081/base/orders/7?full=1");
    assert_eq!(out.method(), "POST");
    assert_eq!(out.redirect(), web_sys::RequestRedirect::Manual);
    let h = out.headers();
    assert_eq!(h.get("x-epochgate-user").unwrap().as_deref(), Some("42"));
    assert_eq!(
        h.get("x-epochgate-tenant").unwrap().as_deref(),
        Some("acme")
    );
    assert_eq!(h.get("x-epochgate-session").unwrap().as_deref(), Some("s9"));
    assert_eq!(
        h.get("content-type").unwrap().as_deref(),
        Some("application/json")
    );
    assert_eq!(request_text(&out).await, r#"{"qty":2}"#);
}

#[wasm_bindgen_test]
async fn the_real_host_fetches_and_the_bookkeeping_survives_a_dead_control_plane() {
    // A data: URL answers without a server: status and body come through fetch.
    let body = snapshot_body(3, None);
    let url = format!(
        "data:application/json,{}",
        String::from_utf8(body.clone()).unwrap()
    );
    let got = JsHost.get(&url, "tok", 2_000).await;
    assert_eq!(got, Ok((200, body)));
    // Port 1 on loopback: refused. The sync fails, the state and its version stay, and
    // the next attempt backs off.
    let s = settings("http://127.0.0.1:1");
    let state = RefCell::new(IsolateState::new("worker-1".into(), &s.worker, 1, None));
    let call = state
        .borrow_mut()
        .begin(JsHost.now_ms(), &s.worker)
        .unwrap();
    assert!(call
        .url
        .starts_with("http://127.0.0.1:1/v1/sync?since=0&wait=0&edge=worker-1"));
    let out = complete_sync(&state, &s, &JsHost, call).await;
    let Event::Failed {
        failures: 1,
        retry_in_ms,
        why,
    } = out
    else {
        panic!("{out:?}")
    };
    assert!((50..=100).contains(&retry_in_ms), "{retry_in_ms}");
    assert!(why.starts_with("control plane unreachable"), "{why}");
    assert!(state.borrow().status().is_none());
}

#[wasm_bindgen_test]
fn bindings_are_read_as_text_or_json_objects() {
    let env = js_sys::Object::new();
    let config = js_sys::JSON::parse(&config_json().to_string()).unwrap();
    js_sys::Reflect::set(&env, &"EPOCHGATE_CONFIG".into(), &config).unwrap();
    js_sys::Reflect::set(
        &env,
        &"EPOCHGATE_WORKER".into(),
        &worker_json("http://cp").to_string().into(),
    )
    .unwrap();
    js_sys::Reflect::set(
        &env,
        &"EPOCHGATE_EDGE_TOKEN".into(),
        &"edge-token-0123456789".into(),
    )
    .unwrap();
    let bindings = read_bindings(&env);
    let settings = Settings::load(&bindings).unwrap();
    assert_eq!(settings.worker.origin, "http://origin.test:8081/base");
    assert_eq!(settings.edge_token, "edge-token-0123456789");
    assert!(!bindings.relay);
    let empty = read_bindings(&js_sys::Object::new());
    assert_eq!(empty, Bindings::default());
    // A Durable Object namespace bound as EPOCHGATE_RELAY turns the relay on.
    js_sys::Reflect::set(&env, &"EPOCHGATE_RELAY".into(), &js_sys::Object::new()).unwrap();
    assert!(read_bindings(&env).relay);
}

fn fake_ctx() -> Context {
    let ctx = js_sys::Object::new();
    let wait_until = js_sys::Function::new_no_args("");
    js_sys::Reflect::set(&ctx, &"waitUntil".into(), &wait_until).unwrap();
    ctx.unchecked_into()
}

#[wasm_bindgen_test]
async fn the_fetch_export_answers_bad_bindings_with_a_clear_500_and_a_stale_state_with_503() {
    let req = js_request("https://edge.example/", "GET", &[], None);
    let resp: web_sys::Response = fetch(req, js_sys::Object::new().into(), fake_ctx())
        .await
        .unwrap()
        .unchecked_into();
    assert_eq!(resp.status(), 500);
    let body = text(&resp).await;
    assert!(
        body.contains("worker_misconfigured") && body.contains("EPOCHGATE_CONFIG"),
        "{body}"
    );
    // Good bindings, a control plane that is down, never synced: on_stale deny.
    let env = js_sys::Object::new();
    for (name, value) in [
        ("EPOCHGATE_CONFIG", config_json().to_string()),
        (
            "EPOCHGATE_WORKER",
            worker_json("http://127.0.0.1:1").to_string(),
        ),
        ("EPOCHGATE_EDGE_TOKEN", "edge-token-0123456789".to_string()),
    ] {
        js_sys::Reflect::set(&env, &name.into(), &value.into()).unwrap();
    }
    let token = hs256(json!({"sub": "42", "iat": now_s() - 10, "exp": now_s() + 600}));
    let req = js_request(
        "https://edge.example/",
        "GET",
        &[("authorization", &format!("Bearer {token}"))],
        None,
    );
    let resp: web_sys::Response = fetch(req, env.into(), fake_ctx())
        .await
        .unwrap()
        .unchecked_into();
    assert_eq!(resp.status(), 503);
    assert_eq!(text(&resp).await, r#"{"error":"state_unavailable"}"#);
}

#[wasm_bindgen_test]
async fn every_decision_vector_passes_with_the_real_webcrypto() {
    crate::tests::every_vector_passes().await;
}
