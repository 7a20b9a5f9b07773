//! The revocation epoch map and the revocation rule.
//!
//! Every entry is one small key (see [`keys`]) holding a millisecond timestamp: the
//! global epoch, a tenant's epoch, a user's epoch (per tenant), or the time a session id
//! (per tenant) was revoked. The filter keeps these keys in Envoy's shared data; the
//! worker and the tests keep them in a [`RevocationState`]. Both are read through
//! [`EpochSource`], so the rule in [`check_revocation`] is written once.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::claims::Identity;
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
    /// Every tenant, from a time announced in advance (`epoch_ms` in the future).
    ScheduledGlobal,
    /// Every user of one tenant, from a time announced in advance.
    ScheduledTenant { tenant: String },
}

impl Target {
    /// The key this entry lives under (shared data, [`RevocationState`]).
    pub fn key(&self) -> String {
        match self {
            Target::Global => keys::global().to_string(),
            Target::Tenant { tenant } => keys::tenant(tenant),
            Target::User { tenant, user } => keys::user(tenant, user),
            Target::Session { tenant, sid } => keys::session(tenant, sid),
            Target::ScheduledGlobal => keys::scheduled_global().to_string(),
            Target::ScheduledTenant { tenant } => keys::scheduled_tenant(tenant),
        }
    }

    /// The target a [`Target::key`] names; `None` if it names none.
    pub fn from_key(key: &str) -> Option<Target> {
        use crate::ids::percent_decode;
        let mut parts = key.split('/');
        let kind = parts.next()?;
        let a = parts.next().map(percent_decode);
        let b = parts.next().map(percent_decode);
        if parts.next().is_some() {
            return None;
        }
        Some(match (kind, a, b) {
            ("g", None, None) => Target::Global,
            ("sg", None, None) => Target::ScheduledGlobal,
            ("t", Some(t), None) => Target::Tenant { tenant: t? },
            ("st", Some(t), None) => Target::ScheduledTenant { tenant: t? },
            ("u", Some(t), Some(u)) => Target::User {
                tenant: t?,
                user: u?,
            },
            ("s", Some(t), Some(sid)) => Target::Session {
                tenant: t?,
                sid: sid?,
            },
            _ => return None,
        })
    }

