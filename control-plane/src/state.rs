//! What every handler shares: the store, the validated config, the counters behind
//! `/metrics`, and the shutdown signal that answers open long-polls at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::console::session::ConsoleSessions;
use crate::store::{AuditHead, Store};

/// Shared state of the HTTP app. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

struct Shared {
    store: Arc<dyn Store>,
    config: ServerConfig,
    metrics: Metrics,
    shutdown: watch::Sender<bool>,
    /// Bumped after each edge receipt this replica records (wakes `?wait=` writes).
    receipts: watch::Sender<u64>,
    /// Serializes appends to the anchor file.
    anchor: std::sync::Mutex<()>,
    /// The console's sign-in sessions.
    console: ConsoleSessions,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        let (receipts, _) = watch::channel(0);
        AppState {
            inner: Arc::new(Shared {
                store,
                config,
                metrics: Metrics::default(),
                shutdown,
                receipts,
                anchor: std::sync::Mutex::new(()),
                console: ConsoleSessions::default(),
            }),
        }
    }

    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The console's sign-in sessions (this replica's).
    pub fn console(&self) -> &ConsoleSessions {
        &self.inner.console
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
    /// `--audit-anchor`, a synced line in the anchor file. A failure is logged and
    /// counted, never answered: the revocation it follows is committed and must stand.
    pub fn anchor(&self, head: &AuditHead) {
        tracing::info!(id = head.id, hash = %head.hash, "audit head");
        let Some(path) = &self.inner.config.audit_anchor else {
            return;
        };
        let _serial = self
            .inner
            .anchor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(err) = crate::audit::append_anchor(path, head) {
            self.inner.metrics.anchor_failed();
            tracing::error!(error = %err, path = %path.display(), id = head.id, "cannot append to the audit anchor");
        }
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

/// Counters for `/metrics`. Plain atomics: a handful of numbers do not need a registry.
#[derive(Debug, Default)]
pub struct Metrics {
    admin_writes_total: AtomicU64,
    sync_requests_total: AtomicU64,
    long_polls_open: AtomicU64,
    anchor_failures_total: AtomicU64,
}

impl Metrics {
    pub fn admin_write(&self) {
        self.admin_writes_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn sync_request(&self) {
        self.sync_requests_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a long-poll as open until the guard drops — also when the edge hangs up
    /// and axum drops the handler mid-wait.
    pub fn open_long_poll(&self) -> LongPollGuard<'_> {
        self.long_polls_open.fetch_add(1, Ordering::Relaxed);
        LongPollGuard(self)
    }

    pub fn anchor_failed(&self) {
        self.anchor_failures_total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn anchor_failures_total(&self) -> u64 {
        self.anchor_failures_total.load(Ordering::Relaxed)
    }

    pub fn admin_writes_total(&self) -> u64 {
        self.admin_writes_total.load(Ordering::Relaxed)
    }

    pub fn sync_requests_total(&self) -> u64 {
        self.sync_requests_total.load(Ordering::Relaxed)
    }

    pub fn long_polls_open(&self) -> u64 {
        self.long_polls_open.load(Ordering::Relaxed)
    }
}

/// See [`Metrics::open_long_poll`].
pub struct LongPollGuard<'a>(&'a Metrics);

impl Drop for LongPollGuard<'_> {
    fn drop(&mut self) {
        self.0.long_polls_open.fetch_sub(1, Ordering::Relaxed);
    }
}
