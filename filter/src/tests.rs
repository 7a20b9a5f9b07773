//! The glue, natively, against the fake host: the decision vectors through the sync
//! service and the HTTP path, header hygiene, and the sync loop's failure handling.

use epochgate_core::config::SyncConfig;
use epochgate_core::conformance::Vectors;
use epochgate_core::state::keys;
use epochgate_core::sync::{Change, SyncResponse, STATUS_KEY};
use epochgate_core::{Config, DenyReason, Engine};
use serde_json::json;

use crate::fake::FakeHost;
use crate::host::Metric;
use crate::http::{on_request_headers, Verdict};
use crate::sync_service::SyncService;

fn sync_service() -> SyncService {
    let config = SyncConfig::from_json(
        br#"{"cluster": "cp", "wait_s": 20, "retry_min_ms": 100, "retry_max_ms": 1000}"#,
    )
    .unwrap();
    SyncService::new(config, "edge-token-0123456789".into(), "edge-1".into())
}

fn answer(host: &FakeHost, sync: &mut SyncService, resp: &SyncResponse) {
    host.answer_with(Some(200), serde_json::to_string(resp).unwrap().as_bytes());
    let token = host.next_token.get();
    sync.on_response(host, token, 1);
}

#[test]
fn every_decision_vector_passes_through_the_sync_service_and_the_filter() {
    let vectors = Vectors::load().unwrap();
    let engine = Engine::new(vectors.config().unwrap());
    for case in &vectors.cases {
        let host = FakeHost::at(case.now_ms);
        let mut sync = sync_service();
        sync.on_tick(&host);
        let changes = case
            .changes()
            .into_iter()
            .map(|(target, ms)| Change {
                target,
                epoch_ms: Some(ms),
            })
            .collect();
        answer(
            &host,
            &mut sync,
            &SyncResponse {
                stream: "s".into(),
                version: 3,
                snapshot: true,
                changes,
                max_session_lifetime_s: 86_400,
            },
        );
        let auth = format!("Bearer {}", case.token);
        host.with_headers(&[(":path", b"/api"), ("authorization", auth.as_bytes())]);
        let verdict = on_request_headers(&engine, &host, 1);
        let sent = host.sent.borrow().clone();
        match (case.expect.allow, verdict) {
            (true, Verdict::Continue) => {
                assert_eq!(
                    host.header("x-epochgate-user"),
                    case.expect.user,
                    "{}",
                    case.name
                );
                assert_eq!(
                    host.header("x-epochgate-tenant"),
                    case.expect.tenant,
                    "{}",
                    case.name
                );
                assert_eq!(
                    host.header("x-epochgate-session"),
                    case.expect.session,
                    "{}",
                    case.name
                );
            }
            (false, Verdict::Stop) => {
                let (status, _, body) = sent.unwrap();
                assert_eq!(status, 401, "{}", case.name);
                let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(
                    body["error"].as_str(),
                    case.expect.reason.as_deref(),
                    "{}",
                    case.name
                );
            }
            (want, got) => panic!("{}: expected allow={want}, got {got:?} {sent:?}", case.name),
        }
    }
}

const SECRET: &str = "filter-test-secret-0123456789abcdef";

fn engine() -> Engine {
    Engine::new(
        Config::from_json(json!({"keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "default_tenant": "d"}).to_string().as_bytes())
            .unwrap(),
    )
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

const NOW: u64 = 1_800_000_000_000;

fn synced_host() -> (FakeHost, SyncService) {
    let host = FakeHost::at(NOW);
    let mut sync = sync_service();
    sync.on_tick(&host);
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s".into(),
            version: 1,
            snapshot: true,
            changes: vec![],
            max_session_lifetime_s: 86_400,
        },
    );
    (host, sync)
}

#[test]
fn spoofed_identity_headers_are_stripped_and_real_ones_set() {
    let (host, _) = synced_host();
    let t = hs256(json!({"sub": "42", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}));
    let auth = format!("Bearer {t}");
    host.with_headers(&[
        (":path", b"/"),
        ("authorization", auth.as_bytes()),
        ("x-epochgate-user", b"admin"),
        ("x-epochgate-session", b"forged"),
        ("x-epochgate-whatever", b"1"),
    ]);
    assert_eq!(on_request_headers(&engine(), &host, 1), Verdict::Continue);
    assert_eq!(host.header("x-epochgate-user").as_deref(), Some("42"));
    assert_eq!(host.header("x-epochgate-session"), None);
    assert_eq!(host.header("x-epochgate-whatever"), None);
    assert_eq!(host.metric_value(Metric::Allowed), 1);
}

#[test]
fn logout_in_a_delta_denies_and_counts() {
    let (host, mut sync) = synced_host();
    let t = hs256(json!({"sub": "42", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}));
    let auth = format!("Bearer {t}");
    // The loop dispatched the next poll at once, at the new version.
    assert!(
        host.last_path()
            .starts_with("/v1/sync?since=1&wait=20&stream=s&edge=edge-1"),
        "{}",
        host.last_path()
    );
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s".into(),
            version: 2,
            snapshot: false,
            changes: vec![Change {
                target: epochgate_core::state::Target::User {
                    tenant: "acme".into(),
                    user: "42".into(),
                },
                epoch_ms: Some(NOW - 500),
            }],
            max_session_lifetime_s: 86_400,
        },
    );
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(on_request_headers(&engine(), &host, 7), Verdict::Stop);
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 401);
    assert_eq!(
        host.metric_value(Metric::Denied(DenyReason::SessionRevoked)),
        1
    );
    assert_eq!(host.metric_value(Metric::StateVersion), 2);
    assert_eq!(sync.version(), 2);
}

