//! `nachfass serve` as a real process under slow clients: half-sent heads,
//! stalled bodies and idle connections are closed after their timeouts,
//! the connection cap holds, and the server keeps answering others. The
//! connection layer does not touch the database, so one dialect (SQLite)
//! is enough here.

#![allow(clippy::unwrap_used)]

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nachfass_tests::server::{Server, create_admin_key, free_port, http};

/// The sockets the process holds open (the listener and connections;
/// SQLite's files come and go with its pool and are not counted).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Reads until the server closes the connection; what it sent first.
/// Fails if the server keeps the connection open for two minutes.
fn until_closed(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept a slow connection open: {e}"),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

#[tokio::test]
async fn slow_clients_are_cut_off_and_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("nachfass.db").display());
    let key = create_admin_key(&database);
    let server = Server::start(
        &database,
        dir.path(),
        free_port(),
        &[
            "--max-connections",
            "16",
            "--header-timeout-secs",
            "1",
            "--body-timeout-secs",
            "1",
        ],
    );
    let port = server.port;
    let (status, _) = http(port, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
    let before = open_sockets(server.pid());

    // 60 slow clients, far more than the cap: half-sent heads, stalled
    // bodies (also on a provider callback), and idle keep-alive.
    let mut slow = Vec::new();
    for n in 0..60 {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let partial = match n % 3 {
            0 => "GET /v1/contacts HTTP/1.1\r\nHost: localhost\r\nX-Slow: ".to_owned(),
            1 => "POST /v1/callbacks/mail-hook HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789".to_owned(),
            _ => format!(
                "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{{\"kind\":"
            ),
        };
        stream.write_all(partial.as_bytes()).unwrap();
        slow.push((n, stream));
    }
    let mut idle = TcpStream::connect(("127.0.0.1", port)).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();

    // Others are still served (once the slow ones are cut off).
    let body = r#"{"kind":"signup","email":"ada@acme.example"}"#;
    let (status, answer) = http(port, "POST", "/v1/events", Some(&key), Some(body));
    assert_eq!(status, 201, "{answer}");

    for (n, mut stream) in slow {
        let seen = until_closed(&mut stream);
        if n % 3 != 0 {
            // A stalled body gets an answer before the close.
            assert!(
                seen.starts_with("HTTP/1.1 408") && seen.contains(r#""code":"timeout""#),
                "{n}: {seen}"
            );
        }
    }
    let answered = until_closed(&mut idle);
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");

    // Everything was released: no socket is left over.
    let (status, _) = http(port, "GET", "/healthz", None, None);
    assert_eq!(status, 200);
    // (The last request's socket may close a moment after its answer.)
    let mut after = open_sockets(server.pid());
    for _ in 0..300 {
        if after <= before {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        after = open_sockets(server.pid());
    }
    assert!(
        after <= before,
        "open sockets: {before} before, {after} after"
    );
}

#[tokio::test]
async fn oversized_heads_get_the_json_error_shape_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("nachfass.db").display());
    let server = Server::start(&database, dir.path(), free_port(), &[]);
    let long = format!("/v1/contacts?q={}", "a".repeat(9000));
    let (status, error) = http(server.port, "GET", &long, None, None);
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (414, Some("uri_too_long"))
    );

    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let big = "v".repeat(40 << 10);
    write!(
        stream,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let seen = until_closed(&mut stream);
    assert!(
        seen.starts_with("HTTP/1.1 431") && seen.contains(r#""code":"headers_too_large""#),
        "{seen}"
    );
    let (status, error) = http(server.port, "GET", "/no/such/route", None, None);
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("no_route"))
    );
}
