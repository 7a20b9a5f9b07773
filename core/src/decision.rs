//! The decision: allow (with the verified identity) or deny (with the response already
//! shaped). The glue maps it to `Action::Continue` / `send_http_response` (filter) or a
//! `Response` (worker).

use serde_json::{Map, Value};

use crate::cache::TokenCache;
use crate::claims::{validate, Identity};
use crate::config::{
    Config, ConfigError, OnStale, Route, TokenSource, UncheckedCredentials, Verification,
};
use crate::jwt::{
    self, AlgorithmSupport, KeySet, ParsedToken, PureRustVerifier, SignatureVerifier, TokenError,
    VerificationKey,
};
use crate::names::{header_name_starts_with, same_header_name};
use crate::path::{self, Ambiguous};
use crate::state::{check_revocation, session_end_ms, session_expired, EpochSource, Revoked};
use crate::sync::SyncStatus;
use crate::token::{self, extract, ExtractError, Headers};

/// The response header that announces a scheduled logout (RFC 3339, UTC), so web and
/// mobile clients can warn the user and save work.
pub const LOGOUT_AT_HEADER: &str = "epochgate-logout-at";

/// Every reason a request is denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DenyReason {
    /// No token where one is required.
    MissingToken,
    /// Bad signature, format, algorithm or claims.
    InvalidToken,
    /// Two sources with two different tokens, or a token header sent twice.
    AmbiguousToken,
    /// A `kid` not in the current key set while a key refresh may bring it: retry, do not
    /// log anyone out over a rotation race.
    UnknownKey,
    TokenExpired,
    TokenNotYetValid,
    /// Force-logged-out: the session started at or before an applicable epoch, or its
    /// `sid` was revoked.
    SessionRevoked,
    /// The session started longer ago than the control plane's compaction horizon
    /// (`max_session_lifetime_s`): a logout that old may have been compacted away, so
    /// such a session is over whatever its tokens say.
    SessionExpired,
    /// No sync yet, or the last one older than `max_staleness_s`, with `on_stale: deny`;
    /// or the state could not be read (a host call failed).
    StateUnavailable,
    /// A host call the decision needs failed (reading the request's headers, stripping
    /// a spoofed header): the request cannot be judged, so it is refused (500).
    InternalError,
}

impl DenyReason {
    pub const ALL: [DenyReason; 10] = [
        DenyReason::MissingToken,
        DenyReason::InvalidToken,
        DenyReason::AmbiguousToken,
        DenyReason::UnknownKey,
        DenyReason::TokenExpired,
        DenyReason::TokenNotYetValid,
        DenyReason::SessionRevoked,
        DenyReason::SessionExpired,
        DenyReason::StateUnavailable,
        DenyReason::InternalError,
    ];

    /// The machine-readable code, as in the JSON body and the login redirect.
    pub fn code(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "missing_token",
            DenyReason::InvalidToken => "invalid_token",
            DenyReason::AmbiguousToken => "ambiguous_token",
            DenyReason::UnknownKey => "unknown_key",
            DenyReason::TokenExpired => "token_expired",
            DenyReason::TokenNotYetValid => "token_not_yet_valid",
            DenyReason::SessionRevoked => "session_revoked",
            DenyReason::SessionExpired => "session_expired",
            DenyReason::StateUnavailable => "state_unavailable",
            DenyReason::InternalError => "internal_error",
        }
    }

    fn description(self) -> &'static str {
        match self {
            DenyReason::MissingToken => "token missing",
            DenyReason::InvalidToken => "invalid token",
            DenyReason::AmbiguousToken => "more than one token",
            DenyReason::UnknownKey => "unknown signing key",
            DenyReason::TokenExpired => "token expired",
            DenyReason::TokenNotYetValid => "token not yet valid",
            DenyReason::SessionRevoked => "session revoked",
            DenyReason::SessionExpired => "session expired",
            DenyReason::StateUnavailable => "revocation state unavailable",
            DenyReason::InternalError => "internal error",
        }
    }

    /// The HTTP status of the deny: 401 (sign in again), 503 (retry), 500 (a host
    /// failure at the edge).
    pub fn status(self) -> u16 {
        match self {
            DenyReason::UnknownKey | DenyReason::StateUnavailable => 503,
            DenyReason::InternalError => 500,
            _ => 401,
        }
    }

    /// Whether the client should retry rather than sign in again (503, 500): such a
    /// deny never sends a browser to the login page — an outage logs no one out.
    pub fn is_retryable(self) -> bool {
        self.status() != 401
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl From<&TokenError> for DenyReason {
    fn from(e: &TokenError) -> Self {
        match e {
            TokenError::Expired => DenyReason::TokenExpired,
            TokenError::NotYetValid | TokenError::IssuedInFuture(_) => DenyReason::TokenNotYetValid,
            _ => DenyReason::InvalidToken,
        }
    }
}

/// A response for the glue to send as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For a gRPC request: the response is gRPC's trailers-only form (HTTP 200,
    /// `grpc-status` and `grpc-message` in the headers, no body). Hosts with a native
    /// gRPC local reply (Envoy's `send_grpc_response`) use this status and `grpc_message`.
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
}

