//! Keys from the IdP's JWKS URL (`remote_jwks`): rotation without a restart and without
//! an error for anyone, a flood of bogus `kid`s that does not hammer the IdP, and a JWKS
//! that must not be trusted as it is (symmetric keys, an empty list). Envoy's sync service
//! and the Worker's isolates fetch it with `core`'s rules; the scenarios that both must
//! pass are written once and run on each.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_tests::jwks::{jwks, SigningKey};
use epochgate_tests::worker::{WorkerOptions, WorkerStack};
use epochgate_tests::{hs256_kid, wait_for, Edge, Options, Reply, Stack, Upstream};
use serde_json::json;

/// An edge trusting the IdP's JWKS: Envoy (fetched by the sync VM, after its first fetch)
/// or the Worker (fetched by the isolate, cold before its first decision).
enum JwksEdge {
    Envoy(Stack),
    Worker(WorkerStack),
}

impl JwksEdge {
    fn edge(&self) -> &(dyn Edge + Sync) {
        match self {
            JwksEdge::Envoy(s) => s,
            JwksEdge::Worker(s) => s,
        }
    }

    /// Whether requests were held for a refresh (Envoy's `key_waits`, the Worker's log).
    fn waited_for_a_refresh(&self) -> bool {
        match self {
            JwksEdge::Envoy(s) => s.stat("wasmcustom.epochgate.key_waits").unwrap_or(0) > 0,
            JwksEdge::Worker(s) => s
                .workerd
                .log()
                .contains("unknown signing key: waiting up to"),
        }
    }

    /// How many fetched documents were refused (Envoy's `jwks_failed`, the Worker's log).
    fn refused_documents(&self) -> usize {
        match self {
            JwksEdge::Envoy(s) => s.stat("wasmcustom.epochgate.jwks_failed").unwrap_or(0) as usize,
            JwksEdge::Worker(s) => s.workerd.log().matches("keeping the previous keys").count(),
        }
    }
}

/// The IdP (serving `doc` as its JWKS) and Envoy trusting it, after the first fetch.
fn idp_and_envoy(doc: &Arc<Mutex<String>>) -> (Upstream, Stack) {
    let idp = idp(doc);
    let stack = Stack::start_with(Options {
        filter: json!({"keys": [], "remote_jwks": true}),
        sync: json!({"jwks": {"cluster": "idp", "authority": "idp.e2e.test", "path": "/jwks.json", "refresh_s": 300, "min_refresh_s": 1}}),
        extra_clusters: Stack::cluster_yaml("idp", idp.port),
        ..Options::default()
    });
    wait_for("the first JWKS fetch", Duration::from_secs(10), || {
        (stack.stat("wasmcustom.epochgate.jwks_ok")? > 0).then_some(())
    });
    (idp, stack)
}

/// The IdP and the Worker trusting it (`jwks` in `EPOCHGATE_WORKER`).
fn idp_and_worker(doc: &Arc<Mutex<String>>) -> (Upstream, WorkerStack) {
    let idp = idp(doc);
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

fn idp(doc: &Arc<Mutex<String>>) -> Upstream {
    Upstream::start_with(Reply::Document {
        content_type: "application/json",
        body: Arc::clone(doc),
    })
}

macro_rules! on_both_edges {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[test]
            fn envoy() {
                super::$scenario(&|doc| {
                    let (idp, s) = idp_and_envoy(doc);
                    (idp, JwksEdge::Envoy(s))
                });
            }
            #[test]
            fn worker() {
                super::$scenario(&|doc| {
                    let (idp, s) = idp_and_worker(doc);
                    (idp, JwksEdge::Worker(s))
                });
            }
        }
    )*};
}

on_both_edges!(
    a_key_rotation_reaches_no_client_as_a_503_or_a_401,
    a_remote_jwks_never_gives_symmetric_keys_and_an_empty_one_keeps_the_previous_keys,
);

/// How a scenario starts its edge: the IdP serving the document, and the edge.
type Start<'a> = &'a dyn Fn(&Arc<Mutex<String>>) -> (Upstream, JwksEdge);

fn claims() -> serde_json::Value {
    Stack::claims("42", "acme", json!({}))
}

