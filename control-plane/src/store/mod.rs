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
//! - **Epochs only move forward.** A logout sets `max(existing, now)`. A scheduled logout
//!   whose time has passed is a logout that happened: replacing or cancelling it first
//!   folds it into the immediate epoch (tenant, global) by `max`, in the same transaction;
//!   a passed one cannot be cancelled.
//! - **Every version has a tag** (random, in `history`), answered with it; an edge sends
//!   it back with `since`. A restore from a backup (or a failover to a replica that
//!   lagged) brings version numbers back with other content: an edge whose `since` is
//!   ahead of the store, or whose tag differs, is on a history this store does not have
//!   ([`diverged`]) — the store then starts a new stream ([`Store::rotate_stream`]),
//!   which edges merge into what they hold.
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
pub mod pg_config;
pub mod postgres;
pub mod sql;
pub mod sqlite;

pub use self::core::SqlStore;
pub use pg_config::{redact_url, PgOptions};
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
    #[error("bad store URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the Postgres pool: {0}")]
    Pool(String),
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

impl RevokeRequest {
    /// The audit entry of this write, committed as `action`.
    pub fn audit_record(&self, action: &str) -> AuditRecord {
        AuditRecord {
            at_ms: self.now_ms,
            actor: self.actor.clone(),
            action: action.to_string(),
            outcome: "ok".into(),
            target: self.target.clone(),
            reason: self.reason.clone(),
            source: self.source.clone(),
            request_id: self.request_id.clone(),
        }
    }
}

/// The `jti` of an IdP's event (see [`crate::idp`]), committed with the revocation it
/// causes so that the same token is never acted on twice, also after a restart. Kept
/// until `until_ms` (when the token's `iat` could no longer pass); expired keys are
/// purged by the next write that brings a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayKey {
    /// Whose `jti`s these are: `<idp>/<receiver>`.
    pub scope: String,
    pub jti: String,
    pub until_ms: u64,
    pub now_ms: u64,
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

/// What `GET /v1/sync` answers, before the HTTP layer adds the horizon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncBatch {
    pub stream: String,
    pub version: u64,
    pub snapshot: bool,
    pub changes: Vec<Change>,
    /// A paged snapshot: the cursor of the next page (see [`PageRequest`]).
    pub next: Option<String>,
    /// The tag of `version` (`None` for a version written before tags were kept).
    pub tag: Option<String>,
    /// The edge is on a history this store does not have (see [`diverged`]): why.
    pub diverged: Option<String>,
    /// Compaction has dropped every entry older than this (ms): see
    /// [`announced_horizon_s`].
    pub compacted_before_ms: u64,
}

/// Where an edge says it is: what it sends with `GET /v1/sync`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgePosition {
    /// The version it applied (0: none).
    pub since: u64,
    pub stream: Option<String>,
    /// The tag of `since` it was answered (absent from edges that do not keep tags).
    pub tag: Option<String>,
    /// Its id, for the reason of a divergence.
    pub edge: String,
}

/// Whether an edge's position is on a history this store does not have — the store was
/// restored from a backup or failed over to a replica that lagged — and why. Only an
/// edge of *this* stream can tell: another stream simply gets a snapshot.
///
/// - `since > version`: the edge applied versions this store never wrote (any more);
/// - the tag of `since` differs from the edge's: the store was written to again after
///   the restore, up to and past the edge's version, with other content. Without the
///   tag, such an edge would long-poll "up to date" and miss the new versions for good.
///
/// `stored_tag` is the store's tag of `since` (`None`: none kept, e.g. written before
/// tags were: not proof of anything).
pub fn diverged(
    edge: &EdgePosition,
    status: &StoreStatus,
    stored_tag: Option<&str>,
) -> Option<String> {
    if edge.stream.as_deref() != Some(status.stream.as_str()) || edge.since == 0 {
        return None;
    }
    if edge.since > status.version {
        return Some(format!(
            "edge {} reported version {} of stream {}, ahead of the store's {}",
            edge.edge, edge.since, status.stream, status.version
        ));
    }
    match (edge.tag.as_deref(), stored_tag) {
        (Some(theirs), Some(ours)) if theirs != ours => Some(format!(
            "edge {} reported version {} of stream {} with tag {theirs}, which is not this store's version {} (tag {ours}): written to again after a rollback",
            edge.edge, edge.since, status.stream, edge.since
        )),
        _ => None,
    }
}

/// The compaction horizon to announce (`max_session_lifetime_s`): the configured lifetime,
/// except that it may grow only as fast as time passes since compaction last dropped
/// entries — raising `--max-session-lifetime` must not let a session through whose
/// logout was already compacted under the lower one (the cutoff `now - horizon` never
/// moves back).
pub fn announced_horizon_s(lifetime_s: u64, compacted_before_ms: u64, now_ms: u64) -> u64 {
    let since_cutoff_s = now_ms.saturating_sub(compacted_before_ms) / 1000;
    lifetime_s.min(since_cutoff_s).max(1)
}

