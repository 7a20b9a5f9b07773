//! The `epochgate` binary end to end: `serve` on port 0, the admin commands against it,
//! their errors, SIGTERM.

use epochgate_control_plane::store::AuditFilter;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ADMIN, EDGE};

const BIN: &str = env!("CARGO_BIN_EXE_epochgate");

/// A command with none of the caller's Epochgate settings leaking in.
fn epochgate() -> Command {
    let mut cmd = Command::new(BIN);
    for var in [
        "EPOCHGATE_URL",
        "EPOCHGATE_ADMIN_TOKEN",
        "EPOCHGATE_EDGE_TOKEN",
        "EPOCHGATE_DB",
        "EPOCHGATE_LISTEN",
        "EPOCHGATE_AUDIT_ANCHOR",
        "EPOCHGATE_API_KEYS",
        "EPOCHGATE_ADMIN_JWT_CONFIG",
        "EPOCHGATE_ADMIN_TOKEN_FILE",
        "EPOCHGATE_EDGE_TOKEN_FILE",
        "EPOCHGATE_DB_PASSWORD",
        "EPOCHGATE_DB_PASSWORD_FILE",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("USER", "cli-test");
    cmd
}

/// A running `epochgate serve`, killed on drop (also when a test fails).
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(db: &Path) -> Server {
    start_server_with(db, &[])
}

fn start_server_with(db: &Path, extra: &[&str]) -> Server {
    start_server_logging(db, extra, Stdio::null())
}

fn start_server_logging(db: &Path, extra: &[&str], stderr: Stdio) -> Server {
    let mut child = epochgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .args(extra)
        .env("EPOCHGATE_ADMIN_TOKEN", ADMIN)
        .env("EPOCHGATE_EDGE_TOKEN", EDGE)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") || url.starts_with("https://127.0.0.1:"),
        "{url}"
    );
    Server { child, url }
}

