//! `make bench`: measures Epochgate against Envoy's own `jwt_authn` and against no filter,
//! in one run, on this machine, and prints markdown tables (also written to
//! `bench/results.md`).
//!
//! - Throughput: Envoy `--concurrency 1` with a `direct_response` route, `wrk` with one
//!   thread and 32 connections on the other core. For HS256, RS256, ES256, a warm pool of
//!   1,000 reused tokens and a cold pool of 100,000 distinct ones (a small Lua script
//!   rotates them), the configurations alternate: no filter; `jwt_authn` (same keys, its
//!   `jwt_cache_config` the same size as Epochgate's cache); Epochgate; Epochgate chained
//!   after `jwt_authn`.
//! - Propagation: time from an admin call's 200 to Envoy's first deny, over 50 logouts.
//! - Fan-out: the time until 1,000 and 10,000 simulated edges long-polling the control
//!   plane all have a change, over 20 changes; the control plane's memory per open poll
//!   (its RSS with every edge waiting, less its RSS before they connected) and its CPU
//!   per change per 1,000 edges (its CPU time over the changes, the edges' next polls
//!   included). The bench raises its own file-descriptor limit to the hard limit (the
//!   control plane it starts inherits it) and starts the control plane with
//!   `--max-connections` above the edge count: bench settings, not the product's.
//! - Session reporting: the same Epochgate setup with `report_sessions` off and on,
//!   alternating, medians compared (the cost of recording and reporting sessions).
//! - Memory: Envoy's RSS with N user epochs in shared data, and the `.wasm` size.
//! - IdP logout: a real OpenID Provider (npm `oidc-provider`) signs a user in; the time
//!   from the user confirming the sign-out at the IdP (RP-initiated logout, which posts a
//!   back-channel logout token to the control plane) to Envoy's first deny of that
//!   session's access token, over `BENCH_IDP_LOGOUTS` logouts.
//!
//! - Worker: the Cloudflare Worker in workerd (`target/worker-dist`) on CPU 0, wrk on
//!   CPU 1, cold tokens (HS256, RS256, ES256, EdDSA: WebCrypto), against a pass-through
//!   JS worker in the same workerd (the baseline: the same fetch to the same origin, a JS
//!   worker in that workerd answering 200), alternating rounds; medians.
//!
//! Options (environment): `BENCH_DURATION_S` (default 5), `BENCH_COLD_TOKENS` (100000),
//! `BENCH_EDGES` (`1000,10000`: the fan-out's edge counts), `BENCH_FANOUT_CHANGES` (20),
//! `BENCH_MEMORY_ENTRIES` (1000000), `BENCH_IDP_LOGOUTS` (50),
//! `BENCH_SECTIONS` (`throughput,sessions,propagation,fanout,memory,idp,worker,relay`; e.g.
//! `BENCH_SECTIONS=fanout` runs only the fan-out, in about a minute), `BENCH_RELAY_LOGOUTS` (20), `BENCH_SESSION_ROUNDS` (3), `BENCH_ALGS` (the
//! throughput section's algorithms, e.g. `HS256,ES256`; all three by default),
//! `BENCH_ROUNDS` (3: throughput rounds, alternating, each row the median),
//! `BENCH_POOLS` (`warm,cold`), `BENCH_SETUPS` (`epochgate,no_sync_vm,chained`; no filter and
//! `jwt_authn` always run), `BENCH_WASM_COMPARE` (another filter `.wasm`: a row of its own),
//! `BENCH_PERF` (a directory: `perf record` of Envoy in each configuration's first round),
//! `BENCH_WORKER_ROUNDS` (3), `BENCH_WORKER_COMPARE` (another built worker dir, e.g. an
//! older build's `target/worker-dist`, measured in the same run), `BENCH_WORKER_ALGS`
//! (e.g. `HS256,ES256`; all four by default).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use epochgate_tests::worker::{capnp_string, copy_dir, worker_dist, worker_modules, workerd_bin};
use epochgate_tests::{
    envoy_bin, free_port, http, now_ms, now_s, repo_root, spawn, wait_for, wasm_path, ControlPlane,
    Proc, EDGE_TOKEN,
};
use jwt_simple::prelude::*;
use serde_json::json;

const HS_SECRET: &str = "bench-hs256-secret-0123456789abcdefghij";
const CACHE_SIZE: usize = 1000;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo_root().join("tests/fixtures").join(name)).unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
    EdDsa,
}

impl Alg {
    fn name(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The Epochgate key and the `jwt_authn` JWKS for the same key.
    fn keys(self) -> (serde_json::Value, String) {
        match self {
            Alg::Hs256 => {
                let k = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    HS_SECRET,
                );
                (
                    json!({"kid": "b", "alg": "HS256", "secret": HS_SECRET}),
                    json!({"keys": [{"kty": "oct", "kid": "b", "alg": "HS256", "k": k}]})
                        .to_string(),
                )
            }
            Alg::Rs256 => {
                let pk = RS256PublicKey::from_pem(&fixture("rs256-a.pub.pem")).unwrap();
                let c = pk.to_components();
                let b64 = |b: &[u8]| {
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
                };
                (
                    json!({"kid": "b", "alg": "RS256", "public_key_pem": fixture("rs256-a.pub.pem")}),
                    json!({"keys": [{"kty": "RSA", "kid": "b", "alg": "RS256", "n": b64(&c.n), "e": b64(&c.e)}]}).to_string(),
                )
            }
            Alg::Es256 => {
                let pk = ES256PublicKey::from_pem(&fixture("es256-a.pub.pem")).unwrap();
                let raw = pk.public_key().to_bytes_uncompressed();
                let b64 = |b: &[u8]| {
                    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, b)
                };
                (
                    json!({"kid": "b", "alg": "ES256", "public_key_pem": fixture("es256-a.pub.pem")}),
                    json!({"keys": [{"kty": "EC", "kid": "b", "alg": "ES256", "crv": "P-256", "x": b64(&raw[1..33]), "y": b64(&raw[33..65])}]})
                        .to_string(),
                )
            }
            Alg::EdDsa => {
                let pk = Ed25519PublicKey::from_pem(&fixture("ed25519-a.pub.pem")).unwrap();
                let x = base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    pk.to_bytes(),
                );
                (
                    json!({"kid": "b", "alg": "EdDSA", "public_key_pem": fixture("ed25519-a.pub.pem")}),
                    json!({"keys": [{"kty": "OKP", "kid": "b", "alg": "EdDSA", "crv": "Ed25519", "x": x}]})
                        .to_string(),
                )
            }
        }
    }
}

