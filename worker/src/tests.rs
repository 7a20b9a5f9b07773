//! The glue, natively, against the fake host: the decision vectors through the refresh
//! and the request path, header hygiene, the refresh bookkeeping and bad bindings.

use std::cell::RefCell;

use epochgate_core::conformance::Vectors;
use epochgate_core::state::Target;
use epochgate_core::sync::{Change, SyncResponse};
use epochgate_core::HeaderEdit;
use serde_json::{json, Value};

use crate::edge::{complete_sync, handle, Handled, IncomingRequest, Outcome};
use crate::fake::{block_on, FakeHost};
use crate::host::Level;
use crate::refresh::IsolateState;
use crate::settings::{Bindings, Settings, SetupError};
use epochgate_core::sync::client::Event;

const SECRET: &str = "worker-test-secret-0123456789abcdef";
const EDGE_TOKEN: &str = "edge-token-0123456789";
const NOW: u64 = 1_800_000_000_000;

fn worker_json() -> Value {
    json!({"origin": "http://origin.test:8081", "control_plane": "http://cp.test:8080",
           "deployment": "portal", "refresh_ms": 500, "retry_max_ms": 4000})
}

fn settings_with(config: Value) -> Settings {
    Settings::load(&Bindings {
        config: Some(config.to_string()),
        worker: Some(worker_json().to_string()),
        edge_token: Some(EDGE_TOKEN.into()),
        relay: false,
    })
    .unwrap()
}

fn settings() -> Settings {
    settings_with(json!({
        "keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}],
        "default_tenant": "d",
        "login_url": "https://login.test/start",
        "token_sources": [{"header": "authorization", "prefix": "Bearer "},
                          {"cookie": "session", "cookie_path": "/app"}],
        "max_staleness_s": 10,
    }))
}

fn hs256(claims: Value) -> String {
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

fn token_42() -> String {
    hs256(
        json!({"sub": "42", "tid": "acme", "sid": "s1", "iat": 1_799_999_000, "exp": 1_800_003_000}),
    )
}

fn request(headers: &[(&str, &[u8])], path: &str) -> IncomingRequest {
    IncomingRequest {
        headers: headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_vec()))
            .collect(),
        path: path.into(),
    }
}

fn bearer(token: &str) -> IncomingRequest {
    let auth = format!("Bearer {token}");
    request(&[("authorization", auth.as_bytes())], "/api/x?y=1")
}

fn snapshot(version: u64, changes: Vec<Change>) -> Value {
    serde_json::to_value(SyncResponse {
        stream: "st".into(),
        version,
        snapshot: true,
        changes,
        max_session_lifetime_s: 86_400,
        next: None,
        tag: Some(format!("t{version}")),
    })
    .unwrap()
}

fn delta(version: u64, changes: Vec<Change>) -> Value {
    let mut v = snapshot(version, changes);
    v["snapshot"] = json!(false);
    v
}

fn user_logout(user: &str, epoch_ms: u64) -> Change {
    Change {
        target: Target::User {
            tenant: "acme".into(),
            user: user.into(),
        },
        epoch_ms: Some(epoch_ms),
    }
}

fn isolate() -> RefCell<IsolateState> {
    RefCell::new(IsolateState::new(
        "portal-00000000000000ab".into(),
        &settings().worker,
        1,
        None,
    ))
}

fn run(
    state: &RefCell<IsolateState>,
    s: &Settings,
    host: &FakeHost,
    req: &IncomingRequest,
) -> Handled {
    block_on(handle(state, s, host, req))
}

fn status_of(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Forward { .. } => 200,
        Outcome::Respond(r) => r.status,
    }
}

/// The request headers after `core`'s edits, as the origin would see them.
fn upstream_view(req: &IncomingRequest, edits: &[HeaderEdit]) -> Vec<(String, String)> {
    let mut headers = req.headers.clone();
    for edit in edits {
        match edit {
            HeaderEdit::Remove(name) => headers.retain(|(n, _)| n != name),
            HeaderEdit::Set(name, value) => {
                headers.retain(|(n, _)| n != name);
                headers.push((name.clone(), value.clone()));
            }
        }
    }
    headers
        .into_iter()
        .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
        .collect()
}

