//! What every handler shares: the store, the validated config, the counters behind
//! `/metrics`, and the shutdown signal that answers open long-polls at once.

use std::collections::HashMap;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use tokio::sync::watch;

use crate::api::sync::SharedBatch;
use crate::config::ServerConfig;
use crate::console::session::ConsoleSessions;
use crate::fanout::{Coalesce, Receipts, SyncKey};
use crate::idp::Idps;
use crate::store::{AuditHead, EdgeCredential, EdgeReceipt, Store};

/// Shared state of the HTTP app. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    config: ServerConfig,
    /// The IdPs of `--idp-config` with their key caches (see [`crate::idp`]).
    idps: Idps,
    metrics: Metrics,
    shutdown: watch::Sender<bool>,
    /// Bumped after each edge receipt this replica records (wakes `?wait=` writes).
    receipts: watch::Sender<u64>,
    /// Serializes appends to the anchor file.
    anchor: Arc<std::sync::Mutex<()>>,
    /// How many refusals each credential may still have audited (see [`RefusalLimiter`]).
    refusals: RefusalLimiter,
    /// The console's sign-in sessions.
    console: ConsoleSessions,
    /// Sync answers shared by the long-polls asking the same at once (see [`crate::fanout`]).
    sync_answers: Coalesce<SyncKey, Arc<SharedBatch>>,
    /// The edges' receipts, committed in batches.
    receipts_queue: Arc<Receipts>,
    /// The edge credentials as read once for the polls one version woke.
    credentials_at: Coalesce<(), Arc<HashMap<String, EdgeCredential>>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        let (receipts, _) = watch::channel(0);
        AppState {
            inner: Arc::new(Shared {
                store,
                idps: Idps::new(&config.idps),
                config,
                metrics: Metrics::default(),
                shutdown,
                receipts,
                anchor: Arc::new(std::sync::Mutex::new(())),
                refusals: RefusalLimiter::default(),
                console: ConsoleSessions::default(),
                sync_answers: Coalesce::default(),
                receipts_queue: Arc::default(),
                credentials_at: Coalesce::default(),
            }),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn idps(&self) -> &Idps {
        &self.inner.idps
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The budget of audited refusals per credential.
    pub fn refusals(&self) -> &RefusalLimiter {
        &self.inner.refusals
    }

    /// The console's sign-in sessions (this replica's).
    pub fn console(&self) -> &ConsoleSessions {
        &self.inner.console
    }

    /// See [`crate::fanout`].
    pub(crate) fn sync_answers(&self) -> &Coalesce<SyncKey, Arc<SharedBatch>> {
        &self.inner.sync_answers
    }

    pub(crate) fn credentials_at(&self) -> &Coalesce<(), Arc<HashMap<String, EdgeCredential>>> {
        &self.inner.credentials_at
    }

    /// Records an edge's receipt (in a batch with the others arriving now) and returns
    /// once it is committed, or its batch failed (logged: a receipt never fails a sync).
    pub async fn record_receipt(&self, receipt: EdgeReceipt) {
        let state = self.clone();
        self.inner
            .receipts_queue
            .record(Arc::clone(&self.inner.store), receipt, move || {
                state.receipt_recorded()
            })
            .await;
    }

    /// Announces that an edge receipt was recorded.
    pub fn receipt_recorded(&self) {
        self.inner.receipts.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes after each edge receipt this replica records.
    pub fn receipts(&self) -> watch::Receiver<u64> {
        self.inner.receipts.subscribe()
    }

    /// Records the audit chain's new head: a log line (for log shipping) and, with
    /// `--audit-anchor`, a synced line in the anchor file — on a blocking thread, so a
    /// slow disk (an fsync) never stalls the async workers. A failure is logged and
    /// counted, never answered: the revocation it follows is committed and must stand.
    pub async fn anchor(&self, head: &AuditHead) {
        tracing::info!(id = head.id, hash = %head.hash, "audit head");
        let Some(path) = self.inner.config.audit_anchor.clone() else {
            return;
        };
        let serial = Arc::clone(&self.inner.anchor);
        let line = head.clone();
        let at = path.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _serial = serial
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            crate::audit::append_anchor(&at, &line)
        })
        .await;
        let err = match written {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(join) => join.to_string(),
        };
        self.inner.metrics.anchor_failed();
        tracing::error!(error = %err, path = %path.display(), id = head.id, "cannot append to the audit anchor");
    }

    /// Tells open long-polls and background tasks to finish now.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// A receiver that turns `true` when shutdown begins (check with `wait_for`, which
    /// also sees a shutdown that began before the subscription).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}

/// What `/metrics` shows: counters and gauges kept by the handlers (prometheus-client),
/// and, at each scrape, the state version and each edge's lag read from the store.
///
/// Labels are bounded: an edge label is an edge as `GET /v1/edges` lists it — a
/// credential's name, with its instances (a Worker's isolates) folded in — never an
/// instance id, a user or a tenant.
#[derive(Debug, Default)]
pub struct Metrics {
    admin_writes: Counter,
    sync_requests: Counter,
    sync_store_reads: Counter,
    anchor_failures: Counter,
    refusals_limited: Counter,
    long_polls_open: Gauge,
}

/// One edge's row at a scrape.
#[derive(Debug, Clone)]
pub struct EdgeSample {
    pub edge: String,
    pub live: bool,
    pub lag: u64,
    pub instances: u64,
}

fn gauge(value: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

impl Metrics {
    pub fn admin_write(&self) {
        self.admin_writes.inc();
    }

    pub fn sync_request(&self) {
        self.sync_requests.inc();
    }

    /// A store read made to answer sync requests (one per question and version, shared
    /// by the polls asking it; see [`crate::fanout`]).
    pub fn sync_store_read(&self) {
        self.sync_store_reads.inc();
    }

    /// Counts a long-poll as open until the guard drops — also when the edge hangs up
    /// and axum drops the handler mid-wait.
    pub fn open_long_poll(&self) -> LongPollGuard<'_> {
        self.long_polls_open.inc();
        LongPollGuard(self)
    }

    pub fn anchor_failed(&self) {
        self.anchor_failures.inc();
    }

    /// A refusal answered 429 and not audited ([`RefusalLimiter`]).
    pub fn refusal_limited(&self) {
        self.refusals_limited.inc();
    }

    pub fn anchor_failures_total(&self) -> u64 {
        self.anchor_failures.get()
    }

    pub fn admin_writes_total(&self) -> u64 {
        self.admin_writes.get()
    }

    pub fn sync_requests_total(&self) -> u64 {
        self.sync_requests.get()
    }

    pub fn long_polls_open(&self) -> u64 {
        u64::try_from(self.long_polls_open.get()).unwrap_or(0)
    }

    /// The OpenMetrics text of a scrape: these counters, the state version, the edges
    /// (`None`: the store could not list them; their series are left out), and what
    /// `extra` registers (the IdP receivers' counters).
    pub fn encode(
        &self,
        state_version: u64,
        edges: Option<&[EdgeSample]>,
        extra: impl FnOnce(&mut Registry),
    ) -> String {
        let mut r = Registry::default();
        r.register(
            "epochgate_build",
            "The running control plane's build",
            Info::new(vec![
                ("version".to_string(), crate::VERSION.to_string()),
                ("git".to_string(), crate::GIT_HASH.to_string()),
            ]),
        );
        r.register(
            "epochgate_state_version",
            "The last committed state version",
            gauge(state_version),
        );
        r.register(
            "epochgate_admin_writes",
            "Admin revocations committed since start",
            self.admin_writes.clone(),
        );
        r.register(
            "epochgate_sync_requests",
            "Sync requests from edges since start",
            self.sync_requests.clone(),
        );
        r.register(
            "epochgate_sync_store_reads",
            "Store reads made to answer sync requests: one per question and version, shared by the long-polls that ask it at once",
            self.sync_store_reads.clone(),
        );
        r.register(
            "epochgate_sync_long_polls_open",
            "Sync long-polls held open now",
            self.long_polls_open.clone(),
        );
        r.register(
            "epochgate_refusals_rate_limited",
            "Refused attempts answered 429 and not audited: the credential was refused too often",
            self.refusals_limited.clone(),
        );
        r.register(
            "epochgate_audit_anchor_failures",
            "Audit heads that could not be appended to --audit-anchor",
            self.anchor_failures.clone(),
        );
        if let Some(edges) = edges {
            let lag = Family::<Vec<(String, String)>, Gauge>::default();
            let instances = Family::<Vec<(String, String)>, Gauge>::default();
            for e in edges {
                let labels = vec![
                    ("edge".to_string(), e.edge.clone()),
                    ("live".to_string(), e.live.to_string()),
                ];
                lag.get_or_create(&labels)
                    .set(i64::try_from(e.lag).unwrap_or(i64::MAX));
                instances
                    .get_or_create(&labels)
                    .set(i64::try_from(e.instances).unwrap_or(i64::MAX));
            }
            r.register(
                "epochgate_edge_lag",
                "Versions an edge (its slowest live instance) is behind the current one",
                lag,
            );
            r.register(
                "epochgate_edge_instances",
                "Instances of an edge seen (a Worker's isolates, Envoys sharing a credential)",
                instances,
            );
            r.register(
                "epochgate_edges_live",
                "Edges seen within the live window",
                gauge(edges.iter().filter(|e| e.live).count() as u64),
            );
        }
        extra(&mut r);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// Refused attempts a credential may have audited: a burst of
/// [`RefusalLimiter::BURST`], then one per [`RefusalLimiter::REFILL`]. Past it a
/// refusal is answered 429 without writing to the store, so a low-privilege key cannot
/// flood the audit log, nor queue its refusals on the writer lock ahead of real
/// logouts. Keyed by the credential's name (not the operator it names), so bounded by
/// the configured credentials (and the admin JWTs' subjects, pruned when idle).
#[derive(Debug, Default)]
pub struct RefusalLimiter {
    buckets: std::sync::Mutex<std::collections::HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: tokio::time::Instant,
}

impl RefusalLimiter {
    pub const BURST: f64 = 10.0;
    pub const REFILL: std::time::Duration = std::time::Duration::from_secs(6);
    /// Past this many credentials, the full (idle) buckets are dropped.
    const MAX_TRACKED: usize = 10_000;

    /// Takes one refusal from `credential`'s budget; `Err(retry after)` when empty.
    pub fn allow(&self, credential: &str) -> Result<(), std::time::Duration> {
        let now = tokio::time::Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let refill = |b: &Bucket| {
            let earned = now.duration_since(b.at).as_secs_f64() / Self::REFILL.as_secs_f64();
            (b.tokens + earned).min(Self::BURST)
        };
        if buckets.len() >= Self::MAX_TRACKED {
            buckets.retain(|_, b| refill(b) < Self::BURST);
        }
        let bucket = buckets.entry(credential.to_string()).or_insert(Bucket {
            tokens: Self::BURST,
            at: now,
        });
        bucket.tokens = refill(bucket);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Self::REFILL.mul_f64(1.0 - bucket.tokens))
        }
    }
}

/// See [`Metrics::open_long_poll`].
pub struct LongPollGuard<'a>(&'a Metrics);

impl Drop for LongPollGuard<'_> {
    fn drop(&mut self) {
        self.0.long_polls_open.dec();
    }
}
