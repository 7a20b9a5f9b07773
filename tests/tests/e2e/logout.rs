//! Force logout, end to end: user, tenant, session, web; signing in again works.

use std::time::Duration;

use epochgate_tests::{Stack, LOGIN_URL};
use serde_json::json;

const PROPAGATION_DEADLINE: Duration = Duration::from_secs(1);

#[test]
fn valid_token_passes_and_the_upstream_sees_the_identity() {
    let stack = Stack::start();
    let token = stack.token("42", "acme", json!({"sid": "s-42-a"}));
    let r = stack.get_with_token("/api/orders?page=2", &token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["path"], "/api/orders?page=2");
    let seen = stack.upstream.last().unwrap();
    assert_eq!(seen.header("x-epochgate-user"), Some("42"));
    assert_eq!(seen.header("x-epochgate-tenant"), Some("acme"));
    assert_eq!(seen.header("x-epochgate-session"), Some("s-42-a"));
    // No token: 401 missing_token, and the upstream never sees it.
    let before = stack.upstream.requests().len();
    let r = stack.get("/api/orders", &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_token");
    assert_eq!(stack.upstream.requests().len(), before);
}

#[test]
fn user_logout_revokes_earlier_tokens_within_a_second_and_new_logins_pass() {
    let stack = Stack::start();
    let t42 = stack.token("42", "acme", json!({}));
    let t42_mobile = stack.token("42", "acme", json!({"sid": "phone"}));
    let t43 = stack.token("43", "acme", json!({}));
    for t in [&t42, &t42_mobile, &t43] {
        assert_eq!(stack.get_with_token("/api/orders", t).status, 200);
    }

    let r = stack.cp.admin(
        "POST",
        "/v1/tenants/acme/users/42/logout",
        r#"{"reason":"lost phone"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let took = stack.time_until_status(&t42, 401, PROPAGATION_DEADLINE);
    println!(
        "propagation (user logout → Envoy denies): {} ms",
        took.as_millis()
    );

    let r = stack.get_with_token("/api/orders", &t42);
    assert_eq!(r.json()["error"], "session_revoked");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token", error_description="session revoked""#)
    );
    assert_eq!(stack.get_with_token("/api/orders", &t42_mobile).status, 401);
    assert_eq!(stack.get_with_token("/api/orders", &t43).status, 200);

    // Signing in again works: a token issued after the logout (the next second) passes.
    std::thread::sleep(Duration::from_millis(1100));
    let fresh = stack.token("42", "acme", json!({"iat": epochgate_tests::now_s()}));
    assert_eq!(stack.get_with_token("/api/orders", &fresh).status, 200);
    // A refresh of the old login (new iat, old auth_time) does not.
    let refreshed = stack.token(
        "42",
        "acme",
        json!({"iat": epochgate_tests::now_s(), "auth_time": epochgate_tests::now_s() - 600}),
    );
    assert_eq!(stack.get_with_token("/api/orders", &refreshed).status, 401);
}

#[test]
fn opaque_ids_are_percent_encoded_in_the_path() {
    let stack = Stack::start();
    let t = stack.token("auth0|5f7c8ec7", "acme/eu", json!({}));
    let other = stack.token("auth0", "acme", json!({}));
    assert_eq!(stack.get_with_token("/", &t).status, 200);
    let r = stack.cp.admin(
        "POST",
        "/v1/tenants/acme%2Feu/users/auth0%7C5f7c8ec7/logout",
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    stack.time_until_status(&t, 401, PROPAGATION_DEADLINE);
    assert_eq!(stack.get_with_token("/", &other).status, 200);
}

#[test]
fn tenant_logout_rejects_every_earlier_token_of_that_tenant_only() {
    let stack = Stack::start();
    let acme: Vec<String> = ["1", "2", "3"]
        .iter()
        .map(|u| stack.token(u, "acme", json!({})))
        .collect();
    let globex = stack.token("1", "globex", json!({}));
    let r = stack.cp.admin(
        "POST",
        "/v1/tenants/acme/logout",
        r#"{"reason":"incident"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let took = stack.time_until_status(&acme[0], 401, PROPAGATION_DEADLINE);
    println!(
        "propagation (tenant logout → Envoy denies): {} ms",
        took.as_millis()
    );
    for t in &acme {
        assert_eq!(
            stack.get_with_token("/", t).json()["error"],
            "session_revoked"
        );
    }
    assert_eq!(stack.get_with_token("/", &globex).status, 200);
}

#[test]
fn global_logout_rejects_every_tenant() {
    let stack = Stack::start();
    let a = stack.token("1", "acme", json!({}));
    let g = stack.token("1", "globex", json!({}));
    let r = stack
        .cp
        .admin("POST", "/v1/logout", r#"{"reason":"maintenance"}"#);
    assert_eq!(r.status, 200, "{}", r.text());
    stack.time_until_status(&a, 401, PROPAGATION_DEADLINE);
    assert_eq!(stack.get_with_token("/", &g).status, 401);
}

#[test]
fn session_revoke_rejects_only_that_sid() {
    let stack = Stack::start();
    let laptop = stack.token("42", "acme", json!({"sid": "laptop"}));
    let phone = stack.token("42", "acme", json!({"sid": "phone"}));
    let r = stack.cp.admin(
        "POST",
        "/v1/tenants/acme/sessions/phone/revoke",
        r#"{"reason":"lost device"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let took = stack.time_until_status(&phone, 401, PROPAGATION_DEADLINE);
    println!(
        "propagation (session revoke → Envoy denies): {} ms",
        took.as_millis()
    );
    assert_eq!(stack.get_with_token("/", &laptop).status, 200);
    // A new token of the revoked session is still revoked: the sid is what is revoked.
    let phone_again = stack.token(
        "42",
        "acme",
        json!({"sid": "phone", "iat": epochgate_tests::now_s() + 5}),
    );
    assert_eq!(stack.get_with_token("/", &phone_again).status, 401);
}

#[test]
fn browser_with_a_revoked_session_is_sent_to_login_with_the_cookie_cleared() {
    let stack = Stack::start();
    let t = stack.token("42", "acme", json!({}));
    let cookie = format!("theme=dark; portal_session={t}");
    let browser = |s: &Stack| {
        s.get(
            "/reports",
            &[
                ("accept", b"text/html,application/xhtml+xml"),
                ("cookie", cookie.as_bytes()),
            ],
        )
    };
    assert_eq!(browser(&stack).status, 200);
    stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    stack.time_until_status(&t, 401, PROPAGATION_DEADLINE);
    let r = browser(&stack);
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