fn header_of(headers: &[(String, String)], name: &str) -> Option<String> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// An isolate that has synced once (snapshot v1, empty).
fn synced(s: &Settings) -> (FakeHost, RefCell<IsolateState>) {
    let host = FakeHost::at(NOW);
    let state = isolate();
    host.answer_json(&snapshot(1, vec![]));
    let h = run(&state, s, &host, &bearer(&token_42()));
    assert_eq!(status_of(&h.outcome), 200);
    (host, state)
}

#[test]
fn every_decision_vector_passes_through_the_refresh_and_the_worker_glue() {
    block_on(every_vector_passes());
}

/// The decision and algorithm vectors through the refresh and the request path, each
/// signature asked of the host (natively `core`'s pure Rust, under node the real
/// WebCrypto: `js::tests` runs this too).
pub(crate) async fn every_vector_passes() {
    let worker =
        epochgate_core::config::WorkerConfig::from_json(worker_json().to_string().as_bytes())
            .unwrap();
    let mut algorithms = std::collections::BTreeSet::new();
    for vectors in Vectors::all().unwrap() {
        for case in &vectors.cases {
            // A fresh isolate per case (its own token cache), through the real constructor.
            let s = Settings::new(vectors.config().unwrap(), worker.clone(), EDGE_TOKEN.into())
                .unwrap();
            let host = FakeHost::at(case.now_ms);
            let changes = case.sync_changes();
            host.answer_json(&snapshot(3, changes));
            let state = isolate();
            let req = bearer(&case.token);
            let h = handle(&state, &s, &host, &req).await;
            assert_eq!(state.borrow().version(), 3, "{}: synced first", case.name);
            algorithms.extend(
                host.signature_checks
                    .borrow()
                    .iter()
                    .map(|(alg, _)| alg.clone()),
            );
            match (case.expect.allow, &h.outcome) {
                (true, Outcome::Forward { edits, url, .. }) => {
                    let seen = upstream_view(&req, edits);
                    let get = |n: &str| header_of(&seen, n);
                    assert_eq!(get("x-epochgate-user"), case.expect.user, "{}", case.name);
                    assert_eq!(
                        get("x-epochgate-tenant"),
                        case.expect.tenant,
                        "{}",
                        case.name
                    );
                    assert_eq!(
                        get("x-epochgate-session"),
                        case.expect.session,
                        "{}",
                        case.name
                    );
                    assert_eq!(url, "http://origin.test:8081/api/x?y=1");
                }
                (false, Outcome::Respond(r)) => {
                    assert_eq!(r.status, 401, "{}", case.name);
                    let body: Value = serde_json::from_slice(&r.body).unwrap();
                    assert_eq!(
                        body["error"].as_str(),
                        case.expect.reason.as_deref(),
                        "{}",
                        case.name
                    );
                }
                (want, got) => panic!("{}: expected allow={want}, got {got:?}", case.name),
            }
        }
    }
    // Every algorithm was asked of the host's WebCrypto.
    assert_eq!(algorithms.len(), 12, "{algorithms:?}");
}

#[test]
fn spoofed_identity_headers_are_stripped_and_real_ones_set() {
    let s = settings();
    let (host, state) = synced(&s);
    let auth = format!("Bearer {}", token_42());
    let req = request(
        &[
            ("authorization", auth.as_bytes()),
            ("x-epochgate-user", b"admin"),
            ("x-epochgate-whatever", b"1"),
            ("accept", b"application/json"),
        ],
        "/api/orders?page=2",
    );
    let h = run(&state, &s, &host, &req);
    let Outcome::Forward { url, edits, .. } = h.outcome else {
        panic!("must be allowed: {:?}", h.outcome)
    };
    assert_eq!(url, "http://origin.test:8081/api/orders?page=2");
    let seen = upstream_view(&req, &edits);
    assert_eq!(header_of(&seen, "x-epochgate-user").as_deref(), Some("42"));
    assert_eq!(
        header_of(&seen, "x-epochgate-tenant").as_deref(),
        Some("acme")
    );
    assert_eq!(
        header_of(&seen, "x-epochgate-session").as_deref(),
        Some("s1")
    );
    assert_eq!(header_of(&seen, "x-epochgate-whatever"), None);
    assert_eq!(
        seen.iter().filter(|(n, _)| n == "x-epochgate-user").count(),
        1,
        "the spoofed value is gone"
    );
    assert_eq!(
        header_of(&seen, "accept").as_deref(),
        Some("application/json")
    );
}

