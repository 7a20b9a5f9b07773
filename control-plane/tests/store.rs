//! The `Store` contract. Every test goes through `dyn Store`, so another backend can run
//! the same suite.

use std::sync::Arc;

use epochgate_control_plane::store::{
    self, AuditFilter, CancelOutcome, EdgePosition, EdgeReceipt, ReplayKey, RevokeRequest,
    SessionFilter, SqliteStore, Store,
};
use epochgate_core::sessions::SessionSeen;
use epochgate_core::state::{is_compactable, Target};
use epochgate_core::sync::Change;

use crate::common::{test_store, Backend};

const T0: u64 = 1_800_000_000_000;

fn user(u: &str) -> Target {
    Target::User {
        tenant: "acme".into(),
        user: u.into(),
    }
}

fn req(target: Target, now_ms: u64) -> RevokeRequest {
    RevokeRequest {
        target,
        now_ms,
        at_ms: None,
        actor: "admin".into(),
        reason: None,
        source: None,
        request_id: None,
    }
}

async fn revoke(store: &dyn Store, target: Target, now_ms: u64) -> u64 {
    store.revoke(req(target, now_ms)).await.unwrap().version
}

fn change(target: Target, epoch_ms: Option<u64>) -> Change {
    Change { target, epoch_ms }
}

/// An edge at `since` of `stream`, with `tag` if it kept one.
fn at(since: u64, stream: Option<&str>, tag: Option<&str>) -> EdgePosition {
    EdgePosition {
        since,
        stream: stream.map(str::to_string),
        tag: tag.map(str::to_string),
        edge: "e1".into(),
    }
}

async fn versions_strictly_increase_and_are_announced(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let rx = s.subscribe();
    assert_eq!(*rx.borrow(), 0);
    let mut last = 0;
    for (i, target) in [
        user("42"),
        Target::Global,
        Target::Tenant {
            tenant: "acme".into(),
        },
        Target::Session {
            tenant: "acme".into(),
            sid: "s1".into(),
        },
        user("42"),
    ]
    .into_iter()
    .enumerate()
    {
        let v = revoke(s, target, T0 + i as u64).await;
        assert_eq!(v, last + 1, "one version per write");
        last = v;
        assert_eq!(*rx.borrow(), v, "the watch follows each commit");
    }
    assert_eq!(s.status().await.unwrap().version, 5);
}

