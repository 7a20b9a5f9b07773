//! The Cloudflare Worker under a real workerd (`node_modules/.bin/workerd`, from npm):
//! renders `worker/workerd.capnp.tmpl` with the built worker (`target/worker-dist`,
//! `make build-worker`) copied into the test's temp dir, free ports and the bindings, and
//! runs `workerd serve` next to the real control plane and the in-process upstream.
//! Everything is stopped on drop (through [`Proc`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::{
    artefact, filter_config, free_port, http, repo_root, spawn, token, wait_for, ControlPlane,
    Options, Proc, Response, Upstream, EDGE_TOKEN,
};

/// `workerd`, from npm (`make setup` runs `npm ci`).
pub fn workerd_bin() -> PathBuf {
    artefact(
        "WORKERD_BIN",
        repo_root().join("node_modules/.bin/workerd"),
        "make setup",
    )
}

/// The built worker: `entry.mjs`, the wasm-bindgen glue and the `.wasm`.
pub fn worker_dist() -> PathBuf {
    let dir = artefact(
        "EPOCHGATE_WORKER_DIST",
        repo_root().join("target/worker-dist"),
        "make build-worker",
    );
    artefact(
        "EPOCHGATE_WORKER_DIST",
        dir.join("epochgate_worker_bg.wasm"),
        "make build-worker",
    );
    dir
}

/// A capnp text literal (JSON goes in as is, quotes and backslashes escaped).
pub fn capnp_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The module list of a built worker dir: `entry.mjs` first (the main module), then
/// every other `.js`/`.mjs` (the glue and its snippets) and the `.wasm`; paths relative
/// to `dir`, which is where the config is written.
pub fn worker_modules(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push(rel);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files);
    let mut modules = vec![format!(
        "    (name = \"entry.mjs\", esModule = embed \"entry.mjs\"),"
    )];
    for f in files {
        if f == "entry.mjs" {
            continue;
        }
        if f.ends_with(".js") || f.ends_with(".mjs") {
            modules.push(format!("    (name = \"{f}\", esModule = embed \"{f}\"),"));
        } else if f.ends_with(".wasm") {
            modules.push(format!("    (name = \"{f}\", wasm = embed \"{f}\"),"));
        }
    }
    modules
}

/// The relay's namespace binding for the service that declares it.
const RELAY_BINDING: &str =
    "    (name = \"EPOCHGATE_RELAY\", durableObjectNamespace = \"EpochgateRelay\"),";

/// Renders `worker/workerd.capnp.tmpl`: the worker on `ports[0]` and one more worker
/// service — another isolate, with its own state — on each further port, all with
/// `bindings`; with `relay`, each binds the relay's namespace (declared by the first).
pub fn render_workerd_config(
    dir: &Path,
    ports: &[u16],
    bindings: &[(&str, String)],
    relay: bool,
) -> String {
    let template = std::fs::read_to_string(repo_root().join("worker/workerd.capnp.tmpl")).unwrap();
    let mut lines: Vec<String> = bindings
        .iter()
        .map(|(name, text)| format!("    (name = \"{name}\", text = {}),", capnp_string(text)))
        .collect();
    let modules = worker_modules(dir).join("\n");
    let (mut services, mut sockets, mut workers) = (Vec::new(), Vec::new(), Vec::new());
    for (i, port) in ports.iter().enumerate().skip(1) {
        services.push(format!(
            "    (name = \"isolate{i}\", worker = .isolate{i}),"
        ));
        sockets.push(format!(
            "    (name = \"http{i}\", address = \"127.0.0.1:{port}\", http = (), service = \"isolate{i}\"),"
        ));
        let mut own = lines.clone();
        if relay {
            own.push("    (name = \"EPOCHGATE_RELAY\", durableObjectNamespace = (className = \"EpochgateRelay\", serviceName = \"main\")),".into());
        }
        workers.push(format!(
            "const isolate{i} :Workerd.Worker = (\n  modules = [\n{modules}\n  ],\n  compatibilityDate = \"2026-11-17\",\n  bindings = [\n{}\n  ],\n  globalOutbound = \"internet\",\n);",
            own.join("\n")
        ));
    }
    if relay {
        lines.push(RELAY_BINDING.into());
    }
    template
        .replace("${ADDRESS}", &format!("127.0.0.1:{}", ports[0]))
        .replace("${MODULES}", &modules)
        .replace("${BINDINGS}", &lines.join("\n"))
        .replace("${EXTRA_SERVICES}", &services.join("\n"))
        .replace("${EXTRA_SOCKETS}", &sockets.join("\n"))
        .replace("${EXTRA_WORKERS}", &workers.join("\n"))
}

/// Options for a [`WorkerStack`].
#[derive(Clone)]
pub struct WorkerOptions {
    /// The filter configuration's options (as for Envoy).
    pub edge: Options,
    /// Merged into `EPOCHGATE_WORKER`.
    pub worker: Value,
    /// Replaces the whole `EPOCHGATE_CONFIG` text when set (bad-config tests).
    pub raw_config: Option<String>,
    /// Binds the relay (the deployment's Durable Object) in every service.
    pub relay: bool,
    /// Worker services (isolates) in the one workerd, each on its own port.
    pub isolates: usize,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        Self {
            edge: Options::default(),
            worker: json!({}),
            raw_config: None,
            relay: false,
            isolates: 1,
        }
    }
}

