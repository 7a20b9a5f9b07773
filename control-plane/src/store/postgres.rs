//! The Postgres backend, for several control-plane replicas on one database.
//!
//! - **Serial versions.** Every write starts with `UPDATE meta SET version = version + 1
//!   … RETURNING version`: the row lock is held until commit, so writers on every replica
//!   queue on it and commit in version order (a sequence would let v11 commit before v10).
//!   Audit appends and compaction take the same lock, so the audit chain is serial too.
//! - **Wake every replica.** The write transaction also runs `pg_notify('epochgate_versions',
//!   version)`, delivered on commit to every replica's listener connection, which raises
//!   the local watch that long-polls wait on. A fallback reads the version once a second,
//!   so a lost listener connection delays a wake-up by at most a second, never loses it.
//! - **Consistent reads.** A sync reads the head and the rows in one REPEATABLE READ
//!   transaction.
//!
//! Connections: a few clients used round-robin (each behind a mutex, reconnected when
//! closed), plus the listener. Background tasks hold only a weak reference and end when
//! the store is dropped.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use epochgate_core::state::Target;
use epochgate_core::sync::Change;
use futures_util::StreamExt;
use tokio::sync::{watch, Mutex, MutexGuard};
use tokio_postgres::{AsyncMessage, Client, IsolationLevel, NoTls, Row, Transaction};

use super::{
    action_name, needs_snapshot, page_after, page_plan, row_key, snapshot_page, target_tenant,
    AuditEntry, AuditFilter, AuditHead, AuditRecord, BoxFuture, CompactionReport, EdgeReceipt,
    EdgeRecord, Entry, PageRequest, ReplayKey, Revocation, RevokeRequest, Store, StoreError,
    StoreStatus, SyncBatch,
};
use crate::audit;

/// The channel every replica listens on; the payload is the committed version.
const CHANNEL: &str = "epochgate_versions";

/// Clients in the pool.
const POOL_SIZE: usize = 4;

/// Serializes schema creation across replicas starting at once.
const SCHEMA_LOCK: i64 = 0x6570_6f63_6867;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    stream  TEXT    NOT NULL,
    version BIGINT  NOT NULL,
    floor   BIGINT  NOT NULL
);
CREATE TABLE IF NOT EXISTS revocations (
    scope      TEXT   NOT NULL CHECK (scope IN ('global', 'tenant', 'user', 'session', 'scheduled_global', 'scheduled_tenant')),
    tenant     TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    epoch_ms   BIGINT,
    version    BIGINT NOT NULL,
    changed_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, tenant, subject)
);
CREATE INDEX IF NOT EXISTS revocations_by_version ON revocations (version);
CREATE INDEX IF NOT EXISTS revocations_by_tenant ON revocations (tenant);
CREATE TABLE IF NOT EXISTS audit (
    id         BIGINT PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    outcome    TEXT   NOT NULL,
    target     TEXT   NOT NULL,
    tenant     TEXT,
    reason     TEXT,
    source     TEXT,
    request_id TEXT,
    version    BIGINT NOT NULL,
    prev_hash  TEXT   NOT NULL,
    hash       TEXT   NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
CREATE TABLE IF NOT EXISTS idp_replay (
    scope    TEXT   NOT NULL,
    jti      TEXT   NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (scope, jti)
);
CREATE INDEX IF NOT EXISTS idp_replay_by_until ON idp_replay (until_ms);
CREATE TABLE IF NOT EXISTS edges (
    id              TEXT   PRIMARY KEY,
    stream          TEXT,
    applied_version BIGINT NOT NULL,
    first_seen_ms   BIGINT NOT NULL,
    last_seen_ms    BIGINT NOT NULL,
    remote_addr     TEXT
);
";

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The Postgres store. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    inner: Arc<Inner>,
}

struct Inner {
    url: String,
    stream: String,
    pool: Vec<Mutex<Client>>,
    next: AtomicUsize,
    version: watch::Sender<u64>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("stream", &self.inner.stream)
            .finish_non_exhaustive()
    }
}

async fn connect(url: &str) -> Result<Client, StoreError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::warn!(error = %err, "a Postgres connection ended");
        }
    });
    Ok(client)
}

