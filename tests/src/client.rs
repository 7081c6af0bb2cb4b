//! One HTTP client for in-process tests: a request to a router as the
//! server would get it, and the answer as JSON.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Sends one request; `key` goes in as a bearer token. The answer is its
/// JSON, `Null` when empty, or its text as a JSON string when it is not
/// JSON (`/metrics`).
pub async fn request(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Body,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request.body(body).expect("a valid request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, json)
}

/// A JSON request (no body when `body` is `None`).
pub async fn json(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    match body {
        Some(body) => {
            request(
                router,
                method,
                path,
                key,
                Some("application/json"),
                Body::from(body.to_string()),
            )
            .await
        }
        None => request(router, method, path, key, None, Body::empty()).await,
    }
}

/// One client's HTTP/1.1 connection to a server on 127.0.0.1, kept alive
/// across requests as a real sender's would be (the benches' load).
pub struct KeepAlive {
    stream: std::io::BufReader<std::net::TcpStream>,
}

impl KeepAlive {
    pub fn open(port: u16) -> KeepAlive {
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the server listens");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        KeepAlive {
            stream: std::io::BufReader::new(stream),
        }
    }

    /// Posts `body` to `/v1/events`; the answer's status.
    pub fn post(&mut self, key: &str, body: &str) -> u16 {
        use std::io::{BufRead, Read, Write};
        let request = format!(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .expect("the request is sent");
        let mut status = 0;
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            self.stream
                .read_line(&mut line)
                .expect("the answer is read");
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .expect("a status line");
            } else if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a Content-Length");
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).expect("the body is read");
        status
    }
}
