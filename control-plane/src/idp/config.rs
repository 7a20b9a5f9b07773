//! `--idp-config FILE`, in two phases: the raw JSON (serde, unknown fields refused)
//! compiled into a validated [`IdpConfig`] per identity provider, with errors that name
//! the field (`idps[1].tenant: …`). A bad file stops `epochgate serve` at start; nothing
//! here is looked at again on a request.
//!
//! ```json
//! {"idps": [{
//!   "name": "corp",
//!   "issuer": "https://kc.example.com/realms/corp",
//!   "discovery_url": "https://kc.example.com/realms/corp/.well-known/openid-configuration",
//!   "client_id": "portal",
//!   "tenant": {"fixed": "acme"},
//!   "events": ["backchannel-logout", "session-revoked"],
//!   "ssf": {"bearer_token_env": "EPOCHGATE_SSF_TOKEN_CORP", "subjects": {"email": "user"}}
//! }]}
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use epochgate_core::ids::validate_id;
use epochgate_core::jwt::{parse_jwks, Algorithm, KeySet, VerificationKey};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::{check, Secret};

/// Why an `--idp-config` file is refused: the field at fault and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--idp-config: {0}")]
pub struct IdpConfigError(pub String);

/// The events an IdP may be trusted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// OIDC Back-Channel Logout 1.0: a logout token at `/backchannel-logout`.
    BackchannelLogout,
    /// CAEP `session-revoked`, pushed as a SET.
    SessionRevoked,
    /// CAEP `credential-change` (revoke, update or delete of a credential): logs the user out.
    CredentialChange,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [
        EventKind::BackchannelLogout,
        EventKind::SessionRevoked,
        EventKind::CredentialChange,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::BackchannelLogout => "backchannel-logout",
            EventKind::SessionRevoked => "session-revoked",
            EventKind::CredentialChange => "credential-change",
        }
    }
}

/// Where an IdP's signing keys come from.
#[derive(Debug, Clone)]
pub enum KeySourceConfig {
    /// The `jwks_uri` of this OpenID discovery document (whose `issuer` must be the IdP's).
    Discovery(String),
    /// A JWKS URL.
    JwksUri(String),
    /// Keys given in the file: no rotation.
    Inline(KeySet),
}

/// Which tenant an IdP's events belong to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRule {
    /// Every event of this IdP is for one tenant.
    Fixed(String),
    /// The tenant is this (string) claim of the token; with `map`, the claim's value is
    /// looked up there and a value not listed is refused.
    Claim {
        claim: String,
        map: Option<BTreeMap<String, String>>,
    },
}

/// What a SET subject identifier of a format without a fixed meaning names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectMeaning {
    User,
    Session,
}

/// How SET subjects of the `email` and `opaque` formats are read (RFC 9493). `iss_sub`
/// always names a user; a complex subject's `user` and `session` members say what they
/// are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SubjectMap {
    /// `email`: the address is the user id (IdPs whose `sub` is the e-mail address);
    /// only [`SubjectMeaning::User`].
    pub email: Option<SubjectMeaning>,
    pub opaque: Option<SubjectMeaning>,
}

/// Shared Signals push delivery (RFC 8935) from this IdP.
#[derive(Debug, Clone)]
pub struct SsfConfig {
    /// The SETs' `iss` (the transmitter's issuer; default the IdP's).
    pub issuer: String,
    /// The SETs' required `aud` (default the client id).
    pub audience: String,
    /// The transmitter's `Authorization: Bearer` token.
    pub bearer: Secret,
    pub subjects: SubjectMap,
    /// The transmitter's own keys, when they are not the IdP's.
    pub keys: Option<KeySourceConfig>,
}

