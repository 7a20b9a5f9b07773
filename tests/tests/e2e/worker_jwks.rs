//! Key rotation in the Worker (issue 14 item 3): each isolate fetches the IdP's JWKS
//! (`jwks` in `EPOCHGATE_WORKER`, `remote_jwks: true` in the filter configuration) with
//! `core`'s rules, as Envoy's sync VM does (`jwks.rs`): a real rotation reaches no client
//! as a 503 or a 401, an empty JWKS keeps the keys, a published HMAC key verifies nothing.
//!
//! Build first: `make build-worker` (and `cargo build -p epochgate-control-plane`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_tests::jwks::{jwks, SigningKey};
use epochgate_tests::worker::{WorkerOptions, WorkerStack};
use epochgate_tests::{hs256_kid, wait_for, Options, Reply, Stack, Upstream};
use serde_json::json;

/// The IdP (serving `doc` as its JWKS) and the Worker trusting it.
fn idp_and_worker(doc: &Arc<Mutex<String>>) -> (Upstream, WorkerStack) {
    let idp = Upstream::start_with(Reply::Document {
        content_type: "application/json",
        body: Arc::clone(doc),
    });
    let stack = WorkerStack::start_with(WorkerOptions {
        edge: Options {
            filter: json!({"keys": [], "remote_jwks": true}),
            ..Options::default()
        },
        worker: json!({"jwks": {
            "url": format!("http://127.0.0.1:{}/jwks.json", idp.port),
            "refresh_s": 300, "min_refresh_s": 1,
        }}),
        ..WorkerOptions::default()
    });
    (idp, stack)
}

fn claims() -> serde_json::Value {
    Stack::claims("42", "acme", json!({}))
}

#[test]
fn worker_key_rotation_reaches_no_client_as_a_503_or_a_401() {
    let keys = [SigningKey::es256("2026-a"), SigningKey::es256("2026-b")];
    let doc = Arc::new(Mutex::new(jwks(&[&keys[0]])));
    let (idp, stack) = idp_and_worker(&doc);
    // A cold isolate fetches the keys before it decides its first request.
    let r = stack.get_with_token("/api/orders", &keys[0].sign(&claims()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(idp.requests().len(), 1, "one fetch");
    assert_eq!(
        idp.last().unwrap().header("authorization"),
        None,
        "no edge token to the IdP"
    );
    // Past min_refresh_s since the first fetch, so the rotation's refresh is not held back.
    std::thread::sleep(Duration::from_millis(1100));

    let signing = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let results: Mutex<Vec<(String, u16, Duration, String)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let key = &keys[signing.load(Ordering::Relaxed)];
                    let t = key.sign(&claims());
                    let start = Instant::now();
                    let r = stack.get_with_token("/api/orders", &t);
                    results.lock().unwrap().push((
                        key.kid.clone(),
                        r.status,
                        start.elapsed(),
                        r.text(),
                    ));
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        // The IdP rotates with no head start: it publishes the new key and signs with it
        // at once; the isolate learns of it from the first token that names it.
        *doc.lock().unwrap() = jwks(&[&keys[0], &keys[1]]);
        signing.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2000));
        *doc.lock().unwrap() = jwks(&[&keys[1]]);
        std::thread::sleep(Duration::from_millis(1000));
        done.store(true, Ordering::Relaxed);
    });
    let results = results.into_inner().unwrap();
    let new_key: Vec<_> = results.iter().filter(|r| r.0 == "2026-b").collect();
    assert!(!new_key.is_empty(), "the clients used the new key");
    let errors: Vec<_> = results
        .iter()
        .filter(|r| r.1 != 200 || !r.3.contains(r#""user":"42""#))
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} requests failed during the rotation, first: {:?}",
        errors.len(),
        results.len(),
        errors.first()
    );
    let slowest = new_key.iter().map(|r| r.2).max().unwrap_or_default();
    println!(
        "worker key rotation: {} requests, {} JWKS fetches, the slowest new-key request took {} ms",
        results.len(),
        idp.requests().len(),
        slowest.as_millis()
    );
    assert!(
        stack
            .workerd
            .log()
            .contains("unknown signing key: waiting up to"),
        "the first new-key requests waited for the refresh"
    );
}

#[test]
fn worker_remote_jwks_never_gives_symmetric_keys_and_an_empty_one_keeps_the_previous_keys() {
    let k1 = SigningKey::es256("k1");
    let doc = Arc::new(Mutex::new(jwks(&[&k1])));
    let (idp, stack) = idp_and_worker(&doc);
    let t1 = k1.sign(&claims());
    assert_eq!(stack.get_with_token("/", &t1).status, 200);
    let mut wrong = Vec::new();

    // A kid the IdP does not publish: after the refresh it asked for, retry, not a logout.
    std::thread::sleep(Duration::from_millis(1100));
    let fetches = idp.requests().len();
    let r = stack.get_with_token("/", &SigningKey::es256("nobody").sign(&claims()));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_key");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(idp.requests().len(), fetches + 1, "it refetched once");

    // The IdP answers an empty key list (a broken deploy): the isolate keeps its keys.
    *doc.lock().unwrap() = json!({"keys": []}).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let fetches = idp.requests().len();
    let bogus = SigningKey::es256("bogus").sign(&claims());
    assert_eq!(stack.get_with_token("/", &bogus).status, 503);
    wait_for("the refetch", Duration::from_secs(10), || {
        (idp.requests().len() > fetches).then_some(())
    });
    let r = stack.get_with_token("/", &t1);
    if r.status != 200 {
        wrong.push(format!(
            "after an empty JWKS, a valid token: {} {}",
            r.status,
            r.text()
        ));
    }
    if !stack.workerd.log().contains("keeping the previous keys") {
        wrong.push("the empty JWKS was not logged as a failed fetch".into());
    }

    // A JWKS URL is public: an HMAC key published there is a secret anyone can read, so a
    // token signed with it is never accepted.
    let secret = "published-hmac-secret-0123456789abcdef";
    let oct =
        json!({"kty": "oct", "kid": "k3", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)});
    *doc.lock().unwrap() = json!({"keys": [oct, k1.jwk()]}).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let forged = hs256_kid(&claims(), secret, "k3");
    let r = stack.get_with_token("/", &forged);
    if r.status == 200 {
        wrong.push(format!(
            "a token signed with a published HMAC key: {} {}",
            r.status,
            r.text()
        ));
    }
    let r = stack.get_with_token("/", &t1);
    if r.status != 200 {
        wrong.push(format!("the EC key next to it: {} {}", r.status, r.text()));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
