//! Hostile tokens (RFC 8725 and friends) through the real Envoy and the Worker in a real
//! workerd, one scenario for both: each is refused with its reason, a valid request right
//! after still passes (the filter VM, the isolate lives on), no URL a token names is ever
//! fetched, and the edge's log shows no panic.
//! The same list at the core level: `core/tests/hostile.rs`.

use std::net::TcpListener;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use epochgate_tests::worker::{WorkerOptions, WorkerStack};
use epochgate_tests::{repo_root, token, Edge, Options, Stack, SECRET};
use serde_json::{json, Value};

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn sign_raw(header: &str, payload: &str, secret: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), secret);
    format!("{input}.{}", b64(&sig))
}

fn signed(header: Value, claims: &Value) -> String {
    sign_raw(&header.to_string(), &claims.to_string(), SECRET.as_bytes())
}

const H: &str = r#"{"alg":"HS256","kid":"e2e","typ":"JWT"}"#;

struct Check<'a> {
    edge: &'a dyn Edge,
    good: String,
    checked: usize,
}

impl Check<'_> {
    /// Sends `headers`, expects `status` and error `code`, then a valid request passes.
    #[track_caller]
    fn refused(&mut self, what: &str, headers: &[(&str, &[u8])], status: u16, code: &str) {
        let r = self.edge.get("/api/orders", headers);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.json()["error"], code, "{what}");
        self.after(what);
    }

    #[track_caller]
    fn token_refused(&mut self, what: &str, token: &str, code: &str) {
        let auth = format!("Bearer {token}");
        let status = if code == "unknown_key" { 503 } else { 401 };
        self.refused(what, &[("authorization", auth.as_bytes())], status, code);
    }

    #[track_caller]
    fn token_passes(&mut self, what: &str, token: &str) {
        let r = self.edge.get_with_token("/api/orders", token);
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        self.after(what);
    }

    #[track_caller]
    fn after(&mut self, what: &str) {
        let r = self.edge.get_with_token("/api/orders", &self.good);
        assert_eq!(
            r.status,
            200,
            "a valid token right after {what}: {}",
            r.text()
        );
        self.checked += 1;
    }
}

fn options() -> Options {
    let rsa_pem =
        std::fs::read_to_string(repo_root().join("tests/fixtures/rs256-a.pub.pem")).unwrap();
    Options {
        filter: json!({"keys": [
            {"kid": "e2e", "alg": "HS256", "secret": SECRET},
            {"kid": "rsa", "alg": "RS256", "public_key_pem": rsa_pem},
        ]}),
        ..Options::default()
    }
}

#[test]
fn envoy_refuses_hostile_tokens_with_their_reason_and_lives_on() {
    let stack = Stack::start_with(options());
    let checked = hostile_tokens_are_refused_with_their_reason_and_the_edge_lives_on(&stack);
    // The filter counted them.
    assert!(
        stack
            .stat("wasmcustom.epochgate.denied.invalid_token")
            .unwrap()
            > 20
    );
    assert!(stack.stat("wasmcustom.epochgate.allowed").unwrap() >= checked as u64);
}

#[test]
fn worker_refuses_hostile_tokens_with_their_reason_and_lives_on() {
    let stack = WorkerStack::start_with(WorkerOptions {
        edge: options(),
        ..WorkerOptions::default()
    });
    hostile_tokens_are_refused_with_their_reason_and_the_edge_lives_on(&stack);
}