/// One identity provider, validated.
#[derive(Debug, Clone)]
pub struct IdpConfig {
    /// The path segment of its receivers and the audit actor `idp:<name>`.
    pub name: String,
    /// The logout tokens' `iss`, exactly.
    pub issuer: String,
    pub keys: KeySourceConfig,
    /// The logout tokens' `aud` (the client id registered at the IdP).
    pub client_id: String,
    /// The algorithms its keys may be pinned to (never HMAC).
    pub algorithms: BTreeSet<AlgorithmName>,
    /// The algorithm of a JWK that names none.
    pub default_alg: Algorithm,
    pub tenant: TenantRule,
    pub events: BTreeSet<EventKind>,
    /// How old (`iat`) a token may be; also how long its `jti` is remembered (plus the skew).
    pub max_token_age_s: u64,
    pub clock_skew_s: u64,
    /// An unknown `kid` refreshes the keys at most this often.
    pub jwks_min_refresh: Duration,
    /// Keys older than this are fetched again on the next event.
    pub jwks_refresh: Duration,
    pub ssf: Option<SsfConfig>,
}

/// An [`Algorithm`] with an order, for sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct AlgorithmName(pub &'static str);

impl IdpConfig {
    /// Whether keys pinned to `alg` are trusted from this IdP.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&AlgorithmName(alg.name()))
    }

    /// The audit actor.
    pub fn actor(&self) -> String {
        format!("idp:{}", self.name)
    }

    pub fn honours(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }
}

/// The asymmetric algorithms: an IdP's published keys are public keys, so an HMAC
/// "key" in its JWKS (or a token signed with one) is never trusted.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    idps: Vec<RawIdp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdp {
    name: String,
    issuer: String,
    #[serde(default)]
    discovery_url: Option<String>,
    #[serde(default)]
    jwks_uri: Option<String>,
    #[serde(default)]
    jwks: Option<Value>,
    client_id: String,
    #[serde(default)]
    algorithms: Option<Vec<String>>,
    #[serde(default = "default_alg")]
    default_alg: String,
    tenant: RawTenant,
    #[serde(default = "default_events")]
    events: Vec<String>,
    #[serde(default = "default_max_token_age_s")]
    max_token_age_s: u64,
    #[serde(default = "default_clock_skew_s")]
    clock_skew_s: u64,
    #[serde(default = "default_jwks_min_refresh_s")]
    jwks_min_refresh_s: u64,
    #[serde(default = "default_jwks_refresh_s")]
    jwks_refresh_s: u64,
    #[serde(default)]
    ssf: Option<RawSsf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    #[serde(default)]
    fixed: Option<String>,
    #[serde(default)]
    claim: Option<String>,
    #[serde(default)]
    map: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsf {
    #[serde(default)]
    issuer: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    bearer_token_env: Option<String>,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default)]
    subjects: RawSubjects,
    #[serde(default)]
    jwks_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSubjects {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    opaque: Option<String>,
}

fn default_alg() -> String {
    "RS256".into()
}
fn default_events() -> Vec<String> {
    vec!["backchannel-logout".into(), "session-revoked".into()]
}
/// Logout tokens live two minutes at oidc-provider; SET transmitters retry for a while.
pub const DEFAULT_MAX_TOKEN_AGE_S: u64 = 300;
fn default_max_token_age_s() -> u64 {
    DEFAULT_MAX_TOKEN_AGE_S
}
fn default_clock_skew_s() -> u64 {
    60
}
fn default_jwks_min_refresh_s() -> u64 {
    10
}
fn default_jwks_refresh_s() -> u64 {
    3600
}

/// The most a token may be aged or skewed by configuration (a day): the replay cache
/// keeps each `jti` that long at most.
const MAX_WINDOW_S: u64 = 86_400;

/// How an `ssf.bearer_token_*` reference is resolved (the process environment in
/// production; a map in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Parses and validates an `--idp-config` document.
pub fn parse(json: &[u8], env: &dyn Env) -> Result<Vec<IdpConfig>, IdpConfigError> {
    let raw: RawFile = {
        let de = &mut serde_json::Deserializer::from_slice(json);
        serde_path_to_error::deserialize(de)
            .map_err(|err| IdpConfigError(format!("at `{}`: {}", err.path(), err.inner())))?
    };
    let mut names = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.idps.len());
    for (i, idp) in raw.idps.into_iter().enumerate() {
        let compiled = compile(idp, env).map_err(|(field, msg)| {
            IdpConfigError(if field.is_empty() {
                format!("idps[{i}]: {msg}")
            } else {
                format!("idps[{i}].{field}: {msg}")
            })
        })?;
        if !names.insert(compiled.name.clone()) {
            return Err(IdpConfigError(format!(
                "idps[{i}].name: {:?} is listed twice",
                compiled.name
            )));
        }
        out.push(compiled);
    }
    Ok(out)
}