impl PgStore {
    /// Connects, creates the schema if missing (once, under an advisory lock), and starts
    /// the listener.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let mut first = connect(url).await?;
        let (stream, version) = {
            let tx = first.transaction().await?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                .await?;
            tx.batch_execute(SCHEMA).await?;
            let stream = new_stream_id()?;
            tx.execute(
                "INSERT INTO meta (id, stream, version, floor) VALUES (1, $1, 0, 0)
                 ON CONFLICT (id) DO NOTHING",
                &[&stream],
            )
            .await?;
            let row = tx
                .query_one("SELECT stream, version FROM meta WHERE id = 1", &[])
                .await?;
            let head: (String, i64) = (row.get(0), row.get(1));
            tx.commit().await?;
            head
        };
        let mut pool = vec![Mutex::new(first)];
        for _ in 1..POOL_SIZE {
            pool.push(Mutex::new(connect(url).await?));
        }
        let (version, _) = watch::channel(u(version));
        let inner = Arc::new(Inner {
            url: url.to_string(),
            stream,
            pool,
            next: AtomicUsize::new(0),
            version,
        });
        tokio::spawn(listen(url.to_string(), Arc::downgrade(&inner)));
        Ok(PgStore { inner })
    }
}

impl Inner {
    /// A client from the pool, reconnected if its connection closed.
    async fn client(&self) -> Result<MutexGuard<'_, Client>, StoreError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let slot = self
            .pool
            .get(n)
            .ok_or_else(|| StoreError::Corrupt("empty pool".into()))?;
        let mut client = slot.lock().await;
        if client.is_closed() {
            *client = connect(&self.url).await?;
        }
        Ok(client)
    }

    fn notify(&self, version: u64) {
        self.version.send_if_modified(|v| {
            if version > *v {
                *v = version;
                true
            } else {
                false
            }
        });
    }
}

/// Keeps the watch at the highest committed version: `LISTEN` for every replica's commits,
/// and a once-a-second read as a fallback. Ends when the store is dropped.
async fn listen(url: String, store: Weak<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let conn = tokio_postgres::connect(&url, NoTls).await;
        let (client, mut connection) = match conn {
            Ok(pair) => pair,
            Err(err) => {
                tracing::warn!(error = %err, "the Postgres listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                if store.upgrade().is_none() {
                    return;
                }
                continue;
            }
        };
        let (msg_tx, mut messages) = tokio::sync::mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(message) = stream.next().await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if msg_tx.send(n.payload().to_string()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(error = %err, "the Postgres listener connection failed");
                        return;
                    }
                }
            }
        });
        if let Err(err) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(error = %err, "LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            tokio::select! {
                payload = messages.recv() => match payload {
                    Some(p) => {
                        let Some(inner) = store.upgrade() else { return };
                        if let Ok(v) = p.parse::<u64>() {
                            inner.notify(v);
                        }
                    }
                    None => break, // the connection ended: reconnect
                },
                _ = tick.tick() => {
                    let Some(inner) = store.upgrade() else {
                        driver.abort();
                        return;
                    };
                    match client.query_one("SELECT version FROM meta WHERE id = 1", &[]).await {
                        Ok(row) => inner.notify(u(row.get(0))),
                        Err(err) => tracing::warn!(error = %err, "cannot read the version"),
                    }
                }
            }
        }
        driver.abort();
    }
}

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

async fn read_status(tx: &Transaction<'_>) -> Result<StoreStatus, StoreError> {
    let row = tx
        .query_one("SELECT stream, version, floor FROM meta WHERE id = 1", &[])
        .await?;
    Ok(StoreStatus {
        stream: row.get(0),
        version: u(row.get(1)),
        floor: u(row.get(2)),
    })
}

/// Appends one chained audit row; the caller holds the meta row lock.
async fn append_audit(
    tx: &Transaction<'_>,
    rec: &AuditRecord,
    version: u64,
) -> Result<AuditHead, StoreError> {
    let last = tx
        .query_opt("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &[])
        .await?;
    let (id, prev_hash) = match last {
        Some(row) => (u(row.get(0)) + 1, row.get::<_, String>(1)),
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            &i(id),
            &i(rec.at_ms),
            &rec.actor,
            &rec.action,
            &rec.outcome,
            &target_json,
            &target_tenant(&rec.target),
            &rec.reason,
            &rec.source,
            &rec.request_id,
            &i(version),
            &prev_hash,
            &hash,
        ],
    )
    .await?;
    Ok(AuditHead { id, hash })
}

