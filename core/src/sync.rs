//! The sync protocol's wire types (control plane → edges) and how an edge applies them.
//!
//! `GET /v1/sync?since=<version>&stream=<stream>&wait=<seconds>&edge=<edge id>` answers a
//! [`SyncResponse`]: a snapshot (all live entries) or a delta (the changes after `since`).
//! The `since` an edge sends is the version it has applied: its receipt.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::percent_encode;
use crate::state::{encode_epoch, RevocationState, Target};

/// The key under which an edge keeps its [`SyncStatus`] (next to the epoch keys).
pub const STATUS_KEY: &str = "state";

/// One change: an entry set to an epoch, or removed (`epoch_ms: null`, by compaction).
/// On the wire, the target's fields and `epoch_ms` side by side:
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
    /// `true`: `changes` is the whole state and replaces what the edge holds.
    pub snapshot: bool,
    pub changes: Vec<Change>,
    /// The compaction horizon (see [`crate::state::is_compactable`]).
    pub max_session_lifetime_s: u64,
    /// A snapshot answered in pages (the edge asked with `limit`): the cursor of the
    /// next page; `None` on the last page and on deltas. Every page of one snapshot has
    /// its `version`; the edge has that version only once the last page is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Where a paged snapshot resumes: its version and the cursor of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotResume<'a> {
    pub version: u64,
    pub after: &'a str,
}

/// Why an answer cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("delta for stream {got:?} while the edge holds stream {held:?}: a snapshot is needed")]
    StreamMismatch { held: String, got: String },
    #[error("delta goes back from version {held} to {got}")]
    VersionWentBack { held: u64, got: u64 },
    #[error("sync answer is not valid JSON: {0}")]
    Malformed(String),
}

impl SyncResponse {
    /// Parses an answer body.
    pub fn parse(body: &[u8]) -> Result<Self, SyncError> {
        serde_json::from_slice(body).map_err(|e| SyncError::Malformed(e.to_string()))
    }
}

/// The path of the next long-poll.
pub fn sync_path(since: u64, stream: Option<&str>, wait_s: u32, edge_id: &str) -> String {
    let mut path = format!("/v1/sync?since={since}&wait={wait_s}");
    if let Some(stream) = stream {
        path.push_str("&stream=");
        path.push_str(&percent_encode(stream));
    }
    path.push_str("&edge=");
    path.push_str(&percent_encode(edge_id));
    path
}

/// [`sync_path`] asking for snapshots in pages of `limit` changes, and resuming one.
pub fn sync_path_paged(
    since: u64,
    stream: Option<&str>,
    wait_s: u32,
    edge_id: &str,
    limit: u32,
    resume: Option<SnapshotResume<'_>>,
) -> String {
    let mut path = sync_path(since, stream, wait_s, edge_id);
    path.push_str(&format!("&limit={limit}"));
    if let Some(r) = resume {
        path.push_str(&format!(
            "&snapshot={}&after={}",
            r.version,
            percent_encode(r.after)
        ));
    }
    path
}

/// The cursor after a target: its key (ids percent-encoded, so `/` separates safely).
pub fn page_cursor(target: &Target) -> String {
    target.key()
}

/// What an edge has applied, and when it last heard from the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncStatus {
    pub stream: String,
    pub version: u64,
    /// When the last successful sync answer arrived (ms).
    pub synced_at_ms: u64,
}

impl SyncStatus {
    /// `<version> <synced_at_ms> <stream>`: small, read on every request.
    pub fn encode(&self) -> Vec<u8> {
        format!("{} {} {}", self.version, self.synced_at_ms, self.stream).into_bytes()
    }

    pub fn decode(value: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(value).ok()?;
        let mut parts = text.splitn(3, ' ');
        let version = parts.next()?.parse().ok()?;
        let synced_at_ms = parts.next()?.parse().ok()?;
        let stream = parts.next()?.to_string();
        Some(SyncStatus {
            stream,
            version,
            synced_at_ms,
        })
    }

    /// Whether the state is too old to enforce: `None` (never synced) is stale too.
    pub fn is_stale(status: Option<&SyncStatus>, now_ms: u64, max_staleness_s: u64) -> bool {
        match status {
            None => true,
            Some(s) => now_ms.saturating_sub(s.synced_at_ms) > max_staleness_s.saturating_mul(1000),
        }
    }
}

