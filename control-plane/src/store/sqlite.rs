//! The SQLite backend: one file, WAL, every write one `BEGIN IMMEDIATE` transaction.
//!
//! Two connections, each behind a mutex and used only from blocking threads
//! (`spawn_blocking`), never on the async runtime:
//! - `write` (`synchronous=FULL`): revocations and compaction. In WAL mode FULL syncs the
//!   WAL on every commit, so a revocation answered 200 survives a SIGKILL *and* a power
//!   loss; a revocation that silently disappears is a logged-out attacker let back in.
//! - `read` (`synchronous=NORMAL`): sync, listings, and the edges' receipts. Receipts
//!   are bookkeeping rewritten on every poll; NORMAL in WAL mode still survives a process
//!   crash and skips an fsync per poll. WAL lets these reads run while a write commits.
//!
//! `BEGIN IMMEDIATE` takes the write lock up front, so two writers (two connections,
//! or two processes on one file) serialize on the counter row instead of failing their
//! upgrade from a read lock halfway; `busy_timeout` makes the loser wait, not error.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use epochgate_core::state::Target;
use epochgate_core::sync::Change;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use tokio::sync::watch;

use crate::audit;

use super::{
    action_name, needs_snapshot, page_after, page_plan, row_key, snapshot_page, target_tenant,
    AuditEntry, AuditFilter, AuditHead, AuditRecord, BoxFuture, CompactionReport, EdgeReceipt,
    EdgeRecord, Entry, PageRequest, ReplayKey, Revocation, RevokeRequest, Store, StoreError,
    StoreStatus, SyncBatch,
};

/// How long a connection waits for another writer's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema this code writes, kept in `PRAGMA user_version` for future migrations.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    stream  TEXT    NOT NULL,
    version INTEGER NOT NULL,   -- the last committed version: the counter row
    floor   INTEGER NOT NULL    -- the highest version purged by compaction
);
-- One row per target. tenant and subject are '' where the scope has none (ids are never
-- empty, so '' cannot collide). epoch_ms NULL is a tombstone: removed by compaction,
-- kept for a session lifetime so edges receive the removal as a delta.
CREATE TABLE IF NOT EXISTS revocations (
    scope      TEXT    NOT NULL CHECK (scope IN ('global', 'tenant', 'user', 'session', 'scheduled_global', 'scheduled_tenant')),
    tenant     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    epoch_ms   INTEGER,
    version    INTEGER NOT NULL,   -- the version of the row's last change
    changed_ms INTEGER NOT NULL,   -- when that change happened (ages tombstones)
    PRIMARY KEY (scope, tenant, subject)
);
CREATE INDEX IF NOT EXISTS revocations_by_version ON revocations (version);
CREATE INDEX IF NOT EXISTS revocations_by_tenant ON revocations (tenant);
-- Hash-chained (see audit.rs): id is last + 1, assigned inside the write transaction.
CREATE TABLE IF NOT EXISTS audit (
    id         INTEGER PRIMARY KEY,
    at_ms      INTEGER NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    target     TEXT    NOT NULL,   -- the Target as JSON
    tenant     TEXT,               -- the target's tenant, for filters (NULL: global)
    reason     TEXT,
    source     TEXT,
    request_id TEXT,
    version    INTEGER NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
-- The jti of each IdP event that revoked something (see ReplayKey), until its token is
-- too old to pass: a replay is refused, also after a restart.
CREATE TABLE IF NOT EXISTS idp_replay (
    scope    TEXT    NOT NULL,
    jti      TEXT    NOT NULL,
    until_ms INTEGER NOT NULL,
    PRIMARY KEY (scope, jti)
);
CREATE INDEX IF NOT EXISTS idp_replay_by_until ON idp_replay (until_ms);
CREATE TABLE IF NOT EXISTS edges (
    id              TEXT    PRIMARY KEY,
    stream          TEXT,
    applied_version INTEGER NOT NULL,
    first_seen_ms   INTEGER NOT NULL,
    last_seen_ms    INTEGER NOT NULL,
    remote_addr     TEXT
);
";

/// The SQLite store. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    stream: String,
    write: Mutex<Connection>,
    read: Mutex<Connection>,
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("stream", &self.inner.stream)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing, with its parent directory) the database at `path`.
    /// Blocking: call it from a blocking context (see [`super::open`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| StoreError::CreateDir {
                path: parent.display().to_string(),
                source,
            })?;
        }
        let mut write = connect(&path, "FULL")?;
        let (stream, version) = init_schema(&mut write)?;
        let read = connect(&path, "NORMAL")?;
        let (tx, _) = watch::channel(version);
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path,
                stream,
                write: Mutex::new(write),
                read: Mutex::new(read),
                version: tx,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on a blocking thread with the store's state.
    fn blocking<T, F>(&self, f: F) -> BoxFuture<'_, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

