//! The worker's own settings: defaults, URL handling, edge ids, and bad values named.

use epochgate_core::config::WorkerConfig;
use serde_json::{json, Value};

fn parse(v: Value) -> Result<WorkerConfig, String> {
    WorkerConfig::from_json(v.to_string().as_bytes()).map_err(|e| e.to_string())
}

fn minimal() -> Value {
    json!({"origin": "http://127.0.0.1:8081/", "control_plane": "https://cp.example.com"})
}

#[test]
fn worker_config_defaults_and_urls() {
    let c = parse(minimal()).unwrap();
    assert_eq!(c.origin, "http://127.0.0.1:8081");
    assert_eq!(c.control_plane, "https://cp.example.com");
    assert_eq!(c.deployment, "worker");
    assert!(
        c.refresh_ms <= 1000,
        "the refresh interval is short by default"
    );
    assert_eq!(
        c.origin_url("/api/x?a=1"),
        "http://127.0.0.1:8081/api/x?a=1"
    );
    assert_eq!(c.origin_url(""), "http://127.0.0.1:8081/");
    assert_eq!(
        c.sync_url("/v1/sync?since=0&wait=0"),
        "https://cp.example.com/v1/sync?since=0&wait=0"
    );
    let based =
        parse(json!({"origin": "https://o.example/base/", "control_plane": "http://cp"})).unwrap();
    assert_eq!(based.origin_url("/x"), "https://o.example/base/x");
    // Snapshots come in pages, as in Envoy; the sync client short-polls every refresh_ms
    // and backs off from it.
    assert_eq!(c.snapshot_page, 10_000);
    let client = c.client_config("w-1".into(), None);
    assert_eq!(
        (
            client.wait_s,
            client.page_limit,
            client.min_interval_ms,
            client.retry_min_ms
        ),
        (0, 10_000, c.refresh_ms, c.refresh_ms)
    );
    // With the relay telling it of changes, an isolate's own calls are rarer; the relay
    // long-polls as an edge of its own.
    assert_eq!((c.relay_check_ms, c.relay_refresh_ms), (20, 10_000));
    let relayed = c.client_config("w-1".into(), Some(60));
    assert_eq!(
        (
            relayed.wait_s,
            relayed.min_interval_ms,
            relayed.retry_min_ms
        ),
        (0, 10_000, c.refresh_ms)
    );
    // Never so rare that the state goes stale between calls.
    assert_eq!(
        c.client_config("w-1".into(), Some(4)).min_interval_ms,
        2_000
    );
    assert_eq!(
        c.client_config("w-1".into(), Some(0)).min_interval_ms,
        c.refresh_ms
    );
    let relay = c.relay_client_config();
    assert_eq!(
        (relay.edge_id.as_str(), relay.wait_s, relay.min_interval_ms),
        ("worker-relay", 20, 0)
    );
    assert!(relay.call_timeout_ms > 20_000);
}

#[test]
fn worker_edge_id_is_deployment_plus_isolate_random_id() {
    let mut v = minimal();
    v["deployment"] = json!("portal-eu");
    let c = parse(v).unwrap();
    assert_eq!(c.edge_id(0xab), "portal-eu-00000000000000ab");
    assert_ne!(c.edge_id(1), c.edge_id(2));
}

#[test]
fn bad_worker_config_names_the_field() {
    let cases = [
        (
            json!({"origin": "ftp://x", "control_plane": "http://cp"}),
            "`origin`",
        ),
        (
            json!({"origin": "http://", "control_plane": "http://cp"}),
            "`origin`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "cp:8080"}),
            "`control_plane`",
        ),
        (
            json!({"origin": "http://o?x=1", "control_plane": "http://cp"}),
            "`origin`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "deployment": ""}),
            "`deployment`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "deployment": "a\nb"}),
            "`deployment`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "refresh_ms": 0}),
            "`refresh_ms`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "sync_timeout_ms": 1}),
            "`sync_timeout_ms`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "refresh_ms": 9000, "retry_max_ms": 1000}),
            "`retry_max_ms`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "snapshot_page": 100_001}),
            "`snapshot_page`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "relay_check_ms": 0}),
            "`relay_check_ms`",
        ),
        (
            json!({"origin": "http://o", "control_plane": "http://cp", "refresh_ms": 500, "relay_refresh_ms": 100}),
            "`relay_refresh_ms`",
        ),
    ];
    for (v, field) in cases {
        let err = parse(v.clone()).unwrap_err();
        assert!(err.contains(field), "{v}: {err}");
    }
    let err = parse(json!({"origin": "http://o", "control_plane": "http://cp", "refresh": 5}))
        .unwrap_err();
    assert!(err.contains("unknown field"), "{err}");
    let err = parse(json!({"control_plane": "http://cp"})).unwrap_err();
    assert!(err.contains("origin"), "{err}");
}

#[test]
fn session_reports_default_to_every_10_s_and_are_bounded() {
    let c = parse(minimal()).unwrap();
    assert_eq!(c.sessions_report_s, 10);
    assert_eq!(
        c.sessions_url("worker-00ff"),
        "https://cp.example.com/v1/sync/sessions?edge=worker-00ff"
    );
    for bad in [0, 301] {
        let mut v = minimal();
        v["sessions_report_s"] = json!(bad);
        let err = parse(v).unwrap_err();
        assert!(err.contains("sessions_report_s"), "{err}");
    }
    let filter = epochgate_core::Config::from_json(
        br#"{"keys":[{"alg":"HS256","secret":"0123456789abcdef0123456789abcdef"}]}"#,
    )
    .unwrap();
    assert!(filter.report_sessions, "sessions are reported by default");
    assert!(!filter.truncate_addresses);
    let off = epochgate_core::Config::from_json(
        br#"{"keys":[{"alg":"HS256","secret":"0123456789abcdef0123456789abcdef"}],"report_sessions":false,"truncate_addresses":true}"#,
    )
    .unwrap();
    assert!(!off.report_sessions);
    assert!(off.truncate_addresses);
}
