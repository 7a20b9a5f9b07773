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
use crate::http::{FilterShared, Verdict};
use crate::native::NativeVerifier;
use crate::sessions::SessionUplink;
use crate::sync_service::SyncService;
use epochgate_core::sessions::SessionReport;

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
    sync.on_response(host, token, 1, 1);
}

#[test]
fn every_decision_vector_passes_through_the_sync_service_and_the_filter() {
    let vectors = Vectors::load().unwrap();
    let shared = FilterShared::new(Engine::with_verifier(
        vectors.config().unwrap(),
        NativeVerifier::pure(),
    ));
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
                // Each case is its own history: one filter VM serves them all, and its
                // caches must never carry one case's state into another.
                stream: format!("case-{}", case.name),
                version: 3,
                snapshot: true,
                changes,
                max_session_lifetime_s: 86_400,
                next: None,
            },
        );
        let auth = format!("Bearer {}", case.token);
        host.with_headers(&[(":path", b"/api"), ("authorization", auth.as_bytes())]);
        let verdict = shared.on_request_headers(&host, 1).0;
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

fn engine() -> Engine<NativeVerifier> {
    Engine::with_verifier(
        Config::from_json(json!({"keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "default_tenant": "d"}).to_string().as_bytes())
            .unwrap(),
        NativeVerifier::pure(),
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
            next: None,
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
    assert_eq!(
        FilterShared::new(engine()).on_request_headers(&host, 1).0,
        Verdict::Continue
    );
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
            next: None,
        },
    );
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        FilterShared::new(engine()).on_request_headers(&host, 7).0,
        Verdict::Stop
    );
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
    assert_eq!(
        FilterShared::new(engine()).on_request_headers(&host, 1).0,
        Verdict::Stop
    );
    let good = format!("Bearer {t}");
    host.with_headers(&[
        (":path", b"/"),
        ("authorization", good.as_bytes()),
        ("authorization", good.as_bytes()),
    ]);
    assert_eq!(
        FilterShared::new(engine()).on_request_headers(&host, 2).0,
        Verdict::Stop
    );
    let body = host.sent.borrow().as_ref().unwrap().2.clone();
    assert_eq!(body, br#"{"error":"ambiguous_token"}"#);
    host.with_headers(&[
        (":path", b"/"),
        ("authorization", good.as_bytes()),
        ("x-bin", &[0xff, 0x00]),
    ]);
    assert_eq!(
        FilterShared::new(engine()).on_request_headers(&host, 3).0,
        Verdict::Continue
    );
}

#[test]
fn before_the_first_sync_the_state_is_unavailable() {
    let host = FakeHost::at(NOW);
    let t = hs256(json!({"sub": "42", "iat": 1_799_999_000, "exp": 1_800_003_000}));
    let auth = format!("Bearer {t}");
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        FilterShared::new(engine()).on_request_headers(&host, 1).0,
        Verdict::Stop
    );
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
            next: None,
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
            next: None,
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
            next: None,
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
    sync.on_response(&host, host.next_token.get(), 0, 0);
    assert_eq!(host.metric_value(Metric::SyncFailed), 1);
    // No retry before the backoff (>= retry_min/2 = 50 ms).
    sync.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), calls);
    host.advance(1_000);
    sync.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), calls + 1);
    host.answer_with(Some(500), b"{\"error\":\"internal\"}");
    sync.on_response(&host, host.next_token.get(), 1, 1);
    host.answer_with(Some(200), b"not json");
    host.advance(1_000);
    sync.on_tick(&host);
    sync.on_response(&host, host.next_token.get(), 1, 1);
    assert_eq!(host.metric_value(Metric::SyncFailed), 3);
    // The last good status is still there.
    assert!(host.shared_data_value(STATUS_KEY).is_some());
    assert_eq!(sync.version(), 1);
    // A stale answer to an unknown call is ignored.
    sync.on_response(&host, 999, 1, 1);
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