async fn concurrent_writes_get_distinct_serial_versions(backend: Backend) {
    let ts = backend.open().await;
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let s = Arc::clone(&ts.store);
        tasks.push(tokio::spawn(async move {
            s.revoke(req(user(&format!("u{i}")), T0))
                .await
                .unwrap()
                .version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=16).collect::<Vec<_>>());
}

async fn epochs_only_move_forward(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let first = s.revoke(req(user("42"), T0 + 2000)).await.unwrap();
    assert_eq!(first.epoch_ms, T0 + 2000);
    // A clock that went back does not undo the later logout…
    let back = s.revoke(req(user("42"), T0 + 1000)).await.unwrap();
    assert_eq!(back.epoch_ms, T0 + 2000);
    assert!(back.version > first.version, "still a new version");
    // …and a later one moves it on.
    let later = s.revoke(req(user("42"), T0 + 3000)).await.unwrap();
    assert_eq!(later.epoch_ms, T0 + 3000);
}

async fn a_session_revocation_stores_its_time(backend: Backend) {
    let ts = backend.open().await;
    let sid = Target::Session {
        tenant: "acme".into(),
        sid: "s-1".into(),
    };
    let done = ts.store.revoke(req(sid.clone(), T0)).await.unwrap();
    assert_eq!(done.epoch_ms, T0);
    let snap = ts.store.sync(0, None).await.unwrap();
    assert_eq!(snap.changes, vec![change(sid, Some(T0))]);
}

async fn delta_and_snapshot_selection(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let stream = s.stream().to_string();
    let v1 = revoke(s, user("1"), T0).await;
    let v2 = revoke(s, user("2"), T0 + 1).await;
    let v3 = revoke(s, user("1"), T0 + 2).await;
    assert_eq!((v1, v2, v3), (1, 2, 3));

    // since 0: a snapshot of the live entries, one per target.
    let snap = s.sync(0, None).await.unwrap();
    assert!(snap.snapshot);
    assert_eq!(snap.stream, stream);
    assert_eq!(snap.version, 3);
    assert_eq!(
        snap.changes,
        vec![
            change(user("2"), Some(T0 + 1)),
            change(user("1"), Some(T0 + 2))
        ]
    );

    // since 1: the rows changed after 1, ordered by version.
    let delta = s.sync(1, Some(stream.clone())).await.unwrap();
    assert!(!delta.snapshot);
    assert_eq!(delta.changes, snap.changes);
    let delta = s.sync(2, None).await.unwrap();
    assert_eq!(delta.changes, vec![change(user("1"), Some(T0 + 2))]);

    // since current: an empty delta at the same version.
    let current = s.sync(3, Some(stream.clone())).await.unwrap();
    assert!(!current.snapshot);
    assert!(current.changes.is_empty());
    assert_eq!(current.version, 3);

    // ahead of the store, or another stream: a snapshot.
    assert!(s.sync(4, None).await.unwrap().snapshot);
    let other = s.sync(3, Some("another-stream".into())).await.unwrap();
    assert!(other.snapshot);
    assert_eq!(other.changes.len(), 2);
}

async fn paged_snapshots_hold_their_version_and_cover_every_entry(backend: Backend) {
    use epochgate_control_plane::store::PageRequest;
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let stream = s.stream().to_string();
    for i in 0..7 {
        revoke(s, user(&format!("u{i}")), T0 + i).await;
    }
    let page = |resume: Option<(u64, Target)>| PageRequest { limit: 3, resume };
    let first = s
        .sync_paged(at(0, None, None), Some(page(None)))
        .await
        .unwrap();
    assert!(first.snapshot);
    assert_eq!((first.version, first.changes.len()), (7, 3));
    let mut seen = first.changes.clone();
    let mut next = first.next.clone();
    // A logout between pages: not in the pages (its version is after the snapshot's);
    // the delta since 7 brings it.
    let v8 = revoke(s, user("u0"), T0 + 100).await;
    let mut pages = 1;
    while let Some(cursor) = next {
        let target = Target::from_key(&cursor).expect("a cursor names a target");
        let p = s
            .sync_paged(at(0, Some(&stream), None), Some(page(Some((7, target)))))
            .await
            .unwrap();
        assert!(p.snapshot);
        assert_eq!(p.version, 7, "every page has the snapshot's version");
        seen.extend(p.changes.clone());
        next = p.next;
        pages += 1;
    }
    assert_eq!(pages, 3);
    let mut users: Vec<String> = seen
        .iter()
        .map(|c| match &c.target {
            Target::User { user, .. } => user.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    users.sort();
    assert_eq!(
        users,
        (0..7).map(|i| format!("u{i}")).collect::<Vec<_>>(),
        "each entry once"
    );
    assert_eq!(
        seen.iter()
            .find(|c| c.target == user("u0"))
            .unwrap()
            .epoch_ms,
        Some(T0),
        "u0 as of version 7"
    );
    let delta = s
        .sync_paged(at(7, Some(&stream), None), Some(page(None)))
        .await
        .unwrap();
    assert!(!delta.snapshot);
    assert_eq!(
        (delta.version, delta.changes.clone()),
        (v8, vec![change(user("u0"), Some(T0 + 100))])
    );
    // A delta larger than a page comes as a paged snapshot instead.
    let big = s
        .sync_paged(at(1, Some(&stream), None), Some(page(None)))
        .await
        .unwrap();
    assert!(big.snapshot && big.next.is_some());
    // A resume point of another stream starts over at the current version.
    let other = s
        .sync_paged(
            at(0, Some("another"), None),
            Some(page(Some((7, user("u1"))))),
        )
        .await
        .unwrap();
    assert_eq!((other.version, other.changes.len()), (v8, 3));
}

async fn compaction_removes_as_a_delta_then_purges_and_raises_the_floor(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let lifetime_s = 10;
    let old = revoke(s, user("old"), T0).await; // v1
    let _new = revoke(s, user("new"), T0 + 5_000).await; // v2

    // Nothing is old enough yet.
    let r = s.compact(T0 + 10_000, lifetime_s).await.unwrap();
    assert_eq!((r.removed, r.purged, r.version), (0, 0, 2));

    // Past the lifetime of the first: it becomes a removal under a new version.
    let r = s.compact(T0 + 10_001, lifetime_s).await.unwrap();
    assert_eq!((r.removed, r.purged, r.version, r.floor), (1, 0, 3, 0));
    assert_eq!(
        *s.subscribe().borrow(),
        3,
        "edges are woken for the removal"
    );
    let delta = s.sync(2, None).await.unwrap();
    assert!(!delta.snapshot);
    assert_eq!(delta.changes, vec![change(user("old"), None)]);
    let snap = s.sync(0, None).await.unwrap();
    assert_eq!(snap.changes, vec![change(user("new"), Some(T0 + 5_000))]);
    // An edge that saw v1 but not v3 still gets the removal (no floor raised yet).
    assert!(!s.sync(old, None).await.unwrap().snapshot);

    // A lifetime after the removal the tombstone is purged and the floor raised to it;
    // the second entry expires in the same run.
    let r = s.compact(T0 + 10_001 + 10_001, lifetime_s).await.unwrap();
    assert_eq!((r.removed, r.purged, r.version, r.floor), (1, 1, 4, 3));
    assert!(s.sync(2, None).await.unwrap().snapshot, "behind the floor");
    let at_floor = s.sync(3, None).await.unwrap();
    assert!(!at_floor.snapshot);
    assert_eq!(at_floor.changes, vec![change(user("new"), None)]);
    let st = s.status().await.unwrap();
    assert_eq!((st.version, st.floor), (4, 3));
}

async fn compaction_matches_the_core_rule(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let lifetime_s = 100;
    revoke(s, user("42"), T0).await;
    let edge = T0 + lifetime_s * 1000;
    assert!(!is_compactable(T0, edge, lifetime_s));
    assert_eq!(s.compact(edge, lifetime_s).await.unwrap().removed, 0);
    assert!(is_compactable(T0, edge + 1, lifetime_s));
    assert_eq!(s.compact(edge + 1, lifetime_s).await.unwrap().removed, 1);
}

#[tokio::test]
async fn reopening_the_file_keeps_everything_and_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/state.db");
    let url = format!("sqlite://{}", path.display());
    let (stream, version) = {
        let s = store::open(&url).await.unwrap();
        revoke(s.as_ref(), user("42"), T0).await;
        s.revoke(RevokeRequest {
            reason: Some("stolen laptop".into()),
            source: Some("10.0.0.1:5555".into()),
            ..req(Target::Global, T0 + 1)
        })
        .await
        .unwrap();
        s.record_edge(EdgeReceipt {
            edge: "envoy-1".into(),
            instance: String::new(),
            credential: None,
            stream: None,
            applied_version: 1,
            now_ms: T0,
            remote_addr: None,
        })
        .await
        .unwrap();
        (s.stream().to_string(), s.status().await.unwrap().version)
    };
    assert!(path.exists(), "the file and its parent dirs are created");

    let s = store::open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(s.stream(), stream, "same file, same stream");
    assert_eq!(*s.subscribe().borrow(), version);
    let snap = s.sync(0, None).await.unwrap();
    assert_eq!(snap.version, version);
    assert_eq!(snap.changes.len(), 2);
    let audit = s.audit(AuditFilter::newest(10)).await.unwrap();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0].reason.as_deref(), Some("stolen laptop"));
    assert_eq!(s.edges().await.unwrap().len(), 1);
    // Versions go on from where they were.
    assert_eq!(revoke(s.as_ref(), user("43"), T0 + 2).await, version + 1);

    let fresh = store::open(dir.path().join("other.db").to_str().unwrap())
        .await
        .unwrap();
    assert_ne!(fresh.stream(), stream, "a new file is a new history");
    assert_eq!(fresh.stream().len(), 32);
    assert_eq!(fresh.status().await.unwrap().version, 0);
    // An edge that applied the empty snapshot of a new store gets an (empty) delta, so
    // its next poll waits instead of spinning on snapshots.
    assert!(fresh.sync(0, None).await.unwrap().snapshot);
    let after_empty = fresh.sync(0, Some(fresh.stream().into())).await.unwrap();
    assert!(!after_empty.snapshot);
    assert!(after_empty.changes.is_empty());
}

