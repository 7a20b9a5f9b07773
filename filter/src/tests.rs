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
    SyncService::new(config, "edge-token-0123456789".into(), "edge-1".into(), 0)
}

fn answer(host: &FakeHost, sync: &mut SyncService, resp: &SyncResponse) {
    host.answer_with(Some(200), serde_json::to_string(resp).unwrap().as_bytes());
    let token = host.next_token.get();
    sync.on_response(host, token, 1, 1);
}

#[test]
fn every_decision_vector_passes_through_the_sync_service_and_the_filter() {
    crate::fake::VERIFY_CALLS.with(|c| c.set(0));
    for vectors in Vectors::all().unwrap() {
        // RS*/ES* through the (stand-in) host function, the rest in Rust: as in Envoy.
        let verifier = NativeVerifier::with(crate::fake::verify_signature);
        let shared =
            FilterShared::new(Engine::with_verifier(vectors.config().unwrap(), verifier).unwrap());
        check_vectors(&shared, &vectors);
    }
    assert!(
        crate::fake::VERIFY_CALLS.with(|c| c.get()) >= 20,
        "RS*/ES* went through verify_signature"
    );
}

fn check_vectors(shared: &FilterShared, vectors: &Vectors) {
    for case in &vectors.cases {
        let host = FakeHost::at(case.now_ms);
        let mut sync = sync_service();
        sync.on_tick(&host);
        let changes = case.sync_changes();
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
                tag: None,
            },
        );
        let auth = format!("Bearer {}", case.token);
        host.with_headers(&[(":path", b"/api"), ("authorization", auth.as_bytes())]);
        let verdict = shared.on_request_headers(&host, 1).verdict;
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
    .unwrap()
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
            tag: None,
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
        FilterShared::new(engine())
            .on_request_headers(&host, 1)
            .verdict,
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
            tag: None,
        },
    );
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        FilterShared::new(engine())
            .on_request_headers(&host, 7)
            .verdict,
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
        FilterShared::new(engine())
            .on_request_headers(&host, 1)
            .verdict,
        Verdict::Stop
    );
    let good = format!("Bearer {t}");
    host.with_headers(&[
        (":path", b"/"),
        ("authorization", good.as_bytes()),
        ("authorization", good.as_bytes()),
    ]);
    assert_eq!(
        FilterShared::new(engine())
            .on_request_headers(&host, 2)
            .verdict,
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
        FilterShared::new(engine())
            .on_request_headers(&host, 3)
            .verdict,
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
        FilterShared::new(engine())
            .on_request_headers(&host, 1)
            .verdict,
        Verdict::Stop
    );
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 503);
}

#[test]
fn a_new_stream_merges_and_what_it_lacks_stays_until_the_horizon() {
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
            tag: None,
        },
    );
    // A new stream (the control plane's store was restored or replaced) without 42: the
    // edge keeps 42's logout in force, and says so.
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
            tag: None,
        },
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "42")),
        Some(NOW.to_string().into_bytes())
    );
    assert_eq!(host.metric_value(Metric::SyncKept), 1);
    let status = host.shared_data_value(STATUS_KEY).unwrap();
    assert!(String::from_utf8(status).unwrap().ends_with(" 1 s2"));
    // Past the horizon (1 s here) by the edge's own clock, its sweep clears both.
    host.advance(epochgate_core::sync::client::SWEEP_EVERY_MS);
    sync.on_tick(&host);
    for u in ["42", "43"] {
        assert_eq!(
            host.shared_data_value(&keys::user("acme", u)),
            Some(Vec::new()),
            "{u}"
        );
    }
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
            tag: None,
        },
    );
    assert!(
        host.last_path().starts_with("/v1/sync?since=0&"),
        "{}",
        host.last_path()
    );
    // What it applied is still what it enforces (and how old it is).
    assert_eq!(sync.version(), 1);
    assert!(host.shared_data_value(STATUS_KEY).is_some());
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
    .unwrap()
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
    assert_eq!(shared.on_request_headers(&host, 1).verdict, Verdict::Stop);
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
            tag: None,
        },
    );
    let auth = format!("Bearer {}", good_token());
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    let handled = FilterShared::new(engine()).on_request_headers(&host, 1);
    let (verdict, response_headers) = (handled.verdict, handled.response_headers);
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
        shared.on_request_headers(&host, 1).verdict,
        Verdict::Stop,
        "no metadata: denied, header ignored"
    );
    // Metadata { filter_metadata: {"envoy.filters.http.jwt_authn": {"jwt_payload": {"sub": "42", "exp": ...}}} }
    let md = crate::metadata::tests_support::metadata_with_payload(
        &json!({"sub": "42", "tid": "acme", "iat": 1_799_999_000, "exp": 1_800_003_000}),
    );
    host.properties.borrow_mut().insert("metadata".into(), md);
    host.with_headers(&[(":path", b"/")]);
    assert_eq!(
        shared.on_request_headers(&host, 2).verdict,
        Verdict::Continue
    );
    assert_eq!(host.header("x-epochgate-user").as_deref(), Some("42"));
}

