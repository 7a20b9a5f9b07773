//! The host, behind a small trait: what the filter and the sync service need from Envoy.
//!
//! [`ProxyHost`] is the real one (proxy-wasm hostcalls, wasm only). Tests use
//! [`crate::fake::FakeHost`], with time, shared data and failures injected. Every call
//! goes through `proxy_wasm::hostcalls` and its `Result`s: the SDK's `Context` helpers
//! `unwrap` host errors, and a panic kills the VM (Envoy then answers 503 to everything).
//!
//! A host call that fails is a [`HostFailure`], never a default value: a clock read of
//! 0 would pass every `exp` and make the state look fresh, "no headers" would skip the
//! token, a lost header write would let a spoofed identity through. The callers deny
//! (503 `state_unavailable`, 500 `internal_error`), count and log it. (The SDK itself
//! aborts the VM on the statuses it does not expect; Envoy then fails closed.)

use std::time::Duration;

/// Counters and gauges the filter keeps (Envoy shows them as `wasmcustom.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Allowed,
    /// Allowed while the state was stale (`on_stale: allow`), with every revocation
    /// held still enforced.
    AllowedStale,
    Denied(epochgate_core::DenyReason),
    /// Streams reset because their session was revoked while open.
    StreamsEnded,
    /// Signatures verified by the host's native crypto.
    NativeVerifications,
    /// Host calls that failed (each ended in a deny, or a sync retried).
    HostCallFailed,
    /// Entries a snapshot lacked or held lower than this edge, kept in force.
    SyncKept,
    /// Requests held for a JWKS refresh (an unknown `kid`).
    KeyWaits,
    SyncOk,
    SyncFailed,
    JwksOk,
    JwksFailed,
    /// Session reports the control plane took, and those that failed.
    SessionReportsOk,
    SessionReportsFailed,
    /// Session sightings that could not be handed on (no queue yet, a full batch).
    SessionsDropped,
    /// Gauge.
    StateVersion,
    /// Gauge: ms since the last successful sync.
    StateAgeMs,
}

impl Metric {
    pub fn name(self) -> String {
        match self {
            Metric::Allowed => "epochgate.allowed".into(),
            Metric::AllowedStale => "epochgate.allowed_stale".into(),
            Metric::HostCallFailed => "epochgate.host_call_failed".into(),
            Metric::SyncKept => "epochgate.sync_kept".into(),
            Metric::Denied(r) => format!("epochgate.denied.{}", r.code()),
            Metric::StreamsEnded => "epochgate.streams_ended".into(),
            Metric::NativeVerifications => "epochgate.native_verifications".into(),
            Metric::KeyWaits => "epochgate.key_waits".into(),
            Metric::SyncOk => "epochgate.sync_ok".into(),
            Metric::JwksOk => "epochgate.jwks_ok".into(),
            Metric::JwksFailed => "epochgate.jwks_failed".into(),
            Metric::SyncFailed => "epochgate.sync_failed".into(),
            Metric::SessionReportsOk => "epochgate.session_reports_ok".into(),
            Metric::SessionReportsFailed => "epochgate.session_reports_failed".into(),
            Metric::SessionsDropped => "epochgate.sessions_dropped".into(),
            Metric::StateVersion => "epochgate.state_version".into(),
            Metric::StateAgeMs => "epochgate.state_age_ms".into(),
        }
    }

    pub fn is_gauge(self) -> bool {
        matches!(self, Metric::StateVersion | Metric::StateAgeMs)
    }

    /// Every metric, so they can be defined up front (and show as 0 in `/stats`).
    pub fn all() -> Vec<Metric> {
        let mut all = vec![
            Metric::Allowed,
            Metric::AllowedStale,
            Metric::StreamsEnded,
            Metric::NativeVerifications,
            Metric::HostCallFailed,
            Metric::SyncKept,
            Metric::KeyWaits,
            Metric::SyncOk,
            Metric::SyncFailed,
            Metric::JwksOk,
            Metric::JwksFailed,
            Metric::SessionReportsOk,
            Metric::SessionReportsFailed,
            Metric::SessionsDropped,
            Metric::StateVersion,
            Metric::StateAgeMs,
        ];
        all.extend(
            epochgate_core::DenyReason::ALL
                .into_iter()
                .map(Metric::Denied),
        );
        all
    }
}

/// A host call that failed: which one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFailure(pub &'static str);

impl std::fmt::Display for HostFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host call {} failed", self.0)
    }
}

