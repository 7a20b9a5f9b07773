//! The sessions the edges report, as the API and the console show them: each stored
//! session judged against the tenant's revocations by the edges' own rule
//! ([`epochgate_core::state::check_revocation`]), so "revoked" here means what it means
//! at the edge — a user logout, a tenant or global logout (also a scheduled one whose
//! time has passed), or the session's `sid` revoked — and users grouped from them.
//!
//! A session is *active* when it was seen within `--session-idle` and is not revoked;
//! the users list holds the users with at least one.

use std::collections::BTreeMap;

use epochgate_core::claims::Identity;
use epochgate_core::state::{check_revocation, keys, EpochSource, RevocationState, Revoked};
use serde::{Deserialize, Serialize};

use crate::store::{Entry, SessionFilter, SessionRecord, Store, StoreError};

/// Session rows read for one users list at most (the newest); past that the answer
/// says `truncated`.
pub const MAX_SESSION_ROWS: u32 = 10_000;

/// Users a list answers when `?limit=` is absent, and the most it ever answers.
pub const DEFAULT_USERS_LIMIT: u32 = 100;
pub const MAX_USERS_LIMIT: u32 = 1000;

/// One session as `GET /v1/tenants/{tenant}/users/{user}/sessions` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    /// The token's `sid`; `None` for tokens without one (then `session_start` names it).
    pub sid: Option<String>,
    /// `auth_time`, else `iat` (seconds), the latest an edge reported.
    pub session_start: i64,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub requests: u64,
    pub device: String,
    pub address: Option<String>,
    /// The edge that saw it last.
    pub edge: String,
    /// Ended by a logout (the edges refuse its tokens).
    pub revoked: bool,
    /// The epoch of the logout that ended it.
    pub revoked_at_ms: Option<u64>,
}

/// One user as `GET /v1/tenants/{tenant}/users` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    pub user: String,
    /// Active sessions.
    pub sessions: u64,
    /// Their devices, distinct, most recently seen first.
    pub devices: Vec<String>,
    pub last_seen_ms: u64,
}

/// `GET /v1/tenants/{tenant}/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersAnswer {
    pub tenant: String,
    /// Most recently seen first.
    pub users: Vec<UserView>,
    /// Active sessions of the listed users.
    pub sessions: u64,
    /// Users and active sessions that match, listed or not (of the sessions read).
    pub total_users: u64,
    pub total_sessions: u64,
    /// More sessions matched than were read, or more users than `limit`.
    pub truncated: bool,
}

/// `GET /v1/tenants/{tenant}/users/{user}/sessions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionsAnswer {
    pub tenant: String,
    pub user: String,
    /// Most recently seen first, revoked ones included (marked) until they go idle.
    pub sessions: Vec<SessionView>,
}

/// A tenant's revocations (and the global ones) as an epoch map the rule reads.
pub fn epochs(entries: &[Entry]) -> RevocationState {
    let mut state = RevocationState::new();
    for e in entries {
        state.set(&e.target, Some(e.epoch_ms));
    }
    state
}

/// Judges one stored session at `now_ms`.
pub fn view(record: SessionRecord, epochs: &RevocationState, now_ms: u64) -> SessionView {
    let identity = Identity {
        user: record.user,
        tenant: record.tenant,
        session: record.sid,
        actors: Vec::new(),
        issued_at: None,
        session_start: record.session_start,
        expires_at: 0.0,
    };
    // The control plane does not know an edge's `clock_margin_s`: judged without it.
    let revoked_at_ms = match check_revocation(epochs, &identity, now_ms, 0) {
        Ok(_) => None,
        Err(Revoked::Epoch { epoch_ms }) => Some(epoch_ms),
        Err(Revoked::Session) => identity.session.as_deref().and_then(|sid| {
            epochs
                .epoch_ms(&keys::session(&identity.tenant, sid))
                .ok()
                .flatten()
        }),
        // An in-memory map is always readable.
        Err(Revoked::Unreadable) => None,
    };
    SessionView {
        sid: identity.session,
        session_start: record.session_start,
        first_seen_ms: record.first_seen_ms,
        last_seen_ms: record.last_seen_ms,
        requests: record.requests,
        device: record.device,
        address: record.address,
        edge: record.edge,
        revoked: revoked_at_ms.is_some(),
        revoked_at_ms,
    }
}

