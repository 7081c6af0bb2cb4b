//! Plugin management over HTTP on SQLite and PostgreSQL: upload, bind,
//! swap and roll back while events keep coming in.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::ingest::Pipeline;
use nachfass::runtime::Registry;
use nachfass::runtime::manifest::embed;
use nachfass::scoring::StageThresholds;
use nachfass::store::Scope;
use nachfass_tests::{DAY, guests, runtime, stores};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: &str,
    body: Body,
    json_body: bool,
) -> (StatusCode, Value) {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"));
    if json_body {
        request = request.header("content-type", "application/json");
    }
    let response = router
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn post_json(
    router: &axum::Router,
    path: &str,
    key: &str,
    body: Value,
) -> (StatusCode, Value) {
    call(
        router,
        "POST",
        path,
        key,
        Body::from(body.to_string()),
        true,
    )
    .await
}

async fn upload(router: &axum::Router, key: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    call(router, "POST", "/v1/plugins", key, Body::from(bytes), false).await
}

/// version-tag built as 1.0.0 or 2.0.0, packed under one name.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_bind_and_swap_while_ingesting_without_a_failed_request() {
    for (dialect, store, temp) in stores().await {
        let dir = tempfile::tempdir().unwrap();
        let (_, admin) = store
            .create_api_key("admin", &[Scope::Admin], 0)
            .await
            .unwrap();
        let pipeline = Pipeline {
            store: store.clone(),
            registry: Arc::new(Registry::new(runtime())),
            clock: Arc::new(ManualClock::new(10 * DAY)),
            stages: StageThresholds::default(),
        };
        let router = app(AppState::new(pipeline, Some(dir.path().to_owned())));

        // Bad uploads say why and install nothing.
        let (status, error) = upload(&router, &admin, b"not wasm".to_vec()).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{dialect}: {error}"
        );
        let (status, error) = upload(&router, &admin, guests::ENGAGEMENT.bytes()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("no manifest"),
            "{error}"
        );
        let mut wrong_world = guests::ENGAGEMENT.manifest();
        wrong_world.world = nachfass::runtime::World::Channel;
        let (status, error) = upload(
            &router,
            &admin,
            embed(&guests::ENGAGEMENT.bytes(), &wrong_world).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("does not fit"),
            "{error}"
        );

        let (status, installed) = upload(&router, &admin, tag(1)).await;
        assert_eq!(
            (status, installed["plugin"].as_str()),
            (StatusCode::CREATED, Some("version-tag@1.0.0")),
            "{dialect}"
        );
        let stored = store.plugin_versions().await.unwrap();
        assert_eq!(
            stored
                .iter()
                .map(|v| (v.manifest.id(), v.sha256.as_str()))
                .collect::<Vec<_>>(),
            [(
                "version-tag@1.0.0".to_owned(),
                installed["sha256"].as_str().unwrap()
            )],
            "{dialect}: kept in the database for every node and for restarts"
        );
        let (status, _) = upload(
            &router,
            &admin,
            std::fs::read(guests::ATTRIBUTE_MATCH.packed()).unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);

        let (status, error) = post_json(
            &router,
            "/v1/bindings",
            &admin,
            json!({ "name": "fit", "kind": "scorer", "plugin": "attribute-match" }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is a segment-rule"),
            "{error}"
        );
        let (status, error) = post_json(
            &router,
            "/v1/bindings",
            &admin,
            json!({ "name": "big", "kind": "segment", "plugin": "attribute-match" }),
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{dialect}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("attribute, op"),
            "{error}"
        );
        let (status, _) = post_json(
            &router,
            "/v1/bindings",
            &admin,
            json!({ "name": "tag", "kind": "scorer", "plugin": "version-tag" }),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{dialect}");

        let ingesting = {
            let router = router.clone();
            let admin = admin.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for i in 0..60 {
                    let event = json!({ "kind": "page.visited", "email": "swap@example.org", "client_event_id": format!("s-{i}") });
                    statuses.push(post_json(&router, "/v1/events", &admin, event).await.0);
                }
                statuses
            })
        };
        let (status, _) = upload(&router, &admin, tag(2)).await;
        assert_eq!(status, StatusCode::CREATED, "{dialect}");
        let (status, _) = post_json(
            &router,
            "/v1/plugins/version-tag/rollback",
            &admin,
            json!(null),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{dialect}");
        let (status, live) = post_json(
            &router,
            "/v1/plugins/version-tag/activate",
            &admin,
            json!({ "version": "2.0.0" }),
        )
        .await;
        assert_eq!(
            (status, live["live"].as_str()),
            (StatusCode::OK, Some("version-tag@2.0.0")),
            "{dialect}"
        );
        let statuses = ingesting.await.unwrap();
        assert!(
            statuses.iter().all(|s| *s == StatusCode::CREATED),
            "{dialect}: {statuses:?}"
        );

        let contact = store
            .upsert_contact(
                &nachfass::store::ContactInput {
                    email: Some("swap@example.org".into()),
                    ..Default::default()
                },
                0,
            )
            .await
            .unwrap()
            .contact;
        let history = store.score_history(&contact.id).await.unwrap();
        assert_eq!(history.len(), 60, "every event scored once: {dialect}");
        assert!(
            history
                .iter()
                .all(|h| (h.delta, h.reasons[0].as_str()) == (1, "1.0.0")
                    || (h.delta, h.reasons[0].as_str()) == (2, "2.0.0"))
        );
        assert_eq!(
            contact.score,
            history.iter().map(|h| h.delta).sum::<i64>(),
            "{dialect}"
        );

        let (status, listed) =
            call(&router, "GET", "/v1/plugins", &admin, Body::empty(), false).await;
        assert_eq!(status, StatusCode::OK);
        let tag_entry = listed["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "version-tag")
            .unwrap()
            .clone();
        assert_eq!(
            (
                tag_entry["live"].as_str(),
                tag_entry["versions"].as_array().unwrap().len()
            ),
            (Some("2.0.0"), 2)
        );
        let (status, _) = call(
            &router,
            "DELETE",
            "/v1/bindings/tag",
            &admin,
            Body::empty(),
            false,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{dialect}");
        temp.cleanup(store).await;
    }
}
