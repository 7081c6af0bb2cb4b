//! `/v1/events` and the timeline.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiQuery, Caller, json_value};
use super::{ApiError, AppState, EventTimes, edge};
use crate::store::{EventInput, Scope};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;

/// `{"events": [...]}`: a batch, and nothing else beside the list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    events: Vec<Value>,
}

/// One event from a JSON value: NUL characters named by field, the time
/// within the accepted range.
fn event_input(state: &AppState, value: Value) -> Result<EventInput, ApiError> {
    if let Some(place) = edge::nul_path(&value) {
        return Err(edge::nul_error(&place));
    }
    let input: EventInput =
        serde_json::from_value(value).map_err(|e| ApiError::invalid(format!("event: {e}")))?;
    if let Some(at) = input.at {
        let EventTimes { oldest, ahead } = state.event_times;
        let newest = state.pipeline.clock.now().saturating_add(ahead);
        if at < oldest || at > newest {
            return Err(ApiError::invalid(format!(
                "`at` {at} is outside the accepted event times {oldest}..={newest} \
                 (Unix milliseconds from the server's oldest allowed time up to {ahead} ms ahead); \
                 send milliseconds, not seconds"
            )));
        }
    }
    Ok(input)
}

/// Ingests one event or a batch (`{"events": [...]}`). In a batch every
/// item is validated on its own: bad items are reported by index, valid
/// ones are kept. The key's scope is checked before the body is read.
pub async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if !caller.0.allows(Scope::Ingest) && !caller.0.allows(Scope::Write) {
        return Err(ApiError::Forbidden(Scope::Ingest.as_str()));
    }
    let body = json_value(request, &state).await?;
    if !body.as_object().is_some_and(|o| o.contains_key("events")) {
        let input = event_input(&state, body)?;
        let ingested = state.pipeline.ingest(&input).await?;
        let status = if ingested.duplicate {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        return Ok((
            status,
            Json(json!({ "event": ingested.event, "duplicate": ingested.duplicate })),
        ));
    }
    let Batch { events } =
        serde_json::from_value(body).map_err(|e| ApiError::invalid(format!("batch: {e}")))?;
    if events.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "{} events in one batch; send at most {MAX_BATCH}",
            events.len()
        )));
    }
    let mut results = Vec::with_capacity(events.len());
    let (mut accepted, mut rejected) = (0, 0);
    for (index, value) in events.into_iter().enumerate() {
        let outcome = match event_input(&state, value) {
            Ok(input) => state.pipeline.ingest(&input).await.map_err(ApiError::from),
            Err(error) => Err(error),
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