/// A change to the request before it goes upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Remove every value of this header.
    Remove(String),
    /// Replace every value of this header with one.
    Set(String, Vec<u8>),
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Pass it on, after applying `request_edits` in order (spoofed identity headers
    /// removed, the verified identity set, the token stripped if configured), and add
    /// `response_headers` to the response (a scheduled logout's notice).
    ///
    /// `identity` is `None` on exempt routes and when no token was required and none
    /// came; `stale` is set when the state was stale and `on_stale: allow` let the
    /// request by — with every revocation the edge holds still enforced, only changes
    /// since the last sync unknown.
    Allow {
        identity: Option<Identity>,
        stale: bool,
        request_edits: Vec<HeaderEdit>,
        response_headers: Vec<(String, String)>,
    },
    /// Answer with `response`; `detail` is for the log, never for the client.
    Deny {
        reason: DenyReason,
        detail: String,
        response: Response,
    },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// The per-request inputs besides the headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Lower-case names; may include HTTP/2 pseudo-headers such as `:path`.
    pub headers: &'a Headers,
    /// The request path (query included or not).
    pub path: &'a str,
}

/// What the host knows besides the request: the epochs, the sync status, the time, and
/// where it has them, the remote JWKS's keys and a payload another filter verified.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a, E> {
    pub epochs: &'a E,
    pub status: Option<&'a SyncStatus>,
    pub now_ms: u64,
    /// The remote JWKS (`remote_jwks: true`), if fetched.
    pub remote_keys: Option<&'a KeySet>,
    /// `mode: jwt_authn_metadata`: the payload Envoy's `jwt_authn` verified, if any.
    pub verified_claims: Option<&'a Map<String, Value>>,
    /// The host's verified-token cache, if it keeps one.
    pub cache: Option<&'a TokenCache>,
}

impl<'a, E> Inputs<'a, E> {
    pub fn new(epochs: &'a E, status: Option<&'a SyncStatus>, now_ms: u64) -> Self {
        Self {
            epochs,
            status,
            now_ms,
            remote_keys: None,
            verified_claims: None,
            cache: None,
        }
    }
}

/// How a deny is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// 401/503 JSON with `WWW-Authenticate`.
    Api,
    /// 302 to the login page with the session cookie cleared (when `login_url` is set).
    Web,
    /// gRPC trailers-only: `grpc-status` 16 (UNAUTHENTICATED), 14 (UNAVAILABLE) or 13
    /// (INTERNAL).
    Grpc,
}

/// The compiled config plus a signature verifier: everything a decision needs besides
/// the request, the epochs and the time.
#[derive(Debug, Clone)]
pub struct Engine<V = PureRustVerifier> {
    config: Config,
    verifier: V,
}

#[cfg(feature = "pure-rust")]
impl Engine<PureRustVerifier> {
    /// Every algorithm in pure Rust (feature `pure-rust`): no key can be refused.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            verifier: PureRustVerifier,
        }
    }
}

/// The first phase of a decision ([`Engine::begin`]): finished, or waiting for one
/// signature check.
#[derive(Debug)]
pub enum Step<'a> {
    Done(Decision),
    Verify(PendingSignature<'a>),
}

/// A token whose signature must be checked before its request can be decided: the host
/// checks it — at once with the engine's [`SignatureVerifier`] ([`Engine::decide_with`]),
/// or asynchronously (the Worker's WebCrypto) — and hands the verdict to
/// [`Engine::finish`], which applies every rule after it. One decision flow, split at the
/// only step a host may need to wait for.
pub struct PendingSignature<'a> {
    keys: Vec<VerificationKey>,
    token: &'a str,
    parsed: ParsedToken<'a>,
    req: RequestInfo<'a>,
    route: Option<&'a Route>,
    edits: Vec<HeaderEdit>,
}

