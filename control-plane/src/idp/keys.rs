//! An IdP's signing keys, fetched and cached.
//!
//! Keys come from the `jwks_uri` of the IdP's discovery document (whose `issuer` must be
//! the configured one, OpenID Connect Discovery §4.3), from a JWKS URL, or from the
//! configuration itself. A fetched key set is kept until `jwks_refresh` has passed, and
//! fetched again before then only when a token names a `kid` the set does not hold — the
//! IdP rotated its keys — and at most once per `jwks_min_refresh`, so a stream of
//! made-up `kid`s cannot turn the receiver into a JWKS fetcher aimed at the IdP.
//!
//! Every fetch is bounded ([`FETCH_TIMEOUT`], [`MAX_DOCUMENT_BYTES`]) and runs under the
//! source's lock, so concurrent events wait for one fetch instead of starting their own.
//! A failed refresh keeps the keys held; only an IdP whose keys were never fetched makes
//! an event wait for a later try ([`KeyError::Unavailable`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use epochgate_core::jwt::{Algorithm, KeySet};
use serde_json::Value;
use tokio::sync::Mutex;

use super::config::{usable_keys, AlgorithmName, KeySourceConfig};

/// The longest one discovery or JWKS request may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest discovery document or JWKS read.
pub const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// Why no keys can be had now (the IdP or the network, never the token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the IdP's keys cannot be fetched: {0}")]
    Unavailable(String),
}

/// One IdP's key source.
#[derive(Debug)]
pub struct KeySource {
    /// For log lines: `corp`, `corp (ssf)`.
    label: String,
    config: KeySourceConfig,
    issuer: String,
    default_alg: Algorithm,
    allowed: BTreeSet<AlgorithmName>,
    min_refresh: Duration,
    refresh: Duration,
    http: Option<reqwest::Client>,
    /// The keys of an inline JWKS (never fetched).
    inline: Option<Arc<KeySet>>,
    cached: Mutex<Cached>,
}

#[derive(Debug, Default)]
struct Cached {
    keys: Option<Arc<KeySet>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    last_error: Option<String>,
    /// The JWKS URL, once known (from the discovery document, or configured).
    jwks_uri: Option<String>,
}

/// The HTTP client of every key source: bounded time, no cookies, rustls.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("epochgate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// The settings a key source takes from its IdP.
#[derive(Debug, Clone)]
pub struct KeyPolicy {
    pub issuer: String,
    pub default_alg: Algorithm,
    pub allowed: BTreeSet<AlgorithmName>,
    pub min_refresh: Duration,
    pub refresh: Duration,
}

impl KeySource {
    pub fn new(
        label: String,
        config: KeySourceConfig,
        policy: KeyPolicy,
        http: Option<reqwest::Client>,
    ) -> Self {
        let jwks_uri = match &config {
            KeySourceConfig::JwksUri(u) => Some(u.clone()),
            _ => None,
        };
        let inline = match &config {
            KeySourceConfig::Inline(keys) => Some(Arc::new(keys.clone())),
            _ => None,
        };
        KeySource {
            label,
            config,
            issuer: policy.issuer,
            default_alg: policy.default_alg,
            allowed: policy.allowed,
            min_refresh: policy.min_refresh,
            refresh: policy.refresh,
            http,
            inline,
            cached: Mutex::new(Cached {
                jwks_uri,
                ..Cached::default()
            }),
        }
    }

    /// The keys to verify with now: the cached set, fetched first if there is none yet
    /// or it is older than `jwks_refresh` (a failed refresh keeps the old set).
    pub async fn current(&self) -> Result<Arc<KeySet>, KeyError> {
        if let Some(keys) = &self.inline {
            return Ok(Arc::clone(keys));
        }
        let mut cached = self.cached.lock().await;
        let fresh = cached
            .fetched_at
            .is_some_and(|t| t.elapsed() < self.refresh);
        if let (Some(keys), true) = (&cached.keys, fresh) {
            return Ok(Arc::clone(keys));
        }
        if self.tried_recently(&cached) {
            return match &cached.keys {
                Some(keys) => Ok(Arc::clone(keys)),
                None => Err(KeyError::Unavailable(
                    cached.last_error.clone().unwrap_or_default(),
                )),
            };
        }
        match self.fetch(&mut cached).await {
            Ok(keys) => Ok(keys),
            Err(err) => match &cached.keys {
                Some(keys) => {
                    tracing::warn!(idp = %self.label, error = %err, "JWKS refresh failed; keeping the keys held");
                    Ok(Arc::clone(keys))
                }
                None => Err(err),
            },
        }
    }

