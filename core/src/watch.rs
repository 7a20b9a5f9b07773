//! Long-lived requests — WebSockets, server-sent events, gRPC streams, long downloads —
//! are judged again while they last: a [`Watch`] says when (the state it was judged at
//! changed, or a time it must not outlive passed: a scheduled logout's `at`, the
//! session's end by the horizon), and [`Engine::rewatch`] judges it.

use crate::claims::Identity;
use crate::decision::{DenyReason, Engine};
use crate::jwt::AlgorithmSupport;
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

/// Whether a request opens a long-lived stream, to be watched even when idle (on a
/// tick): a WebSocket (or other) upgrade, an extended CONNECT, server-sent events, gRPC.
/// Header names lower-case (`:method`/`:protocol` as Envoy passes them).
pub fn is_streaming(headers: &[(String, Vec<u8>)]) -> bool {
    headers.iter().any(|(n, v)| match n.as_str() {
        "upgrade" | ":protocol" => true,
        ":method" => v.as_slice() == b"CONNECT",
        "accept" => contains_ignore_case(v, b"text/event-stream"),
        "content-type" => starts_with_ignore_case(v, b"application/grpc"),
        _ => false,
    })
}

/// Above this declared length a response is a download, watched while it lasts.
pub const LONG_RESPONSE_BYTES: u64 = 1 << 20;

/// For a host that watches whole responses rather than frames (the Worker): whether an
/// allowed response must be watched while it is sent — its request opened a stream
/// ([`is_streaming`]), it is one by its type (`text/event-stream`, `application/grpc`),
/// or its length is unknown (chunked) or over [`LONG_RESPONSE_BYTES`]. A short response
/// of a declared length is over before a watch could matter.
pub fn is_long_lived(
    request_headers: &[(String, Vec<u8>)],
    content_type: Option<&[u8]>,
    content_length: Option<&[u8]>,
) -> bool {
    if is_streaming(request_headers) {
        return true;
    }
    if content_type.is_some_and(|t| {
        starts_with_ignore_case(t, b"text/event-stream")
            || starts_with_ignore_case(t, b"application/grpc")
    }) {
        return true;
    }
    let length = content_length
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<u64>().ok());
    length.is_none_or(|l| l > LONG_RESPONSE_BYTES)
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn starts_with_ignore_case(value: &[u8], prefix: &[u8]) -> bool {
    value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix)
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

impl<V: AlgorithmSupport> Engine<V> {
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

    fn headers(list: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn streams_are_told_by_their_request_headers() {
        for h in [
            ("upgrade", "websocket"),
            (":protocol", "websocket"),
            (":method", "CONNECT"),
            ("accept", "application/json, TEXT/Event-Stream"),
            ("content-type", "application/grpc+proto"),
        ] {
            assert!(is_streaming(&headers(&[h])), "{h:?}");
        }
        for h in [
            (":method", "GET"),
            ("accept", "text/html"),
            ("content-type", "application/json"),
        ] {
            assert!(!is_streaming(&headers(&[h])), "{h:?}");
        }
    }

    #[test]
    fn a_response_is_long_lived_by_its_request_its_type_or_its_length() {
        let sse = headers(&[("accept", "text/event-stream")]);
        let plain = headers(&[("accept", "*/*")]);
        let len = |n: u64| n.to_string().into_bytes();
        assert!(is_long_lived(&sse, None, Some(&len(10))));
        assert!(is_long_lived(
            &plain,
            Some(b"text/event-stream; charset=utf-8"),
            Some(&len(10))
        ));
        assert!(is_long_lived(
            &plain,
            Some(b"application/grpc"),
            Some(&len(10))
        ));
        assert!(
            is_long_lived(&plain, Some(b"application/json"), None),
            "chunked"
        );
        assert!(
            is_long_lived(&plain, None, Some(b"nonsense")),
            "unknown length"
        );
        assert!(is_long_lived(
            &plain,
            None,
            Some(&len(LONG_RESPONSE_BYTES + 1))
        ));
        assert!(!is_long_lived(
            &plain,
            Some(b"application/json"),
            Some(&len(10))
        ));
        assert!(!is_long_lived(
            &plain,
            None,
            Some(&len(LONG_RESPONSE_BYTES))
        ));
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
