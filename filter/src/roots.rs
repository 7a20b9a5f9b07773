//! The proxy-wasm contexts: one root type for both roles (chosen by `root_id` at
//! `on_configure`), and the HTTP context.

use std::rc::Rc;
use std::time::Duration;

use epochgate_core::config::SyncConfig;
use epochgate_core::{Config, Engine};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

use crate::host::{Host, Metric, ProxyHost};
use crate::http::{Download, FilterShared, Verdict};
use crate::native::NativeVerifier;
use crate::sessions::SessionUplink;
use crate::shared_keys;
use crate::sync_service::{SyncService, TICK};
use crate::{SYNC_ROOT_ID, VERSION};

/// How often a filter VM re-checks its open streams (idle ones send no frame).
const STREAM_TICK: Duration = Duration::from_millis(250);
/// How often it ticks while requests are held for a JWKS refresh (see
/// [`crate::http::Verdict::Wait`]): a held request is decided within this of its key set
/// changing.
const KEY_WAIT_TICK: Duration = Duration::from_millis(20);

/// The host's native signature check (see [`crate::native`]).
fn host_verify(args: &[u8]) -> Option<Vec<u8>> {
    hostcalls::call_foreign_function("verify_signature", Some(args))
        .ok()
        .flatten()
}

/// Whether the host registered `verify_signature` (Envoy does; other hosts may not).
fn native_available() -> bool {
    !matches!(
        hostcalls::call_foreign_function("verify_signature", Some(&[])),
        Err(proxy_wasm::types::Status::NotFound)
    )
}

enum Role {
    Unconfigured,
    Filter(Rc<FilterShared>),
    Sync(Box<SyncService>),
}

pub struct Root {
    context_id: u32,
    /// `NATIVE_CALLS` as last reported.
    native_reported: u64,
    host: Rc<ProxyHost>,
    role: Role,
    /// The sync VM's session reports (see [`crate::sessions`]).
    uplink: Option<SessionUplink>,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            native_reported: 0,
            host: Rc::new(ProxyHost::new()),
            role: Role::Unconfigured,
            uplink: None,
        }
    }

    fn property(path: Vec<&str>) -> Option<String> {
        hostcalls::get_property(path)
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
    }

    fn configure_sync(&mut self, json: &[u8]) -> bool {
        let config = match SyncConfig::from_json(json) {
            Ok(c) => c,
            Err(e) => {
                log::error!(
                    "#{} epochgate sync: bad plugin configuration: {e}",
                    self.context_id
                );
                return false;
            }
        };
        // From vm_config.environment_variables: never in the plugin configuration,
        // which Envoy shows in /config_dump.
        let token = match std::env::var(&config.edge_token_env) {
            Ok(t) if !t.is_empty() => t,
            _ => {
                log::error!(
                    "#{} epochgate sync: environment variable {} (the edge token) is not set; \
                     pass it in vm_config.environment_variables",
                    self.context_id,
                    config.edge_token_env
                );
                return false;
            }
        };
        let edge_id = config
            .edge_id
            .clone()
            .or_else(|| Self::property(vec!["xds", "node", "id"]).filter(|s| !s.is_empty()))
            .or_else(|| Self::property(vec!["node", "id"]).filter(|s| !s.is_empty()))
            .unwrap_or_else(|| "envoy".to_string());
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            log::error!(
                "#{} epochgate sync: cannot set tick period: {e:?}",
                self.context_id
            );
            return false;
        }
        log::info!(
            "#{} epochgate sync: edge {edge_id:?} long-polling cluster {:?} (wait {} s){}",
            self.context_id,
            config.cluster,
            config.wait_s,
            config
                .jwks
                .as_ref()
                .map(|j| format!(
                    ", JWKS from cluster {:?} every {} s",
                    j.cluster, j.refresh_s
                ))
                .unwrap_or_default()
        );
        let now = self.host.now_ms().unwrap_or_default();
        if self.host.register_sessions_queue() {
            self.uplink = Some(SessionUplink::new(&config, &token, &edge_id));
        }
        self.role = Role::Sync(Box::new(SyncService::new(config, token, edge_id, now)));
        true
    }

    fn configure_filter(&mut self, json: &[u8]) -> bool {
        match Config::from_json(json) {
            Ok(config) => {
                self.warn_once(&config);
                log::info!(
                    "#{} epochgate filter configured: {} key(s){}, {} route rule(s), on_stale {:?}",
                    self.context_id,
                    config.keys.keys().len(),
                    if config.remote_jwks {
                        " + remote JWKS"
                    } else {
                        ""
                    },
                    config.routes.len(),
                    config.on_stale
                );
                if let Err(e) = hostcalls::set_tick_period(STREAM_TICK) {
                    log::warn!(
                        "#{} cannot set tick period ({e:?}): idle streams are only checked on data",
                        self.context_id
                    );
                }
                let verifier = if config.native_verify && native_available() {
                    NativeVerifier::with(host_verify)
                } else {
                    NativeVerifier::pure()
                };
                // A key the host cannot import is a bad configuration, like any other.
                for (i, key) in config.keys.keys().iter().enumerate() {
                    if let Err(why) = verifier.probe(key) {
                        log::error!(
                            "#{} epochgate filter: bad plugin configuration: keys[{i}]: {why}",
                            self.context_id
                        );
                        return false;
                    }
                }
                let engine = match Engine::with_verifier(config, verifier) {
                    Ok(engine) => engine,
                    Err(e) => {
                        log::error!(
                            "#{} epochgate filter: bad plugin configuration: {e}",
                            self.context_id
                        );
                        return false;
                    }
                };
                log::info!(
                    "#{} signatures: {}; token cache: {} entries",
                    self.context_id,
                    if verifier.is_native() {
                        "RS*/ES* native (verify_signature), others in Rust"
                    } else {
                        "all in Rust"
                    },
                    engine.config().token_cache_size
                );
                self.role = Role::Filter(Rc::new(FilterShared::new(engine)));
                true
            }
            Err(e) => {
                log::error!(
                    "#{} epochgate filter: bad plugin configuration: {e}",
                    self.context_id
                );
                false
            }
        }
    }
}

