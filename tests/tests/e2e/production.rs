//! The filter in production (remote JWKS: see `jwks.rs`): chaining after Envoy's own
//! `jwt_authn`, the staleness policy, per-route rules and gRPC, header hygiene and
//! secrets, impersonation, metrics, and streams that end at logout.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_tests::http::Streaming;
use epochgate_tests::{wait_for, Options, Reply, Stack, EDGE_TOKEN, SECRET};
use serde_json::json;

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn oct_jwk(kid: &str, secret: &str) -> serde_json::Value {
    json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": b64(secret.as_bytes())})
}

fn jwt_authn_filter(secret: &str) -> String {
    let jwks = json!({"keys": [oct_jwk("e2e", secret)]}).to_string();
    format!(
        r#"          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                e2e:
                  issuer: https://idp.e2e.test
                  audiences: [portal]
                  local_jwks:
                    inline_string: '{jwks}'
                  payload_in_metadata: jwt_payload
                  forward: true
                  forward_payload_header: x-jwt-payload
              rules:
              - match: {{ prefix: / }}
                requires:
                  requires_any:
                    requirements:
                    - provider_name: e2e
                    - allow_missing: {{}}
"#
    )
}

#[test]
fn chained_after_jwt_authn_it_takes_the_verified_payload_and_never_the_header() {
    let stack = Stack::start_with(Options {
        filter: json!({"keys": [], "mode": "jwt_authn_metadata"}),
        pre_filters: jwt_authn_filter(SECRET),
        ..Options::default()
    });
    let t = stack.token("42", "acme", json!({"sid": "s1"}));
    let r = stack.get_with_token("/orders", &t);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user"], "42");

    // No token: jwt_authn lets it by (allow_missing) with no metadata; a forged payload
    // header changes nothing.
    let forged = b64(Stack::claims("admin", "acme", json!({}))
        .to_string()
        .as_bytes());
    let r = stack.get("/orders", &[("x-jwt-payload", forged.as_bytes())]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "missing_token");

    // A bad token is jwt_authn's to refuse.
    assert_eq!(stack.get_with_token("/orders", "x.y.z").status, 401);

    stack
        .cp
        .admin("POST", "/v1/tenants/acme/sessions/s1/revoke", "");
    stack.time_until_status(&t, 401, Duration::from_secs(1));
    assert_eq!(
        stack.get_with_token("/orders", &t).json()["error"],
        "session_revoked"
    );
}

#[test]
fn stale_state_with_on_stale_deny_answers_503_until_the_control_plane_returns() {
    let mut stack = Stack::start_with(Options {
        max_staleness_s: 2,
        sync: json!({"wait_s": 1}),
        ..Options::default()
    });
    let t = stack.token("43", "acme", json!({}));
    assert_eq!(stack.get_with_token("/", &t).status, 200);
    stack.cp.proc.kill();
    let took = stack.time_until_status(&t, 503, Duration::from_secs(10));
    println!(
        "on_stale deny: 503 after {} ms without the control plane",
        took.as_millis()
    );
    let r = stack.get_with_token("/", &t);
    assert_eq!(r.json()["error"], "state_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(
        stack
            .stat("wasmcustom.epochgate.denied.state_unavailable")
            .unwrap()
            > 0
    );
    assert!(stack.envoy.log().contains("revocation state is stale"));

    stack.cp.restart();
    stack.time_until_status(&t, 200, Duration::from_secs(10));
}

#[test]
fn before_the_first_sync_the_policy_decides() {
    let mut deny = Stack::start_with(Options {
        control_plane_down: true,
        ..Options::default()
    });
    let t = deny.token("42", "acme", json!({}));
    let r = deny.get_with_token("/", &t);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "state_unavailable");
    deny.cp.restart();
    deny.time_until_status(&t, 200, Duration::from_secs(10));

    let allow = Stack::start_with(Options {
        control_plane_down: true,
        filter: json!({"on_stale": "allow"}),
        ..Options::default()
    });
    let t = allow.token("42", "acme", json!({}));
    assert_eq!(allow.get_with_token("/", &t).status, 200);
}

