//! The relay's runtime side (see [`crate::relay`]): the Durable Object's `fetch` and
//! `alarm` (exported for `worker/entry.mjs`'s `EpochgateRelay` class), and an isolate's
//! question to the object through its namespace binding.

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::{Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit};

use super::{abort_signal_timeout, js_error, read_bindings, to_js_response, Context, JsHost};
use crate::edge;
use crate::host::{GetResult, Host, Level};
use crate::refresh::IsolateState;
use crate::relay::{self, Relay, RelayWatch, ALARM_MS, CHECK_TIMEOUT_MS, RELAY_BINDING, RELAY_URL};
use crate::settings::{Bindings, Settings, SetupError};
use crate::VERSION;

type RelayParts = (Rc<Settings>, Rc<RefCell<Relay>>);

thread_local! {
    /// The object's settings and relay, for these bindings (one relay per object; an
    /// isolate that hosts the object hosts only it).
    static RELAY: RefCell<Option<(Bindings, Result<RelayParts, SetupError>)>> =
        const { RefCell::new(None) };
    /// An isolate's questions to the object.
    static WATCH: RefCell<RelayWatch> = RefCell::new(RelayWatch::default());
}

fn relay_for(bindings: Bindings, host: &JsHost) -> Result<RelayParts, SetupError> {
    RELAY.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some((_, parts)) = slot.as_ref().filter(|(b, _)| *b == bindings) {
            return parts.clone();
        }
        let parts = Settings::load(&bindings).map(|s| {
            let seed = js_sys::Date::now() as u64;
            let relay = Relay::new(&s.worker, seed);
            host.log(
                Level::Info,
                &format!(
                    "epochgate-worker {VERSION}: relay {} for deployment {}, control plane {}",
                    relay.edge_id(),
                    s.worker.deployment,
                    s.worker.control_plane
                ),
            );
            (Rc::new(s), Rc::new(RefCell::new(relay)))
        });
        if let Err(e) = &parts {
            host.log(
                Level::Error,
                &format!("epochgate-worker {VERSION}: relay misconfigured, isolates poll on their own: {e}"),
            );
        }
        *slot = Some((bindings, parts.clone()));
        parts
    })
}

fn start(parts: &RelayParts) {
    let (settings, relay) = (parts.0.clone(), parts.1.clone());
    wasm_bindgen_futures::spawn_local(async move {
        relay::run(&relay, &settings, &JsHost).await;
    });
}

