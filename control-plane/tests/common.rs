//! Shared helpers: a fresh store in a temp dir, an app state, request plumbing.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use epochgate_control_plane::config::ServerConfig;
use epochgate_control_plane::store::{self, Store};
use epochgate_control_plane::{app, AppState};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

pub const ADMIN: &str = "admin-token-0123456789abcdef";
pub const EDGE: &str = "edge-token-0123456789abcdef";
pub const LIFETIME_S: u64 = 3600;

/// A store in its own temp dir (kept alive as long as the value).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    pub dir: TempDir,
}

/// Which backend a conformance test runs against.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    /// A fresh database on the process's shared throwaway cluster.
    Postgres,
}

impl Backend {
    pub async fn open(self) -> TestStore {
        match self {
            Backend::Sqlite => test_store().await,
            Backend::Postgres => pg_store().await,
        }
    }
}

/// A fresh Postgres database on the shared cluster (started on first use).
pub async fn pg_store() -> TestStore {
    let url = pg_url().await;
    TestStore {
        store: store::open(&url).await.unwrap(),
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The URL of a fresh database on the shared cluster.
pub async fn pg_url() -> String {
    tokio::task::spawn_blocking(|| epochgate_tests::pg::PgCluster::shared().fresh_database())
        .await
        .unwrap()
}

pub async fn test_store() -> TestStore {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epochgate.db");
    let store = store::open(path.to_str().unwrap()).await.unwrap();
    TestStore { store, dir }
}

pub struct TestApp {
    pub state: AppState,
    pub _store: TestStore,
}

pub async fn test_app() -> TestApp {
    let ts = test_store().await;
    let config = ServerConfig::new(ADMIN, EDGE, LIFETIME_S, 60).unwrap();
    TestApp {
        state: AppState::new(Arc::clone(&ts.store), config),
        _store: ts,
    }
}

/// An answer: status, headers, and the body as JSON (`Value::Null` if it is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

impl Answer {
    /// The `error` code of an error answer; panics if the body is not the error shape.
    pub fn error(&self) -> &str {
        assert!(
            self.json.get("detail").and_then(Value::as_str).is_some(),
            "error answers carry a detail: {}",
            self.text
        );
        self.json["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` in {}", self.text))
    }
}

pub async fn send(state: &AppState, req: Request<Body>) -> Answer {
    let resp = app(state.clone()).oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        json,
        text,
    }
}

/// A request with an optional bearer token and an optional JSON body.
pub fn request(method: &str, uri: &str, token: Option<&str>, json: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    match json {
        Some(body) => b
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

pub async fn admin_post(state: &AppState, uri: &str, json: Option<&str>) -> Answer {
    send(state, request("POST", uri, Some(ADMIN), json)).await
}

pub async fn admin_get(state: &AppState, uri: &str) -> Answer {
    send(state, request("GET", uri, Some(ADMIN), None)).await
}

pub async fn edge_get(state: &AppState, uri: &str) -> Answer {
    send(state, request("GET", uri, Some(EDGE), None)).await
}