#[test]
fn route_rules_exempt_optional_web_and_grpc() {
    let stack = Stack::start_with(Options {
        filter: json!({"routes": [
            {"prefix": "/login", "exempt": true},
            {"prefix": "/healthz", "exempt": true},
            {"prefix": "/public", "require_token": false},
            {"prefix": "/app", "web": true}
        ]}),
        ..Options::default()
    });
    let r = stack.get("/login?next=/app", &[]);
    assert_eq!(r.status, 200);
    let r = stack.get("/healthz", &[("x-epochgate-user", b"admin")]);
    assert_eq!(r.status, 200);
    assert_eq!(
        stack.upstream.last().unwrap().header("x-epochgate-user"),
        None
    );
    assert_eq!(stack.get("/public/news", &[]).status, 200);
    let r = stack.get("/app/home", &[]);
    assert_eq!(r.status, 302);
    assert!(r
        .header("location")
        .unwrap()
        .ends_with("reason=missing_token"));
    let r = stack.get("/api/orders", &[]);
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (401, Some("missing_token"))
    );
    // Envoy normalizes the path first: this is /api/orders, not a login page.
    assert_eq!(stack.get("/login/../api/orders", &[]).status, 401);

    // A revoked token on an optional route is still refused.
    let t = stack.token("42", "acme", json!({}));
    stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    stack.time_until_status(&t, 401, Duration::from_secs(1));
    assert_eq!(stack.get_with_token("/public/news", &t).status, 401);

    // gRPC: trailers-only, grpc-status 16 (UNAUTHENTICATED).
    let r = epochgate_tests::http::request(
        "127.0.0.1",
        stack.envoy_port,
        "POST",
        "/portal.Orders/List",
        &[("content-type", b"application/grpc"), ("te", b"trailers")],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("grpc-status"), Some("16"), "{:?}", r.headers);
    assert_eq!(r.header("grpc-message"), Some("missing_token"));
}

#[test]
fn header_hygiene_and_secrets() {
    let stack = Stack::start_with(Options {
        filter: json!({
            "strip_token": true,
            "upstream_headers": {"user": "x-portal-user", "tenant": "x-portal-tenant", "session": "x-portal-session", "actor": "x-portal-actor"}
        }),
        ..Options::default()
    });
    let t = stack.token("42", "acme", json!({}));
    let auth = format!("Bearer {t}");
    let r = stack.get(
        "/",
        &[
            ("authorization", auth.as_bytes()),
            ("x-portal-user", b"admin"),
        ],
    );
    assert_eq!(r.status, 200);
    let seen = stack.upstream.last().unwrap();
    assert_eq!(seen.header("authorization"), None, "the token was stripped");
    assert_eq!(seen.header("x-portal-user"), Some("42"));
    assert_eq!(
        seen.headers
            .iter()
            .filter(|(n, _)| n == "x-portal-user")
            .count(),
        1
    );

    let cookie = format!("theme=dark; portal_session={t}; lang=en");
    assert_eq!(stack.get("/", &[("cookie", cookie.as_bytes())]).status, 200);
    assert_eq!(
        stack.upstream.last().unwrap().header("cookie"),
        Some("theme=dark; lang=en")
    );

    // The edge token never shows in /config_dump (it comes from the environment).
    let dump = stack.admin("/config_dump").text();
    assert!(
        dump.contains("epochgate_sync"),
        "the sync service is in the dump"
    );
    assert!(
        !dump.contains(EDGE_TOKEN),
        "the edge token leaked into /config_dump"
    );
}

#[test]
fn metrics_show_on_envoys_stats() {
    let stack = Stack::start();
    let t = stack.token("42", "acme", json!({}));
    for _ in 0..3 {
        assert_eq!(stack.get_with_token("/", &t).status, 200);
    }
    assert_eq!(stack.get("/", &[]).status, 401);
    let v = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "")
        .json()["version"]
        .as_u64()
        .unwrap();
    stack.time_until_status(&t, 401, Duration::from_secs(1));
    stack.wait_applied(v);
    let stat = |name: &str| {
        stack
            .stat(&format!("wasmcustom.epochgate.{name}"))
            .unwrap_or_else(|| panic!("no stat {name}"))
    };
    assert!(stat("allowed") >= 3);
    assert!(stat("denied.missing_token") >= 1);
    assert!(stat("denied.session_revoked") >= 1);
    assert!(stat("sync_ok") >= 2);
    assert_eq!(stat("sync_failed"), 0);
    assert_eq!(stat("state_version"), v);
    assert!(stat("state_age_ms") < 60_000);
}

#[test]
fn an_idle_stream_ends_on_the_filters_tick() {
    // Events 4 s apart: after the logout no frame comes for seconds, so only the tick can
    // end the stream in time.
    let stack = Stack::start_with(Options {
        upstream: Reply::Sse {
            interval_ms: 4000,
            events: 10,
        },
        ..Options::default()
    });
    let auth = format!("Bearer {}", stack.token("42", "acme", json!({})));
    let mut s = Streaming::open(
        "127.0.0.1",
        stack.envoy_port,
        "/events",
        &[
            ("authorization", auth.as_bytes()),
            ("accept", b"text/event-stream"),
        ],
    )
    .unwrap();
    wait_for("the first event", Duration::from_secs(5), || {
        (s.poll().unwrap() && s.events() >= 1).then_some(())
    });
    stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    let start = Instant::now();
    wait_for("the idle stream to end", Duration::from_secs(3), || {
        (!s.poll().unwrap()).then_some(())
    });
    println!(
        "idle stream closed {} ms after the logout",
        start.elapsed().as_millis()
    );
    assert_eq!(s.events(), 1, "no further event reached the client");
}
