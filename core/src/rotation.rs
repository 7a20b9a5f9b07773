//! Key rotation without an error.
//!
//! An IdP that rotates its signing key may issue the first token under the new `kid`
//! before an edge has refetched the JWKS. Envoy's `jwt_authn` holds such a request while
//! it fetches; so does the filter: a request whose `kid` is not in the remote key set
//! asks for a refresh and waits — at most `key_refresh_wait_ms` — until the key set
//! changes, then it is decided again (once: a `kid` still unknown is `unknown_key`). Only
//! when the refresh fails, or the wait runs out, is the answer 503 with `Retry-After`.
//!
//! This is the rule, sans-IO: the host passes the time, the key set's version (any bytes
//! that change whenever the set does) and when the fetcher last failed.
//!
//! The fetcher's rules are here too, for every edge: when the JWKS is due
//! ([`jwks_fetch_due`]: at once, then every `refresh_s`, and on an unknown `kid` at most
//! once per `min_refresh_s`), which keys of a fetched document are taken
//! ([`usable_remote_keys`]: never a symmetric key from a URL, keys this build cannot
//! verify skipped, a document left with none refused so the previous keys stay), and
//! [`RemoteJwks`], the whole fetcher as a state machine for a host that keeps the keys in
//! its own memory (the Worker); Envoy's sync VM fetches with the same due rule and its
//! filter VMs take the keys with the same [`usable_remote_keys`].

use crate::jwt::{parse_remote_jwks, Algorithm, AlgorithmSupport, KeySet};
use crate::sync::client::Backoff;

/// Whether a JWKS fetch is due at `now_ms`: never while one is in flight or before
/// `next_attempt_ms` (backing off after a failure); at once when nothing was fetched
/// yet; then `refresh_s` after the last success, or — when a refresh was asked for (an
/// unknown `kid`) since the last attempt began — `min_refresh_s` after that attempt, so a
/// flood of made-up `kid`s cannot turn the edge into a fetcher aimed at the IdP.
#[allow(clippy::too_many_arguments)]
pub fn jwks_fetch_due(
    now_ms: u64,
    in_flight: bool,
    next_attempt_ms: u64,
    fetched_ms: Option<u64>,
    attempt_ms: u64,
    requested_ms: Option<u64>,
    refresh_s: u64,
    min_refresh_s: u64,
) -> bool {
    if in_flight || now_ms < next_attempt_ms {
        return false;
    }
    match fetched_ms {
        None => true,
        Some(at) => {
            now_ms.saturating_sub(at) >= refresh_s.saturating_mul(1000)
                || (requested_ms.is_some_and(|r| r >= attempt_ms)
                    && now_ms.saturating_sub(attempt_ms) >= min_refresh_s.saturating_mul(1000))
        }
    }
}

/// The keys of a fetched JWKS document an edge takes, and why each other one was
/// skipped: [`parse_remote_jwks`] (no symmetric key from a URL, no key without an `alg`
/// unless `default_alg`), then only keys `verifier` can check. A document left with no
/// key is `Err`: the caller keeps the keys it had, or a broken IdP answer would lock
/// everyone out.
pub fn usable_remote_keys(
    doc: &[u8],
    default_alg: Option<Algorithm>,
    verifier: &impl AlgorithmSupport,
) -> Result<(KeySet, Vec<String>), String> {
    let doc: serde_json::Value = serde_json::from_slice(doc).map_err(|e| e.to_string())?;
    let (keys, mut skipped) = parse_remote_jwks(&doc, default_alg)?;
    let (keys, unusable): (Vec<_>, Vec<_>) = keys
        .into_iter()
        .partition(|k| verifier.supports(k.alg).is_ok());
    for key in unusable {
        if let Err(why) = verifier.supports(key.alg) {
            skipped.push(format!("key {:?}: {why}", key.kid));
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no key this build can verify ({})",
            skipped.join("; ")
        ));
    }
    Ok((KeySet::lenient(keys), skipped))
}