fn engine_with(extra: serde_json::Value) -> Engine<NativeVerifier> {
    let mut c =
        json!({"keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "default_tenant": "d"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    Engine::with_verifier(
        Config::from_json(c.to_string().as_bytes()).unwrap(),
        NativeVerifier::pure(),
    )
}

fn good_token() -> String {
    hs256(json!({"sub": "42", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}))
}

#[test]
fn grpc_denies_go_through_the_grpc_local_reply() {
    let (host, _) = synced_host();
    host.with_headers(&[
        (":path", b"/pkg.Svc/Call"),
        ("content-type", b"application/grpc"),
    ]);
    let shared = FilterShared::new(engine());
    assert_eq!(shared.on_request_headers(&host, 1).0, Verdict::Stop);
    assert_eq!(
        host.grpc_sent.borrow().clone(),
        Some((16, "missing_token".to_string()))
    );
    assert!(host.sent.borrow().is_none());
}

#[test]
fn scheduled_logout_notice_goes_to_the_response() {
    let (host, mut sync) = synced_host();
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s".into(),
            version: 2,
            snapshot: false,
            changes: vec![Change {
                target: epochgate_core::state::Target::ScheduledTenant {
                    tenant: "acme".into(),
                },
                epoch_ms: Some(NOW + 60_000),
            }],
            max_session_lifetime_s: 86_400,
            next: None,
        },
    );
    let auth = format!("Bearer {}", good_token());
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    let (verdict, response_headers) = FilterShared::new(engine()).on_request_headers(&host, 1);
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        response_headers,
        vec![(
            "epochgate-logout-at".to_string(),
            "2027-01-15T08:01:00Z".to_string()
        )]
    );
}

#[test]
fn jwt_authn_mode_reads_the_payload_from_the_metadata_property() {
    let (host, _) = synced_host();
    let shared = FilterShared::new(engine_with(
        json!({"mode": "jwt_authn_metadata", "keys": []}),
    ));
    host.with_headers(&[(":path", b"/"), ("x-jwt-payload", b"eyJzdWIiOiJhZG1pbiJ9")]);
    assert_eq!(
        shared.on_request_headers(&host, 1).0,
        Verdict::Stop,
        "no metadata: denied, header ignored"
    );
    // Metadata { filter_metadata: {"envoy.filters.http.jwt_authn": {"jwt_payload": {"sub": "42", "exp": ...}}} }
    let md = crate::metadata::tests_support::metadata_with_payload(
        &json!({"sub": "42", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}),
    );
    host.properties.borrow_mut().insert("metadata".into(), md);
    host.with_headers(&[(":path", b"/")]);
    assert_eq!(shared.on_request_headers(&host, 2).0, Verdict::Continue);
    assert_eq!(host.header("x-epochgate-user").as_deref(), Some("42"));
}

#[test]
fn remote_jwks_keys_are_read_from_shared_data_and_unknown_kids_ask_for_a_refresh() {
    use base64::Engine as _;
    let (host, _) = synced_host();
    let shared = FilterShared::new(engine_with(json!({"remote_jwks": true, "keys": []})));
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let remote_secret = "remote-secret-0123456789abcdefghijkl";
    let sign = |kid: &str| {
        let input = format!(
            "{}.{}",
            b64(format!(r#"{{"alg":"HS256","kid":"{kid}"}}"#).as_bytes()),
            b64(br#"{"sub":"42","iat":1799999000,"exp":1800003000}"#)
        );
        format!(
            "{input}.{}",
            b64(&hmac_sha256::HMAC::mac(
                input.as_bytes(),
                remote_secret.as_bytes()
            ))
        )
    };
    let auth = format!("Bearer {}", sign("r1"));
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 1).0, Verdict::Stop);
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 503);
    assert!(host
        .shared_data_value(crate::shared_keys::JWKS_REFRESH)
        .is_some());
    let doc = json!({"keys": [{"kty": "oct", "kid": "r1", "alg": "HS256", "k": b64(remote_secret.as_bytes())}]});
    host.shared.borrow_mut().insert(
        crate::shared_keys::JWKS.into(),
        doc.to_string().into_bytes(),
    );
    host.shared
        .borrow_mut()
        .insert(crate::shared_keys::JWKS_VERSION.into(), b"1".to_vec());
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 2).0, Verdict::Continue);
    // The key is dropped at the IdP: the next version no longer has it.
    host.shared
        .borrow_mut()
        .insert(crate::shared_keys::JWKS.into(), br#"{"keys": []}"#.to_vec());
    host.shared
        .borrow_mut()
        .insert(crate::shared_keys::JWKS_VERSION.into(), b"2".to_vec());
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 3).0, Verdict::Stop);
}

