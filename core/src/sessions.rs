//! Sessions the edges see, reported to the control plane so that an admin can find a
//! user, see their devices and log them out (the console's Users page).
//!
//! A session is (tenant, user, `sid` — or, for a token without one, its session start),
//! with first/last seen, a request count, a short device summary and the client address.
//! Three pieces, all pure (time passed in), shared by the Envoy filter and the Worker:
//!
//! - [`SessionRecorder`]: on the request path, per filter VM (or isolate). Every allowed
//!   request costs one hash-map update; a sighting is handed on only when a session is
//!   first seen and then at most once per [`REPORT_EVERY_MS`] (with the requests counted
//!   meanwhile), so the User-Agent is summarized and the address formatted rarely.
//! - [`SessionBatch`]: merges sightings (from every filter VM of one Envoy, or from one
//!   isolate), bounded by [`MAX_PENDING`] sessions; past that, new ones are counted as
//!   dropped.
//! - [`SessionReporter`]: when to send (every `interval_ms`, one call at a time, at most
//!   [`MAX_BATCH`] sessions a call). A failed call loses its batch only: what arrives
//!   meanwhile waits for the next interval, and no request ever waits for a report.
//!
//! The wire type is [`SessionReport`], `POST`ed to [`report_path`] with the edge token.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::claims::Identity;
use crate::ids::{percent_encode, validate_id};

/// A session is reported at most this often by one recorder (and at once when new).
pub const REPORT_EVERY_MS: u64 = 60_000;

/// Sessions one recorder tracks at most; past that it hands on and forgets the
/// least recently seen half.
pub const MAX_TRACKED: usize = 10_000;

/// Sessions a [`SessionBatch`] holds at most between two reports.
pub const MAX_PENDING: usize = 20_000;

/// Sessions one report carries at most (the control plane refuses more).
pub const MAX_BATCH: usize = 500;

/// The longest device summary, in characters.
pub const MAX_DEVICE_CHARS: usize = 64;

/// The longest client address, in bytes (an IPv6 address with a prefix length fits).
pub const MAX_ADDRESS_BYTES: usize = 64;

/// One session as an edge saw it since its last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSeen {
    pub tenant: String,
    pub user: String,
    /// The token's session id; without one, [`SessionSeen::session_start`] names the
    /// session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// `auth_time`, else `iat` (seconds): what the revocation rule compares.
    pub session_start: i64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Requests since the previous report of this session.
    pub requests: u64,
    /// A short summary of the User-Agent ([`device_summary`]).
    pub device: String,
    /// The client address as the edge saw it, possibly truncated ([`client_address`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

/// What a session is keyed by: tenant, user, and the sid or (without one) the start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub tenant: String,
    pub user: String,
    pub session: SessionId,
}

/// The session part of a [`SessionKey`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SessionId {
    Sid(String),
    /// A token without `sid`: its session start (seconds).
    Start(i64),
}

impl SessionSeen {
    pub fn key(&self) -> SessionKey {
        SessionKey {
            tenant: self.tenant.clone(),
            user: self.user.clone(),
            session: match &self.sid {
                Some(sid) => SessionId::Sid(sid.clone()),
                None => SessionId::Start(self.session_start),
            },
        }
    }

    /// Whether the control plane can keep it: ids as every edge accepts them, a
    /// device summary and address within bounds, first seen not after last seen.
    pub fn validate(&self) -> Result<(), String> {
        validate_id(&self.tenant).map_err(|e| format!("`tenant` {e}"))?;
        validate_id(&self.user).map_err(|e| format!("`user` {e}"))?;
        if let Some(sid) = &self.sid {
            validate_id(sid).map_err(|e| format!("`sid` {e}"))?;
        }
        if self.device.chars().count() > MAX_DEVICE_CHARS
            || self.device.chars().any(char::is_control)
        {
            return Err(format!(
                "`device` must be at most {MAX_DEVICE_CHARS} characters without control characters"
            ));
        }
        if let Some(address) = &self.address {
            if address.len() > MAX_ADDRESS_BYTES || address.parse_prefix().is_none() {
                return Err("`address` is not an IP address (or prefix)".into());
            }
        }
        if self.first_seen_ms > self.last_seen_ms {
            return Err("`first_seen_ms` is after `last_seen_ms`".into());
        }
        Ok(())
    }

