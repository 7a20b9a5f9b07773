//! The edge judges the request the app will see: paths (`;` parameters, encodings,
//! segment boundaries, case, repeated slashes), cookie names (decoded, canonicalized,
//! duplicated), credentials no token source reads, header names spelled with `_`.
//! Every scenario runs on Envoy and on the Worker in workerd, through one [`Edge`].

use epochgate_tests::edge::{start_edge, Edge, EdgeKind};
use epochgate_tests::upstream::Seen;
use epochgate_tests::{hs256_header, token, Options, Stack, SECRET};
use serde_json::json;

/// Optional tokens by default, a protected `/admin`, an exempt `/login` and `/assets*`.
fn path_rules() -> Options {
    Options {
        filter: json!({
            "require_token": false,
            "routes": [
                {"prefix": "/admin", "require_token": true},
                {"prefix": "/login", "exempt": true},
                {"prefix": "/assets*", "exempt": true}
            ]
        }),
        ..Options::default()
    }
}

/// Paths an app server reads as `/admin` (or as something under it) while their bytes
/// do not start with `/admin/`: each needs a token.
const ADMIN_IN_DISGUISE: &[&[u8]] = &[
    b"/;/admin",
    b"/;x=1/admin/users",
    b"/admin;jsessionid=0123/users",
    b"/x/..;/admin",
    b"/login/..;/admin",
    b"/admin%2Fusers",
    b"/admin%2fusers",
    b"/x%2F..%2Fadmin",
    b"/admin%5Cusers",
    b"/%61dmin",
    b"/%2561dmin",
    b"/Admin",
    b"/ADMIN/users",
    b"//admin",
    b"//admin//users",
    b"/x/../admin",
    b"/x/./../admin",
    b"/x/%2e%2e/admin",
    b"/x/%2E%2E/admin",
    b"/x\\..\\admin",
    b"/admin/\xff",
    b"/\xc3\xa9/../admin",
];

fn paths_get_the_strictest_rule(edge: &dyn Edge) -> Vec<String> {
    let valid = token("42", "acme", json!({}));
    let bearer = format!("Bearer {valid}");
    let mut wrong = Vec::new();
    assert_eq!(edge.get("/admin", &[]).status, 401);
    assert_eq!(edge.get("/", &[]).status, 200, "optional by default");
    for path in ADMIN_IN_DISGUISE {
        let shown = String::from_utf8_lossy(path);
        let r = edge.get_raw(path, &[]);
        // Envoy may refuse a path it cannot parse itself (400): that is no bypass either.
        match r.status {
            400 => continue,
            401 if r.json()["error"] == "missing_token" => {}
            _ => {
                wrong.push(format!(
                    "{shown} without a token: {} {}",
                    r.status,
                    r.text()
                ));
                continue;
            }
        }
        // With a token it passes: the strictest rule is a token, not a refusal.
        let r = edge.get_raw(path, &[("authorization", bearer.as_bytes())]);
        if r.status == 401 {
            wrong.push(format!(
                "{shown} with a valid token: {} {}",
                r.status,
                r.text()
            ));
        }
    }
    wrong
}

fn prefixes_match_on_segment_boundaries(edge: &dyn Edge) -> Vec<String> {
    let revoked = token("7", "acme", json!({}));
    edge.log_out("acme", "7", &revoked);
    let bearer = format!("Bearer {revoked}");
    let with_revoked = |path: &str| edge.get(path, &[("authorization", bearer.as_bytes())]);
    let mut wrong = Vec::new();
    // Exempt: the token is not even looked at.
    for path in [
        "/login",
        "/login/",
        "/login?next=/admin",
        "/login/help",
        "/assets",
        "/assets-v2/app.js",
        "/assets/x.css",
    ] {
        let r = with_revoked(path);
        if r.status != 200 {
            wrong.push(format!("{path} is exempt, got {} {}", r.status, r.text()));
        }
    }
    // Not exempt: a prefix is a whole segment, so these get the default rule, under which
    // a token that is present is checked.
    for path in ["/loginx", "/login-admin/users", "/login.php", "/logins/"] {
        let r = with_revoked(path);
        if r.status != 401 || r.json()["error"] != "session_revoked" {
            wrong.push(format!(
                "{path} is not under /login, got {} {}",
                r.status,
                r.text()
            ));
        }
    }
    // `/adminx` is not under `/admin` either: the default (optional) rule.
    let r = edge.get("/adminx", &[]);
    if r.status != 200 {
        wrong.push(format!(
            "/adminx is not under /admin, got {} {}",
            r.status,
            r.text()
        ));
    }
    wrong
}

