//! The control plane going away and coming back.

use epochgate_tests::Stack;
use serde_json::json;

#[test]
fn every_revocation_survives_a_control_plane_restart_on_the_same_file() {
    let mut stack = Stack::start();
    let calls = [
        "/v1/tenants/acme/users/42/logout",
        "/v1/tenants/acme/users/auth0%7C5f7c/logout",
        "/v1/tenants/globex/logout",
        "/v1/tenants/acme/sessions/s-9/revoke",
        "/v1/logout",
    ];
    for path in calls {
        let r = stack.cp.admin("POST", path, r#"{"reason":"restart test"}"#);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let before_acme = stack
        .cp
        .admin("GET", "/v1/tenants/acme/revocations", "")
        .json();
    let before_globex = stack
        .cp
        .admin("GET", "/v1/tenants/globex/revocations", "")
        .json();
    let before = stack.cp.snapshot();
    assert_eq!(before["changes"].as_array().unwrap().len(), 5, "{before}");

    // SIGKILL: whatever was answered 200 must be on disk.
    stack.cp.proc.kill();
    stack.cp.restart();
    assert_eq!(
        stack
            .cp
            .admin("GET", "/v1/tenants/acme/revocations", "")
            .json(),
        before_acme
    );
    assert_eq!(
        stack
            .cp
            .admin("GET", "/v1/tenants/globex/revocations", "")
            .json(),
        before_globex
    );
    let after = stack.cp.snapshot();
    assert_eq!(after["stream"], before["stream"], "same store, same stream");
    assert_eq!(after["version"], before["version"]);
    assert_eq!(after["changes"], before["changes"]);

    // And the edge, which kept its state, still enforces all of them.
    stack.wait_applied(after["version"].as_u64().unwrap());
    for (user, tenant, sid) in [
        ("42", "acme", None),
        ("auth0|5f7c", "acme", None),
        ("1", "globex", None),
        ("7", "acme", Some("s-9")),
    ] {
        let extra = sid.map_or(json!({}), |s| json!({"sid": s}));
        let t = stack.token(user, tenant, extra);
        assert_eq!(stack.get_with_token("/", &t).status, 401, "{user}@{tenant}");
    }
}