impl Inner {
    fn write_conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.write.lock().map_err(|_| StoreError::Poisoned)
    }

    fn read_conn(&self) -> Result<MutexGuard<'_, Connection>, StoreError> {
        self.read.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Wakes the long-polls. Called after the commit, never before: a poll woken early
    /// would read the old version and go back to sleep on a change it then never sees.
    fn notify(&self, version: u64) {
        self.version.send_if_modified(|current| {
            if version > *current {
                *current = version;
                true
            } else {
                false
            }
        });
    }
}

fn connect(path: &Path, synchronous: &str) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // journal_mode answers a row (the mode now in force); read it rather than execute.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "{} refuses WAL (journal_mode is {mode})",
            path.display()
        )));
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA foreign_keys = ON;"
    ))?;
    Ok(conn)
}

/// Creates the tables and the meta row if missing; returns the stream and version.
fn init_schema(conn: &mut Connection) -> Result<(String, u64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "database schema {found} is newer than this build's {SCHEMA_VERSION}"
        )));
    }
    if found == 1 {
        return Err(StoreError::Corrupt(
            "this database was written by an earlier build whose audit log is not \
             hash-chained (schema 1); move it aside and start with a new file"
                .into(),
        ));
    }
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))?;
    let existing: Option<(String, u64)> = tx
        .query_row("SELECT stream, version FROM meta WHERE id = 1", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let head = match existing {
        Some(head) => head,
        None => {
            let stream = new_stream_id()?;
            tx.execute(
                "INSERT INTO meta (id, stream, version, floor) VALUES (1, ?1, 0, 0)",
                params![stream],
            )?;
            (stream, 0)
        }
    };
    tx.commit()?;
    Ok(head)
}

/// 16 random bytes as hex: a new store never shares a stream with another.
fn new_stream_id() -> Result<String, StoreError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn target_from_row(scope: &str, tenant: String, subject: String) -> Result<Target, StoreError> {
    Ok(match scope {
        "global" => Target::Global,
        "tenant" => Target::Tenant { tenant },
        "user" => Target::User {
            tenant,
            user: subject,
        },
        "session" => Target::Session {
            tenant,
            sid: subject,
        },
        "scheduled_global" => Target::ScheduledGlobal,
        "scheduled_tenant" => Target::ScheduledTenant { tenant },
        other => return Err(StoreError::Corrupt(format!("unknown scope {other:?}"))),
    })
}

