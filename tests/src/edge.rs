//! One scenario, both edges: what a scenario needs from an edge — Envoy with the filter
//! ([`Stack`]) or the Worker in workerd ([`WorkerStack`]) — so the scenarios that judge
//! the request the app will see run unchanged on each.

use std::time::Duration;

use crate::upstream::Seen;
use crate::worker::{WorkerOptions, WorkerStack};
use crate::{http, wait_for, ControlPlane, Options, Response, Stack, Upstream};

/// Which edge a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    Envoy,
    Worker,
}

/// An edge in front of the in-process upstream, with its control plane.
pub trait Edge {
    fn kind(&self) -> EdgeKind;
    /// Where clients connect.
    fn port(&self) -> u16;
    fn upstream(&self) -> &Upstream;
    fn cp(&self) -> &ControlPlane;
    /// The edge's log so far (Envoy's, or workerd's).
    fn log(&self) -> String;

    /// A GET with exactly this target (raw bytes) and these headers.
    fn get_raw(&self, target: &[u8], headers: &[(&str, &[u8])]) -> Response {
        http::request_bytes("127.0.0.1", self.port(), "GET", target, headers, b"").unwrap()
    }

    fn get(&self, target: &str, headers: &[(&str, &[u8])]) -> Response {
        self.get_raw(target.as_bytes(), headers)
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
    fn log(&self) -> String {
        self.envoy.log()
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
    fn log(&self) -> String {
        self.workerd.log()
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
