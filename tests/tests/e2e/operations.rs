//! The control plane as an operator runs it: Postgres over verified TLS with a pool,
//! secrets kept out of logs and command lines.

use std::process::Command;
use std::time::Duration;

use epochgate_tests::pg::PgCluster;
use epochgate_tests::{
    epochgate_bin, free_port, http, wait_for, ControlPlane, Options, Stack, TestPki, ADMIN_TOKEN,
    EDGE_TOKEN,
};
use serde_json::json;

const DB_PASSWORD: &str = "e2e-db-password-0123456789";

/// `postgres://postgres:<password>@127.0.0.1:<port>/<db>` + `query`.
fn url_with_password(cluster: &PgCluster, db: &str, query: &str) -> String {
    format!(
        "postgres://postgres:{DB_PASSWORD}@127.0.0.1:{}/{db}?{query}",
        cluster.port
    )
}

#[test]
fn the_control_plane_reaches_postgres_over_verified_tls_and_refuses_a_wrong_ca() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new(dir.path());
    let cluster = PgCluster::start_tls(&pki);
    cluster.create_database("tls");

    // verify-full against the test's CA: serves, and every connection it opened is TLS.
    let url = url_with_password(
        &cluster,
        "tls",
        &format!("sslmode=verify-full&sslrootcert={}", pki.ca_cert.display()),
    );
    let cp = ControlPlane::start_named(dir.path(), "cp-tls", free_port(), &url);
    let r = cp.admin("POST", "/v1/tenants/acme/users/42/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let log = cluster.log();
    let ours: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection authorized") && l.contains("application_name=epochgate"))
        .collect();
    assert!(
        !ours.is_empty(),
        "no connection of the control plane logged:\n{log}"
    );
    for line in &ours {
        assert!(
            line.contains("SSL enabled"),
            "a cleartext connection: {line}"
        );
    }
    let cp_log = cp.proc.log();
    assert!(
        !cp_log.contains(DB_PASSWORD),
        "the password is logged:\n{cp_log}"
    );
    assert!(
        cp_log.contains("postgres:***@127.0.0.1"),
        "the URL, redacted:\n{cp_log}"
    );

    // A CA that did not sign the server's certificate: refused at start, saying why.
    let other = tempfile::tempdir().unwrap();
    let stranger = TestPki::new(other.path());
    let wrong = url_with_password(
        &cluster,
        "tls",
        &format!(
            "sslmode=verify-full&sslrootcert={}",
            stranger.ca_cert.display()
        ),
    );
    let out = Command::new(epochgate_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--db", &wrong])
        .env("EPOCHGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("EPOCHGATE_EDGE_TOKEN", EDGE_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success(), "served with a CA it should refuse");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
    assert!(!err.contains(DB_PASSWORD), "the password is shown: {err}");

    // sslmode=prefer would fall back to cleartext: refused by name.
    let out = Command::new(epochgate_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(url_with_password(&cluster, "tls", "sslmode=prefer"))
        .env("EPOCHGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("EPOCHGATE_EDGE_TOKEN", EDGE_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("sslmode=prefer falls back to cleartext"),
        "{err}"
    );
}

/// Envoy syncs with its own credential: another edge's credential cannot report for it
/// (so `?wait=` counts only what Envoy really applied), and once its credential is
/// revoked it stops receiving changes.
#[test]
fn an_envoy_with_its_own_credential_cannot_be_impersonated_and_stops_when_revoked() {
    let stack = Stack::start_with(Options {
        edge_credential: Some("envoy-eu".into()),
        sync: json!({"wait_s": 2}),
        ..Options::default()
    });
    let cp = &stack.cp;
    let edges = cp.edges();
    let row = |edges: &serde_json::Value, id: &str| {
        edges["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .cloned()
    };
    let envoy = row(&edges, "envoy-eu").unwrap_or_else(|| panic!("{edges}"));
    assert_eq!(envoy["instances"], 1);
    assert!(envoy["credential"].is_string());
    assert!(
        row(&edges, &stack.node_id).is_none(),
        "listed by credential, not ?edge="
    );

    // Another edge's credential claims to be Envoy, far ahead.
    let forger = cp.create_edge_token("forger");
    let auth = format!("Bearer {forger}");
    let path = format!("/v1/sync?since=999&edge={}", stack.node_id);
    let r = http::request(
        "127.0.0.1",
        cp.port,
        "GET",
        &path,
        &[("authorization", auth.as_bytes())],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let w = cp.admin("POST", "/v1/tenants/acme/users/42/logout?wait=5s", "");
    let p = &w.json()["propagation"];
    assert!(
        !p["lagging"]
            .as_array()
            .unwrap()
            .contains(&json!("envoy-eu")),
        "{}",
        w.text()
    );
    let edges = cp.edges();
    let envoy = row(&edges, "envoy-eu").unwrap();
    assert_eq!(
        envoy["applied_version"], 1,
        "what Envoy applied, not 999: {edges}"
    );
    assert_eq!(row(&edges, "forger").unwrap()["applied_version"], 999);
    let t = stack.token("42", "acme", json!({}));
    assert_eq!(
        stack.get_with_token("/", &t).status,
        401,
        "the logout reached Envoy"
    );

    // Revoked: Envoy's open long-poll and every later one are refused; a new logout never
    // reaches it (it keeps its last good state).
    let failed_before = stack.stat("wasmcustom.epochgate.sync_failed").unwrap_or(0);
    let r = cp.admin("POST", "/v1/edge-tokens/envoy-eu/revoke", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let v2 = cp
        .admin("POST", "/v1/tenants/acme/users/43/logout", "")
        .json()["version"]
        .as_u64()
        .unwrap();
    wait_for(
        "Envoy's syncs to be refused",
        Duration::from_secs(20),
        || (stack.stat("wasmcustom.epochgate.sync_failed")? >= failed_before + 2).then_some(()),
    );
    assert!(stack.stat("wasmcustom.epochgate.state_version").unwrap() < v2);
    let t43 = stack.token("43", "acme", json!({}));
    assert_eq!(
        stack.get_with_token("/", &t43).status,
        200,
        "the revoked edge got no more changes"
    );
}
