//! The demo mailbox at `/v1/demo/mailbox`: the demo's channel plugin posts
//! deliveries (with the binding's token), the dashboard reads them with an
//! API key. Answers 404 on a server that is not running `nachfass demo`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::mailbox::{Delivered, Mailbox};
use crate::model::Value as FieldValue;
use crate::store::Scope;

fn mailbox(state: &AppState) -> Result<&Mailbox, ApiError> {
    state.mailbox.as_deref().ok_or_else(|| {
        ApiError::NotFound("no demo mailbox: it exists only while `nachfass demo` serves".into())
    })
}

/// A delivery from the demo channel plugin.
pub async fn deliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(message): ApiJson<Delivered>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let mailbox = mailbox(&state)?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !mailbox.accepts(token.trim()) {
        return Err(ApiError::Unauthorized);
    }
    let id = mailbox.deliver(message, state.pipeline.clock.now());
    Ok((StatusCode::ACCEPTED, Json(json!({ "id": id }))))
}

/// The newest messages and the sends the policy gate deferred, with why
/// and until when.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let mailbox = mailbox(&state)?;
    let deferred: Vec<Value> = state
        .pipeline
        .store
        .recent_events("message.deferred", 50)
        .await?
        .into_iter()
        .map(|e| {
            let text = |key: &str| match e.properties.get(key) {
                Some(FieldValue::Text(s)) => Value::String(s.clone()),
                _ => Value::Null,
            };
            let until = match e.properties.get("until") {
                Some(FieldValue::Timestamp(t) | FieldValue::Integer(t)) => json!(t),
                _ => Value::Null,
            };
            json!({
                "contact_id": e.contact_id,
                "at": e.at,
                "journey": text("journey"),
                "step": text("step"),
                "reason": text("reason"),
                "until": until,
            })
        })
        .collect();
    Ok(Json(json!({
        "messages": mailbox.newest(200),
        "deferred": deferred,
    })))
}
