//! The runtime side (wasm only): the `fetch` export that workerd / Cloudflare calls, the
//! real [`Host`], isolate-global state, and the conversions between JS requests and
//! responses and the glue's types. Nothing here judges a token.
//!
//! No JS exception and no Rust error reaches the runtime: every failure becomes a
//! response (500 misconfigured, 502 origin unreachable) and a log line.

use std::cell::RefCell;
use std::rc::Rc;

use epochgate_core::jwt::{Algorithm, VerificationKey};
use epochgate_core::{HeaderEdit, Response};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    CryptoKey, Headers, Request, RequestInit, RequestRedirect, ResponseInit, SubtleCrypto,
    WorkerGlobalScope,
};

use crate::edge::{self, IncomingRequest, Outcome};
use crate::host::{Host, Level};
use crate::refresh::IsolateState;
use crate::sessions::IsolateSessions;
use crate::settings::{
    Bindings, Settings, SetupError, CONFIG_BINDING, EDGE_TOKEN_BINDING, WORKER_BINDING,
};
use crate::verify::{import_form, WebCryptoAlgorithm};
use crate::{byte_string_to_bytes, bytes_to_byte_string, path_and_query, VERSION};

#[wasm_bindgen]
extern "C" {
    /// The runtime's `ExecutionContext`, the `ctx` of `fetch(request, env, ctx)`: only
    /// `waitUntil` is used (declared here rather than through workers-rs, whose bindings
    /// and exported classes the Worker does not need).
    pub type Context;
    #[wasm_bindgen(method, catch, js_name = waitUntil)]
    fn wait_until(this: &Context, promise: &js_sys::Promise) -> Result<(), JsValue>;
    #[wasm_bindgen(js_namespace = AbortSignal, js_name = timeout)]
    fn abort_signal_timeout(ms: f64) -> web_sys::AbortSignal;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(callback: &js_sys::Function, ms: f64) -> JsValue;
    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(message: &str);
    #[wasm_bindgen(js_namespace = console, js_name = error)]
    fn console_error(message: &str);
}

/// The real host: `Date.now()`, `fetch` with `AbortSignal.timeout`, `crypto.subtle`,
/// `console`.
#[derive(Debug, Clone, Copy)]
pub struct JsHost;

/// Keys imported into WebCrypto, by JWS algorithm (an RSA or HMAC key is imported with
/// its hash) and key bytes: `importKey` once per key and isolate, not per token.
type ImportedKeys = Vec<((Algorithm, Vec<u8>), CryptoKey)>;

/// At most this many imported keys are kept (then the cache starts over).
const IMPORTED_KEYS_MAX: usize = 64;

thread_local! {
    static IMPORTED_KEYS: RefCell<ImportedKeys> = const { RefCell::new(Vec::new()) };
}

/// `globalThis.crypto.subtle` (workerd, Cloudflare, node).
fn subtle() -> Result<SubtleCrypto, String> {
    let crypto = js_sys::Reflect::get(&js_sys::global(), &"crypto".into()).map_err(js_error)?;
    let crypto: web_sys::Crypto = crypto
        .dyn_into()
        .map_err(|_| "no WebCrypto (globalThis.crypto) in this runtime".to_string())?;
    Ok(crypto.subtle())
}

/// A plain JS object with string (and number) members: WebCrypto's algorithm parameters.
fn params(members: &[(&str, Option<JsValue>)]) -> Result<js_sys::Object, String> {
    let object = js_sys::Object::new();
    for (name, value) in members {
        if let Some(value) = value {
            js_sys::Reflect::set(&object, &JsValue::from_str(name), value).map_err(js_error)?;
        }
    }
    Ok(object)
}

