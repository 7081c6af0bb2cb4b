//! Segment rebuild throughput: a store of many contacts (bulk-inserted, not
//! through the API; every fourth contact with two touchpoints) is rebuilt
//! against the `attribute-match` rule as the durable task a scheduler runs
//! (`segments::run_rebuild_task`): once from scratch (7 of 8 contacts
//! enter, each with its `segment.entered` event) and once more with nothing
//! changing. Then the rebuild's page reads run alone: as the store does them
//! (one statement a page that SQLite answers with the page as JSON; three
//! queries a page on PostgreSQL), and as rows of three queries once through
//! the sqlx `Any` pool the store uses and once through the typed driver, to
//! show what `Any` costs on this path. On SQLite and on PostgreSQL.
//!
//! `NACHFASS_TEST_POSTGRES_URL=$(bash tests/support/postgres.sh) cargo bench -p nachfass-tests --bench rebuild`
//! Size: NACHFASS_BENCH_CONTACTS (default 1000000). `NACHFASS_BENCH_ROUTED=1`:
//! with a journey active, so that every entry also queues its route job.
//! `NACHFASS_BENCH_ONLY=sqlite` or `postgres`: one database.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use nachfass::clock::SystemClock;
use nachfass::ingest::Pipeline;
use nachfass::model::Fields;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scoring::StageThresholds;
use nachfass::store::tasks::SEGMENT_REBUILD;
use nachfass::store::{BindingDef, BindingKind, Store};
use nachfass_tests::{guests, runtime};
use sqlx::Executor;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;
/// The store's page size (`segments::REBUILD_PAGE`).
const PAGE: i64 = nachfass::segments::REBUILD_PAGE as i64;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Contacts `c_bench000000000000…` with `employees` = i % 2000, and two
/// events (`page.visited`, `email.opened`) for every fourth one.
fn fill_sql(dialect: &str, contacts: usize) -> [String; 2] {
    let last = contacts - 1;
    if dialect == "sqlite" {
        [
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
                 INSERT INTO contacts (id, email, attributes, created_at, updated_at) \
                 SELECT printf('c_bench%012d', i), printf('r%d@rebuild.example', i), \
                        '{{\"employees\":' || (i % 2000) || '}}', 0, 0 FROM n"
            ),
            format!(
                "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 4 FROM n WHERE i + 4 <= {last}), \
                      k(kind) AS (VALUES ('page.visited'), ('email.opened')) \
                 INSERT INTO events (id, contact_id, kind, at, properties, received_at) \
                 SELECT printf('e_bench%012d_%s', i, kind), printf('c_bench%012d', i), kind, \
                        1000 + i, '{{}}', 1000 + i FROM n, k"
            ),
        ]
    } else {
        [
            format!(
                "INSERT INTO contacts (id, email, attributes, created_at, updated_at) \
                 SELECT format('c_bench%s', lpad(i::text, 12, '0')), format('r%s@rebuild.example', i), \
                        format('{{\"employees\":%s}}', i % 2000), 0, 0 FROM generate_series(0, {last}) AS i"
            ),
            format!(
                "INSERT INTO events (id, contact_id, kind, at, properties, received_at) \
                 SELECT format('e_bench%s_%s', lpad(i::text, 12, '0'), kind), \
                        format('c_bench%s', lpad(i::text, 12, '0')), kind, 1000 + i, '{{}}', 1000 + i \
                 FROM generate_series(0, {last}, 4) AS i, (VALUES ('page.visited'), ('email.opened')) AS k(kind)"
            ),
        ]
    }
}

