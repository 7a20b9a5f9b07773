//! The HTTP filter: per request, read the headers (as bytes), read only the epoch keys
//! this token needs from shared data, act on `core`'s [`Decision`] — and keep an eye on
//! the long-lived requests it let through, so a WebSocket, SSE or gRPC stream, or a long
//! download, does not outlive its session.
//!
//! A host call that fails ends in a deny (see [`crate::host`]): counted, and logged at
//! most once per [`LOG_EVERY_MS`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use epochgate_core::cache::TokenCache;
use epochgate_core::config::Verification;
use epochgate_core::jwt::KeySet;
use epochgate_core::rotation::{usable_remote_keys, KeyWait};
use epochgate_core::state::{decode_epoch, EpochSource, Unreadable};
use epochgate_core::sync::{SyncStatus, STATUS_KEY};
use epochgate_core::watch::{is_streaming, Watch};
use epochgate_core::{Decision, DenyReason, Engine, HeaderEdit, Inputs, RequestInfo, ResponseKind};

use crate::host::{Host, HostFailure, HttpHost, Metric};
use crate::native::NativeVerifier;
use crate::sessions::SessionTap;
use crate::{metadata, shared_keys};

/// How often a repeated condition (stale state, failing host calls) is logged, at most
/// (it is counted every time).
pub const LOG_EVERY_MS: u64 = 10_000;

/// How often a watched download looks at the state, at most (on its data frames).
pub const DOWNLOAD_LOOK_MS: u64 = 250;

/// Logs a repeated condition at most once per [`LOG_EVERY_MS`] — or, when even the clock
/// fails, once per 1000 occurrences.
#[derive(Default)]
pub struct LogLimiter {
    last_ms: Cell<Option<u64>>,
    unclocked: Cell<u64>,
}

impl LogLimiter {
    pub fn should_log(&self, now_ms: Option<u64>) -> bool {
        match now_ms {
            Some(now) => {
                let due = self
                    .last_ms
                    .get()
                    .is_none_or(|last| now.saturating_sub(last) >= LOG_EVERY_MS);
                if due {
                    self.last_ms.set(Some(now));
                }
                due
            }
            None => {
                let n = self.unclocked.get();
                self.unclocked.set(n.wrapping_add(1));
                n.is_multiple_of(1000)
            }
        }
    }
}

/// Epochs read from shared data, one small key at a time (`get_shared_data` copies the
/// value into the VM on every call, so a big blob would cost every request). A failed
/// read is [`Unreadable`] (the decision fails closed) and remembered for the count.
pub struct SharedEpochs<'a, H> {
    host: &'a H,
    failed: Cell<Option<HostFailure>>,
}

impl<'a, H: Host> SharedEpochs<'a, H> {
    pub fn new(host: &'a H) -> Self {
        Self {
            host,
            failed: Cell::new(None),
        }
    }

    /// The read that failed, if one did.
    pub fn failure(&self) -> Option<HostFailure> {
        self.failed.get()
    }
}

impl<H: Host> EpochSource for SharedEpochs<'_, H> {
    fn epoch_ms(&self, key: &str) -> Result<Option<u64>, Unreadable> {
        match self.host.shared_data(key) {
            Ok(v) => Ok(v.and_then(|v| decode_epoch(&v))),
            Err(e) => {
                self.failed.set(Some(e));
                Err(Unreadable)
            }
        }
    }
}

/// Epochs read through a per-VM cache that lives as long as one state version: the
/// sync service writes the epoch keys first and the status (with the version) last, so
/// anything read after seeing version V is at least as new as V. Most requests then cost
/// one shared-data read (the status) instead of one per epoch key.
struct CachedEpochs<'a, H> {
    shared: SharedEpochs<'a, H>,
    cache: Option<&'a RefCell<EpochCache>>,
}

/// Epoch lookups of one state version.
#[derive(Default)]
struct EpochCache {
    /// `(stream, version)`: a version number means one state only within a stream.
    version: Option<(String, u64)>,
    entries: HashMap<String, Option<u64>>,
}

