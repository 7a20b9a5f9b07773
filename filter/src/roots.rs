//! The proxy-wasm contexts: one root type for both roles (chosen by `root_id` at
//! `on_configure`), and the HTTP context.

use std::rc::Rc;

use epochgate_core::config::SyncConfig;
use epochgate_core::{Config, Engine};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType};

use crate::host::ProxyHost;
use crate::http::{on_request_headers, Verdict};
use crate::sync_service::{SyncService, TICK};
use crate::{SYNC_ROOT_ID, VERSION};

enum Role {
    Unconfigured,
    Filter(Rc<Engine>),
    Sync(Box<SyncService>),
}

pub struct Root {
    context_id: u32,
    host: Rc<ProxyHost>,
    role: Role,
}

impl Root {
    pub fn new(context_id: u32) -> Self {
        Self {
            context_id,
            host: Rc::new(ProxyHost::new()),
            role: Role::Unconfigured,
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
            "#{} epochgate sync: edge {edge_id:?} long-polling cluster {:?} (wait {} s)",
            self.context_id,
            config.cluster,
            config.wait_s
        );
        self.role = Role::Sync(Box::new(SyncService::new(config, token, edge_id)));
        true
    }

    fn configure_filter(&mut self, json: &[u8]) -> bool {
        match Config::from_json(json) {
            Ok(config) => {
                log::info!(
                    "#{} epochgate filter configured: {} key(s), on_stale {:?}",
                    self.context_id,
                    config.keys.keys().len(),
                    config.on_stale
                );
                self.role = Role::Filter(Rc::new(Engine::new(config)));
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

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        if let Role::Sync(sync) = &mut self.role {
            sync.on_response(&*self.host, token_id, body_size);
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
        if let Role::Sync(sync) = &mut self.role {
            sync.on_tick(&*self.host);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let engine = match &self.role {
            Role::Filter(engine) => Some(Rc::clone(engine)),
            _ => None,
        };
        Some(Box::new(FilterContext {
            context_id,
            engine,
            host: Rc::clone(&self.host),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct FilterContext {
    context_id: u32,
    engine: Option<Rc<Engine>>,
    host: Rc<ProxyHost>,
}

impl Context for FilterContext {}

impl HttpContext for FilterContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(engine) = &self.engine else {
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
        match on_request_headers(engine, &*self.host, self.context_id) {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
        }
    }
}
