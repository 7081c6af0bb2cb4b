//! Scheduler figures: N journey steps (default 1,000,000) that fall due in
//! the same minute, each a marketing send through the full policy gate
//! (consent, suppression, frequency cap, send window), rendered into the
//! outbox and then delivered through the real webhook component to a
//! receiver on 127.0.0.1. Prints throughput and the p50/p99 lateness of
//! queueing (outbox written) and of delivery, on SQLite and PostgreSQL,
//! and how many deliveries a node gave back unsent because it could not
//! confirm their leases (a stalled node or database).
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench dispatch`
//! Size: NACHFASS_BENCH_STEPS (default 1000000); NACHFASS_BENCH_ONLY=sqlite
//! or postgres runs one database.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nachfass::clock::Clock;
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::{BindingDef, BindingKind, Dialect, Store};
use nachfass_tests::{guests, runtime};
use serde_json::json;
use sqlx::{Executor, Row};

/// Monday 2026-11-23, 10:00 in Berlin: inside business hours.
const MINUTE_START: i64 = 1_795_424_400_000;

/// Real time, starting at `base` when created: due times are exact and
/// lateness is what the scheduler really took.
struct RunningClock {
    base: i64,
    started: Instant,
}

impl Clock for RunningClock {
    fn now(&self) -> i64 {
        self.base + i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

async fn receiver() -> (u16, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, count)
}

/// Contacts with consent, one run each at the send step, and its advance
/// job due at a spread-out moment of the minute.
async fn seed(store: &Store, steps: usize) {
    let last = steps - 1;
    let (series, id, email, due) = match store.dialect() {
        Dialect::Sqlite => (
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last})"
            ),
            "printf('%012d', i)",
            "printf('d%d@dispatch.example', i)",
            format!("{MINUTE_START} + (i * 60000 / {steps})"),
        ),
        Dialect::Postgres => (
            format!("WITH n(i) AS (SELECT generate_series(0, {last}))"),
            "lpad(i::text, 12, '0')",
            "format('d%s@dispatch.example', i)",
            format!("{MINUTE_START} + (i::bigint * 60000 / {steps})"),
        ),
    };
    let statements = [
        format!(
            "{series} INSERT INTO contacts (id, email, attributes, created_at, updated_at) \
             SELECT 'c_d' || {id}, {email}, '{{}}', 0, 0 FROM n"
        ),
        format!(
            "{series} INSERT INTO consents (contact_id, channel, purpose, status, source, updated_at) \
             SELECT 'c_d' || {id}, 'webhook', 'marketing', 'granted', 'bench', 0 FROM n"
        ),
        format!(
            "{series} INSERT INTO journey_runs (id, journey, version, contact_id, purpose, status, step, seq, started_at) \
             SELECT 'r_d' || {id}, 'dispatch', 1, 'c_d' || {id}, 'marketing', 'active', 'hello', 1, {due} FROM n"
        ),
        format!(
            "{series} INSERT INTO jobs (id, kind, unique_key, payload, due_at, created_at) \
             SELECT 'j_d' || {id}, 'advance', 'advance:r_d' || {id} || ':1', \
                    '{{\"job\":\"advance\",\"run_id\":\"r_d' || {id} || '\",\"seq\":1}}', {due}, 0 FROM n"
        ),
    ];
    for statement in statements {
        store
            .pool()
            .execute(sqlx::AssertSqlSafe(statement))
            .await
            .unwrap();
    }
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0)
}

async fn bench(dialect: &str, url: &str, registry: Arc<Registry>, steps: usize) {
    let store = Store::connect(url).await.unwrap();
    let (port, received) = receiver().await;
    let hook = BindingDef {
        name: "hook".into(),
        kind: BindingKind::Channel,
        plugin: "webhook".into(),
        config: [
            ("url".to_owned(), format!("http://127.0.0.1:{port}/hook")),
            ("secret".to_owned(), "s".to_owned()),
        ]
        .into(),
        allow_http: vec![format!("127.0.0.1:{port}")],
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&hook, 0).await.unwrap();
    let seeding = Instant::now();
    seed(&store, steps).await;
    let seeded = seeding.elapsed();

    let clock = Arc::new(RunningClock {
        base: MINUTE_START,
        started: Instant::now(),
    });
    let pipeline = nachfass_tests::world::pipeline(store.clone(), registry, clock.clone());
    let journeys = Journeys::new(pipeline, Policy::default());
    let definition = json!({ "name": "dispatch", "trigger": "manual", "steps": [
        { "id": "hello", "type": "send", "binding": "hook",
          "template": { "subject": "Hallo", "text": "Hallo {{ contact.email }}, schön, dass Sie da sind." } } ] });
    journeys
        .save(definition.to_string().as_bytes())
        .await
        .unwrap();
    // The server's own loop: its lanes for steps and deliveries.
    let scheduler = Scheduler::new(journeys, SchedulerConfig::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    // The counter is the process's: both databases' runs add to it.
    let given_back_before = nachfass_tests::counter("nachfass_deliveries_given_back_total");
    let started = Instant::now();
    let running = tokio::spawn(scheduler.run_forever(stopped));
    let mut peak_rss = 0;
    for second in 1.. {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_rss = peak_rss.max(rss_bytes());
        // Counting a queue of a million jobs every second would take CPU
        // from the run it measures: until every message has come, it is
        // counted every half minute (in case some never come).
        if received.load(Ordering::Relaxed) < steps as u64 && second % 30 != 0 {
            continue;
        }
        let open: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs")
            .fetch_one(store.pool())
            .await
            .unwrap()
            .try_get("n")
            .unwrap();
        if open == 0 {
            break;
        }
    }
    let elapsed = started.elapsed();
    stop.send(true).unwrap();
    running.await.unwrap();
    let given_back =
        nachfass_tests::counter("nachfass_deliveries_given_back_total") - given_back_before;

    let rows = sqlx::query(
        "SELECT o.created_at - r.started_at AS queued, o.sent_at - r.started_at AS sent \
         FROM outbox o JOIN journey_runs r ON r.id = o.run_id WHERE o.status = 'delivered'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut queued: Vec<i64> = rows.iter().map(|r| r.try_get("queued").unwrap()).collect();
    let mut sent: Vec<i64> = rows.iter().map(|r| r.try_get("sent").unwrap()).collect();
    queued.sort_unstable();
    sent.sort_unstable();
    println!(
        "{dialect}: {steps} sends due within one minute: all delivered after {:.1} s ({:.0} steps/s); \
         lateness queued p50 {:.1} s p99 {:.1} s, delivered p50 {:.1} s p99 {:.1} s; \
         {} delivered, {} received; {given_back} given back unsent (leases in doubt); \
         peak RSS {} MB; seeding took {:.1} s",
        elapsed.as_secs_f64(),
        steps as f64 / elapsed.as_secs_f64(),
        percentile(&queued, 0.5) as f64 / 1000.0,
        percentile(&queued, 0.99) as f64 / 1000.0,
        percentile(&sent, 0.5) as f64 / 1000.0,
        percentile(&sent, 0.99) as f64 / 1000.0,
        rows.len(),
        received.load(Ordering::Relaxed),
        peak_rss / 1_000_000,
        seeded.as_secs_f64(),
    );
}

/// This process's resident memory now (server, scheduler and receiver
/// all run in it), from `/proc/self/status`; 0 where there is none.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // As `serve` does: the server's metrics are recorded, and the run
    // reports the ones that tell of trouble.
    nachfass::metrics::install();
    let steps = std::env::var("NACHFASS_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let registry = Arc::new(Registry::new(runtime()));
    registry
        .install_file(&guests::WEBHOOK.packed(), Activation::Now)
        .await
        .unwrap();
    let only = std::env::var("NACHFASS_BENCH_ONLY").unwrap_or_default();
    for (dialect, url, temp) in nachfass_tests::databases().await {
        if only.is_empty() || only == dialect {
            bench(dialect, &url, registry.clone(), steps).await;
        }
        let store = Store::connect(&url).await.unwrap();
        temp.cleanup(store).await;
    }
}
