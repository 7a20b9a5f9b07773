//! Logouts that start at the identity provider: the receivers of OpenID Connect
//! Back-Channel Logout 1.0 and of Shared Signals (CAEP) events pushed as Security Event
//! Tokens (RFC 8417, RFC 8935), for the IdPs of `--idp-config`.
//!
//! An accepted event becomes the same revocation an admin asks for ([`Store::revoke`]'s
//! transaction: the next version, the epoch or revoked session, a hash-chained audit
//! entry with the actor `idp:<name>`), committed together with its `jti` so that a
//! replay is refused even after a restart ([`Store::revoke_once`]). Edges get it through
//! their sync long-poll like any other change.
//!
//! # Layout
//! - [`config`]: `--idp-config FILE` → validated [`config::IdpConfig`]s.
//! - [`keys`]: each IdP's signing keys (discovery or JWKS URL, rotation, bounded fetch).
//! - [`token`]: signature (core's parser and verifier, pinned algorithms, never HMAC),
//!   `iss`, `aud`, `iat`, `jti`, the tenant; the [`token::Refusal`]s.
//! - [`logout`]: the logout token's own rules (Back-Channel Logout §2.6, §2.7).
//! - [`set`]: the SET's own rules and the CAEP events (`session-revoked`,
//!   `credential-change`) with their subjects (RFC 9493).
//! - [`http`]: `POST /v1/idp/{name}/backchannel-logout` and `POST /v1/idp/{name}/events`.
//!
//! [`Store::revoke`]: crate::store::Store::revoke
//! [`Store::revoke_once`]: crate::store::Store::revoke_once

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use epochgate_core::state::Target;

use crate::state::AppState;

pub mod config;
pub mod http;
pub mod keys;
pub mod logout;
pub mod set;
pub mod token;

pub use config::IdpConfig;
use keys::{KeyPolicy, KeySource};

/// A valid event's revocation: what, why (for the audit log), and its `jti`, remembered
/// until `replay_until_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub target: Target,
    pub reason: String,
    pub jti: String,
    pub replay_until_ms: u64,
}

/// The two receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Receiver {
    BackchannelLogout,
    SetPush,
}

impl Receiver {
    pub fn name(self) -> &'static str {
        match self {
            Receiver::BackchannelLogout => "backchannel_logout",
            Receiver::SetPush => "set_push",
        }
    }
}

/// What became of an event (the `outcome` label of `epochgate_idp_events_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Ignored,
    Refused,
}

const OUTCOMES: [Outcome; 3] = [Outcome::Accepted, Outcome::Ignored, Outcome::Refused];

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ignored => "ignored",
            Outcome::Refused => "refused",
        }
    }
}

/// One configured IdP at run time: its configuration, key sources and counters.
#[derive(Debug)]
pub struct Idp {
    pub config: IdpConfig,
    pub keys: KeySource,
    /// The SSF transmitter's own keys (`ssf.jwks_uri`), when they are not the IdP's.
    pub ssf_keys: Option<KeySource>,
    /// `[receiver][outcome]`.
    counters: [[AtomicU64; 3]; 2],
}

impl Idp {
    pub fn count(&self, receiver: Receiver, outcome: Outcome) {
        self.counters[receiver as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The keys SETs are verified with.
    pub fn set_keys(&self) -> &KeySource {
        self.ssf_keys.as_ref().unwrap_or(&self.keys)
    }
}

/// Every configured IdP, by name.
#[derive(Debug, Default)]
pub struct Idps {
    by_name: BTreeMap<String, Idp>,
}

impl Idps {
    /// The run-time IdPs of `configs`, sharing one HTTP client.
    pub fn new(configs: &[IdpConfig]) -> Self {
        if configs.is_empty() {
            return Idps::default();
        }
        let http = match keys::http_client() {
            Ok(c) => Some(c),
            Err(err) => {
                tracing::error!(error = %err, "cannot build the HTTP client for IdP keys; events needing fetched keys will be answered 503");
                None
            }
        };
        let by_name = configs
            .iter()
            .map(|c| {
                let policy = KeyPolicy {
                    issuer: c.issuer.clone(),
                    default_alg: c.default_alg,
                    allowed: c.algorithms.clone(),
                    min_refresh: c.jwks_min_refresh,
                    refresh: c.jwks_refresh,
                };
                let keys =
                    KeySource::new(c.name.clone(), c.keys.clone(), policy.clone(), http.clone());
                let ssf_keys =
                    c.ssf.as_ref().and_then(|s| s.keys.clone()).map(|k| {
                        KeySource::new(format!("{} (ssf)", c.name), k, policy, http.clone())
                    });
                let idp = Idp {
                    config: c.clone(),
                    keys,
                    ssf_keys,
                    counters: Default::default(),
                };
                (c.name.clone(), idp)
            })
            .collect();
        Idps { by_name }
    }

    pub fn get(&self, name: &str) -> Option<&Idp> {
        self.by_name.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// `epochgate_idp_events_total{idp,receiver,outcome}`: the receivers' counters, read
    /// at the scrape (labels bounded by the configured IdPs).
    pub fn register_metrics(&self, r: &mut Registry) {
        if self.by_name.is_empty() {
            return;
        }
        let events = Family::<Vec<(String, String)>, Counter>::default();
        for (name, idp) in &self.by_name {
            for receiver in [Receiver::BackchannelLogout, Receiver::SetPush] {
                for outcome in OUTCOMES {
                    let n =
                        idp.counters[receiver as usize][outcome as usize].load(Ordering::Relaxed);
                    let labels = vec![
                        ("idp".to_string(), name.clone()),
                        ("receiver".to_string(), receiver.name().to_string()),
                        ("outcome".to_string(), outcome.name().to_string()),
                    ];
                    events.get_or_create(&labels).inc_by(n);
                }
            }
        }
        r.register(
            "epochgate_idp_events",
            "Events received from identity providers (back-channel logouts, SETs), by outcome",
            events,
        );
    }
}

/// Fetches every IdP's keys once at start, so the first logout does not wait for them.
/// A failure is logged; the keys are fetched again on the first event.
pub async fn warm_up(state: AppState) {
    for idp in state.idps().by_name.values() {
        if let Err(err) = idp.keys.current().await {
            tracing::warn!(idp = %idp.config.name, error = %err, "IdP keys not fetched at start");
        }
        if let Some(ssf) = &idp.ssf_keys {
            if let Err(err) = ssf.current().await {
                tracing::warn!(idp = %idp.config.name, error = %err, "SSF transmitter keys not fetched at start");
            }
        }
    }
}
