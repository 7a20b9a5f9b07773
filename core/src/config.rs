//! Configuration in two phases: a raw serde model (`deny_unknown_fields`, explicit
//! defaults) compiled by `TryFrom` into a validated config with typed errors that name
//! the bad field. One parser serves the filter, the worker and the control plane; bad
//! config fails at load time (`on_configure`), never on a request.

use std::fmt;

use serde::Deserialize;

use crate::ids::validate_id;
use crate::jwt::{Algorithm, KeySet, VerificationKey};
use crate::names::CookieName;
use crate::path::RoutePrefix;

/// A configuration error, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field path, e.g. `keys[1].alg`; empty for a document-level problem.
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    fn json(e: serde_json::Error) -> Self {
        Self::new("", format!("not a valid configuration: {e}"))
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "config field `{}`: {}", self.field, self.problem)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------
// Raw model
// ---------------------------------------------------------------------------------------

/// A key as written in the configuration. Exactly one of `public_key_pem`, `secret`,
/// `secret_b64url` or `jwk` carries the material; `alg` is always pinned here.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub kid: Option<String>,
    /// The algorithm this key verifies, and the only one (RFC 8725 §3.1).
    pub alg: Option<String>,
    pub public_key_pem: Option<String>,
    /// An HMAC secret as UTF-8 text.
    pub secret: Option<String>,
    /// An HMAC secret, base64url.
    pub secret_b64url: Option<String>,
    /// A JWK (RFC 7517). Its `alg`, when present, must agree with the pinned one; a JWK
    /// without `alg` takes the pinned one.
    pub jwk: Option<serde_json::Value>,
}

/// Where a token may come from. Exactly one of `header` or `cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenSource {
    pub header: Option<String>,
    /// Stripped from the header value, e.g. `"Bearer "` (compared case-insensitively).
    pub prefix: Option<String>,
    pub cookie: Option<String>,
    /// Repeated in the cookie-clearing `Set-Cookie`, or browsers keep the cookie.
    pub cookie_path: Option<String>,
    pub cookie_domain: Option<String>,
    /// Mark the clearing cookie `Secure` (default true; turn off only for plain-HTTP demos).
    pub cookie_secure: Option<bool>,
}

/// Claim names, for IdPs that use others.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawClaimNames {
    pub user: String,
    pub tenant: String,
    pub session: String,
    pub issued_at: String,
    pub session_start: String,
    /// The RFC 8693 actor claim (impersonation): `{"sub": ...}`, possibly nested.
    pub actor: String,
}

impl Default for RawClaimNames {
    fn default() -> Self {
        Self {
            user: "sub".into(),
            tenant: "tid".into(),
            session: "sid".into(),
            issued_at: "iat".into(),
            session_start: "auth_time".into(),
            actor: "act".into(),
        }
    }
}

/// The headers that carry the verified identity to the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstreamHeaders {
    pub user: String,
    pub tenant: String,
    pub session: String,
    /// The acting user of an impersonation token (`act.sub`).
    pub actor: String,
}

impl Default for RawUpstreamHeaders {
    fn default() -> Self {
        Self {
            user: "x-epochgate-user".into(),
            tenant: "x-epochgate-tenant".into(),
            session: "x-epochgate-session".into(),
            actor: "x-epochgate-actor".into(),
        }
    }
}

/// What to do when the revocation state is missing or older than `max_staleness_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStale {
    /// Keep serving: signature and claims checked, and every revocation the edge holds
    /// still enforced — only changes since the last sync are unknown.
    Allow,
    /// Answer 503 `state_unavailable` with `Retry-After`.
    #[default]
    Deny,
}

