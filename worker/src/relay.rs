//! The deployment's relay: one Durable Object (class `EpochgateRelay`, bound as
//! [`RELAY_BINDING`]) holds the long poll to the control plane for every isolate of the
//! deployment, and isolates learn of a change from it cheaply.
//!
//! - **The object** runs `core`'s sync client as an edge of its own
//!   (`<deployment>-relay`, [`WorkerConfig::relay_client_config`]): a long-poll loop,
//!   the same state machine as Envoy's sync VM. It answers an isolate's question — what
//!   is current? — with [`Current`] from memory. It polls while isolates ask (an alarm
//!   keeps it going between requests) and stops [`IDLE_MS`] after the last one asked.
//! - **An isolate** asks the object at most every `relay_check_ms`, in the background of
//!   a request ([`RelayWatch`]) — before the request when it has not heard from the
//!   object for [`ASK_FIRST_MS`] (an idle spell: the first request after a logout is then
//!   decided on it). A version it does not hold makes its own sync due at
//!   once ([`IsolateState::relay_says`]): it syncs with the control plane directly, so
//!   what it enforces, its receipts and its `GET /v1/edges` entry are its own, as
//!   without the relay. Meanwhile its own calls come only every `relay_refresh_ms`.
//! - **Falling back.** An object that cannot be reached, answers garbage, or is not in
//!   sync itself is no relay: the isolate polls every `refresh_ms` as it would alone.
//!   The relay can only make a change arrive sooner; at worst (an object that says
//!   nothing changed when something did) it arrives with the isolate's own call, within
//!   `relay_refresh_ms`.

use std::cell::RefCell;

use epochgate_core::config::WorkerConfig;
use epochgate_core::sync::client::{Event, SyncClient};
use serde_json::Value;

use crate::host::{GetResult, Host, Level};
use crate::refresh::IsolateState;
use crate::settings::Settings;

/// The Durable Object namespace binding that turns the relay on.
pub const RELAY_BINDING: &str = "EPOCHGATE_RELAY";
/// What an isolate asks the object (the host part is ignored by a Durable Object stub).
pub const RELAY_URL: &str = "https://epochgate-relay/v1/current";
/// The object stops polling the control plane this long after the last question.
pub const IDLE_MS: u64 = 60_000;
/// An isolate gives up on a question after this long (and polls on its own meanwhile).
pub const CHECK_TIMEOUT_MS: u64 = 1_000;
/// An isolate that has not had an answer from the object for this long asks it before
/// deciding a request (an idle spell), not after.
pub const ASK_FIRST_MS: u64 = 1_000;
/// The object's alarm comes this often while isolates ask (keeps the poll going).
pub const ALARM_MS: u64 = 30_000;

/// The object's answer: the control plane's current stream and version as of its last
/// answer, and whether the object is in sync (its last poll answered, recently).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    pub stream: String,
    pub version: u64,
    pub in_sync: bool,
}

impl Current {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({
            "stream": self.stream,
            "version": self.version,
            "in_sync": self.in_sync,
        })
        .to_string()
        .into_bytes()
    }

    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("relay answer not JSON: {e}"))?;
        match (
            v["stream"].as_str(),
            v["version"].as_u64(),
            v["in_sync"].as_bool(),
        ) {
            (Some(stream), Some(version), Some(in_sync)) => Ok(Current {
                stream: stream.to_string(),
                version,
                in_sync,
            }),
            _ => Err(format!("relay answer without stream/version/in_sync: {v}")),
        }
    }
}

/// The object's side: its sync client and whether its loop runs.
#[derive(Debug)]
pub struct Relay {
    client: SyncClient,
    running: bool,
    last_asked_ms: u64,
    /// A poll answered within this long is in sync (the poll's wait plus its timeout).
    in_sync_ms: u64,
}

impl Relay {
    pub fn new(config: &WorkerConfig, seed: u64) -> Self {
        let client_config = config.relay_client_config();
        let in_sync_ms = client_config.call_timeout_ms + 1_000;
        Self {
            client: SyncClient::new(client_config, seed),
            running: false,
            last_asked_ms: 0,
            in_sync_ms,
        }
    }

    pub fn edge_id(&self) -> &str {
        &self.client.config().edge_id
    }

    /// An isolate asked at `now_ms`: returns whether the loop must be started.
    pub fn asked(&mut self, now_ms: u64) -> bool {
        self.last_asked_ms = now_ms;
        !std::mem::replace(&mut self.running, true)
    }