#[test]
fn the_first_request_waits_for_a_sync_as_this_edge() {
    let s = settings();
    let host = FakeHost::at(NOW);
    let state = isolate();
    host.answer_json(&snapshot(4, vec![user_logout("42", NOW - 500)]));
    let h = run(&state, &s, &host, &bearer(&token_42()));
    assert!(h.background_sync.is_none());
    let calls = host.calls.borrow().clone();
    assert_eq!(
        calls,
        vec![(
            "http://cp.test:8080/v1/sync?since=0&wait=0&edge=portal-00000000000000ab&limit=10000"
                .to_string(),
            EDGE_TOKEN.to_string()
        )]
    );
    // Logged out after the token was issued: denied with the synced state.
    assert_eq!(status_of(&h.outcome), 401);
    assert!(host.logged("sync: applied snapshot v4 (1 changes)"));
}

#[test]
fn a_due_sync_runs_in_the_background_once_and_a_logout_then_denies() {
    let s = settings();
    let (host, state) = synced(&s);
    // Within refresh_ms: no sync.
    host.advance(499);
    assert!(run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .is_none());
    host.advance(1);
    let h = run(&state, &s, &host, &bearer(&token_42()));
    // Decided with what is held; the sync is left to the runtime.
    assert_eq!(status_of(&h.outcome), 200);
    let call = h.background_sync.expect("a sync is due");
    assert!(
        call.url.contains("since=1&wait=0&stream=st&tag=t1&edge="),
        "{}",
        call.url
    );
    // Never two at once: a second request while it is in flight starts none.
    assert!(run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .is_none());
    host.answer_json(&delta(2, vec![user_logout("42", NOW)]));
    let out = block_on(complete_sync(&state, &s, &host, call));
    assert!(
        matches!(
            out,
            Event::Applied {
                version: 2,
                changed: true,
                ..
            }
        ),
        "{out:?}"
    );
    let h = run(&state, &s, &host, &bearer(&token_42()));
    assert_eq!(status_of(&h.outcome), 401);
    assert!(h.background_sync.is_none(), "just synced");
    // A token from the next second on passes: force logout does not block the account.
    let fresh =
        hs256(json!({"sub": "42", "tid": "acme", "iat": NOW / 1000 + 1, "exp": NOW / 1000 + 3600}));
    host.advance(1_000);
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&fresh)).outcome),
        200
    );
}

#[test]
fn failures_back_off_keep_the_last_state_then_follow_on_stale() {
    let s = settings();
    let (host, state) = synced(&s);
    host.answer_json(&delta(2, vec![user_logout("42", NOW)]));
    host.advance(500);
    let call = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    block_on(complete_sync(&state, &s, &host, call));
    // The control plane goes away: refused connections, then a 500.
    let mut retries = Vec::new();
    for answer in [None, Some(500)] {
        host.advance(5_000);
        if let Some(code) = answer {
            host.answer(code, "{\"error\":\"internal\"}");
        }
        let h = run(&state, &s, &host, &bearer(&token_42()));
        assert_eq!(
            status_of(&h.outcome),
            401,
            "last state kept: still logged out"
        );
        let out = block_on(complete_sync(&state, &s, &host, h.background_sync.unwrap()));
        let Event::Failed { retry_in_ms, .. } = out else {
            panic!("{out:?}")
        };
        retries.push(retry_in_ms);
    }
    // Exponential backoff from refresh_ms, half of it jitter.
    assert!((250..=500).contains(&retries[0]), "{retries:?}");
    assert!((500..=1000).contains(&retries[1]), "{retries:?}");
    assert_eq!(state.borrow().failures(), 2);
    assert!(host.logged("sync failed (2 in a row): control plane answered 500"));
    // Backing off: no call before the retry time.
    let calls = host.calls.borrow().len();
    host.advance(retries[1] - 1);
    assert!(run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .is_none());
    assert_eq!(host.calls.borrow().len(), calls);
    // Past max_staleness_s (10 s) the request waits for a sync; it fails → on_stale deny
    // (for a token the state holds nothing against; 42's logout is still a 401).
    host.advance(10_000);
    let other =
        hs256(json!({"sub": "43", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_303_000}));
    let h = run(&state, &s, &host, &bearer(&other));
    assert_eq!(
        host.calls.borrow().len(),
        calls + 1,
        "a blocking sync was tried"
    );
    let Outcome::Respond(r) = h.outcome else {
        panic!("stale state must deny")
    };
    assert_eq!(r.status, 503);
    assert!(r.headers.contains(&("retry-after".into(), "5".into())));
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token_42())).outcome),
        401
    );
}

