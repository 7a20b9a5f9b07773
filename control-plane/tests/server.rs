//! A real server on 127.0.0.1:0: long-polls, their timeout, graceful shutdown, receipts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use epochgate_control_plane::config::ServerConfig;
use epochgate_control_plane::{serve, AppState};
use epochgate_core::sync::SyncResponse;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::common::{test_store, TestStore, ADMIN, EDGE};

struct Running {
    base: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _store: TestStore,
}

async fn start() -> Running {
    start_with(Duration::from_secs(10)).await
}

async fn start_with(header_read_timeout: Duration) -> Running {
    let mut config = ServerConfig::new(ADMIN, EDGE, 3600, 60).unwrap();
    config.header_read_timeout = header_read_timeout;
    start_config(config).await
}

async fn start_config(config: ServerConfig) -> Running {
    let ts = test_store().await;
    let state = AppState::new(Arc::clone(&ts.store), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, state, async move {
        let _ = stopped.await;
    }));
    Running {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        stop: Some(stop),
        task,
        _store: ts,
    }
}

impl Running {
    async fn sync(&self, query: &str) -> SyncResponse {
        let resp = self
            .http
            .get(format!("{}/v1/sync?{query}", self.base))
            .bearer_auth(EDGE)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    async fn admin(&self, method: reqwest::Method, path: &str) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }

    async fn metric(&self, name: &str) -> u64 {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .parse()
            .unwrap()
    }
}

