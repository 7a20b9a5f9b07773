//! The control plane's integration tests, in one binary (one link on a 2-core machine):
//! - [`store`]: the `Store` contract (versions, epochs, delta/snapshot, compaction,
//!   durability across reopen) — written against `dyn Store`, so a Postgres backend can
//!   run the same suite.
//! - [`api`]: every handler through `app(state).oneshot(req)`, every refusal.
//! - [`server`]: a real server on 127.0.0.1:0 for long-polls and graceful shutdown.
//! - [`edge_tokens`]: per-edge credentials (identity, revocation, isolates).
//! - [`cli`]: the `epochgate` binary end to end (serve, admin commands, errors).
//! - [`idp`]: the back-channel logout and SET receivers: every refusal, key rotation.
//! - [`console`]: the console's sign-in, cookies, CSRF and headers through the router.
//! - [`sessions`]: the edges' session reports and the users/sessions reads.

// Helpers outside #[test] fns are test code too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod cli;
mod common;
mod console;
mod edge_tokens;
mod idp;
mod server;
mod sessions;
mod store;
