//! The sessions the edges report (`POST /v1/sync/sessions`) and the admin reads
//! (`GET /v1/tenants/{t}/users`, `…/users/{u}/sessions`), through the router.

use axum::http::StatusCode;
use epochgate_control_plane::now_ms;
use serde_json::{json, Value};

use crate::api::rbac::{rbac_app, ACME_READER, GLOBAL_OPS};
use crate::common::{admin_get, admin_post, request, send, test_app, ADMIN, EDGE};

fn session(user: &str, sid: Option<&str>, device: &str, seen_ms: u64) -> Value {
    let mut s = json!({
        "tenant": "acme", "user": user, "session_start": (now_ms() / 1000) as i64 - 600,
        "first_seen_ms": seen_ms, "last_seen_ms": seen_ms, "requests": 3,
        "device": device, "address": "203.0.113.7",
    });
    if let Some(sid) = sid {
        s["sid"] = json!(sid);
    }
    s
}

async fn report(
    state: &epochgate_control_plane::AppState,
    edge: &str,
    sessions: Value,
) -> crate::common::Answer {
    let body = json!({ "sessions": sessions }).to_string();
    send(
        state,
        request(
            "POST",
            &format!("/v1/sync/sessions?edge={edge}"),
            Some(EDGE),
            Some(&body),
        ),
    )
    .await
}

#[tokio::test]
async fn edges_report_sessions_and_admins_list_users_with_their_devices() {
    let app = test_app().await;
    let now = now_ms();
    let a = report(
        &app.state,
        "envoy-1",
        json!([
            session("alice", Some("a1"), "Chrome 120 on macOS", now - 2_000),
            session("alice", Some("a2"), "AcmeApp 3.2.1 (iOS)", now - 1_000),
            session("bob", None, "Firefox 121 on Linux", now - 3_000),
        ]),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json, json!({"accepted": 3}));
    let users = admin_get(&app.state, "/v1/tenants/acme/users").await;
    assert_eq!(users.status, StatusCode::OK, "{}", users.text);
    assert_eq!(users.json["tenant"], "acme");
    assert_eq!(users.json["sessions"], 3);
    let list = users.json["users"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["user"], "alice");
    assert_eq!(list[0]["sessions"], 2);
    assert_eq!(
        list[0]["devices"],
        json!(["AcmeApp 3.2.1 (iOS)", "Chrome 120 on macOS"])
    );
    assert_eq!(list[1]["user"], "bob");
    let found = admin_get(&app.state, "/v1/tenants/acme/users?q=ALI").await;
    assert_eq!(found.json["users"].as_array().unwrap().len(), 1);
    assert!(
        admin_get(&app.state, "/v1/tenants/globex/users").await.json["users"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A logout marks alice's sessions revoked, and she leaves the list.
    let out = admin_post(&app.state, "/v1/tenants/acme/users/alice/logout", None).await;
    assert_eq!(out.status, StatusCode::OK, "{}", out.text);
    let users = admin_get(&app.state, "/v1/tenants/acme/users").await;
    let list = users.json["users"].as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["user"], "bob");
    let sessions = admin_get(&app.state, "/v1/tenants/acme/users/alice/sessions").await;
    assert_eq!(sessions.status, StatusCode::OK, "{}", sessions.text);
    let list = sessions.json["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|s| s["revoked"] == true),
        "{}",
        sessions.text
    );
    assert_eq!(list[0]["revoked_at_ms"], out.json["epoch_ms"]);
    assert_eq!(list[0]["edge"], "envoy-1");
    assert_eq!(list[0]["address"], "203.0.113.7");
    // One session revoked by its sid; the other stays.
    report(
        &app.state,
        "envoy-2",
        json!([
            session("carol", Some("c1"), "d", now),
            session("carol", Some("c2"), "d", now)
        ]),
    )
    .await;
    admin_post(&app.state, "/v1/tenants/acme/sessions/c1/revoke", None).await;
    let carol = admin_get(&app.state, "/v1/tenants/acme/users/carol/sessions").await;
    let revoked: Vec<(Value, Value)> = carol.json["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["sid"].clone(), s["revoked"].clone()))
        .collect();
    assert!(revoked.contains(&(json!("c1"), json!(true))), "{revoked:?}");
    assert!(
        revoked.contains(&(json!("c2"), json!(false))),
        "{revoked:?}"
    );
}

#[tokio::test]
async fn reports_are_checked_whole_and_only_the_edge_token_sends_them() {
    let app = test_app().await;
    let now = now_ms();
    let bad = report(
        &app.state,
        "e1",
        json!([session("ok", None, "d", now), session("", None, "d", now)]),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text);
    assert!(
        bad.json["detail"].as_str().unwrap().contains("sessions[1]"),
        "{}",
        bad.text
    );
    let unknown = report(&app.state, "e1", json!([{"tenant": "acme"}])).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.text);
    let too_many: Vec<Value> = (0..501)
        .map(|i| session(&format!("u{i}"), None, "d", now))
        .collect();
    let big = report(&app.state, "e1", json!(too_many)).await;
    assert_eq!(big.status, StatusCode::BAD_REQUEST, "{}", big.text);
    assert!(big.json["detail"].as_str().unwrap().contains("500"));
    assert!(
        admin_get(&app.state, "/v1/tenants/acme/users").await.json["users"]
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing of a refused batch was kept"
    );
    let body = json!({"sessions": [session("x", None, "d", now)]}).to_string();
    let no_edge = send(
        &app.state,
        request("POST", "/v1/sync/sessions", Some(EDGE), Some(&body)),
    )
    .await;
    assert_eq!(no_edge.status, StatusCode::BAD_REQUEST);
    let as_admin = send(
        &app.state,
        request(
            "POST",
            "/v1/sync/sessions?edge=e1",
            Some(ADMIN),
            Some(&body),
        ),
    )
    .await;
    assert_eq!(as_admin.status, StatusCode::FORBIDDEN);
    let as_edge = send(
        &app.state,
        request("GET", "/v1/tenants/acme/users", Some(EDGE), None),
    )
    .await;
    assert_eq!(as_edge.status, StatusCode::FORBIDDEN);
    let bad_limit = admin_get(&app.state, "/v1/tenants/acme/users?limit=0").await;
    assert_eq!(bad_limit.error(), "invalid_query");
}

#[tokio::test]
async fn reading_sessions_takes_sessions_read_on_the_tenant_and_a_refusal_is_audited() {
    let app = rbac_app().await;
    let get = |uri: &'static str, key: &'static str| {
        let state = app.state.clone();
        async move { send(&state, request("GET", uri, Some(key), None)).await }
    };
    assert_eq!(
        get("/v1/tenants/acme/users", ACME_READER).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get("/v1/tenants/acme/users/42/sessions", ACME_READER)
            .await
            .status,
        StatusCode::OK
    );
    let other = get("/v1/tenants/globex/users", ACME_READER).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    let other = get("/v1/tenants/globex/users/42/sessions", ACME_READER).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "{}", other.text);
    let no_scope = get("/v1/tenants/acme/users", GLOBAL_OPS).await;
    assert_eq!(no_scope.status, StatusCode::FORBIDDEN);
    assert!(no_scope.json["detail"]
        .as_str()
        .unwrap()
        .contains("sessions:read"));
    let audit = get("/v1/audit?outcome=denied&action=read_sessions", GLOBAL_OPS).await;
    assert_eq!(
        audit.json["entries"].as_array().unwrap().len(),
        3,
        "{}",
        audit.text
    );
}
