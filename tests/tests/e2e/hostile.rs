//! Bad input at the edge: refused with a clear reason, and the VM lives on.

use epochgate_tests::Stack;
use serde_json::json;

#[test]
fn non_utf8_header_bytes_and_repeated_authorization_are_refused_and_the_vm_survives() {
    let stack = Stack::start();
    let t = stack.token("42", "acme", json!({}));
    let good = format!("Bearer {t}");

    let mut bad = good.clone().into_bytes();
    bad.push(0xff);
    let r = stack.get("/", &[("authorization", &bad)]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "invalid_token");

    // A non-UTF-8 byte in a header the filter does not use: the SDK's string getters
    // would panic on it; the filter reads bytes, so the request is judged on its token.
    let r = stack.get(
        "/",
        &[("authorization", good.as_bytes()), ("x-note", b"caf\xe9")],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    let r = stack.get(
        "/",
        &[
            ("authorization", good.as_bytes()),
            ("authorization", good.as_bytes()),
        ],
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.json()["error"], "ambiguous_token");

    let other = format!("portal_session={}", stack.token("43", "acme", json!({})));
    let r = stack.get(
        "/",
        &[
            ("authorization", good.as_bytes()),
            ("cookie", other.as_bytes()),
        ],
    );
    assert_eq!(r.json()["error"], "ambiguous_token");

    for junk in [
        "Bearer x.y.z",
        "Bearer",
        "Basic dXNlcjpwdw==",
        "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiI0MiJ9.",
    ] {
        let r = stack.get("/", &[("authorization", junk.as_bytes())]);
        assert_eq!(r.status, 401, "{junk}: {}", r.text());
    }

    // Valid requests still pass afterwards: the VM did not die.
    for _ in 0..5 {
        assert_eq!(
            stack.get("/", &[("authorization", good.as_bytes())]).status,
            200
        );
    }
    assert!(!stack.envoy.log().contains("panicked"), "a VM panicked");
}

#[test]
fn spoofed_identity_headers_never_reach_the_upstream() {
    let stack = Stack::start();
    let t = stack.token("42", "acme", json!({}));
    let auth = format!("Bearer {t}");
    let r = stack.get(
        "/",
        &[
            ("authorization", auth.as_bytes()),
            ("x-epochgate-user", b"admin"),
            ("x-epochgate-session", b"forged"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = stack.upstream.last().unwrap();
    assert_eq!(seen.header("x-epochgate-user"), Some("42"));
    assert_eq!(seen.header("x-epochgate-session"), None);
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(n, _)| n == "x-epochgate-user")
            .count(),
        1
    );
}
