//! Force logout, end to end, written once against [`Edge`] and run on the real Envoy and
//! on the Worker in a real workerd, alone and told of changes by its relay
//! (`logout::<scenario>::envoy`, `::worker`, `::worker_relay`): user,
//! tenant, global, session, web, impersonation, scheduled, the control plane down; signing
//! in again works. What only one edge has stays with it (`worker.rs`, `production.rs`).

use std::time::{Duration, Instant};

use epochgate_tests::{now_ms, now_s, token, wait_for, Edge, LOGIN_URL};
use serde_json::json;

/// Runs each scenario on both edges, as `<scenario>::envoy` and `<scenario>::worker`.
macro_rules! on_both_edges {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[test]
            fn envoy() {
                super::$scenario(&mut epochgate_tests::Stack::start());
            }
            #[test]
            fn worker() {
                super::$scenario(&mut epochgate_tests::worker::WorkerStack::start());
            }
            /// Two isolates told of changes by the deployment's relay (its Durable
            /// Object); the scenario runs on the one that does not host the object.
            #[test]
            fn worker_relay() {
                super::$scenario(&mut epochgate_tests::worker::WorkerStack::relayed(2));
            }
        }
    )*};
}

on_both_edges!(
    a_valid_token_passes_and_the_upstream_sees_the_identity,
    a_user_logout_revokes_earlier_tokens_and_new_logins_pass,
    opaque_ids_are_percent_encoded_in_the_path,
    a_tenant_logout_rejects_every_earlier_token_of_that_tenant_only,
    a_global_logout_rejects_every_tenant,
    a_session_revoke_rejects_only_that_sid,
    a_browser_with_a_revoked_session_is_sent_to_login_with_the_cookie_cleared,
    an_impersonation_ends_with_a_logout_of_the_actor,
    a_scheduled_logout_is_announced_then_applies,
    the_edge_keeps_enforcing_while_the_control_plane_is_down_and_catches_up_after,
);

fn admin_ok(edge: &dyn Edge, method: &str, path: &str, body: &str) -> u64 {
    let r = edge.cp().admin(method, path, body);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r.json()["version"].as_u64().unwrap()
}