/// What an answer to a JWKS fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksEvent {
    /// A new key set is in use (`skipped`: the keys left out, and why).
    Updated { keys: usize, skipped: Vec<String> },
    /// The fetch failed or the document was refused: the previous keys stay.
    Failed {
        why: String,
        failures: u32,
        retry_in_ms: u64,
    },
    /// Not the fetch in flight (it timed out and another started): ignored.
    Superseded,
}

/// A started fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct InFlight {
    ticket: u64,
    started_ms: u64,
}

/// The remote JWKS fetcher, sans-IO, for a host that holds the keys itself (the Worker's
/// isolate): it says when to fetch ([`RemoteJwks::poll_fetch`]), takes each answer
/// ([`RemoteJwks::handle_answer`]) and holds the keys and their version (for
/// [`KeyWait`]). One fetch at a time; failures back off with jitter.
#[derive(Debug, Clone)]
pub struct RemoteJwks {
    refresh_s: u64,
    min_refresh_s: u64,
    timeout_ms: u64,
    backoff: Backoff,
    keys: Option<KeySet>,
    /// Bumped with every key set taken.
    version: u64,
    fetched_ms: Option<u64>,
    attempt_ms: u64,
    requested_ms: Option<u64>,
    next_attempt_ms: u64,
    failures: u32,
    last_failure_ms: Option<u64>,
    in_flight: Option<InFlight>,
    tickets: u64,
}

impl RemoteJwks {
    /// Refetch every `refresh_s`, on request at most every `min_refresh_s`; a fetch not
    /// answered within `timeout_ms` (plus a second) no longer blocks the next; failures
    /// back off from `retry_min_ms` to `retry_max_ms` (`seed` varies the jitter).
    pub fn new(
        refresh_s: u64,
        min_refresh_s: u64,
        timeout_ms: u64,
        retry_min_ms: u64,
        retry_max_ms: u64,
        seed: u64,
    ) -> Self {
        Self {
            refresh_s,
            min_refresh_s,
            timeout_ms,
            backoff: Backoff::new(retry_min_ms, retry_max_ms, seed),
            keys: None,
            version: 0,
            fetched_ms: None,
            attempt_ms: 0,
            requested_ms: None,
            next_attempt_ms: 0,
            failures: 0,
            last_failure_ms: None,
            in_flight: None,
            tickets: 0,
        }
    }

    /// The keys in use (`None` before the first good document).
    pub fn keys(&self) -> Option<&KeySet> {
        self.keys.as_ref()
    }

    /// The key set's version for [`KeyWait`] (`None` before the first good document).
    pub fn version(&self) -> Option<[u8; 8]> {
        self.keys.as_ref().map(|_| self.version.to_le_bytes())
    }

    /// When a fetch last failed.
    pub fn last_failure_ms(&self) -> Option<u64> {
        self.last_failure_ms
    }

    /// Whether a fetch is in flight (started less than its timeout plus a second ago).
    pub fn in_flight(&self, now_ms: u64) -> bool {
        self.in_flight.is_some_and(|f| {
            now_ms
                < f.started_ms
                    .saturating_add(self.timeout_ms)
                    .saturating_add(1000)
        })
    }

    /// A request met a `kid` the keys lack: refetch, within `min_refresh_s`.
    pub fn request_refresh(&mut self, now_ms: u64) {
        self.requested_ms = Some(now_ms);
    }

    /// Whether a fetch is due now ([`jwks_fetch_due`]).
    pub fn is_due(&self, now_ms: u64) -> bool {
        jwks_fetch_due(
            now_ms,
            self.in_flight(now_ms),
            self.next_attempt_ms,
            self.fetched_ms,
            self.attempt_ms,
            self.requested_ms,
            self.refresh_s,
            self.min_refresh_s,
        )
    }