    /// Whether a new value replaces the old one (a schedule can be moved earlier) rather
    /// than only moving it forward (an epoch never goes back).
    pub fn is_scheduled(&self) -> bool {
        matches!(
            self,
            Target::ScheduledGlobal | Target::ScheduledTenant { .. }
        )
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
    /// A scheduled global logout.
    pub fn scheduled_global() -> &'static str {
        "sg"
    }
    /// A tenant's scheduled logout.
    pub fn scheduled_tenant(tenant: &str) -> String {
        format!("st/{}", percent_encode(tenant))
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
/// of the applicable epochs (ms) — global, the tenant's, the user's, and for an
/// impersonation token its actors' tenant and user epochs — the token is revoked when
/// `start_s <= floor(E / 1000) + margin_s`: a token from the logout's own second is
/// revoked too (`iat` has one-second resolution), a token from the next second passes.
/// A token whose `sid` is revoked is revoked whatever its time.
///
/// Scheduled logouts (global or tenant, an epoch in the future) apply from their time
/// on; before it, the token passes and `Ok(Some(at_ms))` announces the earliest one.
pub fn check_revocation(
    epochs: &impl EpochSource,
    id: &Identity,
    now_ms: u64,
    margin_s: u32,
) -> Result<Option<u64>, Revoked> {
    let mut largest: Option<u64> = None;
    let mut upcoming: Option<u64> = None;
    let mut consider = |epoch: Option<u64>| {
        if let Some(ms) = epoch {
            largest = Some(largest.map_or(ms, |l| l.max(ms)));
        }
    };
    consider(epochs.epoch_ms(keys::global()));
    consider(epochs.epoch_ms(&keys::tenant(&id.tenant)));
    consider(epochs.epoch_ms(&keys::user(&id.tenant, &id.user)));
    for actor in &id.actors {
        consider(epochs.epoch_ms(&keys::tenant(&actor.tenant)));
        consider(epochs.epoch_ms(&keys::user(&actor.tenant, &actor.user)));
    }
    for scheduled in [
        epochs.epoch_ms(keys::scheduled_global()),
        epochs.epoch_ms(&keys::scheduled_tenant(&id.tenant)),
    ]
    .into_iter()
    .flatten()
    {
        if scheduled <= now_ms {
            consider(Some(scheduled));
        } else {
            upcoming = Some(upcoming.map_or(scheduled, |u| u.min(scheduled)));
        }
    }
    if let Some(epoch_ms) = largest {
        let epoch_s = i64::try_from(epoch_ms / 1000).unwrap_or(i64::MAX);
        if id.session_start <= epoch_s.saturating_add(i64::from(margin_s)) {
            return Err(Revoked::Epoch { epoch_ms });
        }
    }
    if let Some(sid) = &id.session {
        if epochs.epoch_ms(&keys::session(&id.tenant, sid)).is_some() {
            return Err(Revoked::Session);
        }
    }
    Ok(upcoming)
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
            Some(ms) if target.is_scheduled() => {
                self.entries.insert(key, ms);
            }
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
    use crate::claims::Actor;

    const E: u64 = 1_799_999_900_400; // a logout at …900.4 s
    const NOW: u64 = 1_800_000_000_000;

    fn ident(
        tenant: &str,
        user: &str,
        sid: Option<&str>,
        start_s: i64,
        actors: Vec<Actor>,
    ) -> Identity {
        Identity {
            user: user.into(),
            tenant: tenant.into(),
            session: sid.map(str::to_string),
            actors,
            issued_at: Some(start_s),
            session_start: start_s,
            expires_at: 0.0,
        }
    }

    fn check(
        s: &RevocationState,
        tenant: &str,
        user: &str,
        sid: Option<&str>,
        start_s: i64,
        margin_s: u32,
    ) -> Result<Option<u64>, Revoked> {
        check_revocation(s, &ident(tenant, user, sid, start_s, vec![]), NOW, margin_s)
    }

    #[test]
    fn a_logout_of_the_actor_or_the_subject_ends_an_impersonation_token() {
        let actor = Actor {
            tenant: "support".into(),
            user: "agent-7".into(),
        };
        let token = ident("acme", "42", None, 1_799_999_400, vec![actor]);
        let mut s = user_logout("support", "agent-7", E);
        assert_eq!(
            check_revocation(&s, &token, NOW, 0),
            Err(Revoked::Epoch { epoch_ms: E })
        );
        s = user_logout("acme", "42", E);
        assert!(check_revocation(&s, &token, NOW, 0).is_err());
        s = user_logout("acme", "agent-7", E);
        assert_eq!(
            check_revocation(&s, &token, NOW, 0),
            Ok(None),
            "the actor's id in another tenant"
        );
        s = RevocationState::new();
        s.set(
            &Target::Tenant {
                tenant: "support".into(),
            },
            Some(E),
        );
        assert!(
            check_revocation(&s, &token, NOW, 0).is_err(),
            "the actor's tenant"
        );
    }

    #[test]
    fn scheduled_logout_applies_from_its_time_and_is_announced_before() {
        let mut s = RevocationState::new();
        let at = NOW + 600_000;
        s.set(
            &Target::ScheduledTenant {
                tenant: "acme".into(),
            },
            Some(at),
        );
        let token = ident("acme", "42", None, 1_799_999_400, vec![]);
        assert_eq!(check_revocation(&s, &token, NOW, 0), Ok(Some(at)));
        assert_eq!(
            check_revocation(&s, &token, at, 0),
            Err(Revoked::Epoch { epoch_ms: at })
        );
        // A login after the scheduled time passes.
        let later = ident("acme", "42", None, (at / 1000 + 1) as i64, vec![]);
        assert_eq!(check_revocation(&s, &later, at + 5_000, 0), Ok(None));
        // Other tenants are not affected, nor announced.
        assert_eq!(
            check_revocation(&s, &ident("globex", "42", None, 1, vec![]), NOW, 0),
            Ok(None)
        );
        // The global one, the earliest announced.
        s.set(&Target::ScheduledGlobal, Some(at - 1));
        assert_eq!(check_revocation(&s, &token, NOW, 0), Ok(Some(at - 1)));
    }

    #[test]
    fn a_schedule_can_move_earlier_an_epoch_cannot() {
        let mut s = RevocationState::new();
        s.set(&Target::ScheduledGlobal, Some(NOW + 10));
        s.set(&Target::ScheduledGlobal, Some(NOW + 5));
        assert_eq!(s.epoch_ms(keys::scheduled_global()), Some(NOW + 5));
        s.set(&Target::Global, Some(NOW + 10));
        s.set(&Target::Global, Some(NOW + 5));
        assert_eq!(s.epoch_ms(keys::global()), Some(NOW + 10));
    }

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
            check(&s, "acme", "42", None, 1_799_999_400, 0),
            Err(Revoked::Epoch { epoch_ms: E })
        );
    }

