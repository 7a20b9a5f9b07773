//! Sessions seen at the edge reach the control plane's users list.

use std::time::Duration;

use epochgate_tests::{wait_for, Options, Stack};
use serde_json::json;

#[test]
fn envoy_reports_the_sessions_it_sees() {
    let stack = Stack::start_with(Options {
        sync: json!({"sessions_report_s": 1}),
        filter: json!({"truncate_addresses": true}),
        ..Options::default()
    });
    let alice = stack.token("alice", "acme", json!({"sid": "a-1"}));
    let bob = stack.token("bob", "acme", json!({}));
    for (token, ua) in [
        (&alice, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"),
        (&bob, "AcmeApp/3.2.1 (iPhone; iOS 17.1; Scale/3.00)"),
    ] {
        let auth = format!("Bearer {token}");
        for _ in 0..3 {
            let r = stack.get("/api/orders", &[("authorization", auth.as_bytes()), ("user-agent", ua.as_bytes())]);
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let users = wait_for("both users in the list", Duration::from_secs(10), || {
        let v = stack.cp.admin("GET", "/v1/tenants/acme/users", "").json();
        (v["users"].as_array()?.len() == 2).then_some(v)
    });
    println!("{users:#}");
    let devices: Vec<String> = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["devices"][0].as_str().unwrap().to_string())
        .collect();
    assert!(
        devices.contains(&"Chrome 120 on Linux".to_string()),
        "{devices:?}"
    );
    assert!(
        devices.contains(&"AcmeApp 3.2.1 (iOS)".to_string()),
        "{devices:?}"
    );
    let s = stack
        .cp
        .admin("GET", "/v1/tenants/acme/users/alice/sessions", "")
        .json();
    assert_eq!(s["sessions"][0]["sid"], "a-1");
    assert_eq!(s["sessions"][0]["address"], "127.0.0.0/24");
    assert_eq!(s["sessions"][0]["edge"], stack.node_id.as_str());
}