/// Mints `n` distinct tokens (distinct `sub`), cached on disk while they stay valid.
fn tokens(alg: Alg, n: usize) -> PathBuf {
    let dir = repo_root().join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("tokens-{}-{n}.txt", alg.name()));
    if let Ok(meta) = std::fs::metadata(&path) {
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age < Duration::from_secs(6 * 3600));
        if fresh {
            return path;
        }
    }
    let start = Instant::now();
    let mint = |i: usize| -> String {
        let custom = json!({"tid": "bench"});
        let mut claims =
            Claims::with_custom_claims(custom, jwt_simple::prelude::Duration::from_hours(12))
                .with_subject(format!("user-{i}"))
                .with_issuer("https://idp.bench.test")
                .with_audience("portal");
        claims.issued_at = Some(UnixTimeStamp::from_secs(now_s() as u64 - 60));
        match alg {
            Alg::Hs256 => HS256Key::from_bytes(HS_SECRET.as_bytes())
                .with_key_id("b")
                .authenticate(claims)
                .unwrap(),
            Alg::Rs256 => RS256KeyPair::from_pem(&fixture("rs256-a.pem"))
                .unwrap()
                .with_key_id("b")
                .sign(claims)
                .unwrap(),
            Alg::Es256 => ES256KeyPair::from_pem(&fixture("es256-a.pem"))
                .unwrap()
                .with_key_id("b")
                .sign(claims)
                .unwrap(),
            Alg::EdDsa => Ed25519KeyPair::from_pem(&fixture("ed25519-a.pem"))
                .unwrap()
                .with_key_id("b")
                .sign(claims)
                .unwrap(),
        }
    };
    let threads = 2;
    let parts: Vec<Vec<String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| s.spawn(move || (t..n).step_by(threads).map(mint).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut out = String::new();
    for p in parts {
        for t in p {
            out.push_str(&t);
            out.push('\n');
        }
    }
    std::fs::write(&path, out).unwrap();
    eprintln!(
        "minted {n} {} tokens in {:.1} s",
        alg.name(),
        start.elapsed().as_secs_f64()
    );
    path
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    NoFilter,
    JwtAuthn,
    Epochgate,
    /// The same filter without the sync service VM (`on_stale: allow`, never synced).
    NoSyncVm,
    Chained,
    /// Epochgate with another build of the filter (`BENCH_WASM_COMPARE`), in the same run.
    Compare,
}

impl Setup {
    const ALL: [Setup; 6] = [
        Setup::NoFilter,
        Setup::JwtAuthn,
        Setup::Epochgate,
        Setup::NoSyncVm,
        Setup::Chained,
        Setup::Compare,
    ];

    /// Its name in `BENCH_SETUPS`.
    fn key(self) -> &'static str {
        match self {
            Setup::NoFilter => "none",
            Setup::JwtAuthn => "jwt_authn",
            Setup::Epochgate => "epochgate",
            Setup::NoSyncVm => "no_sync_vm",
            Setup::Chained => "chained",
            Setup::Compare => "compare",
        }
    }

    /// Whether it runs the sync VM (and Envoy is ready once synced).
    fn synced(self) -> bool {
        matches!(self, Setup::Epochgate | Setup::Chained | Setup::Compare)
    }

    fn name(self) -> &'static str {
        match self {
            Setup::NoFilter => "no filter",
            Setup::JwtAuthn => "Envoy jwt_authn",
            Setup::Epochgate => "Epochgate",
            Setup::NoSyncVm => "Epochgate without the sync VM",
            Setup::Chained => "jwt_authn + Epochgate",
            Setup::Compare => "Epochgate, BENCH_WASM_COMPARE's build",
        }
    }
}

fn envoy_yaml(setup: Setup, alg: Alg, port: u16, admin: u16, cp_port: u16) -> String {
    envoy_yaml_with(setup, alg, port, admin, cp_port, true)
}

/// [`envoy_yaml`] with the filter's `report_sessions` set.
fn envoy_yaml_with(
    setup: Setup,
    alg: Alg,
    port: u16,
    admin: u16,
    cp_port: u16,
    report_sessions: bool,
) -> String {
    let (key, jwks) = alg.keys();
    let jwt_authn = format!(
        r#"
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                bench:
                  issuer: https://idp.bench.test
                  audiences: [portal]
                  local_jwks: {{ inline_string: '{jwks}' }}
                  payload_in_metadata: jwt_payload
                  jwt_cache_config: {{ jwt_cache_size: {CACHE_SIZE} }}
              rules: [{{ match: {{ prefix: / }}, requires: {{ provider_name: bench }} }}]"#
    );
    let filter_config = if setup == Setup::Chained {
        // jwt_authn verified the token: Epochgate only checks revocation.
        format!(r#"{{"mode":"jwt_authn_metadata","keys":[],"issuer":"https://idp.bench.test","audiences":["portal"],"token_cache_size":{CACHE_SIZE},"report_sessions":{report_sessions}}}"#)
    } else {
        let on_stale = if setup == Setup::NoSyncVm { r#","on_stale":"allow""# } else { "" };
        format!(r#"{{"keys":[{key}],"issuer":"https://idp.bench.test","audiences":["portal"],"token_cache_size":{CACHE_SIZE},"report_sessions":{report_sessions}{on_stale}}}"#)
    }
    .replace('\'', "''");
    let wasm = match (setup, std::env::var("BENCH_WASM_COMPARE")) {
        (Setup::Compare, Ok(other)) => other,
        _ => wasm_path().display().to_string(),
    };
    let epochgate = format!(
        r#"
          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                root_id: epochgate_filter
                configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: '{filter_config}' }}
                vm_config: {{ vm_id: epochgate, runtime: envoy.wasm.runtime.v8,{same_vm} code: {{ local: {{ filename: {wasm} }} }} }}"#,
        same_vm = if std::env::var("BENCH_SAME_VM").is_ok() {
            " environment_variables: { host_env_keys: [EPOCHGATE_EDGE_TOKEN] },"
        } else {
            ""
        }
    );
    let filters = match setup {
        Setup::NoFilter => String::new(),
        Setup::JwtAuthn => jwt_authn,
        Setup::Epochgate | Setup::NoSyncVm | Setup::Compare => epochgate,
        Setup::Chained => jwt_authn + &epochgate,
    };
    let bootstrap = if setup.synced() {
        format!(
            r#"
bootstrap_extensions:
- name: envoy.bootstrap.wasm
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.wasm.v3.WasmService
    singleton: true
    config:
      root_id: epochgate_sync
      configuration: {{ "@type": type.googleapis.com/google.protobuf.StringValue, value: '{{"cluster":"cp","edge_id":"bench-{port}"}}' }}
      vm_config: {{ vm_id: epochgate, runtime: envoy.wasm.runtime.v8, environment_variables: {{ host_env_keys: [EPOCHGATE_EDGE_TOKEN] }}, code: {{ local: {{ filename: {wasm} }} }} }}"#
        )
    } else {
        String::new()
    };
    format!(
        r#"admin: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }} }}
{bootstrap}
static_resources:
  listeners:
  - address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}
          http_filters:{filters}
          - name: envoy.filters.http.router
            typed_config: {{ "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}
  clusters:
  - name: cp
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: cp
      endpoints: [{{ lb_endpoints: [{{ endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {cp_port} }} }} }} }}] }}]
