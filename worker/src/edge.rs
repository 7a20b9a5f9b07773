//! The per-request path: bring the state up to date if it must be, let `core` decide,
//! and say what to do — forward to the origin (with identity headers, spoofed ones
//! stripped) or answer `core`'s deny response.

use std::cell::RefCell;

use epochgate_core::decision::Step;
use epochgate_core::rotation::{JwksEvent, KeyWait};
use epochgate_core::state::RevocationState;
use epochgate_core::sync::client::{kept_note, Event};
use epochgate_core::sync::SyncStatus;
use epochgate_core::watch::Watch;
use epochgate_core::{Decision, DenyReason, HeaderEdit, Inputs, RequestInfo, Response};

use crate::host::{Host, Level};
use crate::refresh::{IsolateState, Plan, SyncCall};
use crate::settings::Settings;
use crate::verify;

/// How often a request waiting for another request's sync looks again.
pub const WAIT_POLL_MS: u64 = 5;

/// A request as the glue hands it over: header values as bytes (see
/// [`crate::byte_string_to_bytes`]), names lower-case; the path with its query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncomingRequest {
    pub headers: Vec<(String, Vec<u8>)>,
    pub path: String,
}

/// What to do with the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send it to `url` (same method and body) after `core`'s header edits in order
    /// (spoofed identity headers removed, the verified identity set, the token stripped
    /// if configured), and add `response_headers` to the origin's answer (a scheduled
    /// logout's notice).
    Forward {
        url: String,
        edits: Vec<HeaderEdit>,
        response_headers: Vec<(String, String)>,
    },
    /// Answer it here.
    Respond(Response),
}

/// The outcome, plus the sync this request started and the runtime must finish in the
/// background (`ctx.waitUntil`), if one was due.
#[derive(Debug)]
pub struct Handled {
    pub outcome: Outcome,
    pub background_sync: Option<SyncCall>,
    /// The JWKS fetch this request started, to finish in the background
    /// ([`complete_jwks`]), if one was due.
    pub background_jwks: Option<u64>,
    /// Who an allowed request was (for the session reports).
    pub identity: Option<epochgate_core::claims::Identity>,
    /// An allowed request's watch: its response, if long-lived, is judged again while
    /// it is sent ([`stream_over`]) and cut once its session is over.
    pub watch: Option<Watch>,
}

/// Handles one request.
///
/// The plan is taken and a due sync started ([`IsolateState::begin`]) without an
/// `await` in between, so two concurrent requests can never both start one.
pub async fn handle<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    req: &IncomingRequest,
) -> Handled {
    let max_staleness_s = settings.engine.config().max_staleness_s;
    let mut background_sync = None;
    state.borrow_mut().sweep(host.now_ms());
    let plan = state.borrow().plan(host.now_ms(), max_staleness_s);
    match plan {
        Plan::Serve => {}
        Plan::Background => {
            background_sync = state.borrow_mut().begin(host.now_ms(), &settings.worker);
        }
        Plan::Blocking => {
            let call = state.borrow_mut().begin(host.now_ms(), &settings.worker);
            if let Some(call) = call {
                complete_sync(state, settings, host, call).await;
            }
        }
        Plan::WaitForSync => {
            // Bounded: `in_flight` turns false at the latest a second past the timeout.
            while state.borrow().in_flight(host.now_ms()) {
                host.sleep(WAIT_POLL_MS).await;
            }
        }
    }
    let edge_id = state.borrow().edge_id().to_string();
    let background_jwks = jwks_before_deciding(state, settings, host).await;
    let mut decision = decide(state, settings, host, req, &edge_id).await;
    if matches!(
        decision,
        Decision::Deny {
            reason: DenyReason::UnknownKey,
            ..
        }
    ) && wait_for_keys(state, settings, host, &edge_id).await
    {
        // Decided again once, never held a second time: a `kid` still unknown is
        // `unknown_key` (503, `Retry-After: 1`).
        decision = decide(state, settings, host, req, &edge_id).await;
    }
    let identity = match &decision {
        Decision::Allow { identity, .. } => identity.clone(),
        Decision::Deny { .. } => None,
    };
    let watch = identity.clone().map(|id| {
        let status = state.borrow().status();
        Watch::new(id, status.as_ref(), host.now_ms())
    });
    Handled {
        outcome: act(settings, host, &edge_id, req, decision),
        background_sync,
        background_jwks,
        identity,
        watch,
    }
}