#[test]
fn non_utf8_and_repeated_authorization_are_refused_without_panic() {
    let (host, _) = synced_host();
    let t = hs256(json!({"sub": "42", "iat": 1_799_999_000, "exp": 1_800_003_000}));
    let mut bad = format!("Bearer {t}").into_bytes();
    bad.push(0xfe);
    host.with_headers(&[(":path", b"/"), ("authorization", &bad)]);
    assert_eq!(on_request_headers(&engine(), &host, 1), Verdict::Stop);
    let good = format!("Bearer {t}");
    host.with_headers(&[
        (":path", b"/"),
        ("authorization", good.as_bytes()),
        ("authorization", good.as_bytes()),
    ]);
    assert_eq!(on_request_headers(&engine(), &host, 2), Verdict::Stop);
    let body = host.sent.borrow().as_ref().unwrap().2.clone();
    assert_eq!(body, br#"{"error":"ambiguous_token"}"#);
    host.with_headers(&[
        (":path", b"/"),
        ("authorization", good.as_bytes()),
        ("x-bin", &[0xff, 0x00]),
    ]);
    assert_eq!(on_request_headers(&engine(), &host, 3), Verdict::Continue);
}

#[test]
fn before_the_first_sync_the_state_is_unavailable() {
    let host = FakeHost::at(NOW);
    let t = hs256(json!({"sub": "42", "iat": 1_799_999_000, "exp": 1_800_003_000}));
    let auth = format!("Bearer {t}");
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(on_request_headers(&engine(), &host, 1), Verdict::Stop);
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 503);
}

#[test]
fn snapshot_clears_keys_the_edge_no_longer_holds() {
    let (host, mut sync) = synced_host();
    let user = |u: &str| Change {
        target: epochgate_core::state::Target::User {
            tenant: "acme".into(),
            user: u.into(),
        },
        epoch_ms: Some(NOW),
    };
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s".into(),
            version: 2,
            snapshot: false,
            changes: vec![user("42"), user("43")],
            max_session_lifetime_s: 1,
        },
    );
    // A new stream: the control plane's store was replaced.
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s2".into(),
            version: 1,
            snapshot: true,
            changes: vec![user("43")],
            max_session_lifetime_s: 1,
        },
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "42")),
        Some(Vec::new())
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "43")),
        Some(NOW.to_string().into_bytes())
    );
    let status = host.shared_data_value(STATUS_KEY).unwrap();
    assert!(String::from_utf8(status).unwrap().ends_with(" s2"));
}

#[test]
fn delta_of_another_stream_asks_for_a_snapshot() {
    let (host, mut sync) = synced_host();
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "other".into(),
            version: 9,
            snapshot: false,
            changes: vec![],
            max_session_lifetime_s: 1,
        },
    );
    assert!(
        host.last_path().starts_with("/v1/sync?since=0&"),
        "{}",
        host.last_path()
    );
    assert_eq!(sync.version(), 0);
}

#[test]
fn failures_back_off_and_keep_the_last_state() {
    let (host, mut sync) = synced_host();
    let calls = host.calls.borrow().len();
    host.answer_with(None, b"");
    sync.on_response(&host, host.next_token.get(), 0);
    assert_eq!(host.metric_value(Metric::SyncFailed), 1);
    // No retry before the backoff (>= retry_min/2 = 50 ms).
    sync.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), calls);
    host.advance(1_000);
    sync.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), calls + 1);
    host.answer_with(Some(500), b"{\"error\":\"internal\"}");
    sync.on_response(&host, host.next_token.get(), 1);
    host.answer_with(Some(200), b"not json");
    host.advance(1_000);
    sync.on_tick(&host);
    sync.on_response(&host, host.next_token.get(), 1);
    assert_eq!(host.metric_value(Metric::SyncFailed), 3);
    // The last good status is still there.
    assert!(host.shared_data_value(STATUS_KEY).is_some());
    assert_eq!(sync.version(), 1);
    // A stale answer to an unknown call is ignored.
    sync.on_response(&host, 999, 1);
    assert_eq!(host.metric_value(Metric::SyncFailed), 3);
}

#[test]
fn dispatch_failure_backs_off() {
    let host = FakeHost::at(NOW);
    host.fail_dispatch.set(true);
    let mut sync = sync_service();
    sync.on_tick(&host);
    assert_eq!(host.metric_value(Metric::SyncFailed), 1);
    sync.on_tick(&host);
    assert_eq!(host.metric_value(Metric::SyncFailed), 1);
}
