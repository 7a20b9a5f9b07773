//! Revoked stays revoked: no schedule, outage, restore, compaction or paging brings a
//! logged-out session back. Each scenario is written once against [`Edge`] and runs on
//! the real Envoy and on the Worker in a real workerd (they share `core`'s sync client
//! and rules); the stream scenarios are Envoy's (the Worker does not end streams).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use epochgate_core::decision::rfc3339;
use epochgate_tests::http::Streaming;
use epochgate_tests::worker::{WorkerOptions, WorkerStack};
use epochgate_tests::{now_ms, now_s, token, wait_for, Edge, Options, Reply, Stack};
use serde_json::{json, Value};

/// A whole second at least `ahead_s` from now (the rule compares whole seconds).
fn at_in(ahead_s: u64) -> (u64, String) {
    let at_ms = (now_ms() / 1000 + ahead_s) * 1000;
    (at_ms, rfc3339(at_ms))
}

fn admin_ok(edge: &impl Edge, method: &str, path: &str, body: &str) -> Value {
    let r = edge.cp().admin(method, path, body);
    assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
    r.json()
}

fn version_of(answer: &Value) -> u64 {
    answer["version"].as_u64().unwrap()
}

/// Item 1 and 8: a schedule whose time has passed is a logout that happened — a new
/// schedule, for tomorrow, never brings its tokens back (tenant and global); an actor's
/// tenant schedule ends its impersonation tokens; a pending schedule can be cancelled
/// (audited), a passed one cannot.
fn passed_schedules_stay_in_force(edge: &impl Edge) {
    let acme = token("42", "acme", json!({}));
    let globex = token("7", "globex", json!({}));
    let impersonation = token(
        "42",
        "initech",
        json!({"act": {"sub": "agent-7", "tid": "support"}}),
    );
    for t in [&acme, &globex, &impersonation] {
        assert_eq!(edge.get_with_token("/", t).status, 200);
    }
    let (at_ms, at) = at_in(3);
    let body = format!(r#"{{"reason": "maintenance", "at": "{at}"}}"#);
    admin_ok(edge, "POST", "/v1/tenants/acme/logout", &body);
    let v = admin_ok(edge, "POST", "/v1/tenants/support/logout", &body);
    edge.wait_applied(version_of(&v));
    assert_eq!(
        edge.get_with_token("/", &acme)
            .header("epochgate-logout-at"),
        Some(at.as_str())
    );
    wait_for("acme's scheduled logout", Duration::from_secs(10), || {
        (edge.get_with_token("/", &acme).status == 401).then_some(())
    });
    assert!(now_ms() >= at_ms);

    // The next window, tomorrow: acme's tokens from before `at` stay logged out.
    let (_, tomorrow) = at_in(24 * 3600);
    let next = admin_ok(
        edge,
        "POST",
        "/v1/tenants/acme/logout",
        &format!(r#"{{"reason": "next window", "at": "{tomorrow}"}}"#),
    );
    edge.wait_applied(version_of(&next));
    edge.holds_status(
        "a passed tenant schedule after a new one",
        &acme,
        401,
        Some("session_revoked"),
        Duration::from_millis(1500),
    );
    // A login after `at` passes, with tomorrow's notice.
    let fresh = token("43", "acme", json!({"iat": now_s()}));
    let r = edge.get_with_token("/", &fresh);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("epochgate-logout-at"), Some(tomorrow.as_str()));
    // The actor's tenant (support) was logged out at `at`: its impersonation ends.
    assert_eq!(
        edge.get_with_token("/", &impersonation).json()["error"],
        "session_revoked",
    );

    // The same for the global schedule.
    let (_, at2) = at_in(2);
    admin_ok(
        edge,
        "POST",
        "/v1/logout",
        &format!(r#"{{"reason": "everyone", "at": "{at2}"}}"#),
    );
    wait_for(
        "the global scheduled logout",
        Duration::from_secs(10),
        || (edge.get_with_token("/", &globex).status == 401).then_some(()),
    );
    let next = admin_ok(
        edge,
        "POST",
        "/v1/logout",
        &format!(r#"{{"reason": "next window", "at": "{tomorrow}"}}"#),
    );
    edge.wait_applied(version_of(&next));
    edge.holds_status(
        "a passed global schedule after a new one",
        &globex,
        401,
        Some("session_revoked"),
        Duration::from_millis(1500),
    );

    // A passed schedule cannot be cancelled; pending ones can, and the passed ones they
    // replaced stay in force.
    let r = edge
        .cp()
        .admin("DELETE", "/v1/tenants/support/scheduled-logout", "");
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"], "schedule_passed");
    admin_ok(edge, "DELETE", "/v1/tenants/acme/scheduled-logout", "");
    let c = admin_ok(edge, "DELETE", "/v1/scheduled-logout", "");
    edge.wait_applied(version_of(&c));
    for t in [&acme, &globex, &impersonation] {
        assert_eq!(edge.get_with_token("/", t).status, 401);
    }
    let fresh = token("44", "acme", json!({"iat": now_s()}));
    let r = edge.get_with_token("/", &fresh);
    assert_eq!((r.status, r.header("epochgate-logout-at")), (200, None));
    // A cancelled schedule never applies.
    let umbrella = token("9", "umbrella", json!({"iat": now_s()}));
    let (_, at3) = at_in(2);
    admin_ok(
        edge,
        "POST",
        "/v1/tenants/umbrella/logout",
        &format!(r#"{{"at": "{at3}"}}"#),
    );
    let c = admin_ok(edge, "DELETE", "/v1/tenants/umbrella/scheduled-logout", "");
    edge.wait_applied(version_of(&c));
    std::thread::sleep(Duration::from_millis(3000));
    let r = edge.get_with_token("/", &umbrella);
    assert_eq!((r.status, r.header("epochgate-logout-at")), (200, None));
    // Audited: the two cancels, and the refused one.
    let audit = |outcome: &str| {
        let q = format!("/v1/audit?action=cancel_scheduled_logout_tenant&outcome={outcome}");
        edge.cp().admin("GET", &q, "").json()["entries"]
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!((audit("ok"), audit("denied")), (2, 1));
}

#[test]
fn envoy_passed_schedules_stay_in_force() {
    passed_schedules_stay_in_force(&Stack::start());
}

#[test]
fn worker_passed_schedules_stay_in_force() {
    passed_schedules_stay_in_force(&WorkerStack::start());
}

/// The control plane's horizon for these scenarios: entries go 4 s after their logout.
fn short_lifetime() -> Vec<String> {
    ["--max-session-lifetime", "4", "--compact-interval", "1"]
        .map(String::from)
        .to_vec()
}

/// Item 2: once the control plane has compacted a logout away, a token of that login
/// (refreshed: a new `iat`, the old `auth_time`) is `session_expired`, never 200.
fn compaction_never_brings_a_login_back(edge: &impl Edge) {
    let login = now_s();
    let first = token("42", "acme", json!({"iat": login, "auth_time": login}));
    assert_eq!(edge.get_with_token("/", &first).status, 200);
    admin_ok(edge, "POST", "/v1/tenants/acme/users/42/logout", "");
    edge.time_until_status(&first, 401, Duration::from_secs(5));
    wait_for("the entry to be compacted", Duration::from_secs(20), || {
        edge.cp().snapshot()["changes"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    // Give the removal time to reach the edge.
    let removal = edge.cp().edges()["version"].as_u64().unwrap();
    edge.wait_applied(removal);
    let refreshed = token("42", "acme", json!({"iat": now_s(), "auth_time": login}));
    edge.holds_status(
        "a refresh of a compacted login",
        &refreshed,
        401,
        Some("session_expired"),
        Duration::from_millis(1000),
    );
    let fresh = token("42", "acme", json!({"iat": now_s()}));
    assert_eq!(edge.get_with_token("/", &fresh).status, 200);
    assert_eq!(edge.cp().snapshot()["max_session_lifetime_s"], 4);
}

#[test]
fn envoy_compaction_never_brings_a_login_back() {
    compaction_never_brings_a_login_back(&Stack::start_with(Options {
        control_plane_args: short_lifetime(),
        ..Options::default()
    }));
}

#[test]
fn worker_compaction_never_brings_a_login_back() {
    compaction_never_brings_a_login_back(&WorkerStack::start_with(WorkerOptions {
        edge: Options {
            control_plane_args: short_lifetime(),
            ..Options::default()
        },
        ..WorkerOptions::default()
    }));
}

/// Item 3: with `on_stale: allow`, a state older than `max_staleness_s` still enforces
/// every revocation it holds; only what it cannot know passes.
fn stale_state_keeps_every_revocation_it_holds(edge: &mut impl Edge) {
    let t42 = token("42", "acme", json!({}));
    let t43 = token("43", "acme", json!({}));
    admin_ok(edge, "POST", "/v1/tenants/acme/users/42/logout", "");
    edge.time_until_status(&t42, 401, Duration::from_secs(5));
    assert_eq!(edge.get_with_token("/", &t43).status, 200);
    edge.cp_mut().proc.kill();
    // Past max_staleness_s (2 s) the state is stale.
    wait_for("the stale state", Duration::from_secs(10), || {
        let _ = edge.get_with_token("/", &t43);
        edge.log()
            .contains("revocation state is stale")
            .then_some(())
    });
    edge.holds_status(
        "a held logout while stale",
        &t42,
        401,
        Some("session_revoked"),
        Duration::from_millis(1500),
    );
    assert_eq!(edge.get_with_token("/", &t43).status, 200, "others pass");
    assert_eq!(
        edge.get_with_token("/", "x.y.z").status,
        401,
        "signatures still checked"
    );
    edge.cp_mut().restart();
    assert_eq!(edge.get_with_token("/", &t42).status, 401);
}

#[test]
fn envoy_stale_state_keeps_every_revocation_it_holds() {
    let mut stack = Stack::start_with(Options {
        max_staleness_s: 2,
        sync: json!({"wait_s": 1}),
        filter: json!({"on_stale": "allow"}),
        ..Options::default()
    });
    stale_state_keeps_every_revocation_it_holds(&mut stack);
    assert!(stack.stat("wasmcustom.epochgate.allowed_stale").unwrap() > 0);
}

#[test]
fn worker_stale_state_keeps_every_revocation_it_holds() {
    stale_state_keeps_every_revocation_it_holds(&mut WorkerStack::start_with(WorkerOptions {
        edge: Options {
            max_staleness_s: 2,
            filter: json!({"on_stale": "allow"}),
            ..Options::default()
        },
        ..WorkerOptions::default()
    }));
}

/// Item 5: a restore from a backup (or a failover to a replica that lagged) rolls the
/// store back below what the edges applied. The edges keep every logout they hold
/// (they merge, never replace), the control plane notices (a new stream, a log line,
/// `GET /v1/edges`), and writes made after a restore — even ones that reach the
/// version number an edge already holds — reach the edges.
///
/// `hold_off(true)` keeps the edge from syncing while the restored store is written to
/// (Envoy: the link is cut; the Worker: no requests, so no syncs), `hold_off(false)`
/// lets it sync again.
fn restore_scenario(edge: &mut impl Edge, hold_off: impl Fn(bool)) {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup.db");
    admin_ok(edge, "POST", "/v1/tenants/acme/users/1/logout", "");
    edge.cp_mut().backup(&backup);
    let t42 = token("42", "acme", json!({}));
    let out = admin_ok(
        edge,
        "POST",
        "/v1/tenants/acme/users/42/logout",
        r#"{"reason": "lost phone"}"#,
    );
    edge.wait_applied(version_of(&out));
    assert_eq!(edge.get_with_token("/", &t42).status, 401);
    let stream = edge.cp().edges()["stream"].clone();

    // The restore: the store is back before 42's logout.
    edge.cp_mut().restore(&backup);
    edge.holds_status(
        "a logout the restored store lost",
        &t42,
        401,
        Some("session_revoked"),
        Duration::from_millis(2000),
    );
    let edges = edge.cp().edges();
    assert_ne!(
        edges["stream"], stream,
        "a new stream after the rollback: {edges}"
    );
    let rollback = &edges["rollback"];
    assert_eq!(rollback["previous_stream"], stream, "{edges}");
    assert!(
        rollback["reason"].as_str().unwrap().contains("ahead of"),
        "{edges}"
    );
    assert!(
        edge.cp().log().contains("rolled back"),
        "a log line says what happened"
    );

    // The race: restored again, and written to up to the version the edge holds before
    // the edge hears of it. The new logout (44) must reach the edge.
    let t43 = token("43", "acme", json!({}));
    let t44 = token("44", "acme", json!({}));
    edge.cp_mut().backup(&backup);
    let held = admin_ok(edge, "POST", "/v1/tenants/acme/users/43/logout", "");
    edge.wait_applied(version_of(&held));
    assert_eq!(edge.get_with_token("/", &t43).status, 401);
    hold_off(true);
    edge.cp_mut().restore(&backup);
    let again = admin_ok(edge, "POST", "/v1/tenants/acme/users/44/logout", "");
    assert_eq!(
        version_of(&again),
        version_of(&held),
        "the restored store reached the edge's version with other content"
    );
    hold_off(false);
    let took = edge.time_until_status(&t44, 401, Duration::from_secs(10));
    println!(
        "{}: a logout written to a restored store at the version the edge held arrived after {} ms",
        edge.name(),
        took.as_millis()
    );
    assert_eq!(
        edge.get_with_token("/", &t43).status,
        401,
        "43 is still held"
    );
    assert_eq!(
        edge.get_with_token("/", &t42).status,
        401,
        "42 is still held"
    );
}

#[test]
fn envoy_a_restore_never_brings_a_logout_back() {
    let mut stack = Stack::start_with(Options {
        link_proxy: true,
        ..Options::default()
    });
    let link = stack.link.take().unwrap();
    restore_scenario(
        &mut stack,
        |cut| {
            if cut {
                link.cut()
            } else {
                link.restore()
            }
        },
    );
}

#[test]
fn worker_a_restore_never_brings_a_logout_back() {
    // An isolate syncs only while it serves requests: sending none holds it off.
    restore_scenario(&mut WorkerStack::start(), |_| {});
}

/// Item 6: logouts land while the edge takes snapshots in pages of 2 entries; the
/// affected users' old tokens never pass, not even for a moment.
///
/// An edge falls behind by more than a page, and so takes a paged snapshot, when it has
/// not synced for a while: `fall_behind(true)` keeps it from syncing, `(false)` lets it
/// go on (Envoy: the link is cut for a moment every half second; the Worker syncs at
/// most every `refresh_ms`, and logouts land faster than that).
fn paging_never_drops_an_entry(edge: &(impl Edge + Sync), fall_behind: impl Fn(bool) + Sync) {
    for i in 0..20 {
        admin_ok(
            edge,
            "POST",
            &format!("/v1/tenants/acme/users/filler-{i}/logout"),
            "",
        );
    }
    let victims = ["victim-a", "victim-b"];
    let tokens: Vec<String> = victims
        .iter()
        .map(|v| token(v, "acme", json!({})))
        .collect();
    let mut last = 0;
    for v in victims {
        last = version_of(&admin_ok(
            edge,
            "POST",
            &format!("/v1/tenants/acme/users/{v}/logout"),
            "",
        ));
    }
    edge.wait_applied(last);
    let stop = AtomicBool::new(false);
    let passed = AtomicU32::new(0);
    let checked = AtomicU32::new(0);
    let writes = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut n = 0u32;
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(4) {
                // The victims again (their rows move past the snapshot's version), and
                // new users (so every delta outgrows a page).
                let path = match n % 3 {
                    0 => "/v1/tenants/acme/users/victim-a/logout".to_string(),
                    1 => "/v1/tenants/acme/users/victim-b/logout".to_string(),
                    _ => format!("/v1/tenants/acme/users/new-{n}/logout"),
                };
                admin_ok(edge, "POST", &path, "");
                n += 1;
                match n % 100 {
                    50 => fall_behind(true),
                    80 => fall_behind(false),
                    _ => {}
                }
            }
            fall_behind(false);
            stop.store(true, Ordering::SeqCst);
            n
        });
        for _ in 0..2 {
            scope.spawn(|| {
                while !stop.load(Ordering::SeqCst) {
                    for t in &tokens {
                        let r = edge.get_with_token("/", t);
                        checked.fetch_add(1, Ordering::SeqCst);
                        if r.status != 401 {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            });
        }
        writer.join().unwrap()
    });
    println!(
        "{}: {writes} logouts during paged snapshots; {} checks of the victims, {} not denied",
        edge.name(),
        checked.load(Ordering::SeqCst),
        passed.load(Ordering::SeqCst)
    );
    assert!(checked.load(Ordering::SeqCst) > 50, "the checks ran");
    let snapshots = edge.log().matches("sync: applied snapshot").count();
    println!("{}: {snapshots} paged snapshots applied", edge.name());
    assert!(snapshots >= 3, "the edge took paged snapshots meanwhile");
    assert_eq!(
        passed.load(Ordering::SeqCst),
        0,
        "a logged-out user passed while a paged snapshot was applied"
    );
}

#[test]
fn envoy_paging_never_drops_an_entry() {
    let mut stack = Stack::start_with(Options {
        sync: json!({"snapshot_page": 2}),
        link_proxy: true,
        ..Options::default()
    });
    let link = stack.link.take().unwrap();
    paging_never_drops_an_entry(&stack, |cut| if cut { link.cut() } else { link.restore() });
}

#[test]
fn worker_paging_never_drops_an_entry() {
    paging_never_drops_an_entry(
        &WorkerStack::start_with(WorkerOptions {
            worker: json!({"snapshot_page": 2, "refresh_ms": 50}),
            ..WorkerOptions::default()
        }),
        |_| {},
    );
}

/// Item 7: a stream opened before a scheduled logout ends when its `at` passes; a long
/// download (not a stream by its headers) ends at a logout too.
#[test]
fn envoy_streams_end_at_a_scheduled_logout_and_downloads_at_a_logout() {
    let stack = Stack::start_with(Options {
        upstream: Reply::Sse {
            interval_ms: 100,
            events: 600,
        },
        ..Options::default()
    });
    let open = |user: &str, tenant: &str, accept: &'static [u8]| {
        let auth = format!("Bearer {}", token(user, tenant, json!({})));
        let s = Streaming::open(
            "127.0.0.1",
            stack.envoy_port,
            "/events",
            &[("authorization", auth.as_bytes()), ("accept", accept)],
        )
        .unwrap();
        assert_eq!(s.status(), Some(200));
        s
    };
    let mut sse = open("42", "acme", b"text/event-stream");
    let mut download = open("7", "globex", b"*/*");
    let mut other = open("8", "globex", b"*/*");
    wait_for("data on every stream", Duration::from_secs(5), || {
        (sse.poll().unwrap()
            && download.poll().unwrap()
            && other.poll().unwrap()
            && sse.events() >= 3
            && download.events() >= 3
            && other.events() >= 3)
            .then_some(())
    });
    let (at_ms, at) = at_in(3);
    let at_instant = Instant::now() + Duration::from_millis(at_ms.saturating_sub(now_ms()));
    let r = stack.cp.admin(
        "POST",
        "/v1/tenants/acme/logout",
        &format!(r#"{{"at": "{at}"}}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    stack
        .cp
        .admin("POST", "/v1/tenants/globex/users/7/logout", "");
    let logout = Instant::now();
    wait_for("the download to end", Duration::from_secs(3), || {
        (!download.poll().unwrap()).then_some(())
    });
    let stopped = download.last_data.saturating_duration_since(logout);
    println!(
        "download stopped {} ms after the logout",
        stopped.as_millis()
    );
    assert!(
        stopped < Duration::from_secs(1),
        "data flowed for {stopped:?}"
    );
    wait_for(
        "the SSE stream to end at `at`",
        Duration::from_secs(8),
        || (!sse.poll().unwrap()).then_some(()),
    );
    let late = sse.last_data.saturating_duration_since(at_instant);
    println!("SSE stream stopped {} ms after `at`", late.as_millis());
    assert!(
        late < Duration::from_secs(1),
        "data flowed {late:?} past `at`"
    );
    assert!(other.poll().unwrap(), "another user's download goes on");
}
