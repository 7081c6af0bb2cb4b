//! Segment rebuilds over HTTP on SQLite and PostgreSQL: creating a segment
//! evaluates every contact in batches, with progress visible.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::journeys::Journeys;
use nachfass::model::Value;
use nachfass::policy::Policy;
use nachfass::runtime::Registry;
use nachfass::runtime::registry::Activation;
use nachfass::scheduler::{Scheduler, SchedulerConfig};
use nachfass::store::tasks::SEGMENT_REBUILD;
use nachfass::store::{ContactInput, PageChanges, Scope, TaskStep};
use nachfass_tests::{DAY, guests, runtime};
use serde_json::{Value as Json, json};

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: &str,
    body: Option<Json>,
) -> (StatusCode, Json) {
    nachfass_tests::client::json(router, method, path, Some(key), body).await
}

async fn creating_a_segment_rebuilds_it_with_visible_progress(dialect: &'static str) {
    let registry = Arc::new(Registry::new(runtime()));
    registry
        .install_file(&guests::ATTRIBUTE_MATCH.packed(), Activation::Now)
        .await
        .unwrap();
    let (store, temp) = nachfass_tests::store(dialect).await;
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let contacts = 1_234;
    for i in 0..contacts {
        let input = ContactInput {
            email: Some(format!("p{i}@firma.example")),
            attributes: [("employees".to_owned(), Value::Integer(i % 500))].into(),
            ..ContactInput::default()
        };
        store.upsert_contact(&input, 0).await.unwrap();
    }
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        registry.clone(),
        Arc::new(ManualClock::new(DAY)),
    );
    let journeys = Journeys::new(pipeline, Policy::default());
    let router = app(AppState::with_journeys(journeys.clone(), None));
    let binding = json!({ "name": "mittelstand", "kind": "segment", "plugin": "attribute-match",
                          "config": { "attribute": "employees", "op": "gt", "value": "249" } });
    let (status, _) = call(&router, "POST", "/v1/bindings", &admin, Some(binding)).await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");
    // A journey for every contact entering the segment: the rebuild's
    // entries are routed to it like any other event.
    let welcome = json!({ "name": "welcome-mittelstand", "trigger": { "segment_entered": "mittelstand" },
                          "steps": [ { "id": "pause", "type": "wait", "duration": "1h" } ] });
    journeys.save(welcome.to_string().as_bytes()).await.unwrap();
    // The rebuild is a durable job: a scheduler runs it.
    let scheduler = Scheduler::new(journeys, SchedulerConfig::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(scheduler.run_forever(stopped));

    let mut shown = Json::Null;
    for _ in 0..600 {
        let (status, body) = call(&router, "GET", "/v1/segments/mittelstand", &admin, None).await;
        assert_eq!(status, StatusCode::OK, "{dialect}");
        shown = body;
        if shown["rebuild"]["done"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expected = (0..contacts).filter(|i| i % 500 > 249).count() as i64;
    assert_eq!(shown["rebuild"]["done"], true, "{dialect}: {shown}");
    assert_eq!(
        shown["rebuild"]["evaluated"].as_i64(),
        Some(contacts),
        "{dialect}"
    );
    assert_eq!(
        shown["rebuild"]["entered"].as_i64(),
        Some(expected),
        "{dialect}"
    );
    assert_eq!(shown["size"].as_i64(), Some(expected), "{dialect}");

    let (status, page) = call(
        &router,
        "GET",
        "/v1/segments/mittelstand/members?limit=10",
        &admin,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["members"].as_array().unwrap().len(), 10, "{dialect}");
    let member = page["members"][0].as_str().unwrap();
    // Entering may already have started the journey (`journey.entered`).
    let timeline = store.timeline(member, 5, None).await.unwrap();
    assert!(
        timeline.iter().any(|e| e.kind == "segment.entered"),
        "{dialect}: {timeline:?}"
    );
    // One event per contact that entered, each born processed: nachfass's
    // own events have no profile effects left to apply.
    let (written, unprocessed): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN processed_at IS NULL THEN 1 ELSE 0 END), 0) \
         FROM events WHERE kind = 'segment.entered'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((written, unprocessed), (expected, 0), "{dialect}");
    // Each entry started the journey once.
    let mut started = 0;
    for _ in 0..600 {
        started = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(DISTINCT contact_id) FROM journey_runs WHERE journey = 'welcome-mittelstand'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if started >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let runs: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM journey_runs WHERE journey = 'welcome-mittelstand'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((started, runs), (expected, expected), "{dialect}");
    stop.send(true).unwrap();
    running.await.unwrap();
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    creating_a_segment_rebuilds_it_with_visible_progress
);

/// Two runners of one rebuild task (a lease that ran out while the first
/// still worked, and the same node claimed the job again) both start a page
/// after the same cursor: the page commits once; the second runner's copy
/// writes nothing, counts nothing and tells its runner to stop.
async fn a_page_from_a_stale_cursor_changes_nothing(dialect: &'static str) {
    let (store, temp) = nachfass_tests::store(dialect).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let input = ContactInput {
            email: Some(format!("p{i}@firma.example")),
            ..ContactInput::default()
        };
        ids.push(store.upsert_contact(&input, 0).await.unwrap().contact.id);
    }
    let task = store
        .enqueue_task(SEGMENT_REBUILD, "mittelstand", "test", DAY)
        .await
        .unwrap();
    let jobs = store.claim_jobs("node-a", DAY, 60_000, 10).await.unwrap();
    let job = jobs.iter().find(|j| j.payload.contains(&task)).unwrap();
    let enter: Vec<&str> = ids.iter().map(String::as_str).collect();
    let step = || TaskStep {
        job,
        task: &task,
        from: None,
        cursor: &ids[2],
        evaluated: 3,
    };
    let first = store
        .apply_rebuild_page("mittelstand", &enter[..2], &[], Some(step()), DAY)
        .await
        .unwrap();
    assert_eq!(
        first,
        Some(PageChanges {
            entered: 2,
            left: 0
        }),
        "{dialect}"
    );
    // The same page again, evaluated by the second runner a moment later
    // (it saw all three contacts as entering).
    let second = store
        .apply_rebuild_page("mittelstand", &enter, &[], Some(step()), DAY)
        .await
        .unwrap();
    assert_eq!(second, None, "{dialect}: the stale page must not commit");
    let progress = store.task(&task).await.unwrap();
    assert_eq!(
        (
            progress.evaluated,
            progress.entered,
            progress.cursor.as_deref()
        ),
        (3, 2, Some(ids[2].as_str())),
        "{dialect}: {progress:?}"
    );
    assert_eq!(
        store.segment_size("mittelstand").await.unwrap(),
        2,
        "{dialect}"
    );
    let (events,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM events WHERE kind = 'segment.entered'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(events, 2, "{dialect}: one event per contact that entered");
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    a_page_from_a_stale_cursor_changes_nothing
);
