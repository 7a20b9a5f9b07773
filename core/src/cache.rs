//! The verified-token cache: per worker VM (or isolate), bounded, keyed by the exact
//! token string, each entry living until the token's own expiry.
//!
//! Only signature and claim verification is cached — the expensive part (RSA/ECDSA) —
//! never the revocation check, which runs on every request, on hits too: a cached token
//! of a user who was just logged out is refused at once.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};

use crate::claims::Identity;

/// A bounded map from token to its verified identity. Interior mutability: a cache is
/// owned by one VM and used through `&self` from its request contexts.
#[derive(Debug)]
pub struct TokenCache {
    capacity: usize,
    skew_ms: u64,
    inner: RefCell<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Box<str>, Identity>,
    /// Insertion order, for first-in-first-out eviction.
    order: VecDeque<Box<str>>,
    hits: u64,
    misses: u64,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens (0 disables it). `clock_skew_s` is the
    /// verifier's: an entry lives as long as the token would still verify.
    pub fn new(capacity: usize, clock_skew_s: u32) -> Self {
        Self {
            capacity,
            skew_ms: u64::from(clock_skew_s) * 1000,
            inner: RefCell::new(Inner::default()),
        }
    }

    fn expires_ms(&self, identity: &Identity) -> u64 {
        // `exp` is a (possibly fractional) NumericDate; a negative or huge one clamps.
        let exp_ms = (identity.expires_at * 1000.0).clamp(0.0, u64::MAX as f64) as u64;
        exp_ms.saturating_add(self.skew_ms)
    }

    /// The identity of a token verified before, if it has not expired since.
    pub fn get(&self, token: &str, now_ms: u64) -> Option<Identity> {
        let mut inner = self.inner.borrow_mut();
        let found = inner.entries.get(token).cloned();
        match found {
            Some(identity) if now_ms < self.expires_ms(&identity) => {
                inner.hits += 1;
                Some(identity)
            }
            Some(_) => {
                inner.entries.remove(token);
                inner.misses += 1;
                None
            }
            None => {
                inner.misses += 1;
                None
            }
        }
    }

    /// Remembers a verified token. When full, the oldest entries go first.
    pub fn insert(&self, token: &str, identity: Identity) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.borrow_mut();
        if inner.entries.contains_key(token) {
            return;
        }
        while inner.entries.len() >= self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
        // Keys evicted through `get` (expired) may still sit in `order`: drop stale ones
        // so the queue stays bounded too.
        if inner.order.len() >= self.capacity.saturating_mul(2) {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|k| entries.contains_key(k));
        }
        let key: Box<str> = token.into();
        inner.order.push_back(key.clone());
        inner.entries.insert(key, identity);
    }

    /// Forgets everything (the key set changed: a dropped key's tokens must be verified
    /// afresh, and fail).
    pub fn clear(&self) {
        let mut inner = self.inner.borrow_mut();
        inner.entries.clear();
        inner.order.clear();
    }

    pub fn len(&self) -> usize {
        self.inner.borrow().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(hits, misses)` so far.
    pub fn stats(&self) -> (u64, u64) {
        let inner = self.inner.borrow();
        (inner.hits, inner.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str, exp_s: f64) -> Identity {
        Identity {
            user: user.into(),
            tenant: "t".into(),
            session: None,
            actors: vec![],
            issued_at: Some(0),
            session_start: 0,
            expires_at: exp_s,
        }
    }

    #[test]
    fn entries_live_until_the_token_expires_plus_skew() {
        let c = TokenCache::new(10, 60);
        c.insert("a", id("1", 100.0));
        assert_eq!(c.get("a", 100_000).map(|i| i.user), Some("1".into()));
        assert!(c.get("a", 159_999).is_some());
        assert!(c.get("a", 160_000).is_none());
        assert!(c.is_empty());
    }

    #[test]
    fn the_cache_never_grows_past_its_bound() {
        let c = TokenCache::new(3, 0);
        for i in 0..100 {
            c.insert(&format!("t{i}"), id(&i.to_string(), 1e9));
            assert!(c.len() <= 3);
        }
        assert!(c.get("t99", 0).is_some());
        assert!(c.get("t0", 0).is_none(), "the oldest went first");
        let inner = c.inner.borrow();
        assert!(inner.order.len() <= 6);
    }

    #[test]
    fn lookups_are_by_the_exact_token_and_clear_empties() {
        let c = TokenCache::new(10, 0);
        c.insert("abc", id("1", 1e9));
        assert!(c.get("abc ", 0).is_none());
        assert!(c.get("ab", 0).is_none());
        c.clear();
        assert!(c.get("abc", 0).is_none());
        assert_eq!(c.stats(), (0, 3));
        let off = TokenCache::new(0, 0);
        off.insert("x", id("1", 1e9));
        assert!(off.is_empty());
    }
}
