//! Security Event Tokens (RFC 8417) pushed by a Shared Signals transmitter (RFC 8935),
//! carrying CAEP events, on a token whose signature already verified:
//!
//! - `typ` is `secevent+jwt` (SSF 1.0 §4.1.1 requires explicit typing); `sub` and `exp`
//!   are absent (SSF 1.0 §4.1.3: they set SETs apart from ID and access tokens);
//! - `iss` is the transmitter's, `aud` names the receiver's audience, `iat` is recent,
//!   `jti` is present (replays are refused by the store);
//! - `events` holds exactly one event (the CAEP interoperability profile).
//!
//! What is done with it:
//! - CAEP `session-revoked` → the session named by the subject, or, when the subject
//!   names a user (and no session), every session of that user;
//! - CAEP `credential-change` with `change_type` `revoke`, `update` or `delete` → every
//!   session of the user (a `create` ends no session and is accepted without action);
//! - the SSF verification event, events this IdP's `events` does not honour, and event
//!   types this receiver does not know → accepted (202) and logged, nothing revoked.
//!
//! Subjects (RFC 9493, SSF 1.0 §3): the top-level `sub_id`, else (CAEP before SSF 1.0)
//! the event's `subject`. `iss_sub` names a user when its `iss` is the IdP's or the
//! transmitter's; `email` and `opaque` only mean what `ssf.subjects` says; a `complex`
//! subject's `session` member names the session and its `user` member the user (other
//! members — device, tenant — are not matched: a user + device subject logs the user out).

use epochgate_core::ids::validate_id;
use epochgate_core::state::Target;
use serde_json::{Map, Value};

use super::config::{EventKind, IdpConfig, SsfConfig, SubjectMeaning};
use super::token::{
    check_audience, check_issued_at, check_issuer, jti, replay_until_ms, tenant, typ_is, Refusal,
    Signed,
};
use super::Accepted;

pub const SESSION_REVOKED: &str =
    "https://schemas.openid.net/secevent/caep/event-type/session-revoked";
pub const CREDENTIAL_CHANGE: &str =
    "https://schemas.openid.net/secevent/caep/event-type/credential-change";
pub const VERIFICATION: &str = "https://schemas.openid.net/secevent/ssf/event-type/verification";

/// What a valid SET asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetOutcome {
    Revoke(Accepted),
    /// Accepted, nothing to do (why, for the log).
    Ignore {
        jti: String,
        why: String,
    },
}

/// Who a SET's subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    User(String),
    Session(String),
    UserAndSession { user: String, sid: String },
}