/// Never prints the token (a bearer credential).
impl std::fmt::Debug for PendingSignature<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSignature")
            .field("alg", &self.parsed.alg)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl PendingSignature<'_> {
    /// The keys to try, in order: the signature is good if any of them verifies it (one
    /// key when the token names its `kid`).
    pub fn keys(&self) -> &[VerificationKey] {
        &self.keys
    }

    /// `header.payload`, exactly as received.
    pub fn signing_input(&self) -> &[u8] {
        self.parsed.signing_input.as_bytes()
    }

    /// The signature, base64url-decoded (for ECDSA the raw `r || s` of RFC 7518 §3.4).
    pub fn signature(&self) -> &[u8] {
        &self.parsed.signature
    }

    /// The verdict of `verifier`: whether any of the keys verifies the signature.
    pub fn verify_with(&self, verifier: &impl SignatureVerifier) -> bool {
        self.keys
            .iter()
            .any(|k| verifier.verify(k, self.signing_input(), self.signature()))
    }
}

/// The rule a request's path gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRule<'a> {
    /// The longest route prefix the path lies under.
    Route(&'a Route),
    /// No route: the global `require_token`.
    Default,
    /// No single reading (see [`crate::path`]): the strictest rule — a token required, no
    /// exemption, the response shaped by the request alone (never by a route's `web`).
    Ambiguous(Ambiguous),
}

impl<'a> PathRule<'a> {
    pub fn route(self) -> Option<&'a Route> {
        match self {
            PathRule::Route(r) => Some(r),
            _ => None,
        }
    }
}

impl<V: AlgorithmSupport> Engine<V> {
    /// An engine whose signatures `verifier` checks: a configured key whose algorithm it
    /// cannot check is refused here (the error names the key), never on a request.
    pub fn with_verifier(config: Config, verifier: V) -> Result<Self, ConfigError> {
        for (i, key) in config.keys.keys().iter().enumerate() {
            verifier
                .supports(key.alg)
                .map_err(|why| ConfigError::new(format!("keys[{i}].alg"), why))?;
        }
        Ok(Self { config, verifier })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn verifier(&self) -> &V {
        &self.verifier
    }

    /// Verifies a token (signature and claims) without looking at revocations.
    pub fn verify_token(&self, token: &str, now_ms: u64) -> Result<Identity, TokenError>
    where
        V: SignatureVerifier,
    {
        self.verify_token_with(token, None, now_ms)
    }

    /// Verifies a token against the configured keys and, if given, the remote JWKS's.
    pub fn verify_token_with(
        &self,
        token: &str,
        remote: Option<&KeySet>,
        now_ms: u64,
    ) -> Result<Identity, TokenError>
    where
        V: SignatureVerifier,
    {
        let parsed = jwt::parse(token, self.config.max_token_bytes)?;
        jwt::verify_signature(&parsed, &self.config.keys, remote, &self.verifier)?;
        if let Some(want) = &self.config.require_typ {
            jwt::check_typ(&parsed, want)?;
        }
        validate(&parsed.claims, &self.config, now_ms)
    }

    /// The route rule for a path, if it gets one (none for the default and for an
    /// ambiguous path).
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.path_rule(path).route()
    }

