//! One scenario, both edges: what a scenario needs from an edge — Envoy with the filter
//! ([`Stack`]) or the Worker in workerd ([`WorkerStack`]) — so the scenarios that judge
//! the request the app will see run unchanged on each.

use std::time::{Duration, Instant};

use crate::upstream::Seen;
use crate::worker::{WorkerOptions, WorkerStack};
use crate::{http, wait_for, ControlPlane, Options, Response, Stack, Upstream};

/// Which edge a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Envoy,
    Worker,
}

/// What a scenario needs of an edge, in front of the in-process upstream, with its
/// control plane — Envoy with the filter ([`Stack`]) or the Worker in workerd
/// ([`WorkerStack`]) — so that one scenario runs on both, the way the store conformance
/// suite runs on SQLite and Postgres.
pub trait Edge {
    fn kind(&self) -> EdgeKind;
    /// Where clients connect.
    fn port(&self) -> u16;
    fn upstream(&self) -> &Upstream;
    fn cp(&self) -> &ControlPlane;
    fn cp_mut(&mut self) -> &mut ControlPlane;
    /// The edge's log so far (Envoy's, or workerd's).
    fn log(&self) -> String;
    /// Waits until the edge has applied at least `version` of the control plane's
    /// current stream.
    fn wait_applied(&self, version: u64);
    /// Whether the edge has seen a sync fail (Envoy's `sync_failed` counter, the
    /// Worker's log).
    fn sync_failed(&self) -> bool;
    /// Whether the edge has cut a stream at its session's end (Envoy's `streams_ended`
    /// counter, the Worker's log).
    fn streams_ended(&self) -> bool;
    /// How long a logout may take to reach this edge in these scenarios: Envoy holds a
    /// long poll; an isolate refreshes every `refresh_ms`.
    fn propagation_deadline(&self) -> Duration;

