//! The worker's configuration, from its bindings:
//!
//! | binding | kind | holds |
//! |---|---|---|
//! | [`CONFIG_BINDING`] | var (JSON text or object) | the filter configuration, parsed by `core`'s [`Config`] |
//! | [`WORKER_BINDING`] | var (JSON text or object) | the worker's own settings, `core`'s [`WorkerConfig`] |
//! | [`EDGE_TOKEN_BINDING`] | secret | the edge token for `/v1/sync` |
//! | [`crate::relay::RELAY_BINDING`] | Durable Object namespace (optional) | the deployment's relay (see [`crate::relay`]) |
//!
//! A bad or missing binding is a [`SetupError`]: every request then gets a clear 500
//! ([`SetupError::response`]) and the log says exactly what is wrong — never a panic.

use std::fmt;

use epochgate_core::cache::TokenCache;
use epochgate_core::config::{ConfigError, Verification, WorkerConfig};
use epochgate_core::{Config, Engine, Response};

use crate::verify::WorkerVerifier;

pub const CONFIG_BINDING: &str = "EPOCHGATE_CONFIG";
pub const WORKER_BINDING: &str = "EPOCHGATE_WORKER";
pub const EDGE_TOKEN_BINDING: &str = "EPOCHGATE_EDGE_TOKEN";

/// The raw binding values (objects already serialised to JSON text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    pub config: Option<String>,
    pub worker: Option<String>,
    pub edge_token: Option<String>,
    /// Whether the relay's Durable Object namespace ([`crate::relay::RELAY_BINDING`]) is
    /// bound.
    pub relay: bool,
}

/// Everything a request needs besides the isolate state: compiled once per isolate.
pub struct Settings {
    pub engine: Engine<WorkerVerifier>,
    /// The isolate's verified-token cache (signature and claims only; revocation is
    /// checked on every request).
    pub cache: TokenCache,
    pub worker: WorkerConfig,
    pub edge_token: String,
}

/// Never prints the edge token (nor the keys, which `Engine` holds).
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("worker", &self.worker)
            .field("cached_tokens", &self.cache.len())
            .field("edge_token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Why the bindings do not make a working worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    Missing(&'static str),
    Invalid {
        binding: &'static str,
        error: ConfigError,
    },
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Missing(b) => write!(f, "binding {b} is missing or empty"),
            SetupError::Invalid { binding, error } => write!(f, "binding {binding}: {error}"),
        }
    }
}

impl std::error::Error for SetupError {}

impl SetupError {
    /// The answer to every request while the configuration is bad: a 500 that names the
    /// binding and field (never the values: a key or token must not leak), the full
    /// problem being in the log.
    pub fn response(&self) -> Response {
        let what = match self {
            SetupError::Missing(b) => format!("binding {b} is missing or empty"),
            SetupError::Invalid { binding, error } if error.field.is_empty() => {
                format!("binding {binding} is invalid")
            }
            SetupError::Invalid { binding, error } => {
                format!("binding {binding}, field `{}`, is invalid", error.field)
            }
        };
        crate::error_response(
            500,
            "worker_misconfigured",
            &format!("{what}; see the worker's log"),
        )
    }
}

impl Settings {
    /// Compiles the bindings with `core`'s parsers.
    pub fn load(b: &Bindings) -> Result<Self, SetupError> {
        let present = |v: &Option<String>, name| match v {
            Some(s) if !s.trim().is_empty() => Ok(s.clone()),
            _ => Err(SetupError::Missing(name)),
        };
        let config = present(&b.config, CONFIG_BINDING)?;
        let worker = present(&b.worker, WORKER_BINDING)?;
        let edge_token = present(&b.edge_token, EDGE_TOKEN_BINDING)?;
        let config = Config::from_json(config.as_bytes()).map_err(|error| SetupError::Invalid {
            binding: CONFIG_BINDING,
            error,
        })?;
        let worker =
            WorkerConfig::from_json(worker.as_bytes()).map_err(|error| SetupError::Invalid {
                binding: WORKER_BINDING,
                error,
            })?;
        Settings::new(config, worker, edge_token.trim().to_string())
    }

    /// The settings for an already parsed configuration; refuses what the worker cannot
    /// do.
    pub fn new(
        config: Config,
        worker: WorkerConfig,
        edge_token: String,
    ) -> Result<Self, SetupError> {
        // Envoy-only features: refused here rather than silently ignored.
        let unsupported = |field: &str, why: &str| SetupError::Invalid {
            binding: CONFIG_BINDING,
            error: ConfigError::new(field, why),
        };
        if config.remote_jwks {
            return Err(unsupported(
                "remote_jwks",
                "is not supported by the worker yet: configure the keys in `keys`",
            ));
        }
        if config.verification != Verification::Verify {
            return Err(unsupported(
                "mode",
                "jwt_authn_metadata needs Envoy's jwt_authn: the worker verifies tokens itself (mode: verify)",
            ));
        }
        let cache = TokenCache::new(config.token_cache_size, config.clock_skew_s);
        let engine =
            Engine::with_verifier(config, WorkerVerifier).map_err(|error| SetupError::Invalid {
                binding: CONFIG_BINDING,
                error,
            })?;
        Ok(Settings {
            cache,
            engine,
            worker,
            edge_token,
        })
    }
}
