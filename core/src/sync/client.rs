//! The edge's sync client: the protocol's state machine, once, for every edge (DESIGN.md,
//! Invariant 4). It does no I/O — in the style of quinn-proto and h2, it says what to
//! send and when, and takes each answer and the time:
//!
//! ```text
//! host                                  SyncClient
//!  ├─ poll_transmit(now) ─────────────► Some(Transmit { id, path, timeout })  (or None: not yet)
//!  │   … GET path with the edge token …
//!  ├─ handle_answer(id, now, answer) ─► Outcome { event, writes }
//!  │   … mirror `writes` (Envoy: shared data), then `status()` …
//!  ├─ handle_timeout(now) ────────────► writes (its own compaction, by its own clock)
//!  └─ poll_timeout() ─────────────────► when to call again
//! ```
//!
//! The rules it holds:
//! - **What to ask next.** `since` = the version applied, with its `stream` and `tag`
//!   (so the control plane can tell a restored history); `wait` for long-polls; `limit`
//!   and the resume point while a paged snapshot is under way (pages follow at once).
//! - **Never mix two histories, never lose what is held.** A delta must continue the
//!   stream and version held; otherwise the client asks for a snapshot (at once). Every
//!   answer is *merged* into what the edge holds ([`RevocationState::take`]): a snapshot
//!   of a lower version or of a new stream never lowers an epoch or drops an entry, and
//!   a page boundary never clears one. The edge has a snapshot's version only once its
//!   last page is applied.
//! - **Backoff with jitter** after a failure (half fixed, half random, so edges do not
//!   retry in lockstep); the last state is kept and enforced throughout.
//! - **Staleness**: [`SyncClient::status`] says when the last complete answer came;
//!   `core`'s decision judges it.

use crate::state::{EntryWrite, RevocationState, Taken};

use super::{SyncRequest, SyncResponse, SyncStatus};

/// How often the client drops entries past the horizon by its own clock (besides the
/// removals the control plane sends).
pub const SWEEP_EVERY_MS: u64 = 60_000;

/// How an edge runs the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// The edge's id in `GET /v1/edges`.
    pub edge_id: String,
    /// How long the control plane may hold a poll (0: short polls).
    pub wait_s: u32,
    /// Snapshots in pages of at most this many entries (0: in one answer).
    pub page_limit: u32,
    /// After a complete sync the next one starts no sooner than this (the Worker's
    /// `refresh_ms`; 0 for a long-poll loop, which asks again at once).
    pub min_interval_ms: u64,
    /// Backoff after a failure: from `retry_min_ms`, doubling up to `retry_max_ms`.
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    /// How long one call may take. A call unanswered a second past this is given up
    /// (the host may have dropped it); its answer, should it still come, is ignored.
    pub call_timeout_ms: u64,
}

/// A request to send: `GET <control plane><path>` with the edge token, given up after
/// `timeout_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub id: u64,
    pub path: String,
    pub timeout_ms: u64,
}

/// What the host got for a [`Transmit`]: the status and body, or why there is none.
pub type Answer<'a> = Result<(u16, &'a [u8]), String>;

/// What handling an answer did, for the host's log and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An answer was applied. `complete`: the edge now has `version` (a delta, or a
    /// snapshot's last page); otherwise more pages follow at once.
    Applied {
        version: u64,
        snapshot: bool,
        complete: bool,
        changes: usize,
        /// Entries held after it.
        held: usize,
        /// A snapshot, or the version moved.
        changed: bool,
        /// Entries the edge kept that the answer lacked or held lower (a complete
        /// snapshot only, all its pages): the control plane lost logouts this edge had
        /// applied (a restore from a backup, a failover). They stay in force.
        kept: usize,
        /// Failed attempts before this one (0: none).
        recovered_after: u32,
    },
    /// The answer is of another history than the edge holds (a delta of another stream
    /// or an earlier version): the client asks for a snapshot next, at once, and keeps
    /// enforcing everything it holds.
    Restart { why: String },
    /// No usable answer: the client retries after `retry_in_ms`.
    Failed {
        why: String,
        failures: u32,
        retry_in_ms: u64,
    },
    /// An answer to a request the client no longer waits for: ignored.
    Superseded,
}

