//! One HTTP client for in-process tests: a request to a router as the
//! server would get it, and the answer as JSON.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// Sends one request; `key` goes in as a bearer token. The answer is its
/// JSON, `Null` when empty, or its text as a JSON string when it is not
/// JSON (`/metrics`).
pub async fn request(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: Body,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(key) = key {
        request = request.header("authorization", format!("Bearer {key}"));
    }
    if let Some(content_type) = content_type {
        request = request.header("content-type", content_type);
    }
    let request = request.body(body).expect("a valid request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a readable body")
        .to_bytes();
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, json)
}

/// A JSON request (no body when `body` is `None`).
pub async fn json(
    router: &axum::Router,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    match body {
        Some(body) => {
            request(
                router,
                method,
                path,
                key,
                Some("application/json"),
                Body::from(body.to_string()),
            )
            .await
        }
        None => request(router, method, path, key, None, Body::empty()).await,
    }
}