/// What both roles read from the host.
pub trait Host {
    /// Wall-clock time in ms (the host's clock: wasm has no other).
    fn now_ms(&self) -> Result<u64, HostFailure>;
    /// A shared-data value (same `vm_id`, process-wide); `Ok(None)` if there is none.
    fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostFailure>;
    /// Counts (counter) or sets (gauge).
    fn metric(&self, metric: Metric, value: u64);
    /// Writes a shared-data value; `false` if the host refused.
    fn set_shared_data(&self, key: &str, value: &[u8]) -> bool;
}

/// What the HTTP filter does to a request.
pub trait HttpHost: Host {
    /// All request headers, values as bytes (never `String`: a non-UTF-8 byte would make
    /// the SDK's string getters panic). Repeated headers appear once each.
    fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostFailure>;
    /// Replaces (`Some`) or removes (`None`) every value of a request header.
    fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostFailure>;
    fn add_response_header(&self, name: &str, value: &str);
    fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]);
    /// A gRPC trailers-only local reply.
    fn send_grpc_response(&self, grpc_status: u32, message: &str);
    /// A host property (e.g. `metadata`), raw; `Ok(None)` if there is none.
    fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostFailure>;
    /// Ends the current stream (after its headers went out, a local reply is no longer
    /// possible).
    fn reset_stream(&self);
    /// Hands encoded session sightings to the sync VM (a shared queue, found by
    /// `vm_id` like shared data); `false` if it is not there (yet).
    fn enqueue_sessions(&self, payload: &[u8]) -> bool;
}