    /// Folds a later (or earlier) sighting of the same session into this one.
    fn merge(&mut self, other: SessionSeen) {
        self.first_seen_ms = self.first_seen_ms.min(other.first_seen_ms);
        self.requests = self.requests.saturating_add(other.requests);
        self.session_start = self.session_start.max(other.session_start);
        if other.last_seen_ms >= self.last_seen_ms {
            self.last_seen_ms = other.last_seen_ms;
            self.device = other.device;
            self.address = other.address;
        }
    }
}

/// Parses `a.b.c.d`, an IPv6 address, or either with a `/len` prefix.
trait ParsePrefix {
    fn parse_prefix(&self) -> Option<(IpAddr, Option<u8>)>;
}

impl ParsePrefix for str {
    fn parse_prefix(&self) -> Option<(IpAddr, Option<u8>)> {
        let (ip, len) = match self.split_once('/') {
            Some((ip, len)) => (ip, Some(len.parse::<u8>().ok()?)),
            None => (self, None),
        };
        let ip: IpAddr = ip.parse().ok()?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        (len.unwrap_or(max) <= max).then_some((ip, len))
    }
}

/// The body of `POST /v1/sync/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionReport {
    pub sessions: Vec<SessionSeen>,
}

/// The path an edge reports its sessions to.
pub fn report_path(edge_id: &str) -> String {
    format!("/v1/sync/sessions?edge={}", percent_encode(edge_id))
}

/// A short summary of a User-Agent: `Chrome 120 on macOS`, `Firefox 121 on Windows`,
/// `Safari 17 on iOS`, or for an app (`AcmeApp/3.2.1 (iPhone; iOS 17.1)`) its name and
/// version with the OS: `AcmeApp 3.2.1 (iOS)`. `unknown` without a readable one.
pub fn device_summary(user_agent: Option<&[u8]>) -> String {
    let Some(ua) = user_agent
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return "unknown".into();
    };
    let os = os_of(ua);
    let summary = if ua.starts_with("Mozilla/") {
        match (browser_of(ua), os) {
            (Some((name, version)), Some(os)) => format!("{name} {version} on {os}"),
            (Some((name, version)), None) => format!("{name} {version}"),
            (None, Some(os)) => format!("Browser on {os}"),
            (None, None) => "Browser".into(),
        }
    } else {
        let first = ua.split_whitespace().next().unwrap_or(ua);
        let product = match first.split_once('/') {
            Some((name, version)) if !version.is_empty() => format!("{name} {version}"),
            _ => first.to_string(),
        };
        match os {
            Some(os) => format!("{product} ({os})"),
            None => product,
        }
    };
    summary
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_DEVICE_CHARS)
        .collect()
}

/// The operating system a User-Agent names (most specific first: iPhone and Android
/// agents also say "Mac OS X" and "Linux").
fn os_of(ua: &str) -> Option<&'static str> {
    const SIGNS: [(&str, &str); 9] = [
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("iOS", "iOS"),
        ("Android", "Android"),
        ("Windows", "Windows"),
        ("CrOS", "ChromeOS"),
        ("Mac OS X", "macOS"),
        ("Macintosh", "macOS"),
        ("Linux", "Linux"),
    ];
    SIGNS
        .iter()
        .find(|(sign, _)| ua.contains(sign))
        .map(|(_, os)| *os)
}