#[test]
fn on_stale_allow_passes_what_it_cannot_know_and_enforces_what_it_holds() {
    let s = settings_with(json!({
        "keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}],
        "on_stale": "allow",
        "max_staleness_s": 10,
    }));
    let host = FakeHost::at(NOW);
    let state = isolate();
    let h = run(&state, &s, &host, &bearer(&token_42()));
    assert!(matches!(h.outcome, Outcome::Forward { .. }));
    assert!(host
        .logs
        .borrow()
        .iter()
        .any(|(l, m)| *l == Level::Warn && m.contains("allowed with the revocations held")));
    // Synced once, with 42 logged out; then the control plane is gone for good.
    host.advance(60_000);
    host.answer_json(&snapshot(2, vec![user_logout("42", NOW)]));
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token_42())).outcome),
        401
    );
    host.advance(60_000);
    let h = run(&state, &s, &host, &bearer(&token_42()));
    assert_eq!(status_of(&h.outcome), 401, "a held logout while stale");
    let other =
        hs256(json!({"sub": "43", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_303_000}));
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&other)).outcome),
        200
    );
}

#[test]
fn a_delta_of_another_stream_asks_for_a_snapshot_and_keeps_the_entries() {
    let s = settings();
    let (host, state) = synced(&s);
    host.answer_json(&delta(2, vec![user_logout("42", NOW)]));
    host.advance(500);
    let call = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    block_on(complete_sync(&state, &s, &host, call));
    let mut other = delta(7, vec![]);
    other["stream"] = json!("other");
    host.answer_json(&other);
    // The sync then asks for a snapshot at once (the same background task).
    let mut snap = snapshot(1, vec![]);
    snap["stream"] = json!("other");
    host.answer_json(&snap);
    host.advance(500);
    let call = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    let out = block_on(complete_sync(&state, &s, &host, call));
    assert!(
        matches!(
            out,
            Event::Applied {
                version: 1,
                snapshot: true,
                kept: 1,
                ..
            }
        ),
        "{out:?}"
    );
    let calls = host.calls.borrow().clone();
    assert!(
        calls[calls.len() - 1].0.contains("since=0&wait=0&edge="),
        "{calls:?}"
    );
    assert!(host.logged("asking for a snapshot (what is held stays in force)"));
    assert!(host.logged("lacked or held lower 1 entries this edge had applied"));
    // The new history is merged into what the isolate held: 42 stays logged out.
    host.advance(1);
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token_42())).outcome),
        401
    );
    assert_eq!(state.borrow().status().unwrap().stream, "other");
}

#[test]
fn a_sync_past_its_timeout_is_superseded() {
    let s = settings();
    let (host, state) = synced(&s);
    host.advance(500);
    let lost = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    // The runtime dropped it; after its timeout (5 s) plus a second, a new one starts.
    host.advance(5_999);
    assert!(run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .is_none());
    host.advance(2);
    let fresh = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    host.answer_json(&delta(9, vec![]));
    let out = block_on(complete_sync(&state, &s, &host, lost));
    assert_eq!(out, Event::Superseded);
    assert_eq!(state.borrow().version(), 1);
    host.answer_json(&delta(2, vec![]));
    let out = block_on(complete_sync(&state, &s, &host, fresh));
    assert!(matches!(out, Event::Applied { version: 2, .. }), "{out:?}");
}

#[test]
fn a_garbled_answer_is_a_failure_not_a_panic() {
    let s = settings();
    let (host, state) = synced(&s);
    host.advance(500);
    host.answer(200, "not json");
    let call = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    let out = block_on(complete_sync(&state, &s, &host, call));
    assert!(matches!(out, Event::Failed { .. }), "{out:?}");
    assert_eq!(state.borrow().version(), 1);
}

