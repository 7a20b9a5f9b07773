//! Several control-plane replicas on one Postgres, and propagation receipts: Envoy
//! long-polls replica A, the logout is posted to replica B, and Envoy denies within a
//! second (LISTEN/NOTIFY wakes A's open long-poll); `?wait=` on B reports the receipt
//! Envoy sent to A.

use std::time::{Duration, Instant};

use epochgate_tests::pg::PgCluster;
use epochgate_tests::{free_port, ControlPlane, Options, Stack};
use serde_json::json;

const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);

#[test]
fn a_logout_posted_to_replica_b_is_enforced_by_an_envoy_polling_replica_a() {
    let pg = PgCluster::start();
    let url = pg.create_database("epochgate");
    let stack = Stack::start_with(Options {
        db_url: Some(url.clone()),
        ..Options::default()
    });
    let replica_b = ControlPlane::start_named(stack.dir.path(), "replica-b", free_port(), &url);

    let token = stack.token("42", "acme", json!({}));
    let other = stack.token("43", "acme", json!({}));
    assert_eq!(stack.get_with_token("/api/orders", &token).status, 200);
    // Envoy's long-poll is open on A (it applied the empty snapshot and waits).
    std::thread::sleep(Duration::from_millis(300));

    let start = Instant::now();
    let r = replica_b.admin(
        "POST",
        "/v1/tenants/acme/users/42/logout?wait=5",
        r#"{"reason":"lost phone"}"#,
    );
    let answered = start.elapsed();
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    let p = &body["propagation"];
    assert_eq!(p["edges"], 1, "{body}");
    assert_eq!(
        p["acked"], 1,
        "replica B saw Envoy's receipt sent to replica A: {body}"
    );
    assert_eq!(p["lagging"], json!([]));
    let took = stack.time_until_status(&token, 401, PROPAGATION_DEADLINE);
    println!(
        "propagation with receipt (logout on replica B → receipt from Envoy via replica A): {} ms reported, {} ms answered; Envoy denied {} ms after the answer",
        p["elapsed_ms"], answered.as_millis(), took.as_millis()
    );
    assert_eq!(stack.get_with_token("/api/orders", &other).status, 200);

    // Both replicas show the edge at the new version.
    for cp in [&stack.cp, &replica_b] {
        let edges = cp.edges();
        assert_eq!(edges["edges"][0]["id"], stack.node_id.as_str(), "{edges}");
        assert_eq!(edges["edges"][0]["lag"], 0, "{edges}");
        assert_eq!(edges["edges"][0]["live"], true, "{edges}");
    }

    // A tenant logout on B, timed without the receipt: also within a second.
    let t44 = stack.token("44", "acme", json!({}));
    assert_eq!(stack.get_with_token("/api/orders", &t44).status, 200);
    let r = replica_b.admin("POST", "/v1/tenants/acme/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let took = stack.time_until_status(&t44, 401, PROPAGATION_DEADLINE);
    println!(
        "propagation (tenant logout on replica B → Envoy on A denies): {} ms",
        took.as_millis()
    );
    drop(replica_b);
    drop(stack);
    drop(pg);
}

#[test]
fn wait_reports_every_live_edge_on_sqlite_too() {
    let stack = Stack::start();
    let token = stack.token("7", "acme", json!({}));
    assert_eq!(stack.get_with_token("/api/orders", &token).status, 200);
    let mut figures = Vec::new();
    for user in ["7", "8", "9"] {
        let r = stack.cp.admin(
            "POST",
            &format!("/v1/tenants/acme/users/{user}/logout?wait=5s"),
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let p = r.json()["propagation"].clone();
        assert_eq!(
            (p["edges"].as_u64(), p["acked"].as_u64()),
            (Some(1), Some(1)),
            "{p}"
        );
        figures.push(p["elapsed_ms"].as_u64().unwrap());
    }
    // The receipt means the edge applied it: the token is refused at once.
    assert_eq!(stack.get_with_token("/api/orders", &token).status, 401);
    println!("propagation with receipt (SQLite, one Envoy): {figures:?} ms");
}