#[test]
fn the_sync_service_fetches_the_jwks_and_refreshes_on_request_at_a_limited_rate() {
    let config = SyncConfig::from_json(
        br#"{"cluster": "cp", "jwks": {"cluster": "idp", "authority": "idp.test", "path": "/jwks", "refresh_s": 300, "min_refresh_s": 10}}"#,
    )
    .unwrap();
    let host = FakeHost::at(NOW);
    let mut sync = SyncService::new(config, "edge-token-0123456789".into(), "e".into());
    sync.on_tick(&host);
    let calls = host.calls.borrow().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, "idp");
    let jwks_token = host.next_token.get();
    host.answer_with(Some(200), br#"{"keys": [{"kty": "oct", "kid": "a", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"}]}"#);
    sync.on_response(&host, jwks_token, 1, 1);
    assert!(host.shared_data_value(crate::shared_keys::JWKS).is_some());
    assert_eq!(host.metric_value(Metric::JwksOk), 1);
    // A refresh request within min_refresh_s waits; after it, one fetch.
    host.advance(1_000);
    host.shared.borrow_mut().insert(
        crate::shared_keys::JWKS_REFRESH.into(),
        (NOW + 1_000).to_string().into_bytes(),
    );
    sync.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 2);
    host.advance(10_000);
    sync.on_tick(&host);
    assert_eq!(host.calls.borrow().len(), 3);
    // A bad answer keeps the previous keys.
    host.answer_with(Some(200), b"<html>");
    sync.on_response(&host, host.next_token.get(), 1, 1);
    assert_eq!(host.metric_value(Metric::JwksFailed), 1);
    assert!(
        String::from_utf8(host.shared_data_value(crate::shared_keys::JWKS).unwrap())
            .unwrap()
            .contains("\"a\"")
    );
}

#[test]
fn open_streams_end_when_their_session_is_revoked() {
    let (host, mut sync) = synced_host();
    let shared = FilterShared::new(engine());
    let auth = format!("Bearer {}", good_token());
    let other = format!(
        "Bearer {}",
        hs256(json!({"sub": "43", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}))
    );
    let sse: (&str, &[u8]) = ("accept", b"text/event-stream");
    host.with_headers(&[
        (":path", b"/events"),
        ("authorization", auth.as_bytes()),
        sse,
    ]);
    assert_eq!(shared.on_request_headers(&host, 10).0, Verdict::Continue);
    host.with_headers(&[
        (":path", b"/events"),
        ("authorization", other.as_bytes()),
        sse,
    ]);
    assert_eq!(shared.on_request_headers(&host, 11).0, Verdict::Continue);
    host.with_headers(&[
        (":path", b"/ws"),
        ("authorization", auth.as_bytes()),
        ("upgrade", b"websocket"),
    ]);
    assert_eq!(shared.on_request_headers(&host, 12).0, Verdict::Continue);
    // A plain request is not a stream: nothing to keep an eye on.
    host.with_headers(&[(":path", b"/api"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 13).0, Verdict::Continue);
    assert_eq!(shared.open_streams(), 3);
    assert!(shared.revoked_streams(&host).is_empty());
    assert!(shared.on_data(&host, 10));
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
                epoch_ms: Some(NOW),
            }],
            max_session_lifetime_s: 86_400,
            next: None,
        },
    );
    // A data frame on stream 10 ends it at once; the tick finds the idle stream 12.
    assert!(!shared.on_data(&host, 10));
    assert_eq!(host.resets.get(), 1);
    assert_eq!(shared.revoked_streams(&host), vec![12]);
    assert!(shared.on_data(&host, 11), "other users' streams go on");
    shared.on_done(11);
    assert_eq!(shared.open_streams(), 0);
}

#[test]
fn the_token_cache_skips_reverification_but_never_the_revocation_check() {
    let (host, mut sync) = synced_host();
    let shared = FilterShared::new(engine());
    let t = good_token();
    let auth = format!("Bearer {t}");
    for id in 1..=3 {
        host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
        assert_eq!(shared.on_request_headers(&host, id).0, Verdict::Continue);
    }
    assert_eq!(shared.cache_stats(), (2, 1), "verified once, then hits");
    // A different token with the same claims (a forged signature) is verified afresh.
    let forged = format!("Bearer {}.AAAA", &t[..t.rfind('.').unwrap()]);
    host.with_headers(&[(":path", b"/"), ("authorization", forged.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 4).0, Verdict::Stop);
    // A cached token is still revoked at once.
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
                epoch_ms: Some(NOW),
            }],
            max_session_lifetime_s: 86_400,
            next: None,
        },
    );
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 5).0, Verdict::Stop);
    assert_eq!(shared.cache_stats().0, 3, "a hit, and still denied");
}

