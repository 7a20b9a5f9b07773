//! The control plane as an operator runs it: Postgres over verified TLS with a pool,
//! secrets kept out of logs and command lines.

use std::process::Command;

use epochgate_tests::pg::PgCluster;
use epochgate_tests::{epochgate_bin, free_port, ControlPlane, TestPki, ADMIN_TOKEN, EDGE_TOKEN};

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