/// Runs the path scenarios on one edge; every wrong answer is listed, not just the first.
fn paths(kind: EdgeKind) {
    let edge = start_edge(kind, path_rules());
    let mut wrong = paths_get_the_strictest_rule(&*edge);
    wrong.extend(prefixes_match_on_segment_boundaries(&*edge));
    assert!(wrong.is_empty(), "{kind:?}:\n{}", wrong.join("\n"));
}

#[test]
fn envoy_paths_that_an_app_reads_as_a_protected_route_need_a_token() {
    paths(EdgeKind::Envoy);
}

#[test]
fn worker_paths_that_an_app_reads_as_a_protected_route_need_a_token() {
    paths(EdgeKind::Worker);
}

/// The session in a cookie only (the portal), the token stripped before the app, an
/// exempt `/login`, and an app session cookie the app also honours.
fn credential_rules() -> Options {
    Options {
        filter: json!({
            "token_sources": [{"cookie": "portal_session", "cookie_path": "/"}],
            "strip_token": true,
            "credential_cookies": ["legacy_sid"],
            "routes": [{"prefix": "/login", "exempt": true}]
        }),
        ..Options::default()
    }
}

/// The status, and what the app got (`None`: the request never reached it).
fn app_got(edge: &dyn Edge, target: &str, headers: &[(&str, &[u8])]) -> (u16, Option<Seen>) {
    let (r, seen) = edge.forwarded(target, headers);
    (r.status, seen)
}

fn cookies_an_app_reads_as_the_session_are_judged(edge: &dyn Edge) -> Vec<String> {
    let revoked = token("7", "acme", json!({}));
    edge.log_out("acme", "7", &revoked);
    let valid = token("42", "acme", json!({}));
    let mut wrong = Vec::new();
    for cookie in [
        format!("portal%5Fsession={revoked}; portal_session={valid}"),
        format!("portal.session={revoked}; portal_session={valid}"),
        format!("Portal_Session={revoked}; portal_session={valid}"),
        format!("portal_session[x]={revoked}; portal_session={valid}"),
        format!("portal%5Fsession={revoked}"),
        format!("theme=dark, portal_session={revoked}; portal_session={valid}"),
        format!("portal_session={revoked}; portal_session={valid}"),
    ] {
        let r = edge.get("/", &[("cookie", cookie.as_bytes())]);
        if r.status != 401 || r.json()["error"] != "ambiguous_token" {
            let short = cookie
                .replace(&revoked, "<revoked>")
                .replace(&valid, "<valid>");
            wrong.push(format!("Cookie: {short} -> {} {}", r.status, r.text()));
        }
    }
    // On an exempt route nothing is checked, and no spelling of the token reaches the app.
    let cookie = format!("portal%5Fsession={revoked}; theme=dark");
    match app_got(edge, "/login", &[("cookie", cookie.as_bytes())]) {
        (200, Some(seen)) if seen.header("cookie") == Some("theme=dark") => {}
        (status, seen) => wrong.push(format!(
            "exempt /login with portal%5Fsession=<revoked>; theme=dark: {status}, the app got cookie {:?}",
            seen.as_ref()
                .and_then(|s| s.header("cookie"))
                .map(|c| c.replace(&revoked, "<revoked>"))
        )),
    }
    wrong
}

fn credentials_the_edge_does_not_check_never_reach_the_app(edge: &dyn Edge) -> Vec<String> {
    let revoked = token("7", "acme", json!({}));
    let valid = token("42", "acme", json!({}));
    let auth = format!("Bearer {revoked}");
    let cookie = format!("portal_session={valid}; legacy_sid=s3ss10n; theme=dark");
    match app_got(
        edge,
        "/orders",
        &[("authorization", auth.as_bytes()), ("cookie", cookie.as_bytes())],
    ) {
        (200, Some(seen))
            if seen.header("authorization").is_none()
                && seen.header("cookie") == Some("theme=dark")
                && seen.header("x-epochgate-user") == Some("42") =>
        {
            Vec::new()
        }
        (status, seen) => vec![format!(
            "unchecked Authorization and legacy_sid: {status}, the app got authorization {:?}, cookie {:?}",
            seen.as_ref()
                .and_then(|s| s.header("authorization"))
                .map(|a| a.replace(&revoked, "<revoked>")),
            seen.as_ref()
                .and_then(|s| s.header("cookie"))
                .map(|c| c.replace(&valid, "<valid>"))
        )],
    }
}