/// Runs one rebuild task to its end, as a scheduler would; prints and
/// returns contacts/s.
async fn rebuild_once(dialect: &str, pipeline: &Pipeline, what: &str) -> f64 {
    let store = &pipeline.store;
    let now = pipeline.clock.now();
    let task = store
        .enqueue_task(SEGMENT_REBUILD, "mittelstand", "bench", now)
        .await
        .unwrap();
    let jobs = store.claim_jobs("bench", now, 600_000, 10).await.unwrap();
    let job = jobs.iter().find(|j| j.payload.contains(&task)).unwrap();
    let started = Instant::now();
    let cpu_at_start = cpu_seconds();
    nachfass::segments::run_rebuild_task(pipeline, job, &task)
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_used = cpu_seconds()
        .zip(cpu_at_start)
        .map(|(end, start)| end - start);
    let progress = store.task(&task).await.unwrap();
    assert!(progress.done && progress.error.is_none(), "{progress:?}");
    let rate = progress.evaluated as f64 / elapsed;
    // The bench's own CPU time (not the PostgreSQL server's): on a busy
    // box it varies less than the time on the clock.
    let cpu_figures = cpu_used.map_or(String::new(), |cpu| {
        format!(
            "; {cpu:.2} CPU s in this process, {:.2} µs a contact",
            cpu * 1e6 / progress.evaluated.max(1) as f64
        )
    });
    println!(
        "{dialect}: segment rebuild, {what}: {} contacts ({} entered, {} left) in {elapsed:.2} s: {rate:.0} contacts/s{cpu_figures}",
        progress.evaluated, progress.entered, progress.left,
    );
    rate
}

/// User and system CPU time of this process so far (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // Clock ticks of 1/100 s, as Linux reports them to user space.
    Some(ticks / 100.0)
}

/// A contact row as the rebuild decodes it, and an activity row.
type ContactRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    String,
    String,
    i64,
    Option<i64>,
);
type ActivityRow = (String, String, i64, i64, i64, Option<i64>);

const CONTACTS_SQL: &str = "SELECT id, email, external_id, phone, timezone, score, stage, attributes, created_at, last_seen_at \
     FROM contacts WHERE id > $1 ORDER BY id LIMIT $2";
const MEMBERS_SQL: &str = "SELECT contact_id, segment FROM segment_members WHERE contact_id >= $1 AND contact_id <= $2 \
     ORDER BY contact_id, segment";
const ACTIVITY_SQL: &str = "SELECT contact_id, kind, COUNT(*) AS total, \
        SUM(CASE WHEN at > $1 THEN 1 ELSE 0 END) AS last_24_hours, \
        SUM(CASE WHEN at > $2 THEN 1 ELSE 0 END) AS last_30_days, \
        MAX(at) AS last_at \
     FROM events WHERE contact_id >= $3 AND contact_id <= $4 AND at <= $5 \
     GROUP BY contact_id, kind ORDER BY contact_id, kind";

/// Reads every page as the rebuild does (contacts, memberships, activity;
/// attributes parsed) through `$pool`; returns the contacts read.
macro_rules! read_pages {
    ($pool:expr, $now:expr) => {{
        let (pool, now) = ($pool, $now);
        let mut after = String::new();
        let mut read = 0_usize;
        loop {
            let contacts: Vec<ContactRow> = sqlx::query_as(CONTACTS_SQL)
                .bind(after.clone())
                .bind(PAGE)
                .fetch_all(pool)
                .await
                .unwrap();
            let (Some(first), Some(last)) = (contacts.first(), contacts.last()) else {
                break;
            };
            let (first, last) = (first.0.clone(), last.0.clone());
            let members: Vec<(String, String)> = sqlx::query_as(MEMBERS_SQL)
                .bind(first.clone())
                .bind(last.clone())
                .fetch_all(pool)
                .await
                .unwrap();
            let activity: Vec<ActivityRow> = sqlx::query_as(ACTIVITY_SQL)
                .bind(now - DAY_MS)
                .bind(now - 30 * DAY_MS)
                .bind(first)
                .bind(last.clone())
                .bind(now)
                .fetch_all(pool)
                .await
                .unwrap();
            let mut segments: HashMap<String, Vec<String>> = HashMap::new();
            for (contact, segment) in members {
                segments.entry(contact).or_default().push(segment);
            }
            for row in &contacts {
                let attributes: Fields = serde_json::from_str(&row.7).unwrap();
                std::hint::black_box((attributes, segments.get(&row.0)));
            }
            std::hint::black_box(activity);
            read += contacts.len();
            after = last;
        }
        read
    }};
}