/// The HTTP filter's (and the worker's) configuration, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Keys, each with its algorithm pinned.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// An inline JWKS document (`{"keys": [...]}`), e.g. copied from the IdP.
    pub jwks: Option<serde_json::Value>,
    /// The algorithm of JWKs (inline or remote) that carry no `alg`.
    pub jwks_default_alg: Option<String>,
    /// Also trust the keys of the remote JWKS that the sync service fetches (its `jwks`
    /// section); a `kid` not in the current set is then `unknown_key` (503, retry) and
    /// triggers a rate-limited refresh, rather than `invalid_token`.
    #[serde(default)]
    pub remote_jwks: bool,
    /// `verify` (default): verify the token here. `jwt_authn_metadata`: Envoy's
    /// `jwt_authn` filter already verified it; take its payload from dynamic metadata.
    #[serde(default)]
    pub mode: Mode,
    /// Where `jwt_authn` put the payload (`payload_in_metadata`).
    #[serde(default)]
    pub jwt_authn: RawJwtAuthn,
    /// Whether a request without a token is refused (`missing_token`), unless a route
    /// says otherwise.
    #[serde(default = "defaults::yes")]
    pub require_token: bool,
    /// Per path prefix rules; the longest matching prefix wins.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Match route prefixes ignoring ASCII case (for upstreams that treat `/Admin` as
    /// `/admin`). Without it, a path whose rule would change with its case is ambiguous.
    #[serde(default)]
    pub case_insensitive_routes: bool,
    /// Remove the token (its header, or its cookie from `Cookie`) before the upstream.
    #[serde(default)]
    pub strip_token: bool,
    /// What to do with credentials no token source reads (`credential_headers`,
    /// `credential_cookies`, and `-`/`_` spellings of a token header): the upstream may
    /// honour them, the edge never checks them.
    #[serde(default)]
    pub unchecked_credentials: UncheckedCredentials,
    /// Headers the upstream may take as credentials.
    #[serde(default = "defaults::credential_headers")]
    pub credential_headers: Vec<String>,
    /// Cookies the upstream may take as credentials (e.g. an app session cookie).
    #[serde(default)]
    pub credential_cookies: Vec<String>,
    /// The token header `typ` an access token must carry (RFC 9068: `at+jwt`), so that an
    /// ID token or another kind of JWT from the same IdP never passes.
    pub require_typ: Option<String>,
    /// How long a request whose `kid` is not in the remote JWKS waits for the refresh it
    /// triggers before `unknown_key` (0: answer at once).
    #[serde(default = "defaults::key_refresh_wait_ms")]
    pub key_refresh_wait_ms: u64,
    /// How many verified tokens each worker VM remembers (0: none). Signature and claims
    /// only: revocation is checked on every request.
    #[serde(default = "defaults::token_cache_size")]
    pub token_cache_size: usize,
    /// Verify RS*/ES* signatures with the host's native crypto when it offers it
    /// (Envoy's `verify_signature`); `false` verifies them in Rust, which only a filter
    /// built with those algorithms in Rust can (cargo feature `pure-rust`). PS* and
    /// EdDSA are always Rust's. The Worker always uses WebCrypto.
    #[serde(default = "defaults::yes")]
    pub native_verify: bool,
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default = "defaults::clock_skew_s")]
    pub clock_skew_s: u32,
    #[serde(default)]
    pub clock_margin_s: u32,
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    pub default_tenant: Option<String>,
    #[serde(default)]
    pub claims: RawClaimNames,
    #[serde(default = "defaults::token_sources")]
    pub token_sources: Vec<RawTokenSource>,
    /// Where browsers are sent when their session is over (`?reason=<reason>` is
    /// appended); without it, web requests get the API's 401. It may carry the IdP's
    /// re-authentication parameter, e.g. `https://portal/login?prompt=login`.
    pub login_url: Option<String>,
    #[serde(default = "defaults::max_staleness_s")]
    pub max_staleness_s: u64,
    #[serde(default)]
    pub on_stale: OnStale,
    #[serde(default)]
    pub upstream_headers: RawUpstreamHeaders,
    /// Report the sessions this edge sees (user, session, device, address) to the
    /// control plane, for the console's Users page.
    #[serde(default = "defaults::yes")]
    pub report_sessions: bool,
    /// Report client addresses truncated to their network (IPv4 /24, IPv6 /48).
    #[serde(default)]
    pub truncate_addresses: bool,
}

/// What happens to a credential carrier that no token source reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UncheckedCredentials {
    /// Remove it before the upstream.
    #[default]
    Strip,
    /// Refuse the request (`ambiguous_token`).
    Refuse,
    /// Pass it on (the upstream must then never honour it).
    Pass,
}

/// How the token is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Verify,
    JwtAuthnMetadata,
}

/// Where Envoy's `jwt_authn` put the verified payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawJwtAuthn {
    /// The dynamic-metadata namespace (`envoy.filters.http.jwt_authn`).
    pub namespace: String,
    /// `payload_in_metadata` of the provider.
    pub payload_key: String,
}

impl Default for RawJwtAuthn {
    fn default() -> Self {
        Self {
            namespace: "envoy.filters.http.jwt_authn".into(),
            payload_key: "jwt_payload".into(),
        }
    }
}

/// A rule for requests under a path prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: String,
    /// No check at all (login page, health checks). Spoofed identity headers are still
    /// stripped.
    #[serde(default)]
    pub exempt: bool,
    /// Overrides `require_token` (a token that is present is still checked).
    pub require_token: Option<bool>,
    /// Web (302 to the login page) or API (401): by default `Accept: text/html` decides.
    pub web: Option<bool>,
}

mod defaults {
    use super::RawTokenSource;

    pub fn yes() -> bool {
        true
    }
    pub fn token_cache_size() -> usize {
        1000
    }

    pub fn clock_skew_s() -> u32 {
        60
    }
    pub fn max_token_bytes() -> usize {
        8192
    }
    pub fn max_staleness_s() -> u64 {
        300
    }
    pub fn credential_headers() -> Vec<String> {
        vec!["authorization".into()]
    }
    pub fn key_refresh_wait_ms() -> u64 {
        2_000
    }
    pub fn token_sources() -> Vec<RawTokenSource> {
        vec![RawTokenSource {
            header: Some("authorization".into()),
            prefix: Some("Bearer ".into()),
            cookie: None,
            cookie_path: None,
            cookie_domain: None,
            cookie_secure: None,
        }]
    }
    pub fn wait_s() -> u32 {
        25
    }
    pub fn retry_min_ms() -> u64 {
        250
    }
    pub fn retry_max_ms() -> u64 {
        5_000
    }
    pub fn authority() -> String {
        "epochgate-control-plane".into()
    }
    pub fn edge_token_env() -> String {
        "EPOCHGATE_EDGE_TOKEN".into()
    }
    pub fn deployment() -> String {
        "worker".into()
    }
    pub fn refresh_ms() -> u64 {
        500
    }
    pub fn sync_timeout_ms() -> u64 {
        5_000
    }
    pub fn snapshot_page() -> u32 {
        10_000
    }
    pub fn jwks_refresh_s() -> u64 {
        300
    }
    pub fn sessions_report_s() -> u64 {
        10
    }
    pub fn relay_check_ms() -> u64 {
        20
    }
    pub fn relay_refresh_ms() -> u64 {
        10_000
    }
    pub fn jwks_min_refresh_s() -> u64 {
        10
    }
}