    /// A token named a `kid` that `seen` does not hold: fetch once more, unless that was
    /// done within `jwks_min_refresh` (then `None`: the `kid` stays unknown). A set
    /// another event fetched meanwhile is returned without a new fetch.
    pub async fn refresh_for_unknown_kid(
        &self,
        kid: &str,
        seen: &Arc<KeySet>,
    ) -> Result<Option<Arc<KeySet>>, KeyError> {
        if self.inline.is_some() {
            return Ok(None);
        }
        let mut cached = self.cached.lock().await;
        if let Some(keys) = &cached.keys {
            if !Arc::ptr_eq(keys, seen) {
                return Ok(Some(Arc::clone(keys)));
            }
        }
        if self.tried_recently(&cached) {
            return Ok(None);
        }
        tracing::info!(idp = %self.label, kid, "unknown kid: fetching the IdP's JWKS again");
        self.fetch(&mut cached).await.map(Some)
    }

    fn tried_recently(&self, cached: &Cached) -> bool {
        cached
            .attempted_at
            .is_some_and(|t| t.elapsed() < self.min_refresh)
    }

    async fn fetch(&self, cached: &mut Cached) -> Result<Arc<KeySet>, KeyError> {
        cached.attempted_at = Some(Instant::now());
        match self.fetch_keys(cached).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                tracing::info!(idp = %self.label, keys = keys.keys().len(), "IdP keys fetched");
                cached.keys = Some(Arc::clone(&keys));
                cached.fetched_at = Some(Instant::now());
                cached.last_error = None;
                Ok(keys)
            }
            Err(err) => {
                tracing::warn!(idp = %self.label, error = %err, "cannot fetch the IdP's keys");
                // Read the discovery document again next time: it may have moved.
                if matches!(self.config, KeySourceConfig::Discovery(_)) {
                    cached.jwks_uri = None;
                }
                cached.last_error = Some(err.clone());
                Err(KeyError::Unavailable(err))
            }
        }
    }

    async fn fetch_keys(&self, cached: &mut Cached) -> Result<KeySet, String> {
        let http = self
            .http
            .as_ref()
            .ok_or("no HTTP client could be built (TLS roots?)")?;
        let jwks_uri = match (&cached.jwks_uri, &self.config) {
            (Some(uri), _) => uri.clone(),
            (None, KeySourceConfig::Discovery(url)) => {
                let doc = get_json(http, url).await?;
                match doc.get("issuer").and_then(Value::as_str) {
                    Some(iss) if iss == self.issuer => {}
                    other => {
                        return Err(format!(
                            "the discovery document {url} names issuer {other:?}, not {:?}",
                            self.issuer
                        ))
                    }
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("the discovery document {url} has no jwks_uri"))?
                    .to_string();
                cached.jwks_uri = Some(uri.clone());
                uri
            }
            (None, KeySourceConfig::JwksUri(url)) => url.clone(),
            (None, KeySourceConfig::Inline(keys)) => return Ok(keys.clone()),
        };
        let doc = get_json(http, &jwks_uri).await?;
        let (keys, skipped) = usable_keys(&doc, self.default_alg, &self.allowed)
            .map_err(|e| format!("{jwks_uri}: {e}"))?;
        for reason in &skipped {
            tracing::info!(idp = %self.label, %reason, "JWKS key skipped");
        }
        if keys.is_empty() {
            return Err(format!(
                "{jwks_uri} holds no usable signing key ({})",
                skipped.join("; ")
            ));
        }
        Ok(KeySet::lenient(keys))
    }
}

/// GETs a JSON document: 200, at most [`MAX_DOCUMENT_BYTES`], within [`FETCH_TIMEOUT`].
async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value, String> {
    let mut response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    if response.status() != reqwest::StatusCode::OK {
        return Err(format!("GET {url}: status {}", response.status()));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?
    {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: not JSON: {e}"))
}
