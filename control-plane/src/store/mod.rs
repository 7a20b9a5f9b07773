//! Storage behind one trait, so SQLite (one control plane) and Postgres (several
//! replicas) serve the same handlers.
//!
//! # Layout
//! - this file: the [`Store`] trait, its types, and the rules both backends share
//!   ([`needs_snapshot`], [`page_plan`], …);
//! - [`core`]: [`SqlStore`], the one implementation of [`Store`] — every operation's
//!   SQL, row mapping, audit chaining, change notification;
//! - [`sql`]: the seam it runs on (values, rows, the [`sql::Tx`] and [`sql::Backend`]
//!   traits);
//! - [`sqlite`], [`postgres`]: the two backends (connections, transactions, schema,
//!   cross-replica notification).
//!
//! What every backend must guarantee (the conformance tests in `tests/store.rs` check it):
//! - **Serial versions.** Each write takes the next `version` from a counter inside its own
//!   transaction, so commit order is version order. An edge at `since = V` asks for
//!   `version > V`; with a sequence, two writers could commit V+2 before V+1 and the edge
//!   would skip V+1 forever — a revoked session passing.
//! - **Committed before answered.** [`Store::revoke`] returns only after the commit is
//!   durable; the HTTP 200 follows it.
//! - **Epochs only move forward.** A logout sets `max(existing, now)`.
//! - **Notification after commit.** [`Store::subscribe`] yields the highest committed
//!   version; a long-poll subscribes *before* it reads, so a racing commit is never missed.
//!   On Postgres this watch is fed by `LISTEN/NOTIFY`, so every replica wakes its polls.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use epochgate_core::state::Target;
use epochgate_core::sync::{page_cursor, Change};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub mod core;
pub mod postgres;
pub mod sql;
pub mod sqlite;

pub use self::core::SqlStore;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// A boxed future, so that [`Store`] can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store operation failed. Never sent to clients: the HTTP layer logs it and answers
/// a generic 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot create the directory {path}: {source}")]
    CreateDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot generate a stream id: {0}")]
    Random(String),
    #[error("store data is inconsistent: {0}")]
    Corrupt(String),
    #[error("a store connection lock was poisoned by a panic")]
    Poisoned,
    #[error("the blocking store task failed: {0}")]
    Task(String),
    #[error("unsupported store URL {0:?}: use sqlite://PATH, a plain file path, or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
}

/// One admin write: who revoked what, when, why, from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeRequest {
    pub target: Target,
    /// The revocation time (ms since the Unix epoch). The stored epoch is
    /// `max(existing, now_ms)` — or, for a scheduled logout, `at_ms`, which replaces the
    /// previous schedule (it may move earlier).
    pub now_ms: u64,
    /// A scheduled logout's time (scheduled targets only).
    pub at_ms: Option<u64>,
    pub actor: String,
    pub reason: Option<String>,
    /// The client's address, for the audit log.
    pub source: Option<String>,
    /// The request's id (`x-request-id`), for the audit log.
    pub request_id: Option<String>,
}

/// An audit entry that changes nothing: a refused attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub target: Target,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
}

/// The newest audit entry after a write: what `--audit-anchor` keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    pub id: u64,
    pub hash: String,
}

/// The filters of `GET /v1/audit`; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// At most this many rows, newest first.
    pub limit: u32,
    pub tenant: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub since_ms: Option<u64>,
    pub until_ms: Option<u64>,
}

impl AuditFilter {
    /// The newest `limit` rows, unfiltered.
    pub fn newest(limit: u32) -> Self {
        AuditFilter {
            limit,
            ..Default::default()
        }
    }
}

/// The result of a committed write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub target: Target,
    /// The epoch now stored for the target (may be later than the request's `now_ms`
    /// if an earlier write set a later one: epochs never go back).
    pub epoch_ms: u64,
    /// The version this write committed as.
    pub version: u64,
    /// The audit entry written with it.
    pub audit: AuditHead,
}

/// What `GET /v1/sync` answers, before the HTTP layer adds the config's lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBatch {
    pub stream: String,
    pub version: u64,
    pub snapshot: bool,
    pub changes: Vec<Change>,
    /// A paged snapshot: the cursor of the next page (see [`PageRequest`]).
    pub next: Option<String>,
}

