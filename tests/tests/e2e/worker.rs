//! The Cloudflare Worker build, end to end: the built worker in a real workerd, the real
//! control plane, the in-process upstream: what only the Worker has (isolates as edges,
//! WebCrypto, its config). The scenarios both edges pass are written once, against
//! `Edge` (`logout.rs`, `revoked.rs`, `app_view.rs`).
//!
//! Build first: `make build-worker` (and `cargo build -p epochgate-control-plane`).

use std::time::Duration;

use epochgate_tests::signing::{self, Alg};
use epochgate_tests::worker::{WorkerOptions, WorkerStack, DEPLOYMENT};
use epochgate_tests::{filter_config, wait_for, Options};
use serde_json::json;

/// The isolate is an edge of its own, and reports the sessions it saw (what a request
/// through it gets is `logout.rs`'s, on both edges).
#[test]
fn worker_isolate_reports_as_an_edge_with_the_sessions_it_saw() {
    let stack = WorkerStack::start();
    let token = stack.token("42", "acme", json!({"sid": "s-42-a"}));
    assert_eq!(stack.get_with_token("/api/orders", &token).status, 200);

    // The isolate is an edge: `<deployment>-<random id>`, at the current version.
    let version = stack.cp.edges()["version"].as_u64().unwrap();
    let edges = stack.edges();
    assert_eq!(edges.len(), 1, "{edges:?}");
    let id = edges[0]["id"].as_str().unwrap();
    let random = id.strip_prefix(&format!("{DEPLOYMENT}-")).unwrap();
    assert_eq!(random.len(), 16, "{id}");
    assert!(random.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
    assert_eq!(edges[0]["applied_version"].as_u64(), Some(version));
    assert_eq!(edges[0]["lag"].as_u64(), Some(0));

    // The isolate reports the session it saw (in the background, the first at once).
    let sessions = wait_for(
        "the worker's session report",
        Duration::from_secs(10),
        || {
            let v = stack
                .cp
                .admin("GET", "/v1/tenants/acme/users/42/sessions", "")
                .json();
            (v["sessions"].as_array()?.len() == 1).then_some(v)
        },
    );
    assert_eq!(sessions["sessions"][0]["sid"], "s-42-a");
    assert_eq!(sessions["sessions"][0]["edge"], id);
}

/// A Worker deployment with its own edge token: its isolates show as one edge (the
/// credential's name), counted as instances, and `?wait=` counts that edge.
#[test]
fn worker_deployment_with_its_own_token_is_one_edge_with_its_isolates_counted() {
    let stack = WorkerStack::start_with(WorkerOptions {
        edge: epochgate_tests::Options {
            edge_credential: Some("worker-prod".into()),
            ..epochgate_tests::Options::default()
        },
        ..WorkerOptions::default()
    });
    let token = stack.token("42", "acme", json!({}));
    assert_eq!(stack.get_with_token("/api/orders", &token).status, 200);
    let edges = stack.cp.edges();
    let list = edges["edges"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{edges}");
    assert_eq!(
        list[0]["id"], "worker-prod",
        "the credential's name, not the isolate's"
    );
    assert!(list[0]["instances"].as_u64().unwrap() >= 1, "{edges}");
    assert!(list[0]["credential"].is_string(), "{edges}");
    let r = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    epochgate_tests::wait_for(
        "the isolate to apply the logout",
        Duration::from_secs(20),
        || (stack.get_with_token("/api/orders", &token).status == 401).then_some(()),
    );
    // The isolate reports what it applied on its next sync, which a request brings.
    epochgate_tests::wait_for("its receipt", Duration::from_secs(20), || {
        stack.get_with_token("/api/orders", &token);
        let edges = stack.cp.edges();
        (edges["edges"][0]["lag"] == 0 && edges["edges"][0]["id"] == "worker-prod").then_some(())
    });
    let m = epochgate_tests::http::request("127.0.0.1", stack.cp.port, "GET", "/metrics", &[], b"")
        .unwrap();
    assert!(
        m.text()
            .contains("epochgate_edge_instances{edge=\"worker-prod\",live=\"true\"}"),
        "{}",
        m.text()
    );
    assert!(
        !stack.workerd.log().contains(&stack.edge_token),
        "the token is in workerd's log"
    );
}

#[test]
fn worker_cold_isolate_burst_waits_for_one_sync_and_passes() {
    let stack = WorkerStack::start();
    let token = stack.token("42", "acme", json!({}));
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| stack.get_with_token("/api/orders", &token).status))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses,
        vec![200; 8],
        "no 503 while the first sync is in flight"
    );
    let log = stack.workerd.log();
    assert_eq!(
        log.matches("sync: applied snapshot").count(),
        1,
        "one sync for the burst: {log}"
    );
}