/// Entries kept per version at most (distinct keys looked up); then it starts over.
const EPOCH_CACHE_MAX: usize = 50_000;

impl<H: Host> EpochSource for CachedEpochs<'_, H> {
    fn epoch_ms(&self, key: &str) -> Result<Option<u64>, Unreadable> {
        let Some(cache) = self.cache else {
            return self.shared.epoch_ms(key);
        };
        if let Some(hit) = cache.borrow().entries.get(key) {
            return Ok(*hit);
        }
        // A failed read is not cached.
        let value = self.shared.epoch_ms(key)?;
        let mut cache = cache.borrow_mut();
        if cache.entries.len() >= EPOCH_CACHE_MAX {
            cache.entries.clear();
        }
        cache.entries.insert(key.to_string(), value);
        Ok(value)
    }
}

/// What to tell Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the request on (identity headers set).
    Continue,
    /// A local response was sent.
    Stop,
    /// Hold the request (`Action::Pause`): its `kid` is unknown and a JWKS refresh was
    /// asked for; the root's tick decides it again once [`FilterShared::due_waits`] says.
    Wait,
}

/// Requests held for a JWKS refresh, per VM at most; more are answered `unknown_key` at
/// once (a flood of bogus `kid`s must not pile up held streams).
const MAX_KEY_WAITS: usize = 1024;

/// What a request's headers came to.
pub struct Handled {
    pub verdict: Verdict,
    /// Added to the response (a scheduled logout's notice).
    pub response_headers: Vec<(String, String)>,
    /// An allowed request that is not a stream: watched on its response data (a long
    /// download), by its own context.
    pub watch: Option<Watch>,
}

/// A watched download: its [`Watch`] and when it last looked at the state.
pub struct Download {
    watch: Watch,
    looked_ms: u64,
}

impl Download {
    pub fn new(watch: Watch, now_ms: u64) -> Self {
        Self {
            watch,
            looked_ms: now_ms,
        }
    }
}

/// What one filter VM (one per worker thread) shares between its root and its HTTP
/// contexts: the engine, the parsed remote JWKS, the open streams.
pub struct FilterShared {
    pub engine: Engine<NativeVerifier>,
    cache: TokenCache,
    remote_keys: RefCell<Option<(Vec<u8>, Rc<KeySet>)>>,
    streams: RefCell<HashMap<u32, Watch>>,
    epochs: RefCell<EpochCache>,
    stale_log: LogLimiter,
    failure_log: LogLimiter,
    /// Requests held for a JWKS refresh.
    key_waits: RefCell<HashMap<u32, KeyWait>>,
    /// What held requests decided later left for their own context (which the root's
    /// tick cannot reach): response headers, a download to watch.
    later: RefCell<HashMap<u32, Later>>,
    /// JWKS versions whose document was refused (logged once each).
    refused_jwks: RefCell<Option<Vec<u8>>>,
    /// Whether the root ticks fast, while requests are held (see `roots`).
    pub fast_tick: Cell<bool>,
    /// The sessions this VM sees (`report_sessions`).
    sessions: Option<SessionTap>,
}

/// What a request decided after its wait leaves for its context.
pub struct Later {
    pub response_headers: Vec<(String, String)>,
    pub watch: Option<Watch>,
}

fn read_status<H: Host>(host: &H) -> Result<Option<SyncStatus>, HostFailure> {
    Ok(host
        .shared_data(STATUS_KEY)?
        .and_then(|v| SyncStatus::decode(&v)))
}

impl FilterShared {
    pub fn new(engine: Engine<NativeVerifier>) -> Self {
        let config = engine.config();
        let sessions = config
            .report_sessions
            .then(|| SessionTap::new(config.truncate_addresses));
        Self {
            cache: TokenCache::new(config.token_cache_size, config.clock_skew_s),
            engine,
            remote_keys: RefCell::new(None),
            streams: RefCell::new(HashMap::new()),
            epochs: RefCell::new(EpochCache::default()),
            stale_log: LogLimiter::default(),
            failure_log: LogLimiter::default(),
            key_waits: RefCell::new(HashMap::new()),
            later: RefCell::new(HashMap::new()),
            refused_jwks: RefCell::new(None),
            fast_tick: Cell::new(false),
            sessions,
        }
    }