#[test]
fn a_paged_snapshot_is_applied_page_by_page_and_counts_only_when_complete() {
    let (host, mut sync) = synced_host();
    let user = |u: &str| Change {
        target: epochgate_core::state::Target::User {
            tenant: "acme".into(),
            user: u.into(),
        },
        epoch_ms: Some(NOW),
    };
    // v2 holds user 41; the control plane then answers a fresh snapshot (v9) in pages.
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s".into(),
            version: 2,
            snapshot: false,
            changes: vec![user("41")],
            max_session_lifetime_s: 1,
            next: None,
        },
    );
    let mut page1 = SyncResponse {
        stream: "s2".into(),
        version: 9,
        snapshot: true,
        changes: vec![user("42")],
        max_session_lifetime_s: 1,
        next: None,
    };
    page1.next = Some(keys::user("acme", "42"));
    answer(&host, &mut sync, &page1);
    // Not synced to v9 yet: the status still says v2, user 41 is still held.
    assert!(
        String::from_utf8(host.shared_data_value(STATUS_KEY).unwrap())
            .unwrap()
            .starts_with("2 ")
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "41")),
        Some(NOW.to_string().into_bytes())
    );
    let path = host.last_path();
    assert!(
        path.starts_with("/v1/sync?since=0&wait=0&stream=s2&"),
        "{path}"
    );
    assert!(
        path.contains("&limit=10000&snapshot=9&after=u%2Facme%2F42"),
        "{path}"
    );
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s2".into(),
            version: 9,
            snapshot: true,
            changes: vec![user("43")],
            max_session_lifetime_s: 1,
            next: None,
        },
    );
    assert!(
        String::from_utf8(host.shared_data_value(STATUS_KEY).unwrap())
            .unwrap()
            .starts_with("9 ")
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "41")),
        Some(Vec::new()),
        "gone from the new snapshot"
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "42")),
        Some(NOW.to_string().into_bytes()),
        "from page 1"
    );
    assert_eq!(sync.version(), 9);
    assert!(
        host.last_path()
            .starts_with("/v1/sync?since=9&wait=20&stream=s2&"),
        "{}",
        host.last_path()
    );
}

/// `cargo test --release -p epochgate-filter -- --ignored --nocapture per_request_cost`:
/// the glue's own cost per allowed request, natively, with the fake host.
#[test]
#[ignore]
fn per_request_cost() {
    for (label, extra) in [
        ("report_sessions: false", json!({"report_sessions": false})),
        ("report_sessions: true", json!({})),
    ] {
        per_request_cost_with(label, extra);
    }
}

fn per_request_cost_with(label: &str, extra: serde_json::Value) {
    let (host, _) = synced_host();
    let shared = FilterShared::new(engine_with(extra));
    let auth = format!("Bearer {}", good_token());
    let headers: Vec<(&str, &[u8])> = vec![
        (":path", b"/"),
        (":method", b"GET"),
        (":authority", b"127.0.0.1:10000"),
        ("authorization", auth.as_bytes()),
        ("user-agent", b"wrk"),
        ("accept", b"*/*"),
    ];
    let n = 200_000;
    let start = std::time::Instant::now();
    for i in 0..n {
        host.with_headers(&headers);
        assert_eq!(shared.on_request_headers(&host, i).0, Verdict::Continue);
    }
    let per = start.elapsed().as_nanos() / u128::from(n);
    println!("{per} ns per allowed request (fake host, native, {label})");
}

fn request_as(host: &FakeHost, shared: &FilterShared, token: &str, ua: &[u8]) -> Verdict {
    let auth = format!("Bearer {token}");
    host.with_headers(&[
        (":path", b"/api"),
        ("authorization", auth.as_bytes()),
        ("user-agent", ua),
    ]);
    shared.on_request_headers(host, 1).0
}

const CHROME: &[u8] = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";

