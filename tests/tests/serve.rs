//! `nachfass serve` as a real process: an SQLite file, a key from
//! `nachfass keys create`, events over real HTTP on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nachfass");
    assert!(
        path.exists(),
        "{} is missing: run `tests/run` or `cargo build -p nachfass` first",
        path.display()
    );
    path
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, request: &str) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn serve_answers_over_http_on_sqlite_and_postgres() {
    for (dialect, database, temp) in nachfass_tests::databases().await {
        serve_answers_over_http(&database);
        let store = nachfass::store::Store::connect(&database).await.unwrap();
        assert_eq!(store.count_contacts().await.unwrap(), 1, "{dialect}");
        temp.cleanup(store).await;
    }
}

fn serve_answers_over_http(database: &str) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let created = Command::new(binary())
        .args([
            "keys",
            "create",
            "--name",
            "admin",
            "--scope",
            "admin",
            "--database",
            database,
        ])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("nf_"), "{key}");

    let _server = Server(
        Command::new(binary())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                database,
            ])
            .arg("--plugins-dir")
            .arg(dir.path().join("plugins.d"))
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let body = r#"{"kind":"signup","email":"Ada@Acme.example"}"#;
    let post = |auth: &str| {
        format!(
            "POST /v1/events HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, answer) = http(port, &post(&format!("Authorization: Bearer {key}\r\n")));
    assert_eq!(status, 201, "{answer}");
    let contact = answer["event"]["contact_id"].as_str().unwrap().to_owned();
    let (status, _) = http(port, &post(""));
    assert_eq!(status, 401);
    let get = format!(
        "GET /v1/contacts/{contact} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    );
    let (status, stored) = http(port, &get);
    assert_eq!(
        (status, stored["email"].as_str()),
        (200, Some("ada@acme.example"))
    );
}