/// The writes that apply an answer to a key-value store that cannot list its keys
/// (proxy-wasm shared data). `written` is the edge's own index of the epoch keys it holds:
/// a snapshot clears every indexed key it no longer contains, and removals write an empty
/// value (the ABI cannot delete a key). Returns `(key, value)` pairs; an empty value is
/// a removed entry.
pub fn plan_writes(resp: &SyncResponse, written: &mut BTreeSet<String>) -> Vec<(String, Vec<u8>)> {
    plan_page_writes(resp, written, &mut BTreeSet::new())
}

/// [`plan_writes`] for a snapshot that may come in pages: `kept` collects the keys of
/// the pages so far; the keys the edge no longer holds are cleared on the last page only
/// (clearing earlier would drop entries a later page still has).
pub fn plan_page_writes(
    resp: &SyncResponse,
    written: &mut BTreeSet<String>,
    kept: &mut BTreeSet<String>,
) -> Vec<(String, Vec<u8>)> {
    let mut writes = Vec::with_capacity(resp.changes.len());
    for change in &resp.changes {
        let key = change.target.key();
        match change.epoch_ms {
            Some(ms) => {
                written.insert(key.clone());
                if resp.snapshot {
                    kept.insert(key.clone());
                }
                writes.push((key, encode_epoch(ms)));
            }
            None => {
                written.remove(&key);
                writes.push((key, Vec::new()));
            }
        }
    }
    if resp.snapshot && resp.next.is_none() {
        let stale: Vec<String> = written.difference(kept).cloned().collect();
        for key in stale {
            written.remove(&key);
            writes.push((key, Vec::new()));
        }
        kept.clear();
    }
    writes
}

/// An edge's in-memory copy of the state (the worker, tests): the entries, plus what
/// stream and version they are at.
#[derive(Debug, Clone, Default)]
pub struct EdgeState {
    pub state: RevocationState,
    pub stream: Option<String>,
    pub version: u64,
    pub max_session_lifetime_s: u64,
}

