//! The sync service: the singleton service VM's I/O for `core`'s sync client
//! ([`epochgate_core::sync::client`]) — it dispatches the requests the client asks for,
//! hands it the answers, and mirrors what the client holds into shared data for the
//! filter VMs. The protocol's rules (what to ask, how an answer is merged, paging,
//! backoff) are the client's, the same as the Worker's.
//!
//! An answer is applied in `on_http_call_response` and the next `GET /v1/sync` is
//! dispatched at once (one in flight at a time): waiting for the next tick would add up
//! to a tick to every propagation. `on_tick` restarts the loop after a failure (when the
//! client's backoff has passed) and runs the client's own compaction. Throughout, the
//! last good state keeps being served.
//!
//! Shared data holds one small key per epoch and the status ([`STATUS_KEY`]), written
//! last, after the epoch keys of an answer: a filter VM that reads version V reads epochs
//! at least as new as V. Proxy-wasm cannot delete a key: a removed entry is an empty
//! value.

use std::time::Duration;

use epochgate_core::config::{JwksSource, SyncConfig};
use epochgate_core::rotation::jwks_fetch_due;
use epochgate_core::state::{encode_epoch, EntryWrite};
use epochgate_core::sync::client::{kept_note, Backoff, Event, SyncClient};
use epochgate_core::sync::{SyncStatus, STATUS_KEY};

use crate::host::{Metric, SyncHost};
use crate::http::LogLimiter;
use crate::shared_keys;

/// How often `on_tick` runs: it restarts the loop after a failure and updates the age gauge.
pub const TICK: Duration = Duration::from_millis(200);

/// The sync loop's I/O state.
pub struct SyncService {
    client: SyncClient,
    cluster: String,
    authority: String,
    edge_token: String,
    /// The Envoy call token of the request in flight, and the client's id for it.
    in_flight: Option<(u32, u64)>,
    /// The last time the clock could be read (a failed read must not stamp time 0).
    last_now_ms: u64,
    jwks_source: Option<JwksSource>,
    jwks: JwksState,
    jwks_backoff: Backoff,
    failure_log: LogLimiter,
}

/// The remote JWKS fetch (when the sync config has a `jwks` section).
#[derive(Debug, Default)]
struct JwksState {
    in_flight: Option<u32>,
    fetched_ms: Option<u64>,
    attempt_ms: u64,
    failures: u32,
    next_attempt_ms: u64,
}