#[tokio::test]
async fn unsupported_urls_are_refused_by_name() {
    let err = store::open("mysql://db/epochgate").await.unwrap_err();
    assert!(err.to_string().contains("mysql://db/epochgate"), "{err}");
    assert!(
        err.to_string().contains("postgres://"),
        "names what works: {err}"
    );
    assert!(store::open("sqlite://").await.is_err());
}

#[tokio::test]
async fn the_database_is_in_wal_mode() {
    let ts = test_store().await;
    revoke(ts.store.as_ref(), user("42"), T0).await;
    let conn = rusqlite::Connection::open(ts.dir.path().join("epochgate.db")).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    // And the blocking open works outside a runtime too.
    drop(SqliteStore::open(ts.dir.path().join("epochgate.db")).unwrap());
}

async fn audit_rows_are_newest_first_with_every_field(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    for i in 0..3u64 {
        s.revoke(RevokeRequest {
            target: user(&i.to_string()),
            now_ms: T0 + i,
            at_ms: None,
            actor: format!("admin (op{i})"),
            reason: Some(format!("r{i}")),
            source: Some("127.0.0.1:1".into()),
            request_id: Some(format!("req-{i}")),
        })
        .await
        .unwrap();
    }
    let rows = s.audit(AuditFilter::newest(2)).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].version, 3);
    assert_eq!(rows[0].target, user("2"));
    assert_eq!(rows[0].actor, "admin (op2)");
    assert_eq!(rows[0].action, "logout_user");
    assert_eq!(rows[0].reason.as_deref(), Some("r2"));
    assert_eq!(rows[0].source.as_deref(), Some("127.0.0.1:1"));
    assert_eq!(rows[0].at_ms, T0 + 2);
    assert_eq!(rows[1].version, 2);
}

