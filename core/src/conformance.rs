//! The decision vectors (`core/tests/vectors/decision-vectors.json`, minted by an
//! independent JWT library) and the algorithm vectors (`algorithm-vectors.json`, every
//! algorithm and key form, signed by OpenSSL) mapped onto the real configuration types,
//! so that `core`, the filter and the worker each run every case through their own path.
//! Test support only (feature `conformance`).

use serde::Deserialize;
use serde_json::Value;

use crate::config::{ConfigError, RawConfig};
use crate::decision::Decision;
use crate::state::{RevocationState, Target};
use crate::sync::{Change, SyncStatus};
use crate::Config;

/// The vectors file, embedded so every crate reads the same bytes.
pub const VECTORS_JSON: &str = include_str!("../tests/vectors/decision-vectors.json");

/// Every algorithm a key can be pinned to, in the same format
/// (`scripts/algorithm-vectors.py`).
pub const ALGORITHM_VECTORS_JSON: &str = include_str!("../tests/vectors/algorithm-vectors.json");

#[derive(Debug, Deserialize)]
pub struct Vectors {
    pub config: Value,
    pub keys: Vec<Value>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    #[serde(default)]
    pub why: String,
    pub token: String,
    pub now_ms: u64,
    pub state: CaseState,
    pub expect: Expect,
}

#[derive(Debug, Deserialize)]
pub struct CaseState {
    pub global_ms: Option<u64>,
    pub tenants: Vec<TenantEpoch>,
    pub users: Vec<UserEpoch>,
    pub sessions: Vec<SessionRevoked>,
}

#[derive(Debug, Deserialize)]
pub struct TenantEpoch {
    pub tenant: String,
    pub epoch_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct UserEpoch {
    pub tenant: String,
    pub user: String,
    pub epoch_ms: u64,
}

#[derive(Debug, Deserialize)]
pub struct SessionRevoked {
    pub tenant: String,
    pub sid: String,
}

#[derive(Debug, Deserialize)]
pub struct Expect {
    pub allow: bool,
    pub reason: Option<String>,
    pub user: Option<String>,
    pub tenant: Option<String>,
    pub session: Option<String>,
}

impl Vectors {
    pub fn load() -> Result<Self, String> {
        serde_json::from_str(VECTORS_JSON).map_err(|e| format!("vectors: {e}"))
    }

    pub fn algorithms() -> Result<Self, String> {
        serde_json::from_str(ALGORITHM_VECTORS_JSON).map_err(|e| format!("algorithm vectors: {e}"))
    }

    /// Both sets: what every edge runs.
    pub fn all() -> Result<Vec<Self>, String> {
        Ok(vec![Self::load()?, Self::algorithms()?])
    }

    /// The plugin configuration (JSON) that the vectors' neutral description maps to:
    /// what an operator would write for the filter or the worker.
    pub fn config_json(&self) -> Value {
        let c = &self.config;
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| {
                let mut key = serde_json::json!({"kid": k["kid"], "alg": k["alg"]});
                if let Some(pem) = k.get("public_key_pem") {
                    key["public_key_pem"] = pem.clone();
                }
                for form in ["secret_b64url", "jwk"] {
                    if let Some(material) = k.get(form) {
                        key[form] = material.clone();
                    }
                }
                key
            })
            .collect();
        serde_json::json!({
            "keys": keys,
            "issuer": c["issuer"],
            "audiences": c["audiences"],
            "clock_skew_s": c["clock_skew_s"],
            "clock_margin_s": c["clock_margin_s"],
            "max_token_bytes": c["max_token_bytes"],
            "default_tenant": c["default_tenant"],
            "claims": c["claims"],
        })
    }

    /// The compiled configuration, through the real parser.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let raw: RawConfig = serde_json::from_value(self.config_json())
            .map_err(|e| ConfigError::new("", e.to_string()))?;
        Config::try_from(raw)
    }
}

impl Case {
    /// The case's revocation state as changes an edge would receive.
    pub fn changes(&self) -> Vec<(Target, u64)> {
        let s = &self.state;
        let mut out = Vec::new();
        if let Some(ms) = s.global_ms {
            out.push((Target::Global, ms));
        }
        for t in &s.tenants {
            out.push((
                Target::Tenant {
                    tenant: t.tenant.clone(),
                },
                t.epoch_ms,
            ));
        }
        for u in &s.users {
            out.push((
                Target::User {
                    tenant: u.tenant.clone(),
                    user: u.user.clone(),
                },
                u.epoch_ms,
            ));
        }
        for x in &s.sessions {
            // The vectors give no revocation time for sessions; any time marks it revoked.
            out.push((
                Target::Session {
                    tenant: x.tenant.clone(),
                    sid: x.sid.clone(),
                },
                self.now_ms,
            ));
        }
        out
    }

    /// The case's revocation state as a sync answer's changes.
    pub fn sync_changes(&self) -> Vec<Change> {
        self.changes()
            .into_iter()
            .map(|(target, ms)| Change {
                target,
                epoch_ms: Some(ms),
            })
            .collect()
    }

    /// The request headers that carry the case's token (`Authorization: Bearer …`).
    pub fn headers(&self) -> Vec<(String, Vec<u8>)> {
        vec![(
            "authorization".to_string(),
            format!("Bearer {}", self.token).into_bytes(),
        )]
    }

    /// A sync status as fresh as the case's time.
    pub fn fresh_status(&self) -> SyncStatus {
        SyncStatus {
            stream: "vectors".into(),
            version: 1,
            synced_at_ms: self.now_ms,
            horizon_s: 86_400,
        }
    }

    pub fn revocation_state(&self) -> RevocationState {
        let mut state = RevocationState::new();
        for (target, ms) in self.changes() {
            state.set(&target, Some(ms));
        }
        state
    }

    /// Compares a decision with the expected one.
    pub fn check(&self, decision: &Decision) -> Result<(), String> {
        let e = &self.expect;
        match decision {
            Decision::Allow {
                identity: Some(id),
                stale: false,
                ..
            } if e.allow => {
                let got = (Some(&id.user), Some(&id.tenant), id.session.as_ref());
                let want = (e.user.as_ref(), e.tenant.as_ref(), e.session.as_ref());
                if got == want {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: allowed as {got:?}, expected {want:?}",
                        self.name
                    ))
                }
            }
            Decision::Deny { reason, detail, .. } if !e.allow => {
                if Some(reason.code()) == e.reason.as_deref() {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: denied {reason} ({detail}), expected {:?}",
                        self.name, e.reason
                    ))
                }
            }
            other => Err(format!(
                "{}: got {other:?}, expected {e:?} ({})",
                self.name, self.why
            )),
        }
    }
}