    /// Starts a fetch if one is due: its ticket, for [`RemoteJwks::handle_answer`].
    pub fn poll_fetch(&mut self, now_ms: u64) -> Option<u64> {
        if !self.is_due(now_ms) {
            return None;
        }
        self.tickets += 1;
        self.attempt_ms = now_ms;
        self.in_flight = Some(InFlight {
            ticket: self.tickets,
            started_ms: now_ms,
        });
        Some(self.tickets)
    }

    /// Takes the answer to fetch `ticket`: its status and body, or why there is none. A
    /// document is taken only with [`usable_remote_keys`]; anything else keeps the keys.
    pub fn handle_answer(
        &mut self,
        ticket: u64,
        now_ms: u64,
        answer: Result<(u16, &[u8]), String>,
        default_alg: Option<Algorithm>,
        verifier: &impl AlgorithmSupport,
    ) -> JwksEvent {
        if self.in_flight.map(|f| f.ticket) != Some(ticket) {
            return JwksEvent::Superseded;
        }
        self.in_flight = None;
        let taken = match answer {
            Ok((200, body)) => usable_remote_keys(body, default_alg, verifier),
            Ok((status, _)) => Err(format!("the IdP answered {status}")),
            Err(e) => Err(e),
        };
        match taken {
            Ok((keys, skipped)) => {
                let count = keys.keys().len();
                self.keys = Some(keys);
                self.version += 1;
                self.fetched_ms = Some(now_ms);
                self.failures = 0;
                self.next_attempt_ms = 0;
                JwksEvent::Updated {
                    keys: count,
                    skipped,
                }
            }
            Err(why) => {
                self.failures = self.failures.saturating_add(1);
                let retry_in_ms = self.backoff.delay_ms(self.failures);
                self.next_attempt_ms = now_ms.saturating_add(retry_in_ms);
                self.last_failure_ms = Some(now_ms);
                JwksEvent::Failed {
                    why,
                    failures: self.failures,
                    retry_in_ms,
                }
            }
        }
    }
}

/// One held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWait {
    started_ms: u64,
    deadline_ms: u64,
    keys_version: Option<Vec<u8>>,
}

/// What to do with a held request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyWaitStep {
    /// Keep holding it.
    Wait,
    /// The key set changed: decide it again.
    KeysChanged,
    /// A refresh failed after the request came: decide it again (it will be
    /// `unknown_key`, 503), without waiting out the deadline.
    RefreshFailed,
    /// The wait ran out: decide it again.
    TimedOut,
}

impl KeyWaitStep {
    /// Whether the wait is over (the request is to be decided again).
    pub fn is_over(self) -> bool {
        self != KeyWaitStep::Wait
    }
}

impl KeyWait {
    /// A request met an unknown `kid` at `now_ms`, while the key set was at
    /// `keys_version`; it may wait `wait_ms`.
    pub fn new(now_ms: u64, wait_ms: u64, keys_version: Option<&[u8]>) -> Self {
        Self {
            started_ms: now_ms,
            deadline_ms: now_ms.saturating_add(wait_ms),
            keys_version: keys_version.map(<[u8]>::to_vec),
        }
    }