/// An ES256 key pair of the IdP, its JWK, and tokens it signs (at `NOW`).
struct Idp {
    key: jwt_simple::prelude::ES256KeyPair,
    kid: String,
}

impl Idp {
    fn new(kid: &str) -> Self {
        let key = jwt_simple::prelude::ES256KeyPair::generate().with_key_id(kid);
        Self {
            key,
            kid: kid.into(),
        }
    }

    fn jwk(&self) -> serde_json::Value {
        use base64::Engine as _;
        use jwt_simple::prelude::ECDSAP256PublicKeyLike as _;
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let point = self.key.public_key().public_key().to_bytes_uncompressed();
        json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": self.kid,
               "x": b64(&point[1..33]), "y": b64(&point[33..65])})
    }

    fn bearer(&self) -> String {
        use jwt_simple::prelude::*;
        let mut c = Claims::with_custom_claims(json!({"tid": "acme"}), Duration::from_secs(3600))
            .with_subject("42");
        c.issued_at = Some(Duration::from_secs(NOW / 1000 - 60));
        c.expires_at = Some(Duration::from_secs(NOW / 1000 + 3000));
        format!("Bearer {}", self.key.sign(c).unwrap())
    }
}

/// What the sync service does after a fetch: the document and a new version.
fn publish_jwks(host: &FakeHost, doc: &serde_json::Value, version: &str) {
    let mut shared = host.shared.borrow_mut();
    shared.insert(
        crate::shared_keys::JWKS.into(),
        doc.to_string().into_bytes(),
    );
    shared.insert(
        crate::shared_keys::JWKS_VERSION.into(),
        version.as_bytes().to_vec(),
    );
}

fn remote_filter() -> FilterShared {
    FilterShared::new(engine_with(json!({"remote_jwks": true, "keys": []})))
}

#[test]
fn an_unknown_kid_waits_for_the_refresh_it_asked_for_and_is_then_decided() {
    let (host, _) = synced_host();
    let shared = remote_filter();
    let idp = Idp::new("r1");
    let auth = idp.bearer();
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 1).verdict, Verdict::Wait);
    assert!(host.sent.borrow().is_none(), "no answer while it waits");
    assert!(shared.is_waiting(1));
    assert!(host
        .shared_data_value(crate::shared_keys::JWKS_REFRESH)
        .is_some());
    assert_eq!(host.metric_value(Metric::KeyWaits), 1);
    host.advance(100);
    assert!(shared.due_waits(&host).is_empty(), "nothing changed yet");
    // The sync service fetched: the key is there.
    publish_jwks(&host, &json!({"keys": [idp.jwk()]}), "1");
    assert_eq!(shared.due_waits(&host), vec![1]);
    assert!(!shared.is_waiting(1));
    assert_eq!(shared.decide_after_wait(&host, 1), Verdict::Continue);
    assert_eq!(host.header("x-epochgate-user").as_deref(), Some("42"));
    assert!(host.sent.borrow().is_none());
    assert_eq!(host.metric_value(Metric::Denied(DenyReason::UnknownKey)), 0);

    // Known now: no wait.
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        shared.on_request_headers(&host, 2).verdict,
        Verdict::Continue
    );
}