/// The key as a WebCrypto `CryptoKey` for `verify`, imported once.
async fn imported(
    subtle: &SubtleCrypto,
    key: &VerificationKey,
    alg: &WebCryptoAlgorithm,
) -> Result<CryptoKey, String> {
    let (format, bytes) = import_form(key);
    let id = (key.alg, bytes.to_vec());
    let cached = IMPORTED_KEYS.with(|keys| {
        keys.borrow()
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(_, key)| key.clone())
    });
    if let Some(key) = cached {
        return Ok(key);
    }
    let algorithm = params(&[
        ("name", Some(alg.name.into())),
        ("hash", alg.hash.map(JsValue::from)),
        ("namedCurve", alg.named_curve.map(JsValue::from)),
    ])?;
    let usages = js_sys::Array::of1(&"verify".into());
    let data = js_sys::Uint8Array::from(bytes);
    let promise = subtle
        .import_key_with_object(format, &data, &algorithm, false, &usages)
        .map_err(js_error)?;
    let crypto_key: CryptoKey = JsFuture::from(promise)
        .await
        .map_err(|e| format!("importKey refused the key: {}", js_error(e)))?
        .dyn_into()
        .map_err(js_error)?;
    IMPORTED_KEYS.with(|keys| {
        let mut keys = keys.borrow_mut();
        if keys.len() >= IMPORTED_KEYS_MAX {
            keys.clear();
        }
        keys.push((id, crypto_key.clone()));
    });
    Ok(crypto_key)
}

impl Host for JsHost {
    fn now_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }

    async fn get(
        &self,
        url: &str,
        bearer: &str,
        timeout_ms: u64,
    ) -> Result<(u16, Vec<u8>), String> {
        call("GET", url, bearer, None, timeout_ms).await
    }

    async fn post(
        &self,
        url: &str,
        bearer: &str,
        body: &[u8],
        timeout_ms: u64,
    ) -> Result<(u16, Vec<u8>), String> {
        call("POST", url, bearer, Some(body), timeout_ms).await
    }

    async fn sleep(&self, ms: u64) {
        let timer = js_sys::Promise::new(&mut |resolve, _reject| {
            set_timeout(&resolve, ms as f64);
        });
        // A timer promise never rejects.
        let _ = JsFuture::from(timer).await;
    }

    async fn verify_signature(
        &self,
        key: &VerificationKey,
        input: &[u8],
        signature: &[u8],
    ) -> Result<bool, String> {
        let alg = WebCryptoAlgorithm::of(key.alg);
        let subtle = subtle()?;
        let crypto_key = imported(&subtle, key, &alg).await?;
        let algorithm = params(&[
            ("name", Some(alg.name.into())),
            (
                "hash",
                alg.hash.filter(|_| alg.hash_at_verify()).map(JsValue::from),
            ),
            ("saltLength", alg.salt_length.map(JsValue::from)),
        ])?;
        let promise = subtle
            .verify_with_object_and_u8_array_and_u8_array(&algorithm, &crypto_key, signature, input)
            .map_err(js_error)?;
        let verdict = JsFuture::from(promise)
            .await
            .map_err(|e| format!("verify threw: {}", js_error(e)))?;
        Ok(verdict.as_bool() == Some(true))
    }

    fn log(&self, level: Level, message: &str) {
        match level {
            Level::Info => console_log(message),
            Level::Warn => console_warn(message),
            Level::Error => console_error(message),
        }
    }
}

/// A call to the control plane with the edge token: a GET, or a POST of a JSON body.
async fn call(
    method: &str,
    url: &str,
    bearer: &str,
    body: Option<&[u8]>,
    timeout_ms: u64,
) -> Result<(u16, Vec<u8>), String> {
    let headers = Headers::new().map_err(js_error)?;
    headers
        .set("authorization", &format!("Bearer {bearer}"))
        .map_err(js_error)?;
    headers
        .set("accept", "application/json")
        .map_err(js_error)?;
    let init = RequestInit::new();
    init.set_method(method);
    if let Some(body) = body {
        headers
            .set("content-type", "application/json")
            .map_err(js_error)?;
        init.set_body(&js_sys::Uint8Array::from(body).into());
    }
    init.set_headers(&headers);
    // The signal also bounds reading the body.
    init.set_signal(Some(&abort_signal_timeout(timeout_ms as f64)));
    let global: WorkerGlobalScope = js_sys::global().unchecked_into();
    let resp: web_sys::Response = JsFuture::from(global.fetch_with_str_and_init(url, &init))
        .await
        .map_err(js_error)?
        .dyn_into()
        .map_err(js_error)?;
    let status = resp.status();
    let buffer = JsFuture::from(resp.array_buffer().map_err(js_error)?)
        .await
        .map_err(js_error)?;
    Ok((status, js_sys::Uint8Array::new(&buffer).to_vec()))
}