    /// Counts a failed host call and logs it (at most once per [`LOG_EVERY_MS`]).
    fn host_failed<H: Host>(&self, host: &H, context_id: u32, failure: HostFailure, what: &str) {
        host.metric(Metric::HostCallFailed, 1);
        if self.failure_log.should_log(host.now_ms().ok()) {
            log::error!("#{context_id} {failure}: {what} (counted in epochgate.host_call_failed)");
        }
    }

    /// Denies a request that could not be judged because a host call failed.
    fn fail_closed<H: HttpHost>(
        &self,
        host: &H,
        context_id: u32,
        failure: HostFailure,
        reason: DenyReason,
    ) -> Handled {
        self.host_failed(
            host,
            context_id,
            failure,
            &format!("request denied {reason}"),
        );
        host.metric(Metric::Denied(reason), 1);
        let response = self.engine.deny_response(reason, ResponseKind::Api);
        host.send_response(response.status, &response.headers, &response.body);
        Handled {
            verdict: Verdict::Stop,
            response_headers: Vec::new(),
            watch: None,
        }
    }

    /// The remote JWKS as the sync service last stored it, parsed once per version. A
    /// document that yields no usable key (empty, symmetric keys only, keys without
    /// `alg` and no `jwks_default_alg`) keeps the previous keys: logged, counted.
    fn remote_keys<H: Host>(&self, host: &H, context_id: u32) -> Option<Rc<KeySet>> {
        if !self.engine.config().remote_jwks {
            return None;
        }
        let cached = || {
            self.remote_keys
                .borrow()
                .as_ref()
                .map(|(_, k)| Rc::clone(k))
        };
        let read = |key| match host.shared_data(key) {
            Ok(v) => Some(v),
            Err(e) => {
                // The keys parsed before stay in use; a missing key is `unknown_key` (503).
                self.host_failed(host, context_id, e, "remote JWKS read, previous keys kept");
                None
            }
        };
        let version = match read(shared_keys::JWKS_VERSION) {
            Some(v) => v?,
            None => return cached(),
        };
        if let Some((v, keys)) = &*self.remote_keys.borrow() {
            if *v == version {
                return Some(Rc::clone(keys));
            }
        }
        let doc = match read(shared_keys::JWKS) {
            Some(doc) => doc?,
            None => return cached(),
        };
        let parsed = usable_remote_keys(
            &doc,
            self.engine.config().jwks_default_alg,
            self.engine.verifier(),
        );
        match parsed {
            Ok((keys, skipped)) => {
                for why in skipped {
                    log::info!("remote JWKS: key skipped: {why}");
                }
                let keys = Rc::new(keys);
                *self.remote_keys.borrow_mut() = Some((version, Rc::clone(&keys)));
                // The key set changed: a dropped key's tokens must fail on their next
                // request, so nothing verified under the old set is trusted.
                self.cache.clear();
                Some(keys)
            }
            Err(e) => {
                if self.refused_jwks.borrow().as_deref() != Some(version.as_slice()) {
                    log::warn!("remote JWKS refused, keeping the previous keys: {e}");
                    host.metric(Metric::JwksFailed, 1);
                    *self.refused_jwks.borrow_mut() = Some(version.clone());
                }
                let kept = cached().unwrap_or_default();
                *self.remote_keys.borrow_mut() = Some((version, Rc::clone(&kept)));
                Some(kept)
            }
        }
    }

    /// Handles a request's headers.
    pub fn on_request_headers<H: HttpHost>(&self, host: &H, context_id: u32) -> Handled {
        self.judge(host, context_id, true)
    }