impl Root {
    /// Logs the configuration's warnings once per Envoy (not once per worker thread's
    /// VM): the first VM to configure marks them in shared data.
    fn warn_once(&self, config: &Config) {
        let warnings = config.warnings();
        if warnings.is_empty() {
            return;
        }
        let text: Vec<String> = warnings.iter().map(ToString::to_string).collect();
        let mark = text.join("\n");
        if self
            .host
            .shared_data(shared_keys::CONFIG_WARNED)
            .ok()
            .flatten()
            .as_deref()
            == Some(mark.as_bytes())
        {
            return;
        }
        self.host
            .set_shared_data(shared_keys::CONFIG_WARNED, mark.as_bytes());
        for warning in text {
            log::warn!(
                "#{} epochgate filter configuration: {warning}",
                self.context_id
            );
        }
    }

    /// Decides the held requests whose wait is over, each as its own context; ticks
    /// fast only while requests are held.
    fn decide_held_requests(host: &ProxyHost, shared: &FilterShared) {
        for id in shared.due_waits(host) {
            // Fails if the stream is gone (the client left): nothing to decide then.
            if hostcalls::set_effective_context(id).is_ok()
                && shared.decide_after_wait(host, id) == Verdict::Continue
            {
                if let Err(e) = hostcalls::resume_http_request() {
                    // Fail closed: answer it rather than leave it held.
                    log::warn!("#{id} cannot resume the held request ({e:?}): answering 503");
                    let _ = hostcalls::send_http_response(
                        503,
                        vec![("content-type", "application/json"), ("retry-after", "1")],
                        Some(br#"{"error":"unknown_key"}"#),
                    );
                }
            }
        }
        if !shared.has_waits() && shared.fast_tick.replace(false) {
            let _ = hostcalls::set_tick_period(STREAM_TICK);
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Some(uplink) = &mut self.uplink {
            if uplink.on_response(&*self.host, token_id, num_headers, body_size) {
                return;
            }
        }
        if let Role::Sync(sync) = &mut self.role {
            sync.on_response(&*self.host, token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        log::info!("#{} epochgate {VERSION} starting", self.context_id);
        true
    }

    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let json = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let root_id = Self::property(vec!["plugin_root_id"]).unwrap_or_default();
        if root_id == SYNC_ROOT_ID {
            self.configure_sync(&json)
        } else {
            self.configure_filter(&json)
        }
    }

    fn on_tick(&mut self) {
        match &mut self.role {
            Role::Sync(sync) => {
                sync.on_tick(&*self.host);
                if let Some(uplink) = &mut self.uplink {
                    uplink.on_tick(&*self.host);
                }
            }
            Role::Filter(shared) => {
                shared.sessions_tick(&*self.host);
                let native = crate::native::NATIVE_CALLS.load(std::sync::atomic::Ordering::Relaxed);
                if native > self.native_reported {
                    self.host
                        .metric(Metric::NativeVerifications, native - self.native_reported);
                    self.native_reported = native;
                }
                Self::decide_held_requests(&self.host, shared);
                for id in shared.ended_streams(&*self.host) {
                    // Act on another stream: make it the current context, then reset it.
                    if hostcalls::set_effective_context(id).is_ok() {
                        log::info!("#{id} stream ended: session over");
                        let _ = hostcalls::reset_http_response();
                        self.host.metric(Metric::StreamsEnded, 1);
                    }
                }
            }
            Role::Unconfigured => {}
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let shared = match &self.role {
            Role::Filter(shared) => Some(Rc::clone(shared)),
            _ => None,
        };
        Some(Box::new(FilterContext {
            context_id,
            shared,
            host: Rc::clone(&self.host),
            response_headers: Vec::new(),
            download: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FilterContext {
    context_id: u32,
    shared: Option<Rc<FilterShared>>,
    host: Rc<ProxyHost>,
    /// Added to the response (a scheduled logout's notice).
    response_headers: Vec<(String, String)>,
    /// An allowed request that is not a stream, watched on its response data.
    download: Option<Download>,
}

impl FilterContext {
    fn data(&self) -> Action {
        match &self.shared {
            Some(shared) if !shared.on_data(&*self.host, self.context_id) => Action::Pause,
            _ => Action::Continue,
        }
    }

    /// A held request's body and trailers are held too: `Continue` there would let the
    /// request through before it was decided.
    fn held(&self) -> bool {
        self.shared
            .as_ref()
            .is_some_and(|s| s.is_waiting(self.context_id))
    }
}

impl Context for FilterContext {
    fn on_done(&mut self) -> bool {
        if let Some(shared) = &self.shared {
            shared.on_done(self.context_id);
        }
        true
    }
}

impl HttpContext for FilterContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(shared) = &self.shared else {
            // Fail closed: a filter that is not configured never lets a request through.
            log::error!(
                "#{} epochgate filter is not configured; refusing",
                self.context_id
            );
            let _ = hostcalls::send_http_response(
                500,
                vec![("content-type", "application/json")],
                Some(br#"{"error":"filter_unconfigured"}"#),
            );
            return Action::Pause;
        };
        let handled = shared.on_request_headers(&*self.host, self.context_id);
        self.response_headers = handled.response_headers;
        let now = self.host.now_ms().unwrap_or_default();
        self.download = handled.watch.map(|w| Download::new(w, now));
        match handled.verdict {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
            Verdict::Wait => {
                // The root decides it on a fast tick (it resets the period when none is
                // held); the call sets the tick of this context's root.
                if !shared.fast_tick.replace(true) {
                    let _ = hostcalls::set_tick_period(KEY_WAIT_TICK);
                }
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, _body_size: usize, _end_of_stream: bool) -> Action {
        if self.held() {
            return Action::Pause;
        }
        self.data()
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.held() {
            return Action::Pause;
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Some(later) = self
            .shared
            .as_ref()
            .and_then(|s| s.take_later(self.context_id))
        {
            // Decided after a wait for the JWKS: what that decision left for this context.
            self.response_headers.extend(later.response_headers);
            if let Some(w) = later.watch {
                let now = self.host.now_ms().unwrap_or_default();
                self.download = Some(Download::new(w, now));
            }
        }
        for (name, value) in &self.response_headers {
            crate::host::HttpHost::add_response_header(&*self.host, name, value);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, _body_size: usize, end_of_stream: bool) -> Action {
        if let (Some(shared), Some(download)) = (&self.shared, self.download.as_mut()) {
            if end_of_stream {
                return Action::Continue;
            }
            if !shared.on_download_data(&*self.host, self.context_id, download) {
                self.download = None;
                return Action::Pause;
            }
            return Action::Continue;
        }
        self.data()
    }
}
