//! Long-lived requests — WebSockets, server-sent events, gRPC streams, long downloads —
//! are judged again while they last: a [`Watch`] says when (the state it was judged at
//! changed, or a time it must not outlive passed: a scheduled logout's `at`, the
//! session's end by the horizon), and [`Engine::rewatch`] judges it.

use crate::claims::Identity;
use crate::decision::{DenyReason, Engine};
use crate::jwt::SignatureVerifier;
use crate::state::EpochSource;
use crate::sync::SyncStatus;

/// A long-lived request's identity and when it must be judged again.
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub identity: Identity,
    /// The `(stream, version)` it was last judged at.
    judged_at: Option<(String, u64)>,
    /// Judge again at this time even if the state has not moved.
    next_ms: Option<u64>,
}

fn state_of(status: Option<&SyncStatus>) -> Option<(String, u64)> {
    status.map(|s| (s.stream.clone(), s.version))
}

impl Watch {
    /// A request just allowed at `now_ms`: judged again at its first look (which learns
    /// its precise times), and whenever the state moves.
    pub fn new(identity: Identity, status: Option<&SyncStatus>, now_ms: u64) -> Self {
        Self {
            identity,
            judged_at: state_of(status),
            next_ms: Some(now_ms),
        }
    }

    /// Whether it must be judged again now.
    pub fn is_due(&self, status: Option<&SyncStatus>, now_ms: u64) -> bool {
        let moved = match (status, &self.judged_at) {
            (Some(s), Some((stream, version))) => s.stream != *stream || s.version != *version,
            (None, None) => false,
            _ => true,
        };
        moved || self.next_ms.is_some_and(|at| now_ms >= at)
    }
}

impl<V: SignatureVerifier> Engine<V> {
    /// Judges a watched request again (see [`Engine::recheck`]): `Err` once its session
    /// is over; otherwise it is due again when the state moves or at its next time.
    pub fn rewatch(
        &self,
        watch: &mut Watch,
        epochs: &impl EpochSource,
        status: Option<&SyncStatus>,
        now_ms: u64,
    ) -> Result<(), DenyReason> {
        let next = self.recheck(&watch.identity, epochs, status, now_ms)?;
        watch.judged_at = state_of(status);
        watch.next_ms = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::state::{RevocationState, Target};

    const NOW: u64 = 1_800_000_000_000;

    fn status(version: u64) -> SyncStatus {
        SyncStatus {
            stream: "s".into(),
            version,
            synced_at_ms: NOW,
            horizon_s: 3600,
        }
    }

    fn identity() -> Identity {
        Identity {
            user: "42".into(),
            tenant: "acme".into(),
            session: None,
            actors: vec![],
            issued_at: Some(1_799_999_000),
            session_start: 1_799_999_000,
            expires_at: 0.0,
        }
    }

    #[test]
    fn a_watch_is_due_when_the_state_moves_or_its_time_passes() {
        let engine = Engine::new(Config::from_json(br#"{"keys": [{"kid": "k", "alg": "HS256", "secret": "watch-test-secret-0123456789abcdef"}]}"#).unwrap());
        let mut state = RevocationState::new();
        let mut w = Watch::new(identity(), Some(&status(1)), NOW);
        assert!(w.is_due(Some(&status(1)), NOW), "its first look");
        engine
            .rewatch(&mut w, &state, Some(&status(1)), NOW)
            .unwrap();
        // Nothing scheduled: due at the session's end by the horizon (start + 3600 s).
        assert!(!w.is_due(Some(&status(1)), NOW + 2_599_000));
        assert!(w.is_due(Some(&status(1)), NOW + 2_600_001));
        assert!(w.is_due(Some(&status(2)), NOW), "the state moved");
        let mut other = status(1);
        other.stream = "s2".into();
        assert!(w.is_due(Some(&other), NOW), "another stream");
        // A scheduled logout of its tenant: due at its `at`, over from then on.
        state.set(
            &Target::ScheduledTenant {
                tenant: "acme".into(),
            },
            Some(NOW + 3_000),
        );
        engine
            .rewatch(&mut w, &state, Some(&status(2)), NOW)
            .unwrap();
        assert!(!w.is_due(Some(&status(2)), NOW + 2_999));
        assert!(w.is_due(Some(&status(2)), NOW + 3_000));
        assert_eq!(
            engine.rewatch(&mut w, &state, Some(&status(2)), NOW + 3_000),
            Err(DenyReason::SessionRevoked)
        );
        // Past the horizon: over.
        let mut w = Watch::new(identity(), Some(&status(1)), NOW);
        assert_eq!(
            engine.rewatch(
                &mut w,
                &RevocationState::new(),
                Some(&status(1)),
                NOW + 2_600_001
            ),
            Err(DenyReason::SessionExpired)
        );
    }
}