    /// The alarm rang: returns whether the loop must be started again (isolates asked
    /// recently, and it stopped) and whether to set the alarm again.
    pub fn alarm(&mut self, now_ms: u64) -> (bool, bool) {
        if self.idle(now_ms) {
            return (false, false);
        }
        (!std::mem::replace(&mut self.running, true), true)
    }

    fn idle(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_asked_ms) > IDLE_MS
    }

    /// What an isolate is told.
    pub fn current(&self, now_ms: u64) -> Current {
        let status = self.client.status();
        Current {
            stream: status.map(|s| s.stream.clone()).unwrap_or_default(),
            version: status.map_or(0, |s| s.version),
            in_sync: self.client.failures() == 0
                && status.is_some_and(|s| now_ms.saturating_sub(s.synced_at_ms) <= self.in_sync_ms),
        }
    }
}

/// The object's loop: long polls through `core`'s sync client until no isolate asked for
/// [`IDLE_MS`]. The relay is borrowed only between awaits.
pub async fn run<H: Host>(relay: &RefCell<Relay>, settings: &Settings, host: &H) {
    loop {
        let now = host.now_ms();
        let call = {
            let mut r = relay.borrow_mut();
            if r.idle(now) {
                r.running = false;
                host.log(
                    Level::Info,
                    &format!(
                        "[{}] no isolate asked for {IDLE_MS} ms: polling stops",
                        r.edge_id()
                    ),
                );
                return;
            }
            r.client.handle_timeout(now);
            r.client.poll_transmit(now)
        };
        let Some(t) = call else {
            let wake = relay.borrow().client.poll_timeout().unwrap_or(now + 1_000);
            host.sleep(wake.saturating_sub(now).clamp(1, 1_000)).await;
            continue;
        };
        let result = host
            .get(
                &settings.worker.sync_url(&t.path),
                &settings.edge_token,
                t.timeout_ms,
            )
            .await;
        let answer = match &result {
            Ok((status, body)) => Ok((*status, body.as_slice())),
            Err(e) => Err(format!("control plane unreachable: {e}")),
        };
        let mut r = relay.borrow_mut();
        let event = r.client.handle_answer(t.id, host.now_ms(), answer).event;
        let edge_id = r.edge_id().to_string();
        match event {
            Event::Applied {
                version,
                complete: true,
                changed: true,
                ..
            } => host.log(Level::Info, &format!("[{edge_id}] relay at v{version}")),
            Event::Failed {
                why, retry_in_ms, ..
            } => host.log(
                Level::Warn,
                &format!("[{edge_id}] relay sync failed: {why}; isolates poll on their own, retrying in {retry_in_ms} ms"),
            ),
            Event::Restart { why } => host.log(
                Level::Warn,
                &format!("[{edge_id}] relay sync: {why}; asking for a snapshot"),
            ),
            _ => {}
        }
    }
}

/// Whether a sync brought a new version (its receipt is then due at once).
pub fn changed(event: &Event) -> bool {
    matches!(
        event,
        Event::Applied {
            complete: true,
            changed: true,
            ..
        }
    )
}

/// An isolate's side: when to ask the object, one question at a time.
#[derive(Debug, Default)]
pub struct RelayWatch {
    last_check_ms: u64,
    in_flight_since: Option<u64>,
    /// When the last answer (or failure) came.
    answered_ms: u64,
}

impl RelayWatch {
    /// Whether to ask now (then the question is taken): at most every `check_ms`, never
    /// two at once (a question unanswered past [`CHECK_TIMEOUT_MS`] is given up).
    pub fn begin(&mut self, now_ms: u64, check_ms: u64) -> bool {
        if let Some(since) = self.in_flight_since {
            if now_ms < since.saturating_add(CHECK_TIMEOUT_MS + 1_000) {
                return false;
            }
        }
        if self.last_check_ms != 0 && now_ms < self.last_check_ms.saturating_add(check_ms) {
            return false;
        }
        self.last_check_ms = now_ms;
        self.in_flight_since = Some(now_ms);
        true
    }

    /// Whether to ask before deciding a request (then the question is taken): no answer
    /// for [`ASK_FIRST_MS`] and none in flight.
    pub fn begin_first(&mut self, now_ms: u64) -> bool {
        if now_ms < self.answered_ms.saturating_add(ASK_FIRST_MS) {
            return false;
        }
        self.begin(now_ms, 0)
    }

