//! Epochgate's control plane: takes admin revocations over HTTP, stores them durably,
//! and hands them to the edges (Envoy filters, Workers) through a long-poll.
//!
//! An admin call (`POST /v1/tenants/acme/users/42/logout`) commits a new epoch for the
//! target under the next `version`, then wakes every edge's `GET /v1/sync` long-poll;
//! each edge answers with the version it applied on its next poll, which is how
//! `GET /v1/edges` shows that a logout has reached every live edge. See DESIGN.md,
//! "Sync protocol" and "Control plane".
//!
//! # Layout
//! - [`api`]: the axum router ([`app`]), admin and sync handlers, the JSON error type.
//! - [`store`]: the [`store::Store`] trait and its SQLite backend (versions, epochs,
//!   compaction, audit, edge receipts).
//! - [`auth`]: the admin and edge bearer tokens, compared in constant time.
//! - [`config`]: `serve` flags → validated [`config::ServeConfig`].
//! - [`state`]: [`AppState`] shared by handlers: store, config, metrics, shutdown.
//! - [`cli`], [`client`]: the `epochgate` command line and the admin commands' HTTP client.
//! - [`demo`]: DEV/DEMO ONLY — the public demo signing key and a token minter.
//! - [`demo_upstream`]: DEV/DEMO ONLY — the demo's stand-in for the portal app.
//! - [`serve`]: runs the app on a listener with compaction and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::time::MissedTickBehavior;

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod demo_upstream;
pub mod rbac;
pub mod state;
pub mod store;
pub mod tls;

pub use api::app;
pub use state::AppState;

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from (`unknown` outside a checkout).
pub const GIT_HASH: &str = env!("EPOCHGATE_GIT_HASH");

/// Milliseconds since the Unix epoch, from the system clock (0 if it is before 1970).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Serves [`app`] on `listener` until `shutdown` resolves, with compaction running in
/// the background every `compact_interval`.
///
/// When `shutdown` resolves, open long-polls are answered at once (an empty delta at the
/// current version), new connections are refused, and the call returns once in-flight
/// requests are done — so a restart never leaves edges hanging for the rest of their
/// `wait`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_on(Transport::Plain(listener), state, shutdown).await
}

/// Like [`serve`], over HTTPS (see [`tls`]).
pub async fn serve_tls(
    listener: TcpListener,
    tls: std::sync::Arc<tokio_rustls::rustls::ServerConfig>,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tls::TlsListener::new(listener, tls).context("the TLS listener")?;
    serve_on(Transport::Tls(listener), state, shutdown).await
}

enum Transport {
    Plain(TcpListener),
    Tls(tls::TlsListener),
}

async fn serve_on(
    transport: Transport,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use axum::serve::ListenerExt;
    let compactor = tokio::spawn(compaction_loop(state.clone()));
    let signal_state = state.clone();
    let graceful = async move {
        shutdown.await;
        tracing::info!("shutting down: answering open long-polls");
        signal_state.begin_shutdown();
    };
    let make = app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let result = match transport {
        Transport::Plain(listener) => {
            axum::serve(listener, make)
                .with_graceful_shutdown(graceful)
                .await
        }
        // `tap_io` gives a custom listener the `ConnectInfo<SocketAddr>` the handlers use.
        Transport::Tls(listener) => {
            axum::serve(listener.tap_io(|_| {}), make)
                .with_graceful_shutdown(graceful)
                .await
        }
    };
    // Also when the server failed: stop the compactor before returning.
    state.begin_shutdown();
    if let Err(err) = compactor.await {
        tracing::warn!(error = %err, "the compaction task ended abnormally");
    }
    result.context("the HTTP server failed")
}

/// Compacts every `compact_interval` (the first run at start) until shutdown.
async fn compaction_loop(state: AppState) {
    let mut ticks = tokio::time::interval(state.config().compact_interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = state.shutdown_signal();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let lifetime = state.config().max_session_lifetime_s;
        match state.store().compact(now_ms(), lifetime).await {
            Ok(report) if report.removed > 0 || report.purged > 0 || report.purged_edges > 0 => {
                tracing::info!(
                    removed = report.removed,
                    purged = report.purged,
                    purged_edges = report.purged_edges,
                    version = report.version,
                    floor = report.floor,
                    "compaction"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "compaction failed; retrying next interval"),
        }
    }
}
