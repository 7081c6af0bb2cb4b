//! Ingest figures: events per second over real HTTP with one scorer and
//! ten segment bindings, as single-event requests and as batches, on
//! SQLite and on PostgreSQL. (The segment rebuild has `--bench rebuild`.)
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench ingest`
//! Sizes: NACHFASS_BENCH_EVENTS (single-event requests, default 20000),
//! NACHFASS_BENCH_BATCHES (requests of 1,000 events, default 50).
//! NACHFASS_BENCH_NO_BINDINGS=1 runs the same requests with no binding at
//! all, for what the plugins cost end to end.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::Instant;

use nachfass::api::{AppState, app};
use nachfass::clock::SystemClock;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::store::{BindingDef, BindingKind, Scope};
use nachfass_tests::{guests, runtime};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Sends `requests` bodies from `clients` connections at once; the
/// seconds it took and how many were not answered `expected`.
async fn send_all(
    port: u16,
    key: &str,
    clients: usize,
    requests: Vec<String>,
    expected: u16,
) -> (f64, usize) {
    let requests = Arc::new(requests);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let (key, requests) = (key.to_owned(), requests.clone());
        tasks.push(tokio::task::spawn_blocking(move || {
            let mut connection = nachfass_tests::client::KeepAlive::open(port);
            (client..requests.len())
                .step_by(clients)
                .filter(|&i| connection.post(&key, &requests[i]) != expected)
                .count()
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.unwrap();
    }
    (started.elapsed().as_secs_f64(), failed)
}

fn event_json(i: usize, contacts: usize, tag: &str) -> String {
    let kind = ["email.opened", "email.clicked", "page.visited", "download"][i % 4];
    format!(
        r#"{{"kind":"{kind}","email":"p{}@bench.example","client_event_id":"{tag}-{i}"}}"#,
        i % contacts
    )
}

async fn bench(dialect: &str, registry: Arc<Registry>) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, key) = store
        .create_api_key("bench", &[Scope::Admin], 0)
        .await
        .unwrap();
    let with_bindings = std::env::var_os("NACHFASS_BENCH_NO_BINDINGS").is_none();
    let bindings = if with_bindings {
        "1 scorer + 10 segments"
    } else {
        "no bindings"
    };
    if with_bindings {
        let scorer = BindingDef {
            name: "engagement".into(),
            kind: BindingKind::Scorer,
            plugin: "engagement".into(),
            config: Default::default(),
            allow_http: Vec::new(),
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        };
        store.create_binding(&scorer, 0).await.unwrap();
        for i in 0..10 {
            let config = [
                ("attribute", "contact.score".to_owned()),
                ("op", "gt".to_owned()),
                ("value", (i * 5).to_string()),
            ];
            let def = BindingDef {
                name: format!("score-over-{}", i * 5),
                kind: BindingKind::Segment,
                plugin: "attribute-match".into(),
                config: config.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
                allow_http: Vec::new(),
                limits: Default::default(),
                paused: None,
                rate: None,
                version: None,
            };
            store.create_binding(&def, 0).await.unwrap();
        }
    }
    let pipeline = nachfass_tests::world::pipeline(store.clone(), registry, Arc::new(SystemClock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        axum::serve(listener, app(AppState::new(pipeline.clone(), None))).into_future(),
    );

    // Single-event requests from 32 clients: the node stores whatever
    // arrives together in one transaction (group commit) and applies it
    // as one batch.
    let events = env("NACHFASS_BENCH_EVENTS", 20_000);
    let clients = 32;
    let singles: Vec<String> = (0..events).map(|i| event_json(i, 5000, "s")).collect();
    let (seconds, failed) = send_all(port, &key, clients, singles, 201).await;
    println!(
        "{dialect}: {events} single-event requests, {bindings}, {clients} clients: {:.0} events/s ({seconds:.2} s, {failed} failed)",
        events as f64 / seconds
    );
    // Batches of 1,000 events (new and known contacts mixed), 2 clients.
    let batches = env("NACHFASS_BENCH_BATCHES", 50);
    let bodies: Vec<String> = (0..batches)
        .map(|b| {
            let items: Vec<String> = (0..1000)
                .map(|i| event_json(b * 1000 + i, 50_000, "b"))
                .collect();
            format!(r#"{{"events":[{}]}}"#, items.join(","))
        })
        .collect();
    let (seconds, failed) = send_all(port, &key, 2, bodies, 201).await;
    println!(
        "{dialect}: {batches} batches of 1,000 events, {bindings}, 2 clients: {:.0} events/s ({seconds:.2} s, {failed} failed)",
        (batches * 1000) as f64 / seconds
    );
    server.abort();
    temp.cleanup(store).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = Arc::new(Registry::new(runtime()));
    for guest in [guests::ENGAGEMENT, guests::ATTRIBUTE_MATCH] {
        registry
            .install_file(&guest.packed(), Activation::Now)
            .await
            .unwrap();
    }
    bench("sqlite", registry.clone()).await;
    if std::env::var("NACHFASS_TEST_POSTGRES_URL").is_ok() {
        bench("postgres", registry).await;
    } else {
        println!(
            "postgres: skipped; set NACHFASS_TEST_POSTGRES_URL (tests/support/postgres.sh prints one)"
        );
    }
}
