//! The job registry: every job row has its kind, each kind its handler and
//! attempt limit; a kind this node does not know is given back, not lost;
//! and a long job (a segment rebuild over 100k contacts) killed mid-way
//! finishes after a restart, resuming from its cursor.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nachfass::clock::{Clock, ManualClock};
use nachfass::journeys::Journeys;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::scheduler::{Scheduler, SchedulerConfig, job_registry};
use nachfass::store::StoreError;
use nachfass::store::jobs::{DEFAULT_MAX_ATTEMPTS, JobArgs, JobOutcome};
use nachfass_tests::server::{Server, create_admin_key, free_port, http};
use nachfass_tests::{database, guests, runtime, store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::Row;

const NOW: i64 = 1_750_000_000_000;

/// A kind only this test knows: its handler fails until `succeed_from`.
#[derive(Serialize, Deserialize)]
struct Flaky {
    name: String,
}

impl JobArgs for Flaky {
    const KIND: &'static str = "flaky_test_job";
    const MAX_ATTEMPTS: i64 = 2;
    fn unique_key(&self) -> String {
        format!("flaky:{}", self.name)
    }
}

/// A kind no registry has, as a newer node might queue.
#[derive(Serialize, Deserialize)]
struct FromNewerNode {
    n: u32,
}

impl JobArgs for FromNewerNode {
    const KIND: &'static str = "from_a_newer_node";
    fn unique_key(&self) -> String {
        format!("newer:{}", self.n)
    }
}

async fn job_row(store: &nachfass::store::Store, kind: &str) -> (i64, Option<i64>, String) {
    let row = sqlx::query("SELECT attempts, failed_at, last_error FROM jobs WHERE kind = $1")
        .bind(kind.to_owned())
        .fetch_one(store.pool())
        .await
        .unwrap();
    (
        row.try_get("attempts").unwrap(),
        row.try_get("failed_at").unwrap(),
        row.try_get::<Option<String>, _>("last_error")
            .unwrap()
            .unwrap_or_default(),
    )
}

async fn kinds_run_by_their_handlers(dialect: &str) {
    let (store, temp) = store(dialect).await;
    let clock = Arc::new(ManualClock::new(NOW));
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        clock.clone(),
    );
    let journeys = Journeys::new(pipeline, Policy::default());

    // The server's registry runs every kind the server queues.
    let kinds = job_registry().kinds();
    for kind in [
        "advance",
        "backtest",
        "consent_expiry",
        "consent_reminder",
        "deliver",
        "rescore",
        "route",
        "segment_rebuild",
        "sweep",
        "timeout",
    ] {
        assert!(kinds.contains(&kind), "{dialect}: {kind} in {kinds:?}");
    }

    // A registry with one more kind: its handler gets its arguments, and
    // its own attempt limit (2) applies, not the default.
    let runs = Arc::new(AtomicU32::new(0));
    let mut registry = job_registry();
    let counted = runs.clone();
    registry.register(move |_journeys, _job, args: Flaky| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            Err::<JobOutcome, _>(StoreError::Invalid(format!("{} is broken", args.name)))
        }
    });
    let scheduler = Scheduler::with_registry(journeys, SchedulerConfig::default(), registry);
    let flaky = Flaky {
        name: "flaky-one".into(),
    };
    assert!(store.enqueue(&flaky, NOW, NOW).await.unwrap());
    assert!(
        !store.enqueue(&flaky, NOW, NOW).await.unwrap(),
        "{dialect}: one job per unique key"
    );
    store
        .enqueue(&FromNewerNode { n: 1 }, NOW, NOW)
        .await
        .unwrap();

    scheduler.run_until_idle().await.unwrap();
    let (attempts, failed, error) = job_row(&store, Flaky::KIND).await;
    assert_eq!((attempts, failed), (1, None), "{dialect}: retried");
    assert!(error.contains("flaky-one is broken"), "{dialect}: {error}");
    let (_, failed, error) = job_row(&store, FromNewerNode::KIND).await;
    assert_eq!(failed, None, "{dialect}: an unknown kind waits");
    assert!(
        error.contains("no handler for job kind `from_a_newer_node`"),
        "{dialect}: {error}"
    );

    // The second attempt is the last for this kind.
    clock.advance(2 * 3_600_000);
    scheduler.run_until_idle().await.unwrap();
    let (attempts, failed, _) = job_row(&store, Flaky::KIND).await;
    assert_eq!(attempts, 2, "{dialect}");
    assert!(failed.is_some(), "{dialect}: failed after its 2 attempts");
    assert_eq!(runs.load(Ordering::SeqCst), 2, "{dialect}");
    let (attempts, failed, _) = job_row(&store, FromNewerNode::KIND).await;
    assert_eq!(
        (attempts, failed),
        (2, None),
        "{dialect}: the default limit is {DEFAULT_MAX_ATTEMPTS}"
    );
    temp.cleanup(store).await;
}