fn run(server_url: &str, args: &[&str]) -> Output {
    epochgate()
        .args(["--url", server_url, "--token", ADMIN])
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn admin_commands_against_a_real_server() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(&dir.path().join("cp.db"));
    let url = server.url.clone();

    let out = stdout(&run(
        &url,
        &[
            "logout",
            "--tenant",
            "acme",
            "--user",
            "auth0|5f7c8ec7",
            "--reason",
            "stolen laptop",
        ],
    ));
    assert!(
        out.starts_with("logged out user auth0|5f7c8ec7 (tenant acme) at 20"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("— version 1"), "{out}");

    let out = stdout(&run(
        &url,
        &["logout-all", "--tenant", "a/b", "--json", "--yes"],
    ));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["target"]["tenant"], "a/b");
    assert_eq!(json["version"], 2);

    // Without --yes and without a terminal to ask on: refused, nothing written.
    let o = run(&url, &["logout-all", "--all-tenants"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("pass --yes") && err.contains("0 live edges"),
        "{err}"
    );
    let out = stdout(&run(&url, &["logout-all", "--all-tenants", "-y"]));
    assert!(
        out.starts_with("logged out every user of every tenant at "),
        "{out}"
    );

    let out = stdout(&run(
        &url,
        &["revoke-session", "--tenant", "acme", "--sid", "s 1"],
    ));
    assert!(
        out.starts_with("revoked session s 1 (tenant acme) at "),
        "{out}"
    );

    let out = stdout(&run(&url, &["audit", "--limit", "10"]));
    assert!(out.contains("logout_user"), "{out}");
    assert!(out.contains("stolen laptop"), "{out}");
    assert!(out.contains("admin (cli-test)"), "{out}");
    assert_eq!(out.lines().count(), 5, "header + 4 rows:\n{out}");

    let out = stdout(&run(&url, &["edges"]));
    assert!(out.contains("version 4"), "{out}");
    assert!(out.contains("no edge has synced yet"), "{out}");

    // A wrong token says what to check, and fails.
    let o = epochgate()
        .args(["--url", &url, "--token", "wrong-token-0123456789", "edges"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("check --token / EPOCHGATE_ADMIN_TOKEN"),
        "{err}"
    );

    // The server's detail comes through.
    let long = "x".repeat(2000);
    let o = run(
        &url,
        &[
            "logout", "--tenant", "acme", "--user", "u", "--reason", &long,
        ],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("`reason` is longer than 1024 bytes"), "{err}");

    // A scheduled logout, then cancelled (`--cancel`, no confirmation needed); cancelling
    // again says there is none.
    let at = epochgate_core::decision::rfc3339(epochgate_control_plane::now_ms() + 3_600_000);
    stdout(&run(
        &url,
        &["logout-all", "--tenant", "acme", "--at", &at, "-y"],
    ));
    let out = stdout(&run(
        &url,
        &[
            "logout-all",
            "--tenant",
            "acme",
            "--cancel",
            "--reason",
            "moved",
        ],
    ));
    assert!(
        out.starts_with(&format!(
            "cancelled the scheduled logout of every user of tenant acme at {}",
            &at[..10]
        )),
        "{out}"
    );
    let o = run(&url, &["logout-all", "--tenant", "acme", "--cancel"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no scheduled logout to cancel"), "{err}");

    // SIGTERM: a prompt, clean exit.
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn connection_refused_says_to_start_the_server() {
    let o = run("http://127.0.0.1:1", &["edges"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is `epochgate serve` running at http://127.0.0.1:1?"),
        "{err}"
    );
}

#[test]
fn client_side_checks_fail_before_any_request() {
    let o = epochgate()
        .args(["--url", "http://127.0.0.1:1", "edges"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--token or set EPOCHGATE_ADMIN_TOKEN"));

    let o = run(
        "http://127.0.0.1:1",
        &["logout", "--tenant", "acme", "--user", ""],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--user is empty"));

    let o = run("http://127.0.0.1:1", &["logout-all"]);
    assert!(
        !o.status.success(),
        "one of --tenant / --all-tenants is required"
    );
}

#[test]
fn serve_refuses_short_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let o = epochgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("x.db"))
        .args(["--admin-token", "short", "--edge-token", EDGE])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("at least 16"), "{err}");
}

#[test]
fn serve_refuses_a_bad_idp_config_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("idps.json");
    for (json, needle) in [
        (
            r#"{"idps": [{"name": "corp", "issuer": "https://idp.test", "client_id": "portal", "jwks_uri": "https://idp.test/jwks", "tenant": {"fixed": "acme"}, "algorithms": ["HS256"]}]}"#,
            "--idp-config: idps[0].algorithms: HS256 is refused",
        ),
        (
            r#"{"idps": [{"name": "corp", "issuer": "https://idp.test", "client_id": "portal", "jwks_uri": "https://idp.test/jwks", "tenant": {"fixed": "acme"}, "ssf": {"bearer_token_env": "EPOCHGATE_TEST_SSF_TOKEN"}}]}"#,
            "the SSF push token is also an admin or edge credential",
        ),
    ] {
        std::fs::write(&config, json).unwrap();
        let o = epochgate()
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.path().join("x.db"))
            .args([
                "--admin-token",
                "admin-token-0123456789",
                "--edge-token",
                EDGE,
            ])
            .arg("--idp-config")
            .arg(&config)
            .env("EPOCHGATE_TEST_SSF_TOKEN", EDGE)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn mint_token_prints_a_demo_jwt() {
    let o = epochgate()
        .args([
            "mint-token",
            "--user",
            "42",
            "--tenant",
            "acme",
            "--sid",
            "s1",
            "--iat",
            "1800000000",
            "--auth-time",
            "1799999000",
            "--ttl",
            "60",
        ])
        .output()
        .unwrap();
    let token = stdout(&o);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    use base64::Engine;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.split('.').nth(1).unwrap())
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(claims["sub"], "42");
    assert_eq!(claims["tid"], "acme");
    assert_eq!(claims["sid"], "s1");
    assert_eq!(claims["iat"], 1_800_000_000u64);
    assert_eq!(claims["auth_time"], 1_799_999_000u64);
    assert_eq!(claims["exp"], 1_800_000_060u64);
    assert_eq!(claims["iss"], epochgate_control_plane::demo::DEMO_ISSUER);
    assert_eq!(claims["aud"], epochgate_control_plane::demo::DEMO_AUDIENCE);
}

#[tokio::test]
async fn a_logout_answered_200_survives_sigkill_on_postgres() {
    let url = crate::common::pg_url().await;
    let mut server = start_server(Path::new(&url));
    let server_url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        stdout(&run(
            &server_url,
            &["logout", "--tenant", "acme", "--user", "42"],
        ))
    })
    .await
    .unwrap();
    assert!(out.contains("version 1"), "{out}");
    server.child.kill().unwrap(); // SIGKILL right after the 200
    server.child.wait().unwrap();

    // A restarted control plane on the same database answers it.
    let server = start_server(Path::new(&url));
    let server_url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        stdout(&run(&server_url, &["revocations", "--tenant", "acme"]))
    })
    .await
    .unwrap();
    assert!(out.contains("user 42 (tenant acme)"), "{out}");
    let store = epochgate_control_plane::store::open(&url).await.unwrap();
    assert_eq!(store.status().await.unwrap().version, 1);
    assert_eq!(store.audit(AuditFilter::newest(10)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_logout_answered_200_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("durable.db");
    let mut server = start_server(&db);
    let url = server.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        stdout(&run(&url, &["logout", "--tenant", "acme", "--user", "42"]))
    })
    .await
    .unwrap();
    assert!(out.contains("version 1"), "{out}");
    server.child.kill().unwrap(); // SIGKILL: no shutdown, no checkpoint
    server.child.wait().unwrap();

    let store = epochgate_control_plane::store::open(db.to_str().unwrap())
        .await
        .unwrap();
    let snap = store.sync(0, None).await.unwrap();
    assert_eq!(snap.version, 1);
    assert_eq!(snap.changes.len(), 1);
    assert_eq!(store.audit(AuditFilter::newest(10)).await.unwrap().len(), 1);
}

#[test]
fn wait_prints_how_many_edges_the_logout_reached() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("cp.db"));
    let o = run(
        &server.url,
        &["logout", "--tenant", "acme", "--user", "42", "--wait", "2s"],
    );
    let out = stdout(&o);
    // No edge polls this server: 0/0 at once, and a warning for the never-seen tenant.
    assert!(
        out.starts_with("logged out user 42 (tenant acme) — reached 0/0 edges in "),
        "{out}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("warning: tenant \"acme\" was never mentioned"),
        "{err}"
    );
    let o = run(
        &server.url,
        &[
            "logout",
            "--tenant",
            "acme",
            "--user",
            "42",
            "--wait",
            "2 minutes",
        ],
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--wait"));

    let out = stdout(&run(&server.url, &["revocations", "--tenant", "acme"]));
    assert!(out.starts_with("TARGET"), "{out}");
    assert!(out.contains("user 42 (tenant acme)"), "{out}");
}