// ---------------------------------------------------------------------------------------
// Validated model
// ---------------------------------------------------------------------------------------

/// Where a token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header (lower-case name), with a prefix to strip.
    Header { name: String, prefix: String },
    /// A cookie, with the attributes its clearing `Set-Cookie` must repeat; `canonical`
    /// is the name as PHP & co. read it (see [`CookieName`]).
    Cookie {
        name: String,
        canonical: CookieName,
        path: Option<String>,
        domain: Option<String>,
        secure: bool,
    },
}

/// Claim names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimNames {
    pub user: String,
    pub tenant: String,
    pub session: String,
    pub issued_at: String,
    pub session_start: String,
    pub actor: String,
}

/// Upstream identity headers (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHeaders {
    pub user: String,
    pub tenant: String,
    pub session: String,
    pub actor: String,
}

/// A compiled route rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub prefix: RoutePrefix,
    pub exempt: bool,
    pub require_token: bool,
    pub web: Option<bool>,
}

/// How tokens are verified (see [`Mode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verification {
    Verify,
    JwtAuthnMetadata {
        namespace: String,
        payload_key: String,
    },
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub keys: KeySet,
    /// The algorithm of remote JWKs without `alg`.
    pub jwks_default_alg: Option<Algorithm>,
    pub remote_jwks: bool,
    pub verification: Verification,
    pub require_token: bool,
    /// Longest prefix first.
    pub routes: Vec<Route>,
    pub case_insensitive_routes: bool,
    pub strip_token: bool,
    pub unchecked_credentials: UncheckedCredentials,
    /// `credential_headers` that no token source reads (lower-case).
    pub unchecked_headers: Vec<String>,
    /// `credential_cookies` that no token source reads.
    pub unchecked_cookies: Vec<CookieName>,
    /// Lower-case, without `application/`.
    pub require_typ: Option<String>,
    pub key_refresh_wait_ms: u64,
    pub token_cache_size: usize,
    pub native_verify: bool,
    pub issuer: Option<String>,
    pub audiences: Vec<String>,
    pub clock_skew_s: u32,
    pub clock_margin_s: u32,
    pub max_token_bytes: usize,
    pub default_tenant: Option<String>,
    pub claims: ClaimNames,
    pub sources: Vec<TokenSource>,
    pub login_url: Option<String>,
    pub max_staleness_s: u64,
    pub on_stale: OnStale,
    pub upstream_headers: UpstreamHeaders,
    pub report_sessions: bool,
    pub truncate_addresses: bool,
}

impl Config {
    /// Parses and validates a JSON configuration.
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_json::from_slice(json).map_err(ConfigError::json)?;
        Config::try_from(raw)
    }

    /// The cookie source, if any (its attributes shape the cookie-clearing header).
    pub fn cookie_source(&self) -> Option<&TokenSource> {
        self.sources
            .iter()
            .find(|s| matches!(s, TokenSource::Cookie { .. }))
    }

    /// What an operator should hear about once, when the configuration is loaded.
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        if self.verification == Verification::Verify
            && self.issuer.is_none()
            && self.audiences.is_empty()
        {
            out.push(ConfigWarning::NoIssuerOrAudience);
        }
        out
    }
}

/// A configuration that loads but is likely not what the operator meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigWarning {
    /// Neither `issuer` nor `audiences`: any token the keys verify passes, an ID token or
    /// another client's token from the same IdP included.
    NoIssuerOrAudience,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigWarning::NoIssuerOrAudience => f.write_str(
                "neither `issuer` nor `audiences` is set: any token these keys verify passes, \
                 including ID tokens and other clients' tokens from the same IdP; set them (and \
                 `require_typ: \"at+jwt\"` where the IdP issues RFC 9068 access tokens)",
            ),
        }
    }
}

fn header_name(field: &str, name: &str) -> Result<String, ConfigError> {
    let valid = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if valid {
        Ok(name.to_ascii_lowercase())
    } else {
        Err(ConfigError::new(
            field,
            format!("{name:?} is not a valid header name"),
        ))
    }
}

/// An RFC 6265 cookie-name: a token (no separators, no spaces, no controls).
fn valid_cookie_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