/// `state.storage.setAlarm(at)`: keeps the object's poll going between requests. A
/// runtime without alarms only loses that (requests keep it going).
async fn set_alarm(state: &JsValue, at_ms: u64) {
    let result: Result<(), JsValue> = async {
        let storage = Reflect::get(state, &"storage".into())?;
        let set: Function = Reflect::get(&storage, &"setAlarm".into())?.dyn_into()?;
        let done = set.call1(&storage, &JsValue::from_f64(at_ms as f64))?;
        if let Ok(p) = done.dyn_into::<Promise>() {
            JsFuture::from(p).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        JsHost.log(
            Level::Warn,
            &format!(
                "relay: setAlarm failed ({}); the poll runs only while isolates ask",
                js_error(e)
            ),
        );
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Result<JsValue, JsValue> {
    let r = epochgate_core::Response {
        status,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("cache-control".into(), "no-store".into()),
        ],
        body,
        grpc_status: None,
        grpc_message: None,
    };
    to_js_response(&r).map(JsValue::from)
}

/// The object's `fetch`: an isolate asks what is current. Starts the poll if it is not
/// running; answers from memory at once.
#[wasm_bindgen]
pub async fn relay_fetch(_req: Request, env: JsValue, state: JsValue) -> Result<JsValue, JsValue> {
    let host = JsHost;
    let parts = match relay_for(read_bindings(&env), &host) {
        Ok(parts) => parts,
        Err(e) => return to_js_response(&e.response()).map(JsValue::from),
    };
    let now = host.now_ms();
    let first = parts.1.borrow_mut().asked(now);
    if first {
        start(&parts);
        set_alarm(&state, now + ALARM_MS).await;
    }
    let current = parts.1.borrow().current(host.now_ms());
    json_response(200, current.encode())
}

/// The object's `alarm`: while isolates asked recently, the poll goes on (restarted if
/// it stopped) and the alarm is set again.
#[wasm_bindgen]
pub async fn relay_alarm(env: JsValue, state: JsValue) -> Result<JsValue, JsValue> {
    let host = JsHost;
    let Ok(parts) = relay_for(read_bindings(&env), &host) else {
        return Ok(JsValue::UNDEFINED);
    };
    let now = host.now_ms();
    let (restart, again) = parts.1.borrow_mut().alarm(now);
    if restart {
        start(&parts);
    }
    if again {
        set_alarm(&state, now + ALARM_MS).await;
    }
    Ok(JsValue::UNDEFINED)
}

/// Whether `env` binds the relay's namespace.
pub fn bound(env: &JsValue) -> bool {
    Reflect::get(env, &RELAY_BINDING.into()).is_ok_and(|ns| ns.is_object())
}

/// An isolate's question to the deployment's object (`idFromName(deployment)`), given up
/// after [`CHECK_TIMEOUT_MS`].
pub async fn ask(env: &JsValue, deployment: &str) -> GetResult {
    let answer: Result<(u16, Vec<u8>), JsValue> = async {
        let ns = Reflect::get(env, &RELAY_BINDING.into())?;
        let id_from_name: Function = Reflect::get(&ns, &"idFromName".into())?.dyn_into()?;
        let id = id_from_name.call1(&ns, &deployment.into())?;
        let get: Function = Reflect::get(&ns, &"get".into())?.dyn_into()?;
        let stub = get.call1(&ns, &id)?;
        let fetch: Function = Reflect::get(&stub, &"fetch".into())?.dyn_into()?;
        let init = RequestInit::new();
        init.set_signal(Some(&abort_signal_timeout(CHECK_TIMEOUT_MS as f64)));
        let promise: Promise = fetch.call2(&stub, &RELAY_URL.into(), &init)?.dyn_into()?;
        let resp: web_sys::Response = JsFuture::from(promise).await?.dyn_into()?;
        let status = resp.status();
        let buffer = JsFuture::from(resp.array_buffer()?).await?;
        Ok((status, js_sys::Uint8Array::new(&buffer).to_vec()))
    }
    .await;
    answer.map_err(js_error)
}

/// Asks the object and, if it knows of a version this isolate does not hold, syncs at
/// once, then reports what it applied (see [`relay::changed`]).
async fn ask_and_sync(env: &JsValue, settings: &Settings, state: &RefCell<IsolateState>) {
    let host = JsHost;
    let answer = ask(env, &settings.worker.deployment).await;
    let now = host.now_ms();
    let sync_now = WATCH.with(|w| {
        w.borrow_mut().finish(
            &host,
            now,
            answer,
            &mut state.borrow_mut(),
            &settings.worker,
        )
    });
    if !sync_now {
        return;
    }
    let call = state.borrow_mut().begin(now, &settings.worker);
    let Some(call) = call else {
        return;
    };
    let event = edge::complete_sync(state, settings, &host, call).await;
    // The control plane learns what an edge applied from its next call (its `since`):
    // report a change at once, not `relay_refresh_ms` later, so `?wait=` receipts and
    // `GET /v1/edges` see it.
    if relay::changed(&event) {
        let ack = state
            .borrow_mut()
            .report_now(host.now_ms(), &settings.worker);
        if let Some(call) = ack {
            edge::complete_sync(state, settings, &host, call).await;
        }
    }
}

/// Before a request: an isolate that has not heard from the object for
/// [`relay::ASK_FIRST_MS`] (an idle spell) asks it first, and syncs if it must, so the
/// first request after the spell is decided on what is current — one round trip to the
/// object, only then.
pub async fn before_request(env: &JsValue, settings: &Settings, state: &RefCell<IsolateState>) {
    let now = JsHost.now_ms();
    if WATCH.with(|w| w.borrow_mut().begin_first(now)) {
        ask_and_sync(env, settings, state).await;
    }
}

/// After a request: if a question is due, asks the object in the background
/// (`ctx.waitUntil`), syncing in the same task if it must.
pub fn after_request(
    env: &JsValue,
    ctx: &Context,
    settings: &Rc<Settings>,
    state: &Rc<RefCell<IsolateState>>,
) {
    let now = JsHost.now_ms();
    if !WATCH.with(|w| w.borrow_mut().begin(now, settings.worker.relay_check_ms)) {
        return;
    }
    let (env, settings, state) = (env.clone(), settings.clone(), state.clone());
    let task = wasm_bindgen_futures::future_to_promise(async move {
        ask_and_sync(&env, &settings, &state).await;
        Ok(JsValue::UNDEFINED)
    });
    if let Err(e) = ctx.wait_until(&task) {
        JsHost.log(
            Level::Warn,
            &format!("waitUntil refused the relay question: {}", js_error(e)),
        );
    }
}