/// A JS exception as text.
pub fn js_error(value: JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// What one isolate keeps between requests: its bindings, the settings compiled from
/// them (or why they are bad), and its state.
struct Isolate {
    bindings: Bindings,
    settings: Result<IsolateParts, SetupError>,
}

/// What [`isolate`] hands a request: the settings, the state, the session reports.
type IsolateParts = (
    Rc<Settings>,
    Rc<RefCell<IsolateState>>,
    Option<Rc<RefCell<IsolateSessions>>>,
);

thread_local! {
    static ISOLATE: RefCell<Option<Isolate>> = const { RefCell::new(None) };
    static ISOLATE_RANDOM_ID: u64 = random_id();
}

fn random_id() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // crypto.getRandomValues is always there in workerd; this is only a fallback.
        let r = js_sys::Math::random() * 2f64.powi(53);
        return r as u64 ^ js_sys::Date::now() as u64;
    }
    u64::from_le_bytes(bytes)
}

/// The isolate's settings and state for these bindings: compiled on the first request
/// (and again only if the bindings change), logged once.
fn isolate(bindings: Bindings, host: &JsHost) -> Result<IsolateParts, SetupError> {
    ISOLATE.with(|slot| {
        let mut slot = slot.borrow_mut();
        if let Some(i) = slot.as_ref().filter(|i| i.bindings == bindings) {
            return i.settings.clone();
        }
        let random = ISOLATE_RANDOM_ID.with(|r| *r);
        let settings = Settings::load(&bindings).map(|s| {
            let edge_id = s.worker.edge_id(random);
            let relayed = bindings
                .relay
                .then_some(s.engine.config().max_staleness_s);
            let state = IsolateState::new(edge_id, &s.worker, random, relayed);
            let sessions = Some(Rc::new(RefCell::new(IsolateSessions::new(&s))));
            (Rc::new(s), Rc::new(RefCell::new(state)), sessions)
        });
        match &settings {
            Ok((s, state, _)) => {
                let edge_id = state.borrow().edge_id().to_string();
                host.log(
                    Level::Info,
                    &format!(
                        "epochgate-worker {VERSION}: edge {edge_id}, origin {}, control plane {}, {}",
                        s.worker.origin,
                        s.worker.control_plane,
                        if bindings.relay {
                            format!(
                                "told of changes by the relay (asked every {} ms), own syncs every {} ms",
                                s.worker.relay_check_ms,
                                s.worker.client_config(String::new(), Some(s.engine.config().max_staleness_s)).min_interval_ms
                            )
                        } else {
                            format!("refresh every {} ms", s.worker.refresh_ms)
                        }
                    ),
                );
                // Once per isolate: the settings are compiled once.
                for warning in s.engine.config().warnings() {
                    host.log(Level::Warn, &format!("epochgate-worker configuration: {warning}"));
                }
            }
            Err(e) => {
                host.log(
                    Level::Error,
                    &format!("epochgate-worker {VERSION}: bad configuration, every request answers 500: {e}"),
                );
            }
        }
        *slot = Some(Isolate {
            bindings,
            settings: settings.clone(),
        });
        settings
    })
}