fn claim_name(field: &str, name: String) -> Result<String, ConfigError> {
    if name.is_empty() {
        Err(ConfigError::new(field, "claim name is empty"))
    } else {
        Ok(name)
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, ConfigError> {
        let jwks_default_alg = raw
            .jwks_default_alg
            .as_deref()
            .map(str::parse::<Algorithm>)
            .transpose()
            .map_err(|e| ConfigError::new("jwks_default_alg", e.to_string()))?;
        let mut keys = Vec::with_capacity(raw.keys.len());
        for (i, key) in raw.keys.into_iter().enumerate() {
            keys.push(compile_key(&format!("keys[{i}]"), key)?);
        }
        if let Some(doc) = &raw.jwks {
            let (jwks, skipped) = crate::jwt::parse_jwks(doc, jwks_default_alg)
                .map_err(|e| ConfigError::new("jwks", e))?;
            if let Some(why) = skipped.first() {
                return Err(ConfigError::new("jwks", why.clone()));
            }
            keys.extend(jwks);
        }
        let verification = match raw.mode {
            Mode::Verify => Verification::Verify,
            Mode::JwtAuthnMetadata => {
                if raw.jwt_authn.namespace.is_empty() || raw.jwt_authn.payload_key.is_empty() {
                    return Err(ConfigError::new(
                        "jwt_authn",
                        "namespace and payload_key must be set",
                    ));
                }
                Verification::JwtAuthnMetadata {
                    namespace: raw.jwt_authn.namespace,
                    payload_key: raw.jwt_authn.payload_key,
                }
            }
        };
        if keys.is_empty() && !raw.remote_jwks && verification == Verification::Verify {
            return Err(ConfigError::new(
                "keys",
                "at least one key is required (keys, jwks or remote_jwks)",
            ));
        }
        let keys = KeySet::new(keys)
            .map_err(|kid| ConfigError::new("keys", format!("kid {kid:?} is configured twice")))?;

        if raw.audiences.iter().any(String::is_empty) {
            return Err(ConfigError::new("audiences", "an audience is empty"));
        }
        if matches!(&raw.issuer, Some(i) if i.is_empty()) {
            return Err(ConfigError::new(
                "issuer",
                "is empty; leave it out to skip the check",
            ));
        }
        if raw.max_token_bytes == 0 || raw.max_token_bytes > 65_536 {
            return Err(ConfigError::new(
                "max_token_bytes",
                "must be between 1 and 65536",
            ));
        }
        if raw.token_cache_size > 1_000_000 {
            return Err(ConfigError::new(
                "token_cache_size",
                "must be at most 1000000",
            ));
        }
        if raw.clock_skew_s > 3_600 {
            return Err(ConfigError::new("clock_skew_s", "must be at most 3600"));
        }
        if raw.clock_margin_s > 3_600 {
            return Err(ConfigError::new("clock_margin_s", "must be at most 3600"));
        }
        if let Some(t) = &raw.default_tenant {
            validate_id(t).map_err(|e| ConfigError::new("default_tenant", e.to_string()))?;
        }
        if raw.max_staleness_s == 0 {
            return Err(ConfigError::new("max_staleness_s", "must be at least 1"));
        }

        let c = raw.claims;
        let claims = ClaimNames {
            user: claim_name("claims.user", c.user)?,
            tenant: claim_name("claims.tenant", c.tenant)?,
            session: claim_name("claims.session", c.session)?,
            issued_at: claim_name("claims.issued_at", c.issued_at)?,
            session_start: claim_name("claims.session_start", c.session_start)?,
            actor: claim_name("claims.actor", c.actor)?,
        };

        if raw.token_sources.is_empty() {
            return Err(ConfigError::new(
                "token_sources",
                "at least one source is required",
            ));
        }
        let mut sources = Vec::with_capacity(raw.token_sources.len());
        for (i, s) in raw.token_sources.into_iter().enumerate() {
            let field = format!("token_sources[{i}]");
            let source = match (s.header, s.cookie) {
                (Some(name), None) => {
                    if s.cookie_path.is_some()
                        || s.cookie_domain.is_some()
                        || s.cookie_secure.is_some()
                    {
                        return Err(ConfigError::new(
                            &field,
                            "cookie_* fields belong to a cookie source",
                        ));
                    }
                    TokenSource::Header {
                        name: header_name(&format!("{field}.header"), &name)?,
                        prefix: s.prefix.unwrap_or_default(),
                    }
                }
                (None, Some(name)) => {
                    if s.prefix.is_some() {
                        return Err(ConfigError::new(
                            &field,
                            "prefix belongs to a header source",
                        ));
                    }
                    if !valid_cookie_name(&name) {
                        return Err(ConfigError::new(
                            format!("{field}.cookie"),
                            format!("{name:?} is not a valid cookie name"),
                        ));
                    }
                    TokenSource::Cookie {
                        canonical: CookieName::new(&name),
                        name,
                        path: s.cookie_path,
                        domain: s.cookie_domain,
                        secure: s.cookie_secure.unwrap_or(true),
                    }
                }
                _ => {
                    return Err(ConfigError::new(
                        &field,
                        "set exactly one of `header` or `cookie`",
                    ))
                }
            };
            sources.push(source);
        }

        if let Some(url) = &raw.login_url {
            if url.is_empty() || url.chars().any(|c| c.is_control() || c == ' ') {
                return Err(ConfigError::new(
                    "login_url",
                    "must be a non-empty URL without spaces",
                ));
            }
        }
        let mut routes = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.into_iter().enumerate() {
            let prefix =
                RoutePrefix::parse(&r.prefix, raw.case_insensitive_routes).map_err(|why| {
                    ConfigError::new(
                        format!("routes[{i}].prefix"),
                        format!("{:?} {why}", r.prefix),
                    )
                })?;
            if routes.iter().any(|o: &Route| o.prefix == prefix) {
                return Err(ConfigError::new(
                    format!("routes[{i}].prefix"),
                    format!("{:?} is listed twice", r.prefix),
                ));
            }
            if r.exempt && (r.require_token.is_some() || r.web.is_some()) {
                return Err(ConfigError::new(
                    format!("routes[{i}]"),
                    "an exempt route takes no other rule",
                ));
            }
            // Longest stem first; of two equal stems, the exact one before the wildcard;
            // otherwise in configuration order (an insertion rather than a sort: a few
            // routes, and no sort routine in the `.wasm`).
            let rank = |p: &RoutePrefix| (p.stem.len(), !p.wildcard);
            let at = routes.partition_point(|x: &Route| rank(&x.prefix) >= rank(&prefix));
            routes.insert(
                at,
                Route {
                    prefix,
                    exempt: r.exempt,
                    require_token: r.require_token.unwrap_or(raw.require_token),
                    web: r.web,
                },
            );
        }

        let read_headers: Vec<&str> = sources
            .iter()
            .filter_map(|s| match s {
                TokenSource::Header { name, .. } => Some(name.as_str()),
                TokenSource::Cookie { .. } => None,
            })
            .collect();
        let mut unchecked_headers = Vec::new();
        for (i, h) in raw.credential_headers.iter().enumerate() {
            let name = header_name(&format!("credential_headers[{i}]"), h)?;
            if !read_headers.contains(&name.as_str()) && !unchecked_headers.contains(&name) {
                unchecked_headers.push(name);
            }
        }
        let mut unchecked_cookies: Vec<CookieName> = Vec::new();
        for (i, c) in raw.credential_cookies.iter().enumerate() {
            if !valid_cookie_name(c) {
                return Err(ConfigError::new(
                    format!("credential_cookies[{i}]"),
                    format!("{c:?} is not a valid cookie name"),
                ));
            }
            let read = sources
                .iter()
                .any(|s| matches!(s, TokenSource::Cookie { name, .. } if name == c));
            if !read && !unchecked_cookies.iter().any(|u| u.name() == c) {
                unchecked_cookies.push(CookieName::new(c));
            }
        }

        let require_typ = match raw.require_typ {
            None => None,
            Some(t) => {
                if verification != Verification::Verify {
                    return Err(ConfigError::new(
                        "require_typ",
                        "needs mode: verify (the jwt_authn payload carries no token header)",
                    ));
                }
                let typ = crate::jwt::normalize_typ(&t);
                if typ.is_empty() || !typ.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError::new(
                        "require_typ",
                        format!("{t:?} is not a media type such as \"at+jwt\""),
                    ));
                }
                Some(typ)
            }
        };
        if raw.key_refresh_wait_ms > 10_000 {
            return Err(ConfigError::new(
                "key_refresh_wait_ms",
                "must be at most 10000",
            ));
        }

        let h = raw.upstream_headers;
        let upstream_headers = UpstreamHeaders {
            user: header_name("upstream_headers.user", &h.user)?,
            tenant: header_name("upstream_headers.tenant", &h.tenant)?,
            session: header_name("upstream_headers.session", &h.session)?,
            actor: header_name("upstream_headers.actor", &h.actor)?,
        };

        Ok(Config {
            keys,
            jwks_default_alg,
            remote_jwks: raw.remote_jwks,
            verification,
            require_token: raw.require_token,
            routes,
            case_insensitive_routes: raw.case_insensitive_routes,
            strip_token: raw.strip_token,
            unchecked_credentials: raw.unchecked_credentials,
            unchecked_headers,
            unchecked_cookies,
            require_typ,
            key_refresh_wait_ms: raw.key_refresh_wait_ms,
            token_cache_size: raw.token_cache_size,
            report_sessions: raw.report_sessions,
            truncate_addresses: raw.truncate_addresses,
            native_verify: raw.native_verify,
            issuer: raw.issuer,
            audiences: raw.audiences,
            clock_skew_s: raw.clock_skew_s,
            clock_margin_s: raw.clock_margin_s,
            max_token_bytes: raw.max_token_bytes,
            default_tenant: raw.default_tenant,
            claims,
            sources,
            login_url: raw.login_url,
            max_staleness_s: raw.max_staleness_s,
            on_stale: raw.on_stale,
            upstream_headers,
        })
    }
}