#[test]
fn a_held_request_gets_503_once_the_refresh_fails_or_the_wait_runs_out() {
    let (host, _) = synced_host();
    let shared = remote_filter();
    let (known, rotated) = (Idp::new("r1"), Idp::new("r2"));
    publish_jwks(&host, &json!({"keys": [known.jwk()]}), "1");
    let auth = rotated.bearer();
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 1).verdict, Verdict::Wait);
    // The refresh failed after the request came: answered at once, 503, retry.
    host.advance(300);
    host.shared.borrow_mut().insert(
        crate::shared_keys::JWKS_FAILED.into(),
        host.now_ms.get().to_string().into_bytes(),
    );
    assert_eq!(shared.due_waits(&host), vec![1]);
    assert_eq!(shared.decide_after_wait(&host, 1), Verdict::Stop);
    let sent = host.sent.borrow().clone().unwrap();
    assert_eq!(sent.0, 503);
    assert!(
        sent.1.contains(&("retry-after".into(), "1".into())),
        "{sent:?}"
    );
    assert_eq!(host.metric_value(Metric::Denied(DenyReason::UnknownKey)), 1);

    // No answer from the fetcher: the wait is bounded (key_refresh_wait_ms, 2 s).
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 2).verdict, Verdict::Wait);
    host.advance(1_999);
    assert!(shared.due_waits(&host).is_empty());
    host.advance(1);
    assert_eq!(shared.due_waits(&host), vec![2]);
    assert_eq!(shared.decide_after_wait(&host, 2), Verdict::Stop);
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 503);

    // A refresh that brings other keys but not this kid: 503 too, never a second wait.
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 3).verdict, Verdict::Wait);
    publish_jwks(&host, &json!({"keys": [known.jwk()]}), "2");
    assert_eq!(shared.due_waits(&host), vec![3]);
    assert_eq!(shared.decide_after_wait(&host, 3), Verdict::Stop);

    // A stream that ends while held is forgotten.
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 4).verdict, Verdict::Wait);
    shared.on_done(4);
    assert!(!shared.has_waits());
}

#[test]
fn held_requests_are_bounded_and_a_zero_wait_answers_at_once() {
    let (host, _) = synced_host();
    let shared = remote_filter();
    let auth = Idp::new("r9").bearer();
    for id in 0..1024 {
        host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
        assert_eq!(shared.on_request_headers(&host, id).verdict, Verdict::Wait);
    }
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        shared.on_request_headers(&host, 5000).verdict,
        Verdict::Stop
    );
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 503);

    let shared = FilterShared::new(engine_with(
        json!({"remote_jwks": true, "keys": [], "key_refresh_wait_ms": 0}),
    ));
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 1).verdict, Verdict::Stop);
}

#[test]
fn symmetric_remote_keys_are_never_used_and_an_unusable_jwks_keeps_the_previous_keys() {
    use base64::Engine as _;
    let (host, _) = synced_host();
    let shared = remote_filter();
    let idp = Idp::new("r1");
    let auth = idp.bearer();
    publish_jwks(&host, &json!({"keys": [idp.jwk()]}), "1");
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        shared.on_request_headers(&host, 1).verdict,
        Verdict::Continue
    );

    // An empty list, or one that yields no usable key: the previous keys stay.
    let failed = host.metric_value(Metric::JwksFailed);
    for (i, doc) in [
        json!({"keys": []}),
        json!({"keys": [{"kty": "RSA", "kid": "x", "n": "AQAB", "e": "AQAB"}]}),
    ]
    .iter()
    .enumerate()
    {
        publish_jwks(&host, doc, &format!("{}", i + 2));
        host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
        assert_eq!(
            shared.on_request_headers(&host, 10 + i as u32).verdict,
            Verdict::Continue,
            "{doc}"
        );
    }
    assert_eq!(
        host.metric_value(Metric::JwksFailed),
        failed + 2,
        "each refused once"
    );

    // An HMAC key published at a URL is no secret: never used, whoever signs with it.
    let secret = "a-secret-anyone-can-read-at-the-jwks-url";
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","kid":"oct"}"#),
        b64(br#"{"sub":"42","tid":"acme","iat":1799999000,"exp":1800003000}"#)
    );
    let forged = format!(
        "Bearer {input}.{}",
        b64(&hmac_sha256::HMAC::mac(input.as_bytes(), secret.as_bytes()))
    );
    publish_jwks(
        &host,
        &json!({"keys": [idp.jwk(), {"kty": "oct", "kid": "oct", "alg": "HS256", "k": b64(secret.as_bytes())}]}),
        "9",
    );
    host.with_headers(&[(":path", b"/"), ("authorization", forged.as_bytes())]);
    assert_ne!(
        shared.on_request_headers(&host, 20).verdict,
        Verdict::Continue
    );
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        shared.on_request_headers(&host, 21).verdict,
        Verdict::Continue
    );
}