#[test]
fn web_requests_are_redirected_with_the_cookie_cleared() {
    let s = settings();
    let (host, state) = synced(&s);
    host.advance(500);
    host.answer_json(&delta(2, vec![user_logout("42", NOW)]));
    let call = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    block_on(complete_sync(&state, &s, &host, call));
    let cookie = format!("theme=dark; session={}", token_42());
    let req = request(
        &[("cookie", cookie.as_bytes()), ("accept", b"text/html,*/*")],
        "/app/home",
    );
    let Outcome::Respond(r) = run(&state, &s, &host, &req).outcome else {
        panic!("must deny")
    };
    assert_eq!(r.status, 302);
    let get = |n: &str| {
        r.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(
        get("location"),
        Some("https://login.test/start?reason=session_revoked")
    );
    let set_cookie = get("set-cookie").unwrap();
    assert!(set_cookie.starts_with("session=; Max-Age=0") && set_cookie.contains("Path=/app"));
}

#[test]
fn header_bytes_survive_the_js_byte_string_round_trip() {
    let bytes: Vec<u8> = (0u8..=255).collect();
    let s = crate::bytes_to_byte_string(&bytes);
    assert_eq!(crate::byte_string_to_bytes(&s), bytes);
    assert_eq!(crate::byte_string_to_bytes("a\u{100}b"), b"a?b");
    // A non-UTF-8 byte in the token is an invalid token, never a panic.
    let st = settings();
    let (host, state) = synced(&st);
    let mut auth = format!("Bearer {}", token_42()).into_bytes();
    auth.push(0xfe);
    let h = run(
        &state,
        &st,
        &host,
        &request(&[("authorization", &auth)], "/"),
    );
    let Outcome::Respond(r) = h.outcome else {
        panic!("must deny")
    };
    assert_eq!(r.body, br#"{"error":"invalid_token"}"#);
}

#[test]
fn bad_bindings_name_the_binding_and_field_and_never_echo_values() {
    let good = Bindings {
        config: Some(json!({"keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}]}).to_string()),
        worker: Some(worker_json().to_string()),
        edge_token: Some(EDGE_TOKEN.into()),
        relay: false,
    };
    let loaded = Settings::load(&good).unwrap();
    let debug = format!("{loaded:?}");
    assert!(
        !debug.contains(EDGE_TOKEN) && !debug.contains(SECRET),
        "{debug}"
    );
    let missing = Bindings {
        edge_token: Some("  ".into()),
        ..good.clone()
    };
    let err = Settings::load(&missing).unwrap_err();
    assert_eq!(err, SetupError::Missing("EPOCHGATE_EDGE_TOKEN"));
    let bad_alg = Bindings {
        config: Some(json!({"keys": [{"kid": "k", "alg": "HS257", "secret": SECRET}]}).to_string()),
        ..good.clone()
    };
    let err = Settings::load(&bad_alg).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("binding EPOCHGATE_CONFIG: config field `keys[0].alg`"),
        "{err}"
    );
    let r = err.response();
    assert_eq!(r.status, 500);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["error"], "worker_misconfigured");
    assert!(body["detail"].as_str().unwrap().contains("`keys[0].alg`"));
    assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));
    let remote = Bindings {
        config: Some(json!({"keys": [], "remote_jwks": true}).to_string()),
        ..good.clone()
    };
    let err = Settings::load(&remote).unwrap_err().to_string();
    assert!(err.contains("remote_jwks"), "{err}");
    let bad_worker = Bindings {
        worker: Some("{\"origin\": 5".into()),
        ..good
    };
    let err = Settings::load(&bad_worker).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("binding EPOCHGATE_WORKER: not a valid configuration"),
        "{err}"
    );
}

#[test]
fn path_and_query_of_request_urls() {
    use crate::path_and_query;
    assert_eq!(
        path_and_query("https://edge.example/api/x?y=1#frag"),
        "/api/x?y=1"
    );
    assert_eq!(path_and_query("http://127.0.0.1:8787"), "/");
    assert_eq!(path_and_query("http://127.0.0.1:8787?a=b"), "/?a=b");
    assert_eq!(path_and_query("https://h/"), "/");
    assert_eq!(path_and_query("https://h/a%2Fb/c"), "/a%2Fb/c");
}

