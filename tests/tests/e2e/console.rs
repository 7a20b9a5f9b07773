//! The admin console in a real Chromium: `tests/browser/console.mjs` (playwright-core
//! driving Debian's `chromium` headless) signs in, watches two users' sessions arrive
//! from the real Envoy, logs one out (timing the click to Envoy's first 401), logs out
//! the whole tenant, schedules and cancels, sees a user's sessions (device, truncated
//! address, the edge), reads Audit and Edges, checks a tenant
//! admin's limits and a forged CSRF token, and screenshots each page into
//! `target/console-screenshots/`. Then the audit log must hold what the console did,
//! attributed to who signed in.

use std::path::PathBuf;
use std::process::Command;

use std::time::Duration;

use epochgate_tests::{
    free_port, http, repo_root, spawn, wait_for, Options, Stack, ADMIN_TOKEN, SECRET,
};
use serde_json::{json, Value};

/// The tenant admin's API key (sessions:read, sessions:revoke, audit:read on acme).
const TENANT_KEY: &str = "eg_acme_console_0123456789abcdef";

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "{} is missing: run `make setup` (it runs `apt-get install -y chromium`)",
        path.display()
    );
    path
}

#[test]
fn the_console_in_chromium() {
    let chromium = chromium();
    assert!(
        repo_root().join("node_modules/playwright-core").exists(),
        "node_modules/playwright-core is missing: run `make setup` (npm ci)"
    );
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = keys_dir.path().join("api-keys.json");
    std::fs::write(
        &keys,
        json!({"api_keys": [{
            "name": "acme-console", "tenant": "acme",
            "scopes": ["sessions:read", "sessions:revoke", "audit:read"],
            "sha256": hex(&hmac_sha256::Hash::hash(TENANT_KEY.as_bytes())),
        }]})
        .to_string(),
    )
    .unwrap();
    // The admins' IdP, for "Sign in with your IdP": its redirect URI names the console.
    let cp_port = free_port();
    let idp_port = free_port();
    let redirect = format!("http://127.0.0.1:{cp_port}/console/login/oidc/callback");
    let mut idp_cmd = Command::new("node");
    idp_cmd
        .arg(repo_root().join("tests/browser/idp.mjs"))
        .env("IDP_PORT", idp_port.to_string())
        .env("CONSOLE_REDIRECT_URI", &redirect);
    let _idp = spawn("oidc-provider", idp_cmd, keys_dir.path().join("idp.log"));
    let jwks = wait_for("the IdP's JWKS", Duration::from_secs(30), || {
        http::request("127.0.0.1", idp_port, "GET", "/jwks", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
            .map(|r| r.json())
    });
    let issuer = format!("http://127.0.0.1:{idp_port}");
    let admin_jwt = keys_dir.path().join("admin-jwt.json");
    std::fs::write(
        &admin_jwt,
        json!({"jwks": jwks, "issuer": issuer, "audiences": ["epochgate-admin"]}).to_string(),
    )
    .unwrap();
    let oidc = keys_dir.path().join("console-oidc.json");
    std::fs::write(
        &oidc,
        json!({"issuer": issuer, "client_id": "epochgate-console", "redirect_uri": redirect})
            .to_string(),
    )
    .unwrap();
    let stack = Stack::start_with(Options {
        sync: json!({"sessions_report_s": 1}),
        filter: json!({"truncate_addresses": true}),
        control_plane_port: Some(cp_port),
        control_plane_args: vec![
            "--api-keys".into(),
            keys.display().to_string(),
            "--admin-jwt-config".into(),
            admin_jwt.display().to_string(),
            "--console-oidc".into(),
            oidc.display().to_string(),
        ],
        ..Options::default()
    });
    let shots = repo_root().join("target/console-screenshots");
    let run = Command::new("node")
        .arg(repo_root().join("tests/browser/console.mjs"))
        .env("CONSOLE_URL", format!("http://127.0.0.1:{}", stack.cp.port))
        .env(
            "ENVOY_URL",
            format!("http://127.0.0.1:{}", stack.envoy_port),
        )
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env("TENANT_KEY", TENANT_KEY)
        .env("JWT_SECRET", SECRET)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "the browser scenario failed:\n{stdout}\n{stderr}\n--- control plane ---\n{}",
        stack
            .cp
            .proc
            .log()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("no result line ({e}):\n{stdout}"));
    println!(
        "console: Logout click → Envoy's first 401: {} ms; receipt: {}",
        result["click_to_401_ms"], result["logout_receipt"]
    );
    println!("console: screenshots in {}", shots.display());

    // The audit log holds what the console did, as the API would have written it.
    let audit = stack.cp.admin("GET", "/v1/audit?limit=200", "").json();
    let entries = audit["entries"].as_array().unwrap();
    let find = |action: &str, outcome: &str, actor: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome && e["actor"] == actor)
            .cloned()
            .collect::<Vec<Value>>()
    };
    let logout = find("logout_user", "ok", "admin");
    assert_eq!(logout.len(), 1, "{audit:#}");
    assert_eq!(logout[0]["target"]["user"], "alice");
    assert!(logout[0]["source"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let all = find("logout_tenant", "ok", "admin");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0]["reason"], "incident 7: tokens leaked");
    assert_eq!(find("schedule_logout_tenant", "ok", "admin").len(), 1);
    // The forged CSRF token changed nothing: bob was never logged out on his own.
    assert!(
        entries.iter().all(|e| e["target"]["user"] != "bob"),
        "{audit:#}"
    );
    // The tenant admin's refusals are audited like the API's.
    assert_eq!(find("logout_tenant", "denied", "key:acme-console").len(), 1);
    let reads = find("read_sessions", "denied", "key:acme-console");
    assert!(reads.len() >= 3, "{audit:#}");
    assert!(reads.iter().all(|e| e["target"]["tenant"] == "globex"));
    // The admin who came through the IdP acts as `jwt:<sub>`.
    assert_eq!(
        find("logout_user", "ok", "jwt:ops-alice").len(),
        1,
        "{audit:#}"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