#[test]
fn the_sync_service_fetches_the_jwks_and_refreshes_on_request_at_a_limited_rate() {
    let config = SyncConfig::from_json(
        br#"{"cluster": "cp", "jwks": {"cluster": "idp", "authority": "idp.test", "path": "/jwks", "refresh_s": 300, "min_refresh_s": 10}}"#,
    )
    .unwrap();
    let host = FakeHost::at(NOW);
    let mut sync = SyncService::new(config, "edge-token-0123456789".into(), "e".into(), 0);
    sync.on_tick(&host);
    let calls = host.calls.borrow().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].0, "idp");
    let jwks_token = host.next_token.get();
    let doc = json!({"keys": [Idp::new("a").jwk()]}).to_string();
    host.answer_with(Some(200), doc.as_bytes());
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
    // A bad answer, an empty key list, symmetric keys only: each a failed fetch that
    // keeps the previous keys, and tells held requests to stop waiting.
    for bad in [
        "<html>",
        r#"{"keys": []}"#,
        r#"{"keys": [{"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC0"}]}"#,
    ] {
        let failed = host.metric_value(Metric::JwksFailed);
        host.answer_with(Some(200), bad.as_bytes());
        sync.on_response(&host, host.next_token.get(), 1, 1);
        assert_eq!(host.metric_value(Metric::JwksFailed), failed + 1, "{bad}");
        assert_eq!(
            host.shared_data_value(crate::shared_keys::JWKS).unwrap(),
            doc.as_bytes(),
            "{bad}"
        );
        assert_eq!(
            host.shared_data_value(crate::shared_keys::JWKS_FAILED),
            Some(host.now_ms.get().to_string().into_bytes())
        );
        // Next attempt (past the backoff and min_refresh_s).
        host.advance(20_000);
        host.shared.borrow_mut().insert(
            crate::shared_keys::JWKS_REFRESH.into(),
            host.now_ms.get().to_string().into_bytes(),
        );
        sync.on_tick(&host);
    }
}

