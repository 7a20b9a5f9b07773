//! `make demo`'s script, run for real: it starts everything on the demo's fixed ports,
//! and every command it prints works exactly as written.

use std::process::Command;
use std::time::Duration;

use epochgate_tests::{repo_root, spawn, wait_for};

#[test]
fn demo_starts_and_its_printed_commands_work_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("scripts/demo.sh"))
        .current_dir(repo_root());
    let mut demo = spawn("make demo", cmd, log.clone());
    let printed = wait_for(
        "the demo to print its commands",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(!text.contains("demo: "), "the demo failed:\n{text}");
            text.contains("Ctrl-C to stop.").then_some(text)
        },
    );
    let commands: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.strip_prefix("  $ "))
        .collect();
    assert!(commands.len() >= 6, "{printed}");

    // Run them in one shell, in order, exactly as printed; mark each command's output.
    let mut script = String::from("set -e\n");
    for (i, c) in commands.iter().enumerate() {
        script.push_str(&format!("echo '=== {i}'\n{c}\n"));
    }
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(repo_root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let outputs: Vec<&str> = stdout.split("=== ").skip(1).collect();
    let output_of = |needle: &str| -> Vec<&str> {
        commands
            .iter()
            .zip(&outputs)
            .filter(|(c, _)| c.contains(needle))
            .map(|(_, o)| *o)
            .collect()
    };
    let curls = output_of("curl");
    assert_eq!(curls.len(), 4, "{stdout}");
    assert!(
        curls[0].contains(r#""user":"42""#),
        "first call passes: {}",
        curls[0]
    );
    assert!(
        curls[1].contains("401") && curls[1].contains(r#"{"error":"session_revoked"}"#),
        "{}",
        curls[1]
    );
    assert!(
        curls[2].contains("302") && curls[2].contains("reason=session_revoked"),
        "{}",
        curls[2]
    );
    assert!(
        curls[2]
            .to_ascii_lowercase()
            .contains("set-cookie: portal_session=;"),
        "{}",
        curls[2]
    );
    assert!(
        curls[3].contains(r#""user":"42""#),
        "signing in again works: {}",
        curls[3]
    );
    assert!(
        output_of("logout")[0].contains("logged out user 42"),
        "{stdout}"
    );
    assert!(output_of("edges")[0].contains("demo-envoy"), "{stdout}");
    assert!(output_of("audit")[0].contains("lost phone"), "{stdout}");

    // The console it prints: its sign-in page, and the demo sign-in it names works.
    assert!(
        printed.contains("http://127.0.0.1:8080/console/"),
        "{printed}"
    );
    assert!(printed.contains("demo-admin-token-0123456789"), "{printed}");
    let page = epochgate_tests::http::request("127.0.0.1", 8080, "GET", "/console/login", &[], b"")
        .unwrap();
    assert_eq!(page.status, 200);
    let users = wait_for("user 42 in the users list", Duration::from_secs(10), || {
        let auth = "Bearer demo-admin-token-0123456789";
        let r = epochgate_tests::http::request(
            "127.0.0.1",
            8080,
            "GET",
            "/v1/tenants/acme/users",
            &[("authorization", auth.as_bytes())],
            b"",
        )
        .ok()?;
        r.text().contains(r#""user":"42""#).then_some(r.text())
    });
    assert!(users.contains("curl"), "the device: {users}");

    demo.terminate();
    assert!(demo.log().contains("demo: stopped"), "{}", demo.log());
}