/// A detected rollback: the stream it ended and the one that replaced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub at_ms: u64,
    pub previous_stream: String,
    pub stream: String,
    pub reason: String,
}

/// What a cancel came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// Cancelled (a removal at a new version, audited); `epoch_ms` is the time it was set
    /// for.
    Cancelled(Revocation),
    /// Its time has passed: it took effect, and a logout is not undone.
    Passed { at_ms: u64 },
    /// There is no scheduled logout for the target.
    NotFound,
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
        tag: None,
        diverged: None,
        compacted_before_ms: 0,
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
    /// The edge: its credential's name, or (with the shared demo token) the `?edge=` it
    /// gave.
    pub edge: String,
    /// Which instance of the edge (a Worker isolate, one Envoy of a fleet sharing a
    /// credential): the `?edge=` it gave under a credential; empty with the shared token.
    pub instance: String,
    /// The id of the credential it synced with (`None`: the shared demo token).
    pub credential: Option<String>,
    /// The stream the edge holds, if it said (absent before its first snapshot).
    pub stream: Option<String>,
    pub applied_version: u64,
    pub now_ms: u64,
    pub remote_addr: Option<String>,
}

/// What the store knows of one edge instance (see [`EdgeReceipt`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRecord {
    pub id: String,
    pub instance: String,
    pub credential: Option<String>,
    pub stream: Option<String>,
    pub applied_version: u64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub remote_addr: Option<String>,
}

/// A new per-edge credential: only the SHA-256 of its token is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEdgeCredential {
    /// A public id (shown in listings and receipts; not a secret).
    pub id: String,
    pub edge: String,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    pub created_ms: u64,
    /// The admin who created it (the audit actor).
    pub created_by: String,
}

/// A stored edge credential (never its token or digest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeCredential {
    pub id: String,
    pub edge: String,
    pub created_ms: u64,
    pub created_by: String,
    /// When it was revoked; from then on it syncs no more.
    pub revoked_ms: Option<u64>,
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