"#
    )
}

struct Envoy {
    proc: Proc,
    port: u16,
}

fn start_envoy(dir: &Path, yaml: &str, port: u16, admin: u16, synced: bool) -> Envoy {
    let path = dir.join(format!("envoy-{port}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    // Envoy on core 0, wrk on core 1.
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(envoy_bin())
        .arg("-c")
        .arg(&path)
        .args([
            "--concurrency",
            "1",
            "--disable-hot-restart",
            "--log-level",
            "warn",
        ])
        .env("EPOCHGATE_EDGE_TOKEN", EDGE_TOKEN);
    let proc = spawn("envoy", cmd, dir.join(format!("envoy-{port}.log")));
    wait_for("Envoy ready", Duration::from_secs(30), || {
        http::request("127.0.0.1", admin, "GET", "/ready", &[], b"")
            .ok()
            .filter(|r| r.status == 200)
    });
    if synced {
        wait_for("the first sync", Duration::from_secs(20), || {
            let r = http::request(
                "127.0.0.1",
                admin,
                "GET",
                "/stats?filter=epochgate.sync_ok",
                &[],
                b"",
            )
            .ok()?;
            r.text()
                .contains("sync_ok: ")
                .then_some(())
                .filter(|_| !r.text().contains("sync_ok: 0"))
        });
    }
    Envoy { proc, port }
}

struct WrkResult {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    non_2xx: u64,
}

fn parse_latency(v: &str) -> f64 {
    let v = v.trim();
    if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>().unwrap_or(0.0) / 1000.0
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse().unwrap_or(0.0)
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

fn wrk(port: u16, tokens: &Path, duration_s: u64) -> WrkResult {
    let lua = repo_root().join("bench/rotate-tokens.lua");
    let out = Command::new("taskset")
        .args([
            "-c",
            "1",
            "wrk",
            "-t1",
            "-c32",
            &format!("-d{duration_s}s"),
            "--latency",
            "-s",
        ])
        .arg(&lua)
        .arg(format!("http://127.0.0.1:{port}/"))
        .env("TOKENS_FILE", tokens)
        .output()
        .expect("wrk (make bench installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut r = WrkResult {
        rps: 0.0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        non_2xx: 0,
    };
    for line in text.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            r.p50_ms = parse_latency(v);
        } else if let Some(v) = l.strip_prefix("99%") {
            r.p99_ms = parse_latency(v);
        } else if let Some(v) = l.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    if r.rps == 0.0 {
        eprintln!(
            "wrk printed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    r
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn logout(cp: &ControlPlane, tenant: &str, user: &str) -> u64 {
    let r = cp.admin(
        "POST",
        &format!("/v1/tenants/{tenant}/users/{user}/logout"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["version"].as_u64().unwrap()
}

fn main() {
    raise_fd_limit();
    let duration = env_num("BENCH_DURATION_S", 5);
    let cold_n = env_num("BENCH_COLD_TOKENS", 100_000) as usize;
    let dir = tempfile::Builder::new()
        .prefix("epochgate-bench-")
        .tempdir()
        .unwrap();
    let mut report = String::new();
    let _ = writeln!(report, "# Epochgate benchmarks\n");
    let _ = writeln!(
        report,
        "Measured by `make bench` on {} ({} cores), {} — Envoy 1.40 `--concurrency 1`, wrk 1 thread / 32 connections on the other core, {duration} s per run, `direct_response` route. Ratios compare rows of the same table, measured in the same run.\n",
        std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        Command::new("date").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
    );

    let mut cp = ControlPlane::start(dir.path(), free_port(), &dir.path().join("bench.db"));
    // Some revocations of other users, so lookups are realistic (mostly absent keys).
    for i in 0..100 {
        logout(&cp, "bench", &format!("gone-{i}"));
    }

    let sections = std::env::var("BENCH_SECTIONS").unwrap_or_else(|_| {
        "throughput,sessions,propagation,fanout,memory,idp,worker,relay".into()
    });
    let section = |name: &str| sections.split(',').any(|s| s.trim() == name);

    if section("throughput") {
        // --- throughput -------------------------------------------------------------------
        let _ = writeln!(report, "## Throughput\n");
        let _ = writeln!(
            report,
            "| alg | tokens | configuration | req/s | p50 ms | p99 ms | × jwt_authn | × no filter |"
        );
        let _ = writeln!(report, "|---|---|---|---:|---:|---:|---:|---:|");
        let only = std::env::var("BENCH_ALGS").unwrap_or_default();
        let algs = [Alg::Hs256, Alg::Rs256, Alg::Es256]
            .into_iter()
            .filter(|a| only.is_empty() || only.split(',').any(|o| o.trim() == a.name()));
        let rounds = env_num("BENCH_ROUNDS", 3).max(1) as usize;
        let only_setups = std::env::var("BENCH_SETUPS").unwrap_or_default();
        let setups: Vec<Setup> = Setup::ALL
            .into_iter()
            .filter(|s| *s != Setup::Compare || std::env::var("BENCH_WASM_COMPARE").is_ok())
            .filter(|s| {
                only_setups.is_empty()
                    || matches!(s, Setup::NoFilter | Setup::JwtAuthn | Setup::Compare)
                    || only_setups.split(',').any(|o| o.trim() == s.key())
            })
            .collect();
        let pools = std::env::var("BENCH_POOLS").unwrap_or_else(|_| "warm,cold".into());
        for alg in algs {
            for (pool, n) in [("warm 1k", 1000usize), ("cold", cold_n)]
                .into_iter()
                .filter(|(p, _)| pools.split(',').any(|o| p.starts_with(o.trim())))
            {
                let tokens = tokens(alg, n);
                let mut rounds_of: Vec<(Setup, Vec<WrkResult>)> =
                    setups.iter().map(|s| (*s, Vec::new())).collect();
                for round in 0..rounds {
                    for (setup, runs) in rounds_of.iter_mut() {
                        let setup = *setup;
                        let (port, admin) = (free_port(), free_port());
                        let yaml = envoy_yaml(setup, alg, port, admin, cp.port);
                        let synced = setup.synced();
                        let envoy = start_envoy(dir.path(), &yaml, port, admin, synced);
                        // Warm the caches with the pool once (a short run), then measure.
                        let _ = wrk(envoy.port, &tokens, 1);
                        // BENCH_PERF=DIR: a `perf record` (cpu-clock) of Envoy during the first
                        // measured round of each configuration, for `perf report`.
                        let perf =
                            std::env::var("BENCH_PERF")
                                .ok()
                                .filter(|_| round == 0)
                                .map(|d| {
                                    let out = Path::new(&d).join(format!(
                                        "{}-{}-{}.data",
                                        alg.name(),
                                        pool.replace(' ', ""),
                                        setup.key()
                                    ));
                                    Command::new("perf")
                                        .args([
                                            "record",
                                            "-e",
                                            "cpu-clock",
                                            "-F",
                                            "2000",
                                            "-g",
                                            "-o",
                                        ])
                                        .arg(&out)
                                        .args(["-p", &envoy.proc.pid().to_string(), "--", "sleep"])
                                        .arg(duration.to_string())
                                        .stdout(std::process::Stdio::null())
                                        .stderr(std::process::Stdio::null())
                                        .spawn()
                                        .expect("perf record (Debian's linux-perf)")
                                });
                        let r = wrk(envoy.port, &tokens, duration);
                        if let Some(mut p) = perf {
                            let _ = p.wait();
                        }
                        if r.non_2xx > 0 {
                            eprintln!(
                                "warning: {} {} {}: {} non-2xx responses",
                                alg.name(),
                                pool,
                                setup.name(),
                                r.non_2xx
                            );
                        }
                        drop(envoy);
                        eprintln!(
                            "{} {pool} {} (round {}): {:.0} req/s",
                            alg.name(),
                            setup.name(),
                            round + 1,
                            r.rps
                        );
                        runs.push(r);
                    }
                }
                // Each configuration's median round (by req/s).
                let results: Vec<(Setup, WrkResult)> = rounds_of
                    .into_iter()
                    .map(|(setup, mut runs)| {
                        runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
                        let mid = runs.len() / 2;
                        (setup, runs.swap_remove(mid))
                    })
                    .collect();
                let of = |s: Setup| {
                    results
                        .iter()
                        .find(|(x, _)| *x == s)
                        .map_or(1.0, |(_, r)| r.rps.max(1.0))
                };
                let (base_jwt, base_none) = (of(Setup::JwtAuthn), of(Setup::NoFilter));
                for (setup, r) in &results {
                    let _ = writeln!(
                        report,
                        "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
                        alg.name(),
                        if n == 1000 {
                            pool.to_string()
                        } else {
                            format!("cold {}k", n / 1000)
                        },
                        setup.name(),
                        r.rps,
                        r.p50_ms,
                        r.p99_ms,
                        r.rps / base_jwt,
                        r.rps / base_none
                    );
                }
            }
        }
    }

    if section("sessions") {
        sessions(&mut report, &cp, dir.path(), duration, cold_n);
    }

    if section("propagation") {
        // --- propagation to one Envoy ----------------------------------------------------
        let (port, admin) = (free_port(), free_port());
        let envoy = start_envoy(
            dir.path(),
            &envoy_yaml(Setup::Epochgate, Alg::Hs256, port, admin, cp.port),
            port,
            admin,
            true,
        );
        let mut samples = Vec::new();
        for i in 0..50 {
            let user = format!("prop-{i}");
            let claims = {
                let mut c = Claims::with_custom_claims(
                    json!({"tid": "bench"}),
                    jwt_simple::prelude::Duration::from_hours(1),
                )
                .with_subject(&user)
                .with_issuer("https://idp.bench.test")
                .with_audience("portal");
                c.issued_at = Some(UnixTimeStamp::from_secs(now_s() as u64 - 60));
                c
            };
            let token = HS256Key::from_bytes(HS_SECRET.as_bytes())
                .with_key_id("b")
                .authenticate(claims)
                .unwrap();
            let auth = format!("Bearer {token}");
            assert_eq!(
                http::request(
                    "127.0.0.1",
                    envoy.port,
                    "GET",
                    "/",
                    &[("authorization", auth.as_bytes())],
                    b""
                )
                .unwrap()
                .status,
                200
            );
            logout(&cp, "bench", &user);
            let t0 = Instant::now();
            loop {
                let r = http::request(
                    "127.0.0.1",
                    envoy.port,
                    "GET",
                    "/",
                    &[("authorization", auth.as_bytes())],
                    b"",
                )
                .unwrap();
                if r.status == 401 {
                    break;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(5),
                    "logout never reached Envoy"
                );
            }
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        let _ = writeln!(report, "\n## Propagation\n");
        let _ = writeln!(report, "| what | samples | p50 ms | p99 ms | max ms |");
        let _ = writeln!(report, "|---|---:|---:|---:|---:|");
        let _ = writeln!(
            report,
            "| admin 200 → first deny at one Envoy | {} | {:.1} | {:.1} | {:.1} |",
            samples.len(),
            percentile(&samples, 0.5),
            percentile(&samples, 0.99),
            samples.last().copied().unwrap_or(0.0)
        );

        drop(envoy);
    }

    // --- fan-out to many long-polling edges --------------------------------------------
    if section("fanout") {
        fan_out_section(&mut report, &mut cp);
    }

    // --- memory ------------------------------------------------------------------------
    if section("memory") {
        memory(&mut report, &mut cp, dir.path());
    }

    // --- IdP logout → Envoy ------------------------------------------------------------
    if section("idp") {
        idp_logout(&mut report, dir.path());
    }
    // --- the Cloudflare Worker on workerd -----------------------------------------------
    if section("worker") {
        worker_throughput(&mut report, &cp, dir.path(), duration, cold_n);
    }
    // --- the Worker's relay (Durable Object) vs every isolate polling ---------------------
    if section("relay") {
        worker_relay(&mut report);
    }

    println!("{report}");
    let out = repo_root().join("bench/results.md");
    std::fs::write(&out, &report).unwrap();
    eprintln!("written to {}", out.display());
}

/// A control plane with `--idp-config`, a real OpenID Provider posting back-channel
/// logout tokens to it, and an Envoy trusting the provider's JWKS: for each logout, the
/// time from the sign-out confirmation at the IdP to the first 401 at Envoy, and how
/// much of it the IdP's confirmation request took (it answers once the logout token was
/// delivered and committed).
fn idp_logout(report: &mut String, dir: &Path) {
    use epochgate_tests::idp::{Browser, OidcProvider, RESOURCE};
    let n = env_num("BENCH_IDP_LOGOUTS", 50) as usize;
    let cp_port = free_port();
    let idp = OidcProvider::start(
        dir,
        free_port(),
        &format!("http://127.0.0.1:{cp_port}/v1/idp/bench/backchannel-logout"),
    );
    let config = dir.join("idps.json");
    std::fs::write(
        &config,
        json!({"idps": [{"name": "bench", "issuer": idp.issuer, "discovery_url": idp.discovery_url(),
                         "client_id": "portal", "tenant": {"fixed": "bench"}}]})
        .to_string(),
    )
    .unwrap();
    let stack = epochgate_tests::Stack::start_with(epochgate_tests::Options {
        filter: json!({"jwks": idp.jwks(), "jwks_default_alg": "RS256", "issuer": idp.issuer,
                       "audiences": [RESOURCE], "default_tenant": "bench"}),
        control_plane_port: Some(cp_port),
        control_plane_args: vec!["--idp-config".into(), config.display().to_string()],
        ..Default::default()
    });
    let (mut total, mut confirm) = (Vec::new(), Vec::new());
    for i in 0..n {
        let mut browser = Browser::new(&idp);
        let signed_in = browser.sign_in(&format!("user-{i}"));
        assert_eq!(
            stack.get_with_token("/", &signed_in.access_token).status,
            200
        );
        let xsrf = browser.start_sign_out(&signed_in);
        let t0 = Instant::now();
        browser.confirm_sign_out(&xsrf);
        confirm.push(t0.elapsed().as_secs_f64() * 1000.0);
        wait_for("the IdP logout at Envoy", Duration::from_secs(5), || {
            (stack.get_with_token("/", &signed_in.access_token).status == 401).then_some(())
        });
        total.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    total.sort_by(f64::total_cmp);
    confirm.sort_by(f64::total_cmp);
    let _ = writeln!(report, "\n## IdP logout\n");
    let _ = writeln!(report, "| what | samples | p50 ms | p99 ms | max ms |");
    let _ = writeln!(report, "|---|---:|---:|---:|---:|");
    for (what, s) in [
        ("sign-out confirmed at the IdP (oidc-provider, back-channel logout) → first deny at Envoy", &total),
        ("of which: the IdP's confirmation request (logout token delivered and committed)", &confirm),
    ] {
        let _ = writeln!(
            report,
            "| {what} | {} | {:.1} | {:.1} | {:.1} |",
            s.len(),
            percentile(s, 0.5),
            percentile(s, 0.99),
            s.last().copied().unwrap_or(0.0)
        );
    }
}

/// The cost of reporting sessions: Epochgate (HS256) with `report_sessions` off and on,
/// alternating over `BENCH_SESSION_ROUNDS` rounds (default 3), medians compared — for
/// 1,000 users' tokens and for the cold pool (every request a new session).
fn sessions(report: &mut String, cp: &ControlPlane, dir: &Path, duration: u64, cold_n: usize) {
    let rounds = env_num("BENCH_SESSION_ROUNDS", 3) as usize;
    let _ = writeln!(report, "\n## Session reporting\n");
    let _ = writeln!(
        report,
        "Epochgate, HS256, `report_sessions` off and on in alternation ({rounds} rounds of {duration} s each, medians).\n"
    );
    let _ = writeln!(
        report,
        "| tokens (one user each) | off: req/s | on: req/s | cost | sessions listed |"
    );
    let _ = writeln!(report, "|---|---:|---:|---:|---:|");
    for n in [1000usize, cold_n] {
        let tokens = tokens(Alg::Hs256, n);
        let mut off = Vec::new();
        let mut on = Vec::new();
        for _ in 0..rounds {
            for report_sessions in [false, true] {
                let (port, admin) = (free_port(), free_port());
                let yaml = envoy_yaml_with(
                    Setup::Epochgate,
                    Alg::Hs256,
                    port,
                    admin,
                    cp.port,
                    report_sessions,
                );
                let envoy = start_envoy(dir, &yaml, port, admin, true);
                let _ = wrk(envoy.port, &tokens, 1);
                let r = wrk(envoy.port, &tokens, duration);
                drop(envoy);
                eprintln!(
                    "sessions {n} tokens, report_sessions {report_sessions}: {:.0} req/s",
                    r.rps
                );
                if report_sessions {
                    on.push(r.rps)
                } else {
                    off.push(r.rps)
                }
            }
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let (off, on) = (median(&mut off), median(&mut on));
        let listed = cp
            .admin("GET", "/v1/tenants/bench/users?limit=1", "")
            .json()["total_users"]
            .as_u64()
            .unwrap_or(0);
        let _ = writeln!(
            report,
            "| {} | {off:.0} | {on:.0} | {:+.1}% | {listed} |",
            if n == 1000 {
                "warm 1k".to_string()
            } else {
                format!("cold {}k", n / 1000)
            },
            (1.0 - on / off.max(1.0)) * 100.0
        );
    }
}

/// Raises this process's open-file limit to its hard limit: the fan-out holds one socket
/// per simulated edge, and the control plane it starts (which inherits the limit) one per
/// open poll. The bench's setting only: the product's defaults are left alone.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current == limit.maximum {
        return;
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if let Err(err) = setrlimit(Resource::Nofile, raised) {
        eprintln!("cannot raise the open-file limit ({limit:?}): {err}");
    }
}

/// The CPU time (user + system, all threads) a process has used so far, in ms:
/// `/proc/PID/stat`'s `utime` and `stime`, in clock ticks (`getconf CLK_TCK`).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat(5); `fields` starts at field 3.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0);
    ticks as f64 * 1000.0 / hz
}

/// A gauge or counter of the control plane's `/metrics`.
fn metric(cp: &ControlPlane, name: &str) -> u64 {
    let r = http::request("127.0.0.1", cp.port, "GET", "/metrics", &[], b"").unwrap();
    String::from_utf8_lossy(&r.body)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// What one fan-out run measured.
struct FanOut {
    /// For each change, the time until every edge had it (ms), sorted.
    all: Vec<f64>,
    /// Each edge's time for each change (ms), sorted.
    per_edge: Vec<f64>,
    /// The control plane's RSS with every edge waiting, less before they connected,
    /// per open poll.
    bytes_per_poll: f64,
    /// The control plane's CPU time over the changes, per change and per 1,000 edges.
    cpu_ms_per_change_per_1k: f64,
    /// Store reads (`epochgate_sync_store_reads`) per change.
    store_reads_per_change: f64,
}

fn fan_out_section(report: &mut String, cp: &mut ControlPlane) {
    let counts: Vec<usize> = std::env::var("BENCH_EDGES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let changes = env_num("BENCH_FANOUT_CHANGES", 20) as usize;
    let most = counts.iter().copied().max().unwrap_or(0);
    // One connection per edge (and some for the admin calls): a bench setting.
    cp.extra_args
        .extend(["--max-connections".to_string(), (most + 100).to_string()]);
    cp.restart();
    let _ = writeln!(report, "\n## Fan-out to long-polling edges\n");
    let _ = writeln!(
        report,
        "Simulated edges (one thread and one keep-alive connection each, in the bench process, on the same 2 cores as the control plane), each long-polling `GET /v1/sync?wait=30` again as soon as it has an answer; {changes} logouts, 200 ms apart.\n"
    );
    let _ = writeln!(
        report,
        "| edges | what | samples | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(report, "|---:|---|---:|---:|---:|---:|");
    let mut costs = String::new();
    for edges in counts {
        let r = fan_out(cp, edges, changes);
        for (what, v) in [
            ("admin 200 → all edges have the change", &r.all),
            ("admin 200 → one edge has it", &r.per_edge),
        ] {
            let _ = writeln!(
                report,
                "| {edges} | {what} | {} | {:.1} | {:.1} | {:.1} |",
                v.len(),
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().copied().unwrap_or(0.0)
            );
        }
        let _ = writeln!(
            costs,
            "| {edges} | {:.0} | {:.1} | {:.1} |",
            r.bytes_per_poll, r.cpu_ms_per_change_per_1k, r.store_reads_per_change
        );
        eprintln!(
            "fan-out: {edges} edges, all have it p99 {:.1} ms, {:.0} B per open poll, {:.1} ms CPU per change per 1,000 edges",
            percentile(&r.all, 0.99),
            r.bytes_per_poll,
            r.cpu_ms_per_change_per_1k
        );
    }
    let _ = writeln!(
        report,
        "\n| edges | control plane memory per open poll, bytes | control plane CPU per change per 1,000 edges, ms | store reads per change (`epochgate_sync_store_reads`) |"
    );
    let _ = writeln!(report, "|---:|---:|---:|---:|");
    report.push_str(&costs);
}

/// Holds `edges` simulated edges long-polling the control plane; for each of `changes`
/// logouts, the time until every edge has it (and each edge's own time), and what the
/// control plane spent.
fn fan_out(cp: &ControlPlane, edges: usize, changes: usize) -> FanOut {
    let version = logout(cp, "fanout", "warmup");
    let pid = cp.proc.pid();
    let rss_before = rss_kb(pid);
    let arrivals: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::new(Mutex::new(Vec::new()));
    let ready = Arc::new(Barrier::new(edges + 1));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = cp.port;
    let mut handles = Vec::new();
    for e in 0..edges {
        let (arrivals, ready, stop) =
            (Arc::clone(&arrivals), Arc::clone(&ready), Arc::clone(&stop));
        handles.push(
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut since = version;
                    let mut first = true;
                    let mut stream = connect(port);
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if first {
                            ready.wait();
                            first = false;
                        }
                        match poll(&mut stream, since, e) {
                            Some(v) if v > since => {
                                arrivals.lock().unwrap().push((v, Instant::now()));
                                since = v;
                            }
                            Some(_) => {}
                            None => stream = connect(port),
                        }
                    }
                })
                .unwrap(),
        );
    }
    ready.wait();
    wait_for(
        "every simulated edge to wait in a long-poll",
        Duration::from_secs(120),
        || (metric(cp, "epochgate_sync_long_polls_open") >= edges as u64).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(500));
    let rss_open = rss_kb(pid);
    let reads_before = metric(cp, "epochgate_sync_store_reads_total");
    let cpu_before = cpu_ms(pid);
    let mut all = Vec::new();
    let mut per_edge = Vec::new();
    for i in 0..changes {
        let t0 = Instant::now();
        let v = logout(cp, "fanout", &format!("u-{i}"));
        let done = wait_for_count(&arrivals, v, edges, Duration::from_secs(30));
        assert_eq!(
            done.len(),
            edges,
            "only {} of {edges} edges had version {v} after 30 s",
            done.len()
        );
        let times: Vec<f64> = done
            .iter()
            .map(|t| t.saturating_duration_since(t0).as_secs_f64() * 1000.0)
            .collect();
        all.push(times.iter().copied().fold(0.0, f64::max));
        per_edge.extend(times);
        std::thread::sleep(Duration::from_millis(200));
    }
    // The edges' next polls (within the 200 ms after each change) are part of what a
    // change costs; the scrapes below are not.
    let spent_ms = cpu_ms(pid) - cpu_before;
    let reads = metric(cp, "epochgate_sync_store_reads_total").saturating_sub(reads_before);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // One more change wakes every poll so the threads can see `stop`.
    logout(cp, "fanout", "stop");
    for h in handles {
        let _ = h.join();
    }
    all.sort_by(f64::total_cmp);
    per_edge.sort_by(f64::total_cmp);
    FanOut {
        all,
        per_edge,
        bytes_per_poll: (rss_open.saturating_sub(rss_before) * 1024) as f64 / edges as f64,
        cpu_ms_per_change_per_1k: spent_ms / changes as f64 / (edges as f64 / 1000.0),
        store_reads_per_change: reads as f64 / changes as f64,
    }
}

fn wait_for_count(
    arrivals: &Mutex<Vec<(u64, Instant)>>,
    version: u64,
    n: usize,
    deadline: Duration,
) -> Vec<Instant> {
    let start = Instant::now();
    loop {
        let got: Vec<Instant> = arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(v, _)| *v >= version)
            .map(|(_, t)| *t)
            .collect();
        // Each edge records each version it sees once; the first `n` at >= version.
        if got.len() >= n || start.elapsed() > deadline {
            let mut got = got;
            got.sort();
            got.truncate(n);
            arrivals.lock().unwrap().retain(|(v, _)| *v > version);
            return got;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn connect(port: u16) -> BufReader<TcpStream> {
    loop {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(40)));
            return BufReader::new(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One long-poll on a keep-alive connection; the version it answered.
fn poll(stream: &mut BufReader<TcpStream>, since: u64, edge: usize) -> Option<u64> {
    let req = format!(
        "GET /v1/sync?since={since}&wait=30&edge=sim-{edge} HTTP/1.1\r\nhost: cp\r\nauthorization: Bearer {EDGE_TOKEN}\r\n\r\n"
    );
    stream.get_mut().write_all(req.as_bytes()).ok()?;
    let mut len = 0usize;
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    v["version"].as_u64()
}

/// Envoy's RSS with N user epochs in shared data: for each N, the control plane's SQLite
/// file is bulk-loaded to N entries (a bench-only shortcut around a million fsynced API
/// calls: rows written as one commit, in the store's own schema, while the control plane
/// is stopped), then a fresh Envoy syncs the snapshot and its RSS is read.
fn memory(report: &mut String, cp: &mut ControlPlane, dir: &Path) {
    let _ = writeln!(report, "\n## Memory\n");
    let wasm_size = std::fs::metadata(wasm_path()).map_or(0, |m| m.len());
    let _ = writeln!(report, "Filter `.wasm`: {wasm_size} bytes.\n");
    let _ = writeln!(report, "| user epochs in shared data | first sync (snapshot) s | Envoy RSS MiB | bytes per entry (vs 0) |");
    let _ = writeln!(report, "|---:|---:|---:|---:|");
    let max = env_num("BENCH_MEMORY_ENTRIES", 1_000_000) as usize;
    let mut loaded = 0usize;
    let mut base_kb = 0u64;
    for n in [0usize, 10_000, 100_000, 1_000_000]
        .into_iter()
        .filter(|n| *n <= max)
    {
        cp.proc.kill();
        bulk_load(&cp.db, loaded, n);
        loaded = n;
        cp.restart();
        let (port, admin) = (free_port(), free_port());
        let start = Instant::now();
        let envoy = start_envoy(
            dir,
            &envoy_yaml(Setup::Epochgate, Alg::Hs256, port, admin, cp.port),
            port,
            admin,
            true,
        );
        let synced = start.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(1000));
        let rss = rss_kb(envoy.proc.pid());
        if n == 0 {
            base_kb = rss;
        }
        let per_entry = if n == 0 {
            String::new()
        } else {
            format!(
                "{:.0}",
                (rss.saturating_sub(base_kb) * 1024) as f64 / n as f64
            )
        };
        let _ = writeln!(
            report,
            "| {n} | {synced:.1} | {:.1} | {per_entry} |",
            rss as f64 / 1024.0
        );
        eprintln!(
            "memory: {n} entries, RSS {:.1} MiB, synced in {synced:.1} s",
            rss as f64 / 1024.0
        );
    }
}

/// Adds user epochs `from..to` of tenant `mem` to the control plane's SQLite file.
fn bulk_load(db: &str, from: usize, to: usize) {
    if to <= from {
        return;
    }
    let mut conn = rusqlite::Connection::open(db).unwrap();
    let tx = conn.transaction().unwrap();
    let version: i64 = tx
        .query_row(
            "UPDATE meta SET version = version + 1 WHERE id = 1 RETURNING version",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let now = now_ms() as i64;
    {
        let mut insert = tx
            .prepare("INSERT INTO revocations (scope, tenant, subject, epoch_ms, version, changed_ms) VALUES ('user', 'mem', ?1, ?2, ?3, ?2)")
            .unwrap();
        for i in from..to {
            insert
                .execute(rusqlite::params![format!("user-{i:07}"), now, version])
                .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// One workerd on CPU 0 with three services: the Epochgate worker built in `dist`, a
/// pass-through JS worker (the baseline: the same fetch to the same origin, nothing
/// checked) and the origin, a JS worker answering 200 `ok`.
struct Workerd {
    _proc: Proc,
    epochgate: u16,
    passthrough: u16,
}

fn start_workerd(dir: &Path, dist: &Path, cp_port: u16, key: &serde_json::Value) -> Workerd {
    let worker_dir = dir.join("worker");
    copy_dir(dist, &worker_dir);
    let (epochgate, passthrough, origin) = (free_port(), free_port(), free_port());
    let config = json!({"keys": [key], "issuer": "https://idp.bench.test", "audiences": ["portal"],
                        "token_cache_size": CACHE_SIZE});
    let worker = json!({"origin": format!("http://127.0.0.1:{origin}"),
                        "control_plane": format!("http://127.0.0.1:{cp_port}"),
                        "deployment": "bench", "refresh_ms": 1000});
    let passthrough_js = format!(
        "export default {{ fetch(r) {{ const u = new URL(r.url); \
         return fetch('http://127.0.0.1:{origin}' + u.pathname + u.search, {{ headers: r.headers }}); }} }};"
    );
    let origin_js = "export default { fetch() { return new Response('ok'); } };";
    let capnp = format!(
        r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "epochgate", worker = .epochgate),
    (name = "passthrough", worker = (modules = [(name = "p.mjs", esModule = {passthrough_js})],
      compatibilityDate = "2026-11-17", globalOutbound = "internet")),
    (name = "origin", worker = (modules = [(name = "o.mjs", esModule = {origin_js})],
      compatibilityDate = "2026-11-17")),
    (name = "internet", network = (allow = ["public", "private", "local"])),
  ],
  sockets = [
    (name = "e", address = "127.0.0.1:{epochgate}", http = (), service = "epochgate"),
    (name = "p", address = "127.0.0.1:{passthrough}", http = (), service = "passthrough"),
    (name = "o", address = "127.0.0.1:{origin}", http = (), service = "origin"),
  ],
);
const epochgate :Workerd.Worker = (
  modules = [
{modules}
  ],
  compatibilityDate = "2026-11-17",
  bindings = [
    (name = "EPOCHGATE_CONFIG", text = {config}),
    (name = "EPOCHGATE_WORKER", text = {worker}),
    (name = "EPOCHGATE_EDGE_TOKEN", text = {token}),
  ],
  globalOutbound = "internet",
);
"#,
        passthrough_js = capnp_string(&passthrough_js),
        origin_js = capnp_string(origin_js),
        modules = worker_modules(&worker_dir).join("\n"),
        config = capnp_string(&config.to_string()),
        worker = capnp_string(&worker.to_string()),
        token = capnp_string(EDGE_TOKEN),
    );
    let path = worker_dir.join("bench.capnp");
    std::fs::write(&path, capnp).unwrap();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "0"])
        .arg(workerd_bin())
        .arg("serve")
        .arg(&path)
        .current_dir(&worker_dir);
    let proc = spawn("workerd", cmd, dir.join("workerd.log"));
    for port in [epochgate, passthrough, origin] {
        wait_for("workerd to listen", Duration::from_secs(30), || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }
    Workerd {
        _proc: proc,
        epochgate,
        passthrough,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    percentile(&v, 0.5)
}

/// Cold-token requests per second through the worker, per algorithm and build, against
/// the pass-through baseline of the same workerd.
fn worker_throughput(
    report: &mut String,
    cp: &ControlPlane,
    dir: &Path,
    duration: u64,
    cold_n: usize,
) {
    let rounds = env_num("BENCH_WORKER_ROUNDS", 3).max(1);
    let mut builds = vec![("this build".to_string(), worker_dist())];
    if let Ok(other) = std::env::var("BENCH_WORKER_COMPARE") {
        builds.push((format!("`{other}`"), PathBuf::from(other)));
    }
    let _ = writeln!(report, "## Cloudflare Worker on workerd\n");
    let _ = writeln!(
        report,
        "workerd on CPU 0 (the Worker, a pass-through JS worker and a JS origin in one process), wrk 1 thread / 32 connections on CPU 1, {cold_n} distinct tokens cycled (token cache {CACHE_SIZE}: every request a cold verification), {duration} s per run, {rounds} alternating rounds, medians. Baseline: the pass-through worker (the same fetch to the same origin, nothing checked).\n"
    );
    let _ = writeln!(
        report,
        "| build | alg | req/s | p50 ms | p99 ms | pass-through req/s | × pass-through |"
    );
    let _ = writeln!(report, "|---|---|---:|---:|---:|---:|---:|");
    let only = std::env::var("BENCH_WORKER_ALGS").unwrap_or_default();
    let algs: Vec<Alg> = [Alg::Hs256, Alg::Rs256, Alg::Es256, Alg::EdDsa]
        .into_iter()
        .filter(|a| only.is_empty() || only.split(',').any(|o| o.trim() == a.name()))
        .collect();
    for (i, (name, dist)) in builds.iter().enumerate() {
        let sub = dir.join(format!("workerd-{i}"));
        // One workerd per algorithm (the key is a binding); the baseline is measured
        // in each, alternating with the worker.
        for &alg in &algs {
            let tokens = tokens(alg, cold_n);
            let (key, _) = alg.keys();
            let w = start_workerd(&sub.join(alg.name()), dist, cp.port, &key);
            let (mut base, mut epoch) = (Vec::new(), Vec::new());
            let _ = wrk(w.epochgate, &tokens, 1);
            let _ = wrk(w.passthrough, &tokens, 1);
            for _ in 0..rounds {
                base.push(wrk(w.passthrough, &tokens, duration));
                let r = wrk(w.epochgate, &tokens, duration);
                if r.non_2xx > 0 {
                    eprintln!(
                        "warning: worker {name} {}: {} non-2xx responses",
                        alg.name(),
                        r.non_2xx
                    );
                }
                epoch.push(r);
            }
            let rps = median(epoch.iter().map(|r| r.rps).collect());
            let base_rps = median(base.iter().map(|r| r.rps).collect());
            let _ = writeln!(
                report,
                "| {name} | {} | {rps:.0} | {:.2} | {:.2} | {base_rps:.0} | {:.2} |",
                alg.name(),
                median(epoch.iter().map(|r| r.p50_ms).collect()),
                median(epoch.iter().map(|r| r.p99_ms).collect()),
                rps / base_rps.max(1.0)
            );
            eprintln!(
                "worker {name} {}: {rps:.0} req/s, pass-through {base_rps:.0} req/s",
                alg.name()
            );
        }
    }
    let _ = writeln!(report);
}

/// The control plane's `epochgate_sync_requests_total`.
fn sync_requests_total(cp: &ControlPlane) -> u64 {
    cp.metric("epochgate_sync_requests_total").unwrap_or(0)
}

/// The Worker in workerd with 1 and with 8 isolates (worker services), each polling the
/// control plane itself (`refresh_ms` 500, the default) or told of changes by the relay
/// (the deployment's Durable Object): traffic on every isolate (a request every 5 ms),
/// `BENCH_RELAY_LOGOUTS` logouts 250–450 ms apart; for each, the time from the admin call's
/// 200 to the first deny at each isolate, and the control plane's sync requests per
/// second over the run.
fn worker_relay(report: &mut String) {
    use epochgate_tests::worker::{WorkerOptions, WorkerStack};
    use epochgate_tests::Options;
    use std::sync::atomic::{AtomicBool, Ordering};
    let logouts = env_num("BENCH_RELAY_LOGOUTS", 20) as usize;
    let _ = writeln!(report, "\n## The Worker's relay (Durable Object)\n");
    let _ = writeln!(
        report,
        "workerd, one worker service per isolate, a request every 5 ms on each; {logouts} logouts 250–450 ms apart. Without the relay each isolate short-polls every `refresh_ms` (500); with it, the object long-polls and isolates ask it every `relay_check_ms` (20), syncing themselves only for a change (and every `relay_refresh_ms`, 10 s).\n"
    );
    let _ = writeln!(
        report,
        "| isolates | sync | samples | p50 ms | p99 ms | max ms | control-plane sync requests/s, ~3 logouts/s | … 5 s without a change |"
    );
    let _ = writeln!(report, "|---:|---|---:|---:|---:|---:|---:|---:|");
    for isolates in [1usize, 8] {
        for relay in [false, true] {
            let stack = WorkerStack::start_with(WorkerOptions {
                edge: Options {
                    max_staleness_s: 60,
                    ..Options::default()
                },
                relay,
                isolates,
                ..WorkerOptions::default()
            });
            let get = |port: u16, token: &str| {
                epochgate_tests::http::get_bearer(port, "/api/orders", token)
                    .map(|r| r.status)
                    .unwrap_or(0)
            };
            let bystander = stack.token("bystander", "bench", serde_json::json!({}));
            for &port in &stack.ports {
                get(port, &bystander);
            }
            std::thread::sleep(Duration::from_millis(500));
            let done = AtomicBool::new(false);
            let mut took: Vec<f64> = Vec::new();
            let before = sync_requests_total(&stack.cp);
            let started = Instant::now();
            std::thread::scope(|scope| {
                for &port in &stack.ports {
                    let (done, bystander, get) = (&done, &bystander, &get);
                    scope.spawn(move || {
                        while !done.load(Ordering::Relaxed) {
                            get(port, bystander);
                            std::thread::sleep(Duration::from_millis(5));
                        }
                    });
                }
                for round in 0..logouts {
                    let user = format!("relay-victim-{round}");
                    let t = stack.token(&user, "bench", serde_json::json!({}));
                    logout(&stack.cp, "bench", &user);
                    let at = Instant::now();
                    let per: Vec<f64> = std::thread::scope(|inner| {
                        let handles: Vec<_> = stack
                            .ports
                            .iter()
                            .map(|&port| {
                                let (t, get) = (&t, &get);
                                inner.spawn(move || loop {
                                    if get(port, t) == 401 {
                                        return at.elapsed().as_secs_f64() * 1000.0;
                                    }
                                    if at.elapsed() > Duration::from_secs(10) {
                                        return f64::NAN;
                                    }
                                    std::thread::sleep(Duration::from_millis(2));
                                })
                            })
                            .collect();
                        handles.into_iter().map(|h| h.join().unwrap()).collect()
                    });
                    took.extend(per.into_iter().filter(|v| v.is_finite()));
                    // 250–450 ms apart, so logouts do not keep one phase of a 500 ms poll.
                    std::thread::sleep(Duration::from_millis(250 + (round as u64 * 73) % 200));
                }
                done.store(true, Ordering::Relaxed);
            });
            let per_s =
                (sync_requests_total(&stack.cp) - before) as f64 / started.elapsed().as_secs_f64();
            // Then 5 s of the same traffic without a change.
            let quiet_before = sync_requests_total(&stack.cp);
            let quiet = Instant::now();
            while quiet.elapsed() < Duration::from_secs(5) {
                for &port in &stack.ports {
                    get(port, &bystander);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            let quiet_per_s = (sync_requests_total(&stack.cp) - quiet_before) as f64
                / quiet.elapsed().as_secs_f64();
            took.sort_by(f64::total_cmp);
            let _ = writeln!(
                report,
                "| {isolates} | {} | {} | {:.1} | {:.1} | {:.1} | {per_s:.1} | {quiet_per_s:.2} |",
                if relay { "relay" } else { "each isolate polls" },
                took.len(),
                percentile(&took, 0.5),
                percentile(&took, 0.99),
                took.last().copied().unwrap_or(0.0)
            );
            eprintln!("relay bench: {isolates} isolates, relay {relay}: done");
        }
    }
}