/// Returns how many cases it checked.
fn hostile_tokens_are_refused_with_their_reason_and_the_edge_lives_on(stack: &dyn Edge) -> usize {
    let rsa_pem =
        std::fs::read_to_string(repo_root().join("tests/fixtures/rs256-a.pub.pem")).unwrap();
    // Where a `jku`/`x5u` points: nothing may ever connect here.
    let trap = TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_url = format!(
        "http://127.0.0.1:{}/jwks.json",
        trap.local_addr().unwrap().port()
    );

    let claims = Stack::claims("42", "acme", json!({}));
    let body = claims.to_string();
    let inner = body
        .trim_start_matches('{')
        .trim_end_matches('}')
        .to_string();
    let mut c = Check {
        edge: stack,
        good: token("42", "acme", json!({})),
        checked: 0,
    };

    // alg none, any case, with and without a signature.
    for alg in ["none", "None", "NONE"] {
        let h = json!({"alg": alg, "kid": "e2e"}).to_string();
        let unsigned = format!("{}.{}.", b64(h.as_bytes()), b64(body.as_bytes()));
        c.token_refused(alg, &unsigned, "invalid_token");
        c.token_refused(
            alg,
            &sign_raw(&h, &body, SECRET.as_bytes()),
            "invalid_token",
        );
    }

    // HS256 signed with the RSA public key's PEM as the HMAC secret.
    for h in [r#"{"alg":"HS256","kid":"rsa"}"#, r#"{"alg":"HS256"}"#] {
        c.token_refused(h, &sign_raw(h, &body, rsa_pem.as_bytes()), "invalid_token");
    }

    // Hostile kids: path traversal, SQL, 10 KB (over the 8 KiB token limit too).
    for kid in [
        "../../../../etc/passwd".to_string(),
        "' OR '1'='1' --".to_string(),
        "k".repeat(10 * 1024),
    ] {
        let t = signed(json!({"alg": "HS256", "kid": kid}), &claims);
        c.token_refused(&kid[..kid.len().min(24)], &t, "invalid_token");
    }

    // jku / x5u / jwk: ignored. A good token still passes; an attacker's embedded key
    // verifies nothing; and nothing is fetched.
    let t = signed(
        json!({"alg": "HS256", "kid": "e2e", "jku": trap_url, "x5u": trap_url}),
        &claims,
    );
    c.token_passes("jku/x5u on a good token", &t);
    let attacker = "attacker-secret-0123456789abcdefghij";
    let h = json!({"alg": "HS256", "kid": "e2e", "jku": trap_url,
        "jwk": {"kty": "oct", "k": b64(attacker.as_bytes())}});
    c.token_refused(
        "embedded jwk",
        &sign_raw(&h.to_string(), &body, attacker.as_bytes()),
        "invalid_token",
    );

    // crit with names nobody understands.
    let t = signed(
        json!({"alg": "HS256", "kid": "e2e", "crit": ["x-unknown"]}),
        &claims,
    );
    c.token_refused("crit", &t, "invalid_token");

    // Duplicate member names, correctly signed: refused (RFC 8725 §3).
    let dup = format!(r#"{{{inner},"sub":"admin"}}"#);
    c.token_refused(
        "duplicate sub",
        &sign_raw(H, &dup, SECRET.as_bytes()),
        "invalid_token",
    );
    let dup_h = r#"{"alg":"HS256","kid":"e2e","alg":"none"}"#;
    c.token_refused(
        "duplicate alg",
        &sign_raw(dup_h, &body, SECRET.as_bytes()),
        "invalid_token",
    );

    // exp as a string, negative, 1e300 (a float in the future: valid, passes).
    let with = |extra: Value| Stack::claims("42", "acme", extra);
    c.token_refused(
        "exp string",
        &token("42", "acme", json!({"exp": "2100000000"})),
        "invalid_token",
    );
    c.token_refused(
        "exp negative",
        &token("42", "acme", json!({"exp": -1})),
        "token_expired",
    );
    c.token_passes(
        "exp 1e300",
        &signed(
            serde_json::from_str(H).unwrap(),
            &with(json!({"exp": 1e300})),
        ),
    );

    // iat in the future.
    let future = epochgate_tests::now_s() + 3600;
    c.token_refused(
        "iat future",
        &token("42", "acme", json!({"iat": future})),
        "token_not_yet_valid",
    );

    // 100-deep nested JSON: parsed without trouble (a signed one passes, a forged one
    // does not); 200 deep is past the parser's recursion limit: refused.
    let nested = |d: usize| format!("{}1{}", "[".repeat(d), "]".repeat(d));
    let deep = format!(r#"{{{inner},"x":{}}}"#, nested(100));
    c.token_passes("100-deep", &sign_raw(H, &deep, SECRET.as_bytes()));
    c.token_refused(
        "100-deep forged",
        &sign_raw(H, &deep, attacker.as_bytes()),
        "invalid_token",
    );
    let deeper = format!(r#"{{{inner},"x":{}}}"#, nested(200));
    c.token_refused(
        "200-deep",
        &sign_raw(H, &deeper, SECRET.as_bytes()),
        "invalid_token",
    );

    // Over the filter's 8 KiB limit: refused unparsed.
    let big = token("42", "acme", json!({"pad": "x".repeat(9 * 1024)}));
    c.token_refused("9 KiB", &big, "invalid_token");
    // 64 KiB: over Envoy's own header limit (60 KiB) — Envoy answers 431 (or resets the
    // connection while the rest is still being sent); either is a refusal, as is the
    // edge's own 401.
    let huge = token("42", "acme", json!({"pad": "x".repeat(64 * 1024)}));
    let auth = format!("Bearer {huge}");
    match epochgate_tests::http::request(
        "127.0.0.1",
        stack.port(),
        "GET",
        "/api/orders",
        &[("authorization", auth.as_bytes())],
        b"",
    ) {
        Ok(r) => assert!(
            matches!(r.status, 401 | 431),
            "64 KiB: {} {}",
            r.status,
            r.text()
        ),
        Err(e) => println!(
            "64 KiB token: connection closed by the {} ({e})",
            stack.name()
        ),
    }
    c.after("64 KiB");

    // Bad base64: padding, the standard alphabet, stray characters.
    let good = c.good.clone();
    let p: Vec<&str> = good.split('.').collect();
    let std_sig = STANDARD.encode(URL_SAFE_NO_PAD.decode(p[2]).unwrap());
    for (what, t) in [
        ("padding", format!("{}.{}.{}=", p[0], p[1], p[2])),
        ("padded header", format!("{}=.{}.{}", p[0], p[1], p[2])),
        ("standard alphabet", format!("{}.{}.{std_sig}", p[0], p[1])),
        ("plus", format!("{}.{}+.{}", p[0], p[1], p[2])),
        ("star", format!("{}.{}.{}*", p[0], p[1], p[2])),
        ("percent", format!("{}.{}%3D.{}", p[0], p[1], p[2])),
    ] {
        c.token_refused(what, &t, "invalid_token");
    }

    // Three segments only.
    for (what, t) in [
        ("two", format!("{}.{}", p[0], p[1])),
        ("four", format!("{good}.{}", p[2])),
        ("four, empty", format!("{good}.")),
    ] {
        c.token_refused(what, &t, "invalid_token");
    }

    // Two Authorization headers; header and cookie with different tokens.
    let a = format!("Bearer {good}");
    let other = token("43", "acme", json!({}));
    let b = format!("Bearer {other}");
    c.refused(
        "two authorization headers",
        &[
            ("authorization", a.as_bytes()),
            ("authorization", b.as_bytes()),
        ],
        401,
        "ambiguous_token",
    );
    let cookie = format!("portal_session={other}");
    c.refused(
        "header and cookie differ",
        &[
            ("authorization", a.as_bytes()),
            ("cookie", cookie.as_bytes()),
        ],
        401,
        "ambiguous_token",
    );

    // Nothing connected to the jku/x5u URL, no VM panicked, and the filter counted.
    assert!(
        trap.accept().is_err(),
        "something fetched the URL a token's header named"
    );
    let log = stack.log();
    assert!(!log.contains("panicked"), "a VM panicked: {log}");
    println!(
        "hostile tokens through the {}: {} cases, each followed by a valid request",
        stack.name(),
        c.checked
    );
    c.checked
}