/// The audit action name of cancelling the schedule `target`.
pub fn cancel_action_name(target: &Target) -> &'static str {
    match target {
        Target::ScheduledGlobal => "cancel_scheduled_logout_all_tenants",
        _ => "cancel_scheduled_logout_tenant",
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

    /// [`Store::revoke`], once per `key`: the key is recorded in the same transaction,
    /// and a key already recorded (and not expired) commits nothing and answers `None`.
    fn revoke_once(
        &self,
        request: RevokeRequest,
        key: ReplayKey,
    ) -> BoxFuture<'_, Result<Option<Revocation>, StoreError>>;

    /// A delta after `since`, or a snapshot (see [`needs_snapshot`]), read consistently.
    fn sync(
        &self,
        since: u64,
        edge_stream: Option<String>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>> {
        let edge = EdgePosition {
            since,
            stream: edge_stream,
            ..EdgePosition::default()
        };
        self.sync_paged(edge, None)
    }

    /// [`Store::sync`] for an edge at `edge` (its tag checked, see [`diverged`]) that may
    /// take snapshots in pages (see [`PageRequest`]).
    fn sync_paged(
        &self,
        edge: EdgePosition,
        page: Option<PageRequest>,
    ) -> BoxFuture<'_, Result<SyncBatch, StoreError>>;

    /// Cancels the pending scheduled logout `request.target` (see [`CancelOutcome`];
    /// `at_ms` is not used).
    fn cancel(&self, request: RevokeRequest) -> BoxFuture<'_, Result<CancelOutcome, StoreError>>;

    /// Starts a new stream in place of `expected` (if it is still the store's: of
    /// several edges or replicas noticing one rollback, one rotates), recording why.
    /// `None` if the stream had already changed.
    fn rotate_stream(
        &self,
        expected: String,
        reason: String,
        now_ms: u64,
    ) -> BoxFuture<'_, Result<Option<Rollback>, StoreError>>;

    /// The last rollback detected, if any.
    fn last_rollback(&self) -> BoxFuture<'_, Result<Option<Rollback>, StoreError>>;

    fn status(&self) -> BoxFuture<'_, Result<StoreStatus, StoreError>>;

    /// Upserts an edge's receipt (last seen, applied version, address).
    fn record_edge(&self, receipt: EdgeReceipt) -> BoxFuture<'_, Result<(), StoreError>> {
        self.record_edges(vec![receipt])
    }

    /// Upserts several edges' receipts in one transaction (in order: a later receipt of
    /// the same edge instance wins). A bookkeeping write: it takes no serial lock.
    fn record_edges(&self, receipts: Vec<EdgeReceipt>) -> BoxFuture<'_, Result<(), StoreError>>;

    fn edges(&self) -> BoxFuture<'_, Result<Vec<EdgeRecord>, StoreError>>;

    /// The live entries of one tenant (tenant, user and session entries) and the global one.
    fn tenant_revocations(&self, tenant: String) -> BoxFuture<'_, Result<Vec<Entry>, StoreError>>;

    /// Whether any revocation (live or compacted) or audit entry names `tenant`.
    fn tenant_seen(&self, tenant: String) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Appends an audit entry that changes no state (a refused attempt), chained like
    /// every other.
    fn record_audit(&self, record: AuditRecord) -> BoxFuture<'_, Result<AuditHead, StoreError>>;

    /// Stores a new edge credential and its audit row, in one serial transaction.
    fn create_edge_credential(
        &self,
        credential: NewEdgeCredential,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<AuditHead, StoreError>>;

    /// Every edge credential, revoked ones included, oldest first.
    fn edge_credentials(&self) -> BoxFuture<'_, Result<Vec<EdgeCredential>, StoreError>>;

    /// The credential whose token has this hex SHA-256, revoked or not.
    fn edge_credential_by_digest(
        &self,
        sha256: String,
    ) -> BoxFuture<'_, Result<Option<EdgeCredential>, StoreError>>;

    /// Revokes every live credential of `edge` at `audit.at_ms`, with the audit row, in
    /// one serial transaction: how many, and the audit head. `None` (nothing written)
    /// when the edge has no live credential.
    fn revoke_edge_credentials(
        &self,
        edge: String,
        audit: AuditRecord,
    ) -> BoxFuture<'_, Result<Option<(u64, AuditHead)>, StoreError>>;

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
    open_with(url, &PgOptions::default()).await
}

/// [`open`] with the Postgres settings that are not in the URL (password, pool).
pub async fn open_with(url: &str, pg: &PgOptions) -> Result<Arc<dyn Store>, StoreError> {
    let refused = || StoreError::UnsupportedUrl(pg_config::redact_url(url));
    let path = match url.split_once("://") {
        Some(("postgres" | "postgresql", _)) => {
            return Ok(Arc::new(PgStore::connect_with(url, pg).await?))
        }
        Some(("sqlite", path)) => path.to_string(),
        Some(_) => return Err(refused()),
        None => url.to_string(),
    };
    if path.is_empty() {
        return Err(refused());
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

    fn edge(since: u64, stream: Option<&str>, tag: Option<&str>) -> EdgePosition {
        EdgePosition {
            since,
            stream: stream.map(str::to_string),
            tag: tag.map(str::to_string),
            edge: "e1".into(),
        }
    }

    #[test]
    fn an_edge_on_another_history_of_this_stream_is_told_apart() {
        let st = status(10, 4);
        assert_eq!(
            diverged(&edge(10, Some("s1"), Some("a")), &st, Some("a")),
            None
        );
        assert_eq!(
            diverged(&edge(7, Some("s1"), None), &st, Some("a")),
            None,
            "no tag sent"
        );
        assert_eq!(
            diverged(&edge(7, Some("s1"), Some("a")), &st, None),
            None,
            "no tag kept"
        );
        assert_eq!(
            diverged(&edge(0, Some("s1"), Some("a")), &st, Some("b")),
            None
        );
        assert_eq!(
            diverged(&edge(12, Some("s2"), Some("a")), &st, None),
            None,
            "another stream"
        );
        assert_eq!(
            diverged(&edge(12, None, None), &st, None),
            None,
            "no stream said"
        );
        let ahead = diverged(&edge(12, Some("s1"), None), &st, None).unwrap();
        assert!(
            ahead.contains("version 12 of stream s1, ahead of the store's 10"),
            "{ahead}"
        );
        let other = diverged(&edge(9, Some("s1"), Some("a")), &st, Some("b")).unwrap();
        assert!(other.contains("not this store's version 9"), "{other}");
    }

    #[test]
    fn the_announced_horizon_grows_no_faster_than_time_since_the_last_cutoff() {
        let day = 86_400;
        let now = 1_800_000_000_000;
        assert_eq!(
            announced_horizon_s(90 * day, 0, now),
            90 * day,
            "never compacted"
        );
        // Compaction ran with a 1-day lifetime; then it was raised to 90 days.
        let cutoff = now - day * 1000;
        assert_eq!(announced_horizon_s(90 * day, cutoff, now), day);
        assert_eq!(
            announced_horizon_s(90 * day, cutoff, now + 5 * day * 1000),
            6 * day
        );
        assert_eq!(
            announced_horizon_s(day, cutoff, now + 5 * day * 1000),
            day,
            "lowered"
        );
        assert_eq!(announced_horizon_s(day, now, now), 1, "never 0");
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