/// Checks a verified SET's claims at `now_ms`.
pub fn check(
    signed: &Signed,
    idp: &IdpConfig,
    ssf: &SsfConfig,
    now_ms: u64,
) -> Result<SetOutcome, Refusal> {
    let claims = &signed.claims;
    if typ_is(&signed.header, "secevent+jwt") != Some(true) {
        return Err(Refusal::Typ(format!(
            "`typ` is {}, not secevent+jwt (SSF requires explicitly typed SETs)",
            signed
                .header
                .get("typ")
                .map_or_else(|| "missing".to_string(), Value::to_string)
        )));
    }
    check_issuer(claims, &ssf.issuer)?;
    check_audience(claims, &ssf.audience)?;
    let iat = check_issued_at(claims, idp, now_ms)?;
    if claims.contains_key("sub") {
        return Err(Refusal::Claim(
            "a SET carries no `sub` (its subject is `sub_id`): is this another kind of JWT?".into(),
        ));
    }
    if claims.contains_key("exp") {
        return Err(Refusal::Expiry(
            "a SET carries no `exp` (SSF 1.0 §4.1.7): is this another kind of JWT?".into(),
        ));
    }
    let jti = jti(claims)?;
    let events = match claims.get("events") {
        Some(Value::Object(events)) => events,
        Some(_) => return Err(Refusal::Events("`events` is not a JSON object".into())),
        None => return Err(Refusal::Events("`events` is missing".into())),
    };
    let mut iter = events.iter();
    let (uri, event) = match (iter.next(), iter.next()) {
        (Some(one), None) => one,
        (None, _) => return Err(Refusal::Events("`events` is empty".into())),
        (Some(_), Some(_)) => {
            return Err(Refusal::Events(format!(
                "`events` holds {} events; a SET carries one",
                events.len()
            )))
        }
    };
    let event = event
        .as_object()
        .ok_or_else(|| Refusal::Events(format!("the event {uri} is not a JSON object")))?;
    let ignore = |why: String| {
        Ok(SetOutcome::Ignore {
            jti: jti.clone(),
            why,
        })
    };
    let kind = match uri.as_str() {
        SESSION_REVOKED => EventKind::SessionRevoked,
        CREDENTIAL_CHANGE => EventKind::CredentialChange,
        VERIFICATION => return ignore("SSF verification event".into()),
        other => {
            return ignore(format!(
                "event type {other} is not one this receiver acts on"
            ))
        }
    };
    if !idp.honours(kind) {
        return ignore(format!("{} is not in this IdP's `events`", kind.name()));
    }
    if kind == EventKind::CredentialChange {
        let field = |name: &str| match event.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(Refusal::Events(format!(
                "credential-change needs the string `{name}`"
            ))),
        };
        let change = field("change_type")?;
        let credential = field("credential_type")?;
        match change.as_str() {
            "create" => {
                return ignore(format!(
                    "credential-change create ({credential}) ends no session"
                ))
            }
            "revoke" | "update" | "delete" => {}
            other => {
                return Err(Refusal::Events(format!(
                    "`change_type` {other:?} is not create, revoke, update or delete"
                )))
            }
        }
    }
    let subject_value = claims
        .get("sub_id")
        .or_else(|| event.get("subject"))
        .ok_or_else(|| {
            Refusal::Subject("the SET has no `sub_id` (nor an event `subject`)".into())
        })?;
    let subject = resolve(subject_value, idp, ssf)?;
    let tenant = tenant(&idp.tenant, claims)?;
    let target = match (kind, subject) {
        (EventKind::CredentialChange, Subject::User(user))
        | (EventKind::CredentialChange, Subject::UserAndSession { user, .. }) => {
            Target::User { tenant, user }
        }
        (EventKind::CredentialChange, Subject::Session(_)) => {
            return Err(Refusal::Subject(
                "credential-change needs a subject that names a user, not only a session".into(),
            ))
        }
        (_, Subject::Session(sid)) | (_, Subject::UserAndSession { sid, .. }) => {
            Target::Session { tenant, sid }
        }
        (_, Subject::User(user)) => Target::User { tenant, user },
    };
    Ok(SetOutcome::Revoke(Accepted {
        target,
        reason: reason(kind, event, &jti),
        replay_until_ms: replay_until_ms(iat, idp),
        jti,
    }))
}

/// The audit reason: the event, who initiated it and the administrative reason given.
fn reason(kind: EventKind, event: &Map<String, Value>, jti: &str) -> String {
    let mut out = format!("CAEP {}", kind.name());
    if let Some(who) = event.get("initiating_entity").and_then(Value::as_str) {
        out.push_str(&format!(" by {who}"));
    }
    if kind == EventKind::CredentialChange {
        let get = |n: &str| event.get(n).and_then(Value::as_str).unwrap_or_default();
        out.push_str(&format!(
            " ({} {})",
            get("credential_type"),
            get("change_type")
        ));
    }
    // `reason_admin` is a map of language tags: English if there is one, else any.
    if let Some(Value::Object(reasons)) = event.get("reason_admin") {
        let text = reasons
            .get("en")
            .or_else(|| reasons.values().next())
            .and_then(Value::as_str);
        if let Some(text) = text {
            let text: String = text.chars().filter(|c| !c.is_control()).take(300).collect();
            out.push_str(&format!(": {text}"));
        }
    }
    out.push_str(&format!(", jti {jti}"));
    out
}