#[tokio::test]
async fn kinds_run_by_their_handlers_sqlite() {
    kinds_run_by_their_handlers("sqlite").await;
}

#[tokio::test]
async fn kinds_run_by_their_handlers_postgres() {
    kinds_run_by_their_handlers("postgres").await;
}

/// A kind that takes longer than its lease.
#[derive(Serialize, Deserialize)]
struct Slow {
    name: String,
}

impl JobArgs for Slow {
    const KIND: &'static str = "slow_test_job";
    fn unique_key(&self) -> String {
        format!("slow:{}", self.name)
    }
}

/// A job that outlives its lease keeps it by heartbeat: a second node
/// polling meanwhile never runs it beside the first.
async fn a_long_job_keeps_its_lease(dialect: &'static str) {
    let (store, temp) = store(dialect).await;
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(nachfass::clock::SystemClock),
    );
    let journeys = Journeys::new(pipeline, Policy::default());
    let runs = Arc::new(AtomicU32::new(0));
    let node = |runs: Arc<AtomicU32>| {
        let mut registry = job_registry();
        registry.register(move |journeys: Arc<Journeys>, job, _args: Slow| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Four leases long.
                tokio::time::sleep(Duration::from_millis(1200)).await;
                let mut tx = journeys.pipeline.store.pool().begin().await?;
                if nachfass::store::jobs::finish_in(&mut tx, &job).await? {
                    tx.commit().await?;
                }
                Ok(JobOutcome::Done)
            }
        });
        let config = SchedulerConfig {
            lease_ms: 300,
            ..SchedulerConfig::default()
        };
        Scheduler::with_registry(journeys.clone(), config, registry)
    };
    let (a, b) = (node(runs.clone()), node(runs.clone()));
    let now = nachfass::clock::SystemClock.now();
    store
        .enqueue(
            &Slow {
                name: "long".into(),
            },
            now,
            now,
        )
        .await
        .unwrap();
    let first = tokio::spawn(async move { a.tick().await.unwrap() });
    // The other node polls while the job runs, past its first lease.
    let mut claimed_by_b = 0;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        claimed_by_b += b.tick().await.unwrap();
    }
    assert_eq!(first.await.unwrap(), 1, "{dialect}");
    assert_eq!(claimed_by_b, 0, "{dialect}: the lease was kept");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "{dialect}");
    let left: i64 = sqlx::query("SELECT COUNT(*) AS n FROM jobs")
        .fetch_one(store.pool())
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    assert_eq!(left, 0, "{dialect}: finished once");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_long_job_keeps_its_lease
);

const CONTACTS: i64 = 100_000;

fn segment(port: u16, key: &str) -> Value {
    let (status, segment) = http(port, "GET", "/v1/segments/mittelstand", Some(key), None);
    assert_eq!(status, 200, "{segment}");
    segment
}

