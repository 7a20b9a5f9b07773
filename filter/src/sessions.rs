//! Session reporting glue: the filter VMs record, the sync VM sends. The rules — what
//! a session is, when a sighting is handed on, how batches merge and when one goes — are
//! in [`epochgate_core::sessions`]; this file only moves bytes.
//!
//! - [`SessionTap`] (each filter VM): on an allowed request, one map update in the
//!   core recorder; the sightings it hands on (a new session, or a minute since the
//!   last time) are JSON-encoded in batches ([`HAND_ON_BATCH`], or on the VM's next
//!   250 ms tick) and put on a proxy-wasm shared queue ([`QUEUE`], found by `vm_id` like
//!   shared data). Nothing waits: no queue yet (the sync VM starts after the filter
//!   VMs), and the sightings are dropped and counted.
//! - [`SessionUplink`] (the sync VM): registers the queue, drains it on every tick into
//!   the batch, and every `sessions_report_s` POSTs one batch to the control plane's
//!   `/v1/sync/sessions` with the edge token — its own call, beside the long-poll, one
//!   at a time. A failed report loses that batch only.
//!
//! proxy-wasm 0.2.5's queue calls panic on a status they do not expect; Envoy answers
//! only the ones they handle (`Ok`, `NotFound`, `Empty`), and the calls are made only
//! with a queue id Envoy gave.

use std::cell::RefCell;
use std::time::Duration;

use epochgate_core::claims::Identity;
use epochgate_core::config::SyncConfig;
use epochgate_core::sessions::{
    client_address, device_summary, report_path, Seen, SessionRecorder, SessionReporter,
    SessionSeen,
};

use crate::host::{HttpHost, Metric, SyncHost};

/// The shared queue's name (per `vm_id`).
pub const QUEUE: &str = "epochgate_sessions";

/// How long a report call may take.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Payloads the sync VM takes off the queue per tick at most (the rest on the next).
const DRAIN_PER_TICK: usize = 1000;

/// A filter VM hands sightings on in batches of this many, or on its next tick (250 ms):
/// one encoding and one queue call per batch, not per new session.
pub const HAND_ON_BATCH: usize = 64;

/// A filter VM's recorder (see the module doc).
#[derive(Debug)]
pub struct SessionTap {
    recorder: RefCell<SessionRecorder>,
    truncate_addresses: bool,
}

fn header<'a>(headers: &'a [(String, Vec<u8>)], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

impl SessionTap {
    pub fn new(truncate_addresses: bool) -> Self {
        Self {
            recorder: RefCell::new(SessionRecorder::default()),
            truncate_addresses,
        }
    }

    /// An allowed request of `identity`. The User-Agent is summarized and the address
    /// read only when the recorder hands the sighting on.
    pub fn on_allow<H: HttpHost>(
        &self,
        host: &H,
        identity: &Identity,
        headers: &[(String, Vec<u8>)],
        now_ms: u64,
    ) {
        let mut recorder = self.recorder.borrow_mut();
        recorder.observe(identity, now_ms, || Seen {
            device: device_summary(header(headers, "user-agent")),
            address: host
                .property(&["source", "address"])
                .ok()
                .flatten()
                .and_then(|a| String::from_utf8(a).ok())
                .and_then(|a| client_address(&a, self.truncate_addresses)),
        });
        if recorder.output_len() >= HAND_ON_BATCH {
            Self::hand_on(host, recorder.take_output());
        }
    }

    /// On the filter root's tick: what waits to be handed on, and the requests counted
    /// since a session's last report.
    pub fn on_tick<H: HttpHost>(&self, host: &H) {
        // Without a clock, the counts wait for the next tick (a report is bookkeeping).
        let Ok(now_ms) = host.now_ms() else {
            return;
        };
        let mut recorder = self.recorder.borrow_mut();
        recorder.tick(now_ms);
        if recorder.has_output() {
            Self::hand_on(host, recorder.take_output());
        }
    }