    #[test]
    fn token_from_the_logout_second_is_revoked() {
        let s = user_logout("acme", "42", E);
        assert!(check(&s, "acme", "42", None, 1_799_999_900, 0).is_err());
    }

    #[test]
    fn token_from_the_next_second_passes() {
        let s = user_logout("acme", "42", E);
        assert_eq!(check(&s, "acme", "42", None, 1_799_999_901, 0), Ok(None));
    }

    #[test]
    fn clock_margin_widens_the_rule() {
        let s = user_logout("acme", "42", E);
        assert!(check(&s, "acme", "42", None, 1_799_999_902, 2).is_err());
        assert!(check(&s, "acme", "42", None, 1_799_999_903, 2).is_ok());
    }

    #[test]
    fn user_epoch_is_per_tenant_and_user() {
        let s = user_logout("acme", "42", E);
        assert!(check(&s, "acme", "43", None, 1, 0).is_ok());
        assert!(check(&s, "globex", "42", None, 1, 0).is_ok());
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
        assert!(check(&s, "acme", "42", None, 4_000, 0).is_err());
        assert!(check(&s, "acme", "42", None, 5_001, 0).is_ok());
        assert!(check(&s, "globex", "42", None, 999, 0).is_err());
        assert!(check(&s, "globex", "42", None, 1_001, 0).is_ok());
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
            check(&s, "acme", "42", Some("s1"), i64::MAX, 0),
            Err(Revoked::Session)
        );
        assert!(check(&s, "acme", "42", Some("s2"), 1, 0).is_ok());
        assert!(check(&s, "globex", "42", Some("s1"), 1, 0).is_ok());
    }

    #[test]
    fn ids_with_slash_do_not_collide() {
        let s = user_logout("a/b", "c", E);
        assert!(check(&s, "a", "b/c", None, 1, 0).is_ok());
        assert!(check(&s, "a/b", "c", None, 1, 0).is_err());
    }

    #[test]
    fn keys_name_their_target_back() {
        for t in [
            Target::Global,
            Target::ScheduledGlobal,
            Target::Tenant {
                tenant: "a/b".into(),
            },
            Target::ScheduledTenant {
                tenant: "acme".into(),
            },
            Target::User {
                tenant: "a".into(),
                user: "auth0|x/y".into(),
            },
            Target::Session {
                tenant: "a".into(),
                sid: "s 1".into(),
            },
        ] {
            assert_eq!(Target::from_key(&t.key()), Some(t.clone()), "{t:?}");
        }
        for bad in ["", "x", "g/1", "u/a", "u/a/b/c", "t/%zz", "state"] {
            assert_eq!(Target::from_key(bad), None, "{bad}");
        }
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