fn id(value: Option<&Value>, what: &str) -> Result<String, Refusal> {
    let s = value
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::Subject(format!("the subject's `{what}` is missing")))?;
    validate_id(s).map_err(|e| Refusal::Subject(format!("the subject's `{what}` {e}")))?;
    Ok(s.to_string())
}

fn format_of(subject: &Map<String, Value>) -> Result<&str, Refusal> {
    subject
        .get("format")
        .and_then(Value::as_str)
        .ok_or_else(|| Refusal::Subject("a subject identifier has no `format`".into()))
}

/// A simple subject identifier, read as `meaning` says (or as the format's own meaning).
fn simple(
    subject: &Map<String, Value>,
    idp: &IdpConfig,
    ssf: &SsfConfig,
    role: Option<SubjectMeaning>,
) -> Result<Subject, Refusal> {
    let format = format_of(subject)?;
    let as_role = |meaning: SubjectMeaning, value: String| match meaning {
        SubjectMeaning::User => Subject::User(value),
        SubjectMeaning::Session => Subject::Session(value),
    };
    match format {
        "iss_sub" => {
            let iss = subject
                .get("iss")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if iss != idp.issuer && iss != ssf.issuer {
                return Err(Refusal::Subject(format!(
                    "the iss_sub subject's `iss` {iss:?} is neither the IdP's nor the transmitter's"
                )));
            }
            if role == Some(SubjectMeaning::Session) {
                return Err(Refusal::Subject(
                    "a complex subject's `session` is an opaque id, not iss_sub".into(),
                ));
            }
            Ok(Subject::User(id(subject.get("sub"), "sub")?))
        }
        "opaque" => {
            let value = id(subject.get("id"), "id")?;
            let meaning = role.or(ssf.subjects.opaque).ok_or_else(|| {
                Refusal::Subject(
                    "opaque subjects are not mapped for this IdP (set ssf.subjects.opaque to \"user\" or \"session\")".into(),
                )
            })?;
            Ok(as_role(meaning, value))
        }
        "email" => {
            let value = id(subject.get("email"), "email")?;
            if role == Some(SubjectMeaning::Session) {
                return Err(Refusal::Subject(
                    "a complex subject's `session` cannot be an e-mail address".into(),
                ));
            }
            match ssf.subjects.email {
                Some(SubjectMeaning::User) => Ok(Subject::User(value)),
                _ => Err(Refusal::Subject(
                    "e-mail subjects are not mapped for this IdP (set ssf.subjects.email to \"user\" if its user ids are e-mail addresses)".into(),
                )),
            }
        }
        other => Err(Refusal::Subject(format!(
            "subject format {other:?} names no user or session this receiver can match"
        ))),
    }
}

fn resolve(value: &Value, idp: &IdpConfig, ssf: &SsfConfig) -> Result<Subject, Refusal> {
    let subject = value
        .as_object()
        .ok_or_else(|| Refusal::Subject("the subject is not a JSON object".into()))?;
    if format_of(subject)? != "complex" {
        return simple(subject, idp, ssf, None);
    }
    let member = |name: &str, role: SubjectMeaning| -> Result<Option<Subject>, Refusal> {
        match subject.get(name) {
            None => Ok(None),
            Some(Value::Object(m)) => simple(m, idp, ssf, Some(role)).map(Some),
            Some(_) => Err(Refusal::Subject(format!(
                "the complex subject's `{name}` is not a subject identifier"
            ))),
        }
    };
    let user = member("user", SubjectMeaning::User)?;
    let session = member("session", SubjectMeaning::Session)?;
    match (user, session) {
        (Some(Subject::User(user)), Some(Subject::Session(sid))) => {
            Ok(Subject::UserAndSession { user, sid })
        }
        (_, Some(Subject::Session(sid))) => Ok(Subject::Session(sid)),
        (Some(Subject::User(user)), None) => Ok(Subject::User(user)),
        _ => Err(Refusal::Subject(
            "the complex subject names neither a `user` nor a `session`".into(),
        )),
    }
}