/// A binding as text: a string as is, an object (a JSON var) serialised.
fn binding(env: &JsValue, name: &str) -> Option<String> {
    let value = js_sys::Reflect::get(env, &JsValue::from_str(name)).ok()?;
    if let Some(text) = value.as_string() {
        return Some(text);
    }
    if value.is_object() {
        return js_sys::JSON::stringify(&value).ok()?.as_string();
    }
    None
}

pub fn read_bindings(env: &JsValue) -> Bindings {
    Bindings {
        config: binding(env, CONFIG_BINDING),
        worker: binding(env, WORKER_BINDING),
        edge_token: binding(env, EDGE_TOKEN_BINDING),
        relay: relay::bound(env),
    }
}

/// The request as the glue sees it: header values as bytes, the path with its query.
pub fn incoming(req: &Request) -> IncomingRequest {
    let mut headers = Vec::new();
    if let Ok(Some(entries)) = js_sys::try_iter(&req.headers()) {
        for entry in entries.flatten() {
            let pair: js_sys::Array = entry.unchecked_into();
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                headers.push((name.to_ascii_lowercase(), byte_string_to_bytes(&value)));
            }
        }
    }
    IncomingRequest {
        headers,
        path: resolved_path(&req.url()),
    }
}

/// The path and query the origin will get. workerd hands `request.url` over as it came
/// — dot segments (`/x/../admin`, `/x/%2e%2e/admin`) and backslashes included — while
/// `fetch` to the origin resolves them as the URL standard says: so the request is judged
/// on the URL parsed the same way, never on the raw one.
pub fn resolved_path(url: &str) -> String {
    match web_sys::Url::new(url) {
        Ok(u) => format!("{}{}", u.pathname(), u.search()),
        // Not a URL fetch could send either: judged as it came (core finds it ambiguous).
        Err(_) => path_and_query(url),
    }
}

/// A JS `Response` for one of `core`'s (or the glue's) responses.
pub fn to_js_response(r: &Response) -> Result<web_sys::Response, JsValue> {
    let headers = Headers::new()?;
    for (name, value) in &r.headers {
        headers.append(name, value)?;
    }
    let init = ResponseInit::new();
    init.set_status(r.status);
    init.set_headers(&headers);
    let mut body = r.body.clone();
    let body = (!body.is_empty()).then_some(body.as_mut_slice());
    web_sys::Response::new_with_opt_u8_array_and_init(body, &init)
}

/// The request to send to the origin: same method and body, `core`'s header edits
/// applied in order; redirects are handed back to the client, not followed.
pub fn forward_request(req: &Request, url: &str, edits: &[HeaderEdit]) -> Result<Request, JsValue> {
    let headers = Headers::new_with_headers(&req.headers())?;
    for edit in edits {
        match edit {
            HeaderEdit::Remove(name) => headers.delete(name)?,
            HeaderEdit::Set(name, value) => headers.set(name, &bytes_to_byte_string(value))?,
        }
    }
    let init = RequestInit::new();
    init.set_method(&req.method());
    init.set_headers(&headers);
    init.set_redirect(RequestRedirect::Manual);
    if let Some(body) = req.body() {
        init.set_body(&body);
        // A stream body needs `duplex: "half"` (the Fetch standard; node insists).
        js_sys::Reflect::set(&init, &"duplex".into(), &"half".into())?;
    }
    Request::new_with_str_and_init(url, &init)
}

/// The origin's response with `extra` headers added (a fetched response's headers are
/// immutable: this is a copy that streams the same body).
pub fn with_response_headers(
    resp: web_sys::Response,
    extra: &[(String, String)],
) -> Result<web_sys::Response, JsValue> {
    if extra.is_empty() {
        return Ok(resp);
    }
    let headers = Headers::new_with_headers(&resp.headers())?;
    for (name, value) in extra {
        headers.append(name, value)?;
    }
    let init = ResponseInit::new();
    init.set_status(resp.status());
    init.set_status_text(&resp.status_text());
    init.set_headers(&headers);
    web_sys::Response::new_with_opt_readable_stream_and_init(resp.body().as_ref(), &init)
}