/// Groups the active sessions by user, most recently seen first, at most `limit` users.
pub fn users(
    tenant: &str,
    records: Vec<SessionRecord>,
    epochs: &RevocationState,
    now_ms: u64,
    limit: usize,
    rows_truncated: bool,
) -> UsersAnswer {
    let mut by_user: BTreeMap<String, UserView> = BTreeMap::new();
    // Records come newest first, so each user's devices do too.
    for record in records {
        let user = record.user.clone();
        let v = view(record, epochs, now_ms);
        if v.revoked {
            continue;
        }
        let entry = by_user.entry(user.clone()).or_insert_with(|| UserView {
            user,
            sessions: 0,
            devices: Vec::new(),
            last_seen_ms: 0,
        });
        entry.sessions += 1;
        entry.last_seen_ms = entry.last_seen_ms.max(v.last_seen_ms);
        if !entry.devices.contains(&v.device) {
            entry.devices.push(v.device);
        }
    }
    let mut users: Vec<UserView> = by_user.into_values().collect();
    users.sort_by(|a, b| {
        b.last_seen_ms
            .cmp(&a.last_seen_ms)
            .then_with(|| a.user.cmp(&b.user))
    });
    let truncated = rows_truncated || users.len() > limit;
    let total_users = users.len() as u64;
    let total_sessions = users.iter().map(|u| u.sessions).sum();
    users.truncate(limit);
    UsersAnswer {
        tenant: tenant.to_string(),
        sessions: users.iter().map(|u| u.sessions).sum(),
        users,
        total_users,
        total_sessions,
        truncated,
    }
}

/// The sessions `filter` selects, and their tenant's revocations to judge them by.
async fn read(
    store: &dyn Store,
    filter: SessionFilter,
) -> Result<(Vec<SessionRecord>, RevocationState), StoreError> {
    let tenant = filter.tenant.clone();
    let records = store.sessions(filter).await?;
    Ok((records, epochs(&store.tenant_revocations(tenant).await?)))
}

/// The active users of `tenant` (whose id contains `query`), read from the store.
pub async fn list_users(
    store: &dyn Store,
    tenant: &str,
    query: Option<String>,
    limit: u32,
    now_ms: u64,
    idle_ms: u64,
) -> Result<UsersAnswer, StoreError> {
    let (records, epochs) = read(
        store,
        SessionFilter {
            tenant: tenant.to_string(),
            user: None,
            query,
            seen_since_ms: now_ms.saturating_sub(idle_ms),
            limit: MAX_SESSION_ROWS + 1,
        },
    )
    .await?;
    let rows_truncated = records.len() > MAX_SESSION_ROWS as usize;
    let records = records
        .into_iter()
        .take(MAX_SESSION_ROWS as usize)
        .collect();
    Ok(users(
        tenant,
        records,
        &epochs,
        now_ms,
        limit as usize,
        rows_truncated,
    ))
}

