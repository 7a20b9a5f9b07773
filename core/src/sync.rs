//! The sync protocol's wire types (control plane → edges) and the edge's client.
//!
//! `GET /v1/sync?since=<version>&stream=<stream>&tag=<tag>&wait=<seconds>&edge=<edge id>`
//! answers a [`SyncResponse`]: a snapshot (all live entries) or a delta (the changes
//! after `since`). The `since` an edge sends is the version it has applied: its receipt;
//! `tag` is that version's tag, so the control plane can tell whether the edge's
//! version belongs to its history (after a restore from a backup, the same numbers come
//! back with other content). The state machine every edge runs is [`client`].

use serde::{Deserialize, Serialize};

use crate::ids::percent_encode;
use crate::state::Target;

pub mod client;

/// The key under which an edge keeps its [`SyncStatus`] (next to the epoch keys).
pub const STATUS_KEY: &str = "state";

/// One change: an entry set to an epoch, or removed (`epoch_ms: null`: compaction, or a
/// cancelled schedule). On the wire, the target's fields and `epoch_ms` side by side:
/// `{"scope": "user", "tenant": "acme", "user": "42", "epoch_ms": 1800000000000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    #[serde(flatten)]
    pub target: Target,
    /// Milliseconds since the Unix epoch; `None` removes the entry.
    pub epoch_ms: Option<u64>,
}

/// Read by hand, not derived: `#[serde(flatten)]` over the internally tagged [`Target`]
/// buffers every change in serde's `Content` first — slower on a large snapshot, and in
/// the edges' `.wasm` it brings serde's whole content machinery and float formatting
/// (README, "Build and size"). Same JSON, same strictness: unknown fields, and fields
/// that do not fit the scope, are refused.
impl<'de> Deserialize<'de> for Change {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Scope {
            Global,
            Tenant,
            User,
            Session,
            ScheduledGlobal,
            ScheduledTenant,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Wire {
            scope: Scope,
            tenant: Option<String>,
            user: Option<String>,
            sid: Option<String>,
            epoch_ms: Option<u64>,
        }
        let w = Wire::deserialize(d)?;
        let target = match (w.scope, w.tenant, w.user, w.sid) {
            (Scope::Global, None, None, None) => Target::Global,
            (Scope::ScheduledGlobal, None, None, None) => Target::ScheduledGlobal,
            (Scope::Tenant, Some(tenant), None, None) => Target::Tenant { tenant },
            (Scope::ScheduledTenant, Some(tenant), None, None) => {
                Target::ScheduledTenant { tenant }
            }
            (Scope::User, Some(tenant), Some(user), None) => Target::User { tenant, user },
            (Scope::Session, Some(tenant), None, Some(sid)) => Target::Session { tenant, sid },
            _ => return Err(serde::de::Error::custom(
                "a change's fields must fit its scope (tenant; tenant and user; tenant and sid)",
            )),
        };
        Ok(Change {
            target,
            epoch_ms: w.epoch_ms,
        })
    }
}

/// The answer to `GET /v1/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The store's history id: an edge never mixes two streams.
    pub stream: String,
    /// The version the edge has once it applied this answer.
    pub version: u64,
    /// `true`: `changes` is the whole state (merged into what the edge holds, never
    /// replacing it).
    pub snapshot: bool,
    pub changes: Vec<Change>,
    /// The compaction horizon (see [`crate::state::is_compactable`]): edges deny
    /// sessions older than this (`session_expired`).
    pub max_session_lifetime_s: u64,
    /// A snapshot answered in pages (the edge asked with `limit`): the cursor of the
    /// next page; `None` on the last page and on deltas. Every page of one snapshot has
    /// its `version`; the edge has that version only once the last page is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// The tag of `version` in the store's history: the edge sends it back with `since`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// Why an answer cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("sync answer is not valid JSON: {0}")]
    Malformed(String),
}

impl SyncResponse {
    /// Parses an answer body.
    pub fn parse(body: &[u8]) -> Result<Self, SyncError> {
        serde_json::from_slice(body).map_err(|e| SyncError::Malformed(e.to_string()))
    }
}

/// One `GET /v1/sync` request, as [`SyncRequest::path`] spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRequest<'a> {
    /// The version the edge has applied (0: none).
    pub since: u64,
    pub stream: Option<&'a str>,
    /// The tag of `since` (see [`SyncResponse::tag`]).
    pub tag: Option<&'a str>,
    pub wait_s: u32,
    pub edge_id: &'a str,
    /// Snapshots in pages of at most this many entries.
    pub limit: Option<u32>,
    /// Resuming a paged snapshot: its version and the cursor after which to continue.
    pub resume: Option<(u64, &'a str)>,
}

impl SyncRequest<'_> {
    /// `/v1/sync?since=…&wait=…[&stream=…][&tag=…]&edge=…[&limit=…[&snapshot=…&after=…]]`,
    /// ids percent-encoded.
    pub fn path(&self) -> String {
        let mut path = format!("/v1/sync?since={}&wait={}", self.since, self.wait_s);
        if let Some(stream) = self.stream {
            path.push_str("&stream=");
            path.push_str(&percent_encode(stream));
        }
        if let Some(tag) = self.tag {
            path.push_str("&tag=");
            path.push_str(&percent_encode(tag));
        }
        path.push_str("&edge=");
        path.push_str(&percent_encode(self.edge_id));
        if let Some(limit) = self.limit {
            path.push_str(&format!("&limit={limit}"));
            if let Some((version, after)) = self.resume {
                path.push_str(&format!(
                    "&snapshot={version}&after={}",
                    percent_encode(after)
                ));
            }
        }
        path
    }
}