/// A seed for the jitter, different per edge and per start.
fn seed(edge_id: &str, now_ms: u64) -> u64 {
    edge_id
        .bytes()
        .fold(now_ms ^ 0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

impl SyncService {
    pub fn new(config: SyncConfig, edge_token: String, edge_id: String, now_ms: u64) -> Self {
        let seed = seed(&edge_id, now_ms);
        Self {
            jwks_backoff: Backoff::new(config.retry_min_ms, config.retry_max_ms, seed ^ 1),
            client: SyncClient::new(config.client_config(edge_id), seed),
            cluster: config.cluster,
            authority: config.authority,
            edge_token,
            in_flight: None,
            last_now_ms: now_ms,
            jwks_source: config.jwks,
            jwks: JwksState::default(),
            failure_log: LogLimiter::default(),
        }
    }

    pub fn edge_id(&self) -> &str {
        &self.client.config().edge_id
    }

    /// The version applied.
    pub fn version(&self) -> u64 {
        self.client.version()
    }

    /// The time now, or `None` (counted, logged at most once per interval) if the host
    /// clock fails: then nothing is applied or stamped.
    fn now<H: SyncHost>(&mut self, host: &H) -> Option<u64> {
        match host.now_ms() {
            Ok(t) => {
                self.last_now_ms = t;
                Some(t)
            }
            Err(e) => {
                host.metric(Metric::HostCallFailed, 1);
                if self.failure_log.should_log(None) {
                    log::error!("sync: {e}; nothing applied until the clock is back");
                }
                None
            }
        }
    }

    /// Restarts the loop when nothing is in flight and the backoff has passed; runs the
    /// client's compaction.
    pub fn on_tick<H: SyncHost>(&mut self, host: &H) {
        let Some(now) = self.now(host) else {
            return;
        };
        if let Some(status) = self.client.status() {
            host.metric(Metric::StateAgeMs, now.saturating_sub(status.synced_at_ms));
        }
        let swept = self.client.handle_timeout(now);
        if !swept.is_empty() {
            log::info!(
                "sync: {} entries past the session horizon dropped",
                swept.len()
            );
            self.mirror(host, now, &swept);
        }
        self.dispatch(host, now);
        self.maybe_fetch_jwks(host, now);
    }

    /// Writes what the client changed into shared data; `false` (the client is told, and
    /// rewrites everything with its next snapshot) if the host refused a write.
    fn mirror<H: SyncHost>(&mut self, host: &H, now: u64, writes: &[EntryWrite]) -> bool {
        let failed = writes
            .iter()
            .filter(|w| {
                let value = w.epoch_ms.map(encode_epoch).unwrap_or_default();
                !host.set_shared_data(&w.key, &value)
            })
            .count();
        if failed == 0 {
            return true;
        }
        host.metric(Metric::HostCallFailed, 1);
        let why = format!("{failed} shared-data writes failed");
        let event = self.client.host_write_failed(now, &why);
        self.log_event(host, &event, None);
        false
    }

    fn dispatch<H: SyncHost>(&mut self, host: &H, now: u64) {
        if self.in_flight.is_some() && self.client.in_flight(now) {
            return;
        }
        let Some(t) = self.client.poll_transmit(now) else {
            return;
        };
        let auth = format!("Bearer {}", self.edge_token);
        let headers = [
            (":method", "GET"),
            (":path", t.path.as_str()),
            (":authority", self.authority.as_str()),
            ("authorization", auth.as_str()),
            ("accept", "application/json"),
        ];
        match host.dispatch_get(&self.cluster, &headers, Duration::from_millis(t.timeout_ms)) {
            Ok(token) => self.in_flight = Some((token, t.id)),
            Err(e) => {
                self.in_flight = None;
                let why = format!("cannot dispatch to cluster {:?}: {e}", self.cluster);
                let event = self.client.handle_transmit_failed(t.id, now, &why);
                self.log_event(host, &event, None);
            }
        }
    }

    /// Handles the answer to the call `token`.
    pub fn on_response<H: SyncHost>(
        &mut self,
        host: &H,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        if self.jwks.in_flight == Some(token) {
            return self.on_jwks_response(host, num_headers, body_size);
        }
        let Some((_, id)) = self.in_flight.filter(|(t, _)| *t == token) else {
            log::warn!("sync: answer for unknown call {token} ignored");
            return;
        };
        self.in_flight = None;
        let Some(now) = self.now(host) else {
            let why = "host clock unavailable; the answer was not applied";
            let event = self
                .client
                .handle_transmit_failed(id, self.last_now_ms, why);
            return self.log_event(host, &event, None);
        };
        let (status, body) = host.call_response(num_headers, body_size);
        let answer = match status {
            Some(code) => Ok((code, body.as_slice())),
            None => Err("call failed: control plane unreachable, reset or timed out".to_string()),
        };
        let before = self.client.status().cloned();
        let outcome = self.client.handle_answer(id, now, answer);
        if !self.mirror(host, now, &outcome.writes) {
            return;
        }
        if let Event::Applied { complete: true, .. } = outcome.event {
            let published = self
                .client
                .status()
                .is_some_and(|s| host.set_shared_data(STATUS_KEY, &s.encode()));
            if !published {
                host.metric(Metric::HostCallFailed, 1);
                let event = self
                    .client
                    .host_write_failed(now, "shared-data write of the sync status failed");
                return self.log_event(host, &event, None);
            }
        }
        self.log_event(host, &outcome.event, before.as_ref());
        self.dispatch(host, now);
    }

    /// Logs and counts what the client did.
    fn log_event<H: SyncHost>(&self, host: &H, event: &Event, before: Option<&SyncStatus>) {
        match event {
            Event::Applied {
                version,
                snapshot,
                complete: true,
                changes,
                held,
                changed,
                kept,
                recovered_after,
            } => {
                if *recovered_after > 0 {
                    log::info!("sync: recovered after {recovered_after} failed attempts");
                }
                if *changed || *changes > 0 {
                    log::info!(
                        "sync: applied {} v{version} ({changes} changes, {held} keys held)",
                        if *snapshot { "snapshot" } else { "delta" },
                    );
                }
                if *kept > 0 {
                    host.metric(Metric::SyncKept, u64::try_from(*kept).unwrap_or(u64::MAX));
                    log::warn!("{}", kept_note(*version, *kept, before));
                }
                host.metric(Metric::SyncOk, 1);
                host.metric(Metric::StateVersion, *version);
                host.metric(Metric::StateAgeMs, 0);
            }
            Event::Applied { .. } | Event::Superseded => {}
            Event::Restart { why } => {
                log::warn!("sync: {why}; asking for a snapshot (what is held stays in force)");
            }
            Event::Failed {
                why,
                failures,
                retry_in_ms,
            } => {
                host.metric(Metric::SyncFailed, 1);
                if *failures == 1 || failures.is_multiple_of(20) {
                    log::warn!(
                        "sync failed ({failures} in a row): {why}; serving the last good state (v{}), retrying in {retry_in_ms} ms",
                        self.client.version(),
                    );
                }
            }
        }
    }

    /// Fetches the JWKS when it is due: first at start, then every `refresh_s`, and when a
    /// filter VM asked (an unknown `kid`) — at most once per `min_refresh_s`.
    fn maybe_fetch_jwks<H: SyncHost>(&mut self, host: &H, now: u64) {
        let Some(src) = &self.jwks_source else {
            return;
        };
        let j = &self.jwks;
        let requested = || {
            host.shared_data(shared_keys::JWKS_REFRESH)
                .ok()
                .flatten()
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
        };
        let due = jwks_fetch_due(
            now,
            j.in_flight.is_some(),
            j.next_attempt_ms,
            j.fetched_ms,
            j.attempt_ms,
            // Read only when it can matter (a fetch already made, none in flight).
            if j.fetched_ms.is_some() && j.in_flight.is_none() {
                requested()
            } else {
                None
            },
            src.refresh_s,
            src.min_refresh_s,
        );
        if !due {
            return;
        }
        let headers = [
            (":method", "GET"),
            (":path", src.path.as_str()),
            (":authority", src.authority.as_str()),
            ("accept", "application/json"),
        ];
        self.jwks.attempt_ms = now;
        match host.dispatch_get(&src.cluster, &headers, Duration::from_secs(5)) {
            Ok(token) => self.jwks.in_flight = Some(token),
            Err(e) => {
                let why = format!("cannot dispatch to cluster {:?}: {e}", src.cluster);
                self.jwks_failed(host, now, &why);
            }
        }
    }

    fn on_jwks_response<H: SyncHost>(&mut self, host: &H, num_headers: usize, body_size: usize) {
        self.jwks.in_flight = None;
        let Some(now) = self.now(host) else {
            return;
        };
        let (status, body) = host.call_response(num_headers, body_size);
        if status != Some(200) {
            let why = format!("the IdP answered {status:?}");
            return self.jwks_failed(host, now, &why);
        }
        // An empty or unusable document (or one of symmetric keys only) is a failed
        // fetch: the previous keys stay, or a broken IdP answer would lock everyone out.
        let checked = serde_json::from_slice::<serde_json::Value>(&body)
            .map_err(|e| e.to_string())
            .and_then(|doc| epochgate_core::jwt::check_remote_jwks(&doc));
        if let Err(e) = checked {
            return self.jwks_failed(host, now, &e);
        }
        if !host.set_shared_data(shared_keys::JWKS, &body)
            || !host.set_shared_data(shared_keys::JWKS_VERSION, now.to_string().as_bytes())
        {
            return self.jwks_failed(host, now, "shared-data write failed");
        }
        if self.jwks.fetched_ms.is_none() || self.jwks.failures > 0 {
            log::info!("jwks: fetched ({} bytes)", body.len());
        }
        self.jwks.fetched_ms = Some(now);
        self.jwks.failures = 0;
        self.jwks.next_attempt_ms = 0;
        host.metric(Metric::JwksOk, 1);
    }

    fn jwks_failed<H: SyncHost>(&mut self, host: &H, now: u64, why: &str) {
        self.jwks.failures = self.jwks.failures.saturating_add(1);
        let backoff = self.jwks_backoff.delay_ms(self.jwks.failures);
        self.jwks.next_attempt_ms = now.saturating_add(backoff);
        host.metric(Metric::JwksFailed, 1);
        // Requests held for this refresh stop waiting.
        host.set_shared_data(shared_keys::JWKS_FAILED, now.to_string().as_bytes());
        log::warn!(
            "jwks fetch failed ({} in a row): {why}; keeping the previous keys, retrying in {backoff} ms",
            self.jwks.failures
        );
    }
}
