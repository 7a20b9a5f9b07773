//! The revocation epoch map, the revocation rule, and how an edge takes changes.
//!
//! Every entry is one small key (see [`keys`]) holding a millisecond timestamp: the
//! global epoch, a tenant's epoch, a user's epoch (per tenant), the time a session id
//! (per tenant) was revoked, or a scheduled logout's time. Every edge holds them in a
//! [`RevocationState`] (the sync client's, [`crate::sync::client`]); Envoy's filter VMs
//! read the copy the sync VM mirrors into shared data. Both are read through
//! [`EpochSource`], so the rule in [`check_revocation`] is written once.
//!
//! **What an edge holds only moves forward** (DESIGN.md, Invariant 1): immediate epochs
//! and revoked sessions are merged by `max`, whatever the answer (a delta, a snapshot of
//! a lower version, another stream, a page); an edge drops an entry only once it is past
//! the compaction horizon by its own clock ([`is_compactable`]) — which is safe because
//! it also denies every session older than that horizon ([`session_expired`]). A
//! pending scheduled logout may be replaced or cancelled; one whose time has passed is a
//! logout that happened, and is folded into the immediate epoch first.

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

    /// Whether a new value replaces the old one (a pending schedule can be moved or
    /// cancelled) rather than only moving it forward (an epoch never goes back).
    pub fn is_scheduled(&self) -> bool {
        matches!(
            self,
            Target::ScheduledGlobal | Target::ScheduledTenant { .. }
        )
    }

    /// The immediate target a scheduled one becomes once its time has passed.
    pub fn folds_into(&self) -> Option<Target> {
        match self {
            Target::ScheduledGlobal => Some(Target::Global),
            Target::ScheduledTenant { tenant } => Some(Target::Tenant {
                tenant: tenant.clone(),
            }),
            _ => None,
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

/// The state could not be read (a host call failed): a token is then neither known to
/// be valid nor known to be revoked, and is denied as `state_unavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// Read access to the epochs, wherever they are kept.
pub trait EpochSource {
    /// The epoch in milliseconds stored under `key`, if any; `Err` if it could not be read.
    fn epoch_ms(&self, key: &str) -> Result<Option<u64>, Unreadable>;
}

/// Why a token's session is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// The session's start is at or before the largest applicable epoch.
    Epoch { epoch_ms: u64 },
    /// The token's `sid` is revoked.
    Session,
    /// The state could not be read: fail closed (see [`Unreadable`]).
    Unreadable,
}

impl From<Unreadable> for Revoked {
    fn from(_: Unreadable) -> Self {
        Revoked::Unreadable
    }
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
/// Scheduled logouts (global, the token's tenant, its actors' tenants) apply from their
/// time on; before it, the token passes and `Ok(Some(at_ms))` announces the earliest.
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
    consider(epochs.epoch_ms(keys::global())?);
    consider(epochs.epoch_ms(&keys::tenant(&id.tenant))?);
    consider(epochs.epoch_ms(&keys::user(&id.tenant, &id.user))?);
    for actor in &id.actors {
        consider(epochs.epoch_ms(&keys::tenant(&actor.tenant))?);
        consider(epochs.epoch_ms(&keys::user(&actor.tenant, &actor.user))?);
    }
    let mut scheduled = vec![
        epochs.epoch_ms(keys::scheduled_global())?,
        epochs.epoch_ms(&keys::scheduled_tenant(&id.tenant))?,
    ];
    for actor in id.actors.iter().filter(|a| a.tenant != id.tenant) {
        scheduled.push(epochs.epoch_ms(&keys::scheduled_tenant(&actor.tenant))?);
    }
    for at in scheduled.into_iter().flatten() {
        if at <= now_ms {
            consider(Some(at));
        } else {
            upcoming = Some(upcoming.map_or(at, |u| u.min(at)));
        }
    }
    if let Some(epoch_ms) = largest {
        let epoch_s = i64::try_from(epoch_ms / 1000).unwrap_or(i64::MAX);
        if id.session_start <= epoch_s.saturating_add(i64::from(margin_s)) {
            return Err(Revoked::Epoch { epoch_ms });
        }
    }
    if let Some(sid) = &id.session {
        if epochs.epoch_ms(&keys::session(&id.tenant, sid))?.is_some() {
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

/// The first millisecond at which a session that started at `start_s` is over by the
/// horizon (see [`session_expired`]).
pub fn session_end_ms(start_s: i64, horizon_s: u64, margin_s: u32) -> u64 {
    let end_s = i128::from(start_s) - i128::from(margin_s) + i128::from(horizon_s);
    u64::try_from((end_s * 1000 + 1).max(0)).unwrap_or(u64::MAX)
}

/// The other half of compaction (`session_expired`): a session that started more than
/// the horizon (`max_session_lifetime_s`, from the control plane) ago is over, whatever
/// its tokens say. Any token an entry revoked (`start_s <= floor(E / 1000) + margin_s`)
/// is expired by the time that entry [`is_compactable`] — so dropping it brings no one
/// back, even from an IdP whose refresh tokens never expire. The margin is taken off
/// the start for that reason: an IdP clock ahead by `margin_s` cannot stretch a session.
pub fn session_expired(start_s: i64, now_ms: u64, horizon_s: u64, margin_s: u32) -> bool {
    now_ms >= session_end_ms(start_s, horizon_s, margin_s)
}

/// One write an edge made to its state, for hosts that mirror it elsewhere (the filter
/// into Envoy's shared data): the key and its new value, `None` for a removed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryWrite {
    pub key: String,
    pub epoch_ms: Option<u64>,
}

/// What taking one change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The state holds what the change says (it may already have).
    Applied,
    /// The edge holds a later epoch than the change: kept (epochs never go back).
    KeptLater,
    /// A removal of an entry that is not yet past the horizon by this edge's clock:
    /// kept until it is (then [`RevocationState::compact`] drops it).
    KeptUntilHorizon,
}

/// Packed to 4-byte alignment: 12 bytes, so that an entry (`Box<str>` key and this) is 20
/// bytes in wasm32 rather than 24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, packed(4))]
struct Held {
    epoch_ms: u64,
    /// The snapshot (generation) that last held this entry, see
    /// [`RevocationState::begin_snapshot`].
    seen: u32,
}

/// The epochs an edge holds, and the rules by which it takes changes (see the module
/// doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationState {
    /// Keys as `Box<str>`, not `String`: one word less per entry in a table of up to
    /// millions (`make bench`'s memory section).
    entries: HashMap<Box<str>, Held>,
    /// The snapshot being taken, if one is (its generation).
    snapshot: Option<u32>,
    generation: u32,
}

impl RevocationState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets an entry as it is (tests, the decision vectors): an immediate epoch by
    /// `max`, a schedule replaced, `None` removed — without the edge's other rules (see
    /// [`RevocationState::take`]).
    pub fn set(&mut self, target: &Target, epoch_ms: Option<u64>) {
        let key = target.key();
        match epoch_ms {
            Some(ms) if target.is_scheduled() => {
                self.entries.insert(
                    key.into_boxed_str(),
                    Held {
                        epoch_ms: ms,
                        seen: 0,
                    },
                );
            }
            Some(ms) => {
                let held = self.entries.entry(key.into_boxed_str()).or_insert(Held {
                    epoch_ms: ms,
                    seen: 0,
                });
                held.epoch_ms = held.epoch_ms.max(ms);
            }
            None => {
                self.entries.remove(key.as_str());
            }
        }
    }

    /// Stores `epoch_ms` under `key` (marking it as held by the snapshot being taken, if
    /// one is), recording a write when the value changed.
    fn put(&mut self, key: String, epoch_ms: u64, writes: &mut Vec<EntryWrite>) {
        let snapshot = self.snapshot;
        match self.entries.get_mut(key.as_str()) {
            Some(held) => {
                if let Some(generation) = snapshot {
                    held.seen = generation;
                }
                if held.epoch_ms == epoch_ms {
                    return;
                }
                held.epoch_ms = epoch_ms;
            }
            None => {
                let seen = snapshot.unwrap_or(0);
                self.entries
                    .insert(key.as_str().into(), Held { epoch_ms, seen });
            }
        }
        writes.push(EntryWrite {
            key,
            epoch_ms: Some(epoch_ms),
        });
    }

    fn drop_key(&mut self, key: &str, writes: &mut Vec<EntryWrite>) {
        if self.entries.remove(key).is_some() {
            writes.push(EntryWrite {
                key: key.to_string(),
                epoch_ms: None,
            });
        }
    }

    /// A scheduled logout the edge holds whose time has passed becomes part of the
    /// immediate epoch it schedules (tenant, global): it happened. One already past the
    /// horizon is not folded: every session it ended is over anyway ([`session_expired`]),
    /// and folding it could bring back, lower, an immediate epoch just compacted.
    fn fold_if_passed(
        &mut self,
        scheduled: &Target,
        now_ms: u64,
        horizon_s: u64,
        writes: &mut Vec<EntryWrite>,
    ) {
        let Some(held) = self
            .entries
            .get(scheduled.key().as_str())
            .map(|h| h.epoch_ms)
        else {
            return;
        };
        let Some(immediate) = scheduled.folds_into() else {
            return;
        };
        if held > now_ms || is_compactable(held, now_ms, horizon_s) {
            return;
        }
        let key = immediate.key();
        let current = self.entries.get(key.as_str()).map(|h| h.epoch_ms);
        if current.is_none_or(|c| c < held) {
            // Not marked as held by a snapshot: it is what this edge adds.
            let seen = self.entries.get(key.as_str()).map_or(0, |h| h.seen);
            self.entries.insert(
                key.as_str().into(),
                Held {
                    epoch_ms: held,
                    seen,
                },
            );
            writes.push(EntryWrite {
                key,
                epoch_ms: Some(held),
            });
        }
    }

    /// Takes one change from the control plane as an edge must (see the module doc):
    /// an immediate epoch by `max`; a removal only once past the horizon by `now_ms`;
    /// a schedule replaced or removed, after folding a passed one into its immediate
    /// epoch. The writes it made are appended to `writes`.
    pub fn take(
        &mut self,
        target: &Target,
        epoch_ms: Option<u64>,
        now_ms: u64,
        horizon_s: u64,
        writes: &mut Vec<EntryWrite>,
    ) -> Taken {
        let key = target.key();
        if target.is_scheduled() {
            if self.entries.get(key.as_str()).map(|h| h.epoch_ms) != epoch_ms {
                self.fold_if_passed(target, now_ms, horizon_s, writes);
            }
            match epoch_ms {
                Some(ms) => self.put(key, ms, writes),
                None => self.drop_key(&key, writes),
            }
            return Taken::Applied;
        }
        let held = self.entries.get(key.as_str()).map(|h| h.epoch_ms);
        match (epoch_ms, held) {
            (Some(ms), Some(h)) if h > ms => {
                self.put(key, h, writes);
                Taken::KeptLater
            }
            (Some(ms), _) => {
                self.put(key, ms, writes);
                Taken::Applied
            }
            (None, Some(h)) if !is_compactable(h, now_ms, horizon_s) => Taken::KeptUntilHorizon,
            (None, _) => {
                self.drop_key(&key, writes);
                Taken::Applied
            }
        }
    }

    /// A snapshot begins: [`RevocationState::end_snapshot`] then knows which entries it
    /// did not hold.
    pub fn begin_snapshot(&mut self) {
        self.generation = self.generation.wrapping_add(1).max(1);
        self.snapshot = Some(self.generation);
    }

    /// The snapshot (all its pages) is taken: the entries it did not hold are kept
    /// (immediate ones, until past the horizon) or, for schedules, cancelled — a passed
    /// one folded first. Returns how many immediate entries were kept that the snapshot
    /// lacked: more than a few says the control plane lost logouts (a restore).
    pub fn end_snapshot(
        &mut self,
        now_ms: u64,
        horizon_s: u64,
        writes: &mut Vec<EntryWrite>,
    ) -> usize {
        let Some(generation) = self.snapshot.take() else {
            return 0;
        };
        let mut unseen: Vec<(String, u64)> = self
            .entries
            .iter()
            .filter(|(_, h)| h.seen != generation)
            .map(|(k, h)| (k.to_string(), h.epoch_ms))
            .collect();
        // Schedules first: a passed one folds into its immediate epoch before that epoch
        // is judged for compaction.
        unseen.sort_unstable_by_key(|(key, _)| {
            !Target::from_key(key).is_some_and(|t| t.is_scheduled())
        });
        let mut kept = 0;
        for (key, epoch_ms) in unseen {
            match Target::from_key(&key) {
                Some(target) if target.is_scheduled() => {
                    self.take(&target, None, now_ms, horizon_s, writes);
                }
                _ if is_compactable(epoch_ms, now_ms, horizon_s) => self.drop_key(&key, writes),
                _ => kept += 1,
            }
        }
        kept
    }

    /// Whether a snapshot is being taken.
    pub fn in_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }

    /// Drops the entries no live session can match any more (see [`is_compactable`]);
    /// returns how many were dropped.
    pub fn compact(&mut self, now_ms: u64, horizon_s: u64, writes: &mut Vec<EntryWrite>) -> usize {
        let gone: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, h)| is_compactable(h.epoch_ms, now_ms, horizon_s))
            .map(|(k, _)| k.to_string())
            .collect();
        for key in &gone {
            self.drop_key(key, writes);
        }
        gone.len()
    }

    /// Every entry as a write (a host that lost its mirror writes them all again).
    pub fn all_writes(&self) -> Vec<EntryWrite> {
        self.entries
            .iter()
            .map(|(key, h)| EntryWrite {
                key: key.to_string(),
                epoch_ms: Some(h.epoch_ms),
            })
            .collect()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl EpochSource for RevocationState {
    fn epoch_ms(&self, key: &str) -> Result<Option<u64>, Unreadable> {
        Ok(self.entries.get(key).map(|h| h.epoch_ms))
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
        assert_eq!(s.epoch_ms(keys::scheduled_global()), Ok(Some(NOW + 5)));
        s.set(&Target::Global, Some(NOW + 10));
        s.set(&Target::Global, Some(NOW + 5));
        assert_eq!(s.epoch_ms(keys::global()), Ok(Some(NOW + 10)));
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
        assert_eq!(s.epoch_ms(&keys::user("acme", "42")), Ok(Some(E)));
    }

    #[test]
    fn compaction_uses_the_session_lifetime_not_the_token_lifetime() {
        let mut s = user_logout("acme", "42", 1_000_000);
        let mut w = Vec::new();
        // an hour later, with 8 h sessions (refresh tokens), the entry must stay
        assert_eq!(s.compact(1_000_000 + 3_600_000, 8 * 3600, &mut w), 0);
        assert_eq!(s.len(), 1);
        // past the session lifetime it goes
        assert_eq!(
            s.compact(1_000_000 + 8 * 3_600_000 + 1, 8 * 3600, &mut w),
            1
        );
        assert!(s.is_empty());
        assert_eq!(
            w,
            vec![EntryWrite {
                key: keys::user("acme", "42"),
                epoch_ms: None
            }]
        );
    }

    const H: u64 = 8 * 3600;

    fn take(
        s: &mut RevocationState,
        t: &Target,
        ms: Option<u64>,
        now: u64,
    ) -> (Taken, Vec<EntryWrite>) {
        let mut w = Vec::new();
        let taken = s.take(t, ms, now, H, &mut w);
        (taken, w)
    }

    fn acme() -> Target {
        Target::Tenant {
            tenant: "acme".into(),
        }
    }

    fn scheduled_acme() -> Target {
        Target::ScheduledTenant {
            tenant: "acme".into(),
        }
    }

    #[test]
    fn an_edge_takes_immediate_epochs_by_max_and_drops_them_only_past_the_horizon() {
        let mut s = RevocationState::new();
        let u = Target::User {
            tenant: "acme".into(),
            user: "42".into(),
        };
        assert_eq!(take(&mut s, &u, Some(E), NOW).0, Taken::Applied);
        let (taken, w) = take(&mut s, &u, Some(E - 1), NOW);
        assert_eq!((taken, w.len()), (Taken::KeptLater, 0));
        assert_eq!(s.epoch_ms(&u.key()), Ok(Some(E)));
        // A removal (compaction) before the horizon by the edge's own clock is kept …
        let (taken, w) = take(&mut s, &u, None, E + H * 1000);
        assert_eq!((taken, w.len()), (Taken::KeptUntilHorizon, 0));
        assert_eq!(s.epoch_ms(&u.key()), Ok(Some(E)));
        // … and applied past it.
        let (taken, w) = take(&mut s, &u, None, E + H * 1000 + 1);
        assert_eq!(taken, Taken::Applied);
        assert_eq!(
            w,
            vec![EntryWrite {
                key: u.key(),
                epoch_ms: None
            }]
        );
    }

    #[test]
    fn a_passed_schedule_folds_into_its_immediate_epoch_before_it_is_replaced_or_cancelled() {
        for replacement in [Some(NOW + 86_400_000), None] {
            let mut s = RevocationState::new();
            take(&mut s, &acme(), Some(E - 5_000), NOW);
            take(&mut s, &scheduled_acme(), Some(NOW - 1_000), NOW - 60_000);
            let (_, w) = take(&mut s, &scheduled_acme(), replacement, NOW);
            assert_eq!(
                s.epoch_ms(&acme().key()),
                Ok(Some(NOW - 1_000)),
                "{replacement:?}"
            );
            assert_eq!(s.epoch_ms(&scheduled_acme().key()), Ok(replacement));
            assert_eq!(
                w[0],
                EntryWrite {
                    key: acme().key(),
                    epoch_ms: Some(NOW - 1_000)
                },
                "the fold is written before the schedule changes"
            );
        }
        // The global one likewise.
        let mut s = RevocationState::new();
        take(
            &mut s,
            &Target::ScheduledGlobal,
            Some(NOW - 1),
            NOW - 60_000,
        );
        take(&mut s, &Target::ScheduledGlobal, Some(NOW + 5_000), NOW);
        assert_eq!(s.epoch_ms(keys::global()), Ok(Some(NOW - 1)));
        // A later immediate epoch is not lowered by a fold.
        let mut s = RevocationState::new();
        take(&mut s, &acme(), Some(NOW), NOW);
        take(&mut s, &scheduled_acme(), Some(NOW - 10), NOW - 60_000);
        take(&mut s, &scheduled_acme(), None, NOW);
        assert_eq!(s.epoch_ms(&acme().key()), Ok(Some(NOW)));
    }

    #[test]
    fn an_epoch_past_the_horizon_never_comes_back_lower_from_a_fold() {
        // Found by the sync_apply fuzz target: the global epoch, past the horizon, was
        // dropped, then a passed schedule older still was folded into it — the entry came
        // back lower (1 → 0). A schedule past the horizon is dropped, not folded, and a
        // snapshot folds its lacked schedules before it drops lacked epochs.
        let old = NOW - H * 1000 - 10;
        let mut s = RevocationState::new();
        take(&mut s, &Target::Global, Some(old + 1), NOW - 1);
        take(&mut s, &Target::ScheduledGlobal, Some(old), NOW - 1);
        take(&mut s, &Target::Global, None, NOW);
        let (_, w) = take(&mut s, &Target::ScheduledGlobal, None, NOW);
        assert_eq!(s.epoch_ms(keys::global()), Ok(None), "{w:?}");
        // Through a snapshot that lacks both, whatever order the map iterates in.
        for _ in 0..32 {
            let mut s = RevocationState::new();
            take(&mut s, &Target::Global, Some(old + 1), NOW - 1);
            take(&mut s, &Target::ScheduledGlobal, Some(old), NOW - 1);
            for n in 0..8 {
                take(
                    &mut s,
                    &Target::User {
                        tenant: "t".into(),
                        user: n.to_string(),
                    },
                    Some(E),
                    NOW,
                );
            }
            s.begin_snapshot();
            let mut w = Vec::new();
            s.end_snapshot(NOW, H, &mut w);
            assert_eq!(s.epoch_ms(keys::global()), Ok(None), "{w:?}");
            assert!(
                !w.iter()
                    .any(|w| w.key == keys::global() && w.epoch_ms == Some(old)),
                "{w:?}"
            );
        }
    }

    #[test]
    fn a_pending_schedule_is_replaced_or_cancelled_without_a_trace() {
        let mut s = RevocationState::new();
        take(&mut s, &scheduled_acme(), Some(NOW + 10_000), NOW);
        take(&mut s, &scheduled_acme(), Some(NOW + 5_000), NOW);
        assert_eq!(s.epoch_ms(&scheduled_acme().key()), Ok(Some(NOW + 5_000)));
        take(&mut s, &scheduled_acme(), None, NOW);
        assert_eq!(s.epoch_ms(&scheduled_acme().key()), Ok(None));
        assert_eq!(
            s.epoch_ms(&acme().key()),
            Ok(None),
            "a pending one never folds"
        );
    }

    #[test]
    fn a_snapshot_keeps_what_it_lacks_and_cancels_the_schedules_it_lacks() {
        let mut s = RevocationState::new();
        let u = |n: &str| Target::User {
            tenant: "acme".into(),
            user: n.into(),
        };
        take(&mut s, &u("41"), Some(E), NOW);
        take(&mut s, &u("old"), Some(1_000), NOW);
        take(&mut s, &scheduled_acme(), Some(NOW - 1), NOW - 60_000);
        take(&mut s, &Target::ScheduledGlobal, Some(NOW + 9), NOW);
        s.begin_snapshot();
        assert!(s.in_snapshot());
        let (taken, _) = take(&mut s, &u("42"), Some(E), NOW);
        assert_eq!(taken, Taken::Applied);
        let mut w = Vec::new();
        // 41 is kept (lacked); "old" is past the horizon and goes; the passed schedule is
        // folded and goes; the pending global one goes.
        assert_eq!(s.end_snapshot(NOW, H, &mut w), 1);
        assert!(!s.in_snapshot());
        assert_eq!(s.epoch_ms(&u("41").key()), Ok(Some(E)));
        assert_eq!(s.epoch_ms(&u("old").key()), Ok(None));
        assert_eq!(s.epoch_ms(&acme().key()), Ok(Some(NOW - 1)));
        assert_eq!(s.epoch_ms(&scheduled_acme().key()), Ok(None));
        assert_eq!(s.epoch_ms(keys::scheduled_global()), Ok(None));
        // A second snapshot that holds everything keeps nothing more.
        s.begin_snapshot();
        for (t, ms) in [(u("41"), E), (u("42"), E), (acme(), NOW - 1)] {
            take(&mut s, &t, Some(ms), NOW);
        }
        assert_eq!(s.end_snapshot(NOW, H, &mut Vec::new()), 0);
        assert_eq!(s.len(), 3);
        let mut all: Vec<String> = s.all_writes().into_iter().map(|w| w.key).collect();
        all.sort();
        assert_eq!(all, vec![acme().key(), u("41").key(), u("42").key()]);
    }

    #[test]
    fn an_unreadable_state_fails_closed() {
        struct Broken;
        impl EpochSource for Broken {
            fn epoch_ms(&self, _: &str) -> Result<Option<u64>, Unreadable> {
                Err(Unreadable)
            }
        }
        let token = ident("acme", "42", Some("s"), 1, vec![]);
        assert_eq!(
            check_revocation(&Broken, &token, NOW, 0),
            Err(Revoked::Unreadable)
        );
    }

    #[test]
    fn an_actors_tenant_schedule_applies_like_its_immediate_logout() {
        let actor = Actor {
            tenant: "support".into(),
            user: "agent-7".into(),
        };
        let token = ident("acme", "42", None, 1_799_999_400, vec![actor]);
        let mut s = RevocationState::new();
        s.set(
            &Target::ScheduledTenant {
                tenant: "support".into(),
            },
            Some(NOW + 1_000),
        );
        assert_eq!(
            check_revocation(&s, &token, NOW, 0),
            Ok(Some(NOW + 1_000)),
            "announced"
        );
        assert_eq!(
            check_revocation(&s, &token, NOW + 1_000, 0),
            Err(Revoked::Epoch {
                epoch_ms: NOW + 1_000
            })
        );
    }

    #[test]
    fn every_token_a_compactable_entry_revoked_is_session_expired() {
        // For epochs across a second's boundaries, margins and horizons: whenever an
        // entry may be dropped, each token it revoked is already over by the horizon.
        for horizon_s in [1u64, 4, 86_400, 7_776_000] {
            for margin_s in [0u32, 1, 5] {
                for epoch_ms in [E, E + 999, E + 1_000, E - 1] {
                    let now_ms = epoch_ms + horizon_s * 1000 + 1;
                    assert!(is_compactable(epoch_ms, now_ms, horizon_s));
                    let latest_revoked = (epoch_ms / 1000) as i64 + i64::from(margin_s);
                    for start_s in [latest_revoked, latest_revoked - 1, 0] {
                        assert!(
                            session_expired(start_s, now_ms, horizon_s, margin_s),
                            "E {epoch_ms}, start {start_s}, horizon {horizon_s}, margin {margin_s}"
                        );
                    }
                }
            }
        }
        // And a session is not cut short: one that started now lasts the horizon.
        let start_s = (NOW / 1000) as i64;
        assert!(!session_expired(start_s, NOW + 3_600_000, 7200, 0));
        assert!(!session_expired(start_s, NOW + 7_200_000, 7200, 0));
        assert!(session_expired(start_s, NOW + 7_200_001, 7200, 0));
        assert_eq!(session_end_ms(start_s, 7200, 0), NOW + 7_200_001);
    }

    #[test]
    fn stored_epochs_round_trip_and_empty_means_removed() {
        assert_eq!(decode_epoch(&encode_epoch(E)), Some(E));
        assert_eq!(decode_epoch(b""), None);
        assert_eq!(decode_epoch(b"garbage"), None);
    }
}