#[test]
fn a_path_that_is_not_utf8_is_judged_unreadable_never_as_root() {
    let (host, _) = synced_host();
    let shared = FilterShared::new(engine_with(json!({
        "require_token": false,
        "routes": [{"prefix": "/admin", "require_token": true}]
    })));
    host.with_headers(&[(":path", b"/")]);
    assert_eq!(
        shared.on_request_headers(&host, 1).verdict,
        Verdict::Continue
    );
    host.with_headers(&[(":path", b"/admin/\xff")]);
    assert_eq!(shared.on_request_headers(&host, 2).verdict, Verdict::Stop);
    assert_eq!(host.sent.borrow().as_ref().unwrap().0, 401);
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
    assert_eq!(
        shared.on_request_headers(&host, 10).verdict,
        Verdict::Continue
    );
    host.with_headers(&[
        (":path", b"/events"),
        ("authorization", other.as_bytes()),
        sse,
    ]);
    assert_eq!(
        shared.on_request_headers(&host, 11).verdict,
        Verdict::Continue
    );
    host.with_headers(&[
        (":path", b"/ws"),
        ("authorization", auth.as_bytes()),
        ("upgrade", b"websocket"),
    ]);
    assert_eq!(
        shared.on_request_headers(&host, 12).verdict,
        Verdict::Continue
    );
    // A plain request is not a stream: nothing to keep an eye on.
    host.with_headers(&[(":path", b"/api"), ("authorization", auth.as_bytes())]);
    assert_eq!(
        shared.on_request_headers(&host, 13).verdict,
        Verdict::Continue
    );
    assert_eq!(shared.open_streams(), 3);
    assert!(shared.ended_streams(&host).is_empty());
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
            tag: None,
        },
    );
    // A data frame on stream 10 ends it at once; the tick finds the idle stream 12.
    assert!(!shared.on_data(&host, 10));
    assert_eq!(host.resets.get(), 1);
    assert_eq!(shared.ended_streams(&host), vec![12]);
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
        assert_eq!(
            shared.on_request_headers(&host, id).verdict,
            Verdict::Continue
        );
    }
    assert_eq!(shared.cache_stats(), (2, 1), "verified once, then hits");
    // A different token with the same claims (a forged signature) is verified afresh.
    let forged = format!("Bearer {}.AAAA", &t[..t.rfind('.').unwrap()]);
    host.with_headers(&[(":path", b"/"), ("authorization", forged.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 4).verdict, Verdict::Stop);
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
            tag: None,
        },
    );
    host.with_headers(&[(":path", b"/"), ("authorization", auth.as_bytes())]);
    assert_eq!(shared.on_request_headers(&host, 5).verdict, Verdict::Stop);
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
            tag: None,
        },
    );
    let mut page1 = SyncResponse {
        stream: "s2".into(),
        version: 9,
        snapshot: true,
        changes: vec![user("42")],
        max_session_lifetime_s: 1,
        next: None,
        tag: None,
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
            tag: None,
        },
    );
    assert!(
        String::from_utf8(host.shared_data_value(STATUS_KEY).unwrap())
            .unwrap()
            .starts_with("9 ")
    );
    assert_eq!(
        host.shared_data_value(&keys::user("acme", "41")),
        Some(NOW.to_string().into_bytes()),
        "in no page of the new snapshot: kept in force"
    );
    assert_eq!(host.metric_value(Metric::SyncKept), 1);
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
        assert_eq!(
            shared.on_request_headers(&host, i).verdict,
            Verdict::Continue
        );
    }
    let per = start.elapsed().as_nanos() / u128::from(n);
    println!("{per} ns per allowed request (fake host, native, {label})");
    let calls = host.host_calls.borrow();
    let per_request: Vec<String> = calls
        .iter()
        .map(|(call, c)| format!("{call} {:.2}", *c as f64 / f64::from(n)))
        .collect();
    println!("host calls per request: {}", per_request.join(", "));
}

#[test]
fn a_warm_allowed_request_costs_six_host_calls() {
    // Each host call costs Envoy a wasm-to-host transition; `make bench` measured what
    // they cost. A warm request (token cached, state unchanged): the headers once, the
    // status once (the epochs come from the per-version cache), the clock once, one
    // counter, and the two identity headers.
    let (host, _) = synced_host();
    let shared = FilterShared::new(engine_with(json!({"report_sessions": false})));
    let auth = format!("Bearer {}", good_token());
    let headers: Vec<(&str, &[u8])> = vec![(":path", b"/"), ("authorization", auth.as_bytes())];
    for i in 0..2 {
        host.with_headers(&headers);
        assert_eq!(
            shared.on_request_headers(&host, i).verdict,
            Verdict::Continue
        );
    }
    host.host_calls.borrow_mut().clear();
    host.with_headers(&headers);
    assert_eq!(
        shared.on_request_headers(&host, 3).verdict,
        Verdict::Continue
    );
    let calls: Vec<(&str, u64)> = host
        .host_calls
        .borrow()
        .iter()
        .map(|(c, n)| (*c, *n))
        .collect();
    assert_eq!(
        calls,
        [
            ("metric", 1),
            ("now_ms", 1),
            ("request_headers", 1),
            ("set_request_header", 2),
            ("shared_data", 1)
        ]
    );
}