#[tokio::test]
async fn audit_verify_detects_edits_deletions_and_a_rewound_head() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cp.db");
    let anchor = dir.path().join("anchor/audit.anchor");
    std::fs::create_dir_all(anchor.parent().unwrap()).unwrap();
    let anchor_arg = anchor.to_str().unwrap().to_string();
    let server = start_server_with(&db, &["--audit-anchor", &anchor_arg]);
    let url = server.url.clone();
    tokio::task::spawn_blocking(move || {
        for user in ["1", "2", "3", "4"] {
            stdout(&run(
                &url,
                &[
                    "logout", "--tenant", "acme", "--user", user, "--reason", "r",
                ],
            ));
        }
    })
    .await
    .unwrap();
    drop(server);

    let db_arg = db.to_str().unwrap().to_string();
    let verify = |anchor: bool| {
        let mut cmd = epochgate();
        cmd.args(["audit", "verify", "--db", &db_arg]);
        if anchor {
            cmd.args(["--anchor", &anchor_arg]);
        }
        cmd.output().unwrap()
    };
    let out = stdout(&verify(true));
    assert!(out.contains("audit chain intact: 4 entries"), "{out}");
    assert!(
        out.contains("every anchored head is present (up to entry 4)"),
        "{out}"
    );

    let sql = |stmt: &str| {
        rusqlite::Connection::open(&db)
            .unwrap()
            .execute_batch(stmt)
            .unwrap();
    };
    let fails_with = |o: Output, needle: &str| {
        assert!(!o.status.success(), "verify passed a tampered log");
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(err.contains(needle), "{err}");
        assert!(err.contains("tampered"), "{err}");
    };

    // An edited reason.
    let backup = std::fs::read(&db).unwrap();
    sql("UPDATE audit SET reason = 'nothing to see' WHERE id = 2");
    fails_with(verify(true), "entry 2 was edited");
    std::fs::write(&db, &backup).unwrap();
    stdout(&verify(true));

    // A deleted entry in the middle.
    sql("DELETE FROM audit WHERE id = 2");
    fails_with(verify(false), "entry 2 is missing");
    std::fs::write(&db, &backup).unwrap();

    // The newest entries deleted: the chain alone still verifies; the anchor does not.
    sql("DELETE FROM audit WHERE id >= 3");
    let o = verify(false);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no --anchor given"));
    fails_with(verify(true), "newest entries were deleted");
    std::fs::write(&db, &backup).unwrap();

    // A whole chain rewritten with recomputed hashes: each row checks out, the anchor
    // does not.
    sql("DELETE FROM audit WHERE id >= 2");
    let store = epochgate_control_plane::store::open(&db_arg).await.unwrap();
    store
        .record_audit(epochgate_control_plane::store::AuditRecord {
            at_ms: 1,
            actor: "attacker".into(),
            action: "logout_user".into(),
            outcome: "ok".into(),
            target: epochgate_core::state::Target::Global,
            reason: None,
            source: None,
            request_id: None,
        })
        .await
        .unwrap();
    drop(store);
    fails_with(verify(true), "differs from the anchored head");
}