const AUDIT_COLUMNS: &str =
    "id, at_ms, actor, action, outcome, target, reason, source, request_id, version, prev_hash, hash";

fn audit_from_row(r: &Row) -> Result<AuditEntry, StoreError> {
    let id = u(r.get(0));
    let target: String = r.get(5);
    let target = serde_json::from_str(&target)
        .map_err(|e| StoreError::Corrupt(format!("audit row {id} has a bad target: {e}")))?;
    Ok(AuditEntry {
        id,
        at_ms: u(r.get(1)),
        actor: r.get(2),
        action: r.get(3),
        outcome: r.get(4),
        target,
        reason: r.get(6),
        source: r.get(7),
        request_id: r.get(8),
        version: u(r.get(9)),
        prev_hash: r.get(10),
        hash: r.get(11),
    })
}

impl PgStore {
    async fn revoke_tx(
        &self,
        req: RevokeRequest,
        once: Option<ReplayKey>,
    ) -> Result<Option<Revocation>, StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await?;
        if let Some(key) = &once {
            tx.execute(
                "DELETE FROM idp_replay WHERE until_ms < $1",
                &[&i(key.now_ms)],
            )
            .await?;
            let fresh = tx
                .execute(
                    "INSERT INTO idp_replay (scope, jti, until_ms) VALUES ($1, $2, $3)
                     ON CONFLICT (scope, jti) DO NOTHING",
                    &[&key.scope, &key.jti, &i(key.until_ms)],
                )
                .await?;
            if fresh == 0 {
                tx.commit().await?;
                return Ok(None);
            }
        }
        let version = u(tx
            .query_one(
                "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
                &[],
            )
            .await?
            .get(0));
        let (scope, tenant, subject) = row_key(&req.target);
        let epoch_ms = u(tx
            .query_one(
                "INSERT INTO revocations (scope, tenant, subject, epoch_ms, version, changed_ms)
                 VALUES ($1, $2, $3, $6, $5, $4)
                 ON CONFLICT (scope, tenant, subject) DO UPDATE SET
                     epoch_ms = CASE WHEN $7 THEN EXCLUDED.epoch_ms
                                ELSE GREATEST(COALESCE(revocations.epoch_ms, 0), EXCLUDED.epoch_ms) END,
                     version = EXCLUDED.version,
                     changed_ms = EXCLUDED.changed_ms
                 RETURNING epoch_ms",
                &[
                    &scope,
                    &tenant,
                    &subject,
                    &i(req.now_ms),
                    &i(version),
                    &i(req.at_ms.unwrap_or(req.now_ms)),
                    &req.target.is_scheduled(),
                ],
            )
            .await?
            .get(0));
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
        )
        .await?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANNEL, &version.to_string()],
        )
        .await?;
        tx.commit().await?;
        self.inner.notify(version);
        Ok(Some(Revocation {
            target: req.target,
            epoch_ms,
            version,
            audit,
        }))
    }

    async fn sync_tx(
        &self,
        since: u64,
        edge_stream: Option<String>,
        page: Option<PageRequest>,
    ) -> Result<SyncBatch, StoreError> {
        let mut client = self.inner.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let status = read_status(&tx).await?;
        let to_changes = |rows: Vec<tokio_postgres::Row>| {
            rows.iter()
                .map(|r| {
                    Ok(Change {
                        target: target_from_row(r.get(0), r.get(1), r.get(2))?,
                        epoch_ms: r.get::<_, Option<i64>>(3).map(u),
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
        };
        if let Some(page) = &page {
            // Counted only when it decides something: a fresh or resumed snapshot does not
            // depend on it (the closure form `page_plan` takes cannot await).
            let delta_rows = if page.resume.is_none()
                && !needs_snapshot(since, edge_stream.as_deref(), &status)
            {
                u(tx.query_one(
                    "SELECT count(*) FROM revocations WHERE version > $1",
                    &[&i(since)],
                )
                .await?
                .get(0))
            } else {
                0
            };
            if let Some(at) = page_plan(since, edge_stream.as_deref(), &status, page, || {
                Ok(delta_rows)
            })? {
                let (scope, tenant, subject) = page_after(page);
                let rows = tx
                    .query(
                        "SELECT scope, tenant, subject, epoch_ms FROM revocations
                         WHERE epoch_ms IS NOT NULL AND version <= $1
                           AND (scope, tenant, subject) > ($2, $3, $4)
                         ORDER BY scope, tenant, subject LIMIT $5",
                        &[&i(at), &scope, &tenant, &subject, &i(page.limit as u64 + 1)],
                    )
                    .await?;
                tx.commit().await?;
                return Ok(snapshot_page(
                    status.stream,
                    at,
                    to_changes(rows)?,
                    page.limit,
                ));
            }
        }
        let snapshot = page.is_none() && needs_snapshot(since, edge_stream.as_deref(), &status);
        let rows = if snapshot {
            tx.query(
                "SELECT scope, tenant, subject, epoch_ms FROM revocations
                 WHERE epoch_ms IS NOT NULL ORDER BY version, scope, tenant, subject",
                &[],
            )
            .await?
        } else {
            tx.query(
                "SELECT scope, tenant, subject, epoch_ms FROM revocations
                 WHERE version > $1 ORDER BY version, scope, tenant, subject",
                &[&i(since)],
            )
            .await?
        };
        tx.commit().await?;
        Ok(SyncBatch {
            stream: status.stream,
            version: status.version,
            snapshot,
            changes: to_changes(rows)?,
            next: None,
        })
    }

    async fn compact_tx(
        &self,
        now_ms: u64,
        max_session_lifetime_s: u64,
    ) -> Result<CompactionReport, StoreError> {
        let cutoff = i(now_ms.saturating_sub(max_session_lifetime_s.saturating_mul(1000)));
        let mut client = self.inner.client().await?;
        let tx = client.transaction().await?;
        // Take the counter lock first: compaction is a writer like any other.
        tx.query_one("SELECT version FROM meta WHERE id = 1 FOR UPDATE", &[])
            .await?;
        let mut report = CompactionReport::default();
        let expired: i64 = tx
            .query_one(
                "SELECT count(*) FROM revocations WHERE epoch_ms IS NOT NULL AND epoch_ms < $1",
                &[&cutoff],
            )
            .await?
            .get(0);
        if expired > 0 {
            let version: i64 = tx
                .query_one(
                    "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
                    &[],
                )
                .await?
                .get(0);
            tx.execute(
                "UPDATE revocations SET epoch_ms = NULL, version = $1, changed_ms = $2
                 WHERE epoch_ms IS NOT NULL AND epoch_ms < $3",
                &[&version, &i(now_ms), &cutoff],
            )
            .await?;
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL, &version.to_string()],
            )
            .await?;
            report.removed = u(expired);
        }
        let purged_max: Option<i64> = tx
            .query_one(
                "SELECT max(version) FROM revocations WHERE epoch_ms IS NULL AND changed_ms < $1",
                &[&cutoff],
            )
            .await?
            .get(0);
        if let Some(purged_max) = purged_max {
            report.purged = tx
                .execute(
                    "DELETE FROM revocations WHERE epoch_ms IS NULL AND changed_ms < $1",
                    &[&cutoff],
                )
                .await?;
            tx.execute(
                "UPDATE meta SET floor = GREATEST(floor, $1) WHERE id = 1",
                &[&purged_max],
            )
            .await?;
        }
        report.purged_edges = tx
            .execute("DELETE FROM edges WHERE last_seen_ms < $1", &[&cutoff])
            .await?;
        let status = read_status(&tx).await?;
        tx.commit().await?;
        report.version = status.version;
        report.floor = status.floor;
        if report.removed > 0 {
            self.inner.notify(report.version);
        }
        Ok(report)
    }
}

impl Store for PgStore {
    fn stream(&self) -> &str {
        &self.inner.stream
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    fn revoke(&self, request: RevokeRequest) -> BoxFuture<'_, Result<Revocation, StoreError>> {
        Box::pin(async move {
            self.revoke_tx(request, None)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a revocation without a key was skipped".into()))
        })
    }

    fn revoke_once(
        &self,
        request: RevokeRequest,
        key: ReplayKey,
    ) -> BoxFuture<'_, Result<Option<Revocation>, StoreError>> {
        Box::pin(self.revoke_tx(request, Some(key)))
    }

    fn sync_paged(
        &self,
        since: u64,
        edge_stream: Option<String>,
        page: Option<PageRequest>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>> {
        Box::pin(self.sync_tx(since, edge_stream, page))
    }

    fn status(&self) -> BoxFuture<'_, Result<StoreStatus, StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let row = client
                .query_one("SELECT stream, version, floor FROM meta WHERE id = 1", &[])
                .await?;
            Ok(StoreStatus {
                stream: row.get(0),
                version: u(row.get(1)),
                floor: u(row.get(2)),
            })
        })
    }

    fn record_edge(&self, receipt: EdgeReceipt) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            client
                .execute(
                    "INSERT INTO edges (id, stream, applied_version, first_seen_ms, last_seen_ms, remote_addr)
                     VALUES ($1, $2, $3, $4, $4, $5)
                     ON CONFLICT (id) DO UPDATE SET
                         stream = EXCLUDED.stream,
                         applied_version = EXCLUDED.applied_version,
                         last_seen_ms = EXCLUDED.last_seen_ms,
                         remote_addr = EXCLUDED.remote_addr",
                    &[
                        &receipt.edge,
                        &receipt.stream,
                        &i(receipt.applied_version),
                        &i(receipt.now_ms),
                        &receipt.remote_addr,
                    ],
                )
                .await?;
            Ok(())
        })
    }

    fn edges(&self) -> BoxFuture<'_, Result<Vec<EdgeRecord>, StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let rows = client
                .query(
                    "SELECT id, stream, applied_version, first_seen_ms, last_seen_ms, remote_addr
                     FROM edges ORDER BY id",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| EdgeRecord {
                    id: r.get(0),
                    stream: r.get(1),
                    applied_version: u(r.get(2)),
                    first_seen_ms: u(r.get(3)),
                    last_seen_ms: u(r.get(4)),
                    remote_addr: r.get(5),
                })
                .collect())
        })
    }

    fn tenant_revocations(&self, tenant: String) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let rows = client
                .query(
                    "SELECT scope, tenant, subject, epoch_ms, version FROM revocations
                     WHERE epoch_ms IS NOT NULL AND (tenant = $1 OR scope IN ('global', 'scheduled_global'))
                     ORDER BY version",
                    &[&tenant],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Entry {
                        target: target_from_row(r.get(0), r.get(1), r.get(2))?,
                        epoch_ms: u(r.get(3)),
                        version: u(r.get(4)),
                    })
                })
                .collect()
        })
    }

    fn tenant_seen(&self, tenant: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let row = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM revocations WHERE tenant = $1)
                         OR EXISTS (SELECT 1 FROM audit WHERE tenant = $1)",
                    &[&tenant],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn record_audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<AuditHead, StoreError>> {
        Box::pin(async move {
            let mut client = self.inner.client().await?;
            let tx = client.transaction().await?;
            let version = u(tx
                .query_one("SELECT version FROM meta WHERE id = 1 FOR UPDATE", &[])
                .await?
                .get(0));
            let head = append_audit(&tx, &record, version).await?;
            tx.commit().await?;
            Ok(head)
        })
    }

    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT {AUDIT_COLUMNS} FROM audit
                         WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR actor = $2)
                           AND ($3::text IS NULL OR action = $3) AND ($4::text IS NULL OR outcome = $4)
                           AND ($5::bigint IS NULL OR at_ms >= $5) AND ($6::bigint IS NULL OR at_ms <= $6)
                         ORDER BY id DESC LIMIT $7"
                    ),
                    &[
                        &filter.tenant,
                        &filter.actor,
                        &filter.action,
                        &filter.outcome,
                        &filter.since_ms.map(i),
                        &filter.until_ms.map(i),
                        &i64::from(filter.limit),
                    ],
                )
                .await?;
            rows.iter().map(audit_from_row).collect()
        })
    }

    fn audit_chain(&self) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        Box::pin(async move {
            let client = self.inner.client().await?;
            let rows = client
                .query(
                    &format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"),
                    &[],
                )
                .await?;
            rows.iter().map(audit_from_row).collect()
        })
    }

    fn compact(
        &self,
        now_ms: u64,
        max_session_lifetime_s: u64,
    ) -> BoxFuture<'_, Result<CompactionReport, StoreError>> {
        Box::pin(self.compact_tx(now_ms, max_session_lifetime_s))
    }
}