/// A lease is one claim's, not its worker's: when a job's lease ran out
/// under a stalled batch and the same node claimed it again, whatever the
/// stalled batch then does with its old claim (give it back unsent,
/// retry, fail, finish, extend) changes nothing of the new one. Before,
/// a give-back matched the node's name and made the job due at once while
/// the new claim was delivering it, so another worker sent it again.
async fn a_stale_claim_cannot_touch_the_same_nodes_new_claim(dialect: &'static str) {
    let (store, temp) = store(dialect).await;
    let job = Flaky {
        name: "stale".into(),
    };
    store.enqueue(&job, NOW, NOW).await.unwrap();
    let stale = store.claim_jobs("node-a", NOW, 1_000, 10).await.unwrap();
    assert_eq!(stale.len(), 1, "{dialect}");
    // The lease ran out; the same node claims the job again.
    let fresh = store
        .claim_jobs("node-a", NOW + 2_000, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(fresh.len(), 1, "{dialect}");
    let (stale, fresh) = (&stale[0], &fresh[0]);
    assert_eq!(stale.id, fresh.id, "{dialect}");

    store.defer_job(stale, NOW + 2_000).await.unwrap();
    store.retry_job(stale, NOW + 2_000, "stale").await.unwrap();
    store.fail_job(stale, "stale", NOW + 2_000).await.unwrap();
    assert!(
        !store.extend_lease(stale, NOW + 60_000).await.unwrap(),
        "{dialect}"
    );
    let row = sqlx::query("SELECT lease_until, failed_at, attempts FROM jobs WHERE id = $1")
        .bind(fresh.id.clone())
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<Option<i64>, _>("lease_until"),
            row.get::<Option<i64>, _>("failed_at"),
            row.get::<i64, _>("attempts"),
        ),
        (Some(NOW + 3_000), None, 2),
        "{dialect}: the new claim's lease stands"
    );
    assert!(
        store
            .claim_jobs("node-b", NOW + 2_500, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "{dialect}: no other worker can take the job meanwhile"
    );
    let mut conn = store.pool().acquire().await.unwrap();
    assert!(
        !nachfass::store::jobs::finish_in(&mut conn, stale)
            .await
            .unwrap(),
        "{dialect}"
    );
    assert!(
        nachfass::store::jobs::finish_in(&mut conn, fresh)
            .await
            .unwrap(),
        "{dialect}"
    );
    drop(conn);
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test]
    a_stale_claim_cannot_touch_the_same_nodes_new_claim
);

