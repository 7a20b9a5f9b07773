//! Configuration at the edge: a bad plugin configuration — or a key the shipped filter
//! cannot verify — is refused at load with a log line naming the field; the checked-in
//! demo config is the template with demo values.

use std::process::Command;
use std::time::Duration;

use epochgate_tests::signing::Alg;
use epochgate_tests::{
    envoy_bin, free_port, render_envoy_config, repo_root, wait_for, wasm_path, EnvoyValues,
};
use serde_json::json;

/// Envoy's log when it refuses to start with this filter configuration (it must).
fn refused(filter_config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = render_envoy_config(&EnvoyValues {
        node_id: "bad-config",
        listen_port: free_port(),
        admin_port: free_port(),
        upstream_port: free_port(),
        control_plane_port: free_port(),
        wasm: &wasm_path().display().to_string(),
        filter_config,
        sync_config: r#"{"cluster":"epochgate_control_plane"}"#,
        pre_filters: "",
        extra_clusters: "",
        control_plane_tls: "",
    });
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    let mut child = Command::new(envoy_bin())
        .arg("-c")
        .arg(&path)
        .args(["--concurrency", "1", "--disable-hot-restart"])
        .env("EPOCHGATE_EDGE_TOKEN", "x")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Envoy refuses the listener and exits; give it a generous deadline.
    let status = wait_for(
        "Envoy to refuse the config",
        Duration::from_secs(30),
        || child.try_wait().unwrap(),
    );
    let out = child.wait_with_output().unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!status.success(), "{log}");
    log
}

#[test]
fn bad_filter_config_is_refused_with_the_field_named() {
    let log = refused(
        r#"{"keys":[{"kid":"k","alg":"HS257","secret":"0123456789abcdef0123456789abcdef"}]}"#,
    );
    assert!(log.contains("config field `keys[0].alg`"), "{log}");
}

/// The shipped filter verifies RS*/ES* through Envoy and has pure-Rust code only for
/// EdDSA (and HMAC): a key it cannot verify is refused at load, with the cargo feature
/// that would add it — never a filter that fails every such token.
#[test]
fn keys_the_shipped_filter_cannot_verify_are_refused_at_load_with_the_feature_named() {
    let key = |alg: Alg| json!({"keys": [alg.key()]});
    let log = refused(&key(Alg::Ps256).to_string());
    assert!(log.contains("config field `keys[0].alg`"), "{log}");
    assert!(log.contains("cargo feature `pss`"), "{log}");
    let mut no_host = key(Alg::Es256);
    no_host["native_verify"] = json!(false);
    let log = refused(&no_host.to_string());
    assert!(log.contains("cargo feature `pure-rust`"), "{log}");
}

#[test]
fn the_demo_config_is_the_template_with_the_demo_values() {
    let json = |name: &str| {
        std::fs::read_to_string(repo_root().join("envoy").join(name))
            .unwrap()
            .replace('\n', " ")
            .trim()
            .to_string()
    };
    let (filter_config, sync_config) = (json("demo-filter.json"), json("demo-sync.json"));
    let rendered = render_envoy_config(&EnvoyValues {
        node_id: "demo-envoy",
        listen_port: 10000,
        admin_port: 9901,
        upstream_port: 8081,
        control_plane_port: 8080,
        wasm: "target/filter-dist/epochgate_filter.wasm",
        filter_config: &filter_config,
        sync_config: &sync_config,
        pre_filters: "",
        extra_clusters: "",
        control_plane_tls: "",
    });
    let path = repo_root().join("envoy/demo.yaml");
    if std::env::var_os("UPDATE_DEMO_CONFIG").is_some() {
        std::fs::write(&path, &rendered).unwrap();
    }
    let demo = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        demo == rendered,
        "envoy/demo.yaml drifted from envoy/epochgate.yaml.tmpl and envoy/demo-*.json: \
         run `UPDATE_DEMO_CONFIG=1 cargo test -p epochgate-tests --test e2e the_demo_config`"
    );
}

/// `envoy --mode validate`: the config parses and every extension in it loads.
fn validate(path: &std::path::Path) {
    let out = Command::new(envoy_bin())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(path)
        .current_dir(repo_root())
        .env("EPOCHGATE_EDGE_TOKEN", "validate-only")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} does not validate:\n{log}",
        path.display()
    );
}

#[test]
fn every_envoy_config_in_the_repo_validates() {
    validate(&repo_root().join("envoy/demo.yaml"));
    // The template as the tests render it, with every optional part filled in.
    let dir = tempfile::tempdir().unwrap();
    let config = render_envoy_config(&EnvoyValues {
        node_id: "validate",
        listen_port: free_port(),
        admin_port: free_port(),
        upstream_port: free_port(),
        control_plane_port: free_port(),
        wasm: &wasm_path().display().to_string(),
        filter_config: r#"{"mode":"jwt_authn_metadata","remote_jwks":true,"keys":[]}"#,
        sync_config: r#"{"cluster":"epochgate_control_plane","jwks":{"cluster":"idp","authority":"idp","path":"/jwks"}}"#,
        pre_filters: "          - name: envoy.filters.http.jwt_authn\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication\n              providers:\n                p:\n                  remote_jwks:\n                    http_uri: { uri: \"http://idp/jwks\", cluster: idp, timeout: 1s }\n                  payload_in_metadata: jwt_payload\n",
        extra_clusters: &epochgate_tests::Stack::cluster_yaml("idp", free_port()),
        control_plane_tls: &epochgate_tests::TestPki::new(dir.path()).envoy_transport_socket(),
    });
    let path = dir.path().join("envoy.yaml");
    std::fs::write(&path, config).unwrap();
    validate(&path);
}