async fn send(req: &Request) -> Result<web_sys::Response, JsValue> {
    let global: WorkerGlobalScope = js_sys::global().unchecked_into();
    JsFuture::from(global.fetch_with_request(req))
        .await?
        .dyn_into()
}

/// The Worker's fetch handler (the committed ES-module entry, `worker/entry.mjs`, hands
/// the runtime's `fetch(request, env, ctx)` to it).
#[wasm_bindgen]
pub async fn fetch(req: Request, env: JsValue, ctx: Context) -> Result<JsValue, JsValue> {
    let host = JsHost;
    let response = match isolate(read_bindings(&env), &host) {
        Err(e) => {
            host.log(
                Level::Error,
                &format!("request refused: worker misconfigured: {e}"),
            );
            e.response()
        }
        Ok((settings, state, sessions)) => {
            let incoming = incoming(&req);
            if relay::bound(&env) {
                relay::before_request(&env, &settings, &state).await;
            }
            let handled = edge::handle(&state, &settings, &host, &incoming).await;
            let report = sessions.as_ref().and_then(|s| {
                let edge_id = state.borrow().edge_id().to_string();
                IsolateSessions::after_request(
                    s,
                    &settings,
                    &incoming,
                    handled.identity.as_ref(),
                    &edge_id,
                    host.now_ms(),
                )
                .map(|call| (s.clone(), call))
            });
            if let Some((sessions, call)) = report {
                let settings = settings.clone();
                let send = wasm_bindgen_futures::future_to_promise(async move {
                    IsolateSessions::send(&sessions, &settings, &JsHost, call).await;
                    Ok(JsValue::UNDEFINED)
                });
                if let Err(e) = ctx.wait_until(&send) {
                    host.log(
                        Level::Warn,
                        &format!("waitUntil refused the session report: {}", js_error(e)),
                    );
                }
            }
            if relay::bound(&env) {
                relay::after_request(&env, &ctx, &settings, &state);
            }
            if let Some(call) = handled.background_sync {
                let (state, settings) = (state.clone(), settings.clone());
                let sync = wasm_bindgen_futures::future_to_promise(async move {
                    edge::complete_sync(&state, &settings, &JsHost, call).await;
                    Ok(JsValue::UNDEFINED)
                });
                if let Err(e) = ctx.wait_until(&sync) {
                    host.log(
                        Level::Warn,
                        &format!("waitUntil refused the sync: {}", js_error(e)),
                    );
                }
            }
            match handled.outcome {
                Outcome::Respond(r) => r,
                Outcome::Forward {
                    url,
                    edits,
                    response_headers,
                } => match forward_request(&req, &url, &edits) {
                    Ok(out) => match send(&out)
                        .await
                        .and_then(|resp| with_response_headers(resp, &response_headers))
                    {
                        Ok(resp) => return Ok(resp.into()),
                        Err(e) => {
                            host.log(
                                Level::Error,
                                &format!("origin {url} unreachable: {}", js_error(e)),
                            );
                            crate::error_response(
                                502,
                                "origin_unreachable",
                                "the origin did not answer",
                            )
                        }
                    },
                    Err(e) => {
                        host.log(
                            Level::Error,
                            &format!("cannot build the origin request for {url}: {}", js_error(e)),
                        );
                        crate::error_response(
                            502,
                            "origin_unreachable",
                            "the origin request could not be built",
                        )
                    }
                },
            }
        }
    };
    match to_js_response(&response) {
        Ok(r) => Ok(r.into()),
        Err(e) => {
            host.log(
                Level::Error,
                &format!("cannot build a response: {}", js_error(e)),
            );
            // A bare 500 cannot fail to build.
            Ok(web_sys::Response::new_with_opt_str_and_init(None, &{
                let i = ResponseInit::new();
                i.set_status(500);
                i
            })
            .map(JsValue::from)
            .unwrap_or(JsValue::NULL))
        }
    }
}

mod relay;
#[cfg(test)]
mod tests;