/// Reads `(scope, tenant, subject, epoch_ms)` rows starting at column 0.
fn change_from_row(row: &Row<'_>) -> rusqlite::Result<(String, String, String, Option<u64>)> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

fn read_status(conn: &Connection) -> Result<StoreStatus, StoreError> {
    Ok(conn.query_row(
        "SELECT stream, version, floor FROM meta WHERE id = 1",
        [],
        |r| {
            Ok(StoreStatus {
                stream: r.get(0)?,
                version: r.get(1)?,
                floor: r.get(2)?,
            })
        },
    )?)
}

fn revoke_tx(
    conn: &mut Connection,
    req: &RevokeRequest,
    once: Option<&ReplayKey>,
) -> Result<Option<Revocation>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(key) = once {
        tx.execute(
            "DELETE FROM idp_replay WHERE until_ms < ?1",
            params![key.now_ms],
        )?;
        let fresh = tx.execute(
            "INSERT INTO idp_replay (scope, jti, until_ms) VALUES (?1, ?2, ?3)
             ON CONFLICT (scope, jti) DO NOTHING",
            params![key.scope, key.jti, key.until_ms],
        )?;
        if fresh == 0 {
            tx.commit()?;
            return Ok(None);
        }
    }
    let version: u64 = tx.query_row(
        "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
        [],
        |r| r.get(0),
    )?;
    let (scope, tenant, subject) = row_key(&req.target);
    // max(existing, now): a logout never moves an epoch back, even if the clock did.
    // A tombstone (NULL) counts as nothing. A schedule replaces the previous one.
    let epoch_ms: u64 = tx.query_row(
        "INSERT INTO revocations (scope, tenant, subject, epoch_ms, version, changed_ms)
         VALUES (?1, ?2, ?3, ?6, ?5, ?4)
         ON CONFLICT (scope, tenant, subject) DO UPDATE SET
             epoch_ms = CASE WHEN ?7 THEN excluded.epoch_ms
                        ELSE max(coalesce(revocations.epoch_ms, 0), excluded.epoch_ms) END,
             version = excluded.version,
             changed_ms = excluded.changed_ms
         RETURNING epoch_ms",
        params![
            scope,
            tenant,
            subject,
            req.now_ms,
            version,
            req.at_ms.unwrap_or(req.now_ms),
            req.target.is_scheduled()
        ],
        |r| r.get(0),
    )?;
    let audit = append_audit(
        &tx,
        &AuditRecord {
            at_ms: req.now_ms,
            actor: req.actor.clone(),
            action: action_name(&req.target).to_string(),
            outcome: "ok".into(),
            target: req.target.clone(),
            reason: req.reason.clone(),
            source: req.source.clone(),
            request_id: req.request_id.clone(),
        },
        version,
    )?;
    tx.commit()?;
    Ok(Some(Revocation {
        target: req.target.clone(),
        epoch_ms,
        version,
        audit,
    }))
}

/// Appends one chained audit row inside the caller's write transaction.
fn append_audit(
    tx: &rusqlite::Transaction<'_>,
    rec: &AuditRecord,
    version: u64,
) -> Result<AuditHead, StoreError> {
    let last: Option<(u64, String)> = tx
        .query_row(
            "SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, prev_hash) = match last {
        Some((id, hash)) => (id + 1, hash),
        None => (1, audit::GENESIS.to_string()),
    };
    let hash = audit::entry_hash(
        &prev_hash,
        audit::Fields {
            id,
            at_ms: rec.at_ms,
            actor: &rec.actor,
            action: &rec.action,
            outcome: &rec.outcome,
            target: &rec.target,
            reason: rec.reason.as_deref(),
            source: rec.source.as_deref(),
            request_id: rec.request_id.as_deref(),
            version,
        },
    );
    let target_json = serde_json::to_string(&rec.target)
        .map_err(|e| StoreError::Corrupt(format!("target does not serialize: {e}")))?;
    tx.execute(
        "INSERT INTO audit (id, at_ms, actor, action, outcome, target, tenant, reason, source,
                            request_id, version, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        params![
            id,
            rec.at_ms,
            rec.actor,
            rec.action,
            rec.outcome,
            target_json,
            target_tenant(&rec.target),
            rec.reason,
            rec.source,
            rec.request_id,
            version,
            prev_hash,
            hash
        ],
    )?;
    Ok(AuditHead { id, hash })
}