fn compile_key(field: &str, key: RawKey) -> Result<VerificationKey, ConfigError> {
    let jwk_alg = key
        .jwk
        .as_ref()
        .and_then(|j| j.get("alg"))
        .and_then(|a| a.as_str())
        .map(str::to_string);
    let alg_name = match (&key.alg, &jwk_alg) {
        (Some(a), Some(j)) if a != j => {
            return Err(ConfigError::new(
                format!("{field}.alg"),
                format!("{a:?} disagrees with the JWK's alg {j:?}"),
            ))
        }
        (Some(a), _) => a.clone(),
        (None, Some(j)) => j.clone(),
        (None, None) => {
            return Err(ConfigError::new(
                format!("{field}.alg"),
                "is required: the algorithm is pinned per key",
            ))
        }
    };
    let alg: Algorithm = alg_name
        .parse()
        .map_err(|e: crate::jwt::UnsupportedAlgorithm| {
            ConfigError::new(format!("{field}.alg"), e.to_string())
        })?;
    let jwk_kid = key
        .jwk
        .as_ref()
        .and_then(|j| j.get("kid"))
        .and_then(|k| k.as_str())
        .map(str::to_string);
    let kid = match (key.kid, jwk_kid) {
        (Some(a), Some(b)) if a != b => {
            return Err(ConfigError::new(
                format!("{field}.kid"),
                format!("{a:?} disagrees with the JWK's kid {b:?}"),
            ))
        }
        (Some(a), _) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    let sources = [
        key.public_key_pem.is_some(),
        key.secret.is_some(),
        key.secret_b64url.is_some(),
        key.jwk.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if sources != 1 {
        return Err(ConfigError::new(
            field,
            "set exactly one of `public_key_pem`, `secret`, `secret_b64url` or `jwk`",
        ));
    }
    let result = if let Some(pem) = key.public_key_pem {
        VerificationKey::from_pem(kid, alg, &pem)
    } else if let Some(secret) = key.secret {
        VerificationKey::hmac(kid, alg, secret.into_bytes())
    } else if let Some(b64) = key.secret_b64url {
        let bytes = crate::b64::decode_url_no_pad(b64.trim_end_matches('=')).map_err(|e| {
            ConfigError::new(
                format!("{field}.secret_b64url"),
                format!("not base64url: {e}"),
            )
        })?;
        VerificationKey::hmac(kid, alg, bytes)
    } else if let Some(jwk) = key.jwk {
        VerificationKey::from_jwk(kid, alg, &jwk)
    } else {
        return Err(ConfigError::new(field, "no key material"));
    };
    result.map_err(|e| ConfigError::new(field, e.to_string()))
}

/// The service VM's sync loop configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSyncConfig {
    /// The Envoy cluster of the control plane.
    pub cluster: String,
    /// The `:authority` of the sync requests.
    #[serde(default = "defaults::authority")]
    pub authority: String,
    /// How long the control plane may hold a long-poll.
    #[serde(default = "defaults::wait_s")]
    pub wait_s: u32,
    /// The edge's id in `GET /v1/edges`; by default Envoy's node id.
    pub edge_id: Option<String>,
    /// Backoff after a failed sync: from `retry_min_ms`, doubling up to `retry_max_ms`.
    #[serde(default = "defaults::retry_min_ms")]
    pub retry_min_ms: u64,
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// The environment variable (`vm_config.environment_variables`) holding the edge
    /// token: never in the plugin configuration, which `/config_dump` shows.
    #[serde(default = "defaults::edge_token_env")]
    pub edge_token_env: String,
    /// Take snapshots in pages of this many entries (0: one answer), so a large state
    /// never outgrows Envoy's buffer for a call's response.
    #[serde(default = "defaults::snapshot_page")]
    pub snapshot_page: u32,
    /// A remote JWKS to fetch and share with the filter VMs (`remote_jwks: true` there).
    pub jwks: Option<RawJwksSource>,
    /// Send the sessions the filter VMs saw to the control plane at most this often
    /// (seconds, 1..=300).
    #[serde(default = "defaults::sessions_report_s")]
    pub sessions_report_s: u64,
}

/// Where the IdP publishes its keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJwksSource {
    /// The Envoy cluster of the IdP.
    pub cluster: String,
    /// `:authority` of the request (the IdP's host name).
    pub authority: String,
    /// e.g. `/.well-known/jwks.json`.
    pub path: String,
    /// Refetch this often (seconds).
    #[serde(default = "defaults::jwks_refresh_s")]
    pub refresh_s: u64,
    /// At most one refetch this often when a filter meets an unknown `kid` (seconds), so a
    /// flood of bogus `kid`s cannot hammer the IdP.
    #[serde(default = "defaults::jwks_min_refresh_s")]
    pub min_refresh_s: u64,
}