type FieldError = (&'static str, String);

fn url(field: &'static str, value: &str) -> Result<String, FieldError> {
    let parsed = reqwest::Url::parse(value).map_err(|e| (field, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err((field, format!("{value:?} is not an http(s) URL")));
    }
    Ok(value.to_string())
}

fn nonempty(field: &'static str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        return Err((field, "must not be empty".into()));
    }
    Ok(())
}

fn compile(raw: RawIdp, env: &dyn Env) -> Result<IdpConfig, FieldError> {
    // A name is one URL path segment of the receivers, and part of the audit actor.
    if raw.name.is_empty()
        || raw.name.len() > 64
        || !raw
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        return Err((
            "name",
            format!(
                "{:?} must be 1 to 64 of A-Z a-z 0-9 - _ . (it is a URL path segment)",
                raw.name
            ),
        ));
    }
    nonempty("issuer", &raw.issuer)?;
    nonempty("client_id", &raw.client_id)?;

    let default_alg: Algorithm = raw
        .default_alg
        .parse()
        .map_err(|e| ("default_alg", format!("{e}")))?;
    if is_hmac(default_alg) {
        return Err(("default_alg", hmac_refused(default_alg)));
    }
    let algorithms: BTreeSet<AlgorithmName> = match raw.algorithms {
        None => ASYMMETRIC.iter().map(|a| AlgorithmName(a.name())).collect(),
        Some(list) => {
            let mut set = BTreeSet::new();
            for name in &list {
                let alg: Algorithm = name.parse().map_err(|e| ("algorithms", format!("{e}")))?;
                if is_hmac(alg) {
                    return Err(("algorithms", hmac_refused(alg)));
                }
                set.insert(AlgorithmName(alg.name()));
            }
            if set.is_empty() {
                return Err(("algorithms", "must name at least one algorithm".into()));
            }
            set
        }
    };

    let keys = match (raw.discovery_url, raw.jwks_uri, raw.jwks) {
        (Some(u), None, None) => KeySourceConfig::Discovery(url("discovery_url", &u)?),
        (None, Some(u), None) => KeySourceConfig::JwksUri(url("jwks_uri", &u)?),
        (None, None, Some(doc)) => {
            KeySourceConfig::Inline(inline_keys(&doc, default_alg, &algorithms)?)
        }
        (None, None, None) => {
            return Err((
                "",
                "give one of discovery_url, jwks_uri or jwks (the IdP's signing keys)".into(),
            ))
        }
        _ => {
            return Err((
                "",
                "give only one of discovery_url, jwks_uri and jwks".into(),
            ))
        }
    };

    let tenant = match (raw.tenant.fixed, raw.tenant.claim, raw.tenant.map) {
        (Some(t), None, None) => {
            validate_id(&t).map_err(|e| ("tenant.fixed", format!("{e}")))?;
            TenantRule::Fixed(t)
        }
        (None, Some(claim), map) => {
            nonempty("tenant.claim", &claim)?;
            if let Some(map) = &map {
                if map.is_empty() {
                    return Err(("tenant.map", "must not be empty (leave it out)".into()));
                }
                for tenant in map.values() {
                    validate_id(tenant)
                        .map_err(|e| ("tenant.map", format!("tenant {tenant:?} {e}")))?;
                }
            }
            TenantRule::Claim { claim, map }
        }
        (Some(_), Some(_), _) => {
            return Err(("tenant", "give either fixed or claim, not both".into()))
        }
        (Some(_), None, Some(_)) => {
            return Err(("tenant.map", "goes with claim, not fixed".into()))
        }
        (None, None, _) => {
            return Err((
                "tenant",
                "give fixed (one tenant) or claim (with an optional map)".into(),
            ))
        }
    };

    let mut events = BTreeSet::new();
    for name in &raw.events {
        let kind = EventKind::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
                (
                    "events",
                    format!("unknown event {name:?} (known: {})", known.join(", ")),
                )
            })?;
        events.insert(kind);
    }
    if events.is_empty() {
        return Err(("events", "must name at least one event".into()));
    }

    if raw.max_token_age_s == 0 || raw.max_token_age_s > MAX_WINDOW_S {
        return Err((
            "max_token_age_s",
            format!("must be between 1 and {MAX_WINDOW_S}"),
        ));
    }
    if raw.clock_skew_s > 3600 {
        return Err(("clock_skew_s", "must be at most 3600".into()));
    }
    if raw.jwks_min_refresh_s == 0 {
        return Err((
            "jwks_min_refresh_s",
            "must be at least 1 (an unknown kid must not make every request fetch the JWKS)".into(),
        ));
    }
    if raw.jwks_refresh_s < raw.jwks_min_refresh_s {
        return Err((
            "jwks_refresh_s",
            "must be at least jwks_min_refresh_s".into(),
        ));
    }

    let ssf = match raw.ssf {
        None => None,
        Some(ssf) => Some(compile_ssf(ssf, &raw.issuer, &raw.client_id, env)?),
    };
    let wants_ssf = events.contains(&EventKind::SessionRevoked)
        || events.contains(&EventKind::CredentialChange);
    if ssf.is_some() && !wants_ssf {
        return Err((
            "ssf",
            "is set, but `events` honours no SET event (session-revoked, credential-change)".into(),
        ));
    }

    Ok(IdpConfig {
        name: raw.name,
        issuer: raw.issuer,
        keys,
        client_id: raw.client_id,
        algorithms,
        default_alg,
        tenant,
        events,
        max_token_age_s: raw.max_token_age_s,
        clock_skew_s: raw.clock_skew_s,
        jwks_min_refresh: Duration::from_secs(raw.jwks_min_refresh_s),
        jwks_refresh: Duration::from_secs(raw.jwks_refresh_s),
        ssf,
    })
}