async fn edge_receipts_upsert(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let receipt = |v, now: u64| EdgeReceipt {
        edge: "envoy/1".into(),
        instance: String::new(),
        credential: None,
        stream: Some("st".into()),
        applied_version: v,
        now_ms: now,
        remote_addr: Some(format!("10.0.0.{v}:1")),
    };
    s.record_edge(receipt(0, T0)).await.unwrap();
    s.record_edge(receipt(7, T0 + 50)).await.unwrap();
    let edges = s.edges().await.unwrap();
    assert_eq!(edges.len(), 1);
    let e = &edges[0];
    assert_eq!(e.id, "envoy/1");
    assert_eq!(e.applied_version, 7);
    assert_eq!((e.first_seen_ms, e.last_seen_ms), (T0, T0 + 50));
    assert_eq!(e.remote_addr.as_deref(), Some("10.0.0.7:1"));
    // Edges gone for longer than the session lifetime are forgotten.
    let r = s.compact(T0 + 50 + 10_001, 10).await.unwrap();
    assert_eq!(r.purged_edges, 1);
    assert!(s.edges().await.unwrap().is_empty());
}

async fn edge_credentials_are_kept_hashed_revoked_with_audit_and_receipts_per_instance(
    backend: Backend,
) {
    use epochgate_control_plane::store::{AuditRecord, NewEdgeCredential};
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let audit = |action: &str, at_ms| AuditRecord {
        at_ms,
        actor: "admin".into(),
        action: action.into(),
        outcome: "ok".into(),
        target: Target::Global,
        reason: Some("edge \"pop\"".into()),
        source: None,
        request_id: None,
    };
    for (id, sha) in [("c1", "aa"), ("c2", "bb")] {
        s.create_edge_credential(
            NewEdgeCredential {
                id: id.into(),
                edge: "pop".into(),
                sha256: sha.into(),
                created_ms: T0,
                created_by: "admin".into(),
            },
            audit("create_edge_token", T0),
        )
        .await
        .unwrap();
    }
    let found = s
        .edge_credential_by_digest("bb".into())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (found.id.as_str(), found.edge.as_str(), found.revoked_ms),
        ("c2", "pop", None)
    );
    assert!(s
        .edge_credential_by_digest("cc".into())
        .await
        .unwrap()
        .is_none());
    let (n, _) = s
        .revoke_edge_credentials("pop".into(), audit("revoke_edge_token", T0 + 5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 2);
    assert!(s
        .revoke_edge_credentials("pop".into(), audit("revoke_edge_token", T0 + 6))
        .await
        .unwrap()
        .is_none());
    let all = s.edge_credentials().await.unwrap();
    assert!(all.iter().all(|c| c.revoked_ms == Some(T0 + 5)), "{all:?}");
    let chain = s.audit_chain().await.unwrap();
    assert_eq!(
        chain.len(),
        3,
        "two creations, one revocation; nothing for a no-op"
    );
    assert!(epochgate_control_plane::audit::verify(&chain, &[]).ok());

    for (instance, v) in [("iso-1", 3), ("iso-2", 4)] {
        s.record_edge(EdgeReceipt {
            edge: "pop".into(),
            instance: instance.into(),
            credential: Some("c1".into()),
            stream: None,
            applied_version: v,
            now_ms: T0,
            remote_addr: None,
        })
        .await
        .unwrap();
    }
    let edges = s.edges().await.unwrap();
    assert_eq!(edges.len(), 2);
    assert_eq!(
        (edges[1].instance.as_str(), edges[1].applied_version),
        ("iso-2", 4)
    );
    assert_eq!(edges[0].credential.as_deref(), Some("c1"));
}

async fn tenant_revocations_hold_the_tenant_and_the_global_entry(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    revoke(s, user("42"), T0).await;
    revoke(
        s,
        Target::User {
            tenant: "globex".into(),
            user: "42".into(),
        },
        T0,
    )
    .await;
    revoke(s, Target::Global, T0 + 1).await;
    revoke(
        s,
        Target::Tenant {
            tenant: "acme".into(),
        },
        T0 + 2,
    )
    .await;
    let entries = s.tenant_revocations("acme".into()).await.unwrap();
    let targets: Vec<_> = entries.iter().map(|e| e.target.clone()).collect();
    assert_eq!(
        targets,
        vec![
            user("42"),
            Target::Global,
            Target::Tenant {
                tenant: "acme".into()
            }
        ]
    );
    assert_eq!(entries[2].version, 4);
}

