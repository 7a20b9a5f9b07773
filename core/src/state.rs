//! The revocation epoch map and the revocation rule.
//!
//! Every entry is one small key (see [`keys`]) holding a millisecond timestamp: the
//! global epoch, a tenant's epoch, a user's epoch (per tenant), or the time a session id
//! (per tenant) was revoked. The filter keeps these keys in Envoy's shared data; the
//! worker and the tests keep them in a [`RevocationState`]. Both are read through
//! [`EpochSource`], so the rule in [`check_revocation`] is written once.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::ids::percent_encode;

/// What a revocation applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case", deny_unknown_fields)]
pub enum Target {
    /// Every tenant.
    Global,
    /// Every user of one tenant.
    Tenant { tenant: String },
    /// One user of one tenant.
    User { tenant: String, user: String },
    /// One session id of one tenant.
    Session { tenant: String, sid: String },
}

impl Target {
    /// The key this entry lives under (shared data, [`RevocationState`]).
    pub fn key(&self) -> String {
        match self {
            Target::Global => keys::global().to_string(),
            Target::Tenant { tenant } => keys::tenant(tenant),
            Target::User { tenant, user } => keys::user(tenant, user),
            Target::Session { tenant, sid } => keys::session(tenant, sid),
        }
    }
}

/// Key names: one small key per epoch, each id percent-encoded so that ids holding `/`
/// never collide (`t=a/b, u=c` is not `t=a, u=b/c`).
pub mod keys {
    use super::percent_encode;

    /// The global epoch.
    pub fn global() -> &'static str {
        "g"
    }
    /// A tenant's epoch.
    pub fn tenant(tenant: &str) -> String {
        format!("t/{}", percent_encode(tenant))
    }
    /// A user's epoch within a tenant.
    pub fn user(tenant: &str, user: &str) -> String {
        format!("u/{}/{}", percent_encode(tenant), percent_encode(user))
    }
    /// A revoked session id within a tenant.
    pub fn session(tenant: &str, sid: &str) -> String {
        format!("s/{}/{}", percent_encode(tenant), percent_encode(sid))
    }
    /// Whether `key` is one of the epoch keys above (and not, say, the sync status).
    pub fn is_epoch_key(key: &str) -> bool {
        key == "g" || key.starts_with("t/") || key.starts_with("u/") || key.starts_with("s/")
    }
}

/// Encodes an epoch for storage under its key: decimal milliseconds.
pub fn encode_epoch(epoch_ms: u64) -> Vec<u8> {
    epoch_ms.to_string().into_bytes()
}

/// Decodes a stored epoch. An empty value is a removed entry (the proxy-wasm ABI cannot
/// delete a key); anything unreadable counts as absent.
pub fn decode_epoch(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Read access to the epochs, wherever they are kept.
pub trait EpochSource {
    /// The epoch in milliseconds stored under `key`, if any.
    fn epoch_ms(&self, key: &str) -> Option<u64>;
}

/// Why a token's session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The session's start is at or before the largest applicable epoch.
    Epoch { epoch_ms: u64 },
    /// The token's `sid` is revoked.
    Session,
}

/// The revocation rule of DESIGN.md.
///
/// `start_s` is the token's `auth_time` if present, else its `iat`. With `E` the largest
/// of the global, tenant and user epochs (ms), the token is revoked when
/// `start_s <= floor(E / 1000) + margin_s`: a token from the logout's own second is
/// revoked too (`iat` has one-second resolution), a token from the next second passes.
/// A token whose `sid` is revoked is revoked whatever its time.
pub fn check_revocation(
    epochs: &impl EpochSource,
    tenant: &str,
    user: &str,
    sid: Option<&str>,
    start_s: i64,
    margin_s: u32,
) -> Result<(), Revoked> {
    let largest = [
        epochs.epoch_ms(keys::global()),
        epochs.epoch_ms(&keys::tenant(tenant)),
        epochs.epoch_ms(&keys::user(tenant, user)),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some(epoch_ms) = largest {
        let epoch_s = i64::try_from(epoch_ms / 1000).unwrap_or(i64::MAX);
        if start_s <= epoch_s.saturating_add(i64::from(margin_s)) {
            return Err(Revoked::Epoch { epoch_ms });
        }
    }
    if let Some(sid) = sid {
        if epochs.epoch_ms(&keys::session(tenant, sid)).is_some() {
            return Err(Revoked::Session);
        }
    }
    Ok(())
}

/// Whether an entry set at `epoch_ms` can be dropped at `now_ms`: once a whole session
/// lifetime has passed, no login from before the epoch can still produce a valid token.
/// The horizon is the longest a login can keep minting tokens through refresh (those
/// tokens keep the original `auth_time`), not the access token's lifetime.
pub fn is_compactable(epoch_ms: u64, now_ms: u64, max_session_lifetime_s: u64) -> bool {
    epoch_ms.saturating_add(max_session_lifetime_s.saturating_mul(1000)) < now_ms
}

/// An in-memory epoch map, kept in step with the control plane by [`crate::sync`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationState {
    entries: HashMap<String, u64>,
}