fn identity_headers_spelled_with_underscores_never_reach_the_app(edge: &dyn Edge) -> Vec<String> {
    let valid = token("42", "acme", json!({}));
    let cookie = format!("portal_session={valid}");
    let mut wrong = Vec::new();
    for name in [
        "X_Epochgate_User",
        "x_epochgate_tenant",
        "X-Epochgate_Session",
    ] {
        let (status, seen) = app_got(
            edge,
            "/orders",
            &[("cookie", cookie.as_bytes()), (name, b"forged")],
        );
        let leaked = seen
            .as_ref()
            .and_then(|s| s.headers.iter().find(|(_, v)| v == "forged").cloned());
        // Envoy refuses every header name with `_` (headers_with_underscores_action:
        // REJECT_REQUEST); the Worker strips the reserved spellings.
        let ok = match edge.kind() {
            EdgeKind::Envoy => status == 400 && seen.is_none(),
            EdgeKind::Worker => status == 200 && leaked.is_none(),
        };
        if !ok {
            wrong.push(format!(
                "{name}: forged -> {status}, the app got {leaked:?}"
            ));
        }
    }
    wrong
}

fn credentials(kind: EdgeKind) {
    let edge = start_edge(kind, credential_rules());
    let mut wrong = cookies_an_app_reads_as_the_session_are_judged(&*edge);
    wrong.extend(credentials_the_edge_does_not_check_never_reach_the_app(
        &*edge,
    ));
    wrong.extend(identity_headers_spelled_with_underscores_never_reach_the_app(&*edge));
    assert!(wrong.is_empty(), "{kind:?}:\n{}", wrong.join("\n"));
}

#[test]
fn envoy_cookies_credentials_and_header_spellings_the_app_reads_are_judged() {
    credentials(EdgeKind::Envoy);
}

#[test]
fn worker_cookies_credentials_and_header_spellings_the_app_reads_are_judged() {
    credentials(EdgeKind::Worker);
}

/// Any token the key verifies would pass (no `issuer`, no `audiences`), but only access
/// tokens (`typ: at+jwt`) count.
fn token_type_rules() -> Options {
    Options {
        filter: json!({"issuer": null, "audiences": [], "require_typ": "at+jwt"}),
        ..Options::default()
    }
}

fn only_access_tokens_pass(edge: &dyn Edge) -> Vec<String> {
    let claims = |extra: serde_json::Value| Stack::claims("42", "acme", extra);
    let mut wrong = Vec::new();
    for (what, header, body, want) in [
        (
            "an access token",
            json!({"alg": "HS256", "kid": "e2e", "typ": "at+jwt"}),
            claims(json!({})),
            200,
        ),
        (
            "an access token (application/at+jwt)",
            json!({"alg": "HS256", "kid": "e2e", "typ": "application/at+jwt"}),
            claims(json!({})),
            200,
        ),
        (
            "an ID token for another client",
            json!({"alg": "HS256", "kid": "e2e", "typ": "JWT"}),
            claims(json!({"aud": "other-client", "nonce": "n"})),
            401,
        ),
        (
            "a token without typ",
            json!({"alg": "HS256", "kid": "e2e"}),
            claims(json!({})),
            401,
        ),
    ] {
        let auth = format!("Bearer {}", hs256_header(&header, &body, SECRET));
        let r = edge.get("/", &[("authorization", auth.as_bytes())]);
        if r.status != want {
            wrong.push(format!("{what}: {} {}, want {want}", r.status, r.text()));
        }
    }
    // The configuration checks neither issuer nor audience: said once, at configure time.
    let log = edge.log();
    let warned = log
        .matches("neither `issuer` nor `audiences` is set")
        .count();
    if warned != 1 {
        wrong.push(format!(
            "the missing issuer/audiences warning was logged {warned} times"
        ));
    }
    wrong
}

fn token_types(kind: EdgeKind) {
    let edge = start_edge(kind, token_type_rules());
    let wrong = only_access_tokens_pass(&*edge);
    assert!(wrong.is_empty(), "{kind:?}:\n{}", wrong.join("\n"));
}

#[test]
fn envoy_only_access_tokens_pass_and_a_config_without_issuer_or_audience_warns_once() {
    token_types(EdgeKind::Envoy);
}

#[test]
fn worker_only_access_tokens_pass_and_a_config_without_issuer_or_audience_warns_once() {
    token_types(EdgeKind::Worker);
}
