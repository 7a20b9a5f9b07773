//! Applying sync answers through the sync client every edge runs
//! (`epochgate_core::sync::client::SyncClient`).
//!
//! The input is several answer bodies separated by newlines; each answers the client's
//! next request (whatever it asked). Its writes are mirrored onto a simulated key-value
//! store, as Envoy's sync VM mirrors them into shared data (an empty value is a removed
//! key). After every answer: the mirror holds exactly what the client holds, and no
//! immediate epoch went back or disappeared before it was past the horizon (Invariant 1).
#![no_main]

use std::collections::BTreeMap;

use epochgate_core::state::{is_compactable, EpochSource, Target};
use epochgate_core::sync::client::{ClientConfig, SyncClient};
use epochgate_core::sync::SyncResponse;
use libfuzzer_sys::fuzz_target;

const NOW: u64 = 1_800_000_000_000;

fuzz_target!(|data: &[u8]| {
    let mut client = SyncClient::new(
        ClientConfig {
            edge_id: "fuzz".into(),
            wait_s: 20,
            page_limit: 2,
            min_interval_ms: 0,
            retry_min_ms: 1,
            retry_max_ms: 1,
            call_timeout_ms: 1_000,
        },
        1,
    );
    let mut mirror: BTreeMap<String, u64> = BTreeMap::new();
    let mut now = NOW;
    // The smallest horizon announced so far: entries may go once past it.
    let mut horizon = u64::MAX / 2000;
    for body in data.split(|b| *b == b'\n') {
        now += 10;
        if let Ok(r) = SyncResponse::parse(body) {
            if r.max_session_lifetime_s > 0 {
                horizon = horizon.min(r.max_session_lifetime_s);
            }
        }
        let Some(t) = client.poll_transmit(now) else {
            continue;
        };
        let before = mirror.clone();
        let out = client.handle_answer(t.id, now, Ok((200, body)));
        for w in &out.writes {
            match w.epoch_ms {
                Some(ms) => mirror.insert(w.key.clone(), ms),
                None => mirror.remove(&w.key),
            };
        }
        for (key, ms) in &mirror {
            assert_eq!(
                client.state().epoch_ms(key).ok().flatten(),
                Some(*ms),
                "{key}: the mirror and the state disagree"
            );
        }
        assert_eq!(client.state().len(), mirror.len(), "the state holds keys the mirror lacks");
        for (key, was) in &before {
            let immediate = Target::from_key(key).is_some_and(|t| !t.is_scheduled());
            if !immediate {
                continue;
            }
            match mirror.get(key) {
                Some(now_ms) => assert!(now_ms >= was, "{key} went back from {was} to {now_ms}"),
                None => assert!(
                    is_compactable(*was, now, horizon),
                    "{key} ({was}) disappeared before its horizon"
                ),
            }
        }
    }
});
