//! Helpers for the integration tests: the guest components built by
//! `build.rs`, packed with their manifests once per test process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use nachfass::runtime::signature::{SignaturePolicy, TrustPolicy};
use nachfass::runtime::{Manifest, Runtime, RuntimeConfig};

pub mod client;
pub mod languages;
pub mod sdk_records;
pub mod server;
pub mod smtp;
pub mod world;

/// A guest crate and the component cargo built from it.
#[derive(Clone, Copy, Debug)]
pub struct Guest {
    pub wasm: &'static str,
    pub crate_dir: &'static str,
}

/// Every guest crate in `plugins/`, by crate name in upper snake case.
pub mod guests {
    use super::Guest;
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

impl Guest {
    /// The manifest from the crate's `Cargo.toml`.
    #[track_caller]
    pub fn manifest(&self) -> Manifest {
        nachfass::pack::manifest_from_crate(Path::new(self.crate_dir))
            .expect("guest manifests are valid")
    }

    /// The raw component, without a manifest section.
    #[track_caller]
    pub fn bytes(&self) -> Vec<u8> {
        std::fs::read(self.wasm).expect("build.rs built it")
    }

    /// The component with its manifest embedded, as `nachfass plugin build`
    /// writes it: one file in a directory shared by this test process.
    #[track_caller]
    pub fn packed(&self) -> PathBuf {
        static PACKED: OnceLock<Mutex<HashMap<&'static str, PathBuf>>> = OnceLock::new();
        static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
        let dir = DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"));
        let mut packed = PACKED
            .get_or_init(Default::default)
            .lock()
            .expect("not poisoned");
        packed
            .entry(self.wasm)
            .or_insert_with(|| {
                let manifest = self.manifest();
                let path = dir
                    .path()
                    .join(format!("{}-{}.wasm", manifest.name, manifest.version));
                nachfass::pack::pack(Path::new(self.wasm), &manifest, &path)
                    .expect("packing works");
                path
            })
            .clone()
    }
}

/// A runtime with default limits, sharing one artifact cache across test
/// processes and runs so each component compiles once.
#[track_caller]
pub fn runtime() -> Runtime {
    runtime_with_trust(None)
}

#[track_caller]
fn runtime_with_trust(trust: Option<TrustPolicy>) -> Runtime {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache),
        trust,
        ..RuntimeConfig::default()
    })
    .expect("runtime starts")
}

/// A runtime like [`runtime`] that enforces `signatures` with the keys
/// `store` trusts, as `serve` does.
pub async fn signing_runtime(
    store: &nachfass::store::Store,
    signatures: SignaturePolicy,
) -> Runtime {
    let runtime = runtime_with_trust(Some(TrustPolicy {
        signatures,
        ..TrustPolicy::default()
    }));
    store
        .reload_trust(&runtime)
        .await
        .expect("trusted keys load");
    runtime
}

/// Runs `nachfass <args>` in-process; its result and what it printed.
pub async fn nachfass_cli(args: &[&str]) -> (Result<(), nachfass::cli::CliError>, String) {
    use clap::Parser;
    let cli =
        nachfass::cli::Cli::try_parse_from(std::iter::once("nachfass").chain(args.iter().copied()))
            .expect("valid arguments");
    let mut out = Vec::new();
    let result = nachfass::cli::run(cli, &mut out).await;
    (result, String::from_utf8(out).expect("utf-8 output"))
}

/// Milliseconds in a day.
pub const DAY: i64 = 24 * 60 * 60 * 1000;