/// The validated JWKS source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSource {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub refresh_s: u64,
    pub min_refresh_s: u64,
}

/// The validated sync configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncConfig {
    pub jwks: Option<JwksSource>,
    pub sessions_report_s: u64,
    pub snapshot_page: u32,
    pub cluster: String,
    pub authority: String,
    pub wait_s: u32,
    pub edge_id: Option<String>,
    pub retry_min_ms: u64,
    pub retry_max_ms: u64,
    pub edge_token_env: String,
}

impl SyncConfig {
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawSyncConfig = serde_json::from_slice(json).map_err(ConfigError::json)?;
        SyncConfig::try_from(raw)
    }

    /// The sync client's settings for Envoy's sync VM: long-polls, asked again at once.
    pub fn client_config(&self, edge_id: String) -> crate::sync::client::ClientConfig {
        crate::sync::client::ClientConfig {
            edge_id,
            wait_s: self.wait_s,
            page_limit: self.snapshot_page,
            min_interval_ms: 0,
            retry_min_ms: self.retry_min_ms,
            retry_max_ms: self.retry_max_ms,
            call_timeout_ms: self.call_timeout_ms(),
        }
    }

    /// How long a sync call may take: the long-poll plus a margin, so a held poll is
    /// never cut short by its own timeout.
    pub fn call_timeout_ms(&self) -> u64 {
        u64::from(self.wait_s) * 1000 + 5_000
    }
}

impl TryFrom<RawSyncConfig> for SyncConfig {
    type Error = ConfigError;

