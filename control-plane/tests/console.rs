//! The console through the router: sign-in, cookies, CSRF, security headers. The
//! pages themselves are exercised in a real browser (tests/tests/e2e/console.rs).

use axum::body::Body;
use axum::http::{Request, StatusCode};

use crate::common::{send, test_app, ADMIN, EDGE};

fn get(uri: &str, host: &str, cookie: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method("GET")
        .uri(uri)
        .header("host", host);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    b.body(Body::empty()).unwrap()
}

fn post(uri: &str, host: &str, cookie: &str, form: &str) -> Request<Body> {
    Request::builder()
        .method("POST")
        .uri(uri)
        .header("host", host)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::from(form.to_string()))
        .unwrap()
}

/// `name=value` of a `Set-Cookie` header, and the whole header.
fn set_cookie(a: &crate::common::Answer, name: &str) -> (String, String) {
    let header = a
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"));
    (header.split(';').next().unwrap().to_string(), header)
}

fn field<'a>(html: &'a str, name: &str) -> &'a str {
    let at = html.find(&format!("name=\"{name}\" value=\"")).unwrap() + name.len() + 15;
    &html[at..at + html[at..].find('"').unwrap()]
}

/// Signs in on `host` with `credential`; the session cookie header.
async fn sign_in(
    state: &epochgate_control_plane::AppState,
    host: &str,
    credential: &str,
) -> (crate::common::Answer, Option<(String, String)>) {
    let form = send(state, get("/console/login", host, None)).await;
    let (login_cookie, _) = set_cookie(&form, "epochgate_console_login");
    let csrf = field(&form.text, "login_csrf").to_string();
    let body = format!("login_csrf={csrf}&credential={credential}");
    let a = send(state, post("/console/login", host, &login_cookie, &body)).await;
    let session = a
        .headers
        .get_all("set-cookie")
        .iter()
        .any(|v| v.to_str().unwrap().starts_with("epochgate_console="))
        .then(|| set_cookie(&a, "epochgate_console"));
    (a, session)
}

#[tokio::test]
async fn signing_in_gives_a_strict_httponly_cookie_secure_outside_loopback() {
    let app = test_app().await;
    let (a, session) = sign_in(&app.state, "console.example.com", ADMIN).await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let (_, header) = session.unwrap();
    assert!(
        header.contains("HttpOnly") && header.contains("SameSite=Strict"),
        "{header}"
    );
    assert!(header.contains("; Secure"), "outside loopback: {header}");
    assert!(header.contains("Path=/console"), "{header}");
    assert!(
        !header.contains(ADMIN),
        "the credential stays on the server"
    );
    let (_, local) = sign_in(&app.state, "127.0.0.1:8080", ADMIN).await;
    assert!(
        !local.unwrap().1.contains("Secure"),
        "plain HTTP on loopback works"
    );
}

#[tokio::test]
async fn the_edge_token_and_a_forged_sign_in_are_refused() {
    let app = test_app().await;
    let (a, session) = sign_in(&app.state, "127.0.0.1", EDGE).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(session.is_none());
    // A sign-in form posted from elsewhere (no matching login cookie): refused.
    let body = format!("login_csrf=forged&credential={ADMIN}");
    let a = send(
        &app.state,
        post(
            "/console/login",
            "127.0.0.1",
            "epochgate_console_login=other",
            &body,
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(a
        .headers
        .get_all("set-cookie")
        .iter()
        .all(|v| !v.to_str().unwrap().starts_with("epochgate_console=")));
}

#[tokio::test]
async fn pages_need_a_session_and_carry_the_security_headers() {
    let app = test_app().await;
    let a = send(
        &app.state,
        get("/console/tenants/acme/users", "127.0.0.1", None),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.headers["location"], "/console/login");
    let a = send(
        &app.state,
        get(
            "/console/tenants/acme/users",
            "127.0.0.1",
            Some("epochgate_console=guessed"),
        ),
    )
    .await;
    assert_eq!(a.headers["location"], "/console/login");
    let (_, session) = sign_in(&app.state, "127.0.0.1", ADMIN).await;
    let (cookie, _) = session.unwrap();
    let page = send(
        &app.state,
        get("/console/tenants/acme/users", "127.0.0.1", Some(&cookie)),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let csp = page.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.starts_with("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(
        !page.text.contains("<script>") && !page.text.contains(" style="),
        "no inline script or style"
    );
    assert_eq!(page.headers["x-frame-options"], "DENY");
    assert_eq!(page.headers["cache-control"], "no-store");
    // A POST without the page's CSRF token changes nothing.
    let a = send(
        &app.state,
        post(
            "/console/tenants/acme/users/42/logout",
            "127.0.0.1",
            &cookie,
            "csrf=forged",
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(app.state.store().status().await.unwrap().version, 0);
    let csrf = field(&page.text, "csrf").to_string();
    let a = send(
        &app.state,
        post(
            "/console/tenants/acme/users/42/logout",
            "127.0.0.1",
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(app.state.store().status().await.unwrap().version, 1);
    // Nor does one sent from another site with the right token.
    let mut cross = post(
        "/console/tenants/acme/users/43/logout",
        "127.0.0.1",
        &cookie,
        &format!("csrf={csrf}"),
    );
    cross
        .headers_mut()
        .insert("sec-fetch-site", "cross-site".parse().unwrap());
    assert_eq!(send(&app.state, cross).await.status, StatusCode::FORBIDDEN);
    // Caller-supplied text is shown escaped: no markup, no reordering characters.
    let reason = "%E2%80%AEgnp.exe%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    let a = send(
        &app.state,
        post(
            "/console/tenants/acme/users/44/logout",
            "127.0.0.1",
            &cookie,
            &format!("csrf={csrf}&reason={reason}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let audit = send(
        &app.state,
        get("/console/audit", "127.0.0.1", Some(&cookie)),
    )
    .await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
    assert!(
        audit
            .text
            .contains("\\u{202e}gnp.exe&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{}",
        audit.text
    );
    assert!(!audit.text.contains('\u{202e}') && !audit.text.contains("<script>"));
    // Signing out ends the session on the server.
    let a = send(
        &app.state,
        post(
            "/console/logout",
            "127.0.0.1",
            &cookie,
            &format!("csrf={csrf}"),
        ),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    let after = send(
        &app.state,
        get("/console/tenants/acme/users", "127.0.0.1", Some(&cookie)),
    )
    .await;
    assert_eq!(after.headers["location"], "/console/login");
}
