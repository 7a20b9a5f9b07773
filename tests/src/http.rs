//! A minimal HTTP/1.1 client: one request per connection (`Connection: close`), the
//! request written byte for byte as given, the response read to EOF.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Lower-case names, in order; repeated headers appear once each.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request. Header values are raw bytes.
pub fn request(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> std::io::Result<Response> {
    request_bytes(host, port, method, path.as_bytes(), headers, body)
}

/// A GET of `path` on 127.0.0.1:`port` with `Authorization: Bearer <token>`.
pub fn get_bearer(port: u16, path: &str, token: &str) -> std::io::Result<Response> {
    let auth = format!("Bearer {token}");
    request(
        "127.0.0.1",
        port,
        "GET",
        path,
        &[("authorization", auth.as_bytes())],
        b"",
    )
}

/// Sends one request whose target is raw bytes (a non-UTF-8 path, say).
pub fn request_bytes(
    host: &str,
    port: u16,
    method: &str,
    path: &[u8],
    headers: &[(&str, &[u8])],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect((host, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} ").into_bytes();
    req.extend_from_slice(path);
    req.extend_from_slice(
        format!(" HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n").as_bytes(),
    );
    for (name, value) in headers {
        req.extend_from_slice(name.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(value);
        req.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        req.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    stream.write_all(&req)?;
    // Read until the response is complete by its own framing, not until EOF: Envoy holds
    // a `connection: close` socket open for `delayed_close_timeout` (1 s) after replying.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(response) = parse(&raw, method == "HEAD") {
            return Ok(response);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return parse_at_eof(&raw).ok_or_else(|| {
                std::io::Error::other(format!("bad response: {}", String::from_utf8_lossy(&raw)))
            });
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Status, headers, and where the body starts.
type Head = (u16, Vec<(String, String)>, usize);

fn parse_head(raw: &[u8]) -> Option<Head> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some((status, headers, end + 4))
}

/// A complete response, if `raw` holds one (by `content-length` or chunked framing).
fn parse(raw: &[u8], head_only: bool) -> Option<Response> {
    let (status, headers, body_start) = parse_head(raw)?;
    let body = &raw[body_start..];
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let body = if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        dechunk(body)?
    } else {
        let len: usize = header("content-length")?.parse().ok()?;
        body.get(..len)?.to_vec()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

/// A response delimited by the end of the connection.
fn parse_at_eof(raw: &[u8]) -> Option<Response> {
    let (status, headers, body_start) = parse_head(raw)?;
    Some(Response {
        status,
        headers,
        body: raw[body_start..].to_vec(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// A response read as it streams (server-sent events): the connection stays open.
pub struct Streaming {
    stream: TcpStream,
    pub received: Vec<u8>,
    /// When bytes last arrived.
    pub last_data: std::time::Instant,
}

impl Streaming {
    /// Sends a GET and returns once the response head has arrived.
    pub fn open(
        host: &str,
        port: u16,
        path: &str,
        headers: &[(&str, &[u8])],
    ) -> std::io::Result<Self> {
        let mut stream = TcpStream::connect((host, port))?;
        let mut req = format!("GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\n").into_bytes();
        for (name, value) in headers {
            req.extend_from_slice(name.as_bytes());
            req.extend_from_slice(b": ");
            req.extend_from_slice(value);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"\r\n");
        stream.write_all(&req)?;
        stream.set_read_timeout(Some(Duration::from_millis(50)))?;
        let mut s = Streaming {
            stream,
            received: Vec::new(),
            last_data: std::time::Instant::now(),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !s.received.windows(4).any(|w| w == b"\r\n\r\n") {
            if std::time::Instant::now() > deadline || !s.poll()? {
                return Err(std::io::Error::other("no response head"));
            }
        }
        Ok(s)
    }

    /// Reads what has arrived; `Ok(false)` once the stream has ended (EOF or reset).
    pub fn poll(&mut self) -> std::io::Result<bool> {
        let mut buf = [0u8; 4096];
        match self.stream.read(&mut buf) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.received.extend_from_slice(&buf[..n]);
                self.last_data = std::time::Instant::now();
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// How many SSE events (`data: ` lines) arrived so far.
    pub fn events(&self) -> usize {
        self.received.windows(6).filter(|w| w == b"data: ").count()
    }

    pub fn status(&self) -> Option<u16> {
        std::str::from_utf8(self.received.get(..12)?)
            .ok()?
            .split(' ')
            .nth(1)?
            .parse()
            .ok()
    }
}
