//! Signatures in Envoy: RS*/ES* through the host's native `verify_signature` (BoringSSL),
//! EdDSA in the filter's Rust — and both agree with `core`'s pure-Rust verifier on valid,
//! tampered and wrong-key tokens.

use std::time::Duration;

use epochgate_core::state::RevocationState;
use epochgate_core::sync::SyncStatus;
use epochgate_core::{Config, Engine, RequestInfo};
use epochgate_tests::signing::{self, Alg};
use epochgate_tests::{filter_config, now_ms, Options, Stack};
use serde_json::json;

#[test]
fn native_and_pure_rust_verification_agree() {
    let algs = [Alg::Rs256, Alg::Rs384, Alg::Es256, Alg::Es384, Alg::EdDsa];
    let native_algs = 4;
    // Several ECDSA signatures: some have r or s with the top bit set (DER zero pad).
    let cases = signing::cases(&algs, 4);
    let opts = Options {
        filter: json!({"keys": signing::keys(&algs), "token_cache_size": 0}),
        ..Options::default()
    };
    // The judge: `core` with every algorithm in pure Rust, on the same configuration.
    let pure = Engine::new(Config::from_json(filter_config(&opts).to_string().as_bytes()).unwrap());
    let stack = Stack::start_with(opts);
    assert!(
        stack
            .envoy
            .log()
            .contains("RS*/ES* native (verify_signature)"),
        "the native path is on"
    );
    for (name, token, want) in &cases {
        let headers = vec![(
            "authorization".to_string(),
            format!("Bearer {token}").into_bytes(),
        )];
        let status = SyncStatus {
            stream: "s".into(),
            version: 1,
            synced_at_ms: now_ms(),
            horizon_s: 90 * 86_400,
        };
        let judged = pure.decide(
            RequestInfo {
                headers: &headers,
                path: "/",
            },
            &RevocationState::new(),
            Some(&status),
            now_ms(),
        );
        let got = stack.get_with_token("/", token).status;
        assert_eq!(
            (got, judged.is_allow()),
            (*want, *want == 200),
            "{name}: Envoy {got}, core's pure Rust allow={}",
            judged.is_allow()
        );
    }
    // The host really verified the RS*/ES* ones (counted on the filter VMs' next tick);
    // EdDSA stayed in Rust.
    let per_alg = cases.len() / algs.len();
    let counted = epochgate_tests::wait_for(
        "native verifications to be counted",
        Duration::from_secs(5),
        || {
            let n = stack.stat("wasmcustom.epochgate.native_verifications")? as usize;
            (n >= native_algs * per_alg).then_some(n)
        },
    );
    println!(
        "native verifications: {counted} of {} tokens ({} EdDSA in Rust)",
        cases.len(),
        per_alg
    );
    assert_eq!(
        counted,
        native_algs * per_alg,
        "one host call per RS*/ES* token, none for EdDSA"
    );
}
