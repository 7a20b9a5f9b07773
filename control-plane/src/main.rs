//! `epochgate`: parse flags, set up tracing, then either serve (bind, print the address,
//! run until SIGTERM/Ctrl-C) or run one admin command against a running server.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use epochgate_control_plane::cli::{Cli, Command};
use epochgate_control_plane::config::{LogFormat, ServeArgs, ServeConfig};
use epochgate_control_plane::{client, serve, store, AppState, GIT_HASH, VERSION};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => {
            init_tracing("info", args.log_format);
            run_serve(*args).await
        }
        Command::DemoUpstream(args) => {
            init_tracing("info", LogFormat::Text);
            run_demo_upstream(args.listen).await
        }
        command => {
            init_tracing("warn", LogFormat::Text);
            client::run(cli.client, command).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("epochgate: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr (stdout carries the `listening on` line and command output);
/// `RUST_LOG` overrides the default level.
fn init_tracing(default: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    tracing::info!(
        version = VERSION,
        git = GIT_HASH,
        "epochgate control plane starting"
    );
    let config = ServeConfig::try_from(args).context("invalid serve configuration")?;
    // Load the certificate before opening anything: a bad one is a config error.
    let tls = match &config.tls {
        Some((cert, key)) => Some(epochgate_control_plane::tls::server_config(cert, key)?),
        None => None,
    };
    // The URL may hold a password: logs and errors show it redacted.
    let db = store::redact_url(&config.db);
    let store = store::open_with(&config.db, &config.pg)
        .await
        .with_context(|| format!("cannot open the store {db}"))?;
    tracing::info!(db = %db, stream = store.stream(), "store open");
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // One line on stdout, flushed: scripts and tests that pass port 0 read the port here.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "listening on {scheme}://{addr}").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    drop(stdout);
    tracing::info!(%addr, scheme, "listening");
    let metrics = match config.metrics_listen {
        Some(at) => {
            let listener = tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("cannot listen on --metrics-listen {at}"))?;
            let addr = listener
                .local_addr()
                .context("cannot read the metrics address")?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "metrics on http://{addr}").context("writing to stdout")?;
            stdout.flush().context("flushing stdout")?;
            tracing::info!(%addr, "metrics listening");
            Some(listener)
        }
        None => None,
    };
    let state = AppState::new(store, config.server);
    if let Some(listener) = metrics {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(err) = epochgate_control_plane::serve_metrics(listener, state).await {
                tracing::error!(error = %err, "the metrics listener stopped");
            }
        });
    }
    match tls {
        Some(tls) => {
            epochgate_control_plane::serve_tls(listener, tls, state, shutdown_signal()).await
        }
        None => serve(listener, state, shutdown_signal()).await,
    }
}

async fn run_demo_upstream(listen: std::net::SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    println!("demo upstream listening on http://{addr}");
    epochgate_control_plane::demo_upstream::serve(listener, shutdown_signal()).await
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
