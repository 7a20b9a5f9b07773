//! A small upstream: by default it answers every request with 200 and a JSON echo of its
//! path and the identity headers; it can also serve a fixed, changeable document (an
//! IdP's JWKS) or a server-sent-events stream. It records each request's headers for the
//! test to inspect.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream answers.
#[derive(Debug, Clone, Default)]
pub enum Reply {
    /// 200 JSON: `{"path", "user", "tenant", "session"}`.
    #[default]
    Echo,
    /// 200 with this body (shared: the test may change it while running).
    Document {
        content_type: &'static str,
        body: Arc<Mutex<String>>,
    },
    /// 200 `text/event-stream`: `data: <n>` every `interval_ms`, `events` times.
    Sse { interval_ms: u64, events: u32 },
}

pub struct Upstream {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Listens on a free port; the accept thread lives as long as the test process (the
    /// listener is closed when the process exits).
    pub fn start() -> Self {
        Self::start_with(Reply::Echo)
    }

    pub fn start_with(reply: Reply) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let record = Arc::clone(&record);
                let reply = reply.clone();
                std::thread::spawn(move || serve(stream, &record, &reply));
            }
        });
        Upstream { port, seen }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Seen> {
        self.seen.lock().unwrap().last().cloned()
    }
}

fn serve(stream: std::net::TcpStream, record: &Mutex<Vec<Seen>>, reply: &Reply) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let Some(request_line) = read_line(&mut reader) else {
            return;
        };
        let method = request_line.split(' ').next().unwrap_or("").to_string();
        let path = request_line.split(' ').nth(1).unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        loop {
            let Some(line) = read_line(&mut reader) else {
                return;
            };
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((n, v)) = line.split_once(':') {
                let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
                if n == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                }
                headers.push((n, v));
            }
        }
        let mut body = vec![0; content_length];
        if std::io::Read::read_exact(&mut reader, &mut body).is_err() {
            return;
        }
        let seen = Seen {
            method,
            path,
            headers,
            body,
        };
        let (content_type, body) = match reply {
            Reply::Echo => (
                "application/json",
                serde_json::json!({
                    "path": seen.path,
                    "user": seen.header("x-epochgate-user"),
                    "tenant": seen.header("x-epochgate-tenant"),
                    "session": seen.header("x-epochgate-session"),
                    "actor": seen.header("x-epochgate-actor"),
                })
                .to_string(),
            ),
            Reply::Document { content_type, body } => (*content_type, body.lock().unwrap().clone()),
            Reply::Sse {
                interval_ms,
                events,
            } => {
                record.lock().unwrap().push(seen);
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for n in 0..*events {
                    let event = format!("data: {n}\n\n");
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    if writer.write_all(chunk.as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(*interval_ms));
                }
                let _ = writer.write_all(b"0\r\n\r\n");
                continue;
            }
        };
        record.lock().unwrap().push(seen);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// One line, bytes decoded lossily: header values may hold any byte.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(String::from_utf8_lossy(&line).into_owned()),
    }
}