async fn killed_rebuild_finishes_after_restart(dialect: &str) {
    let (url, temp) = database(dialect).await;
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let fill = if dialect == "sqlite" {
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO contacts (id, email, attributes, created_at, updated_at) \
             SELECT printf('c_kill%08d', i), printf('k%d@rebuild.example', i), '{{\"employees\":' || (i % 2000) || '}}', 0, 0 FROM n",
            last = CONTACTS - 1
        )
    } else {
        format!(
            "INSERT INTO contacts (id, email, attributes, created_at, updated_at) \
             SELECT format('c_kill%s', lpad(i::text, 8, '0')), format('k%s@rebuild.example', i), \
                    format('{{\"employees\":%s}}', i % 2000), 0, 0 FROM generate_series(0, {last}) AS i",
            last = CONTACTS - 1
        )
    };
    use sqlx::Executor;
    store
        .pool()
        .execute(sqlx::AssertSqlSafe(fill))
        .await
        .unwrap();
    let key = create_admin_key(&url);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins.d");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::copy(
        guests::ATTRIBUTE_MATCH.packed(),
        plugins.join("attribute-match.wasm"),
    )
    .unwrap();
    // Short leases: the killed node's lease runs out quickly.
    let args = ["--lease-ms", "2000"];
    let port = free_port();
    let server = Server::start(&url, dir.path(), port, &args);
    let (status, created) = http(
        port,
        "POST",
        "/v1/bindings",
        Some(&key),
        Some(
            &json!({ "name": "mittelstand", "kind": "segment", "plugin": "attribute-match",
                     "config": { "attribute": "employees", "op": "gt", "value": "249" } })
            .to_string(),
        ),
    );
    assert_eq!(status, 201, "{dialect}: {created}");
    // Kill as soon as some of the work is committed, well before the end.
    let started = Instant::now();
    let at_kill = loop {
        let rebuild = segment(port, &key)["rebuild"].clone();
        let evaluated = rebuild["evaluated"].as_i64().unwrap_or(0);
        if evaluated > 0 {
            break rebuild;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{dialect}: the rebuild never started"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    server.kill();
    assert_eq!(
        at_kill["done"], false,
        "{dialect}: killed mid-way: {at_kill}"
    );
    let evaluated_at_kill = at_kill["evaluated"].as_i64().unwrap();
    assert!(evaluated_at_kill < CONTACTS, "{dialect}: {at_kill}");

    let server = Server::start(&url, dir.path(), port, &args);
    let started = Instant::now();
    let finished = loop {
        let segment = segment(port, &key);
        if segment["rebuild"]["done"] == true {
            break segment;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{dialect}: the rebuild did not finish after the restart: {segment}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(server);
    let rebuild = &finished["rebuild"];
    assert_eq!(rebuild["id"], at_kill["id"], "{dialect}: the same task");
    assert_eq!(rebuild["error"], Value::Null, "{dialect}: {rebuild}");
    // Resumed from its cursor: every contact evaluated exactly once.
    assert_eq!(
        (rebuild["total"].as_i64(), rebuild["evaluated"].as_i64()),
        (Some(CONTACTS), Some(CONTACTS)),
        "{dialect}: {rebuild}"
    );
    // employees = i % 2000 > 249: 1,750 of every 2,000.
    let expected = CONTACTS / 2000 * 1750;
    assert_eq!(finished["size"], expected, "{dialect}: {finished}");
    assert_eq!(rebuild["entered"], expected, "{dialect}: {rebuild}");
    temp.cleanup(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_rebuild_finishes_after_restart_sqlite() {
    killed_rebuild_finishes_after_restart("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_rebuild_finishes_after_restart_postgres() {
    killed_rebuild_finishes_after_restart("postgres").await;
}

/// The jobs notice of a commit names the kinds it inserted, so each node
/// wakes only the scheduler lanes that claim them; an insert that added
/// no job (all there already) sends none.
#[tokio::test]
async fn the_jobs_notice_names_the_kinds_inserted_postgres() {
    use nachfass::store::Dialect;
    use nachfass::store::jobs::{NewJob, enqueue_rows_in};

    let (url, temp) = database("postgres").await;
    let store = nachfass::store::Store::connect(&url).await.unwrap();
    let mut listener = sqlx::postgres::PgListener::connect(&url).await.unwrap();
    listener.listen("nachfass_jobs").await.unwrap();
    let flaky = |name: &str| {
        NewJob::of(
            &Flaky {
                name: name.to_owned(),
            },
            NOW,
        )
        .unwrap()
    };
    let slow = NewJob::of(&Slow { name: "a".into() }, NOW).unwrap();
    let mut conn = store.pool().acquire().await.unwrap();
    let both = [flaky("a"), slow, flaky("b")];
    let added = enqueue_rows_in(&mut conn, Dialect::Postgres, &both, NOW)
        .await
        .unwrap();
    assert_eq!(added, 3);
    let notice = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notice within 10 s")
        .unwrap();
    assert_eq!(notice.payload(), "flaky_test_job,slow_test_job");

    // The same jobs again: nothing inserted, no notice. The next notice is
    // that of the one new job after them.
    let again = enqueue_rows_in(&mut conn, Dialect::Postgres, &both, NOW)
        .await
        .unwrap();
    assert_eq!(again, 0);
    enqueue_rows_in(&mut conn, Dialect::Postgres, &[flaky("c")], NOW)
        .await
        .unwrap();
    let notice = tokio::time::timeout(Duration::from_secs(10), listener.recv())
        .await
        .expect("a notice within 10 s")
        .unwrap();
    assert_eq!(notice.payload(), "flaky_test_job");
    drop(conn);
    temp.cleanup(store).await;
}
