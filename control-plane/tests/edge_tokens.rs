//! Per-edge credentials: an edge reports as its credential, never as another; a revoked
//! credential stops syncing (also mid long-poll); a Worker deployment is one edge with
//! its isolates counted; only a global `edges:manage` admin manages them, audited.

use axum::http::StatusCode;
use epochgate_control_plane::AppState;
use serde_json::{json, Value};

use crate::common::{admin_get, admin_post, request, send, test_app, Answer, ADMIN, EDGE};

/// Creates a token for `edge`: `(id, token)`.
async fn create(state: &AppState, edge: &str) -> (String, String) {
    let a = admin_post(
        state,
        "/v1/edge-tokens",
        Some(&json!({"edge": edge, "reason": "new PoP"}).to_string()),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert!(a.json["token"].as_str().unwrap().starts_with("ege_"));
    (
        a.json["id"].as_str().unwrap().to_string(),
        a.json["token"].as_str().unwrap().to_string(),
    )
}

async fn sync(state: &AppState, token: &str, query: &str) -> Answer {
    send(
        state,
        request("GET", &format!("/v1/sync?{query}"), Some(token), None),
    )
    .await
}

fn edge<'a>(edges: &'a Value, id: &str) -> Option<&'a Value> {
    edges["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
}

#[tokio::test]
async fn an_edge_cannot_report_as_another() {
    let app = test_app().await;
    let s = &app.state;
    let (_, token_a) = create(s, "edge-a").await;
    let (id_b, token_b) = create(s, "edge-b").await;
    let stream = s.store().stream().to_string();
    assert_eq!(
        sync(s, &token_a, "since=0&edge=node-1").await.status,
        StatusCode::OK
    );
    admin_post(s, "/v1/tenants/acme/users/42/logout", None).await;

    // edge-b claims to be edge-a and to hold version 1.
    let forged = sync(s, &token_b, &format!("since=1&stream={stream}&edge=edge-a")).await;
    assert_eq!(forged.status, StatusCode::OK, "{}", forged.text);
    let edges = admin_get(s, "/v1/edges").await.json;
    let a = edge(&edges, "edge-a").unwrap();
    assert_eq!(
        (a["applied_version"].clone(), a["lag"].clone()),
        (json!(0), json!(1))
    );
    let b = edge(&edges, "edge-b").unwrap();
    assert_eq!(b["applied_version"], 1, "the receipt is edge-b's own");
    assert_eq!(b["credential"], id_b.as_str());

    // So `?wait=` is not fooled: edge-a has not applied the next write either.
    let w = admin_post(s, "/v1/tenants/acme/users/43/logout?wait=300ms", None).await;
    sync(s, &token_b, &format!("since=2&stream={stream}&edge=edge-a")).await;
    let p = &w.json["propagation"];
    assert!(
        p["lagging"].as_array().unwrap().contains(&json!("edge-a")),
        "{}",
        w.text
    );

    // DEMO only: the shared token names its edge itself, so it can report as any edge.
    sync(s, EDGE, &format!("since=2&stream={stream}&edge=edge-c")).await;
    let edges = admin_get(s, "/v1/edges").await.json;
    assert_eq!(edge(&edges, "edge-c").unwrap()["credential"], Value::Null);
}

