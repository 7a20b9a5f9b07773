//! What every handler shares: the store, the validated config, the counters behind
//! `/metrics`, and the shutdown signal that answers open long-polls at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::store::Store;

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
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ServerConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        AppState {
            inner: Arc::new(Shared {
                store,
                config,
                metrics: Metrics::default(),
                shutdown,
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
