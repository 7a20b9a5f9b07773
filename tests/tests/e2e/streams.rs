//! Streams end at logout, on both edges: a server-sent-events response the edge proxies
//! is cut once its session's logout reaches the edge (Envoy's sync VM; the isolate's own
//! sync, with no other request to drive it, alone and relayed), and another user's
//! stream keeps flowing.
//!
//! Build first: `make build build-worker`.

use std::time::{Duration, Instant};

use epochgate_tests::worker::{WorkerOptions, WorkerStack};
use epochgate_tests::{token, wait_for, Edge, Options, Reply, Stack};
use serde_json::json;

fn streaming() -> Options {
    Options {
        upstream: Reply::Sse {
            interval_ms: 100,
            events: 600,
        },
        ..Options::default()
    }
}

#[test]
fn open_streams_end_at_logout_and_others_go_on_envoy() {
    open_streams_end_at_logout_and_others_go_on(&Stack::start_with(streaming()));
}

#[test]
fn open_streams_end_at_logout_and_others_go_on_worker() {
    open_streams_end_at_logout_and_others_go_on(&WorkerStack::start_with(WorkerOptions {
        edge: streaming(),
        ..WorkerOptions::default()
    }));
}

/// With the relay (the deployment's Durable Object): the stream's watch asks it too, so
/// the logout arrives without the isolate's own (rarer, `relay_refresh_ms`) syncs.
#[test]
fn open_streams_end_at_logout_and_others_go_on_worker_relay() {
    let mut stack = WorkerStack::start_with(WorkerOptions {
        edge: streaming(),
        relay: true,
        isolates: 2,
        ..WorkerOptions::default()
    });
    // Not the isolate hosting the object; traffic first, so that it has heard from the
    // object (in sync) and its own syncs have become rare.
    stack.port = *stack.ports.last().unwrap();
    // (Without a token: the upstream here streams every answer.)
    for _ in 0..30 {
        assert_eq!(stack.get("/api/orders", &[]).status, 401);
        std::thread::sleep(Duration::from_millis(50));
    }
    open_streams_end_at_logout_and_others_go_on(&stack);
}

fn open_streams_end_at_logout_and_others_go_on(edge: &dyn Edge) {
    let open = |user: &str| edge.open_events(&token(user, "acme", json!({})));
    let (mut s42, mut s43) = (open("42"), open("43"));
    wait_for("events on both streams", Duration::from_secs(5), || {
        (s42.poll().unwrap() && s43.poll().unwrap() && s42.events() >= 3 && s43.events() >= 3)
            .then_some(())
    });
    let r = edge
        .cp()
        .admin("POST", "/v1/tenants/acme/users/42/logout", "");
    assert_eq!(r.status, 200, "{}", r.text());
    let logout = Instant::now();
    // Envoy resets the stream at once (the connection's FIN may follow after its
    // delayed-close timeout, 1 s), so what counts is when the data stops. No other
    // request reaches the edge meanwhile: a Worker's open streams keep its isolate
    // syncing.
    let deadline = edge.propagation_deadline();
    wait_for(
        "42's stream to end",
        deadline + Duration::from_secs(4),
        || (!s42.poll().unwrap()).then_some(()),
    );
    let stopped = s42.last_data.saturating_duration_since(logout);
    println!(
        "{} stream stopped {} ms after the logout (closed after {} ms)",
        edge.name(),
        stopped.as_millis(),
        logout.elapsed().as_millis()
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
        edge.streams_ended(),
        "the {} counts or logs the cut",
        edge.name()
    );
}