    fn try_from(raw: RawSyncConfig) -> Result<Self, ConfigError> {
        if raw.cluster.is_empty() {
            return Err(ConfigError::new("cluster", "is empty"));
        }
        if raw.authority.is_empty() {
            return Err(ConfigError::new("authority", "is empty"));
        }
        if raw.wait_s > 60 {
            return Err(ConfigError::new("wait_s", "must be at most 60"));
        }
        if let Some(id) = &raw.edge_id {
            validate_id(id).map_err(|e| ConfigError::new("edge_id", e.to_string()))?;
        }
        if raw.retry_min_ms == 0 || raw.retry_max_ms < raw.retry_min_ms {
            return Err(ConfigError::new(
                "retry_max_ms",
                "needs 0 < retry_min_ms <= retry_max_ms",
            ));
        }
        if raw.edge_token_env.is_empty() {
            return Err(ConfigError::new("edge_token_env", "is empty"));
        }
        let jwks = match raw.jwks {
            None => None,
            Some(j) => {
                if j.cluster.is_empty() || j.authority.is_empty() {
                    return Err(ConfigError::new(
                        "jwks",
                        "cluster and authority must be set",
                    ));
                }
                if !j.path.starts_with('/') {
                    return Err(ConfigError::new("jwks.path", "must start with `/`"));
                }
                if j.refresh_s == 0 || j.min_refresh_s == 0 || j.min_refresh_s > j.refresh_s {
                    return Err(ConfigError::new(
                        "jwks.min_refresh_s",
                        "needs 0 < min_refresh_s <= refresh_s",
                    ));
                }
                Some(JwksSource {
                    cluster: j.cluster,
                    authority: j.authority,
                    path: j.path,
                    refresh_s: j.refresh_s,
                    min_refresh_s: j.min_refresh_s,
                })
            }
        };
        if raw.snapshot_page > 100_000 {
            return Err(ConfigError::new("snapshot_page", "must be at most 100000"));
        }
        check_report_interval(raw.sessions_report_s)?;
        Ok(SyncConfig {
            jwks,
            sessions_report_s: raw.sessions_report_s,
            snapshot_page: raw.snapshot_page,
            cluster: raw.cluster,
            authority: raw.authority,
            wait_s: raw.wait_s,
            edge_id: raw.edge_id,
            retry_min_ms: raw.retry_min_ms,
            retry_max_ms: raw.retry_max_ms,
            edge_token_env: raw.edge_token_env,
        })
    }
}

/// The Cloudflare Worker's own settings, next to the filter configuration ([`Config`])
/// it shares with Envoy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkerConfig {
    /// Where allowed requests go: `http(s)://host[:port][/base]`; the request's path and
    /// query are appended.
    pub origin: String,
    /// The control plane's base URL (`/v1/sync` is appended).
    pub control_plane: String,
    /// The deployment's name; each isolate reports as `<deployment>-<random id>`.
    #[serde(default = "defaults::deployment")]
    pub deployment: String,
    /// At most one sync per isolate per this many ms (the propagation delay).
    #[serde(default = "defaults::refresh_ms")]
    pub refresh_ms: u64,
    /// How long one sync call may take.
    #[serde(default = "defaults::sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// Backoff after failed syncs: from `refresh_ms`, doubling up to this.
    #[serde(default = "defaults::retry_max_ms")]
    pub retry_max_ms: u64,
    /// Take snapshots in pages of this many entries (0: one answer).
    #[serde(default = "defaults::snapshot_page")]
    pub snapshot_page: u32,

    /// Send the sessions this isolate saw to the control plane at most this often
    /// (seconds, 1..=300).
    #[serde(default = "defaults::sessions_report_s")]
    pub sessions_report_s: u64,

    /// With the relay (the `EPOCHGATE_RELAY` Durable Object binding): an isolate asks the
    /// relay for the current version at most this often (ms, 5..=1000), riding on
    /// requests.
    #[serde(default = "defaults::relay_check_ms")]
    pub relay_check_ms: u64,
    /// With the relay answering: an isolate's own sync calls come at most this often
    /// (ms, `refresh_ms`..=60000) besides the one a change the relay reports starts.
    #[serde(default = "defaults::relay_refresh_ms")]
    pub relay_refresh_ms: u64,
}

/// The validated worker settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    /// Without a trailing `/`.
    pub origin: String,
    /// Without a trailing `/`.
    pub control_plane: String,
    pub deployment: String,
    pub refresh_ms: u64,
    pub sync_timeout_ms: u64,
    pub retry_max_ms: u64,
    pub snapshot_page: u32,
    pub sessions_report_s: u64,
    pub relay_check_ms: u64,
    pub relay_refresh_ms: u64,
}

/// How long the relay's poll of the control plane may be held (its `wait`).
pub const RELAY_WAIT_S: u32 = 20;

impl WorkerConfig {
    pub fn from_json(json: &[u8]) -> Result<Self, ConfigError> {
        let raw: RawWorkerConfig = serde_json::from_slice(json).map_err(ConfigError::json)?;
        WorkerConfig::try_from(raw)
    }

    /// The edge id of one isolate: the deployment's name and the isolate's random id, so
    /// `GET /v1/edges` lists every live isolate apart.
    pub fn edge_id(&self, isolate_random: u64) -> String {
        format!("{}-{isolate_random:016x}", self.deployment)
    }

    /// The URL an allowed request is sent to: the origin plus the request's path and query.
    pub fn origin_url(&self, path_and_query: &str) -> String {
        let rest = path_and_query.strip_prefix('/').unwrap_or(path_and_query);
        format!("{}/{rest}", self.origin)
    }