/// The browser and its major version, by its product token (most specific first:
/// Edge and Opera agents also carry `Chrome/`, Chrome's `Safari/`).
fn browser_of(ua: &str) -> Option<(&'static str, &str)> {
    const TOKENS: [(&str, &str); 10] = [
        ("Edg/", "Edge"),
        ("EdgA/", "Edge"),
        ("EdgiOS/", "Edge"),
        ("OPR/", "Opera"),
        ("SamsungBrowser/", "Samsung Internet"),
        ("Firefox/", "Firefox"),
        ("FxiOS/", "Firefox"),
        ("CriOS/", "Chrome"),
        ("HeadlessChrome/", "Headless Chrome"),
        ("Chrome/", "Chrome"),
    ];
    let major = |token: &str| {
        ua.split(token)
            .nth(1)
            .and_then(|rest| rest.split(|c: char| c == '.' || c.is_whitespace()).next())
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
    };
    for (token, name) in TOKENS {
        if let Some(version) = major(token) {
            return Some((name, version));
        }
    }
    if ua.contains("Safari/") {
        if let Some(version) = major("Version/") {
            return Some(("Safari", version));
        }
    }
    None
}

/// The client address as reported: the IP of `raw` (`a.b.c.d`, `a.b.c.d:port`, an IPv6
/// address, `[v6]:port`), or with `truncate` its network (`a.b.c.0/24`, the first 48 bits
/// of an IPv6 address `/48`), so that no single host is recorded. `None` if unreadable.
pub fn client_address(raw: &str, truncate: bool) -> Option<String> {
    let raw = raw.trim();
    let ip: IpAddr = raw
        .parse()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))?;
    if !truncate {
        return Some(ip.to_string());
    }
    Some(match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{}/48", Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0))
        }
    })
}

/// What [`SessionRecorder::observe`] asks for when it hands a sighting on: the device
/// summary and the client address (computed only then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub device: String,
    pub address: Option<String>,
}

#[derive(Debug, Clone)]
struct Tracked {
    seen: SessionSeen,
    /// When this recorder last handed the session on.
    reported_ms: u64,
}

/// The request path's part (see the module doc). One per filter VM or isolate.
#[derive(Debug)]
pub struct SessionRecorder {
    every_ms: u64,
    max: usize,
    entries: HashMap<u64, Tracked>,
    outbox: Vec<SessionSeen>,
    swept_ms: u64,
}

impl Default for SessionRecorder {
    fn default() -> Self {
        Self::new(REPORT_EVERY_MS, MAX_TRACKED)
    }
}

fn key_hash(id: &Identity) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    id.tenant.hash(&mut h);
    id.user.hash(&mut h);
    match &id.session {
        Some(sid) => sid.hash(&mut h),
        None => id.session_start.hash(&mut h),
    }
    h.finish()
}

fn same_session(seen: &SessionSeen, id: &Identity) -> bool {
    seen.tenant == id.tenant
        && seen.user == id.user
        && match (&seen.sid, &id.session) {
            (Some(a), Some(b)) => a == b,
            (None, None) => seen.session_start == id.session_start,
            _ => false,
        }
}

impl SessionRecorder {
    /// A recorder that hands each session on at most every `every_ms` and tracks at
    /// most `max` sessions.
    pub fn new(every_ms: u64, max: usize) -> Self {
        Self {
            every_ms,
            max: max.max(2),
            entries: HashMap::new(),
            outbox: Vec::new(),
            swept_ms: 0,
        }
    }