/// An edge that takes snapshots in pages (`?limit=`), and where it resumes one.
///
/// A page holds the live entries of snapshot version `V` (rows whose last change is at
/// or before `V`) after a cursor, in key order. Rows changed after `V` are left out: the
/// edge's next delta (`since=V`) brings them, removals included. A delta larger than a
/// page is answered as a paged snapshot instead, so no answer outgrows Envoy's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    /// `(V, the target after which to continue)`.
    pub resume: Option<(u64, Target)>,
}

/// The SQL row key to resume a page after (`('', '', '')` sorts before every row).
pub fn page_after(page: &PageRequest) -> (String, String, String) {
    match &page.resume {
        None => (String::new(), String::new(), String::new()),
        Some((_, target)) => {
            let (scope, tenant, subject) = row_key(target);
            (scope.to_string(), tenant.to_string(), subject.to_string())
        }
    }
}

/// A snapshot page from up to `limit + 1` rows read in key order: the first `limit`,
/// and the cursor after the last of them when there were more (both backends).
pub fn snapshot_page(
    stream: String,
    version: u64,
    mut changes: Vec<Change>,
    limit: usize,
) -> SyncBatch {
    let next = (changes.len() > limit).then(|| {
        changes.truncate(limit);
        changes
            .last()
            .map(|c| page_cursor(&c.target))
            .unwrap_or_default()
    });
    SyncBatch {
        stream,
        version,
        snapshot: true,
        changes,
        next,
    }
}

/// What a paged request gets: `Some(V)` = a snapshot page at version `V`.
pub fn page_plan(
    since: u64,
    edge_stream: Option<&str>,
    status: &StoreStatus,
    page: &PageRequest,
    delta_rows: impl FnOnce() -> Result<u64, StoreError>,
) -> Result<Option<u64>, StoreError> {
    if let Some((v, _)) = &page.resume {
        if edge_stream == Some(status.stream.as_str()) && *v <= status.version {
            return Ok(Some(*v));
        }
        // Another history, or a version this store never had: start over.
        return Ok(Some(status.version));
    }
    if needs_snapshot(since, edge_stream, status) || delta_rows()? > page.limit as u64 {
        return Ok(Some(status.version));
    }
    Ok(None)
}

/// `(scope, tenant, subject)`: the row key of a target (both backends).
pub fn row_key(target: &Target) -> (&'static str, &str, &str) {
    match target {
        Target::Global => ("global", "", ""),
        Target::Tenant { tenant } => ("tenant", tenant, ""),
        Target::User { tenant, user } => ("user", tenant, user),
        Target::Session { tenant, sid } => ("session", tenant, sid),
        Target::ScheduledGlobal => ("scheduled_global", "", ""),
        Target::ScheduledTenant { tenant } => ("scheduled_tenant", tenant, ""),
    }
}

/// The store's head: which history, how far, and below which version deltas are gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreStatus {
    pub stream: String,
    pub version: u64,
    /// The highest version purged by compaction: an edge behind it needs a snapshot.
    pub floor: u64,
}

/// Whether an edge at `since` (of `edge_stream`, if it said) must get a snapshot instead
/// of a delta. Shared by every backend so they cannot disagree.
///
/// - `since == 0` without a stream: the edge holds nothing yet. With this store's
///   stream, `since == 0` means it applied the (empty) snapshot of a new store: it gets
///   a delta — and so a long-poll — or it would be answered a snapshot at once on every
///   poll and spin until the first write.
/// - `since < floor`: removals it has not seen were purged; a delta would miss them.
/// - `since > version`: it holds a future this store never wrote (a restored backup, a
///   different store answering under the same address).
/// - another stream: its versions mean nothing here.
pub fn needs_snapshot(since: u64, edge_stream: Option<&str>, status: &StoreStatus) -> bool {
    (since == 0 && edge_stream.is_none())
        || since < status.floor
        || since > status.version
        || edge_stream.is_some_and(|s| s != status.stream)
}

/// A live entry, as `GET /v1/tenants/{tenant}/revocations` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub target: Target,
    pub epoch_ms: u64,
    /// The version of the entry's last change.
    pub version: u64,
}