fn request_as(host: &FakeHost, shared: &FilterShared, token: &str, ua: &[u8]) -> Verdict {
    let auth = format!("Bearer {token}");
    host.with_headers(&[
        (":path", b"/api"),
        ("authorization", auth.as_bytes()),
        ("user-agent", ua),
    ]);
    shared.on_request_headers(host, 1).verdict
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

/// Item 4 of "revoked stays revoked": a failing host call ends in a deny (503
/// `state_unavailable` or 500), never in a pass. Envoy cannot be made to fail these
/// calls, so the fake host fails them.
mod host_failures {
    use super::*;
    use crate::fake::Failures;

    fn logged_out_42() -> (FakeHost, SyncService) {
        let (host, mut sync) = synced_host();
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
                tag: None,
            },
        );
        (host, sync)
    }

    fn request(host: &FakeHost, fail: Failures, extra: &[(&str, &[u8])]) -> Option<u16> {
        let auth = format!("Bearer {}", good_token());
        let mut headers: Vec<(&str, &[u8])> =
            vec![(":path", b"/public"), ("authorization", auth.as_bytes())];
        headers.extend_from_slice(extra);
        host.with_headers(&headers);
        *host.fail.borrow_mut() = fail;
        let shared = FilterShared::new(engine_with(
            json!({"routes": [{"prefix": "/public", "require_token": false}]}),
        ));
        let verdict = shared.on_request_headers(host, 1).verdict;
        *host.fail.borrow_mut() = Failures::default();
        let sent = host.sent.borrow().as_ref().map(|s| s.0);
        assert_eq!(verdict == Verdict::Stop, sent.is_some());
        sent
    }

    #[test]
    fn a_failing_clock_read_denies_503() {
        let (host, _) = logged_out_42();
        let fail = Failures {
            clock: true,
            ..Failures::default()
        };
        assert_eq!(request(&host, fail, &[]), Some(503));
        assert_eq!(host.metric_value(Metric::HostCallFailed), 1);
        assert_eq!(
            host.metric_value(Metric::Denied(DenyReason::StateUnavailable)),
            1
        );
    }

    #[test]
    fn a_failing_shared_data_read_denies_503() {
        let (host, _) = logged_out_42();
        let fail = Failures {
            epoch_read: true,
            ..Failures::default()
        };
        assert_eq!(request(&host, fail, &[]), Some(503));
        assert_eq!(host.metric_value(Metric::HostCallFailed), 1);
        // Not a session_revoked: a host failure never sends anyone to the login page.
        let body = host.sent.borrow().as_ref().unwrap().2.clone();
        assert_eq!(body, br#"{"error":"state_unavailable"}"#);
    }

    #[test]
    fn a_failing_header_read_denies_500() {
        let (host, _) = logged_out_42();
        let fail = Failures {
            header_read: true,
            ..Failures::default()
        };
        assert_eq!(request(&host, fail, &[]), Some(500));
        assert_eq!(host.metric_value(Metric::HostCallFailed), 1);
        assert_eq!(
            host.metric_value(Metric::Denied(DenyReason::InternalError)),
            1
        );
    }

    #[test]
    fn a_failing_header_write_denies_500() {
        let (host, _) = synced_host();
        let fail = Failures {
            header_write: true,
            ..Failures::default()
        };
        assert_eq!(
            request(&host, fail, &[("x-epochgate-user", b"admin")]),
            Some(500),
            "a spoofed identity header could not be stripped"
        );
        assert_eq!(host.metric_value(Metric::HostCallFailed), 1);
        assert_eq!(host.metric_value(Metric::Allowed), 0);
    }

    #[test]
    fn failures_are_logged_at_most_once_per_interval() {
        let limiter = crate::http::LogLimiter::default();
        assert!(limiter.should_log(Some(NOW)));
        assert!(!limiter.should_log(Some(NOW + 9_999)));
        assert!(limiter.should_log(Some(NOW + 10_000)));
        // Without a clock: the first of every 1000.
        assert!(limiter.should_log(None));
        assert!((0..999).all(|_| !limiter.should_log(None)));
        assert!(limiter.should_log(None));
    }

    #[test]
    fn the_sync_service_never_applies_or_stamps_without_a_clock() {
        let (host, mut sync) = synced_host();
        let status = host.shared_data_value(STATUS_KEY);
        host.fail.borrow_mut().clock = true;
        sync.on_tick(&host);
        host.answer_with(
            Some(200),
            serde_json::to_string(&SyncResponse {
                stream: "s".into(),
                version: 2,
                snapshot: false,
                changes: vec![],
                max_session_lifetime_s: 86_400,
                next: None,
                tag: None,
            })
            .unwrap()
            .as_bytes(),
        );
        sync.on_response(&host, host.next_token.get(), 1, 1);
        assert_eq!(
            host.shared_data_value(STATUS_KEY),
            status,
            "no time-0 stamp"
        );
        assert_eq!(sync.version(), 1);
        assert!(host.metric_value(Metric::HostCallFailed) >= 1);
        // The clock is back: the loop goes on after its backoff.
        host.fail.borrow_mut().clock = false;
        host.advance(2_000);
        let calls = host.calls.borrow().len();
        sync.on_tick(&host);
        assert_eq!(host.calls.borrow().len(), calls + 1);
    }

    #[test]
    fn a_refused_shared_data_write_is_repaired_by_a_snapshot_before_the_status_moves() {
        let (host, mut sync) = synced_host();
        host.refuse_writes.borrow_mut().push("u/".into());
        answer(&host, &mut sync, &delta_42(2));
        assert_eq!(host.metric_value(Metric::HostCallFailed), 1);
        assert!(
            String::from_utf8(host.shared_data_value(STATUS_KEY).unwrap())
                .unwrap()
                .starts_with("1 "),
            "the status does not claim v2"
        );
        host.refuse_writes.borrow_mut().clear();
        host.advance(2_000);
        sync.on_tick(&host);
        assert!(
            host.last_path().starts_with("/v1/sync?since=0&"),
            "{}",
            host.last_path()
        );
        let mut snapshot = delta_42(2);
        snapshot.snapshot = true;
        answer(&host, &mut sync, &snapshot);
        assert_eq!(
            host.shared_data_value(&keys::user("acme", "42")),
            Some((NOW - 500).to_string().into_bytes())
        );
        assert!(
            String::from_utf8(host.shared_data_value(STATUS_KEY).unwrap())
                .unwrap()
                .starts_with("2 ")
        );
    }

    fn delta_42(version: u64) -> SyncResponse {
        SyncResponse {
            stream: "s".into(),
            version,
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
            tag: None,
        }
    }
}