    /// `envoy` or `worker`, for messages.
    fn name(&self) -> &'static str {
        match self.kind() {
            EdgeKind::Envoy => "envoy",
            EdgeKind::Worker => "worker",
        }
    }

    /// A GET with exactly this target (raw bytes) and these headers.
    fn get_raw(&self, target: &[u8], headers: &[(&str, &[u8])]) -> Response {
        http::request_bytes("127.0.0.1", self.port(), "GET", target, headers, b"").unwrap()
    }

    fn get(&self, target: &str, headers: &[(&str, &[u8])]) -> Response {
        self.get_raw(target.as_bytes(), headers)
    }

    /// A GET of `path` through the edge with a bearer token.
    fn get_with_token(&self, path: &str, token: &str) -> Response {
        let auth = format!("Bearer {token}");
        self.get(path, &[("authorization", auth.as_bytes())])
    }

    /// Opens a server-sent-events stream (`/events`) with a bearer token; asserts the
    /// edge let it through.
    fn open_events(&self, token: &str) -> http::Streaming {
        let auth = format!("Bearer {token}");
        let s = http::Streaming::open(
            "127.0.0.1",
            self.port(),
            "/events",
            &[
                ("authorization", auth.as_bytes()),
                ("accept", b"text/event-stream"),
            ],
        )
        .unwrap();
        assert_eq!(s.status(), Some(200));
        s
    }

    /// The request a GET made reach the upstream, if it did.
    fn forwarded(&self, target: &str, headers: &[(&str, &[u8])]) -> (Response, Option<Seen>) {
        let before = self.upstream().requests().len();
        let r = self.get(target, headers);
        let seen = self.upstream().requests().get(before).cloned();
        (r, seen)
    }

    /// Logs `user` of `tenant` out and waits until a request with `token` (as a bearer
    /// token and as the `portal_session` cookie, whichever the edge reads) is refused as
    /// revoked.
    fn log_out(&self, tenant: &str, user: &str, token: &str) {
        let r = self.cp().admin(
            "POST",
            &format!("/v1/tenants/{tenant}/users/{user}/logout"),
            "",
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let auth = format!("Bearer {token}");
        let cookie = format!("portal_session={token}");
        wait_for(
            "the logout to reach the edge",
            Duration::from_secs(10),
            || {
                let r = self.get(
                    "/",
                    &[
                        ("authorization", auth.as_bytes()),
                        ("cookie", cookie.as_bytes()),
                    ],
                );
                (r.status == 401 && r.json()["error"] == "session_revoked").then_some(())
            },
        );
    }

    /// Polls every 10 ms (up to `deadline`) until a request with `token` gets `status`;
    /// returns the time it took.
    fn time_until_status(&self, token: &str, status: u16, deadline: Duration) -> Duration {
        let start = Instant::now();
        wait_for(
            &format!("status {status} at the {}", self.name()),
            deadline,
            || (self.get_with_token("/api/orders", token).status == status).then_some(()),
        );
        start.elapsed()
    }

    /// Asserts that every request with `token` during `period` gets `status` (and the
    /// JSON `error` code, when given); returns how many were sent.
    fn holds_status(
        &self,
        what: &str,
        token: &str,
        status: u16,
        error: Option<&str>,
        period: Duration,
    ) -> u32 {
        let start = Instant::now();
        let mut n = 0;
        while start.elapsed() < period {
            let r = self.get_with_token("/api/orders", token);
            n += 1;
            assert_eq!(
                r.status,
                status,
                "{what} at the {} (request {n}, after {} ms): {}",
                self.name(),
                start.elapsed().as_millis(),
                r.text()
            );
            if let Some(code) = error {
                assert_eq!(r.json()["error"], code, "{what}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        n
    }
}

impl Edge for Stack {
    fn kind(&self) -> EdgeKind {
        EdgeKind::Envoy
    }
    fn port(&self) -> u16 {
        self.envoy_port
    }
    fn upstream(&self) -> &Upstream {
        &self.upstream
    }
    fn cp(&self) -> &ControlPlane {
        &self.cp
    }
    fn cp_mut(&mut self) -> &mut ControlPlane {
        &mut self.cp
    }
    fn log(&self) -> String {
        self.envoy.log()
    }
    fn wait_applied(&self, version: u64) {
        Stack::wait_applied(self, version)
    }
    fn sync_failed(&self) -> bool {
        self.stat("wasmcustom.epochgate.sync_failed").unwrap_or(0) > 0
    }
    fn streams_ended(&self) -> bool {
        self.stat("wasmcustom.epochgate.streams_ended").unwrap_or(0) > 0
    }
    fn propagation_deadline(&self) -> Duration {
        Duration::from_secs(1)
    }
}

impl Edge for WorkerStack {
    fn kind(&self) -> EdgeKind {
        EdgeKind::Worker
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn upstream(&self) -> &Upstream {
        &self.upstream
    }
    fn cp(&self) -> &ControlPlane {
        &self.cp
    }
    fn cp_mut(&mut self) -> &mut ControlPlane {
        &mut self.cp
    }
    fn log(&self) -> String {
        self.workerd.log()
    }
    /// An isolate syncs only while it serves requests: this sends some (without a
    /// token) until its receipt in `GET /v1/edges` shows `version` of the current stream.
    fn wait_applied(&self, version: u64) {
        wait_for(
            &format!("the worker to apply version {version}"),
            Duration::from_secs(20),
            || {
                let _ = self.get("/api/orders", &[]);
                let all = self.cp.edges();
                let stream = all["stream"].clone();
                self.edges()
                    .iter()
                    .any(|e| {
                        e["stream"] == stream && e["applied_version"].as_u64() >= Some(version)
                    })
                    .then_some(())
            },
        );
    }
    fn sync_failed(&self) -> bool {
        self.workerd.log().contains("sync failed")
    }
    fn streams_ended(&self) -> bool {
        self.workerd.log().contains("stream ended: session over")
    }
    /// The refresh interval plus one second.
    fn propagation_deadline(&self) -> Duration {
        Duration::from_millis(self.refresh_ms + 1000)
    }
}

/// Starts `kind` with these options (the filter configuration is the same for both).
pub fn start_edge(kind: EdgeKind, opts: Options) -> Box<dyn Edge> {
    match kind {
        EdgeKind::Envoy => Box::new(Stack::start_with(opts)),
        EdgeKind::Worker => Box::new(WorkerStack::start_with(WorkerOptions {
            edge: opts,
            ..WorkerOptions::default()
        })),
    }
}