/// An edge's receipt: `since` on a sync request is the version it has applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeReceipt {
    pub edge: String,
    /// The stream the edge holds, if it said (absent before its first snapshot).
    pub stream: Option<String>,
    pub applied_version: u64,
    pub now_ms: u64,
    pub remote_addr: Option<String>,
}

/// What the store knows of one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRecord {
    pub id: String,
    pub stream: Option<String>,
    pub applied_version: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub remote_addr: Option<String>,
}

/// A session as the store keeps it: the edges' sightings merged (first seen the
/// earliest, last seen the latest, requests summed; device, address and edge from the
/// latest sighting; the session start the latest reported).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub tenant: String,
    pub user: String,
    pub sid: Option<String>,
    pub session_start: i64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub requests: u64,
    pub device: String,
    pub address: Option<String>,
    pub edge: String,
}

/// Which sessions [`Store::sessions`] reads: one tenant's (one user's), seen since
/// `seen_since_ms`, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFilter {
    pub tenant: String,
    pub user: Option<String>,
    /// Users whose id contains this (case-insensitive for ASCII).
    pub query: Option<String>,
    pub seen_since_ms: u64,
    pub limit: u32,
}

/// `%…%` for `LIKE … ESCAPE '\'`: `query` lower-cased, its `%`, `_` and `\` escaped.
pub fn like_pattern(query: &str) -> String {
    let mut out = String::with_capacity(query.len() + 2);
    out.push('%');
    for c in query.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// One audit log row. `hash` chains it to the previous row (see [`crate::audit`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: u64,
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    /// `ok`, or `denied` for a refused attempt.
    pub outcome: String,
    pub target: Target,
    pub reason: Option<String>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// The version the action committed as (for a refusal: the version at the time).
    pub version: u64,
    pub prev_hash: String,
    pub hash: String,
}

/// The tenant column of an audit row (`None` for the global target).
pub fn target_tenant(target: &Target) -> Option<&str> {
    match target {
        Target::Global | Target::ScheduledGlobal => None,
        Target::Tenant { tenant }
        | Target::ScheduledTenant { tenant }
        | Target::User { tenant, .. }
        | Target::Session { tenant, .. } => Some(tenant),
    }
}

/// What one compaction run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CompactionReport {
    /// Entries turned into tombstones (sent to edges as removals).
    pub removed: u64,
    /// Tombstones (and edges) deleted for good.
    pub purged: u64,
    pub purged_edges: u64,
    pub version: u64,
    pub floor: u64,
}

/// The audit action name of a write to `target`.
pub fn action_name(target: &Target) -> &'static str {
    match target {
        Target::Global => "logout_all_tenants",
        Target::Tenant { .. } => "logout_tenant",
        Target::User { .. } => "logout_user",
        Target::Session { .. } => "revoke_session",
        Target::ScheduledGlobal => "schedule_logout_all_tenants",
        Target::ScheduledTenant { .. } => "schedule_logout_tenant",
    }
}