#[tokio::test]
async fn a_revoked_edge_token_stops_syncing_even_mid_poll() {
    let app = test_app().await;
    let s = app.state.clone();
    let (id, token) = create(&s, "pop-1").await;
    let stream = s.store().stream().to_string();
    assert_eq!(
        sync(&s, &token, "since=0&edge=envoy").await.status,
        StatusCode::OK
    );

    // A long-poll held open when the token is revoked gets nothing more.
    let poll = {
        let (s, token, stream) = (s.clone(), token.clone(), stream.clone());
        tokio::spawn(async move {
            sync(
                &s,
                &token,
                &format!("since=0&stream={stream}&wait=20&edge=envoy"),
            )
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let r = admin_post(
        &s,
        "/v1/edge-tokens/pop-1/revoke",
        Some(r#"{"reason": "PoP decommissioned"}"#),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["revoked"], 1);
    admin_post(&s, "/v1/tenants/acme/users/42/logout", None).await;
    let answered = poll.await.unwrap();
    assert_eq!(
        answered.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        answered.text
    );
    assert!(
        answered.json.get("changes").is_none(),
        "no change leaked: {}",
        answered.text
    );

    let again = sync(&s, &token, "since=0&edge=envoy").await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED);
    assert!(
        again.json["detail"].as_str().unwrap().contains("revoked"),
        "{}",
        again.text
    );
    let r = admin_post(&s, "/v1/edge-tokens/pop-1/revoke", None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "nothing left to revoke");

    let list = admin_get(&s, "/v1/edge-tokens").await;
    let t = &list.json["edge_tokens"][0];
    assert_eq!(
        (t["id"].as_str(), t["edge"].as_str()),
        (Some(id.as_str()), Some("pop-1"))
    );
    assert!(t["revoked_ms"].as_u64().is_some());
    assert!(!list.text.contains(&token), "the token is shown once only");
    let audit = admin_get(&s, "/v1/audit?limit=10").await.json;
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"create_edge_token") && actions.contains(&"revoke_edge_token"));
    let revoked = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "revoke_edge_token")
        .unwrap();
    assert_eq!(revoked["reason"], "edge \"pop-1\": PoP decommissioned");
}

#[tokio::test]
async fn a_worker_deployment_is_one_edge_with_its_isolates_counted() {
    let app = test_app().await;
    let s = &app.state;
    let (id, token) = create(s, "worker-prod").await;
    let stream = s.store().stream().to_string();
    admin_post(s, "/v1/logout", None).await;
    for (isolate, since) in [("portal-01", 1), ("portal-02", 1), ("portal-03", 0)] {
        let q = format!("since={since}&stream={stream}&edge={isolate}");
        assert_eq!(sync(s, &token, &q).await.status, StatusCode::OK);
    }
    let edges = admin_get(s, "/v1/edges").await.json;
    assert_eq!(edges["edges"].as_array().unwrap().len(), 1, "{edges}");
    let w = edge(&edges, "worker-prod").unwrap();
    assert_eq!(w["instances"], 3);
    assert_eq!(w["applied_version"], 0, "the laggard isolate's");
    assert_eq!(w["lag"], 1);
    assert_eq!(w["credential"], id.as_str());
}

#[tokio::test]
async fn edge_tokens_need_a_global_edges_manage_admin_and_work_on_sync_only() {
    use crate::api::rbac::{rbac_app, ACME_REVOKER, GLOBAL_OPS};
    let app = rbac_app().await;
    let s = &app.state;
    for (key, why) in [(ACME_REVOKER, "every tenant"), (GLOBAL_OPS, "edges:manage")] {
        let body = json!({"edge": "x"}).to_string();
        let a = send(
            s,
            request("POST", "/v1/edge-tokens", Some(key), Some(&body)),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.text);
        assert!(
            a.json["detail"].as_str().unwrap().contains(why),
            "{}",
            a.text
        );
    }
    let denied = s
        .store()
        .audit(epochgate_control_plane::store::AuditFilter {
            limit: 10,
            outcome: Some("denied".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(denied.iter().all(|e| e.action == "create_edge_token") && denied.len() == 2);

    let app = test_app().await;
    let (_, token) = create(&app.state, "pop-2").await;
    let a = send(&app.state, request("GET", "/v1/edges", Some(&token), None)).await;
    assert_eq!(
        a.status,
        StatusCode::FORBIDDEN,
        "an edge token is not an admin credential"
    );
    let a = send(
        &app.state,
        request("GET", "/v1/sync?since=0", Some(ADMIN), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    for bad in [
        json!({}),
        json!({"edge": ""}),
        json!({"edge": "a", "extra": 1}),
    ] {
        let a = admin_post(&app.state, "/v1/edge-tokens", Some(&bad.to_string())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.text);
    }
    let a = admin_post(&app.state, "/v1/edge-tokens", None).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}