fn hmac_refused(alg: Algorithm) -> String {
    format!("{alg} is refused: an IdP signs with a private key and publishes the public one; a shared secret would let anyone holding it forge logouts")
}

/// The keys of an inline JWKS that this IdP may use (asymmetric, allowed algorithms).
pub fn inline_keys(
    doc: &Value,
    default_alg: Algorithm,
    allowed: &BTreeSet<AlgorithmName>,
) -> Result<KeySet, FieldError> {
    let (keys, skipped) = usable_keys(doc, default_alg, allowed).map_err(|e| ("jwks", e))?;
    if keys.is_empty() {
        return Err((
            "jwks",
            format!("holds no usable signing key ({})", skipped.join("; ")),
        ));
    }
    KeySet::new(keys).map_err(|kid| ("jwks", format!("kid {kid:?} is listed twice")))
}

/// Parses a JWKS with core's parser, then drops the keys an IdP may not use: HMAC keys
/// (`kty: oct`) and keys pinned to an algorithm not allowed. Returns the keys and why
/// each other key was skipped.
pub fn usable_keys(
    doc: &Value,
    default_alg: Algorithm,
    allowed: &BTreeSet<AlgorithmName>,
) -> Result<(Vec<VerificationKey>, Vec<String>), String> {
    let (keys, mut skipped) = parse_jwks(doc, Some(default_alg))?;
    let mut kept = Vec::with_capacity(keys.len());
    for key in keys {
        let name = key.kid.as_deref().unwrap_or("(no kid)").to_string();
        if is_hmac(key.alg) {
            skipped.push(format!(
                "kid {name:?}: an HMAC key is never trusted from an IdP"
            ));
        } else if !allowed.contains(&AlgorithmName(key.alg.name())) {
            skipped.push(format!("kid {name:?}: {} is not in `algorithms`", key.alg));
        } else {
            kept.push(key);
        }
    }
    Ok((kept, skipped))
}

fn meaning(
    field: &'static str,
    value: Option<String>,
) -> Result<Option<SubjectMeaning>, FieldError> {
    match value.as_deref() {
        None => Ok(None),
        Some("user") => Ok(Some(SubjectMeaning::User)),
        Some("session") => Ok(Some(SubjectMeaning::Session)),
        Some(other) => Err((
            field,
            format!("{other:?} is neither \"user\" nor \"session\""),
        )),
    }
}

