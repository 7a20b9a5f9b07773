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