/// The cursor after a target: its key (ids percent-encoded, so `/` separates safely).
pub fn page_cursor(target: &Target) -> String {
    target.key()
}

/// What an edge has applied, and when it last heard from the control plane: read on
/// every request (Envoy's filter VMs read it from shared data), so it carries what a
/// decision needs besides the epochs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub stream: String,
    pub version: u64,
    /// When the last successful sync answer arrived (ms).
    pub synced_at_ms: u64,
    /// The compaction horizon the control plane announced (`max_session_lifetime_s`):
    /// sessions older than this are `session_expired`.
    pub horizon_s: u64,
}

impl SyncStatus {
    /// `<version> <synced_at_ms> <horizon_s> <stream>`: small, read on every request.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{} {} {} {}",
            self.version, self.synced_at_ms, self.horizon_s, self.stream
        )
        .into_bytes()
    }

    pub fn decode(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.splitn(4, ' ');
        let version = parts.next()?.parse().ok()?;
        let synced_at_ms = parts.next()?.parse().ok()?;
        let horizon_s = parts.next()?.parse().ok()?;
        let stream = parts.next()?.to_string();
        Some(SyncStatus {
            stream,
            version,
            synced_at_ms,
            horizon_s,
        })
    }

    /// Whether the state is too old to know what changed: `None` (never synced) is
    /// stale too. Stale state still enforces every revocation it holds.
    pub fn is_stale(status: Option<&SyncStatus>, now_ms: u64, max_staleness_s: u64) -> bool {
        match status {
            None => true,
            Some(s) => now_ms.saturating_sub(s.synced_at_ms) > max_staleness_s.saturating_mul(1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(u: &str, ms: Option<u64>) -> Change {
        Change {
            target: Target::User {
                tenant: "acme".into(),
                user: u.into(),
            },
            epoch_ms: ms,
        }
    }

    #[test]
    fn wire_format_is_flat_json() {
        let r = SyncResponse {
            stream: "st1".into(),
            version: 7,
            snapshot: false,
            changes: vec![user("42", Some(5)), user("43", None)],
            max_session_lifetime_s: 86_400,
            next: None,
            tag: Some("t7".into()),
        };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["changes"][0],
            serde_json::json!({"scope": "user", "tenant": "acme", "user": "42", "epoch_ms": 5})
        );
        assert_eq!(json["changes"][1]["epoch_ms"], serde_json::Value::Null);
        assert_eq!(json["tag"], "t7");
        let back = SyncResponse::parse(serde_json::to_string(&r).unwrap().as_bytes()).unwrap();
        assert_eq!(back, r);
        let global: Change = serde_json::from_str(r#"{"scope":"global","epoch_ms":9}"#).unwrap();
        assert_eq!(global.target, Target::Global);
        // An answer without a tag (an older control plane) still reads.
        let old = SyncResponse::parse(
            br#"{"stream":"s","version":1,"snapshot":true,"changes":[],"max_session_lifetime_s":1}"#,
        )
        .unwrap();
        assert_eq!(old.tag, None);
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert!(matches!(
            SyncResponse::parse(b"{"),
            Err(SyncError::Malformed(_))
        ));
        assert!(matches!(
            SyncResponse::parse(br#"{"stream":"s","version":1,"snapshot":false,"changes":[{"scope":"planet","epoch_ms":1}],"max_session_lifetime_s":1}"#),
            Err(SyncError::Malformed(_))
        ));
    }

    #[test]
    fn request_paths_encode_ids_and_carry_the_resume_point() {
        let mut r = SyncRequest {
            since: 3,
            stream: Some("a b"),
            tag: Some("t/3"),
            wait_s: 30,
            edge_id: "envoy/1",
            limit: None,
            resume: None,
        };
        assert_eq!(
            r.path(),
            "/v1/sync?since=3&wait=30&stream=a%20b&tag=t%2F3&edge=envoy%2F1"
        );
        r = SyncRequest {
            since: 0,
            stream: None,
            tag: None,
            wait_s: 5,
            edge_id: "e",
            limit: None,
            resume: None,
        };
        assert_eq!(r.path(), "/v1/sync?since=0&wait=5&edge=e");
        r.stream = Some("st");
        r.limit = Some(1000);
        r.resume = Some((9, "u/a/b%2Fc"));
        assert_eq!(
            r.path(),
            "/v1/sync?since=0&wait=5&stream=st&edge=e&limit=1000&snapshot=9&after=u%2Fa%2Fb%252Fc"
        );
    }

    #[test]
    fn status_round_trips_and_staleness() {
        let s = SyncStatus {
            stream: "x y".into(),
            version: 12,
            synced_at_ms: 1_000,
            horizon_s: 7_776_000,
        };
        assert_eq!(SyncStatus::decode(&s.encode()), Some(s.clone()));
        assert_eq!(SyncStatus::decode(b"junk"), None);
        assert_eq!(SyncStatus::decode(b"1 2 x"), None, "no horizon");
        assert!(SyncStatus::is_stale(None, 0, 10));
        assert!(!SyncStatus::is_stale(Some(&s), 11_000, 10));
        assert!(SyncStatus::is_stale(Some(&s), 11_001, 10));
    }
}