/// One request the [`HttpSink`] received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that records requests and answers
/// each with a fixed status: the receiving end of a webhook.
pub struct HttpSink {
    pub addr: std::net::SocketAddr,
    received: std::sync::Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpSink {
    pub async fn start(status: u16) -> HttpSink {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("bound");
        let received = std::sync::Arc::new(Mutex::new(Vec::new()));
        let log = received.clone();
        let task = tokio::spawn(async move {
            // Bounded: a test never sends more than a few requests.
            for n in 0..64 {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let head_end = loop {
                    let Ok(read) = socket.read(&mut buf).await else {
                        break None;
                    };
                    if read == 0 {
                        break None;
                    }
                    data.extend_from_slice(&buf[..read]);
                    if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some(end);
                    }
                };
                let Some(head_end) = head_end else { continue };
                let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
                let mut lines = head.lines();
                let request_line: Vec<&str> = lines.next().unwrap_or_default().split(' ').collect();
                let headers: Vec<(String, String)> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                    .collect();
                let length: usize = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0);
                let mut body = data[head_end + 4..].to_vec();
                while body.len() < length {
                    let Ok(read) = socket.read(&mut buf).await else {
                        break;
                    };
                    if read == 0 {
                        break;
                    }
                    body.extend_from_slice(&buf[..read]);
                }
                log.lock().expect("not poisoned").push(Recorded {
                    method: request_line.first().copied().unwrap_or_default().to_owned(),
                    path: request_line.get(1).copied().unwrap_or_default().to_owned(),
                    headers,
                    body,
                });
                let response = format!(
                    "HTTP/1.1 {status} Sink\r\nX-Request-Id: rq-{n}\r\nRetry-After: 9\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        HttpSink {
            addr,
            received,
            task,
        }
    }

    pub fn received(&self) -> Vec<Recorded> {
        self.received.lock().expect("not poisoned").clone()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A counter of this process's metrics (a label-free one), as `/metrics`
/// shows it; 0 before it first counts or without a recorder.
pub fn counter(name: &str) -> f64 {
    nachfass::metrics::install()
        .map(|handle| handle.render())
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A fresh database on each dialect, as URLs: an SQLite file in a temp dir
/// and a new database on the PostgreSQL server at
/// `NACHFASS_TEST_POSTGRES_URL` (`tests/run` starts one).
pub async fn databases() -> Vec<(&'static str, String, TempStore)> {
    let (sqlite_url, sqlite) = sqlite_database();
    let (postgres_url, postgres) = postgres_database().await;
    vec![
        ("sqlite", sqlite_url, sqlite),
        ("postgres", postgres_url, postgres),
    ]
}

/// A fresh SQLite database file in a temp dir, as a URL.
pub fn sqlite_database() -> (String, TempStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("nachfass.db").display());
    (url, TempStore::Sqlite(dir))
}

/// A new database on the PostgreSQL server at `NACHFASS_TEST_POSTGRES_URL`.
pub async fn postgres_database() -> (String, TempStore) {
    use sqlx::Executor;
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let base = std::env::var("NACHFASS_TEST_POSTGRES_URL").expect(
        "NACHFASS_TEST_POSTGRES_URL is not set: run `tests/run`, which starts PostgreSQL, or point it at a server",
    );
    sqlx::any::install_default_drivers();
    let name = format!(
        "nt_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
        .await
        .expect("postgres reachable");
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create test database");
    let (server, _) = base.rsplit_once('/').expect("URL has a database");
    (
        format!("{server}/{name}"),
        TempStore::Postgres { base, name },
    )
}

/// A fresh database of one dialect (`"sqlite"` or `"postgres"`), as a URL:
/// for tests stamped once per dialect.
pub async fn database(dialect: &str) -> (String, TempStore) {
    match dialect {
        "sqlite" => sqlite_database(),
        _ => postgres_database().await,
    }
}

/// A fresh, migrated store of one dialect (see [`database`]).
pub async fn store(dialect: &str) -> (nachfass::store::Store, TempStore) {
    let (url, temp) = database(dialect).await;
    let store = nachfass::store::Store::connect(&url)
        .await
        .expect("store connects");
    (store, temp)
}

/// A fresh store on each dialect (see [`databases`]). Every store test runs
/// against both.
pub async fn stores() -> Vec<(&'static str, nachfass::store::Store, TempStore)> {
    let mut stores = Vec::new();
    for (dialect, url, temp) in databases().await {
        let store = nachfass::store::Store::connect(&url)
            .await
            .expect("store connects");
        stores.push((dialect, store, temp));
    }
    stores
}

/// Keeps a test store's backing alive; PostgreSQL databases are dropped by
/// [`TempStore::cleanup`].
pub enum TempStore {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, name: String },
}

impl TempStore {
    pub async fn cleanup(self, store: nachfass::store::Store) {
        use sqlx::Executor;
        store.pool().close().await;
        if let TempStore::Postgres { base, name } = self
            && let Ok(mut admin) = <sqlx::AnyConnection as sqlx::Connection>::connect(&base).await
        {
            let drop = sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}"));
            let _ = admin.execute(drop).await;
        }
    }
}

/// Stamps a test written as `async fn name(dialect: &'static str)` once per
/// database, as `name::sqlite` and `name::postgres`: each dialect is its own
/// test case, so a failure on one never hides the other's result.
///
/// ```text
/// nachfass_tests::on_both_databases!(#[tokio::test] contacts_merge);
/// ```
#[macro_export]
macro_rules! on_both_databases {
    ($(#[$attribute:meta])* $test:ident) => {
        mod $test {
            $(#[$attribute])*
            async fn sqlite() {
                super::$test("sqlite").await;
            }

            $(#[$attribute])*
            async fn postgres() {
                super::$test("postgres").await;
            }
        }
    };
}

/// Drops a bench's database. Autovacuum may still be working on a freshly
/// filled one, and only a superuser may end it: the drop is tried again for
/// a minute, then the database is left with a note rather than failing a
/// run whose figures are already printed.
pub async fn drop_bench_database(admin: &mut sqlx::AnyConnection, name: &str) {
    use sqlx::Executor;
    for _ in 0..60 {
        let drop = sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        match admin.execute(drop).await {
            Ok(_) => return,
            Err(_) => tokio::time::sleep(std::time::Duration::from_secs(1)).await,
        }
    }
    eprintln!("could not drop database {name} (still in use); drop it by hand");
}
