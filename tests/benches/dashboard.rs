//! Dashboard figures: how long the dashboard's queries take over 1M
//! contacts and 10M events (spread over 30 days), with a journey of 100k
//! messages and 300k opens and clicks, on SQLite and PostgreSQL. Each query
//! runs over the real API (in-process router) five times; the median and
//! the slowest are printed.
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench dashboard`
//! Sizes: NACHFASS_BENCH_CONTACTS (default 1000000), NACHFASS_BENCH_EVENTS (default 10000000);
//! NACHFASS_BENCH_ONLY=sqlite or postgres runs one database.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::runtime::Registry;
use nachfass::store::{Dialect, Scope, Store};
use nachfass_tests::runtime;
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
    let messages = 100_000.min(contacts);
    let (series, pad, text_id) = match store.dialect() {
        Dialect::Sqlite => (
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})",
            "printf('%010d', {x})",
            "printf('%d', {x})",
        ),
        Dialect::Postgres => (
            "WITH n(i) AS (SELECT generate_series(0::bigint, {last}))",
            "lpad(({x})::text, 10, '0')",
            "(({x})::text)",
        ),
    };
    let series = |last: i64| series.replace("{last}", &last.to_string());
    let pad = |x: &str| pad.replace("{x}", x);
    let text = |x: &str| text_id.replace("{x}", x);
    let statements = [
        format!(
            "{} INSERT INTO contacts (id, email, stage, score, attributes, created_at, updated_at, last_seen_at) \
             SELECT 'c_' || {}, 'user' || {} || '@bench.example', 'lead', i % 100, '{{}}', 0, 0, {NOW} - (i % 30) * {DAY} FROM n",
            series(contacts - 1), pad("i"), text("i")
        ),
        format!(
            "{} INSERT INTO events (id, contact_id, kind, at, properties, received_at) \
             SELECT 'e_' || {}, 'c_' || {}, CASE i % 4 WHEN 0 THEN 'page.visited' WHEN 1 THEN 'email.opened' WHEN 2 THEN 'download' ELSE 'signup' END, \
                    {NOW} - (i % 2592000) * 1000, '{{}}', {NOW} FROM n",
            series(events - 1), pad("i"), pad(&format!("i % {contacts}"))
        ),
        format!(
            "{} INSERT INTO segment_members (segment, contact_id, since) SELECT 'active', 'c_' || {}, {NOW} - (i % 30) * {DAY} FROM n WHERE i % 3 = 0",
            series(contacts - 1), pad("i")
        ),
        format!(
            "{} INSERT INTO journey_runs (id, journey, version, contact_id, purpose, status, step, seq, started_at, ended_at, conversion_value) \
             SELECT 'r_' || {}, 'bench', 1, 'c_' || {}, 'marketing', CASE WHEN i % 10 = 0 THEN 'converted' ELSE 'completed' END, NULL, 3, \
                    {NOW} - (i % 30) * {DAY}, {NOW} - (i % 30) * {DAY} + (i % 7) * 3600000, CASE WHEN i % 10 = 0 THEN 49.9 END FROM n",
            series(messages - 1), pad("i"), pad("i")
        ),
        format!(
            "{} INSERT INTO outbox (id, idempotency_key, run_id, journey, step, variant, contact_id, binding, channel, purpose, message, status, created_at, sent_at, opens, clicks) \
             SELECT 'm_' || {}, 'k_' || {}, 'r_' || {}, 'bench', 'offer', CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 'c_' || {}, 'mail', 'email', 'marketing', '{{}}', 'delivered', \
                    {NOW} - (i % 30) * {DAY}, {NOW} - (i % 30) * {DAY}, i % 3, CASE WHEN i % 5 = 0 THEN 1 ELSE 0 END FROM n",
            series(messages - 1), pad("i"), pad("i"), pad("i"), pad("i")
        ),
        format!(
            "{} INSERT INTO message_events (outbox_id, kind, at) \
             SELECT 'm_' || {}, CASE WHEN i % 3 = 2 THEN 'clicked' ELSE 'opened' END, {NOW} FROM n",
            series(3 * messages - 1), pad(&format!("i % {messages}"))
        ),
        // What the counters would hold had these events come through ingest.
        "INSERT INTO event_days (day, shard, events) SELECT at / 86400000, 0, COUNT(*) FROM events GROUP BY at / 86400000".to_owned(),
        "INSERT INTO journeys (name, version, definition, created_at) VALUES ('bench', 1, \
         '{\"name\":\"bench\",\"trigger\":\"manual\",\"steps\":[{\"id\":\"offer\",\"type\":\"send\",\"binding\":\"mail\",\"variants\":[{\"name\":\"a\",\"template\":{\"text\":\"a\"}},{\"name\":\"b\",\"template\":{\"text\":\"b\"}}],\"ab_test\":{\"metric\":\"clicked\"}}]}', 0)".to_owned(),
        "INSERT INTO journey_states (name, active, updated_at) VALUES ('bench', 1, 0)".to_owned(),
        "INSERT INTO bindings (name, kind, plugin, config, created_at) VALUES ('active', 'segment', 'attribute-match', '{}', 0)".to_owned(),
    ];
    for statement in statements {
        store
            .pool()
            .execute(sqlx::AssertSqlSafe(statement))
            .await
            .unwrap();
    }
    if store.dialect() == Dialect::Postgres {
        store.pool().execute("ANALYZE").await.unwrap();
    }
}

async fn bench(dialect: &str, url: &str, contacts: i64, events: i64) {
    let store = Store::connect(url).await.unwrap();
    let started = Instant::now();
    seed(&store, contacts, events).await;
    let seeded = started.elapsed();
    let (_, key) = store
        .create_api_key("bench", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(ManualClock::new(NOW)),
    );
    let router = app(AppState::new(pipeline, None));
    let messages = 100_000.min(contacts);
    println!(
        "{dialect}: {contacts} contacts, {events} events, {messages} messages with {} opens and clicks (seeded in {:.0} s)",
        3 * messages,
        seeded.as_secs_f64()
    );
    let queries = [
        (
            "overview (events per day, sends, rates)",
            "/v1/stats/overview".to_owned(),
        ),
        (
            "journey KPIs + A/B test",
            "/v1/journeys/bench/kpis".to_owned(),
        ),
        (
            "contact search by email",
            "/v1/contacts?q=user4242&limit=50".to_owned(),
        ),
        (
            "segment sizes over 30 days",
            "/v1/stats/segments".to_owned(),
        ),
        (
            "contact timeline",
            format!("/v1/contacts/c_{:010}/timeline?limit=100", contacts / 2),
        ),
        (
            "contact list by segment",
            "/v1/contacts?segment=active&limit=50".to_owned(),
        ),
    ];
    for (name, path) in queries {
        let mut times = Vec::new();
        for _ in 0..5 {
            let request = Request::get(&path)
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            let started = Instant::now();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            times.push(started.elapsed());
            assert!(
                status.is_success(),
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        times.sort();
        println!(
            "{dialect}:   {name:<40} median {:>8.1} ms, slowest {:>8.1} ms",
            ms(times[2]),
            ms(times[4])
        );
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let contacts = env("NACHFASS_BENCH_CONTACTS", 1_000_000);
    let events = env("NACHFASS_BENCH_EVENTS", 10_000_000);
    // NACHFASS_BENCH_ONLY=sqlite (or postgres) runs one database.
    let only = std::env::var("NACHFASS_BENCH_ONLY").ok();
    for (dialect, url, temp) in nachfass_tests::databases().await {
        if only.as_deref().is_none_or(|o| o == dialect) {
            bench(dialect, &url, contacts, events).await;
        }
        let store = Store::connect(&url).await.unwrap();
        temp.cleanup(store).await;
    }
}