    /// A held request whose wait is over ([`FilterShared::due_waits`]): decided again, as
    /// its current context, and never held a second time. What it leaves for its context
    /// is kept for [`FilterShared::take_later`].
    pub fn decide_after_wait<H: HttpHost>(&self, host: &H, context_id: u32) -> Verdict {
        let handled = self.judge(host, context_id, false);
        if !handled.response_headers.is_empty() || handled.watch.is_some() {
            self.later.borrow_mut().insert(
                context_id,
                Later {
                    response_headers: handled.response_headers,
                    watch: handled.watch,
                },
            );
        }
        handled.verdict
    }

    /// The held requests whose wait is over (the key set changed, a refresh failed, or
    /// the wait ran out), no longer held. A failed host read ends every wait: each is
    /// then decided (and fails closed there if the host still fails).
    pub fn due_waits<H: Host>(&self, host: &H) -> Vec<u32> {
        let mut waits = self.key_waits.borrow_mut();
        if waits.is_empty() {
            return Vec::new();
        }
        let read = || -> Result<_, HostFailure> {
            let now = host.now_ms()?;
            let version = host.shared_data(shared_keys::JWKS_VERSION)?;
            let failed = host
                .shared_data(shared_keys::JWKS_FAILED)?
                .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<u64>().ok());
            Ok((now, version, failed))
        };
        let due: Vec<u32> = match read() {
            Ok((now, version, failed)) => waits
                .iter()
                .filter(|(_, w)| w.step(now, version.as_deref(), failed).is_over())
                .map(|(id, _)| *id)
                .collect(),
            Err(e) => {
                self.host_failed(host, 0, e, "held requests' JWKS check; deciding them now");
                waits.keys().copied().collect()
            }
        };
        for id in &due {
            waits.remove(id);
        }
        due
    }

    /// Whether a request is held (its body and trailers must be held too).
    pub fn is_waiting(&self, context_id: u32) -> bool {
        self.key_waits.borrow().contains_key(&context_id)
    }

    pub fn has_waits(&self) -> bool {
        !self.key_waits.borrow().is_empty()
    }

    /// What a request decided after its wait left for its context.
    pub fn take_later(&self, context_id: u32) -> Option<Later> {
        self.later.borrow_mut().remove(&context_id)
    }

    fn judge<H: HttpHost>(&self, host: &H, context_id: u32, may_wait: bool) -> Handled {
        let headers = match host.request_headers() {
            Ok(h) => h,
            Err(e) => return self.fail_closed(host, context_id, e, DenyReason::InternalError),
        };
        let now_ms = match host.now_ms() {
            Ok(t) => t,
            Err(e) => return self.fail_closed(host, context_id, e, DenyReason::StateUnavailable),
        };
        let status = match read_status(host) {
            Ok(s) => s,
            Err(e) => return self.fail_closed(host, context_id, e, DenyReason::StateUnavailable),
        };
        // A path that is not UTF-8 is judged as unreadable (ambiguous), never as `/`.
        let path = headers
            .iter()
            .find(|(n, _)| n == ":path")
            .map_or(std::borrow::Cow::Borrowed(""), |(_, v)| {
                String::from_utf8_lossy(v)
            });
        let remote_keys = self.remote_keys(host, context_id);
        let verified_claims = match &self.engine.config().verification {
            Verification::Verify => None,
            Verification::JwtAuthnMetadata {
                namespace,
                payload_key,
            } => match host.property(&["metadata"]) {
                Ok(md) => md.and_then(|md| metadata::payload(&md, namespace, payload_key)),
                Err(e) => return self.fail_closed(host, context_id, e, DenyReason::InternalError),
            },
        };
        {
            let mut cache = self.epochs.borrow_mut();
            let same = match (&cache.version, &status) {
                (Some((stream, version)), Some(s)) => *stream == s.stream && *version == s.version,
                (None, None) => true,
                _ => false,
            };
            if !same {
                cache.version = status.as_ref().map(|s| (s.stream.clone(), s.version));
                cache.entries.clear();
            }
        }
        let epochs = CachedEpochs {
            shared: SharedEpochs::new(host),
            cache: status.is_some().then_some(&self.epochs),
        };
        let inputs = Inputs {
            epochs: &epochs,
            status: status.as_ref(),
            now_ms,
            remote_keys: remote_keys.as_deref(),
            verified_claims: verified_claims.as_ref(),
            cache: Some(&self.cache),
        };
        let decision = self.engine.decide_with(
            RequestInfo {
                headers: &headers,
                path: &path,
            },
            &inputs,
        );
        if let Some(e) = epochs.shared.failure() {
            self.host_failed(host, context_id, e, "epoch read; the request was denied");
        }
        match decision {
            Decision::Allow {
                identity,
                stale,
                request_edits,
                response_headers,
            } => {
                for edit in &request_edits {
                    let done = match edit {
                        HeaderEdit::Remove(name) => host.set_request_header(name, None),
                        HeaderEdit::Set(name, value) => host.set_request_header(name, Some(value)),
                    };
                    if let Err(e) = done {
                        // A spoofed header left in place, or the identity not set: the
                        // upstream must not see this request.
                        return self.fail_closed(host, context_id, e, DenyReason::InternalError);
                    }
                }
                if stale {
                    host.metric(Metric::AllowedStale, 1);
                    if self.stale_log.should_log(Some(now_ms)) {
                        log::warn!(
                            "#{context_id} revocation state is stale ({}): allowing with the revocations held (on_stale: allow)",
                            status.as_ref().map_or_else(
                                || "never synced".to_string(),
                                |s| format!("last sync {} ms ago", now_ms.saturating_sub(s.synced_at_ms))
                            )
                        );
                    }
                }
                if let (Some(tap), Some(identity)) = (&self.sessions, &identity) {
                    tap.on_allow(host, identity, &headers, now_ms);
                }
                host.metric(Metric::Allowed, 1);
                let watch = identity.map(|id| Watch::new(id, status.as_ref(), now_ms));
                let watch = match watch {
                    Some(w) if is_streaming(&headers) => {
                        self.streams.borrow_mut().insert(context_id, w);
                        None
                    }
                    w => w,
                };
                Handled {
                    verdict: Verdict::Continue,
                    response_headers,
                    watch,
                }
            }
            Decision::Deny {
                reason,
                detail,
                response,
            } => {
                if reason == DenyReason::UnknownKey {
                    // Ask the sync service for a JWKS refresh; it rate-limits.
                    host.set_shared_data(shared_keys::JWKS_REFRESH, now_ms.to_string().as_bytes());
                    let wait_ms = self.engine.config().key_refresh_wait_ms;
                    if may_wait && wait_ms > 0 && self.key_waits.borrow().len() < MAX_KEY_WAITS {
                        // Hold it for the refresh, as jwt_authn holds a request while it
                        // fetches: a key rotation must not answer anyone 503. A failed
                        // read of the version only means the wait ends on its deadline.
                        log::info!("#{context_id} {detail}: waiting up to {wait_ms} ms for the JWKS refresh");
                        let version = host.shared_data(shared_keys::JWKS_VERSION).ok().flatten();
                        self.key_waits.borrow_mut().insert(
                            context_id,
                            KeyWait::new(now_ms, wait_ms, version.as_deref()),
                        );
                        host.metric(Metric::KeyWaits, 1);
                        return Handled {
                            verdict: Verdict::Wait,
                            response_headers: Vec::new(),
                            watch: None,
                        };
                    }
                }
                log::info!("#{context_id} denied {reason}: {detail}");
                host.metric(Metric::Denied(reason), 1);
                match response.grpc_status {
                    Some(status) => host.send_grpc_response(
                        status,
                        response.grpc_message.as_deref().unwrap_or_default(),
                    ),
                    None => host.send_response(response.status, &response.headers, &response.body),
                }
                Handled {
                    verdict: Verdict::Stop,
                    response_headers: Vec::new(),
                    watch: None,
                }
            }
        }
    }

    /// Judges a watched request again if it is due: `true` once its session is over (or
    /// the state cannot be read: fail closed).
    fn is_over<H: Host>(&self, host: &H, context_id: u32, watch: &mut Watch) -> bool {
        let (now_ms, status) = match host.now_ms().and_then(|t| Ok((t, read_status(host)?))) {
            Ok(v) => v,
            Err(e) => {
                self.host_failed(host, context_id, e, "stream re-check; the stream is ended");
                return true;
            }
        };
        if !watch.is_due(status.as_ref(), now_ms) {
            return false;
        }
        let epochs = SharedEpochs::new(host);
        let over = self
            .engine
            .rewatch(watch, &epochs, status.as_ref(), now_ms)
            .is_err();
        if let Some(e) = epochs.failure() {
            self.host_failed(host, context_id, e, "stream re-check; the stream is ended");
        }
        over
    }

    fn end<H: HttpHost>(&self, host: &H, context_id: u32) {
        log::info!("#{context_id} stream ended: session over");
        host.metric(Metric::StreamsEnded, 1);
        host.reset_stream();
    }

    /// A data frame of a stream: `false` (and the stream is reset) once its session is
    /// over. Streams are also judged on the root's tick ([`FilterShared::ended_streams`]).
    pub fn on_data<H: HttpHost>(&self, host: &H, context_id: u32) -> bool {
        let Some(mut watch) = self.streams.borrow_mut().remove(&context_id) else {
            return true;
        };
        if self.is_over(host, context_id, &mut watch) {
            self.end(host, context_id);
            return false;
        }
        self.streams.borrow_mut().insert(context_id, watch);
        true
    }

    /// A response data frame of a watched download (at most one look at the state per
    /// [`DOWNLOAD_LOOK_MS`], so short responses cost nothing): `false` (and the stream is
    /// reset) once its session is over.
    pub fn on_download_data<H: HttpHost>(
        &self,
        host: &H,
        context_id: u32,
        d: &mut Download,
    ) -> bool {
        let now_ms = match host.now_ms() {
            Ok(t) => t,
            Err(e) => {
                self.host_failed(
                    host,
                    context_id,
                    e,
                    "download re-check; the stream is ended",
                );
                self.end(host, context_id);
                return false;
            }
        };
        if now_ms.saturating_sub(d.looked_ms) < DOWNLOAD_LOOK_MS {
            return true;
        }
        d.looked_ms = now_ms;
        if self.is_over(host, context_id, &mut d.watch) {
            self.end(host, context_id);
            return false;
        }
        true
    }

    /// On the root's tick: the open streams whose session is over since, to reset (idle
    /// streams too, which send no frame that would be judged).
    pub fn ended_streams<H: Host>(&self, host: &H) -> Vec<u32> {
        let mut streams = self.streams.borrow_mut();
        let ended: Vec<u32> = streams
            .iter_mut()
            .filter_map(|(id, w)| self.is_over(host, *id, w).then_some(*id))
            .collect();
        for id in &ended {
            streams.remove(id);
        }
        ended
    }

    /// On the root's tick: the session counts due for a report.
    pub fn sessions_tick<H: HttpHost>(&self, host: &H) {
        if let Some(tap) = &self.sessions {
            tap.on_tick(host);
        }
    }

    /// Sessions this VM tracks (0 with `report_sessions: false`).
    pub fn sessions_tracked(&self) -> usize {
        self.sessions.as_ref().map_or(0, SessionTap::tracked)
    }

    /// The stream is over.
    pub fn on_done(&self, context_id: u32) {
        self.streams.borrow_mut().remove(&context_id);
        self.key_waits.borrow_mut().remove(&context_id);
        self.later.borrow_mut().remove(&context_id);
    }

    /// The verified-token cache's `(hits, misses)`.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    pub fn open_streams(&self) -> usize {
        self.streams.borrow().len()
    }
}