    /// An allowed request of `id`'s session. `describe` is called only when the
    /// sighting is handed on (a new session, or `every_ms` since the last time).
    pub fn observe(&mut self, id: &Identity, now_ms: u64, describe: impl FnOnce() -> Seen) {
        let hash = key_hash(id);
        if let Some(t) = self.entries.get_mut(&hash) {
            if same_session(&t.seen, id) {
                t.seen.requests = t.seen.requests.saturating_add(1);
                t.seen.last_seen_ms = t.seen.last_seen_ms.max(now_ms);
                // A later login under the same `sid` (signing in again after a logout)
                // is news at once: the control plane judges the session by its start.
                let relogin = id.session_start > t.seen.session_start;
                t.seen.session_start = t.seen.session_start.max(id.session_start);
                if relogin || now_ms.saturating_sub(t.reported_ms) >= self.every_ms {
                    let d = describe();
                    t.seen.device = d.device;
                    t.seen.address = d.address;
                    t.reported_ms = now_ms;
                    self.outbox.push(t.seen.clone());
                    t.seen.requests = 0;
                    t.seen.first_seen_ms = now_ms;
                }
                return;
            }
            // A 64-bit collision: the newcomer takes the slot, the other's count is
            // handed on first.
            if let Some(old) = self.entries.remove(&hash) {
                if old.seen.requests > 0 {
                    self.outbox.push(old.seen);
                }
            }
        }
        if self.entries.len() >= self.max {
            self.evict_half();
        }
        let d = describe();
        let seen = SessionSeen {
            tenant: id.tenant.clone(),
            user: id.user.clone(),
            sid: id.session.clone(),
            session_start: id.session_start,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            requests: 1,
            device: d.device,
            address: d.address,
        };
        self.outbox.push(seen.clone());
        self.entries.insert(
            hash,
            Tracked {
                seen: SessionSeen {
                    requests: 0,
                    ..seen
                },
                reported_ms: now_ms,
            },
        );
    }

    /// On a timer: hands on the requests of sessions not reported for `every_ms`, and
    /// forgets sessions idle for twice that. Does nothing more than once per `every_ms`.
    pub fn tick(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.swept_ms) < self.every_ms {
            return;
        }
        self.swept_ms = now_ms;
        let every = self.every_ms;
        let outbox = &mut self.outbox;
        self.entries.retain(|_, t| {
            if t.seen.requests > 0 && now_ms.saturating_sub(t.reported_ms) >= every {
                outbox.push(t.seen.clone());
                t.seen.requests = 0;
                t.seen.first_seen_ms = t.seen.last_seen_ms;
                t.reported_ms = now_ms;
            }
            t.seen.requests > 0 || now_ms.saturating_sub(t.seen.last_seen_ms) < 2 * every
        });
    }

    /// Forgets the least recently seen half, handing on what they had not reported.
    fn evict_half(&mut self) {
        let mut by_age: Vec<(u64, u64)> = self
            .entries
            .iter()
            .map(|(h, t)| (t.seen.last_seen_ms, *h))
            .collect();
        by_age.sort_unstable();
        for (_, hash) in by_age.into_iter().take(self.entries.len() / 2) {
            if let Some(t) = self.entries.remove(&hash) {
                if t.seen.requests > 0 {
                    self.outbox.push(t.seen);
                }
            }
        }
    }

    /// Whether sightings wait to be handed on.
    pub fn has_output(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// How many sightings wait to be handed on (a host hands them on in batches).
    pub fn output_len(&self) -> usize {
        self.outbox.len()
    }

    /// The sightings to hand on (to the sync VM, or the isolate's batch).
    pub fn take_output(&mut self) -> Vec<SessionSeen> {
        std::mem::take(&mut self.outbox)
    }

    pub fn tracked(&self) -> usize {
        self.entries.len()
    }
}

/// Sightings merged per session until the next report (see the module doc).
#[derive(Debug, Default)]
pub struct SessionBatch {
    entries: HashMap<SessionKey, SessionSeen>,
    dropped: u64,
}

