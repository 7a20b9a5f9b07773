//! The per-request path: bring the state up to date if it must be, let `core` decide,
//! and say what to do — forward to the origin (with identity headers, spoofed ones
//! stripped) or answer `core`'s deny response.

use std::cell::RefCell;

use epochgate_core::{Decision, HeaderEdit, Inputs, RequestInfo, Response};

use crate::host::{Host, Level};
use crate::refresh::{IsolateState, Plan, SyncCall, SyncOutcome};
use crate::settings::Settings;

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
    /// Who an allowed request was (for the session reports).
    pub identity: Option<epochgate_core::claims::Identity>,
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
    let plan = state
        .borrow()
        .plan(host.now_ms(), &settings.worker, max_staleness_s);
    match plan {
        Plan::Serve => {}
        Plan::Background => {
            background_sync = Some(state.borrow_mut().begin(host.now_ms(), &settings.worker));
        }
        Plan::Blocking => {
            let call = state.borrow_mut().begin(host.now_ms(), &settings.worker);
            complete_sync(state, settings, host, call).await;
        }
        Plan::WaitForSync => {
            // Bounded: `in_flight` turns false at the latest a second past the timeout.
            while state.borrow().in_flight(host.now_ms(), &settings.worker) {
                host.sleep(WAIT_POLL_MS).await;
            }
        }
    }
    let now_ms = host.now_ms();
    let decision = {
        let s = state.borrow();
        let info = RequestInfo {
            headers: &req.headers,
            path: &req.path,
        };
        let status = s.status();
        let inputs = Inputs {
            cache: Some(&settings.cache),
            ..Inputs::new(s.epochs(), status.as_ref(), now_ms)
        };
        settings.engine.decide_with(info, &inputs)
    };
    let edge_id = state.borrow().edge_id().to_string();
    let identity = match &decision {
        Decision::Allow { identity, .. } => identity.clone(),
        Decision::Deny { .. } => None,
    };
    Handled {
        outcome: act(settings, host, &edge_id, req, decision),
        background_sync,
        identity,
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
            signature_only,
            request_edits,
            response_headers,
            ..
        } => {
            if signature_only {
                host.log(
                    Level::Warn,
                    &format!("[{edge_id}] revocation state is stale: allowed on signature only (on_stale: allow)"),
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

/// Runs a started sync to its end and logs how it went.
pub async fn complete_sync<H: Host>(
    state: &RefCell<IsolateState>,
    settings: &Settings,
    host: &H,
    call: SyncCall,
) -> SyncOutcome {
    let result = host
        .get(
            &call.url,
            &settings.edge_token,
            settings.worker.sync_timeout_ms,
        )
        .await;
    let mut s = state.borrow_mut();
    let outcome = s.finish(call.ticket, host.now_ms(), &settings.worker, result);
    let edge_id = s.edge_id();
    match &outcome {
        SyncOutcome::Applied {
            version,
            snapshot,
            changes,
            changed: true,
        } => host.log(
            Level::Info,
            &format!(
                "[{edge_id}] sync: applied {} v{version} ({changes} changes)",
                if *snapshot { "snapshot" } else { "delta" }
            ),
        ),
        SyncOutcome::Applied { .. } => {}
        SyncOutcome::Failed {
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
        SyncOutcome::Superseded => host.log(
            Level::Warn,
            &format!("[{edge_id}] sync: an answer after its timeout was ignored"),
        ),
    }
    outcome
}
