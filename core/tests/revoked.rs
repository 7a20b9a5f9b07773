//! Revoked stays revoked (DESIGN.md, Invariant 1), as pure rules through the sync client
//! every edge runs: what an edge holds only moves forward — no schedule, snapshot of a
//! lower version, new stream or page boundary lowers it — and an actor's tenant schedule
//! and impossible dates are judged right.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use epochgate_core::claims::{Actor, Identity};
use epochgate_core::decision::parse_rfc3339;
use epochgate_core::state::{check_revocation, RevocationState, Target};
use epochgate_core::sync::client::{ClientConfig, Event, SyncClient};
use epochgate_core::sync::{page_cursor, Change, SyncResponse};

const NOW: u64 = 1_800_000_000_000;

fn ident(tenant: &str, user: &str, start_s: i64, actors: Vec<Actor>) -> Identity {
    Identity {
        user: user.into(),
        tenant: tenant.into(),
        session: None,
        actors,
        issued_at: Some(start_s),
        session_start: start_s,
        expires_at: 0.0,
    }
}

fn change(target: Target, epoch_ms: Option<u64>) -> Change {
    Change { target, epoch_ms }
}

fn user(u: &str) -> Target {
    Target::User {
        tenant: "acme".into(),
        user: u.into(),
    }
}

fn answer(stream: &str, snapshot: bool, version: u64, changes: Vec<Change>) -> SyncResponse {
    SyncResponse {
        stream: stream.into(),
        version,
        snapshot,
        changes,
        max_session_lifetime_s: 86_400,
        next: None,
        tag: Some(format!("{stream}-{version}")),
    }
}

fn client(page_limit: u32) -> SyncClient {
    SyncClient::new(
        ClientConfig {
            edge_id: "e".into(),
            wait_s: 20,
            page_limit,
            min_interval_ms: 0,
            retry_min_ms: 100,
            retry_max_ms: 1000,
            call_timeout_ms: 25_000,
        },
        7,
    )
}

/// Sends the client's next request and answers it with `resp`.
fn feed(c: &mut SyncClient, now: u64, resp: &SyncResponse) -> Event {
    let t = c.poll_transmit(now).expect("a request is due");
    let body = serde_json::to_vec(resp).unwrap();
    c.handle_answer(t.id, now, Ok((200, &body))).event
}

fn revoked(c: &SyncClient, token: &Identity, now: u64) -> bool {
    check_revocation(c.state(), token, now, 0).is_err()
}

#[test]
fn a_passed_schedule_is_never_lowered_by_the_next_one() {
    let mut c = client(0);
    let at = NOW - 60_000;
    let acme = Target::ScheduledTenant {
        tenant: "acme".into(),
    };
    feed(
        &mut c,
        NOW - 120_000,
        &answer("s", true, 1, vec![change(acme.clone(), Some(at))]),
    );
    let token = ident("acme", "42", (at / 1000 - 600) as i64, vec![]);
    assert!(revoked(&c, &token, NOW));
    // The next window, tomorrow (as a control plane that does not fold would send it),
    // and then its cancellation.
    feed(
        &mut c,
        NOW,
        &answer(
            "s",
            false,
            2,
            vec![change(acme.clone(), Some(NOW + 86_400_000))],
        ),
    );
    assert!(
        revoked(&c, &token, NOW),
        "a logout that happened came undone"
    );
    feed(
        &mut c,
        NOW,
        &answer("s", false, 3, vec![change(acme, None)]),
    );
    assert!(revoked(&c, &token, NOW), "cancelling the next one undid it");
}

#[test]
fn a_snapshot_below_the_edges_version_never_lowers_what_it_holds() {
    let mut c = client(0);
    feed(
        &mut c,
        NOW,
        &answer("s", true, 10, vec![change(user("42"), Some(NOW - 5_000))]),
    );
    // A restored store: same stream, version 5, without 42's logout.
    let ev = feed(
        &mut c,
        NOW,
        &answer("s", true, 5, vec![change(user("43"), Some(NOW - 9_000))]),
    );
    assert!(matches!(ev, Event::Applied { kept: 1, .. }), "{ev:?}");
    let token = ident("acme", "42", (NOW / 1000 - 600) as i64, vec![]);
    assert!(
        revoked(&c, &token, NOW),
        "the restore dropped a logout the edge held"
    );
    // A new stream merges too.
    let ev = feed(&mut c, NOW, &answer("s2", true, 1, vec![]));
    assert!(matches!(ev, Event::Applied { kept: 2, .. }), "{ev:?}");
    assert!(revoked(&c, &token, NOW));
    assert_eq!(c.status().unwrap().stream, "s2");
}

#[test]
fn a_page_boundary_never_clears_an_entry_changed_while_paging() {
    let mut c = client(1);
    feed(
        &mut c,
        NOW,
        &answer("s", true, 3, vec![change(user("42"), Some(NOW - 5))]),
    );
    // 42 changed after snapshot version 9: it is in none of its pages.
    let mut page1 = answer("s", true, 9, vec![change(user("40"), Some(NOW - 6))]);
    page1.next = Some(page_cursor(&user("40")));
    feed(&mut c, NOW, &page1);
    let t = c.poll_transmit(NOW).unwrap();
    assert!(
        t.path.contains("&snapshot=9&after=u%2Facme%2F40"),
        "{}",
        t.path
    );
    let body = serde_json::to_vec(&answer(
        "s",
        true,
        9,
        vec![change(user("41"), Some(NOW - 7))],
    ))
    .unwrap();
    let out = c.handle_answer(t.id, NOW, Ok((200, &body)));
    assert!(
        out.writes.iter().all(|w| w.epoch_ms.is_some()),
        "the last page cleared an entry: {:?}",
        out.writes
    );
    let token = ident("acme", "42", 0, vec![]);
    assert!(revoked(&c, &token, NOW));
}

#[test]
fn an_actors_tenant_schedule_ends_its_impersonation_tokens() {
    let mut s = RevocationState::new();
    s.set(
        &Target::ScheduledTenant {
            tenant: "support".into(),
        },
        Some(NOW - 1_000),
    );
    let token = ident(
        "acme",
        "42",
        (NOW / 1000 - 600) as i64,
        vec![Actor {
            tenant: "support".into(),
            user: "agent-7".into(),
        }],
    );
    assert!(check_revocation(&s, &token, NOW, 0).is_err());
}

#[test]
fn impossible_dates_are_refused() {
    for bad in [
        "2026-11-31T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2026-04-31T12:00:00Z",
        "2026-06-31T12:00:00+02:00",
    ] {
        assert_eq!(parse_rfc3339(bad), None, "{bad}");
    }
    for good in [
        "2024-02-29T00:00:00Z",
        "2000-02-29T00:00:00Z",
        "2026-12-31T23:59:59Z",
    ] {
        assert!(parse_rfc3339(good).is_some(), "{good}");
    }
}