/// `core`'s decision on the request with what the isolate holds now.
async fn decide<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    req: &IncomingRequest,
    edge_id: &str,
) -> Decision {
    let info = RequestInfo {
        headers: &req.headers,
        path: &req.path,
    };
    // The isolate's state is borrowed only while `core` decides, never across the
    // WebCrypto await (a sync may apply meanwhile: `finish` then sees the newer state).
    let step = {
        let s = state.borrow();
        let status = s.status();
        settings
            .engine
            .begin(info, &inputs(settings, &s, status.as_ref(), host.now_ms()))
    };
    match step {
        Step::Done(decision) => decision,
        Step::Verify(pending) => {
            let verified = verify::verify(host, edge_id, &pending).await;
            let s = state.borrow();
            let status = s.status();
            let inputs = inputs(settings, &s, status.as_ref(), host.now_ms());
            settings.engine.finish(pending, verified, &inputs)
        }
    }
}

/// Requests held for a JWKS refresh per isolate, at most; more are answered
/// `unknown_key` at once (a flood of bogus `kid`s must not pile up held requests).
pub const MAX_KEY_WAITS: usize = 1024;

/// The remote JWKS before a request is decided: a due fetch is started (without an
/// `await` before it is marked in flight, so never two at once). With no keys yet (a
/// cold isolate) the request fetches them first; otherwise the fetch is handed back to
/// run in the background ([`complete_jwks`]) and the request decided with the keys held.
async fn jwks_before_deciding<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
) -> Option<u64> {
    let (ticket, cold) = {
        let mut s = state.borrow_mut();
        let j = s.jwks_mut()?;
        let cold = j.keys().is_none();
        (j.poll_fetch(host.now_ms())?, cold)
    };
    if cold {
        complete_jwks(state, settings, host, ticket).await;
        return None;
    }
    Some(ticket)
}

/// A request met a `kid` the held keys lack: it asks for a refresh and is held — at
/// most `key_refresh_wait_ms`, by `core`'s [`KeyWait`] — until the key set changes or
/// the refresh fails, as Envoy's filter holds it. `false` when it was not held (no
/// remote JWKS, no wait configured, or too many held already).
async fn wait_for_keys<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    edge_id: &str,
) -> bool {
    let wait_ms = settings.engine.config().key_refresh_wait_ms;
    let now = host.now_ms();
    let (wait, ticket) = {
        let mut s = state.borrow_mut();
        let held = s.key_waits;
        let Some(j) = s.jwks_mut() else {
            return false;
        };
        j.request_refresh(now);
        if wait_ms == 0 || held >= MAX_KEY_WAITS {
            return false;
        }
        let wait = KeyWait::new(now, wait_ms, j.version().as_ref().map(|v| &v[..]));
        let ticket = j.poll_fetch(now);
        s.key_waits += 1;
        (wait, ticket)
    };
    host.log(
        Level::Info,
        &format!(
            "[{edge_id}] unknown signing key: waiting up to {wait_ms} ms for the JWKS refresh"
        ),
    );
    if let Some(ticket) = ticket {
        complete_jwks(state, settings, host, ticket).await;
    }
    loop {
        let step = {
            let s = state.borrow();
            let j = s.jwks();
            wait.step(
                host.now_ms(),
                j.and_then(|j| j.version()).as_ref().map(|v| &v[..]),
                j.and_then(|j| j.last_failure_ms()),
            )
        };
        if step.is_over() {
            break;
        }
        host.sleep(WAIT_POLL_MS).await;
        // A fetch that became due meanwhile (a backoff ran out) is run by the waiter.
        let ticket = state
            .borrow_mut()
            .jwks_mut()
            .and_then(|j| j.poll_fetch(host.now_ms()));
        if let Some(ticket) = ticket {
            complete_jwks(state, settings, host, ticket).await;
        }
    }
    let mut s = state.borrow_mut();
    s.key_waits = s.key_waits.saturating_sub(1);
    true
}

