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
//! - [`store`]: the [`store::Store`] trait, written once ([`store::SqlStore`]) over SQLite
//!   and Postgres (versions, epochs, compaction, audit, edge receipts and credentials).
//! - [`auth`]: the admin and edge bearer tokens, compared in constant time.
//! - [`rbac`]: who may do what (admin token, API keys, admin JWTs, the shared edge token).
//! - [`config`]: `serve` flags → validated [`config::ServeConfig`].
//! - [`sessions`]: the sessions the edges report, judged by the edges' revocation rule
//!   and grouped by user (the users list, the console).
//! - [`console`]: the admin console at `/console/` (server-rendered pages).
//! - [`text`]: caller-supplied text made safe to show (control and bidi characters).
//! - [`fanout`]: one store read and one serialized sync answer for the long-polls that
//!   ask the same at once.
//! - [`state`]: [`AppState`] shared by handlers: store, config, metrics, shutdown.
//! - [`cli`], [`client`]: the `epochgate` command line and the admin commands' HTTP client.
//! - [`demo`]: DEV/DEMO ONLY — the public demo signing key and a token minter.
//! - [`demo_upstream`]: DEV/DEMO ONLY — the demo's stand-in for the portal app.
//! - [`text`]: caller-supplied text escaped for display (CLI, console).
//! - [`idp`]: logouts that start at the IdP: Back-Channel Logout and SET (CAEP) receivers.
//! - [`serve`]: runs the app on a listener with compaction and graceful shutdown.

use std::future::Future;
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
pub mod console;
pub mod demo;
pub mod demo_upstream;
pub mod fanout;
pub mod idp;
pub mod rbac;
pub mod sessions;
pub mod state;
pub mod store;
pub mod text;
pub mod tls;

pub use api::{app, metrics_app};
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
/// Each connection is served by hyper's HTTP/1.1 server with a header read timeout
/// ([`config::ServerConfig::header_read_timeout`]): `axum::serve` sets no timer, so a
/// client sending its headers a byte at a time (slowloris) could hold a connection
/// forever. Other requests are never stalled by one: every connection is its own task.
///
/// When `shutdown` resolves, open long-polls are answered at once (an empty delta at the
/// current version), new connections are refused, and the call returns once in-flight
/// requests are done — or, at the latest, after [`config::ServerConfig::drain_timeout`],
/// cutting what is left — so a restart never leaves edges hanging for the rest of their
/// `wait`, and a stuck client never holds a restart up. At most
/// [`config::ServerConfig::max_connections`] connections are served at once.
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
    let compactor = tokio::spawn(compaction_loop(state.clone()));
    tokio::spawn(idp::warm_up(state.clone()));
    let router = app(state.clone());
    let result = match transport {
        Transport::Plain(listener) => accept_loop(listener, router, state.clone(), shutdown).await,
        Transport::Tls(listener) => accept_loop(listener, router, state.clone(), shutdown).await,
    };
    // Also when the server failed: stop the compactor before returning.
    state.begin_shutdown();
    if let Err(err) = compactor.await {
        tracing::warn!(error = %err, "the compaction task ended abnormally");
    }
    result.context("the HTTP server failed")
}

/// Serves [`metrics_app`] (`--metrics-listen`) until the main server shuts down.
pub async fn serve_metrics(listener: TcpListener, state: AppState) -> anyhow::Result<()> {
    let mut shutdown = state.shutdown_signal();
    let stop = async move {
        let _ = shutdown.wait_for(|s| *s).await;
    };
    accept_loop(listener, metrics_app(state.clone()), state, stop)
        .await
        .context("the metrics server failed")
}

async fn accept_loop<L>(
    mut listener: L,
    router: axum::Router,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let header_timeout = state.config().header_read_timeout;
    let drain = state.config().drain_timeout;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(
        state.config().max_connections.max(1),
    ));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A free slot first: at the limit the server stops accepting, and new clients
        // wait in the kernel's queue instead of costing a task each.
        let slot = tokio::select! {
            slot = std::sync::Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // closed: never, but nothing left to serve
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            // The listener retries failed accepts itself (out of file descriptors and
            // the like), and for TLS hands over only finished handshakes.
            accepted = listener.accept() => accepted,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone().map_request(
            move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(remote));
                req
            },
        ));
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(error = %err, %remote, "connection ended with an error");
                    }
                    return;
                }
                _ = closing.wait_for(|c| *c) => conn.as_mut().graceful_shutdown(),
            }
            if let Err(err) = conn.await {
                tracing::debug!(error = %err, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: answering open long-polls");
    state.begin_shutdown();
    let _ = closing_tx.send(true);
    let drained = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            cut = connections.len(),
            drain_s = drain.as_secs_f64(),
            "connections still busy at the drain deadline were cut"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Compacts every `compact_interval` (the first run at start), and drops the sessions
/// unseen for `--session-idle`, until shutdown.
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
        let idle_ms = u64::try_from(state.config().session_idle.as_millis()).unwrap_or(u64::MAX);
        match state
            .store()
            .drop_idle_sessions(now_ms().saturating_sub(idle_ms))
            .await
        {
            Ok(0) => {}
            Ok(dropped) => tracing::info!(dropped, "idle sessions dropped"),
            Err(err) => {
                tracing::warn!(error = %err, "cannot drop idle sessions; retrying next interval")
            }
        }
    }
}
