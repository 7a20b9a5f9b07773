//! The HTTP filter: per request, read the headers (as bytes), read only the epoch keys
//! this token needs from shared data, act on `core`'s [`Decision`] — and keep an eye on
//! the streams it let through, so a WebSocket, SSE or gRPC stream does not outlive its
//! session.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use epochgate_core::cache::TokenCache;
use epochgate_core::claims::Identity;
use epochgate_core::config::Verification;
use epochgate_core::jwt::{parse_jwks, KeySet};
use epochgate_core::state::{decode_epoch, EpochSource};
use epochgate_core::sync::{SyncStatus, STATUS_KEY};
use epochgate_core::{Decision, DenyReason, Engine, HeaderEdit, Inputs, RequestInfo};

use crate::host::{Host, HttpHost, Metric};
use crate::native::NativeVerifier;
use crate::sessions::SessionTap;
use crate::{metadata, shared_keys};

/// Epochs read from shared data, one small key at a time (`get_shared_data` copies the
/// value into the VM on every call, so a big blob would cost every request).
pub struct SharedEpochs<'a, H>(pub &'a H);

impl<H: Host> EpochSource for SharedEpochs<'_, H> {
    fn epoch_ms(&self, key: &str) -> Option<u64> {
        self.0.shared_data(key).and_then(|v| decode_epoch(&v))
    }
}

/// Epochs read through a per-VM cache that lives as long as one state version: the
/// sync service writes the epoch keys first and the status (with the version) last, so
/// anything read after seeing version V is at least as new as V. Most requests then cost
/// one shared-data read (the status) instead of one per epoch key.
struct CachedEpochs<'a, H> {
    host: &'a H,
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
    fn epoch_ms(&self, key: &str) -> Option<u64> {
        let Some(cache) = self.cache else {
            return SharedEpochs(self.host).epoch_ms(key);
        };
        if let Some(hit) = cache.borrow().entries.get(key) {
            return *hit;
        }
        let value = SharedEpochs(self.host).epoch_ms(key);
        let mut cache = cache.borrow_mut();
        if cache.entries.len() >= EPOCH_CACHE_MAX {
            cache.entries.clear();
        }
        cache.entries.insert(key.to_string(), value);
        value
    }
}

/// Whether a request opens a long-lived stream the filter should keep an eye on:
/// a WebSocket (or other) upgrade, an extended CONNECT, server-sent events, gRPC.
fn is_streaming(headers: &[(String, Vec<u8>)]) -> bool {
    headers.iter().any(|(n, v)| match n.as_str() {
        "upgrade" | ":protocol" => true,
        ":method" => v.as_slice() == b"CONNECT",
        "accept" => v
            .windows(17)
            .any(|w| w.eq_ignore_ascii_case(b"text/event-stream")),
        "content-type" => v.len() >= 16 && v[..16].eq_ignore_ascii_case(b"application/grpc"),
        _ => false,
    })
}

/// What to tell Envoy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass the request on (identity headers set).
    Continue,
    /// A local response was sent.
    Stop,
}

/// A stream the filter let through, re-checked until it ends.
#[derive(Debug, Clone)]
struct Tracked {
    identity: Identity,
    /// The state version it was last checked at: unchanged state needs no re-check.
    checked_version: Option<u64>,
}

/// What one filter VM (one per worker thread) shares between its root and its HTTP
/// contexts: the engine, the parsed remote JWKS, the open streams.
pub struct FilterShared {
    pub engine: Engine<NativeVerifier>,
    cache: TokenCache,
    remote_keys: RefCell<Option<(Vec<u8>, Rc<KeySet>)>>,
    streams: RefCell<HashMap<u32, Tracked>>,
    epochs: RefCell<EpochCache>,
    stale_logged_ms: Cell<u64>,
    /// The sessions this VM sees (`report_sessions`).
    sessions: Option<SessionTap>,
}

/// How often a stale-state allow is logged, at most (it is counted every time).
const STALE_LOG_EVERY_MS: u64 = 10_000;