const AUDIT_COLUMNS: &str =
    "id, at_ms, actor, action, outcome, target, reason, source, request_id, version, prev_hash, hash";

fn audit_from_row(r: &Row<'_>) -> rusqlite::Result<Result<AuditEntry, StoreError>> {
    let id: u64 = r.get(0)?;
    let target: String = r.get(5)?;
    let target = match serde_json::from_str(&target) {
        Ok(t) => t,
        Err(e) => {
            return Ok(Err(StoreError::Corrupt(format!(
                "audit row {id} has a bad target: {e}"
            ))))
        }
    };
    Ok(Ok(AuditEntry {
        id,
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        outcome: r.get(4)?,
        target,
        reason: r.get(6)?,
        source: r.get(7)?,
        request_id: r.get(8)?,
        version: r.get(9)?,
        prev_hash: r.get(10)?,
        hash: r.get(11)?,
    }))
}

fn sync_tx(
    conn: &mut Connection,
    since: u64,
    edge_stream: Option<&str>,
    page: Option<&PageRequest>,
) -> Result<SyncBatch, StoreError> {
    // One read transaction: the head and the rows come from the same WAL snapshot.
    let tx = conn.transaction()?;
    let status = read_status(&tx)?;
    let to_change = |(scope, tenant, subject, epoch_ms): (String, String, String, Option<u64>)| {
        Ok(Change {
            target: target_from_row(&scope, tenant, subject)?,
            epoch_ms,
        })
    };
    if let Some(page) = page {
        let plan = page_plan(since, edge_stream, &status, page, || {
            Ok(tx.query_row(
                "SELECT count(*) FROM revocations WHERE version > ?1",
                params![since],
                |r| r.get(0),
            )?)
        })?;
        if let Some(at) = plan {
            let (scope, tenant, subject) = page_after(page);
            let mut stmt = tx.prepare(
                "SELECT scope, tenant, subject, epoch_ms FROM revocations
                 WHERE epoch_ms IS NOT NULL AND version <= ?1
                   AND (scope, tenant, subject) > (?2, ?3, ?4)
                 ORDER BY scope, tenant, subject LIMIT ?5",
            )?;
            let changes = stmt
                .query_map(
                    params![at, scope, tenant, subject, page.limit as u64 + 1],
                    change_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .map(to_change)
                .collect::<Result<Vec<_>, StoreError>>()?;
            drop(stmt);
            tx.finish()?;
            return Ok(snapshot_page(status.stream, at, changes, page.limit));
        }
    }
    let snapshot = page.is_none() && needs_snapshot(since, edge_stream, &status);
    let changes = {
        let (sql, arg) = if snapshot {
            (
                "SELECT scope, tenant, subject, epoch_ms FROM revocations
                 WHERE epoch_ms IS NOT NULL ORDER BY version, scope, tenant, subject",
                None,
            )
        } else {
            (
                "SELECT scope, tenant, subject, epoch_ms FROM revocations
                 WHERE version > ?1 ORDER BY version, scope, tenant, subject",
                Some(since),
            )
        };
        let mut stmt = tx.prepare(sql)?;
        let rows = match arg {
            Some(since) => stmt
                .query_map(params![since], change_from_row)?
                .collect::<Result<Vec<_>, _>>()?,
            None => stmt
                .query_map([], change_from_row)?
                .collect::<Result<Vec<_>, _>>()?,
        };
        rows.into_iter()
            .map(to_change)
            .collect::<Result<Vec<_>, StoreError>>()?
    };
    tx.finish()?;
    Ok(SyncBatch {
        stream: status.stream,
        version: status.version,
        snapshot,
        changes,
        next: None,
    })
}

fn compact_tx(
    conn: &mut Connection,
    now_ms: u64,
    max_session_lifetime_s: u64,
) -> Result<CompactionReport, StoreError> {
    // is_compactable(epoch, now, L) is `epoch + L < now`, i.e. `epoch < now - L`; the
    // store-side test `compaction_matches_the_core_rule` pins the two together.
    let cutoff = now_ms.saturating_sub(max_session_lifetime_s.saturating_mul(1000));
    let cutoff = i64::try_from(cutoff).unwrap_or(i64::MAX);
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut report = CompactionReport::default();

    let expired: u64 = tx.query_row(
        "SELECT count(*) FROM revocations WHERE epoch_ms IS NOT NULL AND epoch_ms < ?1",
        params![cutoff],
        |r| r.get(0),
    )?;
    if expired > 0 {
        // One version for the whole run: the removals commit together.
        let version: u64 = tx.query_row(
            "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
            [],
            |r| r.get(0),
        )?;
        tx.execute(
            "UPDATE revocations SET epoch_ms = NULL, version = ?1, changed_ms = ?2
             WHERE epoch_ms IS NOT NULL AND epoch_ms < ?3",
            params![version, now_ms, cutoff],
        )?;
        report.removed = expired;
    }

    // A tombstone is kept a whole lifetime after its removal, so an edge offline for
    // less than that still gets it as a delta; edges further behind get a snapshot,
    // which the floor enforces.
    let purged_max: Option<u64> = tx.query_row(
        "SELECT max(version) FROM revocations WHERE epoch_ms IS NULL AND changed_ms < ?1",
        params![cutoff],
        |r| r.get(0),
    )?;
    if let Some(purged_max) = purged_max {
        report.purged = u64::try_from(tx.execute(
            "DELETE FROM revocations WHERE epoch_ms IS NULL AND changed_ms < ?1",
            params![cutoff],
        )?)
        .unwrap_or(u64::MAX);
        tx.execute(
            "UPDATE meta SET floor = max(floor, ?1) WHERE id = 1",
            params![purged_max],
        )?;
    }
    report.purged_edges =
        u64::try_from(tx.execute("DELETE FROM edges WHERE last_seen_ms < ?1", params![cutoff])?)
            .unwrap_or(u64::MAX);

    let status = read_status(&tx)?;
    tx.commit()?;
    report.version = status.version;
    report.floor = status.floor;
    Ok(report)
}

impl Store for SqliteStore {
    fn stream(&self) -> &str {
        &self.inner.stream
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn revoke(&self, request: RevokeRequest) -> BoxFuture<'_, Result<Revocation, StoreError>> {
        self.blocking(move |inner| {
            let done = revoke_tx(&mut *inner.write_conn()?, &request, None)?.ok_or_else(|| {
                StoreError::Corrupt("a revocation without a key was skipped".into())
            })?;
            inner.notify(done.version);
            Ok(done)
        })
    }

    fn revoke_once(
        &self,
        request: RevokeRequest,
        key: ReplayKey,
    ) -> BoxFuture<'_, Result<Option<Revocation>, StoreError>> {
        self.blocking(move |inner| {
            let done = revoke_tx(&mut *inner.write_conn()?, &request, Some(&key))?;
            if let Some(done) = &done {
                inner.notify(done.version);
            }
            Ok(done)
        })
    }

    fn sync_paged(
        &self,
        since: u64,
        edge_stream: Option<String>,
        page: Option<PageRequest>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>> {
        self.blocking(move |inner| {
            sync_tx(
                &mut *inner.read_conn()?,
                since,
                edge_stream.as_deref(),
                page.as_ref(),
            )
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<StoreStatus, StoreError>> {
        self.blocking(|inner| read_status(&*inner.read_conn()?))
    }

    fn record_edge(&self, receipt: EdgeReceipt) -> BoxFuture<'_, Result<(), StoreError>> {
        self.blocking(move |inner| {
            inner.read_conn()?.execute(
                "INSERT INTO edges (id, stream, applied_version, first_seen_ms, last_seen_ms, remote_addr)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET
                     stream = excluded.stream,
                     applied_version = excluded.applied_version,
                     last_seen_ms = excluded.last_seen_ms,
                     remote_addr = excluded.remote_addr",
                params![
                    receipt.edge,
                    receipt.stream,
                    receipt.applied_version,
                    receipt.now_ms,
                    receipt.remote_addr
                ],
            )?;
            Ok(())
        })
    }

    fn edges(&self) -> BoxFuture<'_, Result<Vec<EdgeRecord>, StoreError>> {
        self.blocking(|inner| {
            let conn = inner.read_conn()?;
            let mut stmt = conn.prepare(
                "SELECT id, stream, applied_version, first_seen_ms, last_seen_ms, remote_addr
                 FROM edges ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(EdgeRecord {
                        id: r.get(0)?,
                        stream: r.get(1)?,
                        applied_version: r.get(2)?,
                        first_seen_ms: r.get(3)?,
                        last_seen_ms: r.get(4)?,
                        remote_addr: r.get(5)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    fn tenant_revocations(&self, tenant: String) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        self.blocking(move |inner| {
            let conn = inner.read_conn()?;
            let mut stmt = conn.prepare(
                "SELECT scope, tenant, subject, epoch_ms, version FROM revocations
                 WHERE epoch_ms IS NOT NULL AND (tenant = ?1 OR scope IN ('global', 'scheduled_global'))
                 ORDER BY version",
            )?;
            let rows = stmt
                .query_map(params![tenant], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, u64>(3)?,
                        r.get::<_, u64>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(scope, tenant, subject, epoch_ms, version)| {
                    Ok(Entry {
                        target: target_from_row(&scope, tenant, subject)?,
                        epoch_ms,
                        version,
                    })
                })
                .collect()
        })
    }

    fn tenant_seen(&self, tenant: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.blocking(move |inner| {
            Ok(inner.read_conn()?.query_row(
                "SELECT EXISTS (SELECT 1 FROM revocations WHERE tenant = ?1)
                     OR EXISTS (SELECT 1 FROM audit WHERE tenant = ?1)",
                params![tenant],
                |r| r.get(0),
            )?)
        })
    }

    fn record_audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<AuditHead, StoreError>> {
        self.blocking(move |inner| {
            let mut conn = inner.write_conn()?;
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let version = read_status(&tx)?.version;
            let head = append_audit(&tx, &record, version)?;
            tx.commit()?;
            Ok(head)
        })
    }

    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.blocking(move |inner| {
            let conn = inner.read_conn()?;
            let mut stmt = conn.prepare(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR actor = ?2)
                   AND (?3 IS NULL OR action = ?3) AND (?4 IS NULL OR outcome = ?4)
                   AND (?5 IS NULL OR at_ms >= ?5) AND (?6 IS NULL OR at_ms <= ?6)
                 ORDER BY id DESC LIMIT ?7"
            ))?;
            let rows = stmt
                .query_map(
                    params![
                        filter.tenant,
                        filter.actor,
                        filter.action,
                        filter.outcome,
                        filter.since_ms,
                        filter.until_ms,
                        filter.limit
                    ],
                    audit_from_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().collect()
        })
    }

    fn audit_chain(&self) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.blocking(move |inner| {
            let conn = inner.read_conn()?;
            let mut stmt =
                conn.prepare(&format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"))?;
            let rows = stmt
                .query_map([], audit_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().collect()
        })
    }

    fn compact(
        &self,
        now_ms: u64,
        max_session_lifetime_s: u64,
    ) -> BoxFuture<'_, Result<CompactionReport, StoreError>> {
        self.blocking(move |inner| {
            let report = compact_tx(&mut *inner.write_conn()?, now_ms, max_session_lifetime_s)?;
            if report.removed > 0 {
                inner.notify(report.version);
            }
            Ok(report)
        })
    }
}
