//! The control plane over HTTPS: Envoy's cluster reaches it with TLS, trusting a CA the
//! test makes; the CLI too. A wrong CA is refused, never silently accepted.

use std::process::Command;
use std::time::Duration;

use epochgate_tests::{
    envoy_bin, epochgate_bin, free_port, http, render_envoy_config, spawn, wait_for, wasm_path,
    EnvoyValues, Options, Stack, TestPki, ADMIN_TOKEN, EDGE_TOKEN,
};
use serde_json::json;

fn cli(stack: &Stack, args: &[&str], ca: Option<&std::path::Path>) -> std::process::Output {
    let mut cmd = Command::new(epochgate_bin());
    cmd.args(args).args([
        "--url",
        &format!("https://127.0.0.1:{}", stack.cp.port),
        "--token",
        ADMIN_TOKEN,
    ]);
    if let Some(ca) = ca {
        cmd.arg("--ca-cert").arg(ca);
    }
    cmd.output().unwrap()
}

#[test]
fn envoy_and_the_cli_reach_the_control_plane_over_tls() {
    let stack = Stack::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let pki = stack.cp.tls.clone().unwrap();
    let t = stack.token("42", "acme", json!({}));
    assert_eq!(stack.get_with_token("/", &t).status, 200, "synced over TLS");

    // Plain HTTP to the HTTPS port gets nothing.
    assert!(
        http::request("127.0.0.1", stack.cp.port, "GET", "/healthz", &[], b"")
            .map_or(true, |r| r.status != 200)
    );

    // The CLI without the CA refuses the server's certificate.
    let out = cli(
        &stack,
        &["logout", "--tenant", "acme", "--user", "42"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );

    let out = cli(
        &stack,
        &[
            "logout", "--tenant", "acme", "--user", "42", "--reason", "over tls",
        ],
        Some(&pki.ca_cert),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("logged out user 42"));
    let took = stack.time_until_status(&t, 401, Duration::from_secs(1));
    println!("propagation over TLS: {} ms", took.as_millis());
}

#[test]
fn an_edge_that_does_not_trust_the_servers_ca_does_not_sync() {
    let stack = Stack::start_with(Options {
        tls: true,
        ..Options::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let stranger = TestPki::new(dir.path());
    let (port, admin) = (free_port(), free_port());
    let config = render_envoy_config(&EnvoyValues {
        node_id: "wrong-ca",
        listen_port: port,
        admin_port: admin,
        upstream_port: stack.upstream.port,
        control_plane_port: stack.cp.port,
        wasm: &wasm_path().display().to_string(),
        filter_config:
            &json!({"keys": [{"kid": "e2e", "alg": "HS256", "secret": epochgate_tests::SECRET}]})
                .to_string(),
        sync_config: r#"{"cluster":"epochgate_control_plane","retry_min_ms":100,"retry_max_ms":500}"#,
        pre_filters: "",
        extra_clusters: "",
        control_plane_tls: &stranger.envoy_transport_socket(),
    });
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "--disable-hot-restart"])
        .env("EPOCHGATE_EDGE_TOKEN", EDGE_TOKEN);
    let _envoy = spawn("envoy (wrong CA)", cmd, dir.path().join("envoy.log"));
    let stat = |name: &str| -> Option<u64> {
        let r = http::request(
            "127.0.0.1",
            admin,
            "GET",
            &format!("/stats?filter=^wasmcustom.epochgate.{name}$"),
            &[],
            b"",
        )
        .ok()?;
        r.text()
            .lines()
            .find_map(|l| l.split(": ").nth(1)?.trim().parse().ok())
    };
    wait_for("failed syncs", Duration::from_secs(20), || {
        (stat("sync_failed")? >= 2).then_some(())
    });
    assert_eq!(stat("sync_ok"), Some(0));
    let t = stack.token("42", "acme", json!({}));
    let auth = format!("Bearer {t}");
    let r = http::request(
        "127.0.0.1",
        port,
        "GET",
        "/",
        &[("authorization", auth.as_bytes())],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 503, "never synced: on_stale deny");
}
