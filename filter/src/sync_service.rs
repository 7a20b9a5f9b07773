//! The sync service: a loop of long-polls to the control plane, run by the singleton
//! service VM, that writes the epochs into shared data for the filter VMs.
//!
//! An answer is applied in `on_http_call_response` and the next `GET /v1/sync` is
//! dispatched at once (one in flight at a time): waiting for the next tick would add up
//! to a tick to every propagation. `on_tick` only restarts the loop after a failure, with
//! exponential backoff and jitter. Throughout, the last good state keeps being served.

use std::collections::BTreeSet;
use std::time::Duration;

use epochgate_core::config::SyncConfig;
use epochgate_core::sync::{plan_writes, sync_path, SyncResponse, SyncStatus, STATUS_KEY};

use crate::host::{Metric, SyncHost};

/// How often `on_tick` runs: it restarts the loop after a failure and updates the age gauge.
pub const TICK: Duration = Duration::from_millis(200);

/// The sync loop's state.
#[derive(Debug)]
pub struct SyncService {
    config: SyncConfig,
    edge_token: String,
    edge_id: String,
    /// The epoch keys this VM wrote: proxy-wasm cannot list shared-data keys, so a
    /// snapshot can only clear the keys it knows of.
    written: BTreeSet<String>,
    stream: Option<String>,
    version: u64,
    synced_at_ms: Option<u64>,
    in_flight: Option<u32>,
    failures: u32,
    next_attempt_ms: u64,
    rng: u64,
}

impl SyncService {
    pub fn new(config: SyncConfig, edge_token: String, edge_id: String) -> Self {
        Self {
            config,
            edge_token,
            edge_id,
            written: BTreeSet::new(),
            stream: None,
            version: 0,
            synced_at_ms: None,
            in_flight: None,
            failures: 0,
            next_attempt_ms: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn edge_id(&self) -> &str {
        &self.edge_id
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Restarts the loop when nothing is in flight and the backoff has passed.
    pub fn on_tick<H: SyncHost>(&mut self, host: &H) {
        let now = host.now_ms();
        if let Some(at) = self.synced_at_ms {
            host.metric(Metric::StateAgeMs, now.saturating_sub(at));
        }
        if self.in_flight.is_none() && now >= self.next_attempt_ms {
            self.dispatch(host);
        }
    }

    fn dispatch<H: SyncHost>(&mut self, host: &H) {
        let path = sync_path(
            self.version,
            self.stream.as_deref(),
            self.config.wait_s,
            &self.edge_id,
        );
        let auth = format!("Bearer {}", self.edge_token);
        let headers = [
            (":method", "GET"),
            (":path", path.as_str()),
            (":authority", self.config.authority.as_str()),
            ("authorization", auth.as_str()),
            ("accept", "application/json"),
        ];
        let timeout = Duration::from_millis(self.config.call_timeout_ms());
        match host.dispatch_get(&self.config.cluster, &headers, timeout) {
            Ok(token) => self.in_flight = Some(token),
            Err(e) => self.fail(
                host,
                &format!("cannot dispatch to cluster {:?}: {e}", self.config.cluster),
            ),
        }
    }

    /// Handles the answer to the call `token`.
    pub fn on_response<H: SyncHost>(&mut self, host: &H, token: u32, body_size: usize) {
        if self.in_flight != Some(token) {
            log::warn!("sync: answer for unknown call {token} ignored");
            return;
        }
        self.in_flight = None;
        let (status, body) = host.call_response(body_size);
        match status {
            Some(200) => match SyncResponse::parse(&body) {
                Ok(resp) => {
                    if self.apply(host, &resp) {
                        self.dispatch(host);
                    }
                }
                Err(e) => self.fail(host, &e.to_string()),
            },
            Some(code) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                self.fail(host, &format!("control plane answered {code}: {text}"));
            }
            None => self.fail(
                host,
                "call failed: control plane unreachable, reset or timed out",
            ),
        }
    }

    /// Applies an answer; `false` when it could not be (the loop then backs off).
    fn apply<H: SyncHost>(&mut self, host: &H, resp: &SyncResponse) -> bool {
        if !resp.snapshot
            && (self.stream.as_deref() != Some(&resp.stream) || resp.version < self.version)
        {
            // Never mix two histories: start over from a snapshot.
            log::warn!(
                "sync: delta for stream {} v{} while holding {:?} v{}; asking for a snapshot",
                resp.stream,
                resp.version,
                self.stream,
                self.version
            );
            self.stream = None;
            self.version = 0;
            return true;
        }
        let now = host.now_ms();
        let writes = plan_writes(resp, &mut self.written);
        let mut failed = 0usize;
        for (key, value) in &writes {
            if !host.set_shared_data(key, value) {
                failed += 1;
            }
        }
        if failed > 0 {
            // Shared data refused a write: do not claim the version, retry from scratch.
            self.stream = None;
            self.version = 0;
            self.fail(host, &format!("{failed} shared-data writes failed"));
            return false;
        }
        let status = SyncStatus {
            stream: resp.stream.clone(),
            version: resp.version,
            synced_at_ms: now,
        };
        if !host.set_shared_data(STATUS_KEY, &status.encode()) {
            self.fail(host, "shared-data write of the sync status failed");
            return false;
        }
        if self.failures > 0 {
            log::info!("sync: recovered after {} failed attempts", self.failures);
        }
        if resp.snapshot || resp.version != self.version || !resp.changes.is_empty() {
            log::info!(
                "sync: applied {} v{} ({} changes, {} keys held)",
                if resp.snapshot { "snapshot" } else { "delta" },
                resp.version,
                resp.changes.len(),
                self.written.len()
            );
        }
        self.failures = 0;
        self.stream = Some(resp.stream.clone());
        self.version = resp.version;
        self.synced_at_ms = Some(now);
        host.metric(Metric::SyncOk, 1);
        host.metric(Metric::StateVersion, resp.version);
        host.metric(Metric::StateAgeMs, 0);
        true
    }

    fn fail<H: SyncHost>(&mut self, host: &H, why: &str) {
        self.failures = self.failures.saturating_add(1);
        let exp = self.failures.saturating_sub(1).min(20);
        let backoff = self
            .config
            .retry_min_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.retry_max_ms);
        // Jitter: half fixed, half random, so edges do not retry in lockstep.
        self.rng ^= host.now_ms();
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let jitter = (self.rng >> 33) % (backoff / 2 + 1);
        self.next_attempt_ms = host.now_ms().saturating_add(backoff / 2 + jitter);
        host.metric(Metric::SyncFailed, 1);
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            log::warn!(
                "sync failed ({} in a row): {why}; serving the last good state (v{}), retrying in {} ms",
                self.failures,
                self.version,
                backoff / 2 + jitter
            );
        }
    }
}