async fn audit_chain_stays_intact_under_concurrent_writes_and_refusals(backend: Backend) {
    let ts = backend.open().await;
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let s = Arc::clone(&ts.store);
        tasks.push(tokio::spawn(async move {
            if i % 3 == 0 {
                s.record_audit(epochgate_control_plane::store::AuditRecord {
                    at_ms: T0 + i,
                    actor: "key:x".into(),
                    action: "logout_tenant".into(),
                    outcome: "denied".into(),
                    target: Target::Tenant {
                        tenant: "globex".into(),
                    },
                    reason: Some("refused".into()),
                    source: None,
                    request_id: Some(format!("r{i}")),
                })
                .await
                .unwrap();
            } else {
                s.revoke(req(user(&format!("u{i}")), T0 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = ts.store.audit_chain().await.unwrap();
    assert_eq!(chain.len(), 12);
    let v = epochgate_control_plane::audit::verify(&chain, &[]);
    assert!(v.ok(), "{:?}", v.problems);
    let denied = ts
        .store
        .audit(AuditFilter {
            limit: 100,
            outcome: Some("denied".into()),
            tenant: Some("globex".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(denied.len(), 4);
    assert!(ts.store.tenant_seen("globex".into()).await.unwrap());
    assert!(ts.store.tenant_seen("acme".into()).await.unwrap());
    assert!(!ts.store.tenant_seen("initech".into()).await.unwrap());
}

/// Two replicas on one Postgres database writing at once: versions stay serial and in
/// commit order (an edge polling either never skips one), and each replica's long-polls
/// are woken by the other's commits (LISTEN/NOTIFY).
#[tokio::test]
async fn two_postgres_replicas_write_serially_and_wake_each_other() {
    let url = crate::common::pg_url().await;
    let a = store::open(&url).await.unwrap();
    let b = store::open(&url).await.unwrap();
    assert_eq!(a.stream(), b.stream(), "one database, one stream");

    // B's commit wakes A's watch (what A's long-polls wait on).
    let mut on_a = a.subscribe();
    let start = std::time::Instant::now();
    let v = b.revoke(req(user("42"), T0)).await.unwrap().version;
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        on_a.wait_for(|x| *x >= v),
    )
    .await
    .expect("replica A was not woken by B's commit")
    .unwrap();
    println!(
        "replica B commit → replica A woken: {} ms",
        start.elapsed().as_millis()
    );

    // Both replicas writing at once: every version exactly once.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let s = Arc::clone(if i % 2 == 0 { &a } else { &b });
        tasks.push(tokio::spawn(async move {
            s.revoke(req(user(&format!("u{i}")), T0 + i))
                .await
                .unwrap()
                .version
        }));
    }
    // Meanwhile an edge polls replica A with deltas: it must end up with every change.
    let poller = {
        let a = Arc::clone(&a);
        tokio::spawn(async move {
            let stream = a.stream().to_string();
            let mut since = v;
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..2000 {
                let batch = a.sync(since, Some(stream.clone())).await.unwrap();
                assert!(!batch.snapshot);
                for c in batch.changes {
                    seen.insert(c.target);
                }
                since = batch.version;
                if since >= v + 40 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            seen
        })
    };
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, ((v + 1)..=(v + 40)).collect::<Vec<_>>());
    let seen = poller.await.unwrap();
    for i in 0..40u64 {
        assert!(
            seen.contains(&user(&format!("u{i}"))),
            "the delta poller skipped u{i}"
        );
    }
    let chain = a.audit_chain().await.unwrap();
    assert!(epochgate_control_plane::audit::verify(&chain, &[]).ok());
}

fn replay_key(scope: &str, jti: &str, until_ms: u64, now_ms: u64) -> ReplayKey {
    ReplayKey {
        scope: scope.into(),
        jti: jti.into(),
        until_ms,
        now_ms,
    }
}

/// An IdP event's `jti` commits with its revocation; the same key again commits
/// nothing until it expires; keys of other scopes are independent.
async fn a_replay_key_is_acted_on_once_until_it_expires(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let key =
        |jti: &str, now_ms: u64| replay_key("corp/backchannel_logout", jti, T0 + 300_000, now_ms);
    let done = s
        .revoke_once(req(user("42"), T0), key("j1", T0))
        .await
        .unwrap()
        .expect("a new key is acted on");
    assert_eq!(done.version, 1);
    assert_eq!(*s.subscribe().borrow(), 1);
    assert_eq!(
        s.revoke_once(req(user("43"), T0 + 1), key("j1", T0 + 1))
            .await
            .unwrap(),
        None,
        "the same jti again"
    );
    assert_eq!(
        s.status().await.unwrap().version,
        1,
        "a replay commits nothing"
    );
    assert_eq!(s.audit(AuditFilter::newest(10)).await.unwrap().len(), 1);
    // Another receiver's (or IdP's) jti of the same value is its own.
    let other = replay_key("corp/set_push", "j1", T0 + 300_000, T0 + 2);
    assert!(s
        .revoke_once(req(user("44"), T0 + 2), other)
        .await
        .unwrap()
        .is_some());
    // Once expired, the key is purged (its token could no longer pass anyway).
    assert!(s
        .revoke_once(req(user("45"), T0 + 400_000), key("j1", T0 + 400_000))
        .await
        .unwrap()
        .is_some());
    let chain = s.audit_chain().await.unwrap();
    assert!(epochgate_control_plane::audit::verify(&chain, &[]).ok());
}

#[tokio::test]
async fn replay_keys_survive_reopening_the_file() {
    let ts = test_store().await;
    let key = replay_key("corp/backchannel_logout", "j1", T0 + 300_000, T0);
    assert!(ts
        .store
        .revoke_once(req(user("42"), T0), key.clone())
        .await
        .unwrap()
        .is_some());
    let reopened = store::open(ts.dir.path().join("epochgate.db").to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(
        reopened
            .revoke_once(req(user("42"), T0 + 1), key)
            .await
            .unwrap(),
        None,
        "a restart forgets no jti"
    );
}

fn scheduled(tenant: &str) -> Target {
    Target::ScheduledTenant {
        tenant: tenant.into(),
    }
}

fn schedule(target: Target, now_ms: u64, at_ms: u64) -> RevokeRequest {
    RevokeRequest {
        at_ms: Some(at_ms),
        ..req(target, now_ms)
    }
}

fn cancel_req(target: Target, now_ms: u64) -> RevokeRequest {
    RevokeRequest {
        reason: Some("rescheduled".into()),
        ..req(target, now_ms)
    }
}

async fn a_passed_schedule_folds_into_the_immediate_epoch_and_cannot_be_cancelled(
    backend: Backend,
) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let acme = Target::Tenant {
        tenant: "acme".into(),
    };
    s.revoke(schedule(scheduled("acme"), T0, T0 + 3_000))
        .await
        .unwrap();
    // Replaced before its time: no trace.
    let moved = s
        .revoke(schedule(scheduled("acme"), T0 + 1_000, T0 + 5_000))
        .await
        .unwrap();
    assert_eq!(moved.epoch_ms, T0 + 5_000);
    let listed = |entries: Vec<store::Entry>, t: &Target| {
        entries
            .into_iter()
            .find(|e| e.target == *t)
            .map(|e| e.epoch_ms)
    };
    assert_eq!(
        listed(s.tenant_revocations("acme".into()).await.unwrap(), &acme),
        None
    );
    // Replaced after its time (the next window, tomorrow): it happened — folded into the
    // tenant's epoch in the same version.
    let next = s
        .revoke(schedule(scheduled("acme"), T0 + 6_000, T0 + 86_400_000))
        .await
        .unwrap();
    let entries = s.tenant_revocations("acme".into()).await.unwrap();
    assert_eq!(listed(entries.clone(), &acme), Some(T0 + 5_000));
    assert_eq!(listed(entries, &scheduled("acme")), Some(T0 + 86_400_000));
    let delta = s
        .sync(moved.version, Some(s.stream().into()))
        .await
        .unwrap();
    assert_eq!(delta.version, next.version);
    assert!(
        delta
            .changes
            .contains(&change(acme.clone(), Some(T0 + 5_000))),
        "{delta:?}"
    );
    // A later immediate logout is not lowered by a fold.
    s.revoke(req(acme.clone(), T0 + 100_000)).await.unwrap();
    s.revoke(schedule(
        scheduled("acme"),
        T0 + 86_400_001,
        T0 + 90_000_000,
    ))
    .await
    .unwrap();
    let entries = s.tenant_revocations("acme".into()).await.unwrap();
    assert_eq!(
        listed(entries, &acme),
        Some(T0 + 86_400_000),
        "max of the two"
    );

    // A pending one is cancelled (a removal, audited); a passed one is refused.
    let done = match s
        .cancel(cancel_req(scheduled("acme"), T0 + 86_400_002))
        .await
        .unwrap()
    {
        CancelOutcome::Cancelled(done) => done,
        other => panic!("{other:?}"),
    };
    assert_eq!(done.epoch_ms, T0 + 90_000_000);
    let delta = s
        .sync(done.version - 1, Some(s.stream().into()))
        .await
        .unwrap();
    assert_eq!(delta.changes, vec![change(scheduled("acme"), None)]);
    let audit = s.audit(AuditFilter::newest(1)).await.unwrap();
    assert_eq!(audit[0].action, "cancel_scheduled_logout_tenant");
    assert_eq!(audit[0].version, done.version);
    assert_eq!(
        s.cancel(cancel_req(scheduled("acme"), T0 + 86_400_003))
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    s.revoke(schedule(Target::ScheduledGlobal, T0, T0 + 1_000))
        .await
        .unwrap();
    assert_eq!(
        s.cancel(cancel_req(Target::ScheduledGlobal, T0 + 1_000))
            .await
            .unwrap(),
        CancelOutcome::Passed { at_ms: T0 + 1_000 }
    );
}

async fn every_version_has_a_tag_and_an_edge_on_a_lost_history_is_told_apart(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let stream = s.stream().to_string();
    revoke(s, user("41"), T0).await;
    let snap = s.sync(0, None).await.unwrap();
    let t1 = snap.tag.clone().expect("a tag for version 1");
    assert_eq!(snap.diverged, None);
    // The edge at version 1 with its tag: a delta (and a long-poll when current).
    let v2 = revoke(s, user("42"), T0).await;
    let delta = s
        .sync_paged(at(1, Some(&stream), Some(&t1)), None)
        .await
        .unwrap();
    assert!(!delta.snapshot && delta.diverged.is_none());
    assert_eq!(delta.version, v2);
    let t2 = delta.tag.clone().unwrap();
    assert_ne!(t1, t2, "each version its own tag");
    // Another tag for version 1: the history the edge applied is not this store's.
    let lost = s
        .sync_paged(at(1, Some(&stream), Some("not-ours")), None)
        .await
        .unwrap();
    assert!(lost.snapshot, "{lost:?}");
    assert!(lost
        .diverged
        .unwrap()
        .contains("not this store's version 1"));
    // Ahead of the store: likewise.
    let ahead = s
        .sync_paged(at(9, Some(&stream), Some("x")), None)
        .await
        .unwrap();
    assert!(ahead.snapshot && ahead.diverged.unwrap().contains("ahead of the store's 2"));
    // Another stream is no proof of anything: a snapshot, no divergence.
    let other = s
        .sync_paged(at(9, Some("other"), Some("x")), None)
        .await
        .unwrap();
    assert!(other.snapshot && other.diverged.is_none());

    // The rollback is handled once: a new stream at a new version, recorded.
    let rx = s.subscribe();
    let r = s
        .rotate_stream(stream.clone(), "edge e1 reported …".into(), T0 + 5)
        .await
        .unwrap()
        .expect("rotated");
    assert_eq!(r.previous_stream, stream);
    assert_ne!(r.stream, stream);
    assert_eq!(*rx.borrow(), v2 + 1, "open long-polls wake");
    assert!(s
        .rotate_stream(stream.clone(), "again".into(), T0 + 6)
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.last_rollback().await.unwrap(), Some(r.clone()));
    let status = s.status().await.unwrap();
    assert_eq!((status.stream, status.version), (r.stream.clone(), v2 + 1));
    // An edge of the old stream gets a snapshot of the new one.
    let snap = s
        .sync_paged(at(2, Some(&stream), Some(&t2)), None)
        .await
        .unwrap();
    assert!(snap.snapshot && snap.stream == r.stream && snap.changes.len() == 2);
}

async fn compaction_keeps_the_horizon_from_reaching_back(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    assert_eq!(s.sync(0, None).await.unwrap().compacted_before_ms, 0);
    revoke(s, user("42"), T0).await;
    let report = s.compact(T0 + 3_601_000, 3600).await.unwrap();
    assert_eq!(report.removed, 1);
    let batch = s.sync(0, None).await.unwrap();
    assert_eq!(batch.compacted_before_ms, T0 + 1_000);
    // Raised to 90 days right after: the edges are told 1 h, growing with time.
    assert_eq!(
        store::announced_horizon_s(90 * 86_400, batch.compacted_before_ms, T0 + 3_601_000),
        3600
    );
    // A later run with a longer lifetime does not move the mark back.
    s.compact(T0 + 3_602_000, 90 * 86_400).await.unwrap();
    assert_eq!(
        s.sync(0, None).await.unwrap().compacted_before_ms,
        T0 + 1_000
    );
}

fn seen(
    user: &str,
    sid: Option<&str>,
    start: i64,
    first: u64,
    last: u64,
    device: &str,
) -> SessionSeen {
    SessionSeen {
        tenant: "acme".into(),
        user: user.into(),
        sid: sid.map(str::to_string),
        session_start: start,
        first_seen_ms: first,
        last_seen_ms: last,
        requests: 2,
        device: device.into(),
        address: Some("203.0.113.7".into()),
    }
}

fn filter(user: Option<&str>, query: Option<&str>, since: u64, limit: u32) -> SessionFilter {
    SessionFilter {
        tenant: "acme".into(),
        user: user.map(str::to_string),
        query: query.map(str::to_string),
        seen_since_ms: since,
        limit,
    }
}

async fn sessions_merge_per_session_and_drop_when_idle(backend: Backend) {
    let ts = backend.open().await;
    let s = ts.store.as_ref();
    let t = T0;
    let n = s
        .record_sessions(
            "e1".into(),
            vec![
                seen(
                    "Alice@Example",
                    Some("a1"),
                    100,
                    t,
                    t + 10,
                    "Chrome 120 on Linux",
                ),
                seen("bob", None, 200, t, t + 20, "curl 8.5.0"),
                seen("bob", None, 300, t, t + 30, "curl 8.5.0"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(n, 3);
    // The same session from another edge, later: merged into one row.
    s.record_sessions(
        "e2".into(),
        vec![seen(
            "Alice@Example",
            Some("a1"),
            150,
            t + 40,
            t + 50,
            "Firefox 121 on Linux",
        )],
    )
    .await
    .unwrap();
    // An older sighting arriving late changes neither device nor edge.
    s.record_sessions(
        "e3".into(),
        vec![seen("Alice@Example", Some("a1"), 90, t - 5, t + 1, "old")],
    )
    .await
    .unwrap();
    let all = s.sessions(filter(None, None, 0, 100)).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
    let alice = &all[0];
    assert_eq!(alice.user, "Alice@Example");
    assert_eq!(alice.sid.as_deref(), Some("a1"));
    assert_eq!(alice.first_seen_ms, t - 5);
    assert_eq!(alice.last_seen_ms, t + 50);
    assert_eq!(alice.requests, 6);
    assert_eq!(alice.device, "Firefox 121 on Linux");
    assert_eq!(alice.edge, "e2");
    assert_eq!(alice.session_start, 150, "the latest start reported");
    assert_eq!(alice.address.as_deref(), Some("203.0.113.7"));
    // Without a sid, each session start is its own session.
    assert_eq!(
        all[1..]
            .iter()
            .map(|r| (r.sid.clone(), r.session_start))
            .collect::<Vec<_>>(),
        vec![(None, 300), (None, 200)]
    );
    // Filters: one user; a case-insensitive substring whose LIKE characters are literal.
    assert_eq!(
        s.sessions(filter(Some("bob"), None, 0, 100))
            .await
            .unwrap()
            .len(),
        2
    );
    let found = s
        .sessions(filter(None, Some("alice@"), 0, 100))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert!(s
        .sessions(filter(None, Some("%"), 0, 100))
        .await
        .unwrap()
        .is_empty());
    assert!(s
        .sessions(filter(None, Some("b_b"), 0, 100))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        s.sessions(filter(None, None, t + 25, 100))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.sessions(filter(None, None, 0, 1)).await.unwrap().len(), 1);
    let other = SessionFilter {
        tenant: "globex".into(),
        ..filter(None, None, 0, 100)
    };
    assert!(s.sessions(other).await.unwrap().is_empty());
    assert_eq!(
        s.session_tenants(0).await.unwrap(),
        vec!["acme".to_string()]
    );
    assert!(s.session_tenants(t + 60).await.unwrap().is_empty());
    // Idle ones go; the rest stay.
    assert_eq!(s.drop_idle_sessions(t + 25).await.unwrap(), 1);
    let left = s.sessions(filter(None, None, 0, 100)).await.unwrap();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|r| r.last_seen_ms >= t + 25));
    // Reporting never moves a version: sessions are bookkeeping, not state.
    assert_eq!(s.status().await.unwrap().version, 0);
}

/// Each conformance test, once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::common::Backend::Sqlite).await
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $name() {
                super::$name(crate::common::Backend::Postgres).await
            })*
        }
    };
}

conformance!(
    versions_strictly_increase_and_are_announced,
    concurrent_writes_get_distinct_serial_versions,
    epochs_only_move_forward,
    a_session_revocation_stores_its_time,
    delta_and_snapshot_selection,
    paged_snapshots_hold_their_version_and_cover_every_entry,
    compaction_removes_as_a_delta_then_purges_and_raises_the_floor,
    compaction_matches_the_core_rule,
    audit_chain_stays_intact_under_concurrent_writes_and_refusals,
    audit_rows_are_newest_first_with_every_field,
    edge_receipts_upsert,
    edge_credentials_are_kept_hashed_revoked_with_audit_and_receipts_per_instance,
    tenant_revocations_hold_the_tenant_and_the_global_entry,
    a_replay_key_is_acted_on_once_until_it_expires,
    a_passed_schedule_folds_into_the_immediate_epoch_and_cannot_be_cancelled,
    every_version_has_a_tag_and_an_edge_on_a_lost_history_is_told_apart,
    compaction_keeps_the_horizon_from_reaching_back,
    sessions_merge_per_session_and_drop_when_idle,
);
