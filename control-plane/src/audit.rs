//! The audit trail's hash chain and its verification.
//!
//! Every row carries `prev_hash` (the previous row's `hash`; 64 zeros for the first) and
//! `hash` = SHA-256 of a canonical JSON of `prev_hash` and every field (id, time, actor,
//! action, outcome, target, reason, source address, request id, resulting version). Ids
//! are assigned as `last + 1` inside the writing transaction, never from a sequence, so
//! a gap is a deleted row. Editing a row breaks its hash; deleting a row breaks the next
//! one's `prev_hash`.
//!
//! The chain alone cannot show that its *newest* rows were deleted (what is left is still
//! a valid chain). So after each entry the server appends the head (`{"id","hash"}`) to
//! the `--audit-anchor` file and logs it (`audit head`); [`verify`] checks that the chain
//! contains every anchored head. That rests on the anchor being out of reach of whoever
//! can edit the database: a file on another volume or owned by another user, made
//! append-only (`chattr +a`), or the log lines shipped off the host.

use std::io::Write;
use std::path::Path;

use epochgate_core::state::Target;
use serde::Serialize;

use crate::store::{AuditEntry, AuditHead};

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The fields a row's hash covers, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    prev_hash: &'a str,
    id: u64,
    at_ms: u64,
    actor: &'a str,
    action: &'a str,
    outcome: &'a str,
    target: &'a Target,
    reason: Option<&'a str>,
    source: Option<&'a str>,
    request_id: Option<&'a str>,
    version: u64,
}

/// The fields of a row before it is hashed.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    pub id: u64,
    pub at_ms: u64,
    pub actor: &'a str,
    pub action: &'a str,
    pub outcome: &'a str,
    pub target: &'a Target,
    pub reason: Option<&'a str>,
    pub source: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub version: u64,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash of a row chained to `prev_hash`.
pub fn entry_hash(prev_hash: &str, f: Fields<'_>) -> String {
    let hashed = Hashed {
        prev_hash,
        id: f.id,
        at_ms: f.at_ms,
        actor: f.actor,
        action: f.action,
        outcome: f.outcome,
        target: f.target,
        reason: f.reason,
        source: f.source,
        request_id: f.request_id,
        version: f.version,
    };
    // Serializing these plain fields cannot fail; an empty input would still hash.
    let bytes = serde_json::to_vec(&hashed).unwrap_or_default();
    hex(&hmac_sha256::Hash::hash(&bytes))
}

fn fields(e: &AuditEntry) -> Fields<'_> {
    Fields {
        id: e.id,
        at_ms: e.at_ms,
        actor: &e.actor,
        action: &e.action,
        outcome: &e.outcome,
        target: &e.target,
        reason: e.reason.as_deref(),
        source: e.source.as_deref(),
        request_id: e.request_id.as_deref(),
        version: e.version,
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub entries: u64,
    pub head: Option<AuditHead>,
    /// The highest anchored id checked (0: no anchor given).
    pub anchored_id: u64,
    /// Every problem, in chain order; empty means intact.
    pub problems: Vec<String>,
}

impl Verification {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks `chain` (oldest first) and that it holds every `anchors` head.
pub fn verify(chain: &[AuditEntry], anchors: &[AuditHead]) -> Verification {
    let mut problems = Vec::new();
    let mut prev = GENESIS.to_string();
    let mut expected_id = 1;
    for e in chain {
        if e.id != expected_id {
            problems.push(format!(
                "entry {expected_id}{} is missing (the next entry is {})",
                if e.id > expected_id + 1 {
                    format!("..{}", e.id - 1)
                } else {
                    String::new()
                },
                e.id
            ));
        }
        if e.prev_hash != prev {
            problems.push(format!(
                "entry {} does not follow the entry before it (prev_hash differs): an entry before it was deleted or edited",
                e.id
            ));
        }
        let recomputed = entry_hash(&e.prev_hash, fields(e));
        if recomputed != e.hash {
            problems.push(format!(
                "entry {} was edited: its content does not match its hash",
                e.id
            ));
        }
        prev = e.hash.clone();
        expected_id = e.id + 1;
    }
    let mut anchored_id = 0;
    for a in anchors {
        anchored_id = anchored_id.max(a.id);
        match chain.iter().find(|e| e.id == a.id) {
            Some(e) if e.hash == a.hash => {}
            Some(_) => problems.push(format!(
                "entry {} differs from the anchored head (hash {})",
                a.id, a.hash
            )),
            None => problems.push(format!(
                "entry {} is anchored but missing: the newest entries were deleted",
                a.id
            )),
        }
    }
    Verification {
        entries: u64::try_from(chain.len()).unwrap_or(u64::MAX),
        head: chain.last().map(|e| AuditHead {
            id: e.id,
            hash: e.hash.clone(),
        }),
        anchored_id,
        problems,
    }
}

/// Appends `head` to the anchor file (one JSON line, `O_APPEND`, synced).
pub fn append_anchor(path: &Path, head: &AuditHead) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(head).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(&line)?;
    file.sync_data()
}

/// Reads every head of an anchor file; a torn last line (a crash mid-append) is skipped.
pub fn read_anchor(path: &Path) -> anyhow::Result<Vec<AuditHead>> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the audit anchor {}", path.display()))?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut heads = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match serde_json::from_str::<AuditHead>(line) {
            Ok(h) => heads.push(h),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => anyhow::bail!("{} line {}: {e}", path.display(), i + 1),
        }
    }
    Ok(heads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEntry> {
        let mut out: Vec<AuditEntry> = Vec::new();
        for id in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
            let mut e = AuditEntry {
                id,
                at_ms: 1000 + id,
                actor: "admin".into(),
                action: "logout_user".into(),
                outcome: "ok".into(),
                target: Target::User {
                    tenant: "acme".into(),
                    user: id.to_string(),
                },
                reason: None,
                source: None,
                request_id: Some(format!("r{id}")),
                version: id,
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            e.hash = entry_hash(&prev, fields(&e));
            out.push(e);
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(3);
        let v = verify(
            &c,
            &[AuditHead {
                id: 3,
                hash: c[2].hash.clone(),
            }],
        );
        assert!(v.ok(), "{:?}", v.problems);
        assert_eq!(v.entries, 3);
        assert!(verify(&[], &[]).ok());
    }

    #[test]
    fn edits_deletions_and_truncation_are_found() {
        let mut c = chain(4);
        c[1].reason = Some("edited".into());
        assert!(verify(&c, &[]).problems[0].contains("entry 2 was edited"));

        let mut c = chain(4);
        c.remove(1);
        let v = verify(&c, &[]);
        assert!(
            v.problems.iter().any(|p| p.contains("entry 2 is missing")),
            "{:?}",
            v.problems
        );

        let c = chain(4);
        let head = AuditHead {
            id: 4,
            hash: c[3].hash.clone(),
        };
        let truncated = &c[..2];
        assert!(
            verify(truncated, &[]).ok(),
            "a truncated chain is still a chain"
        );
        let v = verify(truncated, &[head]);
        assert!(
            v.problems[0].contains("newest entries were deleted"),
            "{:?}",
            v.problems
        );
    }
}
