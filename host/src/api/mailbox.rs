//! The demo mailbox at `/v1/demo/mailbox`: the demo's channel plugin posts
//! deliveries (with the binding's token), the dashboard reads them with an
//! API key. Answers 404 on a server that is not running `nachfass demo`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::mailbox::{Delivered, Mailbox, MailboxMessage};
use crate::model::Value as FieldValue;
use crate::store::Scope;

fn mailbox(state: &AppState) -> Result<&Mailbox, ApiError> {
    state.mailbox.as_deref().ok_or_else(|| {
        ApiError::NotFound("no demo mailbox: it exists only while `nachfass demo` serves".into())
    })
}

/// A delivery taken into the mailbox.
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    pub id: u64,
}

/// A delivery from the demo channel plugin.
#[utoipa::path(post, path = "/v1/demo/mailbox", tag = "journeys",
    summary = "A delivery from the demo-mailbox channel plugin (Bearer: the binding's token, not an API key)",
    request_body = Delivered,
    responses(
        (status = 202, description = "In the mailbox", body = Accepted),
        (status = 401, description = "Not the binding's token", body = ErrorBody),
        (status = 404, description = "No demo mailbox: only while `nachfass demo` serves", body = ErrorBody),
    ))]
pub async fn deliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(message): ApiJson<Delivered>,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
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
    Ok((StatusCode::ACCEPTED, Json(Accepted { id })))
}

/// A send the policy gate deferred.
#[derive(Serialize, ToSchema)]
pub struct Deferred {
    pub contact_id: String,
    /// When it was deferred, Unix ms.
    pub at: i64,
    pub journey: Option<String>,
    pub step: Option<String>,
    /// Why: outside the send window, over a frequency cap, …
    pub reason: Option<String>,
    /// When it is tried again, Unix ms.
    pub until: Option<i64>,
}

/// The demo mailbox's contents.
#[derive(Serialize, ToSchema)]
pub struct MailboxView {
    /// Newest first, at most 200.
    pub messages: Vec<MailboxMessage>,
    /// The latest 50 deferred sends.
    pub deferred: Vec<Deferred>,
}

/// The newest messages and the sends the policy gate deferred, with why
/// and until when.
#[utoipa::path(get, path = "/v1/demo/mailbox", tag = "journeys",
    summary = "The demo mailbox (only while `nachfass demo` serves): delivered messages as recipients see them, and deferred sends with why and until when",
    security(("apiKey" = ["read"])),
    responses(
        (status = 200, description = "The mailbox", body = MailboxView),
        (status = 404, description = "No demo mailbox: only while `nachfass demo` serves", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<MailboxView>, ApiError> {
    caller.require(Scope::Read)?;
    let mailbox = mailbox(&state)?;
    let deferred: Vec<Deferred> = state
        .pipeline
        .store
        .recent_events("message.deferred", 50)
        .await?
        .into_iter()
        .map(|e| {
            let text = |key: &str| match e.properties.get(key) {
                Some(FieldValue::Text(s)) => Some(s.clone()),
                _ => None,
            };
            let until = match e.properties.get("until") {
                Some(FieldValue::Timestamp(t) | FieldValue::Integer(t)) => Some(*t),
                _ => None,
            };
            Deferred {
                journey: text("journey"),
                step: text("step"),
                reason: text("reason"),
                until,
                contact_id: e.contact_id,
                at: e.at,
            }
        })
        .collect();
    Ok(Json(MailboxView {
        messages: mailbox.newest(200),
        deferred,
    }))
}