fn compile_ssf(
    raw: RawSsf,
    issuer: &str,
    client_id: &str,
    env: &dyn Env,
) -> Result<SsfConfig, FieldError> {
    let token = match (raw.bearer_token_env, raw.bearer_token_file) {
        (Some(var), None) => env.var(&var).ok_or((
            "ssf.bearer_token_env",
            format!("the environment variable {var} is not set"),
        ))?,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| {
                (
                    "ssf.bearer_token_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?
            .trim()
            .to_string(),
        (None, None) => {
            return Err((
                "ssf",
                "give bearer_token_env or bearer_token_file: the transmitter's push token (kept out of this file)".into(),
            ))
        }
        (Some(_), Some(_)) => {
            return Err((
                "ssf",
                "give only one of bearer_token_env and bearer_token_file".into(),
            ))
        }
    };
    check("the SSF push token", &token).map_err(|e| ("ssf.bearer_token", e.to_string()))?;
    let issuer = raw.issuer.unwrap_or_else(|| issuer.to_string());
    nonempty("ssf.issuer", &issuer)?;
    let audience = raw.audience.unwrap_or_else(|| client_id.to_string());
    nonempty("ssf.audience", &audience)?;
    let keys = raw
        .jwks_uri
        .map(|u| url("ssf.jwks_uri", &u).map(KeySourceConfig::JwksUri))
        .transpose()?;
    Ok(SsfConfig {
        issuer,
        audience,
        bearer: Secret::new(&token),
        subjects: SubjectMap {
            email: match meaning("ssf.subjects.email", raw.subjects.email)? {
                Some(SubjectMeaning::Session) => {
                    return Err((
                        "ssf.subjects.email",
                        "an e-mail address names a user: only \"user\" is accepted".into(),
                    ))
                }
                other => other,
            },
            opaque: meaning("ssf.subjects.opaque", raw.subjects.opaque)?,
        },
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Vars(Vec<(&'static str, &'static str)>);

    impl Env for Vars {
        fn var(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn env() -> Vars {
        Vars(vec![("SSF_TOKEN", "ssf-push-token-0123456789")])
    }

    fn one(idp: &str) -> Result<Vec<IdpConfig>, IdpConfigError> {
        parse(format!(r#"{{"idps": [{idp}]}}"#).as_bytes(), &env())
    }

    const BASE: &str = r#""name": "corp", "issuer": "https://idp.example", "jwks_uri": "https://idp.example/jwks", "client_id": "portal""#;

    #[test]
    fn a_minimal_idp_gets_the_defaults() {
        let idps = one(&format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}}}"#)).unwrap();
        let idp = &idps[0];
        assert_eq!(idp.actor(), "idp:corp");
        assert_eq!(idp.tenant, TenantRule::Fixed("acme".into()));
        assert!(idp.honours(EventKind::BackchannelLogout));
        assert!(idp.honours(EventKind::SessionRevoked));
        assert!(!idp.honours(EventKind::CredentialChange));
        assert!(idp.allows(Algorithm::RS256) && idp.allows(Algorithm::EdDSA));
        assert!(!idp.allows(Algorithm::HS256));
        assert_eq!(idp.default_alg, Algorithm::RS256);
        assert_eq!(idp.max_token_age_s, DEFAULT_MAX_TOKEN_AGE_S);
        assert!(idp.ssf.is_none());
    }

    #[test]
    fn ssf_takes_its_token_from_the_environment_or_a_file() {
        let idps = one(&format!(
            r#"{{{BASE}, "tenant": {{"claim": "tid", "map": {{"org-1": "acme"}}}},
                "events": ["session-revoked", "credential-change"],
                "ssf": {{"bearer_token_env": "SSF_TOKEN", "subjects": {{"email": "user", "opaque": "session"}}}}}}"#
        ))
        .unwrap();
        let ssf = idps[0].ssf.as_ref().unwrap();
        assert!(ssf.bearer.matches("ssf-push-token-0123456789"));
        assert_eq!(ssf.issuer, "https://idp.example");
        assert_eq!(ssf.audience, "portal");
        assert_eq!(ssf.subjects.email, Some(SubjectMeaning::User));
        assert_eq!(ssf.subjects.opaque, Some(SubjectMeaning::Session));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "file-push-token-0123456789\n").unwrap();
        let idps = one(&format!(
            r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "ssf": {{"bearer_token_file": {:?}}}}}"#,
            path.display().to_string()
        ))
        .unwrap();
        assert!(idps[0]
            .ssf
            .as_ref()
            .unwrap()
            .bearer
            .matches("file-push-token-0123456789"));
    }

    #[test]
    fn errors_name_the_field() {
        for (idp, needle) in [
            (
                format!(r#"{{{BASE}}}"#),
                "missing field `tenant`",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "colour": 1}}"#),
                "unknown field `colour`",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{}}}}"#),
                "idps[0].tenant: give fixed",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "a", "claim": "tid"}}}}"#),
                "idps[0].tenant: give either",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "algorithms": ["HS256"]}}"#),
                "idps[0].algorithms: HS256 is refused",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "default_alg": "HS512"}}"#),
                "idps[0].default_alg: HS512 is refused",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "events": ["logout"]}}"#),
                "idps[0].events: unknown event \"logout\"",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "ssf": {{}}}}"#),
                "idps[0].ssf: give bearer_token_env",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "ssf": {{"bearer_token_env": "NOPE"}}}}"#),
                "idps[0].ssf.bearer_token_env: the environment variable NOPE is not set",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "ssf": {{"bearer_token_env": "SSF_TOKEN", "subjects": {{"email": "mailbox"}}}}}}"#),
                "idps[0].ssf.subjects.email",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "events": ["backchannel-logout"], "ssf": {{"bearer_token_env": "SSF_TOKEN"}}}}"#),
                "idps[0].ssf: is set, but",
            ),
            (
                r#"{"name": "corp", "issuer": "https://idp.example", "client_id": "portal", "tenant": {"fixed": "acme"}}"#.to_string(),
                "idps[0]: give one of discovery_url",
            ),
            (
                r#"{"name": "a/b", "issuer": "https://idp.example", "jwks_uri": "https://idp.example/jwks", "client_id": "portal", "tenant": {"fixed": "acme"}}"#.to_string(),
                "idps[0].name",
            ),
            (
                r#"{"name": "corp", "issuer": "https://idp.example", "jwks_uri": "ftp://idp.example/jwks", "client_id": "portal", "tenant": {"fixed": "acme"}}"#.to_string(),
                "idps[0].jwks_uri",
            ),
            (
                format!(r#"{{{BASE}, "tenant": {{"fixed": "acme"}}, "jwks_min_refresh_s": 0}}"#),
                "idps[0].jwks_min_refresh_s",
            ),
        ] {
            let err = one(&idp).unwrap_err().to_string();
            assert!(err.contains(needle), "{idp}\n  gave: {err}\n  want: {needle}");
            assert!(err.starts_with("--idp-config: "), "{err}");
        }
        let twice = format!(
            r#"{{"idps": [{{{BASE}, "tenant": {{"fixed": "a"}}}}, {{{BASE}, "tenant": {{"fixed": "b"}}}}]}}"#
        );
        let err = parse(twice.as_bytes(), &env()).unwrap_err().to_string();
        assert!(
            err.contains("idps[1].name: \"corp\" is listed twice"),
            "{err}"
        );
    }

    #[test]
    fn an_inline_jwks_keeps_only_asymmetric_allowed_keys() {
        let hmac_only = r#"{"keys": [{"kty": "oct", "kid": "h", "alg": "HS256", "k": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY"}]}"#;
        let err = one(&format!(
            r#"{{"name": "corp", "issuer": "https://idp.example", "client_id": "portal", "tenant": {{"fixed": "acme"}}, "jwks": {hmac_only}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("idps[0].jwks: holds no usable signing key"),
            "{err}"
        );
        assert!(err.contains("HMAC key is never trusted"), "{err}");
    }
}