fn a_valid_token_passes_and_the_upstream_sees_the_identity(edge: &mut dyn Edge) {
    let t = token("42", "acme", json!({"sid": "s-42-a"}));
    let auth = format!("Bearer {t}");
    let r = edge.get(
        "/api/orders?page=2",
        &[
            ("authorization", auth.as_bytes()),
            ("x-epochgate-user", b"admin"),
            ("x-epochgate-role", b"root"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/api/orders?page=2");
    let seen = edge.upstream().last().unwrap();
    assert_eq!(seen.header("x-epochgate-user"), Some("42"));
    assert_eq!(seen.header("x-epochgate-tenant"), Some("acme"));
    assert_eq!(seen.header("x-epochgate-session"), Some("s-42-a"));
    assert_eq!(
        seen.header("x-epochgate-role"),
        None,
        "spoofed header stripped"
    );
    // No token: 401 missing_token, and the upstream never sees it.
    let before = edge.upstream().requests().len();
    let r = edge.get("/api/orders", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_token");
    assert_eq!(edge.upstream().requests().len(), before);
}

fn a_user_logout_revokes_earlier_tokens_and_new_logins_pass(edge: &mut dyn Edge) {
    let t42 = token("42", "acme", json!({}));
    let t42_mobile = token("42", "acme", json!({"sid": "phone"}));
    let t43 = token("43", "acme", json!({}));
    for t in [&t42, &t42_mobile, &t43] {
        assert_eq!(edge.get_with_token("/api/orders", t).status, 200);
    }
    admin_ok(
        &*edge,
        "POST",
        "/v1/tenants/acme/users/42/logout",
        r#"{"reason":"lost phone"}"#,
    );
    let took = edge.time_until_status(&t42, 401, edge.propagation_deadline());
    println!(
        "propagation (user logout → {} denies): {} ms",
        edge.name(),
        took.as_millis()
    );
    let r = edge.get_with_token("/api/orders", &t42);
    assert_eq!(r.json()["error"], "session_revoked");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="session revoked""#)
    );
    assert_eq!(edge.get_with_token("/api/orders", &t42_mobile).status, 401);
    assert_eq!(edge.get_with_token("/api/orders", &t43).status, 200);

    // Signing in again works: a token issued after the logout (the next second) passes.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = token("42", "acme", json!({"iat": now_s()}));
    assert_eq!(edge.get_with_token("/api/orders", &fresh).status, 200);
    // A refresh of the old login (new iat, old auth_time) does not.
    let refreshed = token(
        "42",
        "acme",
        json!({"iat": now_s(), "auth_time": now_s() - 600}),
    );
    assert_eq!(edge.get_with_token("/api/orders", &refreshed).status, 401);
}

fn opaque_ids_are_percent_encoded_in_the_path(edge: &mut dyn Edge) {
    let t = token("auth0|5f7c8ec7", "acme/eu", json!({}));
    let other = token("auth0", "acme", json!({}));
    assert_eq!(edge.get_with_token("/", &t).status, 200);
    admin_ok(
        &*edge,
        "POST",
        "/v1/tenants/acme%2Feu/users/auth0%7C5f7c8ec7/logout",
        "",
    );
    edge.time_until_status(&t, 401, edge.propagation_deadline());
    assert_eq!(edge.get_with_token("/", &other).status, 200);
}

fn a_tenant_logout_rejects_every_earlier_token_of_that_tenant_only(edge: &mut dyn Edge) {
    let acme: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|u| token(u, "acme", json!({})))
        .collect();
    let globex = token("1", "globex", json!({}));
    assert_eq!(edge.get_with_token("/", &acme[0]).status, 200);
    admin_ok(
        &*edge,
        "POST",
        "/v1/tenants/acme/logout",
        r#"{"reason":"incident"}"#,
    );
    let took = edge.time_until_status(&acme[0], 401, edge.propagation_deadline());
    println!(
        "propagation (tenant logout → {} denies): {} ms",
        edge.name(),
        took.as_millis()
    );
    for t in &acme {
        assert_eq!(
            edge.get_with_token("/", t).json()["error"],
            "session_revoked"
        );
    }
    assert_eq!(edge.get_with_token("/", &globex).status, 200);
}

fn a_global_logout_rejects_every_tenant(edge: &mut dyn Edge) {
    let a = token("1", "acme", json!({}));
    let g = token("1", "globex", json!({}));
    assert_eq!(edge.get_with_token("/", &g).status, 200);
    admin_ok(&*edge, "POST", "/v1/logout", r#"{"reason":"maintenance"}"#);
    edge.time_until_status(&a, 401, edge.propagation_deadline());
    assert_eq!(edge.get_with_token("/", &g).status, 401);
}

fn a_session_revoke_rejects_only_that_sid(edge: &mut dyn Edge) {
    let laptop = token("42", "acme", json!({"sid": "laptop"}));
    let phone = token("42", "acme", json!({"sid": "phone"}));
    assert_eq!(edge.get_with_token("/", &phone).status, 200);
    admin_ok(
        &*edge,
        "POST",
        "/v1/tenants/acme/sessions/phone/revoke",
        r#"{"reason":"lost device"}"#,
    );
    let took = edge.time_until_status(&phone, 401, edge.propagation_deadline());
    println!(
        "propagation (session revoke → {} denies): {} ms",
        edge.name(),
        took.as_millis()
    );
    assert_eq!(edge.get_with_token("/", &laptop).status, 200);
    // A new token of the revoked session is still revoked: the sid is what is revoked.
    let phone_again = token("42", "acme", json!({"sid": "phone", "iat": now_s() + 5}));
    assert_eq!(edge.get_with_token("/", &phone_again).status, 401);
}

fn a_browser_with_a_revoked_session_is_sent_to_login_with_the_cookie_cleared(edge: &mut dyn Edge) {
    let t = token("42", "acme", json!({}));
    let cookie = format!("theme=dark; portal_session={t}");
    let browser = |e: &dyn Edge| {
        e.get(
            "/reports",
            &[
                ("accept", b"text/html,application/xhtml+xml"),
                ("cookie", cookie.as_bytes()),
            ],
        )
    };
    assert_eq!(browser(&*edge).status, 200);
    admin_ok(&*edge, "POST", "/v1/tenants/acme/users/42/logout", "");
    edge.time_until_status(&t, 401, edge.propagation_deadline());
    let r = browser(&*edge);
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some(format!("{LOGIN_URL}?reason=session_revoked").as_str())
    );
    let set_cookie = r.header("set-cookie").unwrap();
    assert!(
        set_cookie.starts_with("portal_session=; Max-Age=0"),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("Path=/") && set_cookie.contains("Domain=portal.example.test"),
        "{set_cookie}"
    );
}

fn an_impersonation_ends_with_a_logout_of_the_actor(edge: &mut dyn Edge) {
    let t = token(
        "42",
        "acme",
        json!({"act": {"sub": "agent-7", "tid": "support"}}),
    );
    let agent = token("agent-7", "support", json!({}));
    let r = edge.get_with_token("/", &t);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["actor"], "agent-7");
    admin_ok(
        &*edge,
        "POST",
        "/v1/tenants/support/users/agent-7/logout",
        r#"{"reason":"agent left"}"#,
    );
    edge.time_until_status(&t, 401, edge.propagation_deadline());
    assert_eq!(
        edge.get_with_token("/", &agent).status,
        401,
        "the actor's own token"
    );
    let own = token("42", "acme", json!({}));
    assert_eq!(
        edge.get_with_token("/", &own).status,
        200,
        "the subject's own token"
    );
}

fn a_scheduled_logout_is_announced_then_applies(edge: &mut dyn Edge) {
    let acme = token("42", "acme", json!({}));
    let globex = token("42", "globex", json!({}));
    assert_eq!(edge.get_with_token("/", &acme).status, 200);
    // Whole seconds: the rule compares in seconds, and the header is whole seconds.
    let at_ms = (now_ms() / 1000 + 3) * 1000;
    let at = epochgate_core::decision::rfc3339(at_ms);
    let version = admin_ok(
        &*edge,
        "POST",
        "/v1/tenants/acme/logout",
        &format!(r#"{{"reason": "maintenance window", "at": "{at}"}}"#),
    );
    edge.wait_applied(version);
    let before = edge.get_with_token("/", &acme);
    assert_eq!(before.status, 200);
    assert_eq!(before.header("epochgate-logout-at"), Some(at.as_str()));
    assert_eq!(
        edge.get_with_token("/", &globex)
            .header("epochgate-logout-at"),
        None
    );
    // A login during the notice period is ended at `at` too.
    let during = token("43", "acme", json!({"iat": now_s()}));
    let start = Instant::now();
    wait_for(
        "the scheduled logout to apply",
        Duration::from_secs(10),
        || (edge.get_with_token("/", &acme).status == 401).then_some(()),
    );
    println!(
        "scheduled logout applied at the {} {} ms after the announcement was read",
        edge.name(),
        start.elapsed().as_millis()
    );
    assert!(now_ms() >= at_ms, "not before `at`");
    assert_eq!(edge.get_with_token("/", &during).status, 401);
    assert_eq!(edge.get_with_token("/", &globex).status, 200);
    // Signing in after `at` works.
    std::thread::sleep(Duration::from_millis(1100));
    let after = token("42", "acme", json!({"iat": now_s()}));
    let r = edge.get_with_token("/", &after);
    assert_eq!((r.status, r.header("epochgate-logout-at")), (200, None));
}

fn the_edge_keeps_enforcing_while_the_control_plane_is_down_and_catches_up_after(
    edge: &mut dyn Edge,
) {
    let t42 = token("42", "acme", json!({}));
    let t43 = token("43", "acme", json!({}));
    let t44 = token("44", "acme", json!({}));
    assert_eq!(edge.get_with_token("/", &t43).status, 200);
    admin_ok(&*edge, "POST", "/v1/tenants/acme/users/42/logout", "");
    edge.time_until_status(&t42, 401, edge.propagation_deadline());

    edge.cp_mut().proc.kill();
    // The in-flight poll fails and retries fail too (an isolate syncs only while it
    // serves requests: these are its traffic); the state is kept all along.
    wait_for("a failed sync", Duration::from_secs(10), || {
        assert_eq!(
            edge.get_with_token("/", &t42).status,
            401,
            "revoked stays revoked"
        );
        assert_eq!(edge.get_with_token("/", &t43).status, 200, "others pass");
        std::thread::sleep(Duration::from_millis(100));
        edge.sync_failed().then_some(())
    });

    edge.cp_mut().restart();
    admin_ok(&*edge, "POST", "/v1/tenants/acme/users/44/logout", "");
    // Backoff is at most retry_max_ms (1 s) here; then the logout propagates like any
    // other.
    let took = edge.time_until_status(&t44, 401, Duration::from_secs(5));
    println!(
        "propagation after the control plane came back ({}): {} ms",
        edge.name(),
        took.as_millis()
    );
    assert_eq!(edge.get_with_token("/", &t42).status, 401);
    assert_eq!(edge.get_with_token("/", &t43).status, 200);
}