async fn bench(dialect: &str, url: &str, registry: Arc<Registry>, contacts: usize) {
    let store = Store::connect(url).await.unwrap();
    let started = Instant::now();
    for sql in fill_sql(dialect, contacts) {
        store
            .pool()
            .execute(sqlx::AssertSqlSafe(sql))
            .await
            .unwrap();
    }
    if dialect == "postgres" {
        store.pool().execute("ANALYZE").await.unwrap();
    }
    println!(
        "{dialect}: {contacts} contacts and {} events inserted in {:.1} s",
        contacts.div_ceil(4) * 2,
        started.elapsed().as_secs_f64()
    );
    let def = BindingDef {
        name: "mittelstand".into(),
        kind: BindingKind::Segment,
        plugin: "attribute-match".into(),
        config: [("attribute", "employees"), ("op", "gt"), ("value", "249")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        allow_http: Vec::new(),
        limits: Default::default(),
        paused: None,
        rate: None,
        version: None,
    };
    store.create_binding(&def, 0).await.unwrap();
    if std::env::var("NACHFASS_BENCH_ROUTED").is_ok_and(|v| v == "1") {
        // An active journey: every event the rebuild writes is routed.
        let journey = serde_json::json!({ "name": "welcome-mittelstand",
            "trigger": { "segment_entered": "mittelstand" },
            "steps": [ { "id": "wait", "type": "wait", "duration": "1d" } ] });
        store
            .save_journey("welcome-mittelstand", &journey.to_string(), 0)
            .await
            .unwrap();
        println!("{dialect}: a journey is active, so each entry queues its route job");
    }
    let pipeline = Pipeline {
        store: store.clone(),
        registry,
        clock: Arc::new(SystemClock),
        stages: StageThresholds::default(),
    };
    rebuild_once(dialect, &pipeline, "first build").await;
    rebuild_once(dialect, &pipeline, "again, nothing changes").await;

    // The rebuild's reads alone, as the store does them.
    let now = pipeline.clock.now();
    let started = Instant::now();
    let (mut after, mut store_read) = (None::<String>, 0);
    loop {
        let page = store
            .contacts_with_activity(after.as_deref(), PAGE as u32, now)
            .await
            .unwrap();
        let Some((last, _)) = page.last() else { break };
        store_read += page.len();
        after = Some(last.id.clone());
    }
    println!(
        "{dialect}: the rebuild's page reads of {store_read} contacts, as the store does them: {:.0} contacts/s",
        store_read as f64 / started.elapsed().as_secs_f64()
    );

    // What the `Any` driver costs: the same reads as rows through both pools.
    let started = Instant::now();
    let read = read_pages!(store.pool(), now);
    let any = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let typed_read = if dialect == "sqlite" {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        read_pages!(&pool, now)
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        read_pages!(&pool, now)
    };
    let typed = started.elapsed().as_secs_f64();
    assert_eq!((read, typed_read), (store_read, store_read));
    println!(
        "{dialect}: the same reads as rows of three queries: Any {:.0} contacts/s ({any:.2} s), typed {:.0} contacts/s ({typed:.2} s): Any takes {:.2}x",
        read as f64 / any,
        read as f64 / typed,
        any / typed
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let contacts = env("NACHFASS_BENCH_CONTACTS", 1_000_000).max(1);
    // The rebuild logs its time per phase (read, rules, write) at its end.
    tracing_subscriber::fmt()
        .with_env_filter("nachfass::segments=info")
        .init();
    let registry = Arc::new(Registry::new(runtime()));
    registry
        .install_file(&guests::ATTRIBUTE_MATCH.packed(), Activation::Now)
        .await
        .unwrap();
    let only = std::env::var("NACHFASS_BENCH_ONLY").unwrap_or_default();
    let dir = tempfile::tempdir().unwrap();
    if only != "postgres" {
        bench(
            "sqlite",
            &format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("bench.db").display()
            ),
            registry.clone(),
            contacts,
        )
        .await;
    }
    match std::env::var("NACHFASS_TEST_POSTGRES_URL") {
        Ok(_) if only == "sqlite" => {}
        Ok(base) => {
            sqlx::any::install_default_drivers();
            let name = format!("nachfass_rebuild_{}", std::process::id());
            let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&base)
                .await
                .unwrap();
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .await
                .unwrap();
            let (server, _) = base.rsplit_once('/').unwrap();
            bench("postgres", &format!("{server}/{name}"), registry, contacts).await;
            nachfass_tests::drop_bench_database(&mut admin, &name).await;
        }
        Err(_) => println!(
            "postgres: skipped; set NACHFASS_TEST_POSTGRES_URL (tests/support/postgres.sh prints one)"
        ),
    }
}
