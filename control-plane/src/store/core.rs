//! The store, written once: [`SqlStore`] implements [`Store`] over any [`Backend`], with
//! every operation's SQL, row mapping, the audit chain's append and hashing, and the
//! change notification here. A backend (SQLite, Postgres) only opens connections and
//! transactions, creates its schema, and tells other replicas of commits.
//!
//! A new store feature is one `async fn` over `&mut dyn Tx` below and one method that
//! runs it with the [`Access`] it needs; the conformance suite (`tests/store.rs`) then
//! checks it on both databases.

use std::sync::Arc;

use epochgate_core::state::Target;
use epochgate_core::sync::Change;
use tokio::sync::watch;

use super::sql::{params, Access, Backend, Row, Tx};
use super::{
    action_name, cancel_action_name, diverged, needs_snapshot, page_after, page_plan, row_key,
    snapshot_page, target_tenant, AuditEntry, AuditFilter, AuditHead, AuditRecord, BoxFuture,
    CancelOutcome, CompactionReport, EdgeCredential, EdgePosition, EdgeReceipt, EdgeRecord, Entry,
    NewEdgeCredential, PageRequest, ReplayKey, Revocation, RevokeRequest, Rollback, SessionFilter,
    SessionRecord, Store, StoreError, StoreStatus, SyncBatch,
};
use crate::audit;
use epochgate_core::sessions::SessionSeen;

/// The highest committed version, watched by long-polls (see the module doc of
/// [`super`]). Raised only after a commit, never before: a poll woken early would read
/// the old version and go back to sleep on a change it then never sees.
#[derive(Debug)]
pub struct Versions(watch::Sender<u64>);

impl Versions {
    pub fn new(version: u64) -> Self {
        Versions(watch::channel(version).0)
    }

