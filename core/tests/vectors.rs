//! Every case of the shared decision vectors and of the algorithm vectors through
//! `Engine::decide`, with the pure-Rust verifier.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use epochgate_core::conformance::Vectors;
use epochgate_core::{Engine, RequestInfo};

#[test]
fn every_decision_vector_passes() {
    assert_eq!(Vectors::load().unwrap().cases.len(), 48);
    assert_eq!(Vectors::algorithms().unwrap().keys.len(), 12);
    let mut failures = Vec::new();
    for vectors in Vectors::all().unwrap() {
        let engine = Engine::new(vectors.config().unwrap());
        for case in &vectors.cases {
            let headers = case.headers();
            let status = case.fresh_status();
            let decision = engine.decide(
                RequestInfo {
                    headers: &headers,
                    path: "/api/x",
                },
                &case.revocation_state(),
                Some(&status),
                case.now_ms,
            );
            if let Err(e) = case.check(&decision) {
                failures.push(e);
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