/// Runs the JWKS fetch `ticket` to its end and applies the answer with `core`'s rules
/// ([`epochgate_core::rotation::RemoteJwks::handle_answer`]); a new key set clears the
/// token cache, so a dropped key's tokens fail on their next request.
pub async fn complete_jwks<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    ticket: u64,
) {
    let Some(source) = &settings.worker.jwks else {
        return;
    };
    let result = host
        .get_public(&source.url, settings.worker.sync_timeout_ms)
        .await;
    let mut s = state.borrow_mut();
    let edge_id = s.edge_id().to_string();
    let Some(j) = s.jwks_mut() else {
        return;
    };
    let answer = match &result {
        Ok((status, body)) => Ok((*status, body.as_slice())),
        Err(e) => Err(format!("the IdP is unreachable: {e}")),
    };
    let event = j.handle_answer(
        ticket,
        host.now_ms(),
        answer,
        settings.engine.config().jwks_default_alg,
        settings.engine.verifier(),
    );
    match event {
        JwksEvent::Updated { keys, skipped } => {
            settings.cache.clear();
            host.log(
                Level::Info,
                &format!("[{edge_id}] jwks: fetched {} ({keys} keys)", source.url),
            );
            for why in skipped {
                host.log(Level::Info, &format!("[{edge_id}] jwks: key skipped: {why}"));
            }
        }
        JwksEvent::Failed {
            why,
            failures,
            retry_in_ms,
        } => host.log(
            Level::Warn,
            &format!(
                "[{edge_id}] jwks fetch failed ({failures} in a row): {why}; keeping the previous keys, retrying in {retry_in_ms} ms"
            ),
        ),
        JwksEvent::Superseded => {}
    }
}

/// How often a watched response is judged again while it is sent (Envoy's filter ticks
/// at the same pace).
pub const STREAM_LOOK_MS: u64 = 250;

/// Judges a watched response again (`core`'s [`Engine::rewatch`]): `true` once its
/// session is over — revoked by the isolate's state, past the horizon, or a scheduled
/// logout's `at` passed. An open response keeps its isolate syncing: a due sync is run
/// here, awaited (never two at once, as for requests), so a logout reaches the stream
/// with no other request to bring it.
///
/// [`Engine::rewatch`]: epochgate_core::decision::Engine
pub async fn stream_over<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    watch: &mut Watch,
) -> bool {
    let max_staleness_s = settings.engine.config().max_staleness_s;
    state.borrow_mut().sweep(host.now_ms());
    let plan = state.borrow().plan(host.now_ms(), max_staleness_s);
    if matches!(plan, Plan::Background | Plan::Blocking) {
        let call = state.borrow_mut().begin(host.now_ms(), &settings.worker);
        if let Some(call) = call {
            complete_sync(state, settings, host, call).await;
        }
    }
    let s = state.borrow();
    let status = s.status();
    let now_ms = host.now_ms();
    if !watch.is_due(status.as_ref(), now_ms) {
        return false;
    }
    match settings
        .engine
        .rewatch(watch, s.epochs(), status.as_ref(), now_ms)
    {
        Ok(()) => false,
        Err(reason) => {
            host.log(
                Level::Info,
                &format!(
                    "[{}] stream ended: session over ({reason}): user {:?} of tenant {:?}",
                    s.edge_id(),
                    watch.identity.user,
                    watch.identity.tenant
                ),
            );
            true
        }
    }
}