#[tokio::test]
async fn a_long_poll_is_answered_as_soon_as_a_logout_commits() {
    let srv = Arc::new(start().await);
    let snap = srv.sync("since=0&edge=e1").await;
    assert!(snap.snapshot);
    let query = format!(
        "since={}&stream={}&wait=30&edge=e1",
        snap.version, snap.stream
    );
    let poll = {
        let srv = Arc::clone(&srv);
        tokio::spawn(async move {
            let r = srv.sync(&query).await;
            (r, Instant::now())
        })
    };
    // Let the poll reach its wait, and see it counted.
    let deadline = Instant::now() + Duration::from_secs(2);
    while srv.metric("epochgate_sync_long_polls_open").await != 1 {
        assert!(Instant::now() < deadline, "the poll never started waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let posted = Instant::now();
    srv.admin(
        reqwest::Method::POST,
        "/v1/tenants/acme/users/auth0%7C42/logout",
    )
    .await;
    let (answer, answered) = poll.await.unwrap();
    let latency = answered.saturating_duration_since(posted);
    // The commit (an fsync) and two HTTP round trips, on a shared 2-core machine: far
    // from the 30 s the poll would otherwise hold.
    assert!(latency < Duration::from_millis(800), "took {latency:?}");
    assert!(!answer.snapshot);
    assert_eq!(answer.version, snap.version + 1);
    assert_eq!(answer.changes.len(), 1);
    assert_eq!(
        serde_json::to_value(&answer.changes[0].target).unwrap()["user"],
        "auth0|42"
    );
    assert_eq!(srv.metric("epochgate_sync_long_polls_open").await, 0);
}

#[tokio::test]
async fn a_quiet_long_poll_returns_an_empty_delta_after_wait() {
    let srv = start().await;
    srv.admin(reqwest::Method::POST, "/v1/logout").await;
    let snap = srv.sync("since=0&edge=quiet").await;
    let started = Instant::now();
    let r = srv
        .sync(&format!(
            "since={}&stream={}&wait=1&edge=quiet",
            snap.version, snap.stream
        ))
        .await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "answered early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(1800),
        "answered late: {took:?}"
    );
    assert!(!r.snapshot);
    assert!(r.changes.is_empty());
    assert_eq!((r.version, r.stream), (snap.version, snap.stream));
}

#[tokio::test]
async fn graceful_shutdown_answers_open_long_polls_at_once() {
    let mut srv = start().await;
    let snap = srv.sync("since=0&edge=e1").await;
    let http = srv.http.clone();
    let url = format!(
        "{}/v1/sync?since={}&stream={}&wait=60&edge=e1",
        srv.base, snap.version, snap.stream
    );
    let poll = tokio::spawn(async move {
        let resp = http.get(url).bearer_auth(EDGE).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.json::<SyncResponse>().await.unwrap()
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while srv.metric("epochgate_sync_long_polls_open").await != 1 {
        assert!(Instant::now() < deadline, "the poll never started waiting");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = Instant::now();
    srv.stop.take().unwrap().send(()).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(2), poll)
        .await
        .expect("the open long-poll was not answered on shutdown")
        .unwrap();
    assert!(!answer.snapshot);
    assert!(answer.changes.is_empty());
    assert_eq!(answer.version, snap.version);
    tokio::time::timeout(Duration::from_secs(2), &mut srv.task)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();
    assert!(stopping.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn edge_receipts_show_up_in_edges_with_the_peer_address() {
    let srv = start().await;
    srv.admin(reqwest::Method::POST, "/v1/tenants/acme/logout")
        .await;
    srv.admin(reqwest::Method::POST, "/v1/tenants/acme/logout")
        .await;
    let snap = srv.sync("since=0&edge=envoy%2F1").await;
    srv.sync(&format!("since=1&stream={}&edge=envoy-2", snap.stream))
        .await;
    srv.sync(&format!(
        "since={}&stream={}&edge=envoy%2F1",
        snap.version, snap.stream
    ))
    .await;

    let edges = srv.admin(reqwest::Method::GET, "/v1/edges").await;
    assert_eq!(edges["version"], 2);
    let list = edges["edges"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let e1 = list.iter().find(|e| e["id"] == "envoy/1").unwrap();
    assert_eq!(e1["applied_version"], 2);
    assert_eq!(e1["lag"], 0);
    assert!(e1["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    let e2 = list.iter().find(|e| e["id"] == "envoy-2").unwrap();
    assert_eq!(e2["lag"], 1);

    // The audit log has the admin's address too.
    let audit = srv.admin(reqwest::Method::GET, "/v1/audit").await;
    assert!(audit["entries"][0]["source"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
}

/// Sends headers one byte every 100 ms, never finishing them, until the server closes
/// the connection; returns how long that took (or `None` if it never did within 30 s).
async fn slowloris(base: String) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: ";
    let mut bytes = head.iter().chain(std::iter::repeat(&b'a'));
    let mut buf = [0u8; 512];
    while started.elapsed() < Duration::from_secs(30) {
        if stream.write_all(&[*bytes.next().unwrap()]).await.is_err() {
            return Some(started.elapsed());
        }
        // Did the server give up on us (EOF, or a 408 then EOF)?
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => {}
        }
    }
    None
}

#[tokio::test]
async fn slow_clients_and_oversize_bodies_do_not_stall_other_requests() {
    let srv = Arc::new(start_with(Duration::from_secs(2)).await);
    let slow: Vec<_> = (0..30)
        .map(|_| tokio::spawn(slowloris(srv.base.clone())))
        .collect();
    // Oversize bodies: a 1 MiB JSON body on a logout, several at once.
    let big = format!(r#"{{"reason":"{}"}}"#, "x".repeat(1 << 20));
    let oversize: Vec<_> = (0..5)
        .map(|_| {
            let (srv, big) = (Arc::clone(&srv), big.clone());
            tokio::spawn(async move {
                srv.http
                    .post(format!("{}/v1/tenants/acme/users/42/logout", srv.base))
                    .bearer_auth(ADMIN)
                    .header("content-type", "application/json")
                    .body(big)
                    .send()
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile normal requests are answered, a write included.
    for _ in 0..5 {
        let asked = Instant::now();
        let v = srv
            .admin(reqwest::Method::POST, "/v1/tenants/acme/users/43/logout")
            .await;
        assert!(v["version"].as_u64().unwrap() > 0);
        let health = srv
            .http
            .get(format!("{}/healthz", srv.base))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200);
        // Generous on a shared machine; stalled would be the slow clients' 2 s or more.
        assert!(
            asked.elapsed() < Duration::from_millis(1500),
            "took {:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    for o in oversize {
        let r = o.await.unwrap().unwrap();
        assert_eq!(r.status(), 413);
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    // The slow clients are cut off after the header read timeout, not held forever.
    for s in slow {
        let took = s
            .await
            .unwrap()
            .expect("the server never closed a slow client");
        assert!(
            took >= Duration::from_millis(1500),
            "closed too early: {took:?}"
        );
    }
}

/// `max_connections`: past it the server stops accepting (the kernel queues the rest),
/// so a flood of idle connections cannot exhaust the process; a queued client is served
/// as soon as one closes.
#[tokio::test]
async fn connections_past_the_limit_wait_for_a_free_slot() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = ServerConfig::new(ADMIN, EDGE, 3600, 60).unwrap();
    config.max_connections = 1;
    let srv = start_config(config).await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let holder = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // Let the server accept the holder before the second client arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut queued = tokio::net::TcpStream::connect(&addr).await.unwrap();
    queued
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let early = tokio::time::timeout(Duration::from_millis(500), queued.read(&mut buf)).await;
    assert!(early.is_err(), "served past the limit");
    drop(holder);
    let n = tokio::time::timeout(Duration::from_secs(10), queued.read(&mut buf))
        .await
        .expect("the queued client was never served")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}

/// Shutdown waits for in-flight requests only until the drain deadline: a client that
/// never finishes its request cannot hold the process up.
#[tokio::test]
async fn shutdown_cuts_what_is_left_at_the_drain_deadline() {
    use tokio::io::AsyncWriteExt;
    let mut config = ServerConfig::new(ADMIN, EDGE, 3600, 60).unwrap();
    config.drain_timeout = Duration::from_millis(500);
    let mut srv = start_config(config).await;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.unwrap();
    // A request whose body never comes: its handler waits on it.
    stuck
        .write_all(
            format!(
                "POST /v1/logout HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _ = srv.stop.take().unwrap().send(());
    let done = tokio::time::timeout(Duration::from_secs(15), &mut srv.task).await;
    assert!(
        done.is_ok(),
        "serve did not return while a request was stuck"
    );
    drop(stuck);
}

/// A long-poll's wait runs out on the clock, not on wall time: with the clock paused,
/// a 60 s wait answers an empty delta at once.
#[tokio::test(start_paused = true)]
async fn a_long_poll_answers_an_empty_delta_when_its_wait_runs_out() {
    use crate::common::{edge_get, test_app};
    let app = test_app().await;
    let stream = app.state.store().stream().to_string();
    let started = tokio::time::Instant::now();
    let a = edge_get(
        &app.state,
        &format!("/v1/sync?since=0&stream={stream}&wait=60&edge=e"),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text);
    assert_eq!(a.json["changes"], serde_json::json!([]));
    assert_eq!(a.json["snapshot"], false);
    assert!(
        started.elapsed() >= Duration::from_secs(60),
        "held the whole wait"
    );
}

#[tokio::test]
async fn many_polls_of_one_since_all_get_the_change_from_one_store_read() {
    const POLLS: usize = 200;
    let srv = Arc::new(start().await);
    let snap = srv.sync("since=0&edge=e0").await;
    let polls: Vec<_> = (0..POLLS)
        .map(|i| {
            let srv = Arc::clone(&srv);
            let url = format!(
                "{}/v1/sync?since={}&stream={}&wait=30&edge=fan-{i}",
                srv.base, snap.version, snap.stream
            );
            tokio::spawn(async move {
                let resp = srv.http.get(url).bearer_auth(EDGE).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                assert_eq!(resp.headers()["content-type"], "application/json");
                resp.bytes().await.unwrap()
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.metric("epochgate_sync_long_polls_open").await != POLLS as u64 {
        assert!(Instant::now() < deadline, "the polls never all waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads = srv.metric("epochgate_sync_store_reads_total").await;
    srv.admin(
        reqwest::Method::POST,
        "/v1/tenants/acme/users/auth0%7C42/logout",
    )
    .await;
    let mut bodies = Vec::new();
    for p in polls {
        bodies.push(p.await.unwrap());
    }
    // One answer, byte for byte, for every poll that asked the same …
    assert!(bodies.iter().all(|b| *b == bodies[0]));
    let answer: SyncResponse = serde_json::from_slice(&bodies[0]).unwrap();
    assert_eq!(answer.version, snap.version + 1);
    assert!(!answer.snapshot);
    assert_eq!(answer.changes.len(), 1);
    // … from one store read, not one per poll.
    assert_eq!(
        srv.metric("epochgate_sync_store_reads_total").await,
        reads + 1
    );
    // Every poll's receipt was committed (in batches) before it was answered.
    let edges = srv.admin(reqwest::Method::GET, "/v1/edges").await;
    let seen = edges["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["id"].as_str().is_some_and(|id| id.starts_with("fan-")))
        .count();
    assert_eq!(seen, POLLS, "{edges}");
}
