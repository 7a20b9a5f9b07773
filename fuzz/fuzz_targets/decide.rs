//! Token parsing and verification through `Engine::decide` with a fixed configuration.
//!
//! The first byte picks what the rest is:
//! - 0: the raw `Authorization` header value (any bytes);
//! - 1: a `Cookie` header (any bytes);
//! - 2: a claims JSON, signed with the configured HS256 secret (so the claim checks and
//!   the revocation rule see fuzzed claims behind a valid signature);
//! - 3: a header JSON and a claims JSON split at the first newline, signed likewise.
//!
//! Beyond "no panic": a decision is deterministic, and an allowed request has an
//! identity whose session start is after every applicable epoch.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use epochgate_core::state::{RevocationState, Target};
use epochgate_core::sync::SyncStatus;
use epochgate_core::{Config, Decision, Engine, RequestInfo};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-hs256-secret-0123456789abcdefgh";
const NOW_MS: u64 = 1_800_000_000_000;
const RSA_PUB_PEM: &str = include_str!("../../tests/fixtures/rs256-a.pub.pem");
const EC_PUB_PEM: &str = include_str!("../../tests/fixtures/es256-a.pub.pem");

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let config = serde_json::json!({
            "keys": [
                {"kid": "k1", "alg": "HS256", "secret": SECRET},
                {"kid": "rsa", "alg": "RS256", "public_key_pem": RSA_PUB_PEM},
                {"kid": "ec", "alg": "ES256", "public_key_pem": EC_PUB_PEM},
            ],
            "issuer": "https://idp.fuzz",
            "audiences": ["portal"],
            "default_tenant": "default",
            "token_sources": [
                {"header": "authorization", "prefix": "Bearer "},
                {"cookie": "session", "cookie_path": "/", "cookie_domain": "example.com"}
            ],
            "login_url": "https://example.com/login",
            "routes": [{"prefix": "/web", "web": true}, {"prefix": "/open", "exempt": true}],
        });
        match Config::from_json(config.to_string().as_bytes()) {
            Ok(c) => Engine::new(c),
            Err(e) => panic!("fixed fuzz config is invalid: {e}"),
        }
    })
}

fn state() -> &'static RevocationState {
    static STATE: OnceLock<RevocationState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut s = RevocationState::new();
        let at = Some(NOW_MS - 3_600_000);
        s.set(
            &Target::User {
                tenant: "acme".into(),
                user: "42".into(),
            },
            at,
        );
        s.set(
            &Target::Tenant {
                tenant: "globex".into(),
            },
            at,
        );
        s.set(
            &Target::Session {
                tenant: "acme".into(),
                sid: "s-revoked".into(),
            },
            at,
        );
        s.set(
            &Target::ScheduledTenant {
                tenant: "initech".into(),
            },
            Some(NOW_MS + 60_000),
        );
        s
    })
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn sign(header: &[u8], claims: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), SECRET.as_bytes());
    format!("{input}.{}", b64(&sig))
}

fn run(headers: Vec<(String, Vec<u8>)>, path: &str) {
    let status = SyncStatus {
        stream: "s".into(),
        version: 7,
        synced_at_ms: NOW_MS - 1000,
        horizon_s: 86_400,
    };
    let req = RequestInfo {
        headers: &headers,
        path,
    };
    let a = engine().decide(req, state(), Some(&status), NOW_MS);
    let b = engine().decide(req, state(), Some(&status), NOW_MS);
    assert_eq!(a, b, "decisions differ for the same request");
    if let Decision::Allow {
        identity: Some(id), ..
    } = &a
    {
        // The epoch set above is an hour ago: an allowed acme/42 or globex token must
        // have started after it.
        let epoch_s = ((NOW_MS - 3_600_000) / 1000) as i64;
        if (id.tenant == "acme" && id.user == "42") || id.tenant == "globex" {
            assert!(
                id.session_start > epoch_s,
                "revoked session allowed: {id:?}"
            );
        }
        assert!(
            !(id.tenant == "acme" && id.session.as_deref() == Some("s-revoked")),
            "revoked sid allowed: {id:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 4 {
        0 => run(vec![("authorization".into(), rest.to_vec())], "/api"),
        1 => run(vec![("cookie".into(), rest.to_vec())], "/web/home"),
        2 => {
            let t = sign(br#"{"alg":"HS256","kid":"k1"}"#, rest);
            run(
                vec![("authorization".into(), format!("Bearer {t}").into_bytes())],
                "/api",
            );
        }
        _ => {
            let (h, c) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let t = sign(h, c);
            run(
                vec![("authorization".into(), format!("Bearer {t}").into_bytes())],
                "/api",
            );
        }
    }
});