/// Item 7 of "revoked stays revoked": a stream ends when a scheduled logout's time
/// passes (no state change announces it), and a long download is watched on its data.
#[test]
fn streams_end_at_a_scheduled_logout_and_downloads_at_a_logout() {
    let (host, mut sync) = synced_host();
    let shared = FilterShared::new(engine());
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
                epoch_ms: Some(NOW + 3_000),
            }],
            max_session_lifetime_s: 86_400,
            next: None,
            tag: None,
        },
    );
    let auth = format!("Bearer {}", good_token());
    host.with_headers(&[
        (":path", b"/events"),
        ("authorization", auth.as_bytes()),
        ("accept", b"text/event-stream"),
    ]);
    let h = shared.on_request_headers(&host, 10);
    assert!(
        h.watch.is_none(),
        "a stream is watched by the VM, on its tick"
    );
    assert!(shared.ended_streams(&host).is_empty());
    host.advance(2_999);
    assert!(shared.ended_streams(&host).is_empty());
    host.advance(1);
    assert_eq!(
        shared.ended_streams(&host),
        vec![10],
        "at `at`, with no new version"
    );

    // A download (not a stream by its headers): watched on its response data.
    let other = format!(
        "Bearer {}",
        hs256(json!({"sub": "7", "tid": "globex", "iat": 1_799_999_000, "exp": 1_800_003_000}))
    );
    host.with_headers(&[(":path", b"/file"), ("authorization", other.as_bytes())]);
    let h = shared.on_request_headers(&host, 11);
    assert_eq!(h.verdict, Verdict::Continue);
    let mut download = crate::http::Download::new(h.watch.unwrap(), host.now_ms.get());
    assert!(shared.on_download_data(&host, 11, &mut download));
    answer(
        &host,
        &mut sync,
        &SyncResponse {
            stream: "s".into(),
            version: 3,
            snapshot: false,
            changes: vec![Change {
                target: epochgate_core::state::Target::User {
                    tenant: "globex".into(),
                    user: "7".into(),
                },
                epoch_ms: Some(host.now_ms.get()),
            }],
            max_session_lifetime_s: 86_400,
            next: None,
            tag: None,
        },
    );
    // Within 250 ms of its last look it does not read the state again.
    host.advance(100);
    assert!(shared.on_download_data(&host, 11, &mut download));
    host.advance(150);
    let resets = host.resets.get();
    assert!(!shared.on_download_data(&host, 11, &mut download));
    assert_eq!(host.resets.get(), resets + 1);
    assert!(host.metric_value(Metric::StreamsEnded) >= 1);
}