#[test]
fn worker_forwards_method_body_and_query() {
    let stack = WorkerStack::start();
    let token = stack.token("42", "acme", json!({}));
    let auth = format!("Bearer {token}");
    let body = br#"{"qty":2,"sku":"A-1"}"#;
    let r = epochgate_tests::http::request(
        "127.0.0.1",
        stack.port,
        "POST",
        "/api/orders?dry_run=1",
        &[
            ("authorization", auth.as_bytes()),
            ("content-type", b"application/json"),
        ],
        body,
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = stack.upstream.last().unwrap();
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/orders?dry_run=1");
    assert_eq!(seen.body, body);
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

/// RS*, PS*, ES*, EdDSA (and HS256) tokens, checked by workerd's WebCrypto: the Worker
/// carries no crypto code of its own.
#[test]
fn worker_verifies_every_algorithm_with_webcrypto() {
    let algs = [Alg::Rs256, Alg::Ps256, Alg::Es256, Alg::Es384, Alg::EdDsa];
    let mut keys = signing::keys(&algs);
    let hs256 = filter_config(&Options::default())["keys"][0].clone();
    keys.as_array_mut().unwrap().push(hs256);
    let stack = WorkerStack::start_with(WorkerOptions {
        edge: Options {
            filter: json!({"keys": keys}),
            ..Options::default()
        },
        ..WorkerOptions::default()
    });
    let mut cases = signing::cases(&algs, 2);
    cases.push((
        "valid HS256".into(),
        stack.token("42", "acme", json!({})),
        200,
    ));
    for (name, token, want) in &cases {
        let r = stack.get_with_token("/api/orders", token);
        assert_eq!(r.status, *want, "{name}: {}", r.text());
        if *want == 200 {
            let seen = stack.upstream.last().unwrap();
            assert_eq!(seen.header("x-epochgate-user"), Some("42"), "{name}");
        }
        // Again: a verified token is a cache hit, a refused one is refused again.
        assert_eq!(
            stack.get_with_token("/api/orders", token).status,
            *want,
            "{name}"
        );
    }
    let log = stack.workerd.log();
    assert!(!log.contains("WebCrypto cannot"), "{log}");
}

#[test]
fn worker_with_a_bad_config_answers_a_clear_500_and_logs_why() {
    let stack = WorkerStack::start_with(WorkerOptions {
        raw_config: Some(r#"{"keys": [{"kid": "k", "alg": "HS257", "secret": "x"}]}"#.into()),
        ..WorkerOptions::default()
    });
    let t = stack.token("42", "acme", json!({}));
    let r = stack.get_with_token("/", &t);
    assert_eq!(r.status, 500, "{}", r.text());
    let body = r.json();
    assert_eq!(body["error"], "worker_misconfigured");
    assert!(
        body["detail"].as_str().unwrap().contains("`keys[0].alg`"),
        "{body}"
    );
    assert!(stack.upstream.requests().is_empty());
    epochgate_tests::wait_for("the log line", Duration::from_secs(5), || {
        stack
            .workerd
            .log()
            .contains("config field `keys[0].alg`: unsupported algorithm")
            .then_some(())
    });
}

#[test]
fn worker_receipt_a_logout_with_wait_reports_the_live_isolate_once_it_applied() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stack = WorkerStack::start();
    let t42 = stack.token("42", "acme", json!({}));
    let t43 = stack.token("43", "acme", json!({}));
    assert_eq!(stack.get_with_token("/", &t43).status, 200);
    let done = AtomicBool::new(false);
    let answer = std::thread::scope(|scope| {
        // Traffic: an isolate syncs (and so reports) only while it serves requests.
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                let _ = stack.get_with_token("/", &t43);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let r = stack.cp.admin(
            "POST",
            "/v1/tenants/acme/users/42/logout?wait=5",
            r#"{"reason":"lost phone"}"#,
        );
        done.store(true, Ordering::Relaxed);
        r
    });
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    let p = &body["propagation"];
    assert_eq!(
        (p["edges"].as_u64(), p["acked"].as_u64()),
        (Some(1), Some(1)),
        "{body}"
    );
    println!(
        "receipt from the worker (refresh every {} ms, under traffic): {} ms",
        stack.refresh_ms, p["elapsed_ms"]
    );
    assert_eq!(
        stack.get_with_token("/", &t42).status,
        401,
        "applied before the receipt"
    );
    let edges = stack.edges();
    assert_eq!(edges[0]["live"], true, "{edges:?}");
}

/// The control plane's count of sync requests.
fn sync_requests(stack: &WorkerStack) -> u64 {
    stack.cp.metric("epochgate_sync_requests_total").unwrap()
}

/// The relay: three isolates (worker services) of one deployment share its Durable
/// Object, which holds the one long poll; under traffic each isolate denies a logged-out
/// user tens of milliseconds after the admin call's 200 — with its own sync calls set 30 s
/// apart and its fallback to 5 s, so only the relay can bring a change that fast — and
/// the control plane sees the object as an edge of its own.
#[test]
fn worker_relay_brings_each_logout_to_every_isolate_at_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stack = WorkerStack::start_with(WorkerOptions {
        edge: Options {
            max_staleness_s: 120,
            ..Options::default()
        },
        worker: json!({"refresh_ms": 5000, "relay_refresh_ms": 30000, "retry_max_ms": 5000}),
        relay: true,
        isolates: 3,
        ..WorkerOptions::default()
    });
    let get = |port: u16, token: &str| {
        epochgate_tests::http::get_bearer(port, "/api/orders", token)
            .unwrap()
            .status
    };
    let bystander = stack.token("bystander", "acme", json!({}));
    for &port in &stack.ports {
        assert_eq!(get(port, &bystander), 200);
    }
    wait_for("the relay to poll", Duration::from_secs(10), || {
        stack.relay_edge()
    });
    let done = AtomicBool::new(false);
    let mut took = Vec::new();
    let requests_before = sync_requests(&stack);
    std::thread::scope(|scope| {
        // Traffic on every isolate: an isolate asks the relay only while it serves.
        for &port in &stack.ports {
            let (done, bystander) = (&done, &bystander);
            scope.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    assert_eq!(get(port, bystander), 200, "a bystander on {port}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
        for round in 0..10 {
            let user = format!("victim-{round}");
            let t = stack.token(&user, "acme", json!({}));
            for &port in &stack.ports {
                assert_eq!(get(port, &t), 200);
            }
            let r = stack
                .cp
                .admin("POST", &format!("/v1/tenants/acme/users/{user}/logout"), "");
            assert_eq!(r.status, 200, "{}", r.text());
            let at = std::time::Instant::now();
            let per_isolate: Vec<Duration> = std::thread::scope(|inner| {
                let handles: Vec<_> = stack
                    .ports
                    .iter()
                    .map(|&port| {
                        let t = &t;
                        inner.spawn(move || {
                            wait_for(
                                &format!("the logout at the isolate on {port}"),
                                Duration::from_secs(4),
                                || (get(port, t) == 401).then(|| at.elapsed()),
                            )
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            took.extend(per_isolate);
        }
        done.store(true, Ordering::Relaxed);
    });
    let per_logout = (sync_requests(&stack) - requests_before) as f64 / 10.0;
    // Quiet: traffic, no change — the isolates' own calls are 30 s apart, the relay's
    // poll is held: next to nothing reaches the control plane.
    let quiet_before = sync_requests(&stack);
    let quiet = std::time::Instant::now();
    while quiet.elapsed() < Duration::from_secs(2) {
        for &port in &stack.ports {
            assert_eq!(get(port, &bystander), 200);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let quiet_requests = sync_requests(&stack) - quiet_before;
    took.sort();
    let ms = |d: Duration| d.as_millis();
    println!(
        "relay: logout → deny at each of 3 isolates under traffic: p50 {} ms, p99 {} ms, max {} ms ({} samples); control-plane sync requests per logout {per_logout:.1}, in 2 s of traffic without a change {quiet_requests}",
        ms(took[took.len() / 2]),
        ms(took[took.len() * 99 / 100]),
        ms(*took.last().unwrap()),
        took.len()
    );
    // Every isolate reported (its receipt), and the relay is an edge of its own.
    let version = stack.cp.edges()["version"].as_u64().unwrap();
    wait_for("every isolate's receipt", Duration::from_secs(10), || {
        let edges = stack.edges();
        (edges.len() == 3
            && edges
                .iter()
                .all(|e| e["applied_version"].as_u64() == Some(version)))
        .then_some(())
    });
    assert_eq!(
        stack.relay_edge().unwrap()["applied_version"].as_u64(),
        Some(version)
    );
    // After an idle spell an isolate asks the object before deciding: the very first
    // request after a logout is refused, on every isolate.
    let idle = stack.token("idle", "acme", json!({}));
    for &port in &stack.ports {
        assert_eq!(get(port, &idle), 200);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let r = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/idle/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(100));
    for &port in &stack.ports {
        assert_eq!(
            get(port, &idle),
            401,
            "the first request after the idle spell"
        );
    }
    let log = stack.workerd.log();
    assert!(log.contains("relay e2e-worker-relay"), "{log}");
    assert!(!log.contains("setAlarm failed"), "{log}");
}