#[test]
fn a_stale_request_waits_for_the_sync_in_flight_instead_of_starting_another() {
    let s = settings();
    let state = isolate();
    let host = FakeHost::at(NOW);
    // Another request started the first sync and has not finished it.
    let call = state.borrow_mut().begin(NOW, &s.worker).unwrap();
    assert_eq!(
        state.borrow().plan(NOW, 10),
        crate::refresh::Plan::WaitForSync
    );
    // It never comes back (the fake's time runs only while waiting): the wait ends once
    // the sync is past its timeout plus a second, then on_stale applies.
    let h = run(&state, &s, &host, &bearer(&token_42()));
    assert_eq!(status_of(&h.outcome), 503);
    assert!(host.calls.borrow().is_empty(), "no second sync");
    let waited = host.now_ms.get() - NOW;
    assert!((6_000..6_100).contains(&waited), "{waited}");
    // No newer sync was started, so its late answer still counts.
    host.answer_json(&snapshot(1, vec![]));
    let out = block_on(complete_sync(&state, &s, &host, call));
    assert!(matches!(out, Event::Applied { version: 1, .. }), "{out:?}");
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token_42())).outcome),
        200
    );
}

#[test]
fn a_paged_snapshot_is_taken_page_by_page_in_one_background_sync() {
    let s = settings();
    let (host, state) = synced(&s);
    host.advance(500);
    let mut page1 = snapshot(7, vec![user_logout("41", NOW)]);
    page1["next"] = json!("u/acme/41");
    host.answer_json(&page1);
    host.answer_json(&snapshot(7, vec![user_logout("42", NOW)]));
    let call = run(&state, &s, &host, &bearer(&token_42()))
        .background_sync
        .unwrap();
    let out = block_on(complete_sync(&state, &s, &host, call));
    assert!(
        matches!(
            out,
            Event::Applied {
                version: 7,
                complete: true,
                changes: 2,
                ..
            }
        ),
        "{out:?}"
    );
    let calls = host.calls.borrow().clone();
    assert!(
        calls[calls.len() - 1]
            .0
            .ends_with("&limit=10000&snapshot=7&after=u%2Facme%2F41"),
        "{calls:?}"
    );
    assert_eq!(state.borrow().version(), 7);
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token_42())).outcome),
        401
    );
}

/// An RS256 token of the algorithm vectors, its key, and the vectors' time.
fn rs256_case() -> (Settings, String, u64) {
    let vectors = Vectors::algorithms().unwrap();
    let case = vectors
        .cases
        .iter()
        .find(|c| c.name == "valid_rs256")
        .unwrap();
    let worker =
        epochgate_core::config::WorkerConfig::from_json(worker_json().to_string().as_bytes())
            .unwrap();
    let s = Settings::new(vectors.config().unwrap(), worker, EDGE_TOKEN.into()).unwrap();
    (s, case.token.clone(), case.now_ms)
}

#[test]
fn a_verified_token_is_a_cache_hit_and_never_asks_webcrypto_again() {
    let (s, token, now) = rs256_case();
    let host = FakeHost::at(now);
    host.answer_json(&snapshot(1, vec![]));
    let state = isolate();
    for _ in 0..3 {
        let h = run(&state, &s, &host, &bearer(&token));
        assert_eq!(status_of(&h.outcome), 200);
    }
    assert_eq!(
        *host.signature_checks.borrow(),
        vec![("RS256".to_string(), Some("rs256".to_string()))],
        "one WebCrypto check, then the token cache"
    );
    // A logout still applies to the cached token (revocation is never cached).
    host.advance(600);
    host.answer_json(&delta(2, vec![user_logout("u-rs256", now + 600)]));
    let h = run(&state, &s, &host, &bearer(&token));
    assert!(h.background_sync.is_some());
    block_on(complete_sync(&state, &s, &host, h.background_sync.unwrap()));
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token)).outcome),
        401
    );
    assert_eq!(host.signature_checks.borrow().len(), 1);
}