    /// Raises the watch to `version` (never lowers it).
    pub fn notify(&self, version: u64) {
        self.0.send_if_modified(|current| {
            if version > *current {
                *current = version;
                true
            } else {
                false
            }
        });
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

/// The store over one backend. Cheap to clone.
pub struct SqlStore<B> {
    pub(crate) backend: Arc<B>,
    stream: String,
    versions: Arc<Versions>,
}

impl<B> Clone for SqlStore<B> {
    fn clone(&self) -> Self {
        SqlStore {
            backend: Arc::clone(&self.backend),
            stream: self.stream.clone(),
            versions: Arc::clone(&self.versions),
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for SqlStore<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlStore")
            .field("backend", &self.backend)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> SqlStore<B> {
    /// A store over `backend`, whose head ([`init_head`]) is `(stream, version)`.
    pub fn new(backend: B, stream: String, version: u64) -> Self {
        SqlStore {
            backend: Arc::new(backend),
            stream,
            versions: Arc::new(Versions::new(version)),
        }
    }

    /// The version watch, for a backend's listener of other replicas' commits.
    pub fn versions(&self) -> &Arc<Versions> {
        &self.versions
    }
}

/// The tables, in the SQL both databases accept; `int` is the 64-bit integer type
/// (`INTEGER` in SQLite — the audit id then the rowid — and `BIGINT` in Postgres).
/// Idempotent: each backend runs it at every start, inside its schema transaction.
pub fn schema(int: &str) -> String {
    SCHEMA.replace("{int}", int)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    stream  TEXT    NOT NULL,
    version {int} NOT NULL,   -- the last committed version: the counter row
    floor   {int} NOT NULL    -- the highest version purged by compaction
);
-- One row per target. tenant and subject are '' where the scope has none (ids are never
-- empty, so '' cannot collide). epoch_ms NULL is a tombstone: removed by compaction,
-- kept for a session lifetime so edges receive the removal as a delta.
CREATE TABLE IF NOT EXISTS revocations (
    scope      TEXT    NOT NULL CHECK (scope IN ('global', 'tenant', 'user', 'session', 'scheduled_global', 'scheduled_tenant')),
    tenant     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    epoch_ms   {int},
    version    {int} NOT NULL,   -- the version of the row's last change
    changed_ms {int} NOT NULL,   -- when that change happened (ages tombstones)
    PRIMARY KEY (scope, tenant, subject)
);
CREATE INDEX IF NOT EXISTS revocations_by_version ON revocations (version);
CREATE INDEX IF NOT EXISTS revocations_by_tenant ON revocations (tenant);
-- Hash-chained (see audit.rs): id is last + 1, assigned inside the write transaction.
CREATE TABLE IF NOT EXISTS audit (
    id         {int} PRIMARY KEY,
    at_ms      {int} NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    outcome    TEXT    NOT NULL,
    target     TEXT    NOT NULL,   -- the Target as JSON
    tenant     TEXT,               -- the target's tenant, for filters (NULL: global)
    reason     TEXT,
    source     TEXT,
    request_id TEXT,
    version    {int} NOT NULL,
    prev_hash  TEXT    NOT NULL,
    hash       TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_tenant ON audit (tenant, id);
-- The receipts: one row per edge instance (see EdgeReceipt). Replaces `edges` (schema 2).
CREATE TABLE IF NOT EXISTS edge_receipts (
    edge            TEXT    NOT NULL,
    instance        TEXT    NOT NULL,   -- '' with the shared edge token
    credential      TEXT,               -- the edge credential's id; NULL: the shared token
    stream          TEXT,
    applied_version {int} NOT NULL,
    first_seen_ms   {int} NOT NULL,
    last_seen_ms    {int} NOT NULL,
    remote_addr     TEXT,
    PRIMARY KEY (edge, instance)
);
DROP TABLE IF EXISTS edges;
-- Per-edge credentials, stored as the SHA-256 of their token.
CREATE TABLE IF NOT EXISTS edge_credentials (
    id         TEXT    PRIMARY KEY,
    edge       TEXT    NOT NULL,
    sha256     TEXT    NOT NULL UNIQUE,
    created_ms {int} NOT NULL,
    created_by TEXT    NOT NULL,
    revoked_ms {int}
);
CREATE INDEX IF NOT EXISTS edge_credentials_by_edge ON edge_credentials (edge);
-- The jti of each IdP event that revoked something (see ReplayKey), until its token is
-- too old to pass: a replay is refused, also after a restart.
CREATE TABLE IF NOT EXISTS idp_replay (
    scope    TEXT    NOT NULL,
    jti      TEXT    NOT NULL,
    until_ms {int} NOT NULL,
    PRIMARY KEY (scope, jti)
);
CREATE INDEX IF NOT EXISTS idp_replay_by_until ON idp_replay (until_ms);
-- The tag of each version (see store/mod.rs): an edge's `since` proves its history.
CREATE TABLE IF NOT EXISTS history (
    version {int} PRIMARY KEY,
    tag     TEXT NOT NULL
);
-- Rollbacks noticed (a restore from a backup, a failover): the stream each one ended.
CREATE TABLE IF NOT EXISTS rollbacks (
    at_ms           {int} NOT NULL,
    previous_stream TEXT NOT NULL,
    stream          TEXT NOT NULL,
    reason          TEXT NOT NULL
);
-- Compaction has dropped every entry older than this: the announced horizon never
-- reaches back past it.
CREATE TABLE IF NOT EXISTS compaction (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    compacted_before {int} NOT NULL
);
-- Sessions the edges saw: bookkeeping, not history (rows unseen for --session-idle are
-- deleted). sid is '' for a token without one; start_key is then its session start
-- (else 0), so the key names the session either way.
CREATE TABLE IF NOT EXISTS sessions (
    tenant        TEXT    NOT NULL,
    user_id       TEXT    NOT NULL,
    sid           TEXT    NOT NULL,
    start_key     {int} NOT NULL,
    session_start {int} NOT NULL,   -- the latest reported (auth_time, else iat; seconds)
    first_seen_ms {int} NOT NULL,
    last_seen_ms  {int} NOT NULL,
    requests      {int} NOT NULL,
    device        TEXT    NOT NULL,
    address       TEXT,
    edge          TEXT    NOT NULL,   -- the edge of the latest sighting
    PRIMARY KEY (tenant, user_id, sid, start_key)
);
CREATE INDEX IF NOT EXISTS sessions_by_tenant ON sessions (tenant, last_seen_ms);
CREATE INDEX IF NOT EXISTS sessions_by_age ON sessions (last_seen_ms);
";

/// `n` random bytes as hex.
fn random_hex(n: usize) -> Result<String, StoreError> {
    let mut bytes = vec![0u8; n];
    getrandom::getrandom(&mut bytes).map_err(|e| StoreError::Random(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// 16 random bytes as hex: a new store never shares a stream with another.
pub fn new_stream_id() -> Result<String, StoreError> {
    random_hex(16)
}

/// Gives `version` its tag (8 random bytes): the same number written twice — before and
/// after a restore from a backup — gets two tags, so an edge's `since` tells them apart.
async fn tag_version(tx: &mut dyn Tx, version: u64) -> Result<String, StoreError> {
    let tag = random_hex(8)?;
    tx.execute(
        "INSERT INTO history (version, tag) VALUES ($1, $2)
         ON CONFLICT (version) DO UPDATE SET tag = excluded.tag",
        &params![version, &tag],
    )
    .await?;
    Ok(tag)
}

async fn tag_of(tx: &mut dyn Tx, version: u64) -> Result<Option<String>, StoreError> {
    match tx
        .opt(
            "SELECT tag FROM history WHERE version = $1",
            &params![version],
        )
        .await?
    {
        Some(mut row) => Ok(Some(row.take_text(0)?)),
        None => Ok(None),
    }
}

/// Sets `target`'s epoch at `version`: a schedule replaced (`replace`), an immediate epoch
/// by `max(existing, epoch_ms)` (a tombstone counts as nothing). Returns the stored epoch.
async fn upsert(
    tx: &mut dyn Tx,
    target: &Target,
    epoch_ms: u64,
    version: u64,
    now_ms: u64,
    replace: bool,
) -> Result<u64, StoreError> {
    let (scope, tenant, subject) = row_key(target);
    tx.one(
        "INSERT INTO revocations (scope, tenant, subject, epoch_ms, version, changed_ms)
         VALUES ($1, $2, $3, $6, $5, $4)
         ON CONFLICT (scope, tenant, subject) DO UPDATE SET
             epoch_ms = CASE
                 WHEN $7 THEN excluded.epoch_ms
                 WHEN coalesce(revocations.epoch_ms, 0) > excluded.epoch_ms
                     THEN revocations.epoch_ms
                 ELSE excluded.epoch_ms END,
             version = excluded.version,
             changed_ms = excluded.changed_ms
         RETURNING epoch_ms",
        &params![scope, tenant, subject, now_ms, version, epoch_ms, replace],
    )
    .await?
    .u64(0)
}

/// The live epoch of `target`, if any.
async fn epoch_of(tx: &mut dyn Tx, target: &Target) -> Result<Option<u64>, StoreError> {
    let (scope, tenant, subject) = row_key(target);
    match tx
        .opt(
            "SELECT epoch_ms FROM revocations WHERE scope = $1 AND tenant = $2 AND subject = $3",
            &params![scope, tenant, subject],
        )
        .await?
    {
        Some(row) => row.opt_u64(0),
        None => Ok(None),
    }
}

/// A scheduled logout whose time has passed happened: before it is replaced, its time
/// joins the immediate epoch it scheduled (by `max`), at the same version.
async fn fold_if_passed(
    tx: &mut dyn Tx,
    scheduled: &Target,
    version: u64,
    now_ms: u64,
) -> Result<(), StoreError> {
    let (Some(at_ms), Some(immediate)) = (epoch_of(tx, scheduled).await?, scheduled.folds_into())
    else {
        return Ok(());
    };
    if at_ms <= now_ms {
        upsert(tx, &immediate, at_ms, version, now_ms, false).await?;
    }
    Ok(())
}

/// Creates the `meta` row of a new store (a fresh stream at version 0) unless there is
/// one; returns `(stream, version)`. Run inside the backend's schema transaction.
pub async fn init_head(tx: &mut dyn Tx) -> Result<(String, u64), StoreError> {
    let stream = new_stream_id()?;
    tx.execute(
        "INSERT INTO meta (id, stream, version, floor) VALUES (1, $1, 0, 0)
         ON CONFLICT (id) DO NOTHING",
        &params![stream],
    )
    .await?;
    let mut row = tx
        .one("SELECT stream, version FROM meta WHERE id = 1", &[])
        .await?;
    Ok((row.take_text(0)?, row.u64(1)?))
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

/// A target from `(scope, tenant, subject)` starting at column `at`.
fn target_at(row: &mut Row, at: usize) -> Result<Target, StoreError> {
    let scope = row.take_text(at)?;
    let tenant = row.take_text(at + 1)?;
    let subject = row.take_text(at + 2)?;
    target_from_row(&scope, tenant, subject)
}

/// `(scope, tenant, subject, epoch_ms)` rows as changes.
fn changes(rows: Vec<Row>) -> Result<Vec<Change>, StoreError> {
    rows.into_iter()
        .map(|mut r| {
            Ok(Change {
                target: target_at(&mut r, 0)?,
                epoch_ms: r.opt_u64(3)?,
            })
        })
        .collect()
}

/// Compaction has dropped every entry older than this (ms; 0: never).
async fn compacted_before(tx: &mut dyn Tx) -> Result<u64, StoreError> {
    match tx
        .opt("SELECT compacted_before FROM compaction WHERE id = 1", &[])
        .await?
    {
        Some(row) => row.u64(0),
        None => Ok(0),
    }
}

async fn read_status(tx: &mut dyn Tx) -> Result<StoreStatus, StoreError> {
    let mut row = tx
        .one("SELECT stream, version, floor FROM meta WHERE id = 1", &[])
        .await?;
    Ok(StoreStatus {
        stream: row.take_text(0)?,
        version: row.u64(1)?,
        floor: row.u64(2)?,
    })
}

/// The next version: the counter row, bumped inside the caller's serial transaction.
async fn next_version(tx: &mut dyn Tx) -> Result<u64, StoreError> {
    tx.one(
        "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
        &[],
    )
    .await?
    .u64(0)
}

async fn revoke(tx: &mut dyn Tx, req: &RevokeRequest) -> Result<Revocation, StoreError> {
    let version = next_version(tx).await?;
    tag_version(tx, version).await?;
    let scheduled = req.target.is_scheduled();
    if scheduled {
        fold_if_passed(tx, &req.target, version, req.now_ms).await?;
    }
    // max(existing, now): a logout never moves an epoch back, even if the clock did.
    // A pending schedule is replaced by the new one (a passed one was folded above).
    let epoch_ms = upsert(
        tx,
        &req.target,
        req.at_ms.unwrap_or(req.now_ms),
        version,
        req.now_ms,
        scheduled,
    )
    .await?;
    let audit = append_audit(tx, &req.audit_record(action_name(&req.target)), version).await?;
    tx.announce(version).await?;
    Ok(Revocation {
        target: req.target.clone(),
        epoch_ms,
        version,
        audit,
    })
}

/// [`revoke`] once per key, in the same transaction: the key first — one already held
/// (and not expired) commits nothing but the purge of expired keys — then the
/// revocation. Expired keys are purged here, so the table holds only live ones.
async fn revoke_once(
    tx: &mut dyn Tx,
    req: &RevokeRequest,
    key: &ReplayKey,
) -> Result<Option<Revocation>, StoreError> {
    tx.execute(
        "DELETE FROM idp_replay WHERE until_ms < $1",
        &params![key.now_ms],
    )
    .await?;
    let fresh = tx
        .execute(
            "INSERT INTO idp_replay (scope, jti, until_ms) VALUES ($1, $2, $3)
             ON CONFLICT (scope, jti) DO NOTHING",
            &params![&key.scope, &key.jti, key.until_ms],
        )
        .await?;
    if fresh == 0 {
        return Ok(None);
    }
    revoke(tx, req).await.map(Some)
}

/// Appends one chained audit row inside the caller's serial transaction: id `last + 1`,
/// `prev_hash` the last row's hash (see [`crate::audit`]).
async fn append_audit(
    tx: &mut dyn Tx,
    rec: &AuditRecord,
    version: u64,
) -> Result<AuditHead, StoreError> {
    let last = tx
        .opt("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1", &[])
        .await?;
    let (id, prev_hash) = match last {
        Some(mut row) => (row.u64(0)? + 1, row.take_text(1)?),
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
        &params![
            id,
            rec.at_ms,
            &rec.actor,
            &rec.action,
            &rec.outcome,
            target_json,
            target_tenant(&rec.target),
            rec.reason.as_deref(),
            rec.source.as_deref(),
            rec.request_id.as_deref(),
            version,
            &prev_hash,
            &hash
        ],
    )
    .await?;
    Ok(AuditHead { id, hash })
}

const AUDIT_COLUMNS: &str =
    "id, at_ms, actor, action, outcome, target, reason, source, request_id, version, prev_hash, hash";

fn audit_from_row(mut r: Row) -> Result<AuditEntry, StoreError> {
    let id = r.u64(0)?;
    let target = r.take_text(5)?;
    let target = serde_json::from_str(&target)
        .map_err(|e| StoreError::Corrupt(format!("audit row {id} has a bad target: {e}")))?;
    Ok(AuditEntry {
        id,
        at_ms: r.u64(1)?,
        actor: r.take_text(2)?,
        action: r.take_text(3)?,
        outcome: r.take_text(4)?,
        target,
        reason: r.take_opt_text(6)?,
        source: r.take_opt_text(7)?,
        request_id: r.take_opt_text(8)?,
        version: r.u64(9)?,
        prev_hash: r.take_text(10)?,
        hash: r.take_text(11)?,
    })
}

const CREDENTIAL_COLUMNS: &str = "id, edge, created_ms, created_by, revoked_ms";

fn credential_from_row(mut r: Row) -> Result<EdgeCredential, StoreError> {
    Ok(EdgeCredential {
        id: r.take_text(0)?,
        edge: r.take_text(1)?,
        created_ms: r.u64(2)?,
        created_by: r.take_text(3)?,
        revoked_ms: r.opt_u64(4)?,
    })
}

/// Inside one snapshot transaction: the head, the tags and the rows agree.
async fn sync(
    tx: &mut dyn Tx,
    edge: &EdgePosition,
    page: Option<&PageRequest>,
) -> Result<SyncBatch, StoreError> {
    let status = read_status(tx).await?;
    let since = edge.since;
    let edge_stream = edge.stream.as_deref();
    let ours = edge_stream == Some(status.stream.as_str());
    let stored_tag = if ours && edge.tag.is_some() && since > 0 && since <= status.version {
        tag_of(tx, since).await?
    } else {
        None
    };
    let diverged = diverged(edge, &status, stored_tag.as_deref());
    // A tag that cannot be checked (a version written before tags were kept) is no proof
    // either way: a snapshot, which the edge merges, rather than a delta on a base that
    // may not be this store's.
    let unproven = ours && edge.tag.is_some() && since > 0 && stored_tag.is_none();
    let must_snapshot = diverged.is_some() || unproven;
    let compacted_before_ms = compacted_before(tx).await?;
    if let Some(page) = page {
        // Counted only when it decides something: a fresh or resumed snapshot does not
        // depend on it.
        let delta_rows = if page.resume.is_none()
            && !must_snapshot
            && !needs_snapshot(since, edge_stream, &status)
        {
            tx.one(
                "SELECT count(*) FROM revocations WHERE version > $1",
                &params![since],
            )
            .await?
            .u64(0)?
        } else {
            0
        };
        let plan = if must_snapshot && page.resume.is_none() {
            Some(status.version)
        } else {
            page_plan(since, edge_stream, &status, page, || Ok(delta_rows))?
        };
        if let Some(at) = plan {
            let (scope, tenant, subject) = page_after(page);
            let rows = tx
                .query(
                    "SELECT scope, tenant, subject, epoch_ms FROM revocations
                     WHERE epoch_ms IS NOT NULL AND version <= $1
                       AND (scope, tenant, subject) > ($2, $3, $4)
                     ORDER BY scope, tenant, subject LIMIT $5",
                    &params![at, scope, tenant, subject, page.limit as u64 + 1],
                )
                .await?;
            let mut batch = snapshot_page(status.stream, at, changes(rows)?, page.limit);
            batch.tag = tag_of(tx, at).await?;
            batch.diverged = diverged;
            batch.compacted_before_ms = compacted_before_ms;
            return Ok(batch);
        }
    }
    let snapshot = page.is_none() && (must_snapshot || needs_snapshot(since, edge_stream, &status));
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
            &params![since],
        )
        .await?
    };
    Ok(SyncBatch {
        tag: tag_of(tx, status.version).await?,
        stream: status.stream,
        version: status.version,
        snapshot,
        changes: changes(rows)?,
        next: None,
        diverged,
        compacted_before_ms,
    })
}

/// Cancels a pending scheduled logout: a removal at a new version, audited.
async fn cancel(tx: &mut dyn Tx, req: &RevokeRequest) -> Result<CancelOutcome, StoreError> {
    let Some(at_ms) = epoch_of(tx, &req.target).await? else {
        return Ok(CancelOutcome::NotFound);
    };
    if at_ms <= req.now_ms {
        return Ok(CancelOutcome::Passed { at_ms });
    }
    let version = next_version(tx).await?;
    tag_version(tx, version).await?;
    let (scope, tenant, subject) = row_key(&req.target);
    tx.execute(
        "UPDATE revocations SET epoch_ms = NULL, version = $1, changed_ms = $2
         WHERE scope = $3 AND tenant = $4 AND subject = $5",
        &params![version, req.now_ms, scope, tenant, subject],
    )
    .await?;
    let audit = append_audit(
        tx,
        &req.audit_record(cancel_action_name(&req.target)),
        version,
    )
    .await?;
    tx.announce(version).await?;
    Ok(CancelOutcome::Cancelled(Revocation {
        target: req.target.clone(),
        epoch_ms: at_ms,
        version,
        audit,
    }))
}

/// A new stream in place of `expected`, at a new version (so every open long-poll wakes
/// and its edge is answered a snapshot of the new stream).
async fn rotate_stream(
    tx: &mut dyn Tx,
    expected: &str,
    reason: &str,
    now_ms: u64,
) -> Result<Option<(Rollback, u64)>, StoreError> {
    let stream = new_stream_id()?;
    let changed = tx
        .execute(
            "UPDATE meta SET stream = $1 WHERE id = 1 AND stream = $2",
            &params![&stream, expected],
        )
        .await?;
    if changed == 0 {
        return Ok(None);
    }
    let version = next_version(tx).await?;
    tag_version(tx, version).await?;
    tx.execute(
        "INSERT INTO rollbacks (at_ms, previous_stream, stream, reason) VALUES ($1, $2, $3, $4)",
        &params![now_ms, expected, &stream, reason],
    )
    .await?;
    tx.announce(version).await?;
    Ok(Some((
        Rollback {
            at_ms: now_ms,
            previous_stream: expected.to_string(),
            stream,
            reason: reason.to_string(),
        },
        version,
    )))
}

async fn compact(
    tx: &mut dyn Tx,
    now_ms: u64,
    max_session_lifetime_s: u64,
) -> Result<CompactionReport, StoreError> {
    // is_compactable(epoch, now, L) is `epoch + L < now`, i.e. `epoch < now - L`; the
    // store-side test `compaction_matches_the_core_rule` pins the two together.
    let cutoff = now_ms.saturating_sub(max_session_lifetime_s.saturating_mul(1000));
    let mut report = CompactionReport::default();
    let expired = tx
        .one(
            "SELECT count(*) FROM revocations WHERE epoch_ms IS NOT NULL AND epoch_ms < $1",
            &params![cutoff],
        )
        .await?
        .u64(0)?;
    if expired > 0 {
        // One version for the whole run: the removals commit together.
        let version = next_version(tx).await?;
        tag_version(tx, version).await?;
        tx.execute(
            "UPDATE revocations SET epoch_ms = NULL, version = $1, changed_ms = $2
             WHERE epoch_ms IS NOT NULL AND epoch_ms < $3",
            &params![version, now_ms, cutoff],
        )
        .await?;
        // The horizon edges are told never lets a session older than this cutoff through
        // again (see `announced_horizon_s`).
        tx.execute(
            "INSERT INTO compaction (id, compacted_before) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET compacted_before = CASE
                 WHEN compaction.compacted_before > excluded.compacted_before
                     THEN compaction.compacted_before
                 ELSE excluded.compacted_before END",
            &params![cutoff],
        )
        .await?;
        tx.announce(version).await?;
        report.removed = expired;
    }
    // A tombstone is kept a whole lifetime after its removal, so an edge offline for
    // less than that still gets it as a delta; edges further behind get a snapshot,
    // which the floor enforces.
    let purged_max = tx
        .one(
            "SELECT max(version) FROM revocations WHERE epoch_ms IS NULL AND changed_ms < $1",
            &params![cutoff],
        )
        .await?
        .opt_u64(0)?;
    if let Some(purged_max) = purged_max {
        report.purged = tx
            .execute(
                "DELETE FROM revocations WHERE epoch_ms IS NULL AND changed_ms < $1",
                &params![cutoff],
            )
            .await?;
        tx.execute(
            "UPDATE meta SET floor = CASE WHEN floor > $1 THEN floor ELSE $1 END WHERE id = 1",
            &params![purged_max],
        )
        .await?;
        // Below the floor edges get snapshots: their tags are of no more use.
        tx.execute(
            "DELETE FROM history WHERE version < $1",
            &params![purged_max],
        )
        .await?;
    }
    report.purged_edges = tx
        .execute(
            "DELETE FROM edge_receipts WHERE last_seen_ms < $1",
            &params![cutoff],
        )
        .await?;
    let status = read_status(tx).await?;
    report.version = status.version;
    report.floor = status.floor;
    Ok(report)
}

/// Merges one sighting: the earliest first seen, the latest last seen (with its device,
/// address and edge), requests summed, the latest session start.
const MERGE_SESSION: &str = "
    INSERT INTO sessions (tenant, user_id, sid, start_key, session_start, first_seen_ms,
                          last_seen_ms, requests, device, address, edge)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (tenant, user_id, sid, start_key) DO UPDATE SET
        session_start = CASE WHEN excluded.session_start > sessions.session_start
                             THEN excluded.session_start ELSE sessions.session_start END,
        first_seen_ms = CASE WHEN excluded.first_seen_ms < sessions.first_seen_ms
                             THEN excluded.first_seen_ms ELSE sessions.first_seen_ms END,
        requests = sessions.requests + excluded.requests,
        device = CASE WHEN excluded.last_seen_ms >= sessions.last_seen_ms
                      THEN excluded.device ELSE sessions.device END,
        address = CASE WHEN excluded.last_seen_ms >= sessions.last_seen_ms
                       THEN excluded.address ELSE sessions.address END,
        edge = CASE WHEN excluded.last_seen_ms >= sessions.last_seen_ms
                    THEN excluded.edge ELSE sessions.edge END,
        last_seen_ms = CASE WHEN excluded.last_seen_ms > sessions.last_seen_ms
                            THEN excluded.last_seen_ms ELSE sessions.last_seen_ms END";

async fn record_sessions(
    tx: &mut dyn Tx,
    edge: &str,
    sessions: &[SessionSeen],
) -> Result<u64, StoreError> {
    for s in sessions {
        // The key: the sid, or for a token without one its session start.
        let (sid, start_key) = match &s.sid {
            Some(sid) => (sid.as_str(), 0),
            None => ("", s.session_start),
        };
        tx.execute(
            MERGE_SESSION,
            &params![
                &s.tenant,
                &s.user,
                sid,
                start_key,
                s.session_start,
                s.first_seen_ms,
                s.last_seen_ms,
                s.requests,
                &s.device,
                s.address.as_deref(),
                edge
            ],
        )
        .await?;
    }
    Ok(sessions.len() as u64)
}

fn session_from_row(mut r: Row) -> Result<SessionRecord, StoreError> {
    let sid = r.take_text(2)?;
    Ok(SessionRecord {
        tenant: r.take_text(0)?,
        user: r.take_text(1)?,
        sid: (!sid.is_empty()).then_some(sid),
        session_start: r.i64(3)?,
        first_seen_ms: r.u64(4)?,
        last_seen_ms: r.u64(5)?,
        requests: r.u64(6)?,
        device: r.take_text(7)?,
        address: r.take_opt_text(8)?,
        edge: r.take_text(9)?,
    })
}

impl<B: Backend> Store for SqlStore<B> {
    fn stream(&self) -> &str {
        &self.stream
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.versions.subscribe()
    }

    fn revoke(&self, request: RevokeRequest) -> BoxFuture<'_, Result<Revocation, StoreError>> {
        Box::pin(async move {
            let done = self
                .backend
                .run(Access::Serial, move |tx| {
                    Box::pin(async move { revoke(tx, &request).await })
                })
                .await?;
            self.versions.notify(done.version);
            Ok(done)
        })
    }

    fn revoke_once(
        &self,
        request: RevokeRequest,
        key: ReplayKey,
    ) -> BoxFuture<'_, Result<Option<Revocation>, StoreError>> {
        Box::pin(async move {
            let done = self
                .backend
                .run(Access::Serial, move |tx| {
                    Box::pin(async move { revoke_once(tx, &request, &key).await })
                })
                .await?;
            if let Some(done) = &done {
                self.versions.notify(done.version);
            }
            Ok(done)
        })
    }

    fn sync_paged(
        &self,
        edge: EdgePosition,
        page: Option<PageRequest>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>> {
        self.backend.run(Access::Snapshot, move |tx| {
            Box::pin(async move { sync(tx, &edge, page.as_ref()).await })
        })
    }

    fn cancel(&self, request: RevokeRequest) -> BoxFuture<'_, Result<CancelOutcome, StoreError>> {
        Box::pin(async move {
            let outcome = self
                .backend
                .run(Access::Serial, move |tx| {
                    Box::pin(async move { cancel(tx, &request).await })
                })
                .await?;
            if let CancelOutcome::Cancelled(done) = &outcome {
                self.versions.notify(done.version);
            }
            Ok(outcome)
        })
    }

    fn rotate_stream(
        &self,
        expected: String,
        reason: String,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<Rollback>, StoreError>> {
        Box::pin(async move {
            let rotated = self
                .backend
                .run(Access::Serial, move |tx| {
                    Box::pin(async move { rotate_stream(tx, &expected, &reason, now_ms).await })
                })
                .await?;
            Ok(rotated.map(|(rollback, version)| {
                self.versions.notify(version);
                rollback
            }))
        })
    }

    fn last_rollback(&self) -> BoxFuture<'_, Result<Option<Rollback>, StoreError>> {
        self.backend.run(Access::Autocommit, |tx| {
            Box::pin(async move {
                let row = tx
                    .opt(
                        "SELECT at_ms, previous_stream, stream, reason FROM rollbacks
                         ORDER BY at_ms DESC LIMIT 1",
                        &[],
                    )
                    .await?;
                row.map(|mut r| {
                    Ok(Rollback {
                        at_ms: r.u64(0)?,
                        previous_stream: r.take_text(1)?,
                        stream: r.take_text(2)?,
                        reason: r.take_text(3)?,
                    })
                })
                .transpose()
            })
        })
    }

    fn status(&self) -> BoxFuture<'_, Result<StoreStatus, StoreError>> {
        self.backend
            .run(Access::Autocommit, |tx| Box::pin(read_status(tx)))
    }

    fn record_edges(&self, receipts: Vec<EdgeReceipt>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.backend.run(Access::Batch, move |tx| {
            Box::pin(async move {
                for receipt in receipts {
                    tx.execute(
                        "INSERT INTO edge_receipts (edge, instance, credential, stream, applied_version,
                                                    first_seen_ms, last_seen_ms, remote_addr)
                         VALUES ($1, $2, $3, $4, $5, $6, $6, $7)
                         ON CONFLICT (edge, instance) DO UPDATE SET
                             credential = excluded.credential,
                             stream = excluded.stream,
                             applied_version = excluded.applied_version,
                             last_seen_ms = excluded.last_seen_ms,
                             remote_addr = excluded.remote_addr",
                        &params![
                            receipt.edge,
                            receipt.instance,
                            receipt.credential,
                            receipt.stream,
                            receipt.applied_version,
                            receipt.now_ms,
                            receipt.remote_addr
                        ],
                    )
                    .await?;
                }
                Ok(())
            })
        })
    }

    fn edges(&self) -> BoxFuture<'_, Result<Vec<EdgeRecord>, StoreError>> {
        self.backend.run(Access::Autocommit, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT edge, instance, credential, stream, applied_version, first_seen_ms,
                                last_seen_ms, remote_addr
                         FROM edge_receipts ORDER BY edge, instance",
                        &[],
                    )
                    .await?;
                rows.into_iter()
                    .map(|mut r| {
                        Ok(EdgeRecord {
                            id: r.take_text(0)?,
                            instance: r.take_text(1)?,
                            credential: r.take_opt_text(2)?,
                            stream: r.take_opt_text(3)?,
                            applied_version: r.u64(4)?,
                            first_seen_ms: r.u64(5)?,
                            last_seen_ms: r.u64(6)?,
                            remote_addr: r.take_opt_text(7)?,
                        })
                    })
                    .collect()
            })
        })
    }

    fn tenant_revocations(&self, tenant: String) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT scope, tenant, subject, epoch_ms, version FROM revocations
                         WHERE epoch_ms IS NOT NULL
                           AND (tenant = $1 OR scope IN ('global', 'scheduled_global'))
                         ORDER BY version",
                        &params![tenant],
                    )
                    .await?;
                rows.into_iter()
                    .map(|mut r| {
                        Ok(Entry {
                            target: target_at(&mut r, 0)?,
                            epoch_ms: r.u64(3)?,
                            version: r.u64(4)?,
                        })
                    })
                    .collect()
            })
        })
    }

    fn tenant_seen(&self, tenant: String) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                tx.one(
                    "SELECT EXISTS (SELECT 1 FROM revocations WHERE tenant = $1)
                         OR EXISTS (SELECT 1 FROM audit WHERE tenant = $1)",
                    &params![tenant],
                )
                .await?
                .bool(0)
            })
        })
    }

    fn record_audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<AuditHead, StoreError>> {
        self.backend.run(Access::Serial, move |tx| {
            Box::pin(async move {
                let version = read_status(tx).await?.version;
                append_audit(tx, &record, version).await
            })
        })
    }

    fn create_edge_credential(
        &self,
        credential: NewEdgeCredential,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<AuditHead, StoreError>> {
        self.backend.run(Access::Serial, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "INSERT INTO edge_credentials (id, edge, sha256, created_ms, created_by)
                     VALUES ($1, $2, $3, $4, $5)",
                    &params![
                        credential.id,
                        credential.edge,
                        credential.sha256,
                        credential.created_ms,
                        credential.created_by
                    ],
                )
                .await?;
                let version = read_status(tx).await?.version;
                append_audit(tx, &audit, version).await
            })
        })
    }

    fn edge_credentials(&self) -> BoxFuture<'_, Result<Vec<EdgeCredential>, StoreError>> {
        self.backend.run(Access::Autocommit, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        &format!("SELECT {CREDENTIAL_COLUMNS} FROM edge_credentials ORDER BY created_ms, id"),
                        &[],
                    )
                    .await?;
                rows.into_iter().map(credential_from_row).collect()
            })
        })
    }

    fn edge_credential_by_digest(
        &self,
        sha256: String,
    ) -> BoxFuture<'_, Result<Option<EdgeCredential>, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                tx.opt(
                    &format!("SELECT {CREDENTIAL_COLUMNS} FROM edge_credentials WHERE sha256 = $1"),
                    &params![sha256],
                )
                .await?
                .map(credential_from_row)
                .transpose()
            })
        })
    }

    fn revoke_edge_credentials(
        &self,
        edge: String,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<Option<(u64, AuditHead)>, StoreError>> {
        self.backend.run(Access::Serial, move |tx| {
            Box::pin(async move {
                let revoked = tx
                    .execute(
                        "UPDATE edge_credentials SET revoked_ms = $1
                         WHERE edge = $2 AND revoked_ms IS NULL",
                        &params![audit.at_ms, edge],
                    )
                    .await?;
                if revoked == 0 {
                    return Ok(None);
                }
                let version = read_status(tx).await?.version;
                let head = append_audit(tx, &audit, version).await?;
                Ok(Some((revoked, head)))
            })
        })
    }

    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {AUDIT_COLUMNS} FROM audit
                             WHERE (CAST($1 AS TEXT) IS NULL OR tenant = $1)
                               AND (CAST($2 AS TEXT) IS NULL OR actor = $2)
                               AND (CAST($3 AS TEXT) IS NULL OR action = $3)
                               AND (CAST($4 AS TEXT) IS NULL OR outcome = $4)
                               AND (CAST($5 AS BIGINT) IS NULL OR at_ms >= $5)
                               AND (CAST($6 AS BIGINT) IS NULL OR at_ms <= $6)
                             ORDER BY id DESC LIMIT $7"
                        ),
                        &params![
                            filter.tenant,
                            filter.actor,
                            filter.action,
                            filter.outcome,
                            filter.since_ms,
                            filter.until_ms,
                            filter.limit
                        ],
                    )
                    .await?;
                rows.into_iter().map(audit_from_row).collect()
            })
        })
    }

    fn audit_chain(&self) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>> {
        self.backend.run(Access::Autocommit, |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        &format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id"),
                        &[],
                    )
                    .await?;
                rows.into_iter().map(audit_from_row).collect()
            })
        })
    }

    fn record_sessions(
        &self,
        edge: String,
        sessions: Vec<SessionSeen>,
    ) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.backend.run(Access::Batch, move |tx| {
            Box::pin(async move { record_sessions(tx, &edge, &sessions).await })
        })
    }

    fn sessions(
        &self,
        filter: SessionFilter,
    ) -> BoxFuture<'_, Result<Vec<SessionRecord>, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                let pattern = filter.query.as_deref().map(super::like_pattern);
                let rows = tx
                    .query(
                        "SELECT tenant, user_id, sid, session_start, first_seen_ms, last_seen_ms,
                                requests, device, address, edge
                         FROM sessions
                         WHERE tenant = $1
                           AND (CAST($2 AS TEXT) IS NULL OR user_id = $2)
                           AND (CAST($3 AS TEXT) IS NULL OR lower(user_id) LIKE $3 ESCAPE '\\')
                           AND last_seen_ms >= $4
                         ORDER BY last_seen_ms DESC, user_id, sid, start_key
                         LIMIT $5",
                        &params![
                            &filter.tenant,
                            filter.user.as_deref(),
                            pattern,
                            filter.seen_since_ms,
                            filter.limit
                        ],
                    )
                    .await?;
                rows.into_iter().map(session_from_row).collect()
            })
        })
    }

    fn session_tenants(
        &self,
        seen_since_ms: u64,
    ) -> BoxFuture<'_, Result<Vec<String>, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                let rows = tx
                    .query(
                        "SELECT DISTINCT tenant FROM sessions WHERE last_seen_ms >= $1
                         ORDER BY tenant LIMIT 1000",
                        &params![seen_since_ms],
                    )
                    .await?;
                rows.into_iter().map(|mut r| r.take_text(0)).collect()
            })
        })
    }

    fn drop_idle_sessions(&self, cutoff_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>> {
        self.backend.run(Access::Autocommit, move |tx| {
            Box::pin(async move {
                tx.execute(
                    "DELETE FROM sessions WHERE last_seen_ms < $1",
                    &params![cutoff_ms],
                )
                .await
            })
        })
    }

    fn compact(
        &self,
        now_ms: u64,
        max_session_lifetime_s: u64,
    ) -> BoxFuture<'_, Result<CompactionReport, StoreError>> {
        Box::pin(async move {
            let report = self
                .backend
                .run(Access::Serial, move |tx| {
                    Box::pin(compact(tx, now_ms, max_session_lifetime_s))
                })
                .await?;
            if report.removed > 0 {
                self.versions.notify(report.version);
            }
            Ok(report)
        })
    }
}