/// `refresh_ms` when `EPOCHGATE_WORKER` does not set it (`core`'s `WorkerConfig`).
pub const DEFAULT_REFRESH_MS: u64 = 500;

/// The deployment name the e2e worker reports under.
pub const DEPLOYMENT: &str = "e2e-worker";

/// workerd running the worker + control plane + upstream.
pub struct WorkerStack {
    pub dir: tempfile::TempDir,
    pub upstream: Upstream,
    pub cp: ControlPlane,
    pub workerd: Proc,
    /// The first isolate's port (the `Edge`'s).
    pub port: u16,
    /// Every isolate's port (`ports[0] == port`).
    pub ports: Vec<u16>,
    pub refresh_ms: u64,
    /// The token the worker syncs with (its own with `edge.edge_credential`).
    pub edge_token: String,
}

impl WorkerStack {
    pub fn start() -> Self {
        Self::start_with(WorkerOptions::default())
    }

    /// `isolates` worker services told of changes by the relay, with the defaults
    /// otherwise; requests go to the last isolate (not the one hosting the object).
    pub fn relayed(isolates: usize) -> Self {
        let mut stack = Self::start_with(WorkerOptions {
            relay: true,
            isolates,
            ..WorkerOptions::default()
        });
        stack.port = *stack.ports.last().unwrap();
        stack
    }

    pub fn start_with(opts: WorkerOptions) -> Self {
        let dist = worker_dist();
        let bin = workerd_bin();
        let dir = tempfile::Builder::new()
            .prefix("epochgate-e2e-worker-")
            .tempdir()
            .unwrap();
        let upstream = Upstream::start();
        let cp = ControlPlane::start_with_args(
            dir.path(),
            free_port(),
            &dir.path().join("epochgate.db").display().to_string(),
            opts.edge.control_plane_args.clone(),
            opts.edge.control_plane_env.clone(),
        );
        let ports: Vec<u16> = (0..opts.isolates.max(1)).map(|_| free_port()).collect();
        let port = ports[0];
        let edge_token = match &opts.edge.edge_credential {
            Some(edge) => cp.create_edge_token(edge),
            None => EDGE_TOKEN.to_string(),
        };

        let worker_dir = dir.path().join("worker");
        copy_dir(&dist, &worker_dir);
        let mut worker = json!({
            "origin": format!("http://127.0.0.1:{}", upstream.port),
            "control_plane": format!("http://127.0.0.1:{}", cp.port),
            "deployment": DEPLOYMENT,
            "retry_max_ms": 1000,
            "sync_timeout_ms": 2000,
        });
        for (k, v) in opts.worker.as_object().unwrap() {
            worker[k] = v.clone();
        }
        // The worker's default refresh interval unless the test sets one.
        let refresh_ms = worker["refresh_ms"].as_u64().unwrap_or(DEFAULT_REFRESH_MS);
        let config = opts
            .raw_config
            .clone()
            .unwrap_or_else(|| filter_config(&opts.edge).to_string());
        let capnp = render_workerd_config(
            &worker_dir,
            &ports,
            &[
                ("EPOCHGATE_CONFIG", config),
                ("EPOCHGATE_WORKER", worker.to_string()),
                ("EPOCHGATE_EDGE_TOKEN", edge_token.clone()),
            ],
            opts.relay,
        );
        let config_path = worker_dir.join("config.capnp");
        std::fs::write(&config_path, capnp).unwrap();
        let mut cmd = Command::new(bin);
        cmd.current_dir(&worker_dir)
            .arg("serve")
            .arg(&config_path)
            .arg("--verbose");
        let workerd = spawn("workerd", cmd, dir.path().join("workerd.log"));
        let stack = WorkerStack {
            dir,
            upstream,
            cp,
            workerd,
            port,
            ports,
            refresh_ms,
            edge_token,
        };
        // A connect, not a request: the isolate stays cold until the test's first request.
        for port in &stack.ports {
            wait_for("workerd to listen", Duration::from_secs(20), || {
                std::net::TcpStream::connect(("127.0.0.1", *port)).ok()
            });
        }
        stack
    }

    /// A token the worker's configuration accepts.
    pub fn token(&self, user: &str, tenant: &str, extra: Value) -> String {
        token(user, tenant, extra)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &[u8])]) -> Response {
        http::request("127.0.0.1", self.port, "GET", path, headers, b"").unwrap()
    }

    pub fn get_with_token(&self, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", auth.as_bytes())])
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

    /// This worker's isolates in `GET /v1/edges` (ids `e2e-worker-<random>`; the relay,
    /// `e2e-worker-relay`, is [`WorkerStack::relay_edge`]).
    pub fn edges(&self) -> Vec<Value> {
        self.cp.edges()["edges"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| {
                e["id"].as_str().is_some_and(|id| {
                    id.starts_with(&format!("{DEPLOYMENT}-")) && id != format!("{DEPLOYMENT}-relay")
                })
            })
            .cloned()
            .collect()
    }

    /// The relay's entry in `GET /v1/edges`, once it has polled.
    pub fn relay_edge(&self) -> Option<Value> {
        self.cp.edges()["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == format!("{DEPLOYMENT}-relay"))
            .cloned()
    }
}

/// Copies a directory tree (a built worker into a test's temp dir).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}