#[test]
fn a_key_webcrypto_refuses_denies_and_says_why() {
    let (s, token, now) = rs256_case();
    let host = FakeHost::at(now);
    host.answer_json(&snapshot(1, vec![]));
    *host.crypto_error.borrow_mut() = Some("importKey refused the key: DataError".into());
    let state = isolate();
    let h = run(&state, &s, &host, &bearer(&token));
    let Outcome::Respond(r) = &h.outcome else {
        panic!("must be denied: {:?}", h.outcome)
    };
    assert_eq!(r.status, 401);
    assert!(
        host.logged("WebCrypto cannot check a RS256 signature with key rs256: importKey refused"),
        "{:?}",
        host.logs.borrow()
    );
    // Nothing was cached: once WebCrypto can check it, the token passes.
    *host.crypto_error.borrow_mut() = None;
    assert_eq!(
        status_of(&run(&state, &s, &host, &bearer(&token)).outcome),
        200
    );
}

#[test]
fn the_isolate_reports_its_sessions_in_the_background_once_per_interval() {
    use crate::sessions::IsolateSessions;
    use epochgate_core::sessions::SessionReport;
    let s = settings_with(json!({
        "keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "default_tenant": "d",
        "max_staleness_s": 10, "truncate_addresses": true,
    }));
    let (host, state) = synced(&s);
    let sessions = RefCell::new(IsolateSessions::new(&s));
    let edge_id = state.borrow().edge_id().to_string();
    let alice = hs256(
        json!({"sub": "alice", "tid": "acme", "sid": "a1", "iat": 1_799_999_000, "exp": 1_800_003_000}),
    );
    let bob =
        hs256(json!({"sub": "bob", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}));
    let req = |token: &str, ua: &[u8]| {
        let auth = format!("Bearer {token}");
        request(
            &[
                ("authorization", auth.as_bytes()),
                ("user-agent", ua),
                ("cf-connecting-ip", b"198.51.100.23"),
            ],
            "/api",
        )
    };
    let after = |r: &IncomingRequest| {
        let h = run(&state, &s, &host, r);
        IsolateSessions::after_request(
            &sessions,
            &s,
            r,
            h.identity.as_ref(),
            &edge_id,
            host.now_ms.get(),
        )
    };
    let first = after(&req(
        &alice,
        b"Mozilla/5.0 (X11; Linux x86_64) Firefox/121.0",
    ))
    .expect("the first report goes at once");
    assert_eq!(
        first.url,
        "http://cp.test:8080/v1/sync/sessions?edge=portal-00000000000000ab"
    );
    let report: SessionReport = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].device, "Firefox 121 on Linux");
    assert_eq!(
        report.sessions[0].address.as_deref(),
        Some("198.51.100.0/24")
    );
    assert!(
        after(&req(&bob, b"AcmeApp/3.2.1 (Android 14)")).is_none(),
        "one report at a time"
    );
    block_on(IsolateSessions::send(&sessions, &s, &host, first));
    let (url, bearer_sent, _) = host.posts.borrow()[0].clone();
    assert!(url.ends_with("/v1/sync/sessions?edge=portal-00000000000000ab"));
    assert_eq!(bearer_sent, EDGE_TOKEN);
    assert!(
        after(&req(&bob, b"x")).is_none(),
        "the interval has not passed"
    );
    assert_eq!(
        sessions.borrow().pending(),
        1,
        "bob waits for the next interval"
    );
    host.advance(10_000);
    let next = after(&req(&alice, b"x")).unwrap();
    let report: SessionReport = serde_json::from_slice(&next.body).unwrap();
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].user, "bob");
    assert_eq!(report.sessions[0].device, "AcmeApp 3.2.1 (Android)");
    // A refused report is logged and dropped; reporting goes on.
    host.post_answers
        .borrow_mut()
        .push_back(Err("connection refused".into()));
    block_on(IsolateSessions::send(&sessions, &s, &host, next));
    assert!(host.logged("session report failed"));
    assert_eq!(sessions.borrow().pending(), 0);
    // Off: nothing recorded, nothing sent.
    let off = settings_with(json!({
        "keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "default_tenant": "d",
        "max_staleness_s": 10, "report_sessions": false,
    }));
    let quiet = RefCell::new(IsolateSessions::new(&off));
    let r = req(&alice, b"x");
    let h = run(&state, &off, &host, &r);
    assert!(
        IsolateSessions::after_request(&quiet, &off, &r, h.identity.as_ref(), &edge_id, NOW)
            .is_none()
    );
    assert_eq!(quiet.borrow().pending(), 0);
}