    /// The sync client's settings for an isolate: short polls (`wait=0`), at most one
    /// per `refresh_ms`, backing off from `refresh_ms` to `retry_max_ms`. When a relay
    /// tells it of changes (`relayed`: the filter configuration's `max_staleness_s`), at
    /// most one per `relay_refresh_ms` — and at least every half `max_staleness_s`, so
    /// its state never goes stale between calls.
    pub fn client_config(
        &self,
        edge_id: String,
        relayed: Option<u64>,
    ) -> crate::sync::client::ClientConfig {
        let min_interval_ms = match relayed {
            Some(max_staleness_s) => self
                .relay_refresh_ms
                .min(max_staleness_s.saturating_mul(500))
                .max(self.refresh_ms),
            None => self.refresh_ms,
        };
        crate::sync::client::ClientConfig {
            edge_id,
            wait_s: 0,
            page_limit: self.snapshot_page,
            min_interval_ms,
            retry_min_ms: self.refresh_ms,
            retry_max_ms: self.retry_max_ms,
            call_timeout_ms: self.sync_timeout_ms,
        }
    }

    /// The relay's sync client (the deployment's Durable Object, edge
    /// `<deployment>-relay`): a long-poll loop, as Envoy's sync VM runs.
    pub fn relay_client_config(&self) -> crate::sync::client::ClientConfig {
        crate::sync::client::ClientConfig {
            edge_id: format!("{}-relay", self.deployment),
            wait_s: RELAY_WAIT_S,
            page_limit: self.snapshot_page,
            min_interval_ms: 0,
            retry_min_ms: self.refresh_ms,
            retry_max_ms: self.retry_max_ms,
            call_timeout_ms: u64::from(RELAY_WAIT_S) * 1000 + self.sync_timeout_ms,
        }
    }

    /// The URL of a sync call, from [`crate::sync::SyncRequest::path`].
    pub fn sync_url(&self, sync_path: &str) -> String {
        format!("{}{sync_path}", self.control_plane)
    }

    /// The URL this isolate reports its sessions to ([`crate::sessions::report_path`]).
    pub fn sessions_url(&self, edge_id: &str) -> String {
        format!(
            "{}{}",
            self.control_plane,
            crate::sessions::report_path(edge_id)
        )
    }
}

/// `sessions_report_s` of the sync and worker settings: 1..=300 seconds.
fn check_report_interval(seconds: u64) -> Result<(), ConfigError> {
    if (1..=300).contains(&seconds) {
        Ok(())
    } else {
        Err(ConfigError::new(
            "sessions_report_s",
            "must be between 1 and 300",
        ))
    }
}

/// `http(s)://authority[/path]`, no query or fragment; returned without a trailing `/`.
fn base_url(field: &str, url: &str) -> Result<String, ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| ConfigError::new(field, format!("{url:?} is not an http(s) URL")))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(ConfigError::new(field, format!("{url:?} has no host")));
    }
    if url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            field,
            format!("{url:?} must be a base URL (no query, fragment or spaces)"),
        ));
    }
    Ok(url.trim_end_matches('/').to_string())
}

impl TryFrom<RawWorkerConfig> for WorkerConfig {
    type Error = ConfigError;

    fn try_from(raw: RawWorkerConfig) -> Result<Self, ConfigError> {
        let origin = base_url("origin", &raw.origin)?;
        let control_plane = base_url("control_plane", &raw.control_plane)?;
        if raw.deployment.is_empty() {
            return Err(ConfigError::new("deployment", "is empty"));
        }
        // The isolate's edge id must be a valid id once the random part is added.
        validate_id(&format!("{}-{:016x}", raw.deployment, u64::MAX))
            .map_err(|e| ConfigError::new("deployment", format!("as an edge id {e}")))?;
        if !(50..=60_000).contains(&raw.refresh_ms) {
            return Err(ConfigError::new(
                "refresh_ms",
                "must be between 50 and 60000",
            ));
        }
        if !(100..=60_000).contains(&raw.sync_timeout_ms) {
            return Err(ConfigError::new(
                "sync_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if raw.retry_max_ms < raw.refresh_ms {
            return Err(ConfigError::new(
                "retry_max_ms",
                "must be at least refresh_ms",
            ));
        }
        if raw.snapshot_page > 100_000 {
            return Err(ConfigError::new("snapshot_page", "must be at most 100000"));
        }
        check_report_interval(raw.sessions_report_s)?;
        if !(5..=1000).contains(&raw.relay_check_ms) {
            return Err(ConfigError::new(
                "relay_check_ms",
                "must be between 5 and 1000",
            ));
        }
        if !(raw.refresh_ms..=60_000).contains(&raw.relay_refresh_ms) {
            return Err(ConfigError::new(
                "relay_refresh_ms",
                "must be between refresh_ms and 60000",
            ));
        }
        Ok(WorkerConfig {
            origin,
            control_plane,
            deployment: raw.deployment,
            refresh_ms: raw.refresh_ms,
            sync_timeout_ms: raw.sync_timeout_ms,
            retry_max_ms: raw.retry_max_ms,
            snapshot_page: raw.snapshot_page,
            sessions_report_s: raw.sessions_report_s,
            relay_check_ms: raw.relay_check_ms,
            relay_refresh_ms: raw.relay_refresh_ms,
        })
    }
}
