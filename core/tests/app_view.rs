//! The edge judges the request the app will see: each rule of the README's "How a
//! request is judged" about paths, cookies, credentials, header names and token types,
//! through `Engine::decide`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_core::config::{ConfigWarning, UncheckedCredentials};
use epochgate_core::jwt::{check_remote_jwks, parse_remote_jwks};
use epochgate_core::state::{RevocationState, Target};
use epochgate_core::sync::SyncStatus;
use epochgate_core::{Config, Decision, DenyReason, Engine, HeaderEdit, RequestInfo};
use serde_json::{json, Value};

const SECRET: &str = "app-view-test-secret-0123456789abcdef";
const NOW_MS: u64 = 1_800_000_000_000;
const NOW_S: i64 = 1_800_000_000;

fn config(extra: Value) -> Config {
    let mut c = json!({
        "keys": [{"kid": "k1", "alg": "HS256", "secret": SECRET}],
        "issuer": "https://idp.test",
        "token_sources": [{"header": "authorization", "prefix": "Bearer "}, {"cookie": "portal_session"}],
        "login_url": "https://portal.test/login",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    Config::from_json(c.to_string().as_bytes()).unwrap()
}

fn engine(extra: Value) -> Engine {
    Engine::new(config(extra))
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn signed(header: Value, claims: Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    format!(
        "{input}.{}",
        b64(&hmac_sha256::HMAC::mac(input.as_bytes(), SECRET.as_bytes()))
    )
}

fn token_for(user: &str) -> String {
    signed(
        json!({"alg": "HS256", "kid": "k1"}),
        json!({"iss": "https://idp.test", "sub": user, "tid": "acme", "iat": NOW_S - 600, "exp": NOW_S + 3000}),
    )
}

/// The state with user 7 of acme logged out.
fn seven_logged_out() -> RevocationState {
    let mut s = RevocationState::new();
    s.set(
        &Target::User {
            tenant: "acme".into(),
            user: "7".into(),
        },
        Some(NOW_MS - 1_000),
    );
    s
}

fn run(e: &Engine, path: &str, headers: &[(&str, &[u8])]) -> Decision {
    let headers: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_vec()))
        .collect();
    let status = SyncStatus {
        stream: "s".into(),
        version: 1,
        synced_at_ms: NOW_MS,
        horizon_s: 90 * 86_400,
    };
    e.decide(
        RequestInfo {
            headers: &headers,
            path,
        },
        &seven_logged_out(),
        Some(&status),
        NOW_MS,
    )
}

fn reason(d: &Decision) -> Option<DenyReason> {
    match d {
        Decision::Deny { reason, .. } => Some(*reason),
        Decision::Allow { .. } => None,
    }
}

fn edits(d: &Decision) -> Vec<HeaderEdit> {
    match d {
        Decision::Allow { request_edits, .. } => request_edits.clone(),
        other => panic!("{other:?}"),
    }
}

fn bearer(t: &str) -> Vec<u8> {
    format!("Bearer {t}").into_bytes()
}

/// Optional tokens by default, a protected `/admin`, an exempt `/login` and `/assets*`.
fn path_engine(extra: Value) -> Engine {
    let mut c = json!({
        "require_token": false,
        "routes": [
            {"prefix": "/admin", "require_token": true},
            {"prefix": "/login", "exempt": true},
            {"prefix": "/assets*", "exempt": true},
            {"prefix": "/account", "require_token": true, "web": true}
        ]
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    engine(c)
}

#[test]
fn ambiguous_paths_get_the_strictest_rule_never_the_default() {
    let e = path_engine(json!({}));
    assert!(run(&e, "/", &[]).is_allow(), "optional by default");
    let valid = bearer(&token_for("42"));
    for path in [
        "/;/admin",
        "/admin;jsessionid=1",
        "/login;jsessionid=1",
        "/x/..;/admin",
        "/admin%2Fusers",
        "/admin%5Cusers",
        "/x/%2e%2e/admin",
        "/x/../admin",
        "/x\\..\\admin",
        "/%2561dmin",
        "/admin/\u{fffd}",
        "/a b",
        "*",
    ] {
        assert_eq!(
            reason(&run(&e, path, &[])),
            Some(DenyReason::MissingToken),
            "{path}: token required"
        );
        assert!(
            run(&e, path, &[("authorization", &valid)]).is_allow(),
            "{path}: a valid token passes"
        );
    }
}

#[test]
fn an_ambiguous_path_is_answered_by_the_request_never_by_a_route() {
    let e = path_engine(json!({}));
    let status = |d: Decision| match d {
        Decision::Deny { response, .. } => response.status,
        other => panic!("{other:?}"),
    };
    // `/account` is a web route: its deny is a redirect even for an API client.
    assert_eq!(status(run(&e, "/account", &[])), 302);
    // The same path made ambiguous gets no route: 401, unless the request asks for HTML.
    assert_eq!(status(run(&e, "/account;x=1", &[])), 401);
    assert_eq!(
        status(run(&e, "/account;x=1", &[("accept", b"text/html")])),
        302
    );
}

#[test]
fn paths_are_matched_as_the_app_decodes_and_merges_them() {
    let e = path_engine(json!({}));
    for path in ["/%61dmin", "//admin", "//admin//users", "/admin/"] {
        assert_eq!(
            reason(&run(&e, path, &[])),
            Some(DenyReason::MissingToken),
            "{path} is /admin"
        );
    }
    let revoked = bearer(&token_for("7"));
    assert!(run(&e, "//login", &[("authorization", &revoked)]).is_allow());
}

#[test]
fn route_prefixes_match_on_segment_boundaries_and_a_trailing_star_is_a_wildcard() {
    let e = path_engine(json!({}));
    let revoked = bearer(&token_for("7"));
    let with_revoked = |p: &str| run(&e, p, &[("authorization", &revoked)]);
    for exempt in [
        "/login",
        "/login/",
        "/login?next=/admin",
        "/login/help",
        "/assets",
        "/assets-v2/app.js",
    ] {
        assert!(with_revoked(exempt).is_allow(), "{exempt} is exempt");
    }
    for not_exempt in ["/loginx", "/login-admin/users", "/login.php", "/logins"] {
        assert_eq!(
            reason(&with_revoked(not_exempt)),
            Some(DenyReason::SessionRevoked),
            "{not_exempt} is not under /login"
        );
    }
    assert!(
        run(&e, "/adminx", &[]).is_allow(),
        "/adminx is not under /admin"
    );
}

#[test]
fn a_route_that_changes_with_letter_case_is_ambiguous_unless_case_insensitive_routes() {
    let e = path_engine(json!({}));
    let revoked = bearer(&token_for("7"));
    for path in ["/Admin", "/ADMIN/users", "/aDmin"] {
        assert_eq!(
            reason(&run(&e, path, &[])),
            Some(DenyReason::MissingToken),
            "{path}"
        );
    }
    // `/LOGIN` is not exempt then (a case-sensitive app may route it elsewhere).
    assert_eq!(
        reason(&run(&e, "/LOGIN", &[("authorization", &revoked)])),
        Some(DenyReason::SessionRevoked)
    );
    // Upper case that changes no rule is no ambiguity.
    assert!(run(&e, "/Reports", &[]).is_allow());

    let e = path_engine(json!({"case_insensitive_routes": true}));
    assert_eq!(
        reason(&run(&e, "/ADMIN/users", &[])),
        Some(DenyReason::MissingToken)
    );
    assert!(
        run(&e, "/LOGIN", &[("authorization", &revoked)]).is_allow(),
        "exempt in any case"
    );
    assert!(run(&e, "/Assets-v2/x.js", &[("authorization", &revoked)]).is_allow());
}

#[test]
fn route_prefixes_must_be_written_as_the_app_reads_them() {
    for (prefix, needle) in [
        ("login", "must start with `/`"),
        ("/a*b", "may only end"),
        ("/a%2Fb", "as the app reads it"),
        ("/a;b", "as the app reads it"),
        ("//a", "as the app reads it"),
        ("/a/../b", "as the app reads it"),
    ] {
        let c = json!({"keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "routes": [{"prefix": prefix}]});
        let err = Config::from_json(c.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field, "routes[0].prefix", "{prefix}");
        assert!(err.problem.contains(needle), "{prefix}: {err}");
    }
    let c = json!({"keys": [{"kid": "k", "alg": "HS256", "secret": SECRET}], "case_insensitive_routes": true,
                   "routes": [{"prefix": "/Admin"}, {"prefix": "/admin"}]});
    let err = Config::from_json(c.to_string().as_bytes()).unwrap_err();
    assert!(err.problem.contains("listed twice"), "{err}");
}

#[test]
fn a_cookie_an_app_reads_as_the_session_cookie_under_another_name_is_ambiguous() {
    let e = engine(json!({}));
    let (revoked, valid) = (token_for("7"), token_for("42"));
    let plain = format!("portal_session={valid}");
    assert!(run(&e, "/", &[("cookie", plain.as_bytes())]).is_allow());
    for variant in [
        "portal%5Fsession",
        "portal.session",
        "portal session",
        "portal+session",
        "Portal_Session",
        "portal_session[x]",
        "portal_session%00x",
    ] {
        let cookie = format!("{variant}={revoked}; portal_session={valid}");
        assert_eq!(
            reason(&run(&e, "/", &[("cookie", cookie.as_bytes())])),
            Some(DenyReason::AmbiguousToken),
            "{variant}"
        );
        // Alone too: PHP reads it as the session cookie, the edge would see none.
        let alone = format!("{variant}={revoked}");
        assert_eq!(
            reason(&run(&e, "/", &[("cookie", alone.as_bytes())])),
            Some(DenyReason::AmbiguousToken),
            "{variant} alone"
        );
    }
    // A duplicate with another value (PHP keeps the first), split over two headers too.
    let dup = format!("portal_session={revoked}; portal_session={valid}");
    assert_eq!(
        reason(&run(&e, "/", &[("cookie", dup.as_bytes())])),
        Some(DenyReason::AmbiguousToken)
    );
    let first = format!("portal_session={revoked}");
    assert_eq!(
        reason(&run(
            &e,
            "/",
            &[("cookie", first.as_bytes()), ("cookie", plain.as_bytes())]
        )),
        Some(DenyReason::AmbiguousToken)
    );
    // Legacy parsers split at `,`.
    let comma = format!("theme=dark, portal_session={revoked}; portal_session={valid}");
    assert_eq!(
        reason(&run(&e, "/", &[("cookie", comma.as_bytes())])),
        Some(DenyReason::AmbiguousToken)
    );
    // Unrelated cookies with similar names are no ambiguity.
    let other = format!("portal_sessions=x; portal-session=y; portal_session={valid}");
    assert!(run(&e, "/", &[("cookie", other.as_bytes())]).is_allow());
}

#[test]
fn strip_token_removes_every_spelling_of_the_session_cookie_on_every_route() {
    let e = engine(json!({"strip_token": true, "routes": [{"prefix": "/login", "exempt": true}]}));
    let t = token_for("42");
    let cookie = format!("theme=dark; portal_session={t}; lang=en");
    let d = run(&e, "/", &[("cookie", cookie.as_bytes())]);
    assert!(edits(&d).contains(&HeaderEdit::Set(
        "cookie".into(),
        b"theme=dark; lang=en".to_vec()
    )));
    // On an exempt route nothing is checked, but no spelling of the token reaches the app.
    let cookie = format!("portal%5Fsession={t}; theme=dark; Portal.Session=x");
    let d = run(
        &e,
        "/login",
        &[
            ("cookie", cookie.as_bytes()),
            ("authorization", &bearer(&t)),
        ],
    );
    let edits = edits(&d);
    assert!(
        edits.contains(&HeaderEdit::Set("cookie".into(), b"theme=dark".to_vec())),
        "{edits:?}"
    );
    assert!(
        edits.contains(&HeaderEdit::Remove("authorization".into())),
        "{edits:?}"
    );
}

#[test]
fn credentials_no_token_source_reads_are_stripped_by_default() {
    let cookie_only = json!({"token_sources": [{"cookie": "portal_session"}], "credential_cookies": ["legacy_sid"]});
    let e = engine(cookie_only.clone());
    assert_eq!(
        e.config().unchecked_credentials,
        UncheckedCredentials::Strip
    );
    let (revoked, valid) = (token_for("7"), token_for("42"));
    let cookie = format!("portal_session={valid}; legacy_sid=abc; Legacy.Sid=def; theme=dark");
    let d = run(
        &e,
        "/",
        &[
            ("cookie", cookie.as_bytes()),
            ("authorization", &bearer(&revoked)),
        ],
    );
    let stripped = edits(&d);
    assert!(
        stripped.contains(&HeaderEdit::Remove("authorization".into())),
        "{stripped:?}"
    );
    assert!(
        stripped.contains(&HeaderEdit::Set(
            "cookie".into(),
            format!("portal_session={valid}; theme=dark").into_bytes()
        )),
        "{stripped:?}"
    );
    // A token header read under another spelling (CGI reads `x_access_token` as
    // `x-access-token`) is unchecked too.
    let e = engine(json!({"token_sources": [{"header": "x-access-token"}]}));
    let d = run(
        &e,
        "/",
        &[
            ("x-access-token", valid.as_bytes()),
            ("x_access_token", revoked.as_bytes()),
        ],
    );
    assert!(edits(&d).contains(&HeaderEdit::Remove("x_access_token".into())));
}

#[test]
fn unchecked_credentials_refuse_denies_and_pass_forwards() {
    let mut c =
        json!({"token_sources": [{"cookie": "portal_session"}], "unchecked_credentials": "refuse"});
    let e = engine(c.clone());
    let valid = token_for("42");
    let cookie = format!("portal_session={valid}");
    let d = run(
        &e,
        "/",
        &[
            ("cookie", cookie.as_bytes()),
            ("authorization", b"Basic dTpw"),
        ],
    );
    assert_eq!(reason(&d), Some(DenyReason::AmbiguousToken));
    assert!(run(&e, "/", &[("cookie", cookie.as_bytes())]).is_allow());
    c["unchecked_credentials"] = json!("pass");
    let e = engine(c);
    let d = run(
        &e,
        "/",
        &[
            ("cookie", cookie.as_bytes()),
            ("authorization", b"Basic dTpw"),
        ],
    );
    assert!(!edits(&d)
        .iter()
        .any(|e| matches!(e, HeaderEdit::Remove(n) if n == "authorization")));
    // A configured token source is never "unchecked".
    let e = engine(json!({"unchecked_credentials": "refuse"}));
    assert!(run(&e, "/", &[("authorization", &bearer(&valid))]).is_allow());
}

#[test]
fn reserved_and_identity_headers_are_stripped_in_any_case_and_dash_or_underscore_spelling() {
    let e = engine(
        json!({"upstream_headers": {"user": "x-portal-user", "tenant": "x-portal-tenant", "session": "x-portal-session", "actor": "x-portal-actor"}}),
    );
    let t = bearer(&token_for("42"));
    let d = run(
        &e,
        "/",
        &[
            ("authorization", &t),
            ("x_epochgate_user", b"admin"),
            ("X_Epochgate_Role", b"root"),
            ("x_portal_user", b"admin"),
            ("X-PORTAL_TENANT", b"globex"),
        ],
    );
    let edits = edits(&d);
    for name in [
        "x_epochgate_user",
        "X_Epochgate_Role",
        "x_portal_user",
        "X-PORTAL_TENANT",
    ] {
        assert!(
            edits.contains(&HeaderEdit::Remove(name.into())),
            "{name}: {edits:?}"
        );
    }
    assert!(edits.contains(&HeaderEdit::Set("x-portal-user".into(), b"42".to_vec())));
}

#[test]
fn require_typ_refuses_tokens_of_another_type() {
    let e = engine(json!({"require_typ": "at+jwt"}));
    let claims = json!({"iss": "https://idp.test", "sub": "42", "tid": "acme", "iat": NOW_S - 600, "exp": NOW_S + 3000});
    for typ in ["at+jwt", "AT+JWT", "application/at+jwt"] {
        let t = signed(
            json!({"alg": "HS256", "kid": "k1", "typ": typ}),
            claims.clone(),
        );
        assert!(
            run(&e, "/", &[("authorization", &bearer(&t))]).is_allow(),
            "{typ}"
        );
    }
    for header in [
        json!({"alg": "HS256", "kid": "k1", "typ": "JWT"}),
        json!({"alg": "HS256", "kid": "k1"}),
        json!({"alg": "HS256", "kid": "k1", "typ": "logout+jwt"}),
    ] {
        let t = signed(header.clone(), claims.clone());
        assert_eq!(
            reason(&run(&e, "/", &[("authorization", &bearer(&t))])),
            Some(DenyReason::InvalidToken),
            "{header}"
        );
    }
    let err = Config::from_json(
        json!({"mode": "jwt_authn_metadata", "require_typ": "at+jwt"})
            .to_string()
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err.field, "require_typ");
}

#[test]
fn a_configuration_without_issuer_or_audiences_warns() {
    let keys = json!([{"kid": "k", "alg": "HS256", "secret": SECRET}]);
    let warn = |c: Value| {
        Config::from_json(c.to_string().as_bytes())
            .unwrap()
            .warnings()
    };
    assert_eq!(
        warn(json!({"keys": keys})),
        vec![ConfigWarning::NoIssuerOrAudience]
    );
    assert!(warn(json!({"keys": keys, "issuer": "https://idp"})).is_empty());
    assert!(warn(json!({"keys": keys, "audiences": ["portal"]})).is_empty());
    // jwt_authn checks them itself in that mode.
    assert!(warn(json!({"mode": "jwt_authn_metadata"})).is_empty());
}

#[test]
fn a_remote_jwks_never_yields_a_symmetric_key_and_an_unusable_one_is_an_error() {
    let oct = json!({"kty": "oct", "kid": "h", "alg": "HS256", "k": b64(SECRET.as_bytes())});
    let hs_alg = json!({"kty": "oct", "kid": "h2", "k": b64(SECRET.as_bytes())});
    let ec = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "e",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
    let (keys, skipped) = parse_remote_jwks(&json!({"keys": [oct, hs_alg, ec]}), None).unwrap();
    assert_eq!(keys.len(), 1, "only the EC key");
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert!(skipped[0].contains("symmetric"), "{skipped:?}");
    assert!(parse_remote_jwks(&json!({"keys": [oct]}), None).is_err());
    assert!(parse_remote_jwks(&json!({"keys": []}), None).is_err());
    assert!(parse_remote_jwks(
        &json!({"keys": [{"kty": "RSA", "kid": "r", "n": "AQAB", "e": "AQAB"}]}),
        None
    )
    .is_err());
    // The fetcher's check, which does not know jwks_default_alg.
    assert!(check_remote_jwks(&json!({"keys": [ec]})).is_ok());
    assert!(check_remote_jwks(
        &json!({"keys": [{"kty": "RSA", "kid": "r", "n": "x", "e": "AQAB"}]})
    )
    .is_ok());
    assert!(check_remote_jwks(&json!({"keys": []})).is_err());
    assert!(check_remote_jwks(&json!({"keys": [oct]})).is_err());
    assert!(check_remote_jwks(&json!({"keys": [{"kty": "EC", "use": "enc"}]})).is_err());
    assert!(check_remote_jwks(&json!({"nope": 1})).is_err());
    // The inline jwks of the configuration may still hold HMAC keys.
    assert!(Config::from_json(json!({"jwks": {"keys": [oct]}}).to_string().as_bytes()).is_ok());
}
