//! Applying sync answers: `SyncResponse::parse`, `EdgeState::apply` and `plan_writes`.
//!
//! The input is several answer bodies separated by newlines. Each is parsed; those that
//! parse are applied to an in-memory edge and planned as shared-data writes onto a
//! simulated key-value store (an empty value is a removed key). After every answer the
//! edge applied, the two views hold the same keys: what the in-memory edge (the worker)
//! holds is what the filter's shared data holds.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use epochgate_core::state::EpochSource;
use epochgate_core::sync::{plan_writes, EdgeState, SyncResponse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut edge = EdgeState::default();
    let mut written = BTreeSet::new();
    let mut shared: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for body in data.split(|b| *b == b'\n') {
        let Ok(resp) = SyncResponse::parse(body) else {
            continue;
        };
        if edge.apply(&resp).is_err() {
            continue;
        }
        assert_eq!(edge.version, resp.version);
        for (key, value) in plan_writes(&resp, &mut written) {
            shared.insert(key, value);
        }
        let live: BTreeSet<&String> = shared
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            live,
            written.iter().collect(),
            "index and shared data disagree"
        );
        for key in &written {
            assert!(
                edge.state.epoch_ms(key).is_some(),
                "{key} written but not in the state"
            );
        }
        assert_eq!(
            edge.state.len(),
            written.len(),
            "state and shared data hold different keys"
        );
    }
});
