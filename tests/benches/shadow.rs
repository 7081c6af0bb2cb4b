//! Shadow cost figure: live ingest over real HTTP (one scorer and one
//! segment binding, 8 clients) with and without a candidate in shadow on
//! both bindings, in one run, phases alternating (off, on, off, on) so a
//! busy machine weighs on both alike; on SQLite and on PostgreSQL.
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench shadow`
//! Size: NACHFASS_BENCH_EVENTS events per phase (default 2000).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nachfass::api::{AppState, app};
use nachfass::clock::SystemClock;
use nachfass::ingest::Pipeline;
use nachfass::plugins::Plugins;
use nachfass::runtime::Registry;
use nachfass::scoring::StageThresholds;
use nachfass::shadow::{self, ShadowRequest};
use nachfass::store::{BindingDef, BindingKind, Scope, Store};
use nachfass_tests::{Guest, guests, runtime};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn post(port: u16, key: &str, body: &str) -> u16 {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Sends `events` events from 8 clients; returns how long they took.
async fn phase(port: u16, key: &str, phase: usize, events: usize) -> Duration {
    let workers = 8;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let key = key.to_owned();
        tasks.push(tokio::task::spawn_blocking(move || {
            for i in (w..events).step_by(workers) {
                let body = format!(
                    r#"{{"kind":"page.visited","email":"p{}@bench.example","client_event_id":"s-{phase}-{i}"}}"#,
                    i % 500
                );
                assert_eq!(post(port, &key, &body), 201);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    started.elapsed()
}

async fn upload(plugins: &Plugins, guest: Guest, name: &str, version: &str, activate: bool) {
    let mut manifest = guest.manifest();
    manifest.name = name.into();
    manifest.version = version.into();
    plugins
        .upload(guest.bytes(), manifest, activate, "bench")
        .await
        .unwrap();
}

async fn bench(dialect: &str, url: &str) {
    let store = Store::connect(url).await.unwrap();
    let (_, key) = store
        .create_api_key("bench", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = Pipeline {
        store: store.clone(),
        registry: Arc::new(Registry::new(runtime())),
        clock: Arc::new(SystemClock),
        stages: StageThresholds::default(),
    };
    let plugins = Plugins::new(
        store.clone(),
        pipeline.registry.clone(),
        pipeline.clock.clone(),
    );
    upload(&plugins, guests::VERSION_TAG, "version-tag", "1.0.0", true).await;
    upload(
        &plugins,
        guests::VERSION_TAG_NEXT,
        "version-tag",
        "2.0.0",
        false,
    )
    .await;
    upload(&plugins, guests::HELLO, "rule", "1.0.0", true).await;
    upload(&plugins, guests::INACTIVE_DAYS, "rule", "2.0.0", false).await;
    for (name, kind, plugin) in [
        ("tag", BindingKind::Scorer, "version-tag"),
        ("has-email", BindingKind::Segment, "rule"),
    ] {
        let def = BindingDef {
            name: name.into(),
            kind,
            plugin: plugin.into(),
            config: Default::default(),
            allow_http: Vec::new(),
            limits: Default::default(),
            paused: None,
            rate: None,
            version: None,
        };
        store.create_binding(&def, 0).await.unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(
        axum::serve(listener, app(AppState::new(pipeline.clone(), None))).into_future(),
    );
    let events = env("NACHFASS_BENCH_EVENTS", 2000);
    let request = ShadowRequest {
        version: "2.0.0".into(),
        plugin: None,
    };
    let (mut off, mut on) = (Duration::ZERO, Duration::ZERO);
    for round in 0..4 {
        let shadowed = round % 2 == 1;
        if shadowed {
            for binding in ["tag", "has-email"] {
                shadow::start(&pipeline, binding, &request, "bench")
                    .await
                    .unwrap();
            }
        }
        let took = phase(port, &key, round, events).await;
        if shadowed {
            on += took;
            for binding in ["tag", "has-email"] {
                let report = shadow::discard(&pipeline, binding).await.unwrap();
                assert!(report.calls >= i64::try_from(events).unwrap());
            }
        } else {
            off += took;
        }
        println!(
            "{dialect}: phase {round} ({}): {events} events in {:.2} s ({:.0} events/s)",
            if shadowed { "shadow on" } else { "shadow off" },
            took.as_secs_f64(),
            events as f64 / took.as_secs_f64()
        );
    }
    println!(
        "{dialect}: live ingest with shadows on both bindings costs {:.2}x the time without ({:.2} s against {:.2} s for {} events each)",
        on.as_secs_f64() / off.as_secs_f64(),
        on.as_secs_f64(),
        off.as_secs_f64(),
        2 * events
    );
    server.abort();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    bench(
        "sqlite",
        &format!("sqlite://{}", dir.path().join("bench.db").display()),
    )
    .await;
    match std::env::var("NACHFASS_TEST_POSTGRES_URL") {
        Ok(base) => {
            let name = format!("nachfass_bench_{}", std::process::id());
            let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                .await
                .unwrap();
            use sqlx::Executor;
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap();
            let (server, _) = base.rsplit_once('/').unwrap();
            bench("postgres", &format!("{server}/{name}")).await;
            nachfass_tests::drop_bench_database(&mut admin, &name).await;
        }
        Err(_) => println!(
            "postgres: skipped; set NACHFASS_TEST_POSTGRES_URL (tests/support/postgres.sh prints one)"
        ),
    }
}