#[test]
fn keys_rotate_through_the_remote_jwks_without_a_restart() {
    let (k1, k2) = (SigningKey::es256("k1"), SigningKey::es256("k2"));
    let doc = Arc::new(Mutex::new(jwks(&[&k1])));
    let (idp, stack) = idp_and_envoy(&doc);
    let (t1, t2) = (k1.sign(&claims()), k2.sign(&claims()));
    assert_eq!(stack.get_with_token("/", &t1).status, 200);

    // A kid the IdP does not publish: after the refresh it asked for, retry, not a logout.
    let r = stack.get_with_token("/", &t2);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"], "unknown_key");
    assert_eq!(r.header("retry-after"), Some("1"));

    // The IdP rotates: adds k2, drops k1. The unknown kid triggers a refresh.
    *doc.lock().unwrap() = jwks(&[&k2]);
    let took = stack.time_until_status(&t2, 200, Duration::from_secs(10));
    println!("key rotation picked up after {} ms", took.as_millis());
    let r = stack.get_with_token("/", &t1);
    assert_eq!(
        r.status,
        503,
        "the dropped key's tokens are rejected: {}",
        r.text()
    );

    // A flood of bogus kids, all at once, does not hammer the IdP: they wait for the same
    // refresh, and there is at most one fetch per min_refresh_s.
    let fetches = idp.requests().len();
    let start = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let stack = &stack;
        let handles: Vec<_> = (0..40)
            .map(|i| {
                let bogus = SigningKey::es256(&format!("bogus-{i}")).sign(&claims());
                s.spawn(move || stack.get_with_token("/", &bogus).status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses, vec![503; 40]);
    std::thread::sleep(Duration::from_millis(300));
    let elapsed_s = start.elapsed().as_secs() + 1;
    let extra = idp.requests().len() - fetches;
    assert!(
        extra as u64 <= elapsed_s + 1,
        "{extra} JWKS fetches in {elapsed_s} s"
    );
}

fn a_key_rotation_reaches_no_client_as_a_503_or_a_401(start: Start) {
    let keys = [SigningKey::es256("2026-a"), SigningKey::es256("2026-b")];
    let doc = Arc::new(Mutex::new(jwks(&[&keys[0]])));
    let (idp, with) = start(&doc);
    let stack = with.edge();
    // Fetched (the Worker: cold, before its first decision), and never with an edge token.
    let r = stack.get_with_token("/api/orders", &keys[0].sign(&claims()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        idp.last().unwrap().header("authorization"),
        None,
        "no edge token to the IdP"
    );
    // Past min_refresh_s since the first fetch, so the rotation's refresh is not held back.
    std::thread::sleep(Duration::from_millis(1100));

    // Clients keep calling with a token of the key the IdP signs with now.
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
        // at once; the edge learns of it from the first token that names it.
        *doc.lock().unwrap() = jwks(&[&keys[0], &keys[1]]);
        signing.store(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2000));
        // No token of the old key is in use any more: the IdP retires it.
        *doc.lock().unwrap() = jwks(&[&keys[1]]);
        std::thread::sleep(Duration::from_millis(1000));
        done.store(true, Ordering::Relaxed);
    });
    let results = results.into_inner().unwrap();
    let new_key: Vec<_> = results.iter().filter(|r| r.0 == "2026-b").collect();
    assert!(!new_key.is_empty(), "the clients used the new key");
    // Every one passed, with its identity set for the app (held ones too).
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
        "{} key rotation: {} requests, {} JWKS fetches, the slowest new-key request took {} ms",
        stack.name(),
        results.len(),
        idp.requests().len(),
        slowest.as_millis()
    );
    assert!(
        with.waited_for_a_refresh(),
        "the first new-key requests waited for the refresh"
    );
}

fn a_remote_jwks_never_gives_symmetric_keys_and_an_empty_one_keeps_the_previous_keys(start: Start) {
    let k1 = SigningKey::es256("k1");
    let doc = Arc::new(Mutex::new(jwks(&[&k1])));
    let (idp, with) = start(&doc);
    let stack = with.edge();
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
    assert!(idp.requests().len() > fetches, "it refetched");
    let failed = with.refused_documents();

    // The IdP answers an empty key list (a broken deploy): the edge keeps its keys.
    *doc.lock().unwrap() = json!({"keys": []}).to_string();
    std::thread::sleep(Duration::from_millis(1100));
    let fetches = idp.requests().len();
    let bogus = SigningKey::es256("bogus").sign(&claims());
    assert_eq!(
        stack.get_with_token("/", &bogus).status,
        503,
        "asks for a refresh"
    );
    wait_for("the refetch", Duration::from_secs(10), || {
        (idp.requests().len() > fetches).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let r = stack.get_with_token("/", &t1);
    if r.status != 200 {
        wrong.push(format!(
            "after an empty JWKS, a valid token: {} {}",
            r.status,
            r.text()
        ));
    }
    let now_failed = with.refused_documents();
    if now_failed <= failed {
        wrong.push(format!(
            "the empty JWKS was not counted as a failed fetch ({now_failed})"
        ));
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
