//! Uploading components over HTTP, one test per dialect: a component from
//! another toolchain with its manifest in the same request (multipart), a
//! component without any manifest, and a body over the upload limit.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::StatusCode;
use nachfass::api::{AppState, app};
use nachfass::clock::ManualClock;
use nachfass::runtime::Registry;
use nachfass::store::{Scope, Store};
use nachfass_tests::{DAY, database, guests, runtime};
use serde_json::Value;

async fn send(
    router: &axum::Router,
    key: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    nachfass_tests::client::request(
        router,
        "POST",
        "/v1/plugins",
        Some(key),
        Some(content_type),
        Body::from(body),
    )
    .await
}

/// A `multipart/form-data` body with the given parts.
fn form(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "nachfass-test-boundary";
    let mut body = Vec::new();
    for (name, data) in parts {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn components_arrive_with_or_without_their_manifest(dialect: &str) {
    let (url, temp) = database(dialect).await;
    let store = Store::connect(&url).await.unwrap();
    let (_, admin) = store
        .create_api_key("admin", &[Scope::Admin], 0)
        .await
        .unwrap();
    let pipeline = nachfass_tests::world::pipeline(
        store.clone(),
        Arc::new(Registry::new(runtime())),
        Arc::new(ManualClock::new(DAY)),
    );
    let router = app(AppState::new(pipeline, None));
    // The raw component, as another toolchain leaves it: no manifest inside.
    let raw = guests::ENGAGEMENT.bytes();

    let (status, refused) = send(&router, &admin, "application/wasm", raw.clone()).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {refused}"
    );
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("multipart/form-data") && message.contains("`manifest` part"),
        "{message}"
    );

    let manifest = serde_json::to_vec(&guests::ENGAGEMENT.manifest()).unwrap();
    let (content_type, body) = form(&[("component", &raw), ("manifest", b"{\"name\": 1}")]);
    let (status, refused) = send(&router, &admin, &content_type, body).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{dialect}: {refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("the `manifest` part"),
        "{refused}"
    );

    let (content_type, body) = form(&[("component", &raw), ("manifest", &manifest)]);
    let (status, uploaded) = send(&router, &admin, &content_type, body).await;
    assert_eq!(
        (status, uploaded["plugin"].as_str()),
        (StatusCode::CREATED, Some("engagement@0.1.0")),
        "{dialect}: {uploaded}"
    );
    let stored = store.plugin_versions().await.unwrap();
    assert_eq!(stored.len(), 1, "{dialect}");
    assert_eq!(stored[0].manifest, guests::ENGAGEMENT.manifest());

    // Over the limit (the component size limit plus room for a form's
    // manifest): 413 in the API's error shape, with the limit.
    let limit = nachfass::runtime::limits::DEFAULT_MAX_COMPONENT_BYTES
        + nachfass::api::UPLOAD_OVERHEAD_BYTES;
    let (status, refused) = send(&router, &admin, "application/wasm", vec![0; limit + 1]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{dialect}");
    assert_eq!(refused["error"]["code"], "too_large", "{refused}");
    assert_eq!(
        refused["error"]["details"]["limit_bytes"], limit,
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{limit} bytes")),
        "{refused}"
    );
    let (content_type, body) = form(&[("component", &vec![0; limit + 1])]);
    let (status, refused) = send(&router, &admin, &content_type, body).await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")),
        "{refused}"
    );
    temp.cleanup(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_arrive_with_or_without_their_manifest_sqlite() {
    components_arrive_with_or_without_their_manifest("sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_arrive_with_or_without_their_manifest_postgres() {
    components_arrive_with_or_without_their_manifest("postgres").await;
}
