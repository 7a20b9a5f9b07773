//! Handlers through `app(state).oneshot(req)`: every route, every refusal, JSON always.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use epochgate_control_plane::now_ms;
use serde_json::{json, Value};

use crate::common::{
    admin_get, admin_post, edge_get, request, send, test_app, ADMIN, EDGE, LIFETIME_S,
};

#[tokio::test]
async fn logout_user_answers_the_committed_revocation() {
    let app = test_app().await;
    let before = now_ms();
    let a = admin_post(&app.state, "/v1/tenants/acme/users/42/logout", None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json["target"],
        json!({"scope": "user", "tenant": "acme", "user": "42"})
    );
    assert_eq!(a.json["version"], 1);
    let epoch = a.json["epoch_ms"].as_u64().unwrap();
    assert!(epoch >= before && epoch <= now_ms());
}

#[tokio::test]
async fn every_admin_write_route() {
    let app = test_app().await;
    let cases = [
        (
            "/v1/tenants/acme/logout",
            json!({"scope": "tenant", "tenant": "acme"}),
        ),
        (
            "/v1/tenants/acme/sessions/s-9/revoke",
            json!({"scope": "session", "tenant": "acme", "sid": "s-9"}),
        ),
        ("/v1/logout", json!({"scope": "global"})),
        (
            "/v1/tenants/acme/users/7/logout",
            json!({"scope": "user", "tenant": "acme", "user": "7"}),
        ),
    ];
    for (i, (uri, target)) in cases.into_iter().enumerate() {
        let a = admin_post(&app.state, uri, Some(r#"{"reason": "incident 12"}"#)).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.text);
        assert_eq!(a.json["target"], target, "{uri}");
        assert_eq!(a.json["version"], i as u64 + 1);
    }
    let audit = admin_get(&app.state, "/v1/audit").await;
    assert_eq!(audit.status, StatusCode::OK);
    let entries = audit.json["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(entries[0]["action"], "logout_user", "newest first");
    assert_eq!(entries[0]["reason"], "incident 12");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[3]["action"], "logout_tenant");
    assert_eq!(
        entries[2]["target"],
        json!({"scope": "session", "tenant": "acme", "sid": "s-9"})
    );
    let limited = admin_get(&app.state, "/v1/audit?limit=1").await;
    assert_eq!(limited.json["entries"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn percent_encoded_ids_round_trip() {
    let app = test_app().await;
    let a = admin_post(
        &app.state,
        "/v1/tenants/a%2Fb/users/auth0%7C5f7c8ec7/logout",
        Some("{}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json["target"],
        json!({"scope": "user", "tenant": "a/b", "user": "auth0|5f7c8ec7"})
    );
    let s = admin_post(
        &app.state,
        "/v1/tenants/a%2Fb/sessions/x%20y%C3%A9/revoke",
        None,
    )
    .await;
    assert_eq!(s.json["target"]["sid"], "x yé");

    let listed = admin_get(&app.state, "/v1/tenants/a%2Fb/revocations").await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json["tenant"], "a/b");
    let revs = listed.json["revocations"].as_array().unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0]["user"], "auth0|5f7c8ec7");
    assert_eq!(revs[0]["version"], 1);
    assert!(revs[0]["epoch_ms"].as_u64().is_some());
    // Not the tenant `a`, whose id is a prefix of `a/b`'s path.
    let other = admin_get(&app.state, "/v1/tenants/a/revocations").await;
    assert_eq!(other.json["revocations"], json!([]));
}

#[tokio::test]
async fn the_actor_header_names_the_operator() {
    let app = test_app().await;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/logout")
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("x-epochgate-actor", "alice")
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app.state, req).await.status, StatusCode::OK);
    let audit = admin_get(&app.state, "/v1/audit").await;
    assert_eq!(audit.json["entries"][0]["actor"], "admin (alice)");
}

#[tokio::test]
async fn missing_and_wrong_credentials_are_401() {
    let app = test_app().await;
    for (uri, method) in [
        ("/v1/tenants/acme/users/42/logout", "POST"),
        ("/v1/edges", "GET"),
        ("/v1/sync?since=0&edge=e", "GET"),
    ] {
        let a = send(&app.state, request(method, uri, None, None)).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(a.error(), "unauthorized");
        assert!(a.headers.get("www-authenticate").is_some());
        let a = send(
            &app.state,
            request(method, uri, Some("not-the-token-at-all"), None),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert_eq!(a.error(), "unauthorized");
    }
    let basic = Request::builder()
        .uri("/v1/edges")
        .header("authorization", format!("Basic {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        send(&app.state, basic).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        *app.state.store().subscribe().borrow(),
        0,
        "nothing was written"
    );
}

#[tokio::test]
async fn each_token_is_refused_on_the_other_side_with_403() {
    let app = test_app().await;
    for (uri, method) in [
        ("/v1/tenants/acme/users/42/logout", "POST"),
        ("/v1/logout", "POST"),
        ("/v1/edges", "GET"),
        ("/v1/audit", "GET"),
        ("/v1/tenants/acme/revocations", "GET"),
    ] {
        let a = send(&app.state, request(method, uri, Some(EDGE), None)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(a.error(), "forbidden");
    }
    let a = send(
        &app.state,
        request("GET", "/v1/sync?since=0&edge=e", Some(ADMIN), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.error(), "forbidden");
}

#[tokio::test]
async fn bad_bodies_are_refused_naming_the_field() {
    let app = test_app().await;
    let uri = "/v1/tenants/acme/users/42/logout";

    let a = admin_post(&app.state, uri, Some("{not json")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_json");

    let a = admin_post(&app.state, uri, Some(r#"{"reason": "x", "force": true}"#)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_json");
    assert!(
        a.json["detail"].as_str().unwrap().contains("force"),
        "{}",
        a.text
    );

    let a = admin_post(&app.state, uri, Some(r#"{"reason": 5}"#)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.json["detail"].as_str().unwrap().contains("reason"),
        "{}",
        a.text
    );

    let long = format!(r#"{{"reason": "{}"}}"#, "r".repeat(1025));
    let a = admin_post(&app.state, uri, Some(&long)).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_field");
    assert!(a.json["detail"].as_str().unwrap().contains("reason"));
    let ok = format!(r#"{{"reason": "{}"}}"#, "r".repeat(1024));
    assert_eq!(
        admin_post(&app.state, uri, Some(&ok)).await.status,
        StatusCode::OK
    );

    let text = Request::builder()
        .method("POST")
        .uri(uri)
        .header("authorization", format!("Bearer {ADMIN}"))
        .header("content-type", "text/plain")
        .body(Body::from(r#"{"reason":"x"}"#))
        .unwrap();
    let a = send(&app.state, text).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(a.error(), "unsupported_media_type");

    let huge = format!(r#"{{"reason": "{}"}}"#, "r".repeat(17 * 1024));
    let a = admin_post(&app.state, uri, Some(&huge)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.error(), "body_too_large");

    // Only the one write with a valid body went through.
    assert_eq!(*app.state.store().subscribe().borrow(), 1);
}

#[tokio::test]
async fn bad_ids_are_refused_naming_the_parameter() {
    let app = test_app().await;
    let long = "x".repeat(257);
    let cases = [
        ("/v1/tenants//logout".to_string(), "`tenant` is empty"),
        (
            format!("/v1/tenants/acme/users/{long}/logout"),
            "`user` is longer than 256 bytes",
        ),
        (
            "/v1/tenants/acme/users/a%0Ab/logout".to_string(),
            "`user` contains a control character",
        ),
        (
            "/v1/tenants/ac%00me/sessions/s/revoke".to_string(),
            "`tenant` contains a control character",
        ),
        (
            "/v1/tenants/acme/sessions/%7F/revoke".to_string(),
            "`sid` contains a control character",
        ),
    ];
    for (uri, detail) in cases {
        let a = admin_post(&app.state, &uri, None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{uri}: {}", a.text);
        assert_eq!(a.error(), "invalid_id", "{uri}");
        assert_eq!(a.json["detail"], detail, "{uri}");
    }
    let ok = format!("/v1/tenants/acme/users/{}/logout", "x".repeat(256));
    assert_eq!(
        admin_post(&app.state, &ok, None).await.status,
        StatusCode::OK
    );

    let a = admin_post(&app.state, "/v1/tenants/%FF/logout", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_path");
    assert!(a.json["detail"].as_str().unwrap().contains("tenant"));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = test_app().await;
    let a = send(&app.state, request("GET", "/v2/nothing", None, None)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.error(), "not_found");

    let a = send(&app.state, request("GET", "/v1/logout", Some(ADMIN), None)).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.error(), "method_not_allowed");
    assert_eq!(a.headers.get("allow").unwrap(), "POST");

    let a = send(&app.state, request("DELETE", "/v1/sync", Some(EDGE), None)).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(a.error(), "method_not_allowed");
}

#[tokio::test]
async fn sync_selects_snapshots_and_deltas() {
    let app = test_app().await;
    let s = &app.state;
    admin_post(s, "/v1/tenants/acme/users/1/logout", None).await;
    admin_post(s, "/v1/tenants/acme/users/2/logout", None).await;

    let snap = edge_get(s, "/v1/sync?since=0&edge=envoy-1").await;
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.text);
    assert_eq!(snap.json["snapshot"], true);
    assert_eq!(snap.json["version"], 2);
    assert_eq!(snap.json["max_session_lifetime_s"], LIFETIME_S);
    assert_eq!(snap.json["changes"].as_array().unwrap().len(), 2);
    let stream = snap.json["stream"].as_str().unwrap().to_string();
    // The wire type is core's.
    let parsed: epochgate_core::sync::SyncResponse =
        serde_json::from_value(snap.json.clone()).unwrap();
    assert!(parsed.changes[0].epoch_ms.is_some());

    let delta = edge_get(s, &format!("/v1/sync?since=1&stream={stream}&edge=envoy-1")).await;
    assert_eq!(delta.json["snapshot"], false);
    assert_eq!(delta.json["changes"][0]["user"], "2");

    let current = edge_get(s, &format!("/v1/sync?since=2&stream={stream}&edge=envoy-1")).await;
    assert_eq!(current.json["snapshot"], false);
    assert_eq!(current.json["changes"], json!([]));
    assert_eq!(current.json["version"], 2);

    let again = edge_get(s, &format!("/v1/sync?since=0&stream={stream}&edge=envoy-1")).await;
    assert_eq!(
        again.json["snapshot"], false,
        "since 0 of this stream: a delta"
    );
    assert_eq!(again.json["changes"].as_array().unwrap().len(), 2);

    let other = edge_get(s, "/v1/sync?since=2&stream=somebody-else&edge=envoy-1").await;
    assert_eq!(other.json["snapshot"], true);
    let ahead = edge_get(s, "/v1/sync?since=99&edge=envoy-1").await;
    assert_eq!(ahead.json["snapshot"], true);
}

#[tokio::test]
async fn sync_refuses_bad_queries() {
    let app = test_app().await;
    let s = &app.state;
    let a = edge_get(s, "/v1/sync?since=0").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.json["detail"].as_str().unwrap().contains("edge"));
    let a = edge_get(s, "/v1/sync?since=abc&edge=e").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_query");
    assert!(
        a.json["detail"].as_str().unwrap().contains("since"),
        "{}",
        a.text
    );
    let a = edge_get(s, "/v1/sync?since=0&edge=").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_id");
    let a = admin_get(s, "/v1/audit?limit=0").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.error(), "invalid_query");
}

#[tokio::test]
async fn edges_show_receipts_and_lag() {
    let app = test_app().await;
    let s = &app.state;
    let snap = edge_get(s, "/v1/sync?since=0&edge=envoy%2Fa").await;
    let stream = snap.json["stream"].as_str().unwrap().to_string();
    admin_post(s, "/v1/logout", None).await;
    admin_post(s, "/v1/logout", None).await;
    edge_get(s, &format!("/v1/sync?since=1&stream={stream}&edge=envoy-b")).await;

    let a = admin_get(s, "/v1/edges").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["version"], 2);
    assert_eq!(a.json["stream"], stream.as_str());
    let edges = a.json["edges"].as_array().unwrap();
    let by_id = |id: &str| edges.iter().find(|e| e["id"] == id).unwrap().clone();
    let ea = by_id("envoy/a");
    assert_eq!(
        (ea["applied_version"].clone(), ea["lag"].clone()),
        (json!(0), json!(2))
    );
    let eb = by_id("envoy-b");
    assert_eq!(
        (eb["applied_version"].clone(), eb["lag"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(eb["stream"], stream.as_str());
    assert!(eb["last_seen_ms"].as_u64().unwrap() >= eb["first_seen_ms"].as_u64().unwrap());
    assert_eq!(
        eb["remote_addr"],
        Value::Null,
        "no connect info under oneshot"
    );
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    let app = test_app().await;
    let s = &app.state;
    admin_post(s, "/v1/logout", None).await;
    let h = send(s, request("GET", "/healthz", None, None)).await;
    assert_eq!(h.status, StatusCode::OK);
    assert_eq!(h.json, json!({"status": "ok"}), "no version, no stream");

    let m = send(s, request("GET", "/metrics", None, None)).await;
    assert_eq!(m.status, StatusCode::OK);
    assert!(m.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    for line in [
        "epochgate_state_version 1\n",
        "epochgate_admin_writes_total 1\n",
        "epochgate_sync_long_polls_open 0\n",
        "# TYPE epochgate_admin_writes counter\n",
        "# EOF\n",
    ] {
        assert!(m.text.contains(line), "missing {line:?} in\n{}", m.text);
    }
}

// ---- RBAC -------------------------------------------------------------------------------

pub mod rbac {
    use std::sync::Arc;

    use axum::http::StatusCode;
    use epochgate_control_plane::config::ServerConfig;
    use epochgate_control_plane::rbac::{key_digest_hex, parse_api_keys, AdminJwt, Credentials};
    use epochgate_control_plane::AppState;
    use jwt_simple::prelude::*;
    use serde_json::json;

    use crate::common::{request, send, test_store, TestStore, EDGE};

    pub const ACME_REVOKER: &str = "eg_acme_revoker_0123456789abcdef";
    pub const ACME_READER: &str = "eg_acme_reader_0123456789abcdef";
    pub const GLOBAL_OPS: &str = "eg_global_ops_0123456789abcdef";
    const JWT_SECRET: &[u8] = b"admin-jwt-secret-0123456789abcdef0123";

    pub struct RbacApp {
        pub state: AppState,
        pub _store: TestStore,
    }

    pub async fn rbac_app() -> RbacApp {
        let ts = test_store().await;
        let keys = json!({"api_keys": [
            {"name": "acme-revoker", "tenant": "acme", "scopes": ["sessions:revoke", "sessions:revoke_all"], "sha256": key_digest_hex(ACME_REVOKER)},
            {"name": "acme-reader", "tenant": "acme", "scopes": ["audit:read", "revocations:read", "sessions:read"], "sha256": key_digest_hex(ACME_READER)},
            {"name": "global-ops", "tenant": "*", "scopes": ["sessions:revoke_all", "audit:read", "edges:read"], "sha256": key_digest_hex(GLOBAL_OPS)},
        ]});
        let jwt = AdminJwt::from_json(
            json!({
                "keys": [{"kid": "admin", "alg": "HS256", "secret": String::from_utf8_lossy(JWT_SECRET)}],
                "issuer": "https://idp.test", "audiences": ["epochgate-admin"],
                "global_admin": {"claim": "epochgate_role", "value": "global-admin"}
            })
            .to_string()
            .as_bytes(),
        )
        .unwrap();
        let creds = Credentials::new(None, EDGE)
            .unwrap()
            .with_api_keys(parse_api_keys(keys.to_string().as_bytes()).unwrap())
            .unwrap()
            .with_admin_jwt(jwt);
        let config = ServerConfig::with_credentials(creds, 3600, 60).unwrap();
        RbacApp {
            state: AppState::new(Arc::clone(&ts.store), config),
            _store: ts,
        }
    }

    fn admin_jwt(claims: serde_json::Value, aud: &str) -> String {
        let key = HS256Key::from_bytes(JWT_SECRET).with_key_id("admin");
        let c = Claims::with_custom_claims(claims, Duration::from_secs(600))
            .with_issuer("https://idp.test")
            .with_audience(aud)
            .with_subject("alice@example.com");
        key.authenticate(c).unwrap()
    }

    /// A low-privilege key hammering a route it may not use: its refusals are audited up
    /// to a burst, then answered 429 without touching the store — the audit log does not
    /// fill with them and a real logout is not held up; other credentials are unaffected.
    #[tokio::test]
    async fn refused_attempts_are_rate_limited_per_credential() {
        let app = rbac_app().await;
        let s = &app.state;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            let a = post(s, "/v1/tenants/globex/logout", ACME_REVOKER).await;
            statuses.push(a.status);
        }
        let forbidden = statuses
            .iter()
            .filter(|s| **s == StatusCode::FORBIDDEN)
            .count();
        let limited = statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count();
        assert_eq!(forbidden + limited, 40, "{statuses:?}");
        assert!(
            limited >= 20,
            "most of the flood is rate-limited: {statuses:?}"
        );
        let a = post(s, "/v1/tenants/globex/logout", ACME_REVOKER).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(a.error(), "rate_limited");
        assert!(a.headers.get("retry-after").is_some());
        let denied = s
            .store()
            .audit(epochgate_control_plane::store::AuditFilter {
                limit: 1000,
                outcome: Some("denied".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            denied.len(),
            forbidden,
            "only the audited refusals are in the log"
        );
        assert!(denied.len() <= 20, "{}", denied.len());
        // The key's allowed work, and other credentials, go on.
        let a = post(s, "/v1/tenants/acme/users/1/logout", ACME_REVOKER).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let a = post(s, "/v1/tenants/globex/logout", ACME_READER).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "another credential's own budget"
        );
    }

    async fn post(state: &AppState, uri: &str, token: &str) -> crate::common::Answer {
        send(state, request("POST", uri, Some(token), None)).await
    }

    async fn get(state: &AppState, uri: &str, token: &str) -> crate::common::Answer {
        send(state, request("GET", uri, Some(token), None)).await
    }

    async fn denied_entries(state: &AppState) -> Vec<serde_json::Value> {
        let a = get(state, "/v1/audit?outcome=denied", GLOBAL_OPS).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        a.json["entries"].as_array().unwrap().clone()
    }

    #[tokio::test]
    async fn a_tenant_admin_cannot_act_on_another_tenant_and_the_attempt_is_audited() {
        let app = rbac_app().await;
        let ok = post(&app.state, "/v1/tenants/acme/users/42/logout", ACME_REVOKER).await;
        assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
        for uri in [
            "/v1/tenants/globex/users/42/logout",
            "/v1/tenants/globex/logout",
            "/v1/tenants/globex/sessions/s1/revoke",
        ] {
            let a = post(&app.state, uri, ACME_REVOKER).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}: {}", a.text);
            assert_eq!(a.error(), "forbidden");
            assert!(
                a.json["detail"].as_str().unwrap().contains("globex"),
                "{}",
                a.text
            );
        }
        assert_eq!(
            *app.state.store().subscribe().borrow(),
            1,
            "no refused attempt wrote a revocation"
        );
        let denied = denied_entries(&app.state).await;
        assert_eq!(denied.len(), 3);
        assert_eq!(denied[0]["actor"], "key:acme-revoker");
        assert_eq!(denied[0]["action"], "revoke_session");
        assert_eq!(denied[0]["target"]["tenant"], "globex");
        assert!(denied[0]["request_id"].as_str().is_some());
        assert!(denied[0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("refused:"));
    }

    #[tokio::test]
    async fn only_a_global_admin_logs_out_every_tenant() {
        let app = rbac_app().await;
        let a = post(&app.state, "/v1/logout", ACME_REVOKER).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
        assert!(a.json["detail"].as_str().unwrap().contains("every tenant"));
        let a = post(&app.state, "/v1/logout", GLOBAL_OPS).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let denied = denied_entries(&app.state).await;
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0]["action"], "logout_all_tenants");
    }

    #[tokio::test]
    async fn each_permission_is_required() {
        let app = rbac_app().await;
        // A reader cannot write; a revoker cannot read; global-ops has no sessions:revoke.
        let cases = [
            (
                "POST",
                "/v1/tenants/acme/users/1/logout",
                ACME_READER,
                "sessions:revoke",
            ),
            (
                "POST",
                "/v1/tenants/acme/logout",
                ACME_READER,
                "sessions:revoke_all",
            ),
            ("GET", "/v1/audit", ACME_REVOKER, "audit:read"),
            ("GET", "/v1/edges", ACME_REVOKER, "edges:read"),
            ("GET", "/v1/edges", ACME_READER, "edges:read"),
            (
                "GET",
                "/v1/tenants/acme/revocations",
                ACME_REVOKER,
                "revocations:read",
            ),
            (
                "POST",
                "/v1/tenants/acme/users/1/logout",
                GLOBAL_OPS,
                "sessions:revoke",
            ),
        ];
        for (method, uri, key, scope) in cases {
            let a = send(&app.state, request(method, uri, Some(key), None)).await;
            assert_eq!(
                a.status,
                StatusCode::FORBIDDEN,
                "{method} {uri}: {}",
                a.text
            );
            assert!(
                a.json["detail"].as_str().unwrap().contains(scope),
                "{}",
                a.text
            );
        }
        assert_eq!(denied_entries(&app.state).await.len(), cases.len());
        // What they may do, they can.
        assert_eq!(
            get(&app.state, "/v1/tenants/acme/revocations", ACME_READER)
                .await
                .status,
            StatusCode::OK
        );
        assert_eq!(
            get(&app.state, "/v1/edges", GLOBAL_OPS).await.status,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_tenant_reader_sees_only_its_tenants_audit() {
        let app = rbac_app().await;
        post(&app.state, "/v1/tenants/acme/users/1/logout", ACME_REVOKER).await;
        post(&app.state, "/v1/tenants/globex/logout", GLOBAL_OPS).await;
        let a = get(&app.state, "/v1/audit", ACME_READER).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let entries = a.json["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        assert!(
            entries.iter().all(|e| e["target"]["tenant"] == "acme"),
            "{}",
            a.text
        );
        let a = get(&app.state, "/v1/audit?tenant=globex", ACME_READER).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
        // The global reader filters.
        let a = get(
            &app.state,
            "/v1/audit?tenant=globex&action=logout_tenant",
            GLOBAL_OPS,
        )
        .await;
        let entries = a.json["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{}", a.text);
        assert_eq!(entries[0]["actor"], "key:global-ops");
        let a = get(&app.state, "/v1/audit?outcome=maybe", GLOBAL_OPS).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        let a = get(&app.state, "/v1/audit?colour=red", GLOBAL_OPS).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.error(), "invalid_query");
    }

    #[tokio::test]
    async fn admin_jwts_carry_tenant_and_permissions() {
        let app = rbac_app().await;
        let acme = admin_jwt(
            json!({"tid": "acme", "permissions": ["sessions:revoke", "unrelated:perm"]}),
            "epochgate-admin",
        );
        let a = post(&app.state, "/v1/tenants/acme/users/7/logout", &acme).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let a = post(&app.state, "/v1/tenants/globex/users/7/logout", &acme).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
        let a = post(&app.state, "/v1/tenants/acme/logout", &acme).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);

        let global = admin_jwt(
            json!({"epochgate_role": "global-admin", "scope": "sessions:revoke_all audit:read"}),
            "epochgate-admin",
        );
        assert_eq!(
            post(&app.state, "/v1/logout", &global).await.status,
            StatusCode::OK
        );
        let audit = get(&app.state, "/v1/audit?limit=10", &global).await;
        assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
        assert_eq!(audit.json["entries"][0]["actor"], "jwt:alice@example.com");

        // A token for another audience (a portal user's), or a bad signature: 401.
        let portal = admin_jwt(
            json!({"epochgate_role": "global-admin", "scope": "sessions:revoke_all"}),
            "portal",
        );
        let a = post(&app.state, "/v1/logout", &portal).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.text);
        assert!(
            a.json["detail"].as_str().unwrap().contains("audience"),
            "{}",
            a.text
        );
        let mut forged = global.clone();
        forged.pop();
        forged.push(if global.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            post(&app.state, "/v1/logout", &forged).await.status,
            StatusCode::UNAUTHORIZED
        );
        // An admin JWT cannot sync.
        let a = get(&app.state, "/v1/sync?since=0&edge=e", &global).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_tenant_named_star_is_no_global_admin_only_the_configured_claim_is() {
        let app = rbac_app().await;
        // Tenant names are chosen at the IdP: someone names theirs `*`.
        let star = admin_jwt(
            json!({"tid": "*", "scope": "sessions:revoke_all sessions:revoke audit:read"}),
            "epochgate-admin",
        );
        for uri in [
            "/v1/logout",
            "/v1/tenants/globex/logout",
            "/v1/tenants/globex/users/1/logout",
        ] {
            let a = post(&app.state, uri, &star).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{uri}: {}", a.text);
        }
        let a = post(&app.state, "/v1/logout", &star).await;
        assert!(
            a.json["detail"].as_str().unwrap().contains("global_admin"),
            "{}",
            a.text
        );

        // Global rights come from the claim and value the admin-JWT config names.
        let global = admin_jwt(
            json!({"epochgate_role": "global-admin", "scope": "sessions:revoke_all"}),
            "epochgate-admin",
        );
        let a = post(&app.state, "/v1/logout", &global).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.text);
        let in_a_list = admin_jwt(
            json!({"tid": "acme", "epochgate_role": ["auditor", "global-admin"], "scope": "sessions:revoke_all"}),
            "epochgate-admin",
        );
        assert_eq!(
            post(&app.state, "/v1/tenants/globex/logout", &in_a_list)
                .await
                .status,
            StatusCode::OK
        );
        // Another value of the claim is a tenant admin (or nothing, without a tenant).
        let other = admin_jwt(
            json!({"tid": "acme", "epochgate_role": "global-admin-light", "scope": "sessions:revoke_all"}),
            "epochgate-admin",
        );
        assert_eq!(
            post(&app.state, "/v1/logout", &other).await.status,
            StatusCode::FORBIDDEN
        );
        let neither = admin_jwt(json!({"scope": "sessions:revoke_all"}), "epochgate-admin");
        assert_eq!(
            post(&app.state, "/v1/logout", &neither).await.status,
            StatusCode::UNAUTHORIZED
        );
    }

    #[tokio::test]
    async fn the_edge_token_reads_sync_and_nothing_else() {
        let app = rbac_app().await;
        assert_eq!(
            get(&app.state, "/v1/sync?since=0&edge=e", EDGE)
                .await
                .status,
            StatusCode::OK
        );
        for (method, uri) in [
            ("POST", "/v1/logout"),
            ("POST", "/v1/tenants/acme/users/1/logout"),
            ("GET", "/v1/audit"),
            ("GET", "/v1/edges"),
        ] {
            let a = send(&app.state, request(method, uri, Some(EDGE), None)).await;
            assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}");
        }
        // API keys cannot sync either.
        assert_eq!(
            get(&app.state, "/v1/sync?since=0&edge=e", GLOBAL_OPS)
                .await
                .status,
            StatusCode::FORBIDDEN
        );
    }
}

// ---- propagation receipts ------------------------------------------------------------------

#[tokio::test]
async fn wait_reports_edges_acked_and_lagging() {
    let app = test_app().await;
    // Two edges: one will apply the change, one stays behind.
    for edge in ["fast", "slow"] {
        let a = edge_get(&app.state, &format!("/v1/sync?since=0&edge={edge}")).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let state = app.state.clone();
    let stream = state.store().stream().to_string();
    let applier = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let a = edge_get(
            &state,
            &format!("/v1/sync?since=1&stream={stream}&edge=fast"),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    });
    let a = admin_post(
        &app.state,
        "/v1/tenants/acme/users/42/logout?wait=1.5",
        None,
    )
    .await;
    applier.await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let p = &a.json["propagation"];
    assert_eq!(p["edges"], 2, "{}", a.text);
    assert_eq!(p["acked"], 1, "{}", a.text);
    assert_eq!(p["lagging"], json!(["slow"]));
    let elapsed = p["elapsed_ms"].as_u64().unwrap();
    assert!(
        elapsed >= 1400,
        "waited the whole wait for the lagging edge: {elapsed}"
    );

    // Once every live edge holds it, the answer comes without waiting out the wait.
    let a = edge_get(
        &app.state,
        &format!(
            "/v1/sync?since=1&stream={}&edge=slow",
            app.state.store().stream()
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let state = app.state.clone();
    let stream = state.store().stream().to_string();
    let applier = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        for edge in ["fast", "slow"] {
            edge_get(
                &state,
                &format!("/v1/sync?since=2&stream={stream}&edge={edge}"),
            )
            .await;
        }
    });
    let a = admin_post(
        &app.state,
        "/v1/tenants/acme/users/43/logout?wait=30s",
        None,
    )
    .await;
    applier.await.unwrap();
    let p = &a.json["propagation"];
    assert_eq!(
        (p["edges"].as_u64(), p["acked"].as_u64()),
        (Some(2), Some(2)),
        "{}",
        a.text
    );
    assert_eq!(p["lagging"], json!([]));
    assert!(p["elapsed_ms"].as_u64().unwrap() < 30_000);

    // Without wait: no propagation field. Bad waits: 400.
    let a = admin_post(&app.state, "/v1/tenants/acme/users/44/logout", None).await;
    assert!(a.json.get("propagation").is_none(), "{}", a.text);
    for bad in ["-1", "61", "soon", "5m", "NaN"] {
        let a = admin_post(&app.state, &format!("/v1/logout?wait={bad}"), None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "wait={bad}");
        assert_eq!(a.error(), "invalid_query");
    }
}

#[tokio::test]
async fn a_tenant_never_seen_gets_a_warning() {
    let app = test_app().await;
    let a = admin_post(&app.state, "/v1/tenants/acmee/users/1/logout", None).await;
    let w = a.json["warnings"].as_array().unwrap();
    assert!(w[0].as_str().unwrap().contains("acmee"), "{}", a.text);
    let a = admin_post(&app.state, "/v1/tenants/acmee/users/2/logout", None).await;
    assert!(a.json.get("warnings").is_none(), "{}", a.text);
    let a = admin_post(&app.state, "/v1/logout", None).await;
    assert!(a.json.get("warnings").is_none(), "{}", a.text);
}

// ---- operations -------------------------------------------------------------------------

#[tokio::test]
async fn the_served_openapi_document_is_the_checked_in_file() {
    let app = test_app().await;
    let a = send(&app.state, request("GET", "/openapi.json", None, None)).await;
    assert_eq!(a.status, StatusCode::OK);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let pretty = serde_json::to_string_pretty(&a.json).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &pretty).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == pretty,
        "control-plane/openapi.json differs from GET /openapi.json: \
         run `UPDATE_OPENAPI=1 cargo test -p epochgate-control-plane openapi` and commit it"
    );
    // Every documented path and method is a route (no `no route` 404, no 405).
    for (path, ops) in a.json["paths"].as_object().unwrap() {
        let uri = path
            .replace("{tenant}", "acme")
            .replace("{user}", "42")
            .replace("{sid}", "s1")
            .replace("{edge}", "pop-1")
            .replace("{name}", "demo");
        for method in ops.as_object().unwrap().keys() {
            let r = send(
                &app.state,
                request(
                    &method.to_uppercase(),
                    &format!("{uri}{}", if uri == "/v1/sync" { "?edge=e" } else { "" }),
                    Some(ADMIN),
                    None,
                ),
            )
            .await;
            // A route may answer 404 of its own (`no_schedule`, an IdP not configured, an
            // edge without a token); only the router's `no route` means it is missing.
            assert!(
                r.status != StatusCode::NOT_FOUND || !r.text.contains("no route"),
                "{method} {uri}: {}",
                r.text
            );
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        }
    }
}

#[tokio::test]
async fn metrics_show_writes_version_and_per_edge_lag_and_readyz_follows_shutdown() {
    let app = test_app().await;
    edge_get(&app.state, "/v1/sync?since=0&edge=envoy%22a").await;
    admin_post(&app.state, "/v1/tenants/acme/users/1/logout", None).await;
    admin_post(&app.state, "/v1/tenants/acme/users/2/logout", None).await;
    let m = send(&app.state, request("GET", "/metrics", None, None)).await;
    assert_eq!(m.status, StatusCode::OK);
    for line in [
        "epochgate_admin_writes_total 2",
        "epochgate_state_version 2",
        "epochgate_sync_long_polls_open 0",
        "epochgate_edge_lag{edge=\"envoy\\\"a\",live=\"true\"} 2",
        "epochgate_edge_instances{edge=\"envoy\\\"a\",live=\"true\"} 1",
        "epochgate_edges_live 1",
    ] {
        assert!(
            m.text.lines().any(|l| l == line),
            "no `{line}` in\n{}",
            m.text
        );
    }
    let r = send(&app.state, request("GET", "/readyz", None, None)).await;
    assert_eq!(r.status, StatusCode::OK);
    app.state.begin_shutdown();
    let r = send(&app.state, request("GET", "/readyz", None, None)).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error(), "shutting_down");
    let h = send(&app.state, request("GET", "/healthz", None, None)).await;
    assert_eq!(h.status, StatusCode::OK, "alive while draining");
}

#[tokio::test]
async fn scheduled_logouts_take_a_future_at_and_can_move_earlier() {
    let app = test_app().await;
    let in_an_hour = now_ms() + 3_600_000;
    let at = epochgate_core::decision::rfc3339(in_an_hour);
    let a = admin_post(
        &app.state,
        "/v1/tenants/acme/logout",
        Some(&format!(r#"{{"reason": "maintenance", "at": "{at}"}}"#)),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json["target"],
        json!({"scope": "scheduled_tenant", "tenant": "acme"})
    );
    assert_eq!(
        a.json["epoch_ms"].as_u64().unwrap(),
        in_an_hour / 1000 * 1000
    );
    // Moved earlier: a schedule is replaced, not maxed.
    let earlier = epochgate_core::decision::rfc3339(in_an_hour - 1_800_000);
    let b = admin_post(
        &app.state,
        "/v1/tenants/acme/logout",
        Some(&format!(r#"{{"at": "{earlier}"}}"#)),
    )
    .await;
    assert_eq!(
        b.json["epoch_ms"].as_u64().unwrap(),
        (in_an_hour - 1_800_000) / 1000 * 1000
    );
    let g = admin_post(
        &app.state,
        "/v1/logout",
        Some(&format!(r#"{{"at": "{at}"}}"#)),
    )
    .await;
    assert_eq!(g.json["target"], json!({"scope": "scheduled_global"}));
    let audit = admin_get(&app.state, "/v1/audit?limit=1").await;
    assert_eq!(
        audit.json["entries"][0]["action"],
        "schedule_logout_all_tenants"
    );
    // An immediate tenant logout is not held back by the schedule.
    let now = admin_post(&app.state, "/v1/tenants/acme/logout", None).await;
    assert_eq!(
        now.json["target"],
        json!({"scope": "tenant", "tenant": "acme"})
    );
    assert!(now.json["epoch_ms"].as_u64().unwrap() <= now_ms());

    for (uri, body, why) in [
        (
            "/v1/tenants/acme/logout",
            r#"{"at": "2020-01-01T00:00:00Z"}"#,
            "not in the future",
        ),
        (
            "/v1/tenants/acme/logout",
            r#"{"at": "tomorrow"}"#,
            "RFC 3339",
        ),
        // A day that does not exist is refused as such, not rolled over into December.
        (
            "/v1/tenants/acme/logout",
            r#"{"at": "2026-11-31T12:00:00Z"}"#,
            "RFC 3339",
        ),
        (
            "/v1/tenants/acme/logout",
            r#"{"at": "2099-01-01T00:00:00Z"}"#,
            "31 days",
        ),
        (
            "/v1/tenants/acme/users/42/logout",
            &format!(r#"{{"at": "{at}"}}"#),
            "tenant and global",
        ),
    ] {
        let r = admin_post(&app.state, uri, Some(body)).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
        assert!(
            r.json["detail"].as_str().unwrap().contains(why),
            "{}",
            r.text
        );
    }
}

/// The audit anchor's append (open, write, fsync) runs off the async workers: while it
/// is stuck (a FIFO nobody reads yet), other requests are still answered.
#[tokio::test]
async fn a_stuck_anchor_write_does_not_stall_other_requests() {
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("anchor.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let ts = crate::common::test_store().await;
    let mut config =
        epochgate_control_plane::config::ServerConfig::new(ADMIN, EDGE, LIFETIME_S, 60).unwrap();
    config.audit_anchor = Some(fifo.clone());
    let state = epochgate_control_plane::AppState::new(Arc::clone(&ts.store), config);
    // The reader opens the FIFO once told that /healthz was answered — or after 10 s.
    let (answered, told) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let released_by_test = told
            .recv_timeout(std::time::Duration::from_secs(10))
            .is_ok();
        let mut line = String::new();
        use std::io::Read;
        std::fs::File::open(&fifo)
            .unwrap()
            .read_to_string(&mut line)
            .unwrap();
        (released_by_test, line)
    });
    let logout = {
        let state = state.clone();
        tokio::spawn(async move { admin_post(&state, "/v1/logout", None).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let h = send(&state, request("GET", "/healthz", None, None)).await;
    assert_eq!(h.status, StatusCode::OK);
    let _ = answered.send(());
    let a = logout.await.unwrap();
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let (released_by_test, line) = reader.join().unwrap();
    assert!(released_by_test, "/healthz waited for the anchor write");
    assert!(line.contains("\"id\":1"), "{line}");
}

#[tokio::test]
async fn a_pending_schedule_is_cancelled_audited_and_a_passed_one_is_refused() {
    use epochgate_control_plane::store::RevokeRequest;
    use epochgate_core::state::Target;
    let app = test_app().await;
    let at_ms = (now_ms() + 3_600_000) / 1000 * 1000;
    let at = epochgate_core::decision::rfc3339(at_ms);
    let body = format!(r#"{{"at": "{at}"}}"#);
    admin_post(&app.state, "/v1/tenants/acme/logout", Some(&body)).await;
    let delete = |uri: &'static str| {
        let state = app.state.clone();
        async move {
            send(
                &state,
                request(
                    "DELETE",
                    uri,
                    Some(ADMIN),
                    Some(r#"{"reason": "moved to Friday"}"#),
                ),
            )
            .await
        }
    };
    let c = delete("/v1/tenants/acme/scheduled-logout").await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.text);
    assert_eq!(
        c.json["target"],
        json!({"scope": "scheduled_tenant", "tenant": "acme"})
    );
    assert_eq!(c.json["epoch_ms"].as_u64(), Some(at_ms));
    let audit = admin_get(&app.state, "/v1/audit?limit=1").await;
    assert_eq!(
        audit.json["entries"][0]["action"],
        "cancel_scheduled_logout_tenant"
    );
    assert_eq!(audit.json["entries"][0]["reason"], "moved to Friday");
    let revs = admin_get(&app.state, "/v1/tenants/acme/revocations").await;
    assert_eq!(revs.json["revocations"], json!([]));
    let again = delete("/v1/tenants/acme/scheduled-logout").await;
    assert_eq!(
        (again.status, again.error()),
        (StatusCode::NOT_FOUND, "no_schedule")
    );

    // A schedule whose time has passed took effect: 409, and the attempt is audited.
    app.state
        .store()
        .revoke(RevokeRequest {
            target: Target::ScheduledGlobal,
            now_ms: now_ms() - 5_000,
            at_ms: Some(now_ms() - 1_000),
            actor: "admin".into(),
            reason: None,
            source: None,
            request_id: None,
        })
        .await
        .unwrap();
    let passed = delete("/v1/scheduled-logout").await;
    assert_eq!(passed.status, StatusCode::CONFLICT, "{}", passed.text);
    assert_eq!(passed.error(), "schedule_passed");
    assert!(passed.json["detail"]
        .as_str()
        .unwrap()
        .contains("cannot be undone"));
    let audit = admin_get(&app.state, "/v1/audit?limit=1&outcome=denied").await;
    assert_eq!(
        audit.json["entries"][0]["action"],
        "cancel_scheduled_logout_all_tenants"
    );
    // `at` is for scheduling.
    let bad = send(
        &app.state,
        request("DELETE", "/v1/scheduled-logout", Some(ADMIN), Some(&body)),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}