    /// The rule a path gets: the longest route prefix it lies under once read as an app
    /// reads it ([`path::canonical`], segment boundaries), the default, or — when it has
    /// no single reading — [`PathRule::Ambiguous`]. Routes are matched case-sensitively
    /// unless `case_insensitive_routes`; then a path whose rule would change with its
    /// letter case is ambiguous too.
    pub fn path_rule(&self, raw: &str) -> PathRule<'_> {
        let config = &self.config;
        // With no routes and tokens required everywhere, every reading gets the same rule.
        if config.routes.is_empty() && config.require_token {
            return PathRule::Default;
        }
        let canonical = match path::canonical(raw) {
            Ok(p) => p,
            Err(why) => return PathRule::Ambiguous(why),
        };
        let ignoring_case = || {
            config
                .routes
                .iter()
                .position(|r| r.prefix.matches_ignoring_case(&canonical))
        };
        let found = if config.case_insensitive_routes {
            // The stems are in lower case.
            ignoring_case()
        } else {
            let exact = config
                .routes
                .iter()
                .position(|r| r.prefix.matches(&canonical));
            let upper = |s: &str| s.bytes().any(|b| b.is_ascii_uppercase());
            let case_matters =
                upper(&canonical) || config.routes.iter().any(|r| upper(&r.prefix.stem));
            if case_matters && ignoring_case() != exact {
                return PathRule::Ambiguous(Ambiguous::LetterCase);
            }
            exact
        };
        match found {
            Some(i) => PathRule::Route(&config.routes[i]),
            None => PathRule::Default,
        }
    }

    /// The decision for one request (verify mode, configured keys only).
    pub fn decide(
        &self,
        req: RequestInfo<'_>,
        epochs: &impl EpochSource,
        status: Option<&SyncStatus>,
        now_ms: u64,
    ) -> Decision
    where
        V: SignatureVerifier,
    {
        self.decide_with(req, &Inputs::new(epochs, status, now_ms))
    }

    /// The decision for one request, its signature checked at once by the engine's
    /// verifier: [`Engine::begin`] then, if a signature is pending, [`Engine::finish`].
    pub fn decide_with<E: EpochSource>(
        &self,
        req: RequestInfo<'_>,
        inputs: &Inputs<'_, E>,
    ) -> Decision
    where
        V: SignatureVerifier,
    {
        match self.begin(req, inputs) {
            Step::Done(decision) => decision,
            Step::Verify(pending) => {
                let verified = pending.verify_with(&self.verifier);
                self.finish(pending, verified, inputs)
            }
        }
    }

    /// A decision up to the signature check: done (an exempt route, a missing or
    /// ambiguous token, a malformed one or one no key can verify, a cached token, a
    /// `jwt_authn` payload), or the signature to check, for [`Engine::finish`].
    pub fn begin<'a, E: EpochSource>(
        &'a self,
        req: RequestInfo<'a>,
        inputs: &Inputs<'_, E>,
    ) -> Step<'a> {
        let rule = self.path_rule(req.path);
        let route = rule.route();
        let edits = match self.hygiene(req.headers) {
            Ok(edits) => edits,
            Err(carrier) => {
                return Step::Done(self.deny(
                    req,
                    route,
                    DenyReason::AmbiguousToken,
                    format!("{carrier} carries a credential no token source checks (unchecked_credentials: refuse)"),
                ))
            }
        };
        if route.is_some_and(|r| r.exempt) {
            return Step::Done(self.allow_anonymous(edits));
        }
        let require_token = match rule {
            PathRule::Route(r) => r.require_token,
            PathRule::Default => self.config.require_token,
            PathRule::Ambiguous(_) => true,
        };
        let why_required = || match rule {
            PathRule::Ambiguous(why) => {
                format!("no token in the request (a token is required: the path has {why})")
            }
            _ => "no token in the request".to_string(),
        };

        let identity = match &self.config.verification {
            Verification::Verify => {
                let token = match extract(&self.config.sources, req.headers) {
                    Ok(Some(token)) => token,
                    Ok(None) if require_token => {
                        return Step::Done(self.deny(req, route, DenyReason::MissingToken, why_required()))
                    }
                    Ok(None) => return Step::Done(self.allow_anonymous(edits)),
                    Err(e @ ExtractError::Ambiguous(_)) => {
                        return Step::Done(self.deny(req, route, DenyReason::AmbiguousToken, e.to_string()))
                    }
                    Err(e @ ExtractError::Malformed(_)) => {
                        return Step::Done(self.deny(req, route, DenyReason::InvalidToken, e.to_string()))
                    }
                };
                match inputs.cache.and_then(|c| c.get(token, inputs.now_ms)) {
                    Some(identity) => identity,
                    None => {
                        let keys = jwt::parse(token, self.config.max_token_bytes).and_then(|parsed| {
                            let keys = jwt::candidate_keys(&parsed, &self.config.keys, inputs.remote_keys)?;
                            Ok((keys.into_iter().cloned().collect(), parsed))
                        });
                        return match keys {
                            Ok((keys, parsed)) => Step::Verify(PendingSignature { keys, token, parsed, req, route, edits }),
                            Err(e @ TokenError::UnknownKid(_)) if self.config.remote_jwks => {
                                Step::Done(self.deny(req, route, DenyReason::UnknownKey, e.to_string()))
                            }
                            Err(e) => Step::Done(self.deny(req, route, DenyReason::from(&e), e.to_string())),
                        };
                    }
                }
            }
            Verification::JwtAuthnMetadata { .. } => match inputs.verified_claims {
                Some(claims) => match validate(claims, &self.config, inputs.now_ms) {
                    Ok(identity) => identity,
                    Err(e) => return Step::Done(self.deny(req, route, DenyReason::from(&e), e.to_string())),
                },
                None if require_token => {
                    return Step::Done(self.deny(
                        req,
                        route,
                        DenyReason::MissingToken,
                        "no jwt_authn payload in the dynamic metadata (is jwt_authn before this filter, with payload_in_metadata?)".into(),
                    ))
                }
                None => return Step::Done(self.allow_anonymous(edits)),
            },
        };
        Step::Done(self.conclude(req, route, edits, identity, inputs))
    }

    /// The rest of a decision once its signature was checked (`verified`): the claims
    /// (`exp`, `nbf`, `iss`, `aud`, the identity), the token cache, then the revocation
    /// rule as for every request.
    pub fn finish<E: EpochSource>(
        &self,
        pending: PendingSignature<'_>,
        verified: bool,
        inputs: &Inputs<'_, E>,
    ) -> Decision {
        let PendingSignature {
            token,
            parsed,
            req,
            route,
            edits,
            ..
        } = pending;
        let identity = if verified {
            match &self.config.require_typ {
                Some(want) => jwt::check_typ(&parsed, want),
                None => Ok(()),
            }
            .and_then(|()| validate(&parsed.claims, &self.config, inputs.now_ms))
        } else {
            Err(TokenError::Signature)
        };
        match identity {
            Ok(identity) => {
                if let Some(cache) = inputs.cache {
                    cache.insert(token, identity.clone());
                }
                self.conclude(req, route, edits, identity, inputs)
            }
            Err(e) => self.deny(req, route, DenyReason::from(&e), e.to_string()),
        }
    }

    /// A verified identity's decision: staleness, the revocation rule, the upstream's
    /// header edits.
    fn conclude<E: EpochSource>(
        &self,
        req: RequestInfo<'_>,
        route: Option<&Route>,
        mut edits: Vec<HeaderEdit>,
        identity: Identity,
        inputs: &Inputs<'_, E>,
    ) -> Decision {
        let now_ms = inputs.now_ms;
        // What the edge holds is enforced whether or not it is stale: stale means "what
        // changed since the last sync is unknown", not "what is known is void".
        let mut response_headers = Vec::new();
        match self.judge(&identity, inputs.epochs, inputs.status, now_ms) {
            Ok(logout_at) => {
                if let Some(at_ms) = logout_at {
                    response_headers.push((LOGOUT_AT_HEADER.to_string(), rfc3339(at_ms)));
                }
            }
            Err((reason, detail)) => return self.deny(req, route, reason, detail),
        }
        let stale = SyncStatus::is_stale(inputs.status, now_ms, self.config.max_staleness_s);
        if stale && self.config.on_stale == OnStale::Deny {
            let age = inputs.status.map_or_else(
                || "never synced".to_string(),
                |s| format!("last sync {} ms ago", now_ms.saturating_sub(s.synced_at_ms)),
            );
            return self.deny(
                req,
                route,
                DenyReason::StateUnavailable,
                format!("revocation state is stale: {age}"),
            );
        }

        for (name, value) in self.upstream_headers(&identity) {
            edits.push(HeaderEdit::Set(name.to_string(), value.as_bytes().to_vec()));
        }
        Decision::Allow {
            identity: Some(identity),
            stale,
            request_edits: edits,
            response_headers,
        }
    }

    /// The session rules for a verified identity: the horizon (`session_expired`), then
    /// the revocation rule. `Ok` carries the earliest scheduled logout that applies to it,
    /// to announce; `Err` the deny reason and the detail for the log.
    fn judge(
        &self,
        identity: &Identity,
        epochs: &impl EpochSource,
        status: Option<&SyncStatus>,
        now_ms: u64,
    ) -> Result<Option<u64>, (DenyReason, String)> {
        let margin_s = self.config.clock_margin_s;
        if let Some(status) = status {
            if session_expired(identity.session_start, now_ms, status.horizon_s, margin_s) {
                return Err((
                    DenyReason::SessionExpired,
                    format!(
                        "session of user {:?} (tenant {:?}) started at {} s, more than the {} s horizon ago",
                        identity.user, identity.tenant, identity.session_start, status.horizon_s
                    ),
                ));
            }
        }
        match check_revocation(epochs, identity, now_ms, margin_s) {
            Ok(logout_at) => Ok(logout_at),
            Err(Revoked::Epoch { epoch_ms }) => Err((
                DenyReason::SessionRevoked,
                format!(
                    "session of user {:?} (tenant {:?}{}) started at {} s, at or before epoch {} ms",
                    identity.user,
                    identity.tenant,
                    identity
                        .actors
                        .first()
                        .map(|a| format!(", acting: {:?}", a.user))
                        .unwrap_or_default(),
                    identity.session_start,
                    epoch_ms
                ),
            )),
            Err(Revoked::Session) => Err((
                DenyReason::SessionRevoked,
                format!(
                    "session {:?} of tenant {:?} is revoked",
                    identity.session.as_deref().unwrap_or_default(),
                    identity.tenant
                ),
            )),
            Err(Revoked::Unreadable) => Err((
                DenyReason::StateUnavailable,
                "the revocation state could not be read (a host call failed)".into(),
            )),
        }
    }

    /// Re-checks a verified identity (a long-lived stream after its request was
    /// allowed): `Err(reason)` once its session is over; `Ok(next)` with the time at
    /// which it must be checked again even if the state does not change (a scheduled
    /// logout's `at`, the session's end by the horizon), if any.
    pub fn recheck(
        &self,
        identity: &Identity,
        epochs: &impl EpochSource,
        status: Option<&SyncStatus>,
        now_ms: u64,
    ) -> Result<Option<u64>, DenyReason> {
        let logout_at = self
            .judge(identity, epochs, status, now_ms)
            .map_err(|(reason, _)| reason)?;
        let end = status.map(|s| {
            session_end_ms(
                identity.session_start,
                s.horizon_s,
                self.config.clock_margin_s,
            )
        });
        Ok(match (logout_at, end) {
            (Some(a), Some(e)) => Some(a.min(e)),
            (a, e) => a.or(e),
        })
    }

    /// Whether an incoming header is one the filter sets for the upstream: such headers
    /// are stripped from every request first, so a client cannot spoof them — in any
    /// case and `-`/`_` spelling (CGI-style apps read `X_Epochgate_User` as
    /// `x-epochgate-user`).
    pub fn is_reserved_header(&self, name: &str) -> bool {
        let h = &self.config.upstream_headers;
        header_name_starts_with(name, "x-epochgate-")
            || [&h.user, &h.tenant, &h.session, &h.actor]
                .iter()
                .any(|x| same_header_name(name, x))
    }

    /// Whether an incoming header carries a credential no token source reads: a
    /// `credential_headers` entry, or another spelling (`-`/`_`) of a token header.
    pub fn is_unchecked_header(&self, name: &str) -> bool {
        let c = &self.config;
        c.unchecked_headers
            .iter()
            .any(|h| same_header_name(name, h))
            || c.sources.iter().any(|s| {
                matches!(s, TokenSource::Header { name: h, .. }
                    if same_header_name(name, h) && !name.eq_ignore_ascii_case(h))
            })
    }

    /// Header hygiene, whatever the decision: the edits that remove spoofed identity
    /// headers, credentials no token source checks (`unchecked_credentials: strip`) and,
    /// with `strip_token`, the token — its header, and every cookie an app may read as
    /// the session cookie. `Err(what)` names an unchecked carrier under
    /// `unchecked_credentials: refuse`.
    fn hygiene(&self, headers: &Headers) -> Result<Vec<HeaderEdit>, String> {
        let c = &self.config;
        let mut edits: Vec<HeaderEdit> = Vec::new();
        let remove = |name: &str, edits: &mut Vec<HeaderEdit>| {
            if !edits
                .iter()
                .any(|e| matches!(e, HeaderEdit::Remove(n) if n == name))
            {
                edits.push(HeaderEdit::Remove(name.to_string()));
            }
        };
        // Pseudo-headers (`:path`, …) are never spoofed identity or a credential.
        for (name, _) in headers.iter().filter(|(n, _)| !n.starts_with(':')) {
            if self.is_reserved_header(name) {
                remove(name, &mut edits);
            } else if self.is_unchecked_header(name) {
                match c.unchecked_credentials {
                    UncheckedCredentials::Refuse => return Err(format!("header `{name}`")),
                    UncheckedCredentials::Strip => remove(name, &mut edits),
                    UncheckedCredentials::Pass => {}
                }
            } else if c.strip_token
                && c.sources.iter().any(|s| {
                    matches!(s, TokenSource::Header { name: h, .. } if name.eq_ignore_ascii_case(h))
                })
            {
                remove(name, &mut edits);
            }
        }
        let strip_unchecked = match c.unchecked_credentials {
            UncheckedCredentials::Refuse => {
                if let Some(u) = c
                    .unchecked_cookies
                    .iter()
                    .find(|u| token::has_cookie(headers, u))
                {
                    return Err(format!("cookie `{}`", u.name()));
                }
                false
            }
            UncheckedCredentials::Strip => !c.unchecked_cookies.is_empty(),
            UncheckedCredentials::Pass => false,
        };
        let strip_cookie = c.strip_token && c.cookie_source().is_some();
        if strip_unchecked || strip_cookie {
            let drop = |raw: &[u8]| {
                (strip_unchecked && c.unchecked_cookies.iter().any(|u| u.is_read_as(raw)))
                    || (strip_cookie
                        && c.sources.iter().any(|s| {
                            matches!(s, TokenSource::Cookie { canonical, .. } if canonical.is_read_as(raw))
                        }))
            };
            if let Some(kept) = token::cookies_without(headers, drop) {
                edits.push(if kept.is_empty() {
                    HeaderEdit::Remove("cookie".into())
                } else {
                    HeaderEdit::Set("cookie".into(), kept)
                });
            }
        }
        Ok(edits)
    }

    /// An allowed request without a verified identity (exempt, or no token where none
    /// was required).
    fn allow_anonymous(&self, edits: Vec<HeaderEdit>) -> Decision {
        Decision::Allow {
            identity: None,
            stale: false,
            request_edits: edits,
            response_headers: Vec::new(),
        }
    }

    /// The identity headers for the upstream.
    pub fn upstream_headers<'a>(&'a self, identity: &'a Identity) -> Vec<(&'a str, &'a str)> {
        let h = &self.config.upstream_headers;
        let mut out = vec![
            (h.user.as_str(), identity.user.as_str()),
            (h.tenant.as_str(), identity.tenant.as_str()),
        ];
        if let Some(sid) = &identity.session {
            out.push((h.session.as_str(), sid.as_str()));
        }
        if let Some(actor) = identity.actors.first() {
            out.push((h.actor.as_str(), actor.user.as_str()));
        }
        out
    }

    fn response_kind(&self, req: RequestInfo<'_>, route: Option<&Route>) -> ResponseKind {
        let header_has = |name: &str, needle: &[u8], prefix_only: bool| {
            req.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case(name)
                    && if prefix_only {
                        v.len() >= needle.len() && v[..needle.len()].eq_ignore_ascii_case(needle)
                    } else {
                        v.windows(needle.len())
                            .any(|w| w.eq_ignore_ascii_case(needle))
                    }
            })
        };
        if header_has("content-type", b"application/grpc", true) {
            return ResponseKind::Grpc;
        }
        let web = route
            .and_then(|r| r.web)
            .unwrap_or_else(|| header_has("accept", b"text/html", false));
        if web {
            ResponseKind::Web
        } else {
            ResponseKind::Api
        }
    }

    /// Web (302 to the login page) or API (401 JSON) or gRPC, for a request.
    pub fn is_web_request(&self, req: RequestInfo<'_>) -> bool {
        self.response_kind(req, self.route_for(req.path)) == ResponseKind::Web
    }

    /// The response kind (web, API, gRPC) is worked out here, on the deny path only.
    fn deny(
        &self,
        req: RequestInfo<'_>,
        route: Option<&Route>,
        reason: DenyReason,
        detail: String,
    ) -> Decision {
        let kind = self.response_kind(req, route);
        Decision::Deny {
            reason,
            detail,
            response: self.deny_response(reason, kind),
        }
    }

    /// The response for a deny reason. Web requests whose session is over go to the
    /// login page with the session cookie cleared; retryable reasons (503) never do, so a
    /// key rotation or a control-plane outage logs no one out.
    pub fn deny_response(&self, reason: DenyReason, kind: ResponseKind) -> Response {
        if kind == ResponseKind::Grpc {
            // UNAVAILABLE (retry), INTERNAL (a host failure), UNAUTHENTICATED.
            let status: u32 = match reason.status() {
                503 => 14,
                500 => 13,
                _ => 16,
            };
            return Response {
                status: 200,
                headers: vec![
                    ("content-type".into(), "application/grpc".into()),
                    ("grpc-status".into(), status.to_string()),
                    ("grpc-message".into(), reason.code().into()),
                ],
                body: Vec::new(),
                grpc_status: Some(status),
                grpc_message: Some(reason.code().into()),
            };
        }
        let mut headers = vec![("cache-control".to_string(), "no-store".to_string())];
        if let (ResponseKind::Web, false, Some(login)) =
            (kind, reason.is_retryable(), &self.config.login_url)
        {
            let sep = if login.contains('?') { '&' } else { '?' };
            headers.push((
                "location".into(),
                format!("{login}{sep}reason={}", reason.code()),
            ));
            if let Some(cookie) = self.clearing_cookie() {
                headers.push(("set-cookie".into(), cookie));
            }
            return Response {
                status: 302,
                headers,
                body: Vec::new(),
                grpc_status: None,
                grpc_message: None,
            };
        }
        let status = reason.status();
        headers.push(("content-type".into(), "application/json".into()));
        match reason {
            DenyReason::UnknownKey => headers.push(("retry-after".into(), "1".into())),
            DenyReason::StateUnavailable => headers.push(("retry-after".into(), "5".into())),
            // Not the token's fault: no WWW-Authenticate challenge.
            DenyReason::InternalError => headers.push(("retry-after".into(), "1".into())),
            // RFC 6750 §3.1: no error code when the request carried no credentials.
            DenyReason::MissingToken => headers.push(("www-authenticate".into(), "Bearer".into())),
            _ => {
                let code = if reason == DenyReason::AmbiguousToken {
                    "invalid_request"
                } else {
                    "invalid_token"
                };
                headers.push((
                    "www-authenticate".into(),
                    format!(
                        "Bearer error=\"{code}\", error_description=\"{}\"",
                        reason.description()
                    ),
                ));
            }
        }
        Response {
            status,
            headers,
            body: format!("{{\"error\":\"{}\"}}", reason.code()).into_bytes(),
            grpc_status: None,
            grpc_message: None,
        }
    }

    /// A `Set-Cookie` that clears the session cookie, repeating its `Path` and `Domain`
    /// (a cookie is only replaced by one with the same name, path and domain).
    fn clearing_cookie(&self) -> Option<String> {
        let TokenSource::Cookie {
            name,
            path,
            domain,
            secure,
            ..
        } = self.config.cookie_source()?
        else {
            return None;
        };
        let mut c = format!("{name}=; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT");
        c.push_str(&format!("; Path={}", path.as_deref().unwrap_or("/")));
        if let Some(domain) = domain {
            c.push_str(&format!("; Domain={domain}"));
        }
        if *secure {
            c.push_str("; Secure");
        }
        c.push_str("; HttpOnly; SameSite=Lax");
        Some(c)
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC (`2026-11-28T21:00:00Z`), whole
/// seconds.
pub fn rfc3339(ms: u64) -> String {
    let (y, mo, d, h, mi, se) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}Z")
}

