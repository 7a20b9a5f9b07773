//! **Dev/demo only.** The demo's upstream app: it stands for the portal behind Envoy.
//! Every request gets a JSON echo of its path and of the identity Epochgate passed on
//! (`x-epochgate-user`, `-tenant`, `-session`); `/login` is the page browsers are sent to
//! after a force logout.

use axum::extract::Request;
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

async fn echo(req: Request) -> Response {
    let headers = req.headers();
    Json(serde_json::json!({
        "app": "epochgate demo upstream",
        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
        "user": header(headers, "x-epochgate-user"),
        "tenant": header(headers, "x-epochgate-tenant"),
        "session": header(headers, "x-epochgate-session"),
    }))
    .into_response()
}

async fn login() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Sign in</title><h1>Sign in again</h1>\
         <p>Your session was ended. In the demo, mint a new token with \
         <code>epochgate mint-token</code>.</p>",
    )
}

/// The demo upstream's routes.
pub fn router() -> Router {
    Router::new().route("/login", get(login)).fallback(echo)
}

/// Serves the demo upstream until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}
