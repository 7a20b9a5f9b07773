//! Console sign-in sessions, kept on the server.
//!
//! The browser holds only a random session id in an `HttpOnly`, `SameSite=Strict`
//! cookie scoped to `/console` (`Secure` unless the console is reached on a loopback
//! host). The server keeps, per session, the credential the admin signed in with (never
//! sent back to the browser, never in a URL), the session's CSRF token, and a one-shot
//! message for the next page (an action's receipt). Every request authenticates the
//! credential again ([`crate::rbac::Credentials::authenticate`]): an admin JWT that
//! expired ends the console session, and RBAC is the API's on every page.
//!
//! A session ends after `--console-idle` without a request, after [`MAX_LIFETIME`] in
//! any case, and on sign-out. Sessions live in this replica's memory: behind several
//! replicas, route a console user to one (sticky sessions) or they sign in again.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::header::{COOKIE, HOST};
use axum::http::HeaderMap;

use crate::auth::Secret;

/// The session cookie.
pub const COOKIE_NAME: &str = "epochgate_console";

/// The sign-in form's CSRF cookie (double submit: there is no session yet), also binding
/// an IdP sign-in to the browser that started it.
pub const LOGIN_COOKIE: &str = "epochgate_console_login";

/// The longest a console session lives, however active.
pub const MAX_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Sessions kept at most (then expired ones are pruned; if none, sign-in is refused).
pub const MAX_SESSIONS: usize = 10_000;

/// A message for the next page: an action's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
    /// The propagation receipt, when the action waited for the edges.
    pub receipt: Option<String>,
}

#[derive(Debug)]
struct Session {
    credential: String,
    csrf: String,
    created_ms: u64,
    last_ms: u64,
    flash: Option<Flash>,
}

/// A signed-in session as a request sees it.
#[derive(Debug, Clone)]
pub struct Current {
    /// The session's key (the digest of its cookie value).
    pub key: [u8; 32],
    pub credential: String,
    pub csrf: String,
}

/// Every console session of this replica, and the IdP sign-ins in progress.
#[derive(Debug, Default)]
pub struct ConsoleSessions {
    sessions: Mutex<HashMap<[u8; 32], Session>>,
    pending: Mutex<HashMap<String, super::oidc::Pending>>,
    endpoints: Mutex<Option<(super::oidc::Endpoints, u64)>>,
}

/// How long the IdP's discovery document is kept.
const DISCOVERY_TTL_MS: u64 = 3600 * 1000;

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 32 random bytes as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // Without randomness no token is made: the caller refuses the sign-in.
    if getrandom::getrandom(&mut bytes).is_err() {
        return String::new();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_of(id: &str) -> [u8; 32] {
    Secret::new(id).digest()
}

/// Whether two tokens are equal, in time independent of where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty() && Secret::new(a).matches(b)
}

impl ConsoleSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        locked(&self.sessions)
    }

    /// Starts a session for `credential`; returns the cookie value, or `None` when no
    /// randomness is available or the table is full of live sessions.
    pub fn start(&self, credential: String, now_ms: u64, idle: Duration) -> Option<String> {
        let id = random_token();
        let csrf = random_token();
        if id.is_empty() || csrf.is_empty() {
            return None;
        }
        let mut sessions = self.lock();
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| alive(s, now_ms, idle));
            if sessions.len() >= MAX_SESSIONS {
                return None;
            }
        }
        sessions.insert(
            key_of(&id),
            Session {
                credential,
                csrf,
                created_ms: now_ms,
                last_ms: now_ms,
                flash: None,
            },
        );
        Some(id)
    }

    /// The session of cookie value `id`, if it is alive (and marks it used).
    pub fn current(&self, id: &str, now_ms: u64, idle: Duration) -> Option<Current> {
        let key = key_of(id);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if !alive(session, now_ms, idle) {
            sessions.remove(&key);
            return None;
        }
        session.last_ms = now_ms;
        Some(Current {
            key,
            credential: session.credential.clone(),
            csrf: session.csrf.clone(),
        })
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, key: &[u8; 32], flash: Flash) {
        if let Some(s) = self.lock().get_mut(key) {
            s.flash = Some(flash);
        }
    }

    /// Takes the session's message, if any.
    pub fn take_flash(&self, key: &[u8; 32]) -> Option<Flash> {
        self.lock().get_mut(key).and_then(|s| s.flash.take())
    }

    /// Ends a session.
    pub fn end(&self, key: &[u8; 32]) {
        self.lock().remove(key);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Keeps a started IdP sign-in under its `state` (dropping expired ones; at most
    /// [`super::oidc::MAX_PENDING`], the oldest going first).
    pub fn add_pending(&self, state: String, pending: super::oidc::Pending) {
        let mut p = locked(&self.pending);
        let now = pending.created_ms;
        p.retain(|_, v| now.saturating_sub(v.created_ms) < super::oidc::PENDING_TTL_MS);
        if p.len() >= super::oidc::MAX_PENDING {
            if let Some(oldest) = p
                .iter()
                .min_by_key(|(_, v)| v.created_ms)
                .map(|(k, _)| k.clone())
            {
                p.remove(&oldest);
            }
        }
        p.insert(state, pending);
    }

    /// Takes the sign-in of `state` (once), if it has not expired.
    pub fn take_pending(&self, state: &str, now_ms: u64) -> Option<super::oidc::Pending> {
        locked(&self.pending)
            .remove(state)
            .filter(|p| now_ms.saturating_sub(p.created_ms) < super::oidc::PENDING_TTL_MS)
    }

    pub fn oidc_endpoints(&self, now_ms: u64) -> Option<super::oidc::Endpoints> {
        locked(&self.endpoints)
            .as_ref()
            .filter(|(_, at)| now_ms.saturating_sub(*at) < DISCOVERY_TTL_MS)
            .map(|(e, _)| e.clone())
    }

    pub fn set_oidc_endpoints(&self, e: super::oidc::Endpoints, now_ms: u64) {
        *locked(&self.endpoints) = Some((e, now_ms));
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn alive(s: &Session, now_ms: u64, idle: Duration) -> bool {
    let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
    let max_ms = u64::try_from(MAX_LIFETIME.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(s.last_ms) < idle_ms && now_ms.saturating_sub(s.created_ms) < max_ms
}

/// The value of cookie `name` in the request, if sent once (a cookie sent twice is
/// ambiguous and ignored).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((k, v)) = pair.trim().split_once('=') {
                if k.trim() == name {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(v.trim().to_string());
                }
            }
        }
    }
    found
}

