//! The decision: allow (with the verified identity) or deny (with the response already
//! shaped). The glue maps it to `Action::Continue` / `send_http_response` (filter) or a
//! `Response` (worker).

use crate::claims::{validate, Identity};
use crate::config::{Config, OnStale, TokenSource};
use crate::jwt::{self, PureRustVerifier, SignatureVerifier, TokenError};
use crate::state::{check_revocation, EpochSource, Revoked};
use crate::sync::SyncStatus;
use crate::token::{extract, ExtractError, Headers};

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
    /// No sync yet, or the last one older than `max_staleness_s`, with `on_stale: deny`.
    StateUnavailable,
}

impl DenyReason {
    pub const ALL: [DenyReason; 8] = [
        DenyReason::MissingToken,
        DenyReason::InvalidToken,
        DenyReason::AmbiguousToken,
        DenyReason::UnknownKey,
        DenyReason::TokenExpired,
        DenyReason::TokenNotYetValid,
        DenyReason::SessionRevoked,
        DenyReason::StateUnavailable,
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
            DenyReason::StateUnavailable => "state_unavailable",
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
            DenyReason::StateUnavailable => "revocation state unavailable",
        }
    }

    /// Whether the client should retry rather than sign in again (503).
    pub fn is_retryable(self) -> bool {
        matches!(self, DenyReason::UnknownKey | DenyReason::StateUnavailable)
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
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Pass it on. `identity` is `None` only when no token was required and none came;
    /// `signature_only` is set when the state was stale and `on_stale: allow` let it by
    /// without the revocation check.
    Allow {
        identity: Option<Identity>,
        signature_only: bool,
    },
    /// Answer with `response`; `detail` is for the log, never for the client.
    Deny {
        reason: DenyReason,
        detail: String,
        response: Response,
    },
}

/// The per-request inputs besides the headers.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    /// Lower-case names; may include HTTP/2 pseudo-headers such as `:path`.
    pub headers: &'a Headers,
    /// The request path (query included or not).
    pub path: &'a str,
}

/// The compiled config plus a signature verifier: everything a decision needs besides
/// the request, the epochs and the time.
#[derive(Debug, Clone)]
pub struct Engine<V = PureRustVerifier> {
    config: Config,
    verifier: V,
}

impl Engine<PureRustVerifier> {
    pub fn new(config: Config) -> Self {
        Self::with_verifier(config, PureRustVerifier)
    }
}

impl<V: SignatureVerifier> Engine<V> {
    pub fn with_verifier(config: Config, verifier: V) -> Self {
        Self { config, verifier }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Verifies a token (signature and claims) without looking at revocations.
    pub fn verify_token(&self, token: &str, now_ms: u64) -> Result<Identity, TokenError> {
        let parsed = jwt::parse(token, self.config.max_token_bytes)?;
        jwt::verify_signature(&parsed, &self.config.keys, &self.verifier)?;
        validate(&parsed.claims, &self.config, now_ms)
    }

    /// The decision for one request.
    pub fn decide(
        &self,
        req: RequestInfo<'_>,
        epochs: &impl EpochSource,
        status: Option<&SyncStatus>,
        now_ms: u64,
    ) -> Decision {
        let token = match extract(&self.config.sources, req.headers) {
            Ok(Some(token)) => token,
            Ok(None) => {
                return self.deny(
                    req,
                    DenyReason::MissingToken,
                    "no token in the request".into(),
                )
            }
            Err(e @ ExtractError::Ambiguous(_)) => {
                return self.deny(req, DenyReason::AmbiguousToken, e.to_string())
            }
            Err(e @ ExtractError::Malformed(_)) => {
                return self.deny(req, DenyReason::InvalidToken, e.to_string())
            }
        };
        let identity = match self.verify_token(token, now_ms) {
            Ok(identity) => identity,
            Err(e) => return self.deny(req, DenyReason::from(&e), e.to_string()),
        };
        if SyncStatus::is_stale(status, now_ms, self.config.max_staleness_s) {
            let age = status.map_or_else(
                || "never synced".to_string(),
                |s| format!("last sync {} ms ago", now_ms.saturating_sub(s.synced_at_ms)),
            );
            return match self.config.on_stale {
                OnStale::Deny => self.deny(
                    req,
                    DenyReason::StateUnavailable,
                    format!("revocation state is stale: {age}"),
                ),
                OnStale::Allow => Decision::Allow {
                    identity: Some(identity),
                    signature_only: true,
                },
            };
        }
        match check_revocation(
            epochs,
            &identity.tenant,
            &identity.user,
            identity.session.as_deref(),
            identity.session_start,
            self.config.clock_margin_s,
        ) {
            Ok(()) => Decision::Allow {
                identity: Some(identity),
                signature_only: false,
            },
            Err(Revoked::Epoch { epoch_ms }) => self.deny(
                req,
                DenyReason::SessionRevoked,
                format!(
                    "session of user {:?} (tenant {:?}) started at {} s, at or before epoch {} ms",
                    identity.user, identity.tenant, identity.session_start, epoch_ms
                ),
            ),
            Err(Revoked::Session) => self.deny(
                req,
                DenyReason::SessionRevoked,
                format!(
                    "session {:?} of tenant {:?} is revoked",
                    identity.session.unwrap_or_default(),
                    identity.tenant
                ),
            ),
        }
    }

    /// Whether an incoming header is one the filter sets for the upstream: such headers
    /// are stripped from every request first, so a client cannot spoof them.
    pub fn is_reserved_header(&self, name: &str) -> bool {
        let h = &self.config.upstream_headers;
        name.len() >= 12 && name[..12].eq_ignore_ascii_case("x-epochgate-")
            || [&h.user, &h.tenant, &h.session]
                .iter()
                .any(|x| name.eq_ignore_ascii_case(x))
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
        out
    }

    /// Web (302 to the login page) or API (401 JSON): by path prefix, or `Accept: text/html`.
    pub fn is_web_request(&self, req: RequestInfo<'_>) -> bool {
        let path = req.path.split('?').next().unwrap_or_default();
        self.config
            .web_path_prefixes
            .iter()
            .any(|p| path.starts_with(p.as_str()))
            || req.headers.iter().any(|(n, v)| {
                n.eq_ignore_ascii_case("accept")
                    && v.windows(9).any(|w| w.eq_ignore_ascii_case(b"text/html"))
            })
    }

    fn deny(&self, req: RequestInfo<'_>, reason: DenyReason, detail: String) -> Decision {
        let web = self.is_web_request(req);
        Decision::Deny {
            reason,
            detail,
            response: self.deny_response(reason, web),
        }
    }

    /// The response for a deny reason. Web requests whose session is over go to the
    /// login page with the session cookie cleared; retryable reasons (503) never do, so a
    /// key rotation or a control-plane outage logs no one out.
    pub fn deny_response(&self, reason: DenyReason, web: bool) -> Response {
        let mut headers = vec![("cache-control".to_string(), "no-store".to_string())];
        if let (true, false, Some(login)) = (web, reason.is_retryable(), &self.config.login_url) {
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
            };
        }
        let status = if reason.is_retryable() { 503 } else { 401 };
        headers.push(("content-type".into(), "application/json".into()));
        match reason {
            DenyReason::UnknownKey => headers.push(("retry-after".into(), "1".into())),
            DenyReason::StateUnavailable => headers.push(("retry-after".into(), "5".into())),
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