    fn hand_on<H: HttpHost>(host: &H, sightings: Vec<SessionSeen>) {
        let n = sightings.len() as u64;
        let queued = serde_json::to_vec(&sightings)
            .map(|payload| host.enqueue_sessions(&payload))
            .unwrap_or(false);
        if !queued {
            host.metric(Metric::SessionsDropped, n);
        }
    }

    pub fn tracked(&self) -> usize {
        self.recorder.borrow().tracked()
    }
}

/// The sync VM's sender (see the module doc).
#[derive(Debug)]
pub struct SessionUplink {
    reporter: SessionReporter,
    cluster: String,
    authority: String,
    authorization: String,
    path: String,
    in_flight: Option<u32>,
    failures: u32,
    dropped_reported: u64,
}

impl SessionUplink {
    pub fn new(config: &SyncConfig, edge_token: &str, edge_id: &str) -> Self {
        Self {
            reporter: SessionReporter::new(config.sessions_report_s.saturating_mul(1000)),
            cluster: config.cluster.clone(),
            authority: config.authority.clone(),
            authorization: format!("Bearer {edge_token}"),
            path: report_path(edge_id),
            in_flight: None,
            failures: 0,
            dropped_reported: 0,
        }
    }

    /// Drains the queue into the batch and sends a report when one is due.
    pub fn on_tick<H: SyncHost>(&mut self, host: &H) {
        for _ in 0..DRAIN_PER_TICK {
            let Some(payload) = host.dequeue_sessions() else {
                break;
            };
            match serde_json::from_slice::<Vec<SessionSeen>>(&payload) {
                Ok(sightings) => {
                    for s in sightings {
                        self.reporter.batch.add(s);
                    }
                }
                Err(e) => log::warn!("sessions: an unreadable queue entry dropped: {e}"),
            }
        }
        let dropped = self.reporter.batch.dropped();
        if dropped > self.dropped_reported {
            host.metric(Metric::SessionsDropped, dropped - self.dropped_reported);
            self.dropped_reported = dropped;
        }
        let Some(report) = host.now_ms().ok().and_then(|now| self.reporter.poll(now)) else {
            return;
        };
        let body = match serde_json::to_vec(&report) {
            Ok(b) => b,
            Err(e) => {
                self.reporter.finished();
                return self.failed(host, &format!("cannot encode the report: {e}"));
            }
        };
        let headers = [
            (":method", "POST"),
            (":path", self.path.as_str()),
            (":authority", self.authority.as_str()),
            ("authorization", self.authorization.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json"),
        ];
        match host.dispatch_post(&self.cluster, &headers, &body, REPORT_TIMEOUT) {
            Ok(token) => self.in_flight = Some(token),
            Err(e) => {
                self.reporter.finished();
                let why = format!("cannot dispatch to cluster {:?}: {e}", self.cluster);
                self.failed(host, &why);
            }
        }
    }

    /// The answer to a call; `false` if the call was not a report.
    pub fn on_response<H: SyncHost>(
        &mut self,
        host: &H,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) -> bool {
        if self.in_flight != Some(token) {
            return false;
        }
        self.in_flight = None;
        self.reporter.finished();
        match host.call_response(num_headers, body_size) {
            (Some(200), _) => {
                if self.failures > 0 {
                    log::info!("sessions: reports go through again");
                }
                self.failures = 0;
                host.metric(Metric::SessionReportsOk, 1);
            }
            (Some(code), body) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                self.failed(host, &format!("control plane answered {code}: {text}"));
            }
            (None, _) => self.failed(host, "call failed: unreachable, reset or timed out"),
        }
        true
    }

    fn failed<H: SyncHost>(&mut self, host: &H, why: &str) {
        self.failures = self.failures.saturating_add(1);
        host.metric(Metric::SessionReportsFailed, 1);
        if self.failures == 1 || self.failures.is_multiple_of(20) {
            log::warn!(
                "sessions: report failed ({} in a row): {why}; that batch is dropped",
                self.failures
            );
        }
    }

    pub fn pending(&self) -> usize {
        self.reporter.batch.len()
    }
}