/// Like [`rfc3339`], with milliseconds (`2026-11-28T21:00:00.123Z`).
pub fn rfc3339_millis(ms: u64) -> String {
    let (y, mo, d, h, mi, se) = civil(ms);
    format!(
        "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{se:02}.{:03}Z",
        ms % 1000
    )
}

/// `(year, month, day, hour, minute, second)` in UTC: civil-from-days (H. Hinnant's
/// algorithm; no date library in the wasm).
fn civil(ms: u64) -> (i64, i64, i64, u64, u64, u64) {
    let secs = ms / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The days of `month` (1–12) in `year` (proleptic Gregorian).
fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// Parses an RFC 3339 date-time (`2026-11-29T02:00:00Z`, `…T03:00:00.5+01:00`) into
/// milliseconds since the Unix epoch; `None` if malformed, an impossible date or time,
/// or before 1970. (The control plane parses with the `time` crate; this one is for the
/// wasm edges, which keep their own to stay small.)
pub fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    // A day that does not exist (`2026-11-31`, `2026-02-29`) is refused, not rolled
    // over into the next month; so is a leap second (Unix time has none).
    if !(1..=12).contains(&month)
        || !(1..=days_in_month(year, month)).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        millis = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    }
    let offset_s = match s.get(i..)? {
        "Z" | "z" => 0,
        tz if tz.len() == 6
            && matches!(tz.as_bytes()[0], b'+' | b'-')
            && tz.as_bytes()[3] == b':' =>
        {
            let (h, m) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            let sign = if tz.as_bytes()[0] == b'-' { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // days-from-civil (H. Hinnant)
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    u64::try_from(secs * 1000 + millis).ok()
}

#[cfg(test)]
mod tests {
    use super::{parse_rfc3339, rfc3339};

    #[test]
    fn rfc3339_parses_and_round_trips() {
        for ms in [0u64, 951_782_400_000, 1_795_902_328_000, 1_800_000_000_000] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2027-01-15T09:00:00+01:00"),
            Some(1_800_000_000_000)
        );
        assert_eq!(
            parse_rfc3339("2027-01-15T08:00:00.25Z"),
            Some(1_800_000_000_250)
        );
        // Leap days where they exist, and every month's last day.
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z"),
            Some(1_709_164_800_000)
        );
        assert_eq!(parse_rfc3339("2000-02-29T00:00:00Z"), Some(951_782_400_000));
        for (m, last) in [
            (1, 31),
            (2, 28),
            (3, 31),
            (4, 30),
            (5, 31),
            (6, 30),
            (7, 31),
            (8, 31),
            (9, 30),
            (10, 31),
            (11, 30),
            (12, 31),
        ] {
            let ok = format!("2026-{m:02}-{last:02}T12:00:00Z");
            let bad = format!("2026-{m:02}-{:02}T12:00:00Z", last + 1);
            assert!(parse_rfc3339(&ok).is_some(), "{ok}");
            assert_eq!(parse_rfc3339(&bad), None, "{bad}");
            // What the parser accepts, the formatter writes back the same.
            assert_eq!(rfc3339(parse_rfc3339(&ok).unwrap()), ok);
        }
        for bad in [
            "",
            "2027-01-15",
            "2027-13-01T00:00:00Z",
            "2027-01-15T08:00:00",
            "2027-01-15T08:00:00+1:00",
            "1969-12-31T23:59:59Z",
            "2027-01-15T08:00:0xZ",
            "2026-11-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2100-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-00-10T00:00:00Z",
            "2026-01-00T00:00:00Z",
            "2026-12-31T23:59:60Z",
            "2026-12-31T24:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_800_000_000_000), "2027-01-15T08:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_902_328_599), "2026-11-28T21:45:28Z");
    }
}