fn state_version<H: Host>(host: &H) -> Option<u64> {
    host.shared_data(STATUS_KEY)
        .and_then(|v| SyncStatus::decode(&v))
        .map(|s| s.version)
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
            stale_logged_ms: Cell::new(0),
            sessions,
        }
    }

    /// The remote JWKS as the sync service last stored it, parsed once per version.
    fn remote_keys<H: Host>(&self, host: &H) -> Option<Rc<KeySet>> {
        if !self.engine.config().remote_jwks {
            return None;
        }
        let version = host.shared_data(shared_keys::JWKS_VERSION)?;
        if let Some((v, keys)) = &*self.remote_keys.borrow() {
            if *v == version {
                return Some(Rc::clone(keys));
            }
        }
        let doc = host.shared_data(shared_keys::JWKS)?;
        let parsed = serde_json::from_slice(&doc)
            .map_err(|e| e.to_string())
            .and_then(|doc| parse_jwks(&doc, self.engine.config().jwks_default_alg));
        match parsed {
            Ok((keys, skipped)) => {
                for why in skipped {
                    log::info!("remote JWKS: key skipped: {why}");
                }
                let keys = Rc::new(KeySet::lenient(keys));
                *self.remote_keys.borrow_mut() = Some((version, Rc::clone(&keys)));
                // The key set changed: a dropped key's tokens must fail on their next
                // request, so nothing verified under the old set is trusted.
                self.cache.clear();
                Some(keys)
            }
            Err(e) => {
                log::warn!("remote JWKS unreadable, keeping the previous keys: {e}");
                self.remote_keys
                    .borrow()
                    .as_ref()
                    .map(|(_, k)| Rc::clone(k))
            }
        }
    }

    /// Handles a request's headers; returns the verdict and the response headers to add.
    pub fn on_request_headers<H: HttpHost>(
        &self,
        host: &H,
        context_id: u32,
    ) -> (Verdict, Vec<(String, String)>) {
        let headers = host.request_headers();
        let path = headers
            .iter()
            .find(|(n, _)| n == ":path")
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
            .unwrap_or("/");
        let status = host
            .shared_data(STATUS_KEY)
            .and_then(|v| SyncStatus::decode(&v));
        let remote_keys = self.remote_keys(host);
        let verified_claims = match &self.engine.config().verification {
            Verification::Verify => None,
            Verification::JwtAuthnMetadata {
                namespace,
                payload_key,
            } => host
                .property(&["metadata"])
                .and_then(|md| metadata::payload(&md, namespace, payload_key)),
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
            host,
            cache: status.is_some().then_some(&self.epochs),
        };
        let inputs = Inputs {
            epochs: &epochs,
            status: status.as_ref(),
            now_ms: host.now_ms(),
            remote_keys: remote_keys.as_deref(),
            verified_claims: verified_claims.as_ref(),
            cache: Some(&self.cache),
        };
        match self.engine.decide_with(
            RequestInfo {
                headers: &headers,
                path,
            },
            &inputs,
        ) {
            Decision::Allow {
                identity,
                signature_only,
                request_edits,
                response_headers,
            } => {
                for edit in &request_edits {
                    match edit {
                        HeaderEdit::Remove(name) => host.set_request_header(name, None),
                        HeaderEdit::Set(name, value) => host.set_request_header(name, Some(value)),
                    }
                }
                if signature_only {
                    host.metric(Metric::AllowedSignatureOnly, 1);
                    let now = inputs.now_ms;
                    if now.saturating_sub(self.stale_logged_ms.get()) >= STALE_LOG_EVERY_MS {
                        self.stale_logged_ms.set(now);
                        log::warn!(
                            "#{context_id} revocation state is stale ({}): allowing on signature only (on_stale: allow)",
                            status.as_ref().map_or_else(
                                || "never synced".to_string(),
                                |s| format!("last sync {} ms ago", now.saturating_sub(s.synced_at_ms))
                            )
                        );
                    }
                }
                if let (Some(tap), Some(identity)) = (&self.sessions, &identity) {
                    tap.on_allow(host, identity, &headers, inputs.now_ms);
                }
                if let Some(identity) = identity.filter(|_| is_streaming(&headers)) {
                    self.streams.borrow_mut().insert(
                        context_id,
                        Tracked {
                            identity,
                            checked_version: status.map(|s| s.version),
                        },
                    );
                }
                host.metric(Metric::Allowed, 1);
                (Verdict::Continue, response_headers)
            }
            Decision::Deny {
                reason,
                detail,
                response,
            } => {
                log::info!("#{context_id} denied {reason}: {detail}");
                host.metric(Metric::Denied(reason), 1);
                if reason == DenyReason::UnknownKey {
                    // Ask the sync service for a JWKS refresh; it rate-limits.
                    host.set_shared_data(
                        shared_keys::JWKS_REFRESH,
                        inputs.now_ms.to_string().as_bytes(),
                    );
                }
                match response.grpc_status {
                    Some(status) => host.send_grpc_response(
                        status,
                        response.grpc_message.as_deref().unwrap_or_default(),
                    ),
                    None => host.send_response(response.status, &response.headers, &response.body),
                }
                (Verdict::Stop, Vec::new())
            }
        }
    }

    /// Whether a tracked stream's session is over (re-checked only when the state moved).
    fn is_revoked<H: Host>(&self, host: &H, context_id: u32, version: Option<u64>) -> bool {
        let mut streams = self.streams.borrow_mut();
        let Some(stream) = streams.get_mut(&context_id) else {
            return false;
        };
        if version.is_some() && stream.checked_version == version {
            return false;
        }
        stream.checked_version = version;
        self.engine
            .still_valid(&stream.identity, &SharedEpochs(host), host.now_ms())
            .is_err()
    }

    /// A data frame of a tracked stream: `false` (and the stream is reset) once its
    /// session is revoked.
    pub fn on_data<H: HttpHost>(&self, host: &H, context_id: u32) -> bool {
        if !self.streams.borrow().contains_key(&context_id) {
            return true;
        }
        if self.is_revoked(host, context_id, state_version(host)) {
            log::info!("#{context_id} stream ended: session revoked");
            host.metric(Metric::StreamsEnded, 1);
            self.streams.borrow_mut().remove(&context_id);
            host.reset_stream();
            return false;
        }
        true
    }

    /// On the root's tick: the open streams whose session was revoked since, to reset
    /// (idle streams too, which send no frame that would be checked).
    pub fn revoked_streams<H: Host>(&self, host: &H) -> Vec<u32> {
        let version = state_version(host);
        let ids: Vec<u32> = self.streams.borrow().keys().copied().collect();
        let revoked: Vec<u32> = ids
            .into_iter()
            .filter(|id| self.is_revoked(host, *id, version))
            .collect();
        let mut streams = self.streams.borrow_mut();
        for id in &revoked {
            streams.remove(id);
        }
        revoked
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
    }

    /// The verified-token cache's `(hits, misses)`.
    pub fn cache_stats(&self) -> (u64, u64) {
        self.cache.stats()
    }

    pub fn open_streams(&self) -> usize {
        self.streams.borrow().len()
    }
}
