//! The isolate's revocation state and its sync scheduling, over `core`'s sync client
//! ([`epochgate_core::sync::client`]: what to ask, how an answer is merged, paging,
//! backoff with jitter — the same rules as Envoy's sync VM).
//!
//! The state lives in isolate-global memory (an isolate serves many requests, one at a
//! time per event-loop turn). Syncs are short polls (`wait=0`) of `/v1/sync`, driven by
//! requests:
//! - at most one sync per `refresh_ms` (after a success), so an isolate costs the control
//!   plane one cheap GET per interval while it has traffic, and none when idle — an idle
//!   isolate stops reporting and drops out of `GET /v1/edges`' live set;
//! - never two syncs at once: a started sync holds a ticket until it finishes (or until
//!   its timeout has surely passed, should the runtime have dropped it);
//! - a due sync runs in the background and the request is decided with what is held;
//!   only a stale state (never synced, or older than `max_staleness_s`) makes the request
//!   wait for the sync — its own, or the one in flight (a cold isolate's first burst
//!   waits for one sync, not 503) — and if that fails, `core` applies `on_stale`;
//! - a paged snapshot's pages follow each other at once, in the same background task;
//! - after a failure, backoff (with jitter) from `refresh_ms` to `retry_max_ms`; the last
//!   good state is kept and enforced throughout.

use epochgate_core::config::WorkerConfig;
use epochgate_core::state::RevocationState;
use epochgate_core::sync::client::{Event, SyncClient};
use epochgate_core::sync::SyncStatus;

/// What a request should do about the state before it is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Decide with what is held (fresh, a sync in flight, or backing off).
    Serve,
    /// A sync is due: start it in the background, decide with what is held.
    Background,
    /// The state is stale: sync first, then decide.
    Blocking,
    /// The state is stale and another request's sync is in flight: wait for it (never a
    /// second sync), then decide.
    WaitForSync,
}

/// A started sync: its URL and the ticket that [`IsolateState::finish`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncCall {
    pub url: String,
    pub ticket: u64,
}

/// The isolate's copy of the epochs and what it knows about its syncs.
#[derive(Debug, Clone)]
pub struct IsolateState {
    client: SyncClient,
}

impl IsolateState {
    /// `seed` varies the backoff's jitter per isolate (its random id); `relayed`: a relay
    /// (the deployment's Durable Object) tells this isolate of changes
    /// ([`IsolateState::relay_says`]), so its own calls can be rarer (the filter
    /// configuration's `max_staleness_s`, see [`WorkerConfig::client_config`]).
    pub fn new(edge_id: String, config: &WorkerConfig, seed: u64, relayed: Option<u64>) -> Self {
        Self {
            client: SyncClient::new(config.client_config(edge_id, relayed), seed),
        }
    }

    pub fn edge_id(&self) -> &str {
        &self.client.config().edge_id
    }

    pub fn version(&self) -> u64 {
        self.client.version()
    }

    pub fn failures(&self) -> u32 {
        self.client.failures()
    }

    /// The epochs, for `core`'s decision.
    pub fn epochs(&self) -> &RevocationState {
        self.client.state()
    }

    /// What `core` needs to judge staleness and the horizon: `None` before the first
    /// complete sync.
    pub fn status(&self) -> Option<SyncStatus> {
        self.client.status().cloned()
    }

    /// Whether a sync is in flight (one started less than its timeout plus a second ago).
    pub fn in_flight(&self, now_ms: u64) -> bool {
        self.client.in_flight(now_ms)
    }

    /// What this request should do about the state.
    pub fn plan(&self, now_ms: u64, max_staleness_s: u64) -> Plan {
        let stale = self.client.is_stale(now_ms, max_staleness_s);
        match (self.in_flight(now_ms), stale) {
            (true, true) => Plan::WaitForSync,
            (true, false) => Plan::Serve,
            // Not due (the refresh interval, or backing off after failures): decide with
            // what is held (`on_stale` if stale).
            (false, _) if !self.client.is_due(now_ms) => Plan::Serve,
            (false, true) => Plan::Blocking,
            (false, false) => Plan::Background,
        }
    }

    /// Starts a sync if one is due: takes the ticket and returns the URL to GET.
    pub fn begin(&mut self, now_ms: u64, config: &WorkerConfig) -> Option<SyncCall> {
        let t = self.client.poll_transmit(now_ms)?;
        Some(SyncCall {
            url: config.sync_url(&t.path),
            ticket: t.id,
        })
    }

    /// Applies the result of the sync `ticket`: the answer's status and body, or why the
    /// call failed.
    pub fn finish(&mut self, ticket: u64, now_ms: u64, result: crate::host::GetResult) -> Event {
        let answer = match &result {
            Ok((status, body)) => Ok((*status, body.as_slice())),
            Err(e) => Err(format!("control plane unreachable: {e}")),
        };
        // The state is in memory here: nothing to mirror.
        self.client.handle_answer(ticket, now_ms, answer).event
    }

    /// What the relay said (`Some((stream, version))`) or that it could not say (`None`:
    /// unreachable, or not itself in sync): a version this isolate does not hold makes its
    /// sync due at once; without the relay it syncs every `refresh_ms` as it would alone.
    /// Returns whether a sync is due now.
    pub fn relay_says(
        &mut self,
        now_ms: u64,
        current: Option<(&str, u64)>,
        config: &WorkerConfig,
    ) -> bool {
        match current {
            Some((stream, version)) if self.client.holds(stream, version) => {}
            Some(_) => self.client.hasten(now_ms),
            None => {
                let last = self.client.status().map_or(0, |s| s.synced_at_ms);
                self.client.hasten(last.saturating_add(config.refresh_ms));
            }
        }
        self.client.is_due(now_ms)
    }

    /// Starts a sync now, whatever the interval (not while backing off): the call that
    /// reports a version just applied (its `since`) to the control plane.
    pub fn report_now(&mut self, now_ms: u64, config: &WorkerConfig) -> Option<SyncCall> {
        self.client.hasten(now_ms);
        self.begin(now_ms, config)
    }

    /// Drops the entries past the horizon by this isolate's clock (at most once a minute).
    pub fn sweep(&mut self, now_ms: u64) {
        self.client.handle_timeout(now_ms);
    }
}