#[test]
fn serve_refuses_an_unreadable_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_epochgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("x.db"))
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&cert)
        .env("EPOCHGATE_ADMIN_TOKEN", "admin-token-0123456789")
        .env("EPOCHGATE_EDGE_TOKEN", "edge-token-0123456789")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cert.pem"), "names the file: {err}");
    // Only one of the pair is refused by the flags themselves.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_epochgate"))
        .args(["serve", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-key"));
}

/// A certificate the CLI does not trust is reported as TLS's failure (found by the
/// error's type in the chain), with the flag that fixes it; the right CA then works.
#[test]
fn the_cli_names_a_tls_failure_and_its_fix() {
    let dir = tempfile::tempdir().unwrap();
    let pki = epochgate_tests::TestPki::new(dir.path());
    let other = tempfile::tempdir().unwrap();
    let stranger = epochgate_tests::TestPki::new(other.path());
    let cert = pki.cert.to_str().unwrap().to_string();
    let key = pki.key.to_str().unwrap().to_string();
    let server = start_server_with(
        &dir.path().join("cp.db"),
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    for ca in [None, Some(&stranger.ca_cert)] {
        let mut cmd = epochgate();
        cmd.args(["--url", &server.url, "--token", ADMIN, "edges"]);
        if let Some(ca) = ca {
            cmd.arg("--ca-cert").arg(ca);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TLS with https://127.0.0.1:"), "{err}");
        assert!(
            err.contains("invalid peer certificate"),
            "the rustls error: {err}"
        );
        assert!(err.contains("pass --ca-cert"), "{err}");
    }
    let out = epochgate()
        .args(["--url", &server.url, "--token", ADMIN, "edges", "--ca-cert"])
        .arg(&pki.ca_cert)
        .output()
        .unwrap();
    assert!(stdout(&out).contains("no edge has synced yet"));
    // Nothing listening is a connection failure, not a TLS one.
    let port = epochgate_tests::free_port();
    let out = run(&format!("https://127.0.0.1:{port}"), &["edges"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to"), "{err}");
}

/// `--log-format json`: every request one JSON line with method, route (the pattern),
/// status, latency, credential name and request id — and no token anywhere.
#[test]
fn access_logs_are_json_lines_with_route_credential_and_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let mut server = start_server_logging(
        &dir.path().join("cp.db"),
        &["--log-format", "json"],
        Stdio::from(std::fs::File::create(&log).unwrap()),
    );
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let raw = |req: String| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let answer = raw(format!(
        "POST /v1/tenants/acme/users/secret-user-42/logout HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\nx-request-id: req-logs-1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.to_lowercase().contains("x-request-id: req-logs-1"),
        "echoed: {answer}"
    );
    let answer = raw(format!(
        "GET /v1/sync?since=0&edge=e1 HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {EDGE}\r\nconnection: close\r\n\r\n"
    ));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    raw("GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".into());
    let lines = || -> Vec<serde_json::Value> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let access = loop {
        let access: Vec<serde_json::Value> = lines()
            .into_iter()
            .filter(|l| l["target"] == "epochgate::access")
            .collect();
        if access.len() >= 3 || Instant::now() > deadline {
            break access;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(access.len(), 3, "{access:?}");
    let logout = &access[0];
    assert_eq!(logout["fields"]["status"], 200, "{logout}");
    assert!(logout["fields"]["latency_ms"].is_u64(), "{logout}");
    assert_eq!(logout["span"]["method"], "POST");
    assert_eq!(
        logout["span"]["route"],
        "/v1/tenants/{tenant}/users/{user}/logout"
    );
    assert_eq!(logout["span"]["credential"], "admin");
    assert_eq!(logout["span"]["request_id"], "req-logs-1");
    let sync = &access[1];
    assert_eq!(sync["span"]["credential"], "edge-token");
    assert_eq!(sync["span"]["route"], "/v1/sync");
    assert_eq!(
        sync["span"]["request_id"].as_str().unwrap().len(),
        16,
        "a fresh id"
    );
    assert_eq!(access[2]["fields"]["status"], 404);
    assert_eq!(access[2]["span"]["route"], "(no route)");
    let _ = server.child.kill();
    let all = std::fs::read_to_string(&log).unwrap();
    for secret in [ADMIN, EDGE] {
        assert!(!all.contains(secret), "a token in the log:\n{all}");
    }
}

/// `--metrics-listen`: `/metrics` on its own address only; `/healthz` tells nothing of
/// the state.
#[test]
fn metrics_listen_serves_metrics_apart() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = epochgate()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--db",
        ])
        .arg(dir.path().join("cp.db"))
        .env("EPOCHGATE_ADMIN_TOKEN", ADMIN)
        .env("EPOCHGATE_EDGE_TOKEN", EDGE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let main = lines.next().unwrap().unwrap();
    let metrics = lines.next().unwrap().unwrap();
    let server = Server {
        child,
        url: main.strip_prefix("listening on ").unwrap().to_string(),
    };
    let metrics = metrics.strip_prefix("metrics on ").unwrap().to_string();
    let get = |url: String| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let (status, body) = get(format!("{metrics}/metrics"));
    assert_eq!(status, 200);
    assert!(body.contains("epochgate_state_version 0"), "{body}");
    let (status, body) = get(format!("{}/metrics", server.url));
    assert_eq!(status, 404, "not on the main listener: {body}");
    let (status, _) = get(format!("{metrics}/v1/edges"));
    assert_eq!(status, 404, "the metrics listener serves nothing else");
    let (status, body) = get(format!("{}/healthz", server.url));
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
}

/// Caller-supplied text (a reason, an operator name) is shown with control characters
/// escaped: an audit reason cannot clear the screen, move the cursor or forge a row.
#[test]
fn the_audit_table_escapes_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("cp.db"));
    let hostile = "fine\u{1b}[2J\u{1b}[1;1H\nFAKE-ROW\u{202e}gnp.exe\u{7}";
    let body = serde_json::json!({ "reason": hostile }).to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .post(format!("{}/v1/tenants/acme/users/42/logout", server.url))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(status, 200);
    let out = stdout(&run(&server.url, &["audit"]));
    for raw in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(
            !out.contains(raw),
            "a raw {raw:?} reached the terminal: {out:?}"
        );
    }
    assert_eq!(
        out.lines().count(),
        2,
        "header + one row, no forged row: {out}"
    );
    assert!(
        out.contains(r"fine\u{1b}[2J\u{1b}[1;1H\nFAKE-ROW\u{202e}gnp.exe\u{7}"),
        "{out}"
    );
    // --json is the server's answer as it is (JSON escapes it).
    let json = stdout(&run(&server.url, &["audit", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["entries"][0]["reason"], hostile);
}

#[test]
fn sessions_lists_users_and_one_users_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(&dir.path().join("e.db"));
    let now = epochgate_control_plane::now_ms();
    let start = (now / 1000) as i64 - 60;
    let body = serde_json::json!({"sessions": [
        {"tenant": "acme", "user": "auth0|5f7c", "sid": "s-1", "session_start": start, "first_seen_ms": now - 5000,
         "last_seen_ms": now - 1000, "requests": 7, "device": "Chrome 120 on macOS", "address": "203.0.113.0/24"},
        {"tenant": "acme", "user": "bob", "session_start": start, "first_seen_ms": now - 5000,
         "last_seen_ms": now - 2000, "requests": 1, "device": "AcmeApp 3.2.1 (iOS)"}
    ]});
    let port: u16 = server.url.rsplit(':').next().unwrap().parse().unwrap();
    let auth = format!("Bearer {EDGE}");
    let r = epochgate_tests::http::request(
        "127.0.0.1",
        port,
        "POST",
        "/v1/sync/sessions?edge=envoy-1",
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let o = run(&server.url, &["sessions", "--tenant", "acme"]);
    let out = stdout(&o);
    assert!(out.starts_with("USER"), "{out}");
    assert!(
        out.contains("auth0|5f7c") && out.contains("Chrome 120 on macOS"),
        "{out}"
    );
    assert!(
        out.contains("bob") && out.contains("AcmeApp 3.2.1 (iOS)"),
        "{out}"
    );
    let o = run(
        &server.url,
        &["sessions", "--tenant", "acme", "--search", "AUTH0"],
    );
    let out = stdout(&o);
    assert!(!out.contains("bob"), "{out}");
    let o = run(
        &server.url,
        &["sessions", "--tenant", "acme", "--user", "auth0|5f7c"],
    );
    let out = stdout(&o);
    assert!(
        out.contains("s-1")
            && out.contains("203.0.113.0/24")
            && out.contains("envoy-1")
            && out.contains("active"),
        "{out}"
    );
    run(
        &server.url,
        &["logout", "--tenant", "acme", "--user", "auth0|5f7c"],
    );
    let o = run(
        &server.url,
        &["sessions", "--tenant", "acme", "--user", "auth0|5f7c"],
    );
    assert!(stdout(&o).contains("revoked"), "{}", stdout(&o));
    let o = run(&server.url, &["--json", "sessions", "--tenant", "acme"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["users"][0]["user"], "bob");
}