#[test]
fn sessions_seen_by_the_filter_vms_reach_the_control_plane_in_batches() {
    let (host, _) = synced_host();
    host.properties
        .borrow_mut()
        .insert("source.address".into(), b"203.0.113.7:51000".to_vec());
    let shared = FilterShared::new(engine_with(json!({"truncate_addresses": true})));
    let alice = hs256(
        json!({"sub": "alice", "tid": "acme", "sid": "a1", "iat": 1_799_999_000, "exp": 1_800_003_000}),
    );
    let bob =
        hs256(json!({"sub": "bob", "tid": "acme", "iat": 1_799_999_100, "exp": 1_800_003_000}));
    for _ in 0..5 {
        assert_eq!(
            request_as(&host, &shared, &alice, CHROME),
            Verdict::Continue
        );
    }
    assert_eq!(
        request_as(&host, &shared, &bob, b"AcmeApp/3.2.1 (iPhone; iOS 17.1)"),
        Verdict::Continue
    );
    assert_eq!(shared.sessions_tracked(), 2);
    assert!(
        host.queue.borrow().is_empty(),
        "handed on in batches, or on the tick"
    );
    shared.sessions_tick(&host);
    assert_eq!(
        host.queue.borrow().len(),
        1,
        "one queue entry for both new sessions"
    );

    let config = SyncConfig::from_json(br#"{"cluster": "cp", "sessions_report_s": 10}"#).unwrap();
    let mut uplink = SessionUplink::new(&config, "edge-token-0123456789", "edge-1");
    uplink.on_tick(&host);
    assert!(
        host.queue.borrow().is_empty(),
        "the sync VM drained the queue"
    );
    let (headers, body) = host
        .posts
        .borrow()
        .last()
        .cloned()
        .expect("a report was sent");
    let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    assert_eq!(get(":method").as_deref(), Some("POST"));
    assert_eq!(
        get(":path").as_deref(),
        Some("/v1/sync/sessions?edge=edge-1")
    );
    assert_eq!(
        get("authorization").as_deref(),
        Some("Bearer edge-token-0123456789")
    );
    let report: SessionReport = serde_json::from_slice(&body).unwrap();
    let mut seen: Vec<(String, String, Option<String>)> = report
        .sessions
        .iter()
        .map(|s| (s.user.clone(), s.device.clone(), s.address.clone()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            (
                "alice".into(),
                "Chrome 120 on Linux".into(),
                Some("203.0.113.0/24".into())
            ),
            (
                "bob".into(),
                "AcmeApp 3.2.1 (iOS)".into(),
                Some("203.0.113.0/24".into())
            ),
        ]
    );
    host.answer_with(Some(200), br#"{"accepted":2}"#);
    assert!(uplink.on_response(&host, host.next_token.get(), 1, 1));
    assert_eq!(host.metric_value(Metric::SessionReportsOk), 1);
    assert!(
        !uplink.on_response(&host, 999, 1, 1),
        "not a report: the sync loop's"
    );

    // A minute on: the requests counted meanwhile go, through the filter's tick too.
    host.advance(61_000);
    shared.sessions_tick(&host);
    uplink.on_tick(&host);
    let (_, body) = host.posts.borrow().last().cloned().unwrap();
    let report: SessionReport = serde_json::from_slice(&body).unwrap();
    assert_eq!(report.sessions.len(), 1);
    assert_eq!(report.sessions[0].user, "alice");
    assert_eq!(report.sessions[0].requests, 4);
    // A control plane that is down: that batch is gone, the next one goes.
    assert!(uplink.on_response(&host, host.next_token.get(), 0, 0));
    assert_eq!(host.metric_value(Metric::SessionReportsFailed), 1);
    assert_eq!(uplink.pending(), 0);
}

#[test]
fn report_sessions_false_records_nothing_and_a_missing_queue_only_counts() {
    let (host, _) = synced_host();
    let off = FilterShared::new(engine_with(json!({"report_sessions": false})));
    assert_eq!(
        request_as(&host, &off, &good_token(), CHROME),
        Verdict::Continue
    );
    assert_eq!(off.sessions_tracked(), 0);
    assert!(host.queue.borrow().is_empty());
    host.no_queue.set(true);
    let on = FilterShared::new(engine_with(json!({})));
    assert_eq!(
        request_as(&host, &on, &good_token(), CHROME),
        Verdict::Continue
    );
    on.sessions_tick(&host);
    assert_eq!(host.metric_value(Metric::SessionsDropped), 1);
}