/// What an edge logs when a complete snapshot lacked or held lower `kept` entries than
/// it had applied (`before`: what it held until then).
pub fn kept_note(version: u64, kept: usize, before: Option<&SyncStatus>) -> String {
    format!(
        "sync: the snapshot (v{version}) lacked or held lower {kept} entries this edge had applied{}: kept in force — the control plane lost logouts (restored from a backup, or failed over?)",
        before
            .map(|b| format!(" (at v{} of stream {})", b.version, b.stream))
            .unwrap_or_default()
    )
}

/// The result of [`SyncClient::handle_answer`]: what happened, and the writes to mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub event: Event,
    pub writes: Vec<EntryWrite>,
}

impl Outcome {
    fn event(event: Event) -> Self {
        Outcome {
            event,
            writes: Vec::new(),
        }
    }
}

/// Exponential backoff with jitter: from `min_ms`, doubling per failure up to `max_ms`;
/// half of each delay fixed, half random.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub min_ms: u64,
    pub max_ms: u64,
    rng: u64,
}

impl Backoff {
    pub fn new(min_ms: u64, max_ms: u64, seed: u64) -> Self {
        Self {
            min_ms,
            max_ms,
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// The delay after the `failures`-th failure in a row (1 = the first).
    pub fn delay_ms(&mut self, failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(20);
        let backoff = self.min_ms.saturating_mul(1u64 << exp).min(self.max_ms);
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        backoff / 2 + (self.rng >> 33) % (backoff / 2 + 1)
    }
}

/// The stream, version and tag the edge has applied: what it asks `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    stream: String,
    version: u64,
    tag: Option<String>,
}

/// A paged snapshot under way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Paging {
    stream: String,
    version: u64,
    after: String,
    changes: usize,
    kept: usize,
}

/// The sync protocol's state machine (see the module doc).
#[derive(Debug, Clone)]
pub struct SyncClient {
    config: ClientConfig,
    state: RevocationState,
    /// What to ask `since`; `None`: ask for a snapshot.
    held: Option<Held>,
    /// What was last applied completely (kept across a restart: the entries are still
    /// enforced, and their age is what staleness judges).
    status: Option<SyncStatus>,
    paging: Option<Paging>,
    in_flight: Option<(u64, u64)>,
    next_id: u64,
    failures: u32,
    next_attempt_ms: u64,
    next_sweep_ms: u64,
    backoff: Backoff,
    /// The host's mirror lost writes: the next complete snapshot rewrites every entry.
    rewrite: bool,
}