    /// The object's answer (or why there is none), applied to the isolate's state;
    /// returns whether the isolate should sync now.
    pub fn finish<H: Host>(
        &mut self,
        host: &H,
        now_ms: u64,
        result: GetResult,
        state: &mut IsolateState,
        config: &WorkerConfig,
    ) -> bool {
        self.in_flight_since = None;
        self.answered_ms = now_ms;
        let current = match result {
            Ok((200, body)) => Current::parse(&body),
            Ok((status, body)) => Err(format!(
                "relay answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            Err(e) => Err(format!("relay unreachable: {e}")),
        };
        let said = match &current {
            Ok(c) if c.in_sync => Some((c.stream.as_str(), c.version)),
            Ok(_) => None,
            Err(why) => {
                host.log(
                    Level::Warn,
                    &format!("[{}] {why}; polling on its own", state.edge_id()),
                );
                None
            }
        };
        state.relay_says(now_ms, said, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{block_on, FakeHost};
    use crate::settings::Bindings;
    use epochgate_core::sync::SyncResponse;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000_000;

    fn settings() -> Settings {
        Settings::load(&Bindings {
            config: Some(
                json!({"keys": [{"kid": "k", "alg": "HS256", "secret": "s".repeat(32)}],
                       "max_staleness_s": 60})
                .to_string(),
            ),
            worker: Some(
                json!({"origin": "http://o.test", "control_plane": "http://cp.test",
                       "deployment": "portal", "refresh_ms": 500, "retry_max_ms": 4000})
                .to_string(),
            ),
            edge_token: Some("edge-token".into()),
            relay: true,
        })
        .unwrap()
    }

    fn answer(stream: &str, version: u64, snapshot: bool) -> Vec<u8> {
        serde_json::to_vec(&SyncResponse {
            stream: stream.into(),
            version,
            snapshot,
            changes: vec![],
            max_session_lifetime_s: 86_400,
            next: None,
            tag: Some(format!("t{version}")),
        })
        .unwrap()
    }

    #[test]
    fn the_object_long_polls_as_an_edge_of_its_own_and_stops_when_no_isolate_asks() {
        let s = settings();
        let host = FakeHost::at(NOW);
        let relay = RefCell::new(Relay::new(&s.worker, 1));
        assert_eq!(
            relay.borrow().current(NOW),
            Current {
                stream: String::new(),
                version: 0,
                in_sync: false
            },
            "nothing known yet: no relay"
        );
        assert!(
            relay.borrow_mut().asked(NOW),
            "the first question starts the loop"
        );
        assert!(!relay.borrow_mut().asked(NOW), "one loop");
        host.answer(200, answer("st", 3, true));
        host.answer(200, answer("st", 4, false));
        // Then the control plane is gone: the loop backs off until no isolate asked
        // for IDLE_MS, and stops.
        block_on(run(&relay, &s, &host));
        let calls = host.calls.borrow();
        assert_eq!(
            calls[0].0,
            "http://cp.test/v1/sync?since=0&wait=20&edge=portal-relay&limit=10000"
        );
        assert_eq!(
            calls[1].0,
            "http://cp.test/v1/sync?since=3&wait=20&stream=st&tag=t3&edge=portal-relay&limit=10000"
        );
        assert!(calls.iter().all(|(_, bearer)| bearer == "edge-token"));
        assert!(host.now_ms() > NOW + IDLE_MS);
        assert!(host.logged("relay sync failed"));
        assert!(host.logged("polling stops"));
        let r = relay.borrow();
        let current = r.current(host.now_ms());
        assert_eq!((current.stream.as_str(), current.version), ("st", 4));
        assert!(!current.in_sync, "failing: isolates poll on their own");
        drop(r);
        // The alarm restarts it only while isolates ask.
        assert_eq!(relay.borrow_mut().alarm(host.now_ms()), (false, false));
        assert!(
            relay.borrow_mut().asked(host.now_ms()),
            "asked again: a new loop"
        );
        assert_eq!(relay.borrow_mut().alarm(host.now_ms() + 1), (false, true));
    }

    #[test]
    fn an_in_sync_answer_round_trips_and_garbage_is_no_answer() {
        let c = Current {
            stream: "st\"1".into(),
            version: 9,
            in_sync: true,
        };
        assert_eq!(Current::parse(&c.encode()), Ok(c));
        assert!(Current::parse(b"{\"stream\":\"st\"}").is_err());
        assert!(Current::parse(b"<html>").is_err());
    }

    fn isolate(s: &Settings) -> IsolateState {
        IsolateState::new("portal-00ab".into(), &s.worker, 1, Some(60))
    }

    /// An isolate synced to `st` v3 at `NOW`.
    fn synced(s: &Settings, host: &FakeHost) -> RefCell<IsolateState> {
        let state = RefCell::new(isolate(s));
        let call = state.borrow_mut().begin(NOW, &s.worker).unwrap();
        host.answer(200, answer("st", 3, true));
        block_on(crate::edge::complete_sync(&state, s, host, call));
        assert_eq!(state.borrow().version(), 3);
        state
    }

    fn said(current: &Current) -> GetResult {
        Ok((200, current.encode()))
    }

    #[test]
    fn an_isolate_asks_at_most_every_check_ms_and_syncs_at_once_for_a_version_it_lacks() {
        let s = settings();
        let host = FakeHost::at(NOW);
        let state = synced(&s, &host);
        let mut watch = RelayWatch::default();
        assert!(watch.begin(NOW, 20));
        assert!(!watch.begin(NOW + 30, 20), "one question at a time");
        let same = Current {
            stream: "st".into(),
            version: 3,
            in_sync: true,
        };
        let mut st = state.borrow_mut();
        assert!(
            !watch.finish(&host, NOW + 1, said(&same), &mut st, &s.worker),
            "nothing new: its own call waits for relay_refresh_ms"
        );
        assert!(!watch.begin(NOW + 10, 20), "at most every relay_check_ms");
        assert!(watch.begin(NOW + 20, 20));
        let newer = Current {
            version: 4,
            ..same.clone()
        };
        assert!(
            watch.finish(&host, NOW + 21, said(&newer), &mut st, &s.worker),
            "a version it lacks: sync now"
        );
        let other_stream = Current {
            stream: "st2".into(),
            ..same.clone()
        };
        assert!(watch.begin(NOW + 40, 20));
        assert!(watch.finish(&host, NOW + 41, said(&other_stream), &mut st, &s.worker));
        // After an idle second the isolate asks before deciding; not while a question
        // is out, nor right after an answer.
        let mut idle = RelayWatch::default();
        assert!(idle.begin_first(NOW), "never asked: ask first");
        assert!(!idle.begin_first(NOW + 1), "one question at a time");
        idle.finish(&host, NOW + 2, said(&same), &mut st, &s.worker);
        assert!(!idle.begin_first(NOW + 500));
        assert!(idle.begin_first(NOW + 2 + ASK_FIRST_MS));
        // A question never answered is given up.
        let mut stuck = RelayWatch::default();
        assert!(stuck.begin(NOW, 20));
        assert!(!stuck.begin(NOW + CHECK_TIMEOUT_MS, 20));
        assert!(stuck.begin(NOW + CHECK_TIMEOUT_MS + 1_000, 20));
    }

    #[test]
    fn without_an_answering_relay_an_isolate_polls_every_refresh_ms_as_alone() {
        let s = settings();
        let host = FakeHost::at(NOW);
        let state = synced(&s, &host);
        let mut st = state.borrow_mut();
        let not_in_sync = Current {
            stream: "st".into(),
            version: 9,
            in_sync: false,
        };
        for (at, answer) in [
            (NOW + 100, Err::<(u16, Vec<u8>), _>("refused".to_string())),
            (NOW + 200, Ok((500, b"oops".to_vec()))),
            (NOW + 300, Ok((200, b"garbage".to_vec()))),
            (NOW + 400, said(&not_in_sync)),
        ] {
            let mut watch = RelayWatch::default();
            assert!(watch.begin(at, 20));
            assert!(
                !watch.finish(&host, at, answer, &mut st, &s.worker),
                "before refresh_ms: not yet"
            );
        }
        assert!(host.logged("relay unreachable: refused"));
        assert!(host.logged("relay answered 500"));
        let mut watch = RelayWatch::default();
        assert!(watch.begin(NOW + 500, 20));
        assert!(
            watch.finish(&host, NOW + 500, Err("refused".into()), &mut st, &s.worker),
            "refresh_ms after its last sync, as without a relay"
        );
        // With the relay, its own calls are relay_refresh_ms apart (10 s here).
        let fresh = synced(&s, &host);
        assert_eq!(
            fresh.borrow().plan(NOW + 9_999, 60),
            crate::refresh::Plan::Serve
        );
        assert_eq!(
            fresh.borrow().plan(NOW + 10_000, 60),
            crate::refresh::Plan::Background
        );
    }
}
