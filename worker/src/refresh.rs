//! The isolate's revocation state and its sync bookkeeping.
//!
//! The state lives in isolate-global memory (an isolate serves many requests, one at a
//! time per event-loop turn). Syncs are short polls (`wait=0`) of `/v1/sync` with the
//! applied version as `since`: a delta, or a snapshot when the control plane says so.
//! Rules:
//! - at most one sync per `refresh_ms` (after a success), so an isolate costs the control
//!   plane one cheap GET per interval while it has traffic, and none when idle — an idle
//!   isolate stops reporting and drops out of `GET /v1/edges`' live set;
//! - never two syncs at once: a started sync holds a ticket until it finishes (or until
//!   its timeout has surely passed, should the runtime have dropped it);
//! - a due sync runs in the background and the request is decided with what is held;
//!   only a stale state (never synced, or older than `max_staleness_s`) makes the request
//!   wait for the sync — its own, or the one in flight (a cold isolate's first burst
//!   waits for one sync, not 503) — and if that fails, `core` applies `on_stale`;
//! - after a failure, exponential backoff from `refresh_ms` to `retry_max_ms`; the last
//!   good state is kept throughout.

use epochgate_core::config::WorkerConfig;
use epochgate_core::state::RevocationState;
use epochgate_core::sync::{sync_path, EdgeState, SyncError, SyncResponse, SyncStatus};

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

/// How a finished sync went, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Applied; `changed` when the version moved or it was a snapshot.
    Applied {
        version: u64,
        snapshot: bool,
        changes: usize,
        changed: bool,
    },
    /// The answer could not be applied or the call failed; the state is kept.
    Failed {
        why: String,
        failures: u32,
        retry_in_ms: u64,
    },
    /// A sync that was given up on (past its timeout) finished after all: ignored.
    Superseded,
}

/// The isolate's copy of the epochs and what it knows about its syncs.
#[derive(Debug, Clone)]
pub struct IsolateState {
    edge_id: String,
    edge: EdgeState,
    synced_at_ms: Option<u64>,
    in_flight: Option<(u64, u64)>,
    next_ticket: u64,
    next_attempt_ms: u64,
    failures: u32,
    /// The next sync asks for a snapshot (`since=0`): the last answer was of another
    /// history. The held entries and status stay until the snapshot replaces them.
    want_snapshot: bool,
}

impl IsolateState {
    pub fn new(edge_id: String) -> Self {
        Self {
            edge_id,
            edge: EdgeState::default(),
            synced_at_ms: None,
            in_flight: None,
            next_ticket: 1,
            next_attempt_ms: 0,
            failures: 0,
            want_snapshot: false,
        }
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    pub fn version(&self) -> u64 {
        self.edge.version
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The epochs, for `core`'s decision.
    pub fn epochs(&self) -> &RevocationState {
        &self.edge.state
    }

    /// What `core` needs to judge staleness: `None` before the first successful sync.
    pub fn status(&self) -> Option<SyncStatus> {
        Some(SyncStatus {
            stream: self.edge.stream.clone()?,
            version: self.edge.version,
            synced_at_ms: self.synced_at_ms?,
        })
    }

    /// Whether a sync is in flight (one started less than its timeout plus a second ago).
    pub fn in_flight(&self, now_ms: u64, config: &WorkerConfig) -> bool {
        self.in_flight
            .is_some_and(|(_, since)| now_ms < since.saturating_add(config.sync_timeout_ms + 1000))
    }

    /// What this request should do about the state.
    pub fn plan(&self, now_ms: u64, config: &WorkerConfig, max_staleness_s: u64) -> Plan {
        let stale = SyncStatus::is_stale(self.status().as_ref(), now_ms, max_staleness_s);
        match (self.in_flight(now_ms, config), stale) {
            (true, true) => Plan::WaitForSync,
            (true, false) => Plan::Serve,
            // Backing off after failures: decide with what is held (`on_stale` if stale).
            (false, _) if now_ms < self.next_attempt_ms => Plan::Serve,
            (false, true) => Plan::Blocking,
            (false, false) => Plan::Background,
        }
    }

    /// Starts a sync: takes the ticket and returns the URL to GET.
    pub fn begin(&mut self, now_ms: u64, config: &WorkerConfig) -> SyncCall {
        let ticket = self.next_ticket;
        self.next_ticket = self.next_ticket.wrapping_add(1);
        self.in_flight = Some((ticket, now_ms));
        let path = if self.want_snapshot {
            sync_path(0, None, 0, &self.edge_id)
        } else {
            sync_path(
                self.edge.version,
                self.edge.stream.as_deref(),
                0,
                &self.edge_id,
            )
        };
        SyncCall {
            url: config.sync_url(&path),
            ticket,
        }
    }

    /// Applies the result of the sync `ticket`: the answer's status and body, or why the
    /// call failed.
    pub fn finish(
        &mut self,
        ticket: u64,
        now_ms: u64,
        config: &WorkerConfig,
        result: crate::host::GetResult,
    ) -> SyncOutcome {
        match self.in_flight {
            Some((t, _)) if t == ticket => self.in_flight = None,
            _ => return SyncOutcome::Superseded,
        }
        let applied = match result {
            Ok((200, body)) => SyncResponse::parse(&body).and_then(|resp| {
                let before = self.edge.version;
                if self.want_snapshot && !resp.snapshot {
                    return Err(SyncError::Malformed(
                        "a delta answered a snapshot request".into(),
                    ));
                }
                self.edge.apply(&resp).map(|()| (resp, before))
            }),
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                return self.fail(
                    now_ms,
                    config,
                    format!("control plane answered {status}: {text}"),
                );
            }
            Err(e) => return self.fail(now_ms, config, format!("control plane unreachable: {e}")),
        };
        match applied {
            Ok((resp, before)) => {
                self.failures = 0;
                self.want_snapshot = false;
                self.synced_at_ms = Some(now_ms);
                self.next_attempt_ms = now_ms.saturating_add(config.refresh_ms);
                SyncOutcome::Applied {
                    version: resp.version,
                    snapshot: resp.snapshot,
                    changes: resp.changes.len(),
                    changed: resp.snapshot || resp.version != before,
                }
            }
            Err(e @ (SyncError::StreamMismatch { .. } | SyncError::VersionWentBack { .. })) => {
                // Never mix two histories: ask for a snapshot next (which replaces what is
                // held), at once; the entries held keep being enforced meanwhile.
                self.want_snapshot = true;
                self.next_attempt_ms = now_ms;
                SyncOutcome::Failed {
                    why: format!("{e}; asking for a snapshot"),
                    failures: self.failures,
                    retry_in_ms: 0,
                }
            }
            Err(e) => self.fail(now_ms, config, e.to_string()),
        }
    }

    fn fail(&mut self, now_ms: u64, config: &WorkerConfig, why: String) -> SyncOutcome {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let backoff = config
            .refresh_ms
            .saturating_mul(1u64 << exp)
            .min(config.retry_max_ms);
        self.next_attempt_ms = now_ms.saturating_add(backoff);
        SyncOutcome::Failed {
            why,
            failures: self.failures,
            retry_in_ms: backoff,
        }
    }
}
