//! Streams through the Worker end at logout (issue 14 item 6), as Envoy's do
//! (`production.rs`): a server-sent-events response the Worker proxies is cut once the
//! isolate's own sync brings its session's logout, with no other request to drive the
//! sync; another user's stream keeps flowing.
//!
//! Build first: `make build-worker` (and `cargo build -p epochgate-control-plane`).

use std::time::{Duration, Instant};

use epochgate_tests::http::Streaming;
use epochgate_tests::worker::{WorkerOptions, WorkerStack};
use epochgate_tests::{wait_for, Edge, Options, Reply};
use serde_json::json;

fn open(stack: &WorkerStack, user: &str) -> Streaming {
    stack.open_events(&stack.token(user, "acme", json!({})))
}

#[test]
fn worker_open_streams_end_at_logout_and_others_go_on() {
    streams_end_at_logout(false);
}

/// With the relay (the deployment's Durable Object): the stream's watch asks it too, so
/// the logout arrives without the isolate's own (rarer, `relay_refresh_ms`) syncs.
#[test]
fn worker_relayed_open_streams_end_at_logout_and_others_go_on() {
    streams_end_at_logout(true);
}

fn streams_end_at_logout(relay: bool) {
    let mut stack = WorkerStack::start_with(WorkerOptions {
        edge: Options {
            upstream: Reply::Sse {
                interval_ms: 100,
                events: 600,
            },
            ..Options::default()
        },
        relay,
        isolates: if relay { 2 } else { 1 },
        ..WorkerOptions::default()
    });
    if relay {
        // Not the isolate hosting the object; traffic first, so that it has heard from
        // the object (in sync) and its own syncs have become rare.
        stack.port = *stack.ports.last().unwrap();
        // (Without a token: the upstream here streams every answer.)
        for _ in 0..30 {
            assert_eq!(stack.get("/api/orders", &[]).status, 401);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let (mut s42, mut s43) = (open(&stack, "42"), open(&stack, "43"));
    wait_for("events on both streams", Duration::from_secs(5), || {
        (s42.poll().unwrap() && s43.poll().unwrap() && s42.events() >= 3 && s43.events() >= 3)
            .then_some(())
    });
    let r = stack
        .cp
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let logout = Instant::now();
    // No other request reaches the Worker meanwhile: the open streams keep the isolate
    // syncing. Generous: the refresh interval plus a few seconds (with the relay, well
    // under its 10 s `relay_refresh_ms`).
    let deadline = Duration::from_millis(stack.refresh_ms) + Duration::from_secs(5);
    wait_for("42's stream to end", deadline, || {
        (!s42.poll().unwrap()).then_some(())
    });
    let stopped = s42.last_data.saturating_duration_since(logout);
    println!(
        "worker stream (relay: {relay}) stopped {} ms after the logout (closed after {} ms, refresh every {} ms)",
        stopped.as_millis(),
        logout.elapsed().as_millis(),
        stack.refresh_ms
    );
    assert!(
        stopped < deadline,
        "data flowed for {stopped:?} after the logout"
    );
    assert!(
        !s42.received.ends_with(b"\r\n0\r\n\r\n"),
        "the stream was cut, not finished"
    );
    let before = s43.events();
    wait_for("43's stream to go on", Duration::from_secs(3), || {
        (s43.poll().unwrap() && s43.events() >= before + 5).then_some(())
    });
    assert!(
        stack.workerd.log().contains("stream ended: session over"),
        "the Worker logs the cut"
    );
}