impl SessionBatch {
    /// Merges a sighting; a new session past [`MAX_PENDING`] is dropped (and counted).
    pub fn add(&mut self, seen: SessionSeen) {
        let key = seen.key();
        if let Some(held) = self.entries.get_mut(&key) {
            held.merge(seen);
        } else if self.entries.len() < MAX_PENDING {
            self.entries.insert(key, seen);
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Up to `max` sessions, most recently seen first, taken out of the batch.
    pub fn take(&mut self, max: usize) -> Vec<SessionSeen> {
        if self.entries.len() <= max {
            let mut all: Vec<SessionSeen> = self.entries.drain().map(|(_, s)| s).collect();
            all.sort_unstable_by_key(|s| std::cmp::Reverse(s.last_seen_ms));
            return all;
        }
        let mut keys: Vec<(u64, SessionKey)> = self
            .entries
            .iter()
            .map(|(k, s)| (s.last_seen_ms, k.clone()))
            .collect();
        keys.sort_unstable_by_key(|k| std::cmp::Reverse(k.0));
        keys.into_iter()
            .take(max)
            .filter_map(|(_, k)| self.entries.remove(&k))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// New sessions dropped because the batch was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

/// When an edge sends its batch: every `interval_ms`, one call at a time.
#[derive(Debug)]
pub struct SessionReporter {
    pub batch: SessionBatch,
    interval_ms: u64,
    next_ms: u64,
    in_flight: bool,
}

impl SessionReporter {
    pub fn new(interval_ms: u64) -> Self {
        Self {
            batch: SessionBatch::default(),
            interval_ms,
            next_ms: 0,
            in_flight: false,
        }
    }

    /// The body to send now, if a report is due: not in flight, the interval passed
    /// since the last one started, and something to say. Marks it in flight.
    pub fn poll(&mut self, now_ms: u64) -> Option<SessionReport> {
        if self.in_flight || now_ms < self.next_ms || self.batch.is_empty() {
            return None;
        }
        self.in_flight = true;
        self.next_ms = now_ms.saturating_add(self.interval_ms);
        Some(SessionReport {
            sessions: self.batch.take(MAX_BATCH),
        })
    }

    /// The call ended (either way). A failed call's batch is gone — at most one
    /// interval's sightings — and the next report waits for the next interval.
    pub fn finished(&mut self) {
        self.in_flight = false;
    }

    pub fn in_flight(&self) -> bool {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, sid: Option<&str>, start: i64) -> Identity {
        Identity {
            user: user.into(),
            tenant: "acme".into(),
            session: sid.map(str::to_string),
            actors: vec![],
            issued_at: Some(start),
            session_start: start,
            expires_at: 0.0,
        }
    }

    fn seen(device: &str) -> impl FnOnce() -> Seen + '_ {
        move || Seen {
            device: device.into(),
            address: Some("10.0.0.1".into()),
        }
    }

    #[test]
    fn a_new_session_is_handed_on_at_once_then_at_most_once_a_minute() {
        let mut r = SessionRecorder::default();
        let alice = id("alice", Some("s1"), 100);
        r.observe(&alice, 1_000, seen("Chrome 120 on Linux"));
        let out = r.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].requests, 1);
        assert_eq!(out[0].sid.as_deref(), Some("s1"));
        assert_eq!(out[0].device, "Chrome 120 on Linux");
        let mut described = 0;
        for t in 1..100u64 {
            r.observe(&alice, 1_000 + t * 100, || {
                described += 1;
                Seen {
                    device: "x".into(),
                    address: None,
                }
            });
        }
        assert!(!r.has_output(), "nothing more within the minute");
        assert_eq!(described, 0, "the User-Agent is not summarized per request");
        r.observe(&alice, 61_000, seen("Chrome 121 on Linux"));
        let out = r.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].requests, 100, "the requests counted meanwhile");
        assert_eq!(out[0].last_seen_ms, 61_000);
        assert_eq!(out[0].device, "Chrome 121 on Linux");
    }

    #[test]
    fn sessions_are_keyed_by_sid_or_else_by_their_start() {
        let mut r = SessionRecorder::default();
        r.observe(&id("bob", None, 100), 0, seen("a"));
        r.observe(&id("bob", None, 100), 1, seen("a"));
        r.observe(&id("bob", None, 200), 2, seen("a"));
        r.observe(&id("bob", Some("s"), 100), 3, seen("a"));
        // A later token of the same sid (a refresh with a new iat, or signing in again):
        // the same session, handed on at once with its new start.
        r.observe(&id("bob", Some("s"), 300), 4, seen("a"));
        let out = r.take_output();
        let mut keys: Vec<SessionKey> = out.iter().map(SessionSeen::key).collect();
        assert_eq!(out.last().map(|s| s.session_start), Some(300));
        keys.dedup();
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(r.tracked(), 3);
    }

    #[test]
    fn the_tick_hands_on_leftover_counts_and_forgets_idle_sessions() {
        let mut r = SessionRecorder::default();
        let u = id("u", Some("s"), 1);
        r.observe(&u, 0, seen("d"));
        r.observe(&u, 10_000, seen("d"));
        r.observe(&u, 20_000, seen("d"));
        r.take_output();
        r.tick(30_000);
        assert!(!r.has_output(), "not yet a minute since the report");
        r.tick(61_000);
        let out = r.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].requests, 2);
        assert_eq!(out[0].last_seen_ms, 20_000);
        r.tick(141_000);
        assert_eq!(r.tracked(), 0, "idle for two minutes: forgotten");
        assert!(!r.has_output());
    }

    #[test]
    fn the_recorder_never_tracks_more_than_its_bound() {
        let mut r = SessionRecorder::new(REPORT_EVERY_MS, 10);
        for i in 0..100 {
            r.observe(&id(&format!("u{i}"), None, 1), i, seen("d"));
            assert!(r.tracked() <= 10);
        }
        // Every new session was handed on once.
        assert_eq!(r.take_output().len(), 100);
    }

    #[test]
    fn the_batch_merges_and_is_bounded() {
        let mut b = SessionBatch::default();
        let s = |first, last, n, device: &str| SessionSeen {
            tenant: "t".into(),
            user: "u".into(),
            sid: Some("s".into()),
            session_start: 5,
            first_seen_ms: first,
            last_seen_ms: last,
            requests: n,
            device: device.into(),
            address: None,
        };
        b.add(s(10, 20, 3, "new"));
        b.add(s(5, 15, 2, "old"));
        assert_eq!(b.len(), 1);
        let all = b.take(10);
        assert_eq!(all[0].first_seen_ms, 5);
        assert_eq!(all[0].last_seen_ms, 20);
        assert_eq!(all[0].requests, 5);
        assert_eq!(all[0].device, "new", "the latest sighting's device");
        assert!(b.is_empty());
        for i in 0..(MAX_PENDING as u64 + 5) {
            b.add(SessionSeen {
                user: format!("u{i}"),
                ..s(i, i, 1, "d")
            });
        }
        assert_eq!(b.len(), MAX_PENDING);
        assert_eq!(b.dropped(), 5);
        let newest = b.take(3);
        assert_eq!(newest.len(), 3);
        assert_eq!(newest[0].last_seen_ms, MAX_PENDING as u64 - 1);
        assert_eq!(b.len(), MAX_PENDING - 3);
    }

    #[test]
    fn reports_go_once_per_interval_one_at_a_time() {
        let mut r = SessionReporter::new(10_000);
        assert!(r.poll(0).is_none(), "nothing to say");
        let s = SessionSeen {
            tenant: "t".into(),
            user: "u".into(),
            sid: None,
            session_start: 1,
            first_seen_ms: 0,
            last_seen_ms: 0,
            requests: 1,
            device: "d".into(),
            address: None,
        };
        r.batch.add(s.clone());
        let sent = r.poll(0).unwrap();
        assert_eq!(sent.sessions.len(), 1);
        r.batch.add(SessionSeen {
            user: "v".into(),
            ..s.clone()
        });
        assert!(r.poll(20_000).is_none(), "one call at a time");
        r.finished();
        assert!(r.poll(5_000).is_none(), "the interval has not passed");
        assert_eq!(r.poll(10_000).unwrap().sessions.len(), 1);
        r.finished();
        for i in 0..(MAX_BATCH + 10) {
            r.batch.add(SessionSeen {
                user: format!("w{i}"),
                ..s.clone()
            });
        }
        assert_eq!(r.poll(20_000).unwrap().sessions.len(), MAX_BATCH);
        r.finished();
        assert_eq!(r.poll(30_000).unwrap().sessions.len(), 10);
    }

    #[test]
    fn user_agents_are_summarized() {
        let cases = [
            (
                "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "Chrome 120 on macOS",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:121.0) Gecko/20100101 Firefox/121.0",
                "Firefox 121 on Windows",
            ),
            (
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                "Safari 17 on iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Mobile Safari/537.36",
                "Chrome 120 on Android",
            ),
            (
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
                "Edge 120 on Windows",
            ),
            (
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.6778.85 Safari/537.36",
                "Headless Chrome 131 on Linux",
            ),
            ("AcmeApp/3.2.1 (iPhone; iOS 17.1; Scale/3.00)", "AcmeApp 3.2.1 (iOS)"),
            ("Portal/2.4.0 (Android 14; Pixel 8)", "Portal 2.4.0 (Android)"),
            ("curl/8.5.0", "curl 8.5.0"),
            ("Mozilla/5.0 (compatible)", "Browser"),
        ];
        for (ua, want) in cases {
            assert_eq!(device_summary(Some(ua.as_bytes())), want, "{ua}");
        }
        assert_eq!(device_summary(None), "unknown");
        assert_eq!(device_summary(Some(b"  ")), "unknown");
        assert_eq!(device_summary(Some(b"\xff\xfe")), "unknown");
        let long = format!("App/{}", "9".repeat(200));
        assert_eq!(device_summary(Some(long.as_bytes())).chars().count(), 64);
        assert_eq!(device_summary(Some(b"App/1\x07x")), "App 1x");
    }

    #[test]
    fn addresses_are_read_and_truncated_on_request() {
        assert_eq!(
            client_address("203.0.113.7:51234", false).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_address("203.0.113.7", true).as_deref(),
            Some("203.0.113.0/24")
        );
        assert_eq!(
            client_address("[2001:db8:1234:5678::1]:443", false).as_deref(),
            Some("2001:db8:1234:5678::1")
        );
        assert_eq!(
            client_address("2001:db8:1234:5678::1", true).as_deref(),
            Some("2001:db8:1234::/48")
        );
        assert_eq!(client_address("not an ip", false), None);
    }

    #[test]
    fn the_control_plane_checks_what_it_keeps() {
        let ok = SessionSeen {
            tenant: "acme".into(),
            user: "auth0|5f7c".into(),
            sid: Some("s-1".into()),
            session_start: 1,
            first_seen_ms: 1,
            last_seen_ms: 2,
            requests: 1,
            device: "Chrome 120 on Linux".into(),
            address: Some("203.0.113.0/24".into()),
        };
        assert_eq!(ok.validate(), Ok(()));
        for (bad, needle) in [
            (
                SessionSeen {
                    user: String::new(),
                    ..ok.clone()
                },
                "`user`",
            ),
            (
                SessionSeen {
                    device: "x".repeat(65),
                    ..ok.clone()
                },
                "`device`",
            ),
            (
                SessionSeen {
                    address: Some("<script>".into()),
                    ..ok.clone()
                },
                "`address`",
            ),
            (
                SessionSeen {
                    address: Some("10.0.0.0/40".into()),
                    ..ok.clone()
                },
                "`address`",
            ),
            (
                SessionSeen {
                    first_seen_ms: 3,
                    ..ok.clone()
                },
                "first_seen_ms",
            ),
        ] {
            let err = bad.validate().unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let json = serde_json::to_string(&SessionReport {
            sessions: vec![ok.clone()],
        })
        .unwrap();
        let back: SessionReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.sessions, vec![ok]);
        assert!(serde_json::from_str::<SessionReport>(r#"{"sessions":[],"x":1}"#).is_err());
        assert_eq!(report_path("envoy/1"), "/v1/sync/sessions?edge=envoy%2F1");
    }
}
