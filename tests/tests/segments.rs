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
use nachfass::store::{ContactInput, Scope};
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
    // The rebuild is a durable job: a scheduler runs it.
    let journeys = Journeys::new(pipeline, Policy::default());
    let scheduler = Scheduler::new(journeys.clone(), SchedulerConfig::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(scheduler.run_forever(stopped));
    let router = app(AppState::with_journeys(journeys, None));
    let binding = json!({ "name": "mittelstand", "kind": "segment", "plugin": "attribute-match",
                          "config": { "attribute": "employees", "op": "gt", "value": "249" } });
    let (status, _) = call(&router, "POST", "/v1/bindings", &admin, Some(binding)).await;
    assert_eq!(status, StatusCode::CREATED, "{dialect}");

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
    let timeline = store.timeline(member, 5, None).await.unwrap();
    assert_eq!(timeline[0].kind, "segment.entered", "{dialect}");
    stop.send(true).unwrap();
    running.await.unwrap();
    temp.cleanup(store).await;
}

nachfass_tests::on_both_databases!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    creating_a_segment_rebuilds_it_with_visible_progress
);