impl SyncClient {
    /// A client holding nothing; `seed` varies its jitter per edge.
    pub fn new(config: ClientConfig, seed: u64) -> Self {
        let backoff = Backoff::new(config.retry_min_ms, config.retry_max_ms, seed);
        Self {
            config,
            state: RevocationState::new(),
            held: None,
            status: None,
            paging: None,
            in_flight: None,
            next_id: 1,
            failures: 0,
            next_attempt_ms: 0,
            next_sweep_ms: 0,
            backoff,
            rewrite: false,
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The epochs the edge holds, for `core`'s decision.
    pub fn state(&self) -> &RevocationState {
        &self.state
    }

    /// What the edge has applied and when: `None` before the first complete sync.
    pub fn status(&self) -> Option<&SyncStatus> {
        self.status.as_ref()
    }

    /// The version applied (0: none).
    pub fn version(&self) -> u64 {
        self.status.as_ref().map_or(0, |s| s.version)
    }

    /// Failed attempts in a row.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether the state is too old to know what changed (see [`SyncStatus::is_stale`]).
    pub fn is_stale(&self, now_ms: u64, max_staleness_s: u64) -> bool {
        SyncStatus::is_stale(self.status.as_ref(), now_ms, max_staleness_s)
    }

    /// Whether a request is out and not yet given up on.
    pub fn in_flight(&self, now_ms: u64) -> bool {
        self.in_flight
            .is_some_and(|(_, sent)| now_ms < self.deadline(sent))
    }

    fn deadline(&self, sent_ms: u64) -> u64 {
        sent_ms
            .saturating_add(self.config.call_timeout_ms)
            .saturating_add(1000)
    }

    /// Whether [`SyncClient::poll_transmit`] would send a request now.
    pub fn is_due(&self, now_ms: u64) -> bool {
        !self.in_flight(now_ms) && now_ms >= self.next_attempt_ms
    }

    /// Brings the next request forward to `at_ms` — a relay (the Worker's Durable
    /// Object) knows of a change, or cannot say: never while backing off after a failure,
    /// never later than a request already due.
    pub fn hasten(&mut self, at_ms: u64) {
        if self.failures == 0 {
            self.next_attempt_ms = self.next_attempt_ms.min(at_ms);
        }
    }

    /// Whether the client has applied, completely, `version` (or later) of `stream`: what
    /// a relay holds is then nothing new.
    pub fn holds(&self, stream: &str, version: u64) -> bool {
        self.paging.is_none()
            && self.held.is_some()
            && self
                .status
                .as_ref()
                .is_some_and(|s| s.stream == stream && s.version >= version)
    }

    /// The request to send now, if one is due (one at a time).
    pub fn poll_transmit(&mut self, now_ms: u64) -> Option<Transmit> {
        if !self.is_due(now_ms) {
            return None;
        }
        let limit = (self.config.page_limit > 0).then_some(self.config.page_limit);
        let request = match (&self.paging, &self.held) {
            // The rest of a paged snapshot: at once, no waiting.
            (Some(p), _) => SyncRequest {
                since: 0,
                stream: Some(&p.stream),
                tag: None,
                wait_s: 0,
                edge_id: &self.config.edge_id,
                limit,
                resume: Some((p.version, &p.after)),
            },
            (None, Some(h)) => SyncRequest {
                since: h.version,
                stream: Some(&h.stream),
                tag: h.tag.as_deref(),
                wait_s: self.config.wait_s,
                edge_id: &self.config.edge_id,
                limit,
                resume: None,
            },
            (None, None) => SyncRequest {
                since: 0,
                stream: None,
                tag: None,
                wait_s: self.config.wait_s,
                edge_id: &self.config.edge_id,
                limit,
                resume: None,
            },
        };
        let path = request.path();
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.in_flight = Some((id, now_ms));
        Some(Transmit {
            id,
            path,
            timeout_ms: self.config.call_timeout_ms,
        })
    }

    /// When to call again (the next attempt, the in-flight call's deadline, the next
    /// sweep), in ms since the Unix epoch.
    pub fn poll_timeout(&self) -> Option<u64> {
        let call = match self.in_flight {
            Some((_, sent)) => self.deadline(sent),
            None => self.next_attempt_ms,
        };
        let sweep = self.status.is_some().then_some(self.next_sweep_ms);
        Some(sweep.map_or(call, |s| s.min(call)))
    }

    /// Time passed: drops the entries past the horizon by this edge's clock (at most
    /// every [`SWEEP_EVERY_MS`]); returns the writes to mirror.
    pub fn handle_timeout(&mut self, now_ms: u64) -> Vec<EntryWrite> {
        let mut writes = Vec::new();
        let Some(horizon) = self.status.as_ref().map(|s| s.horizon_s) else {
            return writes;
        };
        if now_ms >= self.next_sweep_ms {
            self.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
            self.state.compact(now_ms, horizon, &mut writes);
        }
        writes
    }

    /// The host could not send the request `id` (or the call failed without an answer).
    pub fn handle_transmit_failed(&mut self, id: u64, now_ms: u64, why: &str) -> Event {
        self.handle_answer(id, now_ms, Err(why.to_string())).event
    }

    /// The host could not mirror some writes (e.g. shared data refused them): the next
    /// snapshot (asked for after a backoff) rewrites every entry. The status is not to
    /// be published until then.
    pub fn host_write_failed(&mut self, now_ms: u64, why: &str) -> Event {
        self.rewrite = true;
        self.held = None;
        self.paging = None;
        self.fail(now_ms, why.to_string())
    }

    /// Takes the answer to the request `id`.
    pub fn handle_answer(&mut self, id: u64, now_ms: u64, answer: Answer<'_>) -> Outcome {
        match self.in_flight {
            Some((waiting, _)) if waiting == id => self.in_flight = None,
            _ => return Outcome::event(Event::Superseded),
        }
        let body = match answer {
            Ok((200, body)) => body,
            Ok((status, body)) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                let why = format!("control plane answered {status}: {text}");
                return Outcome::event(self.fail(now_ms, why));
            }
            Err(why) => return Outcome::event(self.fail(now_ms, why)),
        };
        let resp = match SyncResponse::parse(body) {
            Ok(resp) => resp,
            Err(e) => return Outcome::event(self.fail(now_ms, e.to_string())),
        };
        if resp.max_session_lifetime_s == 0 {
            let why = "the answer announces no compaction horizon (max_session_lifetime_s 0)";
            return Outcome::event(self.fail(now_ms, why.into()));
        }
        if resp.snapshot {
            self.apply_snapshot(now_ms, resp)
        } else {
            self.apply_delta(now_ms, resp)
        }
    }

    fn apply_delta(&mut self, now_ms: u64, resp: SyncResponse) -> Outcome {
        let paging = self.paging.take();
        let continues = self
            .held
            .as_ref()
            .is_some_and(|h| h.stream == resp.stream && resp.version >= h.version);
        if paging.is_some() || !continues {
            // Never mix two histories: ask for a snapshot (which merges).
            let why = format!(
                "a delta for stream {} v{} while holding {}",
                resp.stream,
                resp.version,
                match (&paging, &self.held) {
                    (Some(p), _) =>
                        format!("a paged snapshot of {} v{} under way", p.stream, p.version),
                    (None, Some(h)) => format!("{} v{}", h.stream, h.version),
                    (None, None) => "nothing (a snapshot was asked for)".into(),
                }
            );
            if self.held.is_none() && paging.is_none() {
                // Asked for a snapshot and got a delta: not an answer to retry at once.
                return Outcome::event(self.fail(now_ms, why));
            }
            self.held = None;
            self.next_attempt_ms = now_ms;
            return Outcome::event(Event::Restart { why });
        }
        let mut writes = Vec::new();
        let horizon = resp.max_session_lifetime_s;
        for c in &resp.changes {
            self.state
                .take(&c.target, c.epoch_ms, now_ms, horizon, &mut writes);
        }
        let changed = resp.version != self.version();
        self.complete(now_ms, &resp, false, resp.changes.len(), 0, writes, changed)
    }

    fn apply_snapshot(&mut self, now_ms: u64, resp: SyncResponse) -> Outcome {
        let continues = self
            .paging
            .as_ref()
            .is_some_and(|p| p.stream == resp.stream && p.version == resp.version);
        if !continues {
            // A new snapshot (or the control plane started another): its pages only.
            self.paging = None;
            self.state.begin_snapshot();
        }
        let horizon = resp.max_session_lifetime_s;
        let mut writes = Vec::new();
        let mut lower = 0;
        for c in &resp.changes {
            if self
                .state
                .take(&c.target, c.epoch_ms, now_ms, horizon, &mut writes)
                == Taken::KeptLater
            {
                lower += 1;
            }
        }
        let (changes, kept) = match self.paging.take() {
            Some(p) => (p.changes + resp.changes.len(), p.kept + lower),
            None => (resp.changes.len(), lower),
        };
        if let Some(after) = &resp.next {
            // More pages: the edge has this version only after the last one.
            self.paging = Some(Paging {
                stream: resp.stream.clone(),
                version: resp.version,
                after: after.clone(),
                changes,
                kept,
            });
            self.next_attempt_ms = now_ms;
            let recovered_after = std::mem::take(&mut self.failures);
            return Outcome {
                event: Event::Applied {
                    version: resp.version,
                    snapshot: true,
                    complete: false,
                    changes: resp.changes.len(),
                    held: self.state.len(),
                    changed: true,
                    kept: 0,
                    recovered_after,
                },
                writes,
            };
        }
        let kept = kept + self.state.end_snapshot(now_ms, horizon, &mut writes);
        if std::mem::take(&mut self.rewrite) {
            writes.extend(self.state.all_writes());
        }
        self.complete(now_ms, &resp, true, changes, kept, writes, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn complete(
        &mut self,
        now_ms: u64,
        resp: &SyncResponse,
        snapshot: bool,
        changes: usize,
        kept: usize,
        writes: Vec<EntryWrite>,
        changed: bool,
    ) -> Outcome {
        self.held = Some(Held {
            stream: resp.stream.clone(),
            version: resp.version,
            tag: resp.tag.clone(),
        });
        self.status = Some(SyncStatus {
            stream: resp.stream.clone(),
            version: resp.version,
            synced_at_ms: now_ms,
            horizon_s: resp.max_session_lifetime_s,
        });
        self.next_attempt_ms = now_ms.saturating_add(self.config.min_interval_ms);
        if self.next_sweep_ms == 0 {
            self.next_sweep_ms = now_ms.saturating_add(SWEEP_EVERY_MS);
        }
        let recovered_after = std::mem::take(&mut self.failures);
        Outcome {
            event: Event::Applied {
                version: resp.version,
                snapshot,
                complete: true,
                changes,
                held: self.state.len(),
                changed,
                kept,
                recovered_after,
            },
            writes,
        }
    }

    fn fail(&mut self, now_ms: u64, why: String) -> Event {
        self.failures = self.failures.saturating_add(1);
        let retry_in_ms = self.backoff.delay_ms(self.failures);
        self.next_attempt_ms = now_ms.saturating_add(retry_in_ms);
        Event::Failed {
            why,
            failures: self.failures,
            retry_in_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{keys, EpochSource, Target};
    use crate::sync::Change;

    const NOW: u64 = 1_800_000_000_000;

    fn config() -> ClientConfig {
        ClientConfig {
            edge_id: "edge/1".into(),
            wait_s: 20,
            page_limit: 0,
            min_interval_ms: 0,
            retry_min_ms: 100,
            retry_max_ms: 1_000,
            call_timeout_ms: 25_000,
        }
    }

    fn user(u: &str, ms: Option<u64>) -> Change {
        Change {
            target: Target::User {
                tenant: "acme".into(),
                user: u.into(),
            },
            epoch_ms: ms,
        }
    }

    fn resp(stream: &str, snapshot: bool, version: u64, changes: Vec<Change>) -> SyncResponse {
        SyncResponse {
            stream: stream.into(),
            version,
            snapshot,
            changes,
            max_session_lifetime_s: 86_400,
            next: None,
            tag: Some(format!("tag-{version}")),
        }
    }

    fn body(r: &SyncResponse) -> Vec<u8> {
        serde_json::to_vec(r).unwrap()
    }

    /// Sends the next request at `now` and answers it with `r`; returns the request's
    /// path and the outcome.
    fn exchange(c: &mut SyncClient, now: u64, r: &SyncResponse) -> (String, Outcome) {
        let t = c.poll_transmit(now).expect("a request is due");
        let b = body(r);
        (t.path, c.handle_answer(t.id, now, Ok((200, &b))))
    }

    fn epoch(c: &SyncClient, u: &str) -> Option<u64> {
        c.state().epoch_ms(&keys::user("acme", u)).unwrap()
    }

    #[test]
    fn a_relay_hastens_the_next_request_but_never_a_backoff() {
        let mut c = SyncClient::new(
            ClientConfig {
                min_interval_ms: 10_000,
                ..config()
            },
            1,
        );
        assert!(!c.holds("s1", 0), "nothing applied yet");
        exchange(&mut c, NOW, &resp("s1", true, 4, vec![]));
        assert!(c.holds("s1", 4) && c.holds("s1", 3));
        assert!(!c.holds("s1", 5) && !c.holds("s2", 4));
        assert!(!c.is_due(NOW + 1), "the interval holds it back");
        // A relay knows of v5: due at once, not in 10 s.
        c.hasten(NOW + 1);
        assert!(c.is_due(NOW + 1));
        c.hasten(NOW + 5_000);
        assert!(c.is_due(NOW + 1), "never later than already due");
        // After a failure the backoff stands.
        let t = c.poll_transmit(NOW + 1).unwrap();
        c.handle_answer(t.id, NOW + 2, Err("refused".into()));
        c.hasten(NOW + 2);
        assert!(!c.is_due(NOW + 2), "backing off");
    }

    #[test]
    fn it_asks_for_a_snapshot_then_long_polls_from_what_it_applied() {
        let mut c = SyncClient::new(config(), 1);
        assert_eq!(c.poll_timeout(), Some(0));
        let (path, out) = exchange(&mut c, NOW, &resp("s1", true, 4, vec![user("42", Some(7))]));
        assert_eq!(path, "/v1/sync?since=0&wait=20&edge=edge%2F1");
        assert!(matches!(
            out.event,
            Event::Applied {
                version: 4,
                snapshot: true,
                complete: true,
                changes: 1,
                held: 1,
                changed: true,
                kept: 0,
                recovered_after: 0
            }
        ));
        assert_eq!(
            out.writes,
            vec![EntryWrite {
                key: keys::user("acme", "42"),
                epoch_ms: Some(7)
            }]
        );
        let status = c.status().unwrap();
        assert_eq!(
            (status.version, status.synced_at_ms, status.horizon_s),
            (4, NOW, 86_400)
        );
        // A long-poll loop asks again at once, from what it applied, with its tag.
        let t = c.poll_transmit(NOW).unwrap();
        assert_eq!(
            t.path,
            "/v1/sync?since=4&wait=20&stream=s1&tag=tag-4&edge=edge%2F1"
        );
        assert_eq!(t.timeout_ms, 25_000);
        assert!(c.poll_transmit(NOW).is_none(), "one request at a time");
        assert!(c.in_flight(NOW));
        // An empty answer at the same version: nothing changed.
        let b = body(&resp("s1", false, 4, vec![]));
        let out = c.handle_answer(t.id, NOW + 20_000, Ok((200, &b)));
        assert!(
            matches!(out.event, Event::Applied { changed: false, .. }),
            "{:?}",
            out.event
        );
        assert!(out.writes.is_empty());
        assert_eq!(c.status().unwrap().synced_at_ms, NOW + 20_000);
    }

    #[test]
    fn short_polls_wait_the_minimum_interval_after_a_sync() {
        let mut c = SyncClient::new(
            ClientConfig {
                wait_s: 0,
                min_interval_ms: 500,
                ..config()
            },
            1,
        );
        exchange(&mut c, NOW, &resp("s", true, 1, vec![]));
        assert!(!c.is_due(NOW + 499));
        assert_eq!(c.poll_timeout(), Some(NOW + 500));
        assert!(c.poll_transmit(NOW + 499).is_none());
        let t = c.poll_transmit(NOW + 500).unwrap();
        assert!(t.path.contains("wait=0"), "{}", t.path);
    }

    #[test]
    fn a_delta_of_another_history_asks_for_a_snapshot_and_keeps_everything() {
        let mut c = SyncClient::new(config(), 1);
        exchange(&mut c, NOW, &resp("s1", true, 5, vec![user("42", Some(7))]));
        let mut now = NOW;
        for bad in [resp("s2", false, 9, vec![]), resp("s1", false, 4, vec![])] {
            let (_, out) = exchange(&mut c, now, &bad);
            assert!(
                matches!(out.event, Event::Restart { .. }),
                "{:?}",
                out.event
            );
            assert!(out.writes.is_empty());
            assert_eq!(epoch(&c, "42"), Some(7), "held entries stay enforced");
            assert_eq!(c.status().unwrap().version, 5, "and the status with them");
            // At once, a snapshot: since 0, no stream.
            let t = c.poll_transmit(now).unwrap();
            assert_eq!(t.path, "/v1/sync?since=0&wait=20&edge=edge%2F1");
            // A delta in answer to a snapshot request is a failure, with backoff.
            let b = body(&resp("s2", false, 9, vec![]));
            let ev = c.handle_answer(t.id, now, Ok((200, &b))).event;
            assert!(matches!(ev, Event::Failed { failures: 1, .. }), "{ev:?}");
            assert!(c.poll_transmit(now).is_none());
            now += 1_000;
            let ev = exchange(&mut c, now, &resp("s1", true, 5, vec![user("42", Some(7))]))
                .1
                .event;
            assert!(
                matches!(
                    ev,
                    Event::Applied {
                        recovered_after: 1,
                        kept: 0,
                        ..
                    }
                ),
                "{ev:?}"
            );
        }
    }

    #[test]
    fn a_paged_snapshot_is_asked_page_by_page_and_complete_only_at_its_last() {
        let mut c = SyncClient::new(
            ClientConfig {
                page_limit: 2,
                ..config()
            },
            1,
        );
        exchange(
            &mut c,
            NOW,
            &resp(
                "s",
                true,
                3,
                vec![user("41", Some(NOW - 1)), user("42", Some(NOW - 2))],
            ),
        );
        let mut page = resp(
            "s",
            true,
            9,
            vec![user("43", Some(NOW - 3)), user("44", Some(NOW - 4))],
        );
        page.next = Some("u/acme/44".into());
        let (path, out) = exchange(&mut c, NOW, &page);
        assert_eq!(
            path,
            "/v1/sync?since=3&wait=20&stream=s&tag=tag-3&edge=edge%2F1&limit=2"
        );
        assert!(matches!(
            out.event,
            Event::Applied {
                complete: false,
                version: 9,
                ..
            }
        ));
        assert_eq!(out.writes.len(), 2, "a page's entries are in force at once");
        assert_eq!(
            c.status().unwrap().version,
            3,
            "not at 9 before the last page"
        );
        // The next page, at once, without waiting.
        let t = c.poll_transmit(NOW).unwrap();
        assert_eq!(
            t.path,
            "/v1/sync?since=0&wait=0&stream=s&edge=edge%2F1&limit=2&snapshot=9&after=u%2Facme%2F44"
        );
        // The control plane failed meanwhile: the page is asked again after the backoff.
        c.handle_transmit_failed(t.id, NOW, "reset");
        let t = c.poll_transmit(NOW + 1_000).unwrap();
        assert!(
            t.path.ends_with("&snapshot=9&after=u%2Facme%2F44"),
            "{}",
            t.path
        );
        let b = body(&resp("s", true, 9, vec![user("45", Some(NOW - 5))]));
        let out = c.handle_answer(t.id, NOW + 1_000, Ok((200, &b)));
        assert!(
            matches!(
                out.event,
                Event::Applied {
                    complete: true,
                    changes: 3,
                    kept: 2,
                    version: 9,
                    ..
                }
            ),
            "41 and 42 were in no page: kept, {:?}",
            out.event
        );
        assert_eq!(epoch(&c, "41"), Some(NOW - 1));
        assert_eq!(c.status().unwrap().version, 9);
        assert!(c
            .poll_transmit(NOW + 1_000)
            .unwrap()
            .path
            .contains("since=9&"));
    }

    #[test]
    fn a_page_of_another_snapshot_starts_that_snapshot_over() {
        let mut c = SyncClient::new(
            ClientConfig {
                page_limit: 1,
                ..config()
            },
            1,
        );
        let mut p1 = resp("s", true, 9, vec![user("41", Some(NOW - 1))]);
        p1.next = Some("u/acme/41".into());
        exchange(&mut c, NOW, &p1);
        // The control plane answered with a page of a newer snapshot (it started over).
        let mut p2 = resp("s", true, 12, vec![user("42", Some(NOW - 2))]);
        p2.next = Some("u/acme/42".into());
        let (_, out) = exchange(&mut c, NOW, &p2);
        assert!(matches!(
            out.event,
            Event::Applied {
                complete: false,
                version: 12,
                ..
            }
        ));
        let (path, out) = exchange(&mut c, NOW, &resp("s", true, 12, vec![]));
        assert!(path.contains("snapshot=12&after=u%2Facme%2F42"), "{path}");
        assert!(matches!(
            out.event,
            Event::Applied {
                complete: true,
                version: 12,
                kept: 1,
                ..
            }
        ));
        assert_eq!(
            (epoch(&c, "41"), epoch(&c, "42")),
            (Some(NOW - 1), Some(NOW - 2))
        );
        // A delta while a snapshot is being paged is another history: start over.
        let mut p = resp("s", true, 14, vec![]);
        p.next = Some("u/acme/a".into());
        exchange(&mut c, NOW, &p);
        let (_, out) = exchange(&mut c, NOW, &resp("s", false, 14, vec![]));
        assert!(
            matches!(out.event, Event::Restart { .. }),
            "{:?}",
            out.event
        );
    }

    #[test]
    fn failures_back_off_with_jitter_and_keep_the_state() {
        let mut c = SyncClient::new(config(), 1);
        exchange(&mut c, NOW, &resp("s", true, 1, vec![user("42", Some(7))]));
        let mut now = NOW;
        let mut delays = Vec::new();
        for (i, answer) in [
            Err("unreachable".to_string()),
            Ok((503u16, &b"busy"[..])),
            Ok((200, &b"{"[..])),
            Ok((200, &br#"{"stream":"s","version":2,"snapshot":false,"changes":[],"max_session_lifetime_s":0}"#[..])),
            Err("reset".to_string()),
            Err("reset".to_string()),
        ]
        .into_iter()
        .enumerate()
        {
            let t = c.poll_transmit(now).expect("due");
            let ev = c.handle_answer(t.id, now, answer).event;
            let Event::Failed { failures, retry_in_ms, why } = ev else { panic!("{ev:?}") };
            assert_eq!(failures as usize, i + 1);
            let full = (100u64 << i).min(1_000);
            assert!((full / 2..=full).contains(&retry_in_ms), "{i}: {retry_in_ms} of {full} ({why})");
            assert!(!c.is_due(now + retry_in_ms - 1));
            now += retry_in_ms;
            delays.push(retry_in_ms);
        }
        assert_eq!(epoch(&c, "42"), Some(7), "the last state is kept");
        assert_eq!(c.failures(), 6);
        // Another edge's jitter differs.
        let mut other = Backoff::new(100, 1_000, 2);
        let mut mine = Backoff::new(100, 1_000, 1);
        let a: Vec<u64> = (1..8).map(|f| other.delay_ms(f)).collect();
        let b: Vec<u64> = (1..8).map(|f| mine.delay_ms(f)).collect();
        assert_ne!(a, b);
    }

    #[test]
    fn an_answer_past_its_timeout_is_ignored_and_a_new_call_goes_out() {
        let mut c = SyncClient::new(
            ClientConfig {
                call_timeout_ms: 2_000,
                ..config()
            },
            1,
        );
        let old = c.poll_transmit(NOW).unwrap();
        assert!(c.in_flight(NOW + 2_999));
        assert_eq!(c.poll_timeout(), Some(NOW + 3_000));
        assert!(!c.in_flight(NOW + 3_000));
        let new = c.poll_transmit(NOW + 3_000).unwrap();
        let b = body(&resp("s", true, 1, vec![user("42", Some(7))]));
        assert_eq!(
            c.handle_answer(old.id, NOW + 3_001, Ok((200, &b))).event,
            Event::Superseded
        );
        assert_eq!(epoch(&c, "42"), None);
        assert!(matches!(
            c.handle_answer(new.id, NOW + 3_001, Ok((200, &b))).event,
            Event::Applied { .. }
        ));
        assert_eq!(
            c.handle_answer(new.id, NOW + 3_002, Ok((200, &b))).event,
            Event::Superseded
        );
    }

    #[test]
    fn its_own_sweep_drops_entries_past_the_horizon_by_its_clock() {
        let mut c = SyncClient::new(config(), 1);
        assert!(c.handle_timeout(NOW).is_empty(), "no horizon before a sync");
        let mut r = resp(
            "s",
            true,
            1,
            vec![user("old", Some(NOW - 3_000)), user("new", Some(NOW))],
        );
        r.max_session_lifetime_s = 2;
        exchange(&mut c, NOW, &r);
        assert_eq!(c.poll_timeout(), Some(NOW), "the next long-poll at once");
        assert!(
            c.handle_timeout(NOW + 10_000).is_empty(),
            "at most every SWEEP_EVERY_MS"
        );
        let mut gone = c.handle_timeout(NOW + SWEEP_EVERY_MS);
        gone.sort_by(|a, b| a.key.cmp(&b.key));
        assert_eq!(
            gone,
            vec![
                EntryWrite {
                    key: keys::user("acme", "new"),
                    epoch_ms: None
                },
                EntryWrite {
                    key: keys::user("acme", "old"),
                    epoch_ms: None
                },
            ]
        );
        assert!(c.state().is_empty());
    }

    #[test]
    fn a_lost_mirror_write_is_repaired_by_a_rewriting_snapshot() {
        let mut c = SyncClient::new(config(), 1);
        exchange(&mut c, NOW, &resp("s", true, 1, vec![user("41", Some(1))]));
        exchange(&mut c, NOW, &resp("s", false, 2, vec![user("42", Some(2))]));
        let ev = c.host_write_failed(NOW, "shared data refused 1 write");
        assert!(matches!(ev, Event::Failed { failures: 1, .. }));
        let t = c.poll_transmit(NOW + 1_000).unwrap();
        assert!(t.path.starts_with("/v1/sync?since=0&"), "{}", t.path);
        let b = body(&resp(
            "s",
            true,
            2,
            vec![user("41", Some(1)), user("42", Some(2))],
        ));
        let mut keys: Vec<String> = c
            .handle_answer(t.id, NOW + 1_000, Ok((200, &b)))
            .writes
            .into_iter()
            .map(|w| w.key)
            .collect();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys,
            vec![keys::user("acme", "41"), keys::user("acme", "42")]
        );
    }

    #[test]
    fn stale_is_judged_from_the_last_complete_answer() {
        let mut c = SyncClient::new(config(), 1);
        assert!(c.is_stale(NOW, 300));
        exchange(&mut c, NOW, &resp("s", true, 1, vec![]));
        assert!(!c.is_stale(NOW + 300_000, 300));
        assert!(c.is_stale(NOW + 300_001, 300));
    }
}