/// What the sync service does.
pub trait SyncHost: Host {
    /// Dispatches a GET to the control plane; the token identifies the answer.
    fn dispatch_get(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<u32, String>;
    /// The answer's status (`None` when the call failed: reset, timeout, no host, a body
    /// over Envoy's buffer limit — then it has no headers) and body.
    fn call_response(&self, num_headers: usize, body_size: usize) -> (Option<u16>, Vec<u8>);
    /// Dispatches a POST with a body (the session reports).
    fn dispatch_post(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, String>;
    /// The next payload the filter VMs queued ([`HttpHost::enqueue_sessions`]).
    fn dequeue_sessions(&self) -> Option<Vec<u8>>;
}

#[cfg(target_arch = "wasm32")]
pub use proxy::ProxyHost;

#[cfg(target_arch = "wasm32")]
mod proxy {
    use super::*;
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::{BufferType, GrpcStatusCode, MapType, MetricType};
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;
    use std::time::UNIX_EPOCH;

    /// The real host. Metric ids are defined once per VM and cached here, and so is the
    /// sessions queue's id.
    #[derive(Default)]
    pub struct ProxyHost {
        metrics: RefCell<HashMap<Metric, u32>>,
        sessions_queue: Cell<Option<u32>>,
    }

    impl ProxyHost {
        pub fn new() -> Self {
            let host = Self::default();
            for m in Metric::all() {
                host.metric_id(m);
            }
            host
        }

        fn metric_id(&self, metric: Metric) -> Option<u32> {
            if let Some(id) = self.metrics.borrow().get(&metric) {
                return Some(*id);
            }
            let kind = if metric.is_gauge() {
                MetricType::Gauge
            } else {
                MetricType::Counter
            };
            let id = hostcalls::define_metric(kind, &metric.name()).ok()?;
            self.metrics.borrow_mut().insert(metric, id);
            Some(id)
        }

        /// The sync VM's end of the sessions queue (see [`crate::sessions`]).
        pub fn register_sessions_queue(&self) -> bool {
            match hostcalls::register_shared_queue(crate::sessions::QUEUE) {
                Ok(id) => {
                    self.sessions_queue.set(Some(id));
                    true
                }
                Err(e) => {
                    log::warn!("cannot register the sessions queue ({e:?}): no session reports");
                    false
                }
            }
        }

        /// A filter VM's handle on the queue, resolved on first use (the sync VM may
        /// register it after the filter VMs start).
        fn resolve_sessions_queue(&self) -> Option<u32> {
            if let Some(id) = self.sessions_queue.get() {
                return Some(id);
            }
            let vm_id = hostcalls::get_property(vec!["plugin_vm_id"])
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let id = hostcalls::resolve_shared_queue(&vm_id, crate::sessions::QUEUE)
                .ok()
                .flatten()?;
            self.sessions_queue.set(Some(id));
            Some(id)
        }
    }

    impl Host for ProxyHost {
        fn now_ms(&self) -> Result<u64, HostFailure> {
            // A time before 1970 is a broken clock too, not time 0.
            hostcalls::get_current_time()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .filter(|ms| *ms > 0)
                .ok_or(HostFailure("get_current_time"))
        }

        fn shared_data(&self, key: &str) -> Result<Option<Vec<u8>>, HostFailure> {
            hostcalls::get_shared_data(key)
                .map(|(v, _)| v)
                .map_err(|_| HostFailure("get_shared_data"))
        }

        fn set_shared_data(&self, key: &str, value: &[u8]) -> bool {
            hostcalls::set_shared_data(key, Some(value), None).is_ok()
        }

        fn metric(&self, metric: Metric, value: u64) {
            let Some(id) = self.metric_id(metric) else {
                return;
            };
            let _ = if metric.is_gauge() {
                hostcalls::record_metric(id, value)
            } else {
                hostcalls::increment_metric(id, i64::try_from(value).unwrap_or(i64::MAX))
            };
        }
    }

    impl HttpHost for ProxyHost {
        fn request_headers(&self) -> Result<Vec<(String, Vec<u8>)>, HostFailure> {
            hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
                .map_err(|_| HostFailure("get_header_map_pairs"))
        }

        fn set_request_header(&self, name: &str, value: Option<&[u8]>) -> Result<(), HostFailure> {
            hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value)
                .map_err(|_| HostFailure("replace_header_map_value"))
        }

        fn add_response_header(&self, name: &str, value: &str) {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
        }

        fn send_grpc_response(&self, grpc_status: u32, message: &str) {
            let status = match grpc_status {
                14 => GrpcStatusCode::Unavailable,
                13 => GrpcStatusCode::Internal,
                _ => GrpcStatusCode::Unauthenticated,
            };
            if let Err(e) = hostcalls::send_grpc_response(status, Some(message), vec![]) {
                log::error!("send_grpc_response failed: {e:?}");
            }
        }

        fn property(&self, path: &[&str]) -> Result<Option<Vec<u8>>, HostFailure> {
            hostcalls::get_property(path.to_vec()).map_err(|_| HostFailure("get_property"))
        }

        fn reset_stream(&self) {
            let _ = hostcalls::reset_http_response();
        }

        fn enqueue_sessions(&self, payload: &[u8]) -> bool {
            let Some(id) = self.resolve_sessions_queue() else {
                return false;
            };
            if hostcalls::enqueue_shared_queue(id, Some(payload)).is_ok() {
                return true;
            }
            // The queue went away (the sync VM restarted): resolve again next time.
            self.sessions_queue.set(None);
            false
        }

        fn send_response(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let body = (!body.is_empty()).then_some(body);
            if let Err(e) = hostcalls::send_http_response(u32::from(status), headers, body) {
                log::error!("send_http_response failed: {e:?}");
            }
        }
    }

    fn dispatch(
        cluster: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<u32, String> {
        hostcalls::dispatch_http_call(cluster, headers.to_vec(), body, vec![], timeout)
            .map_err(|e| format!("{e:?}"))
    }

    impl SyncHost for ProxyHost {
        fn dispatch_get(
            &self,
            cluster: &str,
            headers: &[(&str, &str)],
            timeout: Duration,
        ) -> Result<u32, String> {
            dispatch(cluster, headers, None, timeout)
        }

        fn dispatch_post(
            &self,
            cluster: &str,
            headers: &[(&str, &str)],
            body: &[u8],
            timeout: Duration,
        ) -> Result<u32, String> {
            dispatch(cluster, headers, Some(body), timeout)
        }

        fn dequeue_sessions(&self) -> Option<Vec<u8>> {
            let id = self.sessions_queue.get()?;
            hostcalls::dequeue_shared_queue(id).ok().flatten()
        }

        fn call_response(&self, num_headers: usize, body_size: usize) -> (Option<u16>, Vec<u8>) {
            // A failed call has no header map: asking for `:status` then makes the host
            // answer BadArgument, on which the SDK's getter panics (and kills the VM).
            if num_headers == 0 {
                return (None, Vec::new());
            }
            let status =
                hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
                    .ok()
                    .flatten()
                    .and_then(|s| std::str::from_utf8(&s).ok()?.parse().ok());
            let body = if body_size == 0 {
                Vec::new()
            } else {
                hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            (status, body)
        }
    }
}