/// What `core` decides with besides the request: the isolate's epochs and sync status,
/// its token cache, the time.
fn inputs<'a>(
    settings: &'a Settings,
    state: &'a IsolateState,
    status: Option<&'a SyncStatus>,
    now_ms: u64,
) -> Inputs<'a, RevocationState> {
    Inputs {
        cache: Some(&settings.cache),
        remote_keys: state.jwks().and_then(|j| j.keys()),
        ..Inputs::new(state.epochs(), status, now_ms)
    }
}

/// Maps `core`'s decision to an [`Outcome`]; nothing here judges a token.
fn act<H: Host>(
    settings: &Settings,
    host: &H,
    edge_id: &str,
    req: &IncomingRequest,
    decision: Decision,
) -> Outcome {
    match decision {
        Decision::Allow {
            stale,
            request_edits,
            response_headers,
            ..
        } => {
            if stale {
                host.log(
                    Level::Warn,
                    &format!("[{edge_id}] revocation state is stale: allowed with the revocations held (on_stale: allow)"),
                );
            }
            Outcome::Forward {
                url: settings.worker.origin_url(&req.path),
                edits: request_edits,
                response_headers,
            }
        }
        Decision::Deny {
            reason,
            detail,
            response,
        } => {
            host.log(
                Level::Info,
                &format!("[{edge_id}] denied {reason}: {detail}"),
            );
            Outcome::Respond(response)
        }
    }
}

/// The most requests one sync runs (a paged snapshot's pages, a snapshot after another
/// history's answer), so a confused control plane cannot hold a task forever.
const MAX_CALLS_PER_SYNC: usize = 1_000;

/// Runs a started sync to its end — the following pages of a paged snapshot, and the
/// snapshot asked for after an answer of another history, at once — and logs how it
/// went; returns the last event.
pub async fn complete_sync<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    call: SyncCall,
) -> Event {
    let mut call = call;
    let mut calls = 1;
    loop {
        let result = host
            .get(
                &call.url,
                &settings.edge_token,
                settings.worker.sync_timeout_ms,
            )
            .await;
        let mut s = state.borrow_mut();
        let before = s.status();
        let event = s.finish(call.ticket, host.now_ms(), result);
        log_event(host, &s, &event, before.as_ref());
        let again = matches!(
            event,
            Event::Applied {
                complete: false,
                ..
            } | Event::Restart { .. }
        );
        if !again || calls >= MAX_CALLS_PER_SYNC {
            return event;
        }
        let Some(next) = s.begin(host.now_ms(), &settings.worker) else {
            return event;
        };
        call = next;
        calls += 1;
    }
}

fn log_event<H: Host>(
    host: &H,
    s: &IsolateState,
    event: &Event,
    before: Option<&epochgate_core::sync::SyncStatus>,
) {
    let edge_id = s.edge_id();
    match event {
        Event::Applied {
            version,
            snapshot,
            complete: true,
            changes,
            changed,
            kept,
            ..
        } => {
            if *changed {
                host.log(
                    Level::Info,
                    &format!(
                        "[{edge_id}] sync: applied {} v{version} ({changes} changes)",
                        if *snapshot { "snapshot" } else { "delta" }
                    ),
                );
            }
            if *kept > 0 {
                let note = kept_note(*version, *kept, before);
                host.log(Level::Warn, &format!("[{edge_id}] {note}"));
            }
        }
        Event::Applied { .. } => {}
        Event::Restart { why } => host.log(
            Level::Warn,
            &format!("[{edge_id}] sync: {why}; asking for a snapshot (what is held stays in force)"),
        ),
        Event::Failed {
            why,
            failures,
            retry_in_ms,
        } => host.log(
            Level::Warn,
            &format!(
                "[{edge_id}] sync failed ({failures} in a row): {why}; serving the last good state (v{}), retrying in {retry_in_ms} ms",
                s.version()
            ),
        ),
        Event::Superseded => host.log(
            Level::Warn,
            &format!("[{edge_id}] sync: an answer after its timeout was ignored"),
        ),
    }
}