/// The storage operations of the control plane. Every method takes owned arguments so
/// a backend can move them onto a blocking thread or into a connection pool.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The history id, fixed when the store was created.
    fn stream(&self) -> &str;

    /// The highest committed version, updated after every commit (see the module doc).
    fn subscribe(&self) -> watch::Receiver<u64>;

    /// Commits one revocation (a counter bump, the entry and its audit row, in one
    /// transaction) and returns once it is durable.
    fn revoke(&self, request: RevokeRequest) -> BoxFuture<'_, Result<Revocation, StoreError>>;

    /// A delta after `since`, or a snapshot (see [`needs_snapshot`]), read consistently.
    fn sync(
        &self,
        since: u64,
        edge_stream: Option<String>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>> {
        self.sync_paged(since, edge_stream, None)
    }

    /// [`Store::sync`] for an edge that takes snapshots in pages (see [`PageRequest`]).
    fn sync_paged(
        &self,
        since: u64,
        edge_stream: Option<String>,
        page: Option<PageRequest>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>>;

    fn status(&self) -> BoxFuture<'_, Result<StoreStatus, StoreError>>;

    /// Upserts an edge's receipt (last seen, applied version, address).
    fn record_edge(&self, receipt: EdgeReceipt) -> BoxFuture<'_, Result<(), StoreError>>;

    fn edges(&self) -> BoxFuture<'_, Result<Vec<EdgeRecord>, StoreError>>;

    /// The live entries of one tenant (tenant, user and session entries) and the global one.
    fn tenant_revocations(&self, tenant: String) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>>;

    /// Whether any revocation (live or compacted) or audit entry names `tenant`.
    fn tenant_seen(&self, tenant: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Appends an audit entry that changes no state (a refused attempt), chained like
    /// every other.
    fn record_audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<AuditHead, StoreError>>;

    /// The newest `filter.limit` audit rows that match, newest first.
    fn audit(&self, filter: AuditFilter) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>>;

    /// Every audit row, oldest first (for `epochgate audit verify`).
    fn audit_chain(&self) -> BoxFuture<'_, Result<Vec<AuditEntry>, StoreError>>;

    /// Merges the sessions an edge reports (see [`SessionRecord`]) in one transaction
    /// that never holds up a revocation; returns how many it merged.
    fn record_sessions(
        &self,
        edge: String,
        sessions: Vec<epochgate_core::sessions::SessionSeen>,
    ) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The sessions that match `filter`, most recently seen first.
    fn sessions(
        &self,
        filter: SessionFilter,
    ) -> BoxFuture<'_, Result<Vec<SessionRecord>, StoreError>>;

    /// The tenants with sessions seen since `seen_since_ms` (at most 1000, by name): the
    /// console's tenant picker.
    fn session_tenants(&self, seen_since_ms: u64)
        -> BoxFuture<'_, Result<Vec<String>, StoreError>>;

    /// Deletes the sessions last seen before `cutoff_ms`; returns how many.
    fn drop_idle_sessions(&self, cutoff_ms: u64) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Turns entries older than the session lifetime into tombstones (a new version, so
    /// edges receive the removal as a delta), deletes tombstones and edges unseen for
    /// longer than the lifetime, and raises the floor to the highest purged version.
    fn compact(
        &self,
        now_ms: u64,
        max_session_lifetime_s: u64,
    ) -> BoxFuture<'_, Result<CompactionReport, StoreError>>;
}

/// Opens the store named by `url`: `sqlite://PATH` or a plain path (SQLite), or
/// `postgres://…` / `postgresql://…` (Postgres, for several replicas). Other schemes are
/// refused by name.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let path = match url.split_once("://") {
        Some(("postgres" | "postgresql", _)) => return Ok(Arc::new(PgStore::connect(url).await?)),
        Some(("sqlite", path)) => path.to_string(),
        Some(_) => return Err(StoreError::UnsupportedUrl(url.to_string())),
        None => url.to_string(),
    };
    if path.is_empty() {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    }
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(path))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))??;
    Ok(Arc::new(store))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(version: u64, floor: u64) -> StoreStatus {
        StoreStatus {
            stream: "s1".into(),
            version,
            floor,
        }
    }

    #[test]
    fn snapshot_selection() {
        let st = status(10, 4);
        assert!(needs_snapshot(0, None, &st), "since 0");
        assert!(
            !needs_snapshot(0, Some("s1"), &status(0, 0)),
            "the empty snapshot of this stream was applied"
        );
        assert!(
            needs_snapshot(0, Some("s2"), &status(0, 0)),
            "since 0, other stream"
        );
        assert!(needs_snapshot(3, None, &st), "below the floor");
        assert!(!needs_snapshot(4, None, &st), "at the floor");
        assert!(!needs_snapshot(10, Some("s1"), &st), "current");
        assert!(needs_snapshot(11, None, &st), "ahead of the store");
        assert!(needs_snapshot(7, Some("s2"), &st), "other stream");
        assert!(!needs_snapshot(7, None, &st), "no stream given");
    }

    #[test]
    fn action_names() {
        assert_eq!(action_name(&Target::Global), "logout_all_tenants");
        assert_eq!(
            action_name(&Target::Session {
                tenant: "t".into(),
                sid: "s".into()
            }),
            "revoke_session"
        );
    }
}