impl RevocationState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets (or, with `None`, removes) the entry for `target`. Epochs only move forward:
    /// a later logout never makes an earlier one undone, and an older value is ignored.
    pub fn set(&mut self, target: &Target, epoch_ms: Option<u64>) {
        let key = target.key();
        match epoch_ms {
            Some(ms) => {
                let entry = self.entries.entry(key).or_insert(ms);
                *entry = (*entry).max(ms);
            }
            None => {
                self.entries.remove(&key);
            }
        }
    }

    /// Drops every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops the entries that no live token can match any more (see [`is_compactable`]);
    /// returns how many were dropped.
    pub fn compact(&mut self, now_ms: u64, max_session_lifetime_s: u64) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, &mut ms| !is_compactable(ms, now_ms, max_session_lifetime_s));
        before - self.entries.len()
    }
}

impl EpochSource for RevocationState {
    fn epoch_ms(&self, key: &str) -> Option<u64> {
        self.entries.get(key).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: u64 = 1_799_999_900_400; // a logout at …900.4 s

    fn user_logout(tenant: &str, user: &str, ms: u64) -> RevocationState {
        let mut s = RevocationState::new();
        s.set(
            &Target::User {
                tenant: tenant.into(),
                user: user.into(),
            },
            Some(ms),
        );
        s
    }

    #[test]
    fn token_before_user_epoch_is_revoked() {
        let s = user_logout("acme", "42", E);
        assert_eq!(
            check_revocation(&s, "acme", "42", None, 1_799_999_400, 0),
            Err(Revoked::Epoch { epoch_ms: E })
        );
    }

    #[test]
    fn token_from_the_logout_second_is_revoked() {
        let s = user_logout("acme", "42", E);
        assert!(check_revocation(&s, "acme", "42", None, 1_799_999_900, 0).is_err());
    }

    #[test]
    fn token_from_the_next_second_passes() {
        let s = user_logout("acme", "42", E);
        assert_eq!(
            check_revocation(&s, "acme", "42", None, 1_799_999_901, 0),
            Ok(())
        );
    }

    #[test]
    fn clock_margin_widens_the_rule() {
        let s = user_logout("acme", "42", E);
        assert!(check_revocation(&s, "acme", "42", None, 1_799_999_902, 2).is_err());
        assert!(check_revocation(&s, "acme", "42", None, 1_799_999_903, 2).is_ok());
    }

    #[test]
    fn user_epoch_is_per_tenant_and_user() {
        let s = user_logout("acme", "42", E);
        assert!(check_revocation(&s, "acme", "43", None, 1, 0).is_ok());
        assert!(check_revocation(&s, "globex", "42", None, 1, 0).is_ok());
    }

    #[test]
    fn largest_applicable_epoch_applies() {
        let mut s = RevocationState::new();
        s.set(&Target::Global, Some(1_000_000));
        s.set(
            &Target::Tenant {
                tenant: "acme".into(),
            },
            Some(5_000_000),
        );
        s.set(
            &Target::User {
                tenant: "acme".into(),
                user: "42".into(),
            },
            Some(3_000_000),
        );
        assert!(check_revocation(&s, "acme", "42", None, 4_000, 0).is_err());
        assert!(check_revocation(&s, "acme", "42", None, 5_001, 0).is_ok());
        assert!(check_revocation(&s, "globex", "42", None, 999, 0).is_err());
        assert!(check_revocation(&s, "globex", "42", None, 1_001, 0).is_ok());
    }

    #[test]
    fn revoked_session_is_revoked_whatever_its_time() {
        let mut s = RevocationState::new();
        s.set(
            &Target::Session {
                tenant: "acme".into(),
                sid: "s1".into(),
            },
            Some(E),
        );
        assert_eq!(
            check_revocation(&s, "acme", "42", Some("s1"), i64::MAX, 0),
            Err(Revoked::Session)
        );
        assert!(check_revocation(&s, "acme", "42", Some("s2"), 1, 0).is_ok());
        assert!(check_revocation(&s, "globex", "42", Some("s1"), 1, 0).is_ok());
    }

    #[test]
    fn ids_with_slash_do_not_collide() {
        let s = user_logout("a/b", "c", E);
        assert!(check_revocation(&s, "a", "b/c", None, 1, 0).is_ok());
        assert!(check_revocation(&s, "a/b", "c", None, 1, 0).is_err());
    }

    #[test]
    fn epochs_only_move_forward() {
        let mut s = user_logout("acme", "42", E);
        s.set(
            &Target::User {
                tenant: "acme".into(),
                user: "42".into(),
            },
            Some(E - 10_000),
        );
        assert_eq!(s.epoch_ms(&keys::user("acme", "42")), Some(E));
    }

    #[test]
    fn compaction_uses_the_session_lifetime_not_the_token_lifetime() {
        let mut s = user_logout("acme", "42", 1_000_000);
        // an hour later, with 8 h sessions (refresh tokens), the entry must stay
        assert_eq!(s.compact(1_000_000 + 3_600_000, 8 * 3600), 0);
        assert_eq!(s.len(), 1);
        // past the session lifetime it goes
        assert_eq!(s.compact(1_000_000 + 8 * 3_600_000 + 1, 8 * 3600), 1);
        assert!(s.is_empty());
    }

    #[test]
    fn stored_epochs_round_trip_and_empty_means_removed() {
        assert_eq!(decode_epoch(&encode_epoch(E)), Some(E));
        assert_eq!(decode_epoch(b""), None);
        assert_eq!(decode_epoch(b"garbage"), None);
    }
}
