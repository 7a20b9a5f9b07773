//! The HTTP filter: per request, read the headers (as bytes), strip the identity headers
//! a client might have forged, read only the epoch keys this token needs from shared
//! data, and act on `core`'s [`Decision`].

use epochgate_core::state::{decode_epoch, EpochSource};
use epochgate_core::sync::{SyncStatus, STATUS_KEY};
use epochgate_core::{Decision, Engine, RequestInfo};

use crate::host::{Host, HttpHost, Metric};

/// Epochs read from shared data, one small key at a time (`get_shared_data` copies the
/// value into the VM on every call, so a big blob would cost every request).
pub struct SharedEpochs<'a, H>(pub &'a H);

impl<H: Host> EpochSource for SharedEpochs<'_, H> {
    fn epoch_ms(&self, key: &str) -> Option<u64> {
        self.0.shared_data(key).and_then(|v| decode_epoch(&v))
    }
}

/// What to tell Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the request on (identity headers added).
    Continue,
    /// A local response was sent.
    Stop,
}

/// Handles a request's headers.
pub fn on_request_headers<H: HttpHost>(engine: &Engine, host: &H, context_id: u32) -> Verdict {
    let headers = host.request_headers();
    for (name, _) in &headers {
        if engine.is_reserved_header(name) {
            host.remove_request_header(name);
        }
    }
    let path = headers
        .iter()
        .find(|(n, _)| n == ":path")
        .and_then(|(_, v)| std::str::from_utf8(v).ok())
        .unwrap_or("/");
    let status = host
        .shared_data(STATUS_KEY)
        .and_then(|v| SyncStatus::decode(&v));
    let now_ms = host.now_ms();
    let request = RequestInfo {
        headers: &headers,
        path,
    };
    match engine.decide(request, &SharedEpochs(host), status.as_ref(), now_ms) {
        Decision::Allow {
            identity,
            signature_only,
        } => {
            if let Some(identity) = &identity {
                for (name, value) in engine.upstream_headers(identity) {
                    host.add_request_header(name, value);
                }
            }
            if signature_only {
                log::warn!("#{context_id} revocation state is stale: allowed on signature only (on_stale: allow)");
                host.metric(Metric::AllowedSignatureOnly, 1);
            }
            host.metric(Metric::Allowed, 1);
            Verdict::Continue
        }
        Decision::Deny {
            reason,
            detail,
            response,
        } => {
            log::info!("#{context_id} denied {reason}: {detail}");
            host.metric(Metric::Denied(reason), 1);
            host.send_response(response.status, &response.headers, &response.body);
            Verdict::Stop
        }
    }
}
