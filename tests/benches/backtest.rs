//! Backtest figure: how long a backtest of a candidate scorer takes over
//! N events of M contacts (default 1M events of 100k contacts, spread over
//! 30 days), on SQLite and PostgreSQL: version-tag 1.0.0 live, 2.0.0 the
//! candidate, both called for every event. The history is written with SQL
//! (not scored live), so only the backtest is timed.
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench backtest`
//! Sizes: NACHFASS_BENCH_CONTACTS (default 100000), NACHFASS_BENCH_EVENTS (default 1000000);
//! NACHFASS_BENCH_ONLY=sqlite or postgres runs one database.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::manifest::embed;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::{Dialect, Scope, Store};
use nachfass_tests::{database, guests, runtime};
use serde_json::{Value, json};
use sqlx::Executor;
use tower::ServiceExt;

const DAY: i64 = 86_400_000;
/// 2026-11-23 00:00 UTC: "now" for the bench.
const NOW: i64 = 1_795_392_000_000;

fn env(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn seed(store: &Store, contacts: i64, events: i64) {
    let (series, pad) = match store.dialect() {
        Dialect::Sqlite => (
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})",
            "printf('%010d', {x})",
        ),
        Dialect::Postgres => (
            "WITH n(i) AS (SELECT generate_series(0::bigint, {last}))",
            "lpad(({x})::text, 10, '0')",
        ),
    };
    let series = |last: i64| series.replace("{last}", &last.to_string());
    let pad = |x: &str| pad.replace("{x}", x);
    let statements = [
        format!(
            "{} INSERT INTO contacts (id, email, created_at, updated_at) \
             SELECT 'c_' || {}, 'user' || {} || '@bench.example', 0, 0 FROM n",
            series(contacts - 1),
            pad("i"),
            pad("i")
        ),
        format!(
            "{} INSERT INTO events (id, contact_id, kind, at, properties, received_at) \
             SELECT 'e_' || {}, 'c_' || {}, CASE i % 4 WHEN 0 THEN 'page.visited' WHEN 1 THEN 'email.opened' WHEN 2 THEN 'download' ELSE 'purchase' END, \
                    {NOW} - (i % 2592000) * 1000, '{{}}', {NOW} FROM n",
            series(events - 1),
            pad("i"),
            pad(&format!("i % {contacts}"))
        ),
    ];
    for sql in statements {
        store
            .pool()
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .unwrap();
    }
}

fn tag(version: u8) -> Vec<u8> {
    let guest = if version == 1 {
        guests::VERSION_TAG
    } else {
        guests::VERSION_TAG_NEXT
    };
    let mut manifest = guest.manifest();
    manifest.name = "version-tag".into();
    embed(&guest.bytes(), &manifest).unwrap()
}

async fn call(router: &axum::Router, key: &str, path: &str, body: Vec<u8>, json: bool) -> Value {
    let mut request = Request::builder()
        .method("POST")
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    if json {
        request = request.header("content-type", "application/json");
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {value}");
    value
}

async fn bench(dialect: &str, contacts: i64, events: i64) {
    let (url, temp) = database(dialect).await;
    let store = Store::connect(&url).await.unwrap();
    let (_, key) = store
        .create_api_key("bench", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(ManualClock::new(NOW)),
    );
    let journeys = Journeys::new(pipeline, Policy::default());
    let router = app(AppState::with_journeys(journeys.clone(), None));
    call(&router, &key, "/v1/plugins", tag(1), false).await;
    call(&router, &key, "/v1/plugins?activate=false", tag(2), false).await;
    let binding = json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" });
    call(
        &router,
        &key,
        "/v1/bindings",
        binding.to_string().into_bytes(),
        true,
    )
    .await;
    let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
    scheduler.run_until_idle().await.unwrap();

    let seeded = Instant::now();
    seed(&store, contacts, events).await;
    let seeding = seeded.elapsed();
    let request = json!({ "version": "2.0.0", "from": NOW - 31 * DAY, "to": NOW + 1 });
    let started = Instant::now();
    let queued = call(
        &router,
        &key,
        "/v1/plugins/version-tag/backtests",
        request.to_string().into_bytes(),
        true,
    )
    .await;
    scheduler.run_until_idle().await.unwrap();
    let took = started.elapsed();
    let done = store
        .backtest(queued["id"].as_str().unwrap())
        .await
        .unwrap();
    let report = done.report.unwrap_or(Value::Null);
    assert_eq!(report["events"].as_i64(), Some(events), "{report}");
    // Time inside plugin calls (instance, sandbox and guest), summed over
    // the replay tasks, against the rest (reads, replay, figures).
    let (mut busy, mut calls) = (0, 0);
    for version in ["1.0.0", "2.0.0"] {
        let plugin = journeys
            .pipeline
            .registry
            .version("version-tag", version)
            .unwrap();
        busy += plugin.stats().busy_micros.load(Ordering::Relaxed);
        calls += plugin.stats().calls.load(Ordering::Relaxed);
    }
    println!(
        "{dialect}: backtest of {events} events of {contacts} contacts ({} plugin calls): {:.1} s ({:.0} events/s); seeding {:.1} s; plugin calls {:.1} µs each, {:.1} s in all tasks together",
        2 * events,
        took.as_secs_f64(),
        events as f64 / took.as_secs_f64(),
        seeding.as_secs_f64(),
        busy as f64 / calls.max(1) as f64,
        busy as f64 / 1e6
    );
    temp.cleanup(store).await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let contacts = env("NACHFASS_BENCH_CONTACTS", 100_000);
    let events = env("NACHFASS_BENCH_EVENTS", 1_000_000);
    let only = std::env::var("NACHFASS_BENCH_ONLY").unwrap_or_default();
    for dialect in ["sqlite", "postgres"] {
        if only.is_empty() || only == dialect {
            bench(dialect, contacts, events).await;
        }
    }
}