impl EdgeState {
    /// Applies an answer. A snapshot replaces everything; a delta must be of the same
    /// stream and not go back in version.
    pub fn apply(&mut self, resp: &SyncResponse) -> Result<(), SyncError> {
        if resp.next.is_some() {
            // This in-memory edge never asks for pages (no `limit`): one is a protocol error.
            return Err(SyncError::Malformed(
                "a snapshot page, but no pages were asked for".into(),
            ));
        }
        if resp.snapshot {
            self.state.clear();
        } else {
            match &self.stream {
                Some(held) if *held == resp.stream => {}
                held => {
                    return Err(SyncError::StreamMismatch {
                        held: held.clone().unwrap_or_default(),
                        got: resp.stream.clone(),
                    })
                }
            }
            if resp.version < self.version {
                return Err(SyncError::VersionWentBack {
                    held: self.version,
                    got: resp.version,
                });
            }
        }
        for change in &resp.changes {
            self.state.set(&change.target, change.epoch_ms);
        }
        self.stream = Some(resp.stream.clone());
        self.version = resp.version;
        self.max_session_lifetime_s = resp.max_session_lifetime_s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{keys, EpochSource};

    fn user(u: &str, ms: Option<u64>) -> Change {
        Change {
            target: Target::User {
                tenant: "acme".into(),
                user: u.into(),
            },
            epoch_ms: ms,
        }
    }

    fn resp(snapshot: bool, version: u64, changes: Vec<Change>) -> SyncResponse {
        SyncResponse {
            stream: "st1".into(),
            version,
            snapshot,
            changes,
            max_session_lifetime_s: 86_400,
            next: None,
        }
    }

    #[test]
    fn wire_format_is_flat_json() {
        let r = resp(false, 7, vec![user("42", Some(5)), user("43", None)]);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["changes"][0],
            serde_json::json!({"scope": "user", "tenant": "acme", "user": "42", "epoch_ms": 5})
        );
        assert_eq!(json["changes"][1]["epoch_ms"], serde_json::Value::Null);
        let back = SyncResponse::parse(serde_json::to_string(&r).unwrap().as_bytes()).unwrap();
        assert_eq!(back, r);
        let global: Change = serde_json::from_str(r#"{"scope":"global","epoch_ms":9}"#).unwrap();
        assert_eq!(global.target, Target::Global);
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
    fn sync_path_encodes_ids() {
        assert_eq!(
            sync_path(3, Some("a b"), 30, "envoy/1"),
            "/v1/sync?since=3&wait=30&stream=a%20b&edge=envoy%2F1"
        );
        assert_eq!(sync_path(0, None, 5, "e"), "/v1/sync?since=0&wait=5&edge=e");
    }

    #[test]
    fn status_round_trips_and_staleness() {
        let s = SyncStatus {
            stream: "x y".into(),
            version: 12,
            synced_at_ms: 1_000,
        };
        assert_eq!(SyncStatus::decode(&s.encode()), Some(s.clone()));
        assert_eq!(SyncStatus::decode(b"junk"), None);
        assert!(SyncStatus::is_stale(None, 0, 10));
        assert!(!SyncStatus::is_stale(Some(&s), 11_000, 10));
        assert!(SyncStatus::is_stale(Some(&s), 11_001, 10));
    }

    #[test]
    fn snapshot_clears_keys_it_no_longer_holds() {
        let mut index = BTreeSet::new();
        let w = plan_writes(
            &resp(true, 2, vec![user("42", Some(1)), user("43", Some(2))]),
            &mut index,
        );
        assert_eq!(w.len(), 2);
        let w = plan_writes(&resp(true, 3, vec![user("43", Some(2))]), &mut index);
        assert!(w.contains(&(keys::user("acme", "42"), Vec::new())));
        assert!(w.contains(&(keys::user("acme", "43"), b"2".to_vec())));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn a_paged_snapshot_clears_stale_keys_only_after_its_last_page() {
        let mut index = BTreeSet::new();
        plan_writes(&resp(true, 1, vec![user("41", Some(1))]), &mut index);
        let mut kept = BTreeSet::new();
        let mut page1 = resp(true, 5, vec![user("42", Some(2))]);
        page1.next = Some(page_cursor(&page1.changes[0].target));
        let w = plan_page_writes(&page1, &mut index, &mut kept);
        assert_eq!(
            w,
            vec![(keys::user("acme", "42"), b"2".to_vec())],
            "41 is not cleared yet"
        );
        let w = plan_page_writes(
            &resp(true, 5, vec![user("43", Some(3))]),
            &mut index,
            &mut kept,
        );
        assert!(w.contains(&(keys::user("acme", "41"), Vec::new())), "{w:?}");
        assert!(
            !w.contains(&(keys::user("acme", "42"), Vec::new())),
            "42 came on page 1"
        );
        assert_eq!(index.len(), 2);
        assert!(kept.is_empty());
        // The in-memory edge never asks for pages: one is refused, not half-applied.
        let mut e = EdgeState::default();
        assert!(matches!(e.apply(&page1), Err(SyncError::Malformed(_))));
    }

    #[test]
    fn paged_paths_carry_the_resume_point() {
        assert_eq!(
            sync_path_paged(
                0,
                Some("st"),
                0,
                "e",
                1000,
                Some(SnapshotResume {
                    version: 9,
                    after: "u/a/b%2Fc"
                })
            ),
            "/v1/sync?since=0&wait=0&stream=st&edge=e&limit=1000&snapshot=9&after=u%2Fa%2Fb%252Fc"
        );
    }

    #[test]
    fn removal_writes_an_empty_value() {
        let mut index = BTreeSet::new();
        plan_writes(&resp(false, 1, vec![user("42", Some(1))]), &mut index);
        let w = plan_writes(&resp(false, 2, vec![user("42", None)]), &mut index);
        assert_eq!(w, vec![(keys::user("acme", "42"), Vec::new())]);
        assert!(index.is_empty());
    }

    #[test]
    fn edge_state_applies_snapshots_and_deltas() {
        let mut e = EdgeState::default();
        assert!(matches!(
            e.apply(&resp(false, 1, vec![])),
            Err(SyncError::StreamMismatch { .. })
        ));
        e.apply(&resp(true, 5, vec![user("42", Some(7))])).unwrap();
        assert_eq!(e.state.epoch_ms(&keys::user("acme", "42")), Some(7));
        e.apply(&resp(false, 6, vec![user("42", None), user("43", Some(8))]))
            .unwrap();
        assert_eq!(e.state.epoch_ms(&keys::user("acme", "42")), None);
        assert_eq!(e.version, 6);
        assert!(matches!(
            e.apply(&resp(false, 4, vec![])),
            Err(SyncError::VersionWentBack { .. })
        ));
        let mut other = resp(false, 9, vec![]);
        other.stream = "st2".into();
        assert!(matches!(
            e.apply(&other),
            Err(SyncError::StreamMismatch { .. })
        ));
    }
}
