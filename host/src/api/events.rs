//! `/v1/events` and the timeline.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::store::{EventInput, Scope};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;

/// One event, or `{"events": [...]}` for a batch.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum EventsBody {
    Batch { events: Vec<Value> },
    One(Value),
}

/// Ingests one event or a batch. In a batch every item is validated on its
/// own: bad items are reported by index, valid ones are kept.
pub async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<EventsBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !caller.0.allows(Scope::Ingest) && !caller.0.allows(Scope::Write) {
        return Err(ApiError::Forbidden(Scope::Ingest.as_str()));
    }
    match body {
        EventsBody::One(value) => {
            let input: EventInput = serde_json::from_value(value)
                .map_err(|e| ApiError::invalid(format!("event: {e}")))?;
            let ingested = state.pipeline.ingest(&input).await?;
            let status = if ingested.duplicate {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok((
                status,
                Json(json!({ "event": ingested.event, "duplicate": ingested.duplicate })),
            ))
        }
        EventsBody::Batch { events } => {
            if events.len() > MAX_BATCH {
                return Err(ApiError::invalid(format!(
                    "{} events in one batch; send at most {MAX_BATCH}",
                    events.len()
                )));
            }
            let mut results = Vec::with_capacity(events.len());
            let (mut accepted, mut rejected) = (0, 0);
            for (index, value) in events.into_iter().enumerate() {
                let outcome = match serde_json::from_value::<EventInput>(value) {
                    Ok(input) => state.pipeline.ingest(&input).await.map_err(ApiError::from),
                    Err(e) => Err(ApiError::invalid(e.to_string())),
                };
                match outcome {
                    Ok(ingested) => {
                        accepted += 1;
                        results.push(json!({ "index": index, "id": ingested.event.id, "duplicate": ingested.duplicate }));
                    }
                    Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail)),
                    Err(error) => {
                        rejected += 1;
                        results.push(json!({ "index": index, "error": error.to_string() }));
                    }
                }
            }
            let status = if rejected == 0 {
                StatusCode::CREATED
            } else {
                StatusCode::MULTI_STATUS
            };
            Ok((
                status,
                Json(json!({ "accepted": accepted, "rejected": rejected, "results": results })),
            ))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineQuery {
    #[serde(default)]
    pub limit: Option<u32>,
    #[serde(default)]
    pub before: Option<i64>,
}

/// The contact's touchpoints, newest first.
pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let events = state
        .pipeline
        .store
        .timeline(&id, query.limit.unwrap_or(100), query.before)
        .await?;
    let next = events.last().map(|e| e.at);
    Ok(Json(json!({ "events": events, "next_before": next })))
}
