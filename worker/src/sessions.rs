//! The sessions this isolate sees, reported to the control plane. The rules are in
//! [`epochgate_core::sessions`]: one recorder and one batch per isolate; a sighting is
//! taken when a session is first seen and then at most once a minute; every
//! `sessions_report_s` one batch is POSTed to `/v1/sync/sessions` in the background
//! (`ctx.waitUntil`), one at a time. No request waits for a report, and a failed one
//! loses only its batch. The client address is Cloudflare's `CF-Connecting-IP`.

use std::cell::RefCell;

use epochgate_core::claims::Identity;
use epochgate_core::sessions::{
    client_address, device_summary, Seen, SessionRecorder, SessionReporter,
};

use crate::edge::IncomingRequest;
use crate::host::{Host, Level};
use crate::settings::Settings;

/// The header Cloudflare sets to the client's address.
pub const CLIENT_IP_HEADER: &str = "cf-connecting-ip";

/// A report to send: where, and the JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportCall {
    pub url: String,
    pub body: Vec<u8>,
    pub sessions: usize,
}

/// One isolate's session bookkeeping.
#[derive(Debug)]
pub struct IsolateSessions {
    recorder: SessionRecorder,
    reporter: SessionReporter,
}

fn header<'a>(req: &'a IncomingRequest, name: &str) -> Option<&'a [u8]> {
    req.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

impl IsolateSessions {
    pub fn new(settings: &Settings) -> Self {
        Self {
            recorder: SessionRecorder::default(),
            reporter: SessionReporter::new(settings.worker.sessions_report_s.saturating_mul(1000)),
        }
    }

    /// After a request: records an allowed one's session (`report_sessions`), and
    /// returns the report to send in the background if one is due.
    pub fn after_request(
        cell: &RefCell<Self>,
        settings: &Settings,
        req: &IncomingRequest,
        identity: Option<&Identity>,
        edge_id: &str,
        now_ms: u64,
    ) -> Option<ReportCall> {
        let config = settings.engine.config();
        if !config.report_sessions {
            return None;
        }
        let mut s = cell.borrow_mut();
        if let Some(id) = identity {
            s.recorder.observe(id, now_ms, || Seen {
                device: device_summary(header(req, "user-agent")),
                address: header(req, CLIENT_IP_HEADER)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .and_then(|a| client_address(a, config.truncate_addresses)),
            });
        }
        s.recorder.tick(now_ms);
        for seen in s.recorder.take_output() {
            s.reporter.batch.add(seen);
        }
        let report = s.reporter.poll(now_ms)?;
        match serde_json::to_vec(&report) {
            Ok(body) => Some(ReportCall {
                url: settings.worker.sessions_url(edge_id),
                body,
                sessions: report.sessions.len(),
            }),
            Err(_) => {
                s.reporter.finished();
                None
            }
        }
    }

    /// Sends a report and logs a failure; the next report waits for the next interval.
    pub async fn send<H: Host>(
        cell: &RefCell<Self>,
        settings: &Settings,
        host: &H,
        call: ReportCall,
    ) {
        let result = host
            .post(
                &call.url,
                &settings.edge_token,
                &call.body,
                settings.worker.sync_timeout_ms,
            )
            .await;
        cell.borrow_mut().reporter.finished();
        match result {
            Ok((200, _)) => {}
            Ok((status, body)) => host.log(
                Level::Warn,
                &format!(
                    "session report of {} sessions refused ({status}): {}; that batch is dropped",
                    call.sessions,
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            ),
            Err(e) => host.log(
                Level::Warn,
                &format!("session report failed: {e}; that batch is dropped"),
            ),
        }
    }

    pub fn pending(&self) -> usize {
        self.reporter.batch.len()
    }
}
