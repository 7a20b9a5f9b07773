//! Faults, end to end: the control plane SIGKILLed in the middle of a burst of logouts,
//! Envoy restarted, and the link between them cut and restored.

use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use epochgate_tests::{http, wait_for, Options, Stack, ADMIN_TOKEN};
use serde_json::{json, Value};

/// One logout the control plane answered 200.
#[derive(Debug, Clone)]
struct Acked {
    path: String,
    user: Option<String>,
    sid: Option<String>,
    epoch_ms: u64,
    version: u64,
}

#[test]
fn control_plane_sigkilled_mid_burst_keeps_every_acknowledged_logout_and_envoy_converges() {
    let mut stack = Stack::start();
    let port = stack.cp.port;
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let failed = Arc::new(Mutex::new(0u32));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let acked = acked.clone();
            let failed = failed.clone();
            thread::spawn(move || {
                let auth = format!("Bearer {ADMIN_TOKEN}");
                for i in 0.. {
                    let (path, user, sid) = if i % 3 == 2 {
                        let sid = format!("s-{w}-{i}");
                        (
                            format!("/v1/tenants/acme/sessions/{sid}/revoke"),
                            None,
                            Some(sid),
                        )
                    } else {
                        let user = format!("burst-{w}-{i}");
                        (
                            format!("/v1/tenants/acme/users/{user}/logout"),
                            Some(user),
                            None,
                        )
                    };
                    let r = http::request(
                        "127.0.0.1",
                        port,
                        "POST",
                        &path,
                        &[
                            ("authorization", auth.as_bytes()),
                            ("content-type", b"application/json"),
                        ],
                        br#"{"reason":"burst"}"#,
                    );
                    match r {
                        Ok(r) if r.status == 200 => {
                            let v: Value = r.json();
                            acked.lock().unwrap().push(Acked {
                                path,
                                user,
                                sid,
                                epoch_ms: v["epoch_ms"].as_u64().unwrap(),
                                version: v["version"].as_u64().unwrap(),
                            });
                        }
                        // The kill: connection refused or reset, or a half-written answer.
                        _ => {
                            *failed.lock().unwrap() += 1;
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    // Let the burst run, then SIGKILL in the middle of it.
    wait_for(
        "a few acknowledged logouts",
        Duration::from_secs(30),
        || (acked.lock().unwrap().len() >= 40).then_some(()),
    );
    stack.cp.proc.kill();
    for w in writers {
        w.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert_eq!(*failed.lock().unwrap(), 4, "every writer saw the kill");
    println!(
        "burst: {} logouts answered 200 before the SIGKILL",
        acked.len()
    );

    stack.cp.restart();
    let snapshot = stack.cp.snapshot();
    let changes = snapshot["changes"].as_array().unwrap();
    for a in &acked {
        let present = changes.iter().any(|c| {
            c["tenant"] == "acme"
                && match (&a.user, &a.sid) {
                    (Some(u), _) => c["scope"] == "user" && c["user"] == u.as_str(),
                    (_, Some(s)) => c["scope"] == "session" && c["sid"] == s.as_str(),
                    _ => false,
                }
                && c["epoch_ms"].as_u64() == Some(a.epoch_ms)
        });
        assert!(
            present,
            "acknowledged {} (v{}) lost after SIGKILL",
            a.path, a.version
        );
    }
    let top = acked.iter().map(|a| a.version).max().unwrap();
    assert!(snapshot["version"].as_u64().unwrap() >= top);

    // Envoy converges on all of them: every acknowledged target's token is denied.
    stack.wait_applied(top);
    for a in &acked {
        let t = match (&a.user, &a.sid) {
            (Some(u), _) => stack.token(u, "acme", json!({})),
            (_, Some(s)) => stack.token("someone", "acme", json!({"sid": s})),
            _ => unreachable!(),
        };
        let r = stack.get_with_token("/api/orders", &t);
        assert_eq!(r.status, 401, "{}: {}", a.path, r.text());
        assert_eq!(r.json()["error"], "session_revoked");
    }
    // Not a blanket deny: an untouched user passes.
    let t = stack.token("untouched", "acme", json!({}));
    assert_eq!(stack.get_with_token("/api/orders", &t).status, 200);
}

#[test]
fn restarted_envoy_enforces_only_once_synced_with_on_stale_deny() {
    let mut stack = Stack::start_with(Options {
        link_proxy: true,
        ..Options::default()
    });
    let t42 = stack.token("42", "acme", json!({}));
    let t43 = stack.token("43", "acme", json!({}));
    let r = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    stack.time_until_status(&t42, 401, Duration::from_secs(5));

    // Envoy comes back while it cannot reach the control plane: it has no state, so
    // it answers 503 for everyone — never 200 for the logged-out user.
    stack.link.as_ref().unwrap().cut();
    stack.restart_envoy(1);
    for t in [&t42, &t43] {
        for _ in 0..5 {
            let r = stack.get_with_token("/api/orders", t);
            assert_eq!(r.status, 503, "{}", r.text());
            assert_eq!(r.json()["error"], "state_unavailable");
        }
    }
    // Still so after its sync attempts have failed.
    wait_for("Envoy's sync attempts", Duration::from_secs(10), || {
        (stack.link.as_ref().unwrap().refused() >= 2).then_some(())
    });
    let r503 = stack.get_with_token("/api/orders", &t42);
    assert_eq!(r503.status, 503, "{}", r503.text());
    assert_eq!(stack.stat("wasmcustom.epochgate.sync_ok").unwrap_or(0), 0);

    stack.link.as_ref().unwrap().restore();
    stack.wait_applied(r.json()["version"].as_u64().unwrap());
    assert_eq!(stack.get_with_token("/api/orders", &t42).status, 401);
    assert_eq!(stack.get_with_token("/api/orders", &t43).status, 200);
    assert!(!stack.envoy.log().contains("panicked"));
}

#[test]
fn restarted_envoy_with_on_stale_allow_lets_only_the_unknown_pass_until_synced() {
    let mut stack = Stack::start_with(Options {
        link_proxy: true,
        filter: json!({"on_stale": "allow"}),
        ..Options::default()
    });
    let t42 = stack.token("42", "acme", json!({}));
    let r = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    stack.time_until_status(&t42, 401, Duration::from_secs(5));

    stack.link.as_ref().unwrap().cut();
    stack.restart_envoy(1);
    // The policy says availability first: a new Envoy holds no revocation yet, so the
    // signature is checked and what it cannot know passes.
    let r2 = stack.get_with_token("/api/orders", &t42);
    assert_eq!(r2.status, 200, "{}", r2.text());
    assert_eq!(stack.get_with_token("/api/orders", "x.y.z").status, 401);
    assert!(stack.stat("wasmcustom.epochgate.allowed_stale").unwrap() > 0);

    stack.link.as_ref().unwrap().restore();
    stack.wait_applied(r.json()["version"].as_u64().unwrap());
    assert_eq!(stack.get_with_token("/api/orders", &t42).status, 401);
}

#[test]
fn cut_link_keeps_the_last_state_state_age_grows_and_it_recovers() {
    let stack = Stack::start_with(Options {
        link_proxy: true,
        ..Options::default()
    });
    let link = stack.link.as_ref().unwrap();
    let t42 = stack.token("42", "acme", json!({}));
    let t43 = stack.token("43", "acme", json!({}));
    let t44 = stack.token("44", "acme", json!({}));
    stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    stack.time_until_status(&t42, 401, Duration::from_secs(5));
    let failed_before = stack.stat("wasmcustom.epochgate.sync_failed").unwrap_or(0);

    link.cut();
    let cut_at = Instant::now();
    // A logout the edge cannot hear of while the link is down.
    let r = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/44/logout", "");
    assert_eq!(r.status, 200);
    let v44 = r.json()["version"].as_u64().unwrap();

    let age = |stack: &Stack| stack.stat("wasmcustom.epochgate.state_age_ms").unwrap_or(0);
    let first = wait_for("state age above 1 s", Duration::from_secs(20), || {
        let a = age(&stack);
        (a >= 1000).then_some(a)
    });
    thread::sleep(Duration::from_millis(1500));
    let second = age(&stack);
    assert!(
        second > first,
        "state age did not grow: {first} then {second} ms"
    );
    assert!(stack.stat("wasmcustom.epochgate.sync_failed").unwrap() > failed_before);
    // The last state is kept: 42 stays out, 43 passes, 44 (not heard of) still passes.
    assert_eq!(stack.get_with_token("/api/orders", &t42).status, 401);
    assert_eq!(stack.get_with_token("/api/orders", &t43).status, 200);
    assert_eq!(stack.get_with_token("/api/orders", &t44).status, 200);
    println!(
        "link cut for {} ms: state age {first} → {second} ms, last state kept",
        cut_at.elapsed().as_millis()
    );

    link.restore();
    let restored = Instant::now();
    stack.wait_applied(v44);
    let took = stack.time_until_status(&t44, 401, Duration::from_secs(10));
    println!(
        "after the link returned: applied in {} ms, 44 denied {} ms later",
        restored.elapsed().as_millis(),
        took.as_millis()
    );
    wait_for(
        "state age to drop after the link returned",
        Duration::from_secs(10),
        || (age(&stack) < second).then_some(()),
    );
    assert_eq!(stack.get_with_token("/api/orders", &t43).status, 200);
}
