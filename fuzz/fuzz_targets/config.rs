//! Config parsing: `Config::from_json` and `SyncConfig::from_json` on any bytes. A
//! configuration that parses must also give an engine that decides without panicking.
#![no_main]

use epochgate_core::config::SyncConfig;
use epochgate_core::state::RevocationState;
use epochgate_core::{Config, Engine, RequestInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = Config::from_json(data) {
        let engine = Engine::new(config);
        let headers = vec![
            ("authorization".to_string(), b"Bearer a.b.c".to_vec()),
            ("cookie".to_string(), b"session=x; other=y".to_vec()),
            ("accept".to_string(), b"text/html".to_vec()),
        ];
        for path in ["/", "/api/orders", "/login/../admin"] {
            let _ = engine.decide(
                RequestInfo {
                    headers: &headers,
                    path,
                },
                &RevocationState::new(),
                None,
                1_800_000_000_000,
            );
        }
    }
    if let Ok(sync) = SyncConfig::from_json(data) {
        let _ = sync.call_timeout_ms();
    }
});