    /// The next step, given the key set's version now and when a refresh last failed.
    pub fn step(
        &self,
        now_ms: u64,
        keys_version: Option<&[u8]>,
        last_failure_ms: Option<u64>,
    ) -> KeyWaitStep {
        if keys_version != self.keys_version.as_deref() {
            KeyWaitStep::KeysChanged
        } else if last_failure_ms.is_some_and(|t| t > self.started_ms) {
            KeyWaitStep::RefreshFailed
        } else if now_ms >= self.deadline_ms {
            KeyWaitStep::TimedOut
        } else {
            KeyWaitStep::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every algorithm (PS* included: the test keys are EC).
    struct AllAlgs;
    impl AlgorithmSupport for AllAlgs {
        fn supports(&self, _: Algorithm) -> Result<(), String> {
            Ok(())
        }
    }

    const EC_A: &str = r#"{"kty":"EC","crv":"P-256","kid":"a","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    const EC_B: &str = r#"{"kty":"EC","crv":"P-256","kid":"b","alg":"ES256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    const HMAC: &str =
        r#"{"kty":"oct","kid":"h","alg":"HS256","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}"#;

    fn doc(keys: &[&str]) -> Vec<u8> {
        format!(r#"{{"keys":[{}]}}"#, keys.join(",")).into_bytes()
    }

    #[test]
    fn a_jwks_fetch_is_due_at_once_then_on_its_interval_and_on_request_at_a_limited_rate() {
        // (now, in_flight, next_attempt, fetched, attempt, requested)
        let due = |now, fl, next, fetched, attempt, req| {
            jwks_fetch_due(now, fl, next, fetched, attempt, req, 300, 10)
        };
        assert!(due(1_000, false, 0, None, 0, None), "nothing fetched yet");
        assert!(!due(1_000, true, 0, None, 0, None), "one at a time");
        assert!(!due(1_000, false, 2_000, None, 0, None), "backing off");
        assert!(!due(299_999, false, 0, Some(0), 0, None));
        assert!(due(300_000, false, 0, Some(0), 0, None), "its interval");
        assert!(
            !due(5_000, false, 0, Some(0), 0, Some(4_000)),
            "asked, within min_refresh_s"
        );
        assert!(
            due(10_000, false, 0, Some(0), 0, Some(4_000)),
            "asked, past min_refresh_s"
        );
        assert!(
            !due(20_000, false, 0, Some(0), 10_000, Some(4_000)),
            "asked before the last attempt"
        );
    }

    #[test]
    fn remote_keys_never_include_a_symmetric_key_or_one_the_build_cannot_verify() {
        let (keys, skipped) = usable_remote_keys(&doc(&[EC_A, HMAC]), None, &AllAlgs).unwrap();
        assert_eq!(keys.keys().len(), 1);
        assert!(keys.by_kid("h").is_none(), "an HMAC key from a URL");
        assert!(
            skipped.iter().any(|s| s.contains("symmetric")),
            "{skipped:?}"
        );
        assert!(
            usable_remote_keys(&doc(&[HMAC]), None, &AllAlgs).is_err(),
            "symmetric only"
        );
        assert!(
            usable_remote_keys(&doc(&[]), None, &AllAlgs).is_err(),
            "empty"
        );
        assert!(usable_remote_keys(b"not json", None, &AllAlgs).is_err());
        struct NoEs;
        impl AlgorithmSupport for NoEs {
            fn supports(&self, _: Algorithm) -> Result<(), String> {
                Err("not in this build".into())
            }
        }
        let e = usable_remote_keys(&doc(&[EC_A]), None, &NoEs).unwrap_err();
        assert!(e.contains("no key this build can verify"), "{e}");
    }

    #[test]
    fn the_fetcher_takes_good_documents_keeps_keys_on_a_bad_one_and_backs_off() {
        let mut j = RemoteJwks::new(300, 10, 5_000, 500, 4_000, 1);
        assert_eq!(j.version(), None);
        let t = j.poll_fetch(1_000).unwrap();
        assert_eq!(j.poll_fetch(1_001), None, "one at a time");
        let ev = j.handle_answer(t, 1_100, Ok((200, &doc(&[EC_A]))), None, &AllAlgs);
        assert!(matches!(ev, JwksEvent::Updated { keys: 1, .. }), "{ev:?}");
        let v1 = j.version().unwrap();
        assert!(j.keys().unwrap().by_kid("a").is_some());
        assert_eq!(j.poll_fetch(2_000), None, "fresh");
        // An unknown kid asks for a refresh: due once min_refresh_s has passed.
        j.request_refresh(2_000);
        assert_eq!(j.poll_fetch(5_000), None);
        let t = j.poll_fetch(11_000).unwrap();
        // A document with only an HMAC key keeps the keys; the failure backs off.
        let ev = j.handle_answer(t, 11_100, Ok((200, &doc(&[HMAC]))), None, &AllAlgs);
        let JwksEvent::Failed { retry_in_ms, .. } = ev else {
            panic!("{ev:?}")
        };
        assert!((250..=500).contains(&retry_in_ms), "{retry_in_ms}");
        assert_eq!(j.version(), Some(v1));
        assert!(
            j.keys().unwrap().by_kid("a").is_some(),
            "previous keys kept"
        );
        assert_eq!(j.last_failure_ms(), Some(11_100));
        // A rotation: b is taken, the version moves.
        j.request_refresh(11_200);
        let t = j.poll_fetch(11_100 + retry_in_ms + 10_000).unwrap();
        let ev = j.handle_answer(t, 30_000, Ok((200, &doc(&[EC_B]))), None, &AllAlgs);
        assert!(matches!(ev, JwksEvent::Updated { .. }));
        assert_ne!(j.version(), Some(v1));
        assert!(j.keys().unwrap().by_kid("b").is_some());
        // An error status or a dead IdP keeps the keys; a stale ticket is ignored.
        let t = j.poll_fetch(330_000).unwrap();
        let ev = j.handle_answer(t, 330_001, Ok((503, b"")), None, &AllAlgs);
        assert!(
            matches!(ev, JwksEvent::Failed { failures: 1, .. }),
            "{ev:?}"
        );
        assert_eq!(
            j.handle_answer(t, 330_002, Err("late".into()), None, &AllAlgs),
            JwksEvent::Superseded
        );
        assert!(j.keys().unwrap().by_kid("b").is_some());
        // A fetch never answered stops blocking the next after its timeout.
        let t = j.poll_fetch(340_000).unwrap();
        assert!(j.in_flight(345_999));
        assert!(!j.in_flight(346_000));
        let t2 = j.poll_fetch(346_000).unwrap();
        assert_ne!(t, t2);
        assert_eq!(
            j.handle_answer(t, 346_001, Ok((200, &doc(&[EC_A]))), None, &AllAlgs),
            JwksEvent::Superseded
        );
    }

    #[test]
    fn a_held_request_is_decided_again_once_the_key_set_changes() {
        let w = KeyWait::new(1_000, 2_000, Some(b"v1"));
        assert_eq!(w.step(1_100, Some(b"v1"), None), KeyWaitStep::Wait);
        assert_eq!(w.step(1_400, Some(b"v2"), None), KeyWaitStep::KeysChanged);
        // The first key set ever fetched is a change too.
        let w = KeyWait::new(1_000, 2_000, None);
        assert_eq!(w.step(1_400, Some(b"v1"), None), KeyWaitStep::KeysChanged);
    }

    #[test]
    fn a_failed_refresh_ends_the_wait_but_an_earlier_failure_does_not() {
        let w = KeyWait::new(1_000, 2_000, Some(b"v1"));
        assert_eq!(w.step(1_100, Some(b"v1"), Some(900)), KeyWaitStep::Wait);
        assert_eq!(
            w.step(1_300, Some(b"v1"), Some(1_250)),
            KeyWaitStep::RefreshFailed
        );
    }

    #[test]
    fn the_wait_is_bounded() {
        let w = KeyWait::new(1_000, 2_000, Some(b"v1"));
        assert_eq!(w.step(2_999, Some(b"v1"), None), KeyWaitStep::Wait);
        assert_eq!(w.step(3_000, Some(b"v1"), None), KeyWaitStep::TimedOut);
        assert!(KeyWaitStep::TimedOut.is_over() && !KeyWaitStep::Wait.is_over());
        let none = KeyWait::new(1_000, 0, None);
        assert_eq!(none.step(1_000, None, None), KeyWaitStep::TimedOut);
    }
}
