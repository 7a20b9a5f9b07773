//! End-to-end: a real Envoy (`.venv/bin/envoy`) running the built `.wasm`, and a real
//! workerd (`node_modules/.bin/workerd`) running the built Cloudflare Worker, with the
//! real `epochgate` binary on a SQLite file and a small upstream, all on 127.0.0.1.
//!
//! Build first: `make build build-worker` (the `epochgate` binary, the shipped filter
//! `target/filter-dist/epochgate_filter.wasm` and the worker in `target/worker-dist`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "e2e/app_view.rs"]
mod app_view;
#[path = "e2e/config.rs"]
mod config;
#[path = "e2e/console.rs"]
mod console;
#[path = "e2e/demo.rs"]
mod demo;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/hostile.rs"]
mod hostile;
#[path = "e2e/hostile_tokens.rs"]
mod hostile_tokens;
#[path = "e2e/idp.rs"]
mod idp;
#[path = "e2e/jwks.rs"]
mod jwks;
#[path = "e2e/logout.rs"]
mod logout;
#[path = "e2e/native.rs"]
mod native;
#[path = "e2e/operations.rs"]
mod operations;
#[path = "e2e/outage.rs"]
mod outage;
#[path = "e2e/production.rs"]
mod production;
#[path = "e2e/replicas.rs"]
mod replicas;
#[path = "e2e/revoked.rs"]
mod revoked;
#[path = "e2e/streams.rs"]
mod streams;
#[path = "e2e/tls.rs"]
mod tls;
#[path = "e2e/worker.rs"]
mod worker;
