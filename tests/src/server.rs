//! `nachfass` as a real child process, and a small blocking HTTP client
//! for talking to it on 127.0.0.1.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The debug binary `tests/run` builds before the tests: beside the test
/// executable's `deps/` folder, wherever the target directory is
/// (`CARGO_TARGET_DIR` included).
pub fn binary() -> PathBuf {
    let path = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("nachfass")))
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/nachfass")
        });
    assert!(
        path.exists(),
        "{} is missing: run `tests/run` or `cargo build -p nachfass` first",
        path.display()
    );
    path
}

/// A port on 127.0.0.1 that was free a moment ago, for a child process
/// to listen on. Never the same one twice in a test process: the kernel
/// may hand a port it just freed to the next test's `bind`, and then two
/// tests running side by side would start their servers on one port, the
/// second server fail to listen, and its test talk to the first's.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port on 127.0.0.1");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Creates an admin key with `nachfass keys create` and returns its secret.
pub fn create_admin_key(database: &str) -> String {
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
        .expect("nachfass runs");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    String::from_utf8(created.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A running `nachfass serve`; killed (SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    /// Starts `nachfass serve` with its plugins and cache under `dir` and
    /// waits until it listens. `extra` are more `serve` arguments.
    pub fn start(database: &str, dir: &Path, port: u16, extra: &[&str]) -> Server {
        let log = std::fs::File::create(dir.join(format!("serve-{port}.log"))).expect("log file");
        let child = Command::new(binary())
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--database",
                database,
            ])
            .arg("--plugins-dir")
            .arg(dir.join("plugins.d"))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nachfass serve starts");
        let server = Server { child, port };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// The process id (to count its open files).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flushing — a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns the status and the JSON body (`Null` if
/// none).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let body = body.unwrap_or("");
    http_bytes(port, method, path, key, "application/json", body.as_bytes())
}

/// One HTTP/1.1 request with a body of any type (a component upload).
pub fn http_bytes(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let auth = key
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("server reachable");
    stream
        // Generous: a debug build on two cores under load is slow, not stuck.
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout set");
    stream.write_all(&request).expect("request sent");
    // Read the head, then exactly Content-Length bytes: some servers
    // (chromedriver) keep the connection open whatever we ask.
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let read = stream.read(&mut buf).expect("response read");
        assert!(read > 0, "the connection closed before the response head");
        data.extend_from_slice(&buf[..read]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("an HTTP status line");
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = data[head_end + 4..].to_vec();
    match length {
        Some(length) => {
            while body.len() < length {
                let read = stream.read(&mut buf).expect("response read");
                if read == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..read]);
            }
        }
        None => {
            stream.read_to_end(&mut body).expect("response read");
        }
    }
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}
