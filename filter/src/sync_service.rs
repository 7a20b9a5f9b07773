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
use epochgate_core::sync::{
    plan_page_writes, sync_path, sync_path_paged, SnapshotResume, SyncResponse, SyncStatus,
    STATUS_KEY,
};

use crate::host::{Metric, SyncHost};
use crate::shared_keys;

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
    jwks: JwksState,
    /// A paged snapshot in progress, and the keys its pages held so far.
    paging: Option<Paging>,
    kept: BTreeSet<String>,
}

/// Where a paged snapshot resumes.
#[derive(Debug)]
struct Paging {
    stream: String,
    version: u64,
    after: String,
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
            jwks: JwksState::default(),
            paging: None,
            kept: BTreeSet::new(),
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
        self.maybe_fetch_jwks(host, now);
    }

    /// Fetches the JWKS when it is due: first at start, then every `refresh_s`, and when a
    /// filter VM asked (an unknown `kid`) — at most once per `min_refresh_s`.
    fn maybe_fetch_jwks<H: SyncHost>(&mut self, host: &H, now: u64) {
        let Some(src) = &self.config.jwks else {
            return;
        };
        let j = &self.jwks;
        if j.in_flight.is_some() || now < j.next_attempt_ms {
            return;
        }
        let due = match j.fetched_ms {
            None => true,
            Some(at) => {
                let requested = host
                    .shared_data(shared_keys::JWKS_REFRESH)
                    .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok())
                    .is_some_and(|r| r > j.attempt_ms);
                now.saturating_sub(at) >= src.refresh_s.saturating_mul(1000)
                    || (requested
                        && now.saturating_sub(j.attempt_ms)
                            >= src.min_refresh_s.saturating_mul(1000))
            }
        };
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
        let now = host.now_ms();
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
        let backoff = self.backoff_ms(self.jwks.failures);
        self.jwks.next_attempt_ms = now.saturating_add(backoff);
        host.metric(Metric::JwksFailed, 1);
        // Requests held for this refresh stop waiting.
        host.set_shared_data(shared_keys::JWKS_FAILED, now.to_string().as_bytes());
        log::warn!(
            "jwks fetch failed ({} in a row): {why}; keeping the previous keys, retrying in {backoff} ms",
            self.jwks.failures
        );
    }

    /// Exponential backoff with jitter: half fixed, half random, so edges do not retry
    /// in lockstep.
    fn backoff_ms(&mut self, failures: u32) -> u64 {
        let exp = failures.saturating_sub(1).min(20);
        let backoff = self
            .config
            .retry_min_ms
            .saturating_mul(1u64 << exp)
            .min(self.config.retry_max_ms);
        self.rng = self
            .rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        backoff / 2 + (self.rng >> 33) % (backoff / 2 + 1)
    }

    fn dispatch<H: SyncHost>(&mut self, host: &H) {
        let path = match (self.config.snapshot_page, &self.paging) {
            (0, _) => sync_path(
                self.version,
                self.stream.as_deref(),
                self.config.wait_s,
                &self.edge_id,
            ),
            // The rest of a paged snapshot: at once, no waiting.
            (limit, Some(p)) => sync_path_paged(
                0,
                Some(&p.stream),
                0,
                &self.edge_id,
                limit,
                Some(SnapshotResume {
                    version: p.version,
                    after: &p.after,
                }),
            ),
            (limit, None) => sync_path_paged(
                self.version,
                self.stream.as_deref(),
                self.config.wait_s,
                &self.edge_id,
                limit,
                None,
            ),
        };
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
        if self.in_flight != Some(token) {
            log::warn!("sync: answer for unknown call {token} ignored");
            return;
        }
        self.in_flight = None;
        let (status, body) = host.call_response(num_headers, body_size);
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
        if resp.snapshot {
            let continues = self
                .paging
                .as_ref()
                .is_some_and(|p| p.stream == resp.stream && p.version == resp.version);
            if !continues {
                // A new snapshot (or the control plane started over): its own pages only.
                self.kept.clear();
            }
        }
        let writes = plan_page_writes(resp, &mut self.written, &mut self.kept);
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
        if let (true, Some(after)) = (resp.snapshot, &resp.next) {
            // More pages to come: the edge has this version only after the last one.
            self.paging = Some(Paging {
                stream: resp.stream.clone(),
                version: resp.version,
                after: after.clone(),
            });
            self.failures = 0;
            return true;
        }
        self.paging = None;
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
        self.rng ^= host.now_ms();
        let delay = self.backoff_ms(self.failures);
        self.next_attempt_ms = host.now_ms().saturating_add(delay);
        host.metric(Metric::SyncFailed, 1);
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            log::warn!(
                "sync failed ({} in a row): {why}; serving the last good state (v{}), retrying in {delay} ms",
                self.failures,
                self.version,
            );
        }
    }
}
