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
    let mut child = epochgate()
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .env("EPOCHGATE_ADMIN_TOKEN", ADMIN)
        .env("EPOCHGATE_EDGE_TOKEN", EDGE)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
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

    let out = stdout(&run(&url, &["logout-all", "--tenant", "a/b", "--json"]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["target"]["tenant"], "a/b");
    assert_eq!(json["version"], 2);

    let out = stdout(&run(&url, &["logout-all", "--all-tenants"]));
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