/// Whether the request reached the console on a loopback host (`localhost`,
/// `127.0.0.0/8`, `[::1]`): the only case where its cookies go without `Secure`.
pub fn on_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A `Set-Cookie` value for the console: `HttpOnly`, `SameSite=Strict`, `Path=/console`,
/// `Secure` unless on loopback; `max_age_s: Some(0)` deletes it.
pub fn set_cookie(name: &str, value: &str, secure: bool, max_age_s: Option<u64>) -> String {
    let mut c = format!("{name}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if secure {
        c.push_str("; Secure");
    }
    if let Some(age) = max_age_s {
        c.push_str(&format!("; Max-Age={age}"));
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const IDLE: Duration = Duration::from_secs(900);

    #[test]
    fn sessions_end_when_idle_or_too_old() {
        let s = ConsoleSessions::default();
        let id = s.start("cred".into(), 1_000, IDLE).unwrap();
        assert_eq!(id.len(), 64);
        let c = s.current(&id, 2_000, IDLE).unwrap();
        assert_eq!(c.credential, "cred");
        assert_eq!(c.csrf.len(), 64);
        assert!(s.current("other", 2_000, IDLE).is_none());
        assert!(s.current(&id, 2_000 + 900_000, IDLE).is_none(), "idle");
        assert!(s.is_empty(), "an expired session is forgotten");
        let id = s.start("cred".into(), 0, IDLE).unwrap();
        let mut t = 0;
        while t + 600_000 < MAX_LIFETIME.as_millis() as u64 {
            t += 600_000;
            assert!(s.current(&id, t, IDLE).is_some());
        }
        assert!(s
            .current(&id, MAX_LIFETIME.as_millis() as u64, IDLE)
            .is_none());
    }

    #[test]
    fn flashes_are_read_once() {
        let s = ConsoleSessions::default();
        let id = s.start("c".into(), 0, IDLE).unwrap();
        let key = s.current(&id, 0, IDLE).unwrap().key;
        s.set_flash(
            &key,
            Flash {
                ok: true,
                text: "done".into(),
                receipt: None,
            },
        );
        assert_eq!(s.take_flash(&key).unwrap().text, "done");
        assert!(s.take_flash(&key).is_none());
        s.end(&key);
        assert!(s.current(&id, 0, IDLE).is_none());
    }

    #[test]
    fn cookies_and_hosts() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("a=1; epochgate_console=abc"),
        );
        assert_eq!(cookie(&h, COOKIE_NAME).as_deref(), Some("abc"));
        h.append(COOKIE, HeaderValue::from_static("epochgate_console=def"));
        assert_eq!(cookie(&h, COOKIE_NAME), None, "twice is ambiguous");
        for (host, loopback) in [
            ("127.0.0.1:8080", true),
            ("localhost", true),
            ("[::1]:8080", true),
            ("console.example.com", false),
            ("10.0.0.1:8080", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(HOST, HeaderValue::from_str(host).unwrap());
            assert_eq!(on_loopback(&h), loopback, "{host}");
        }
        let c = set_cookie(COOKIE_NAME, "v", true, None);
        assert_eq!(
            c,
            "epochgate_console=v; Path=/console; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie(COOKIE_NAME, "", false, Some(0)).contains("Secure"));
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("", ""));
    }
}