/// One user's sessions seen within the idle window, revoked ones marked.
pub async fn user_sessions(
    store: &dyn Store,
    tenant: &str,
    user: &str,
    now_ms: u64,
    idle_ms: u64,
) -> Result<SessionsAnswer, StoreError> {
    let (records, epochs) = read(
        store,
        SessionFilter {
            tenant: tenant.to_string(),
            user: Some(user.to_string()),
            query: None,
            seen_since_ms: now_ms.saturating_sub(idle_ms),
            limit: MAX_SESSION_ROWS,
        },
    )
    .await?;
    Ok(SessionsAnswer {
        tenant: tenant.to_string(),
        user: user.to_string(),
        sessions: records
            .into_iter()
            .map(|r| view(r, &epochs, now_ms))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use epochgate_core::state::Target;

    const NOW: u64 = 1_800_000_000_000;

    fn rec(user: &str, sid: Option<&str>, start: i64, seen: u64, device: &str) -> SessionRecord {
        SessionRecord {
            tenant: "acme".into(),
            user: user.into(),
            sid: sid.map(str::to_string),
            session_start: start,
            first_seen_ms: seen,
            last_seen_ms: seen,
            requests: 1,
            device: device.into(),
            address: None,
            edge: "e1".into(),
        }
    }

    fn entry(target: Target, epoch_ms: u64) -> Entry {
        Entry {
            target,
            epoch_ms,
            version: 1,
        }
    }

    #[test]
    fn sessions_are_judged_by_the_edges_rule() {
        let start = (NOW / 1000) as i64 - 600;
        let e = epochs(&[
            entry(
                Target::User {
                    tenant: "acme".into(),
                    user: "alice".into(),
                },
                NOW - 1000,
            ),
            entry(
                Target::Session {
                    tenant: "acme".into(),
                    sid: "bob-2".into(),
                },
                NOW - 500,
            ),
        ]);
        let alice = view(rec("alice", Some("a1"), start, NOW, "d"), &e, NOW);
        assert!(alice.revoked);
        assert_eq!(alice.revoked_at_ms, Some(NOW - 1000));
        // A login after the logout is a new session, and active.
        let again = view(
            rec("alice", Some("a2"), (NOW / 1000) as i64, NOW, "d"),
            &e,
            NOW,
        );
        assert!(!again.revoked);
        let bob2 = view(rec("bob", Some("bob-2"), start, NOW, "d"), &e, NOW);
        assert_eq!(bob2.revoked_at_ms, Some(NOW - 500));
        assert!(!view(rec("bob", Some("bob-1"), start, NOW, "d"), &e, NOW).revoked);
    }

    #[test]
    fn a_scheduled_logout_revokes_once_its_time_has_passed() {
        let start = (NOW / 1000) as i64 - 600;
        let e = epochs(&[entry(
            Target::ScheduledTenant {
                tenant: "acme".into(),
            },
            NOW + 60_000,
        )]);
        assert!(!view(rec("u", None, start, NOW, "d"), &e, NOW).revoked);
        assert!(view(rec("u", None, start, NOW, "d"), &e, NOW + 60_000).revoked);
    }

    #[test]
    fn users_group_active_sessions_newest_first() {
        let start = (NOW / 1000) as i64 - 600;
        let e = epochs(&[entry(
            Target::User {
                tenant: "acme".into(),
                user: "carol".into(),
            },
            NOW,
        )]);
        let records = vec![
            rec("bob", Some("b2"), start, NOW - 10, "Firefox 121 on Linux"),
            rec("alice", Some("a1"), start, NOW - 20, "Chrome 120 on macOS"),
            rec("bob", Some("b1"), start, NOW - 30, "AcmeApp 3.2.1 (iOS)"),
            rec("bob", Some("b3"), start, NOW - 40, "Firefox 121 on Linux"),
            rec("carol", Some("c1"), start, NOW - 50, "Safari 17 on iOS"),
        ];
        let answer = users("acme", records.clone(), &e, NOW, 100, false);
        let names: Vec<&str> = answer.users.iter().map(|u| u.user.as_str()).collect();
        assert_eq!(names, ["bob", "alice"], "carol's only session is revoked");
        assert_eq!(answer.users[0].sessions, 3);
        assert_eq!(
            answer.users[0].devices,
            ["Firefox 121 on Linux", "AcmeApp 3.2.1 (iOS)"]
        );
        assert_eq!(answer.users[0].last_seen_ms, NOW - 10);
        assert_eq!(answer.sessions, 4);
        assert!(!answer.truncated);
        let one = users("acme", records, &e, NOW, 1, false);
        assert_eq!(one.users.len(), 1);
        assert!(one.truncated);
        assert_eq!((one.total_users, one.total_sessions), (2, 4));
    }
}
