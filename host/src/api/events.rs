//! `/v1/events` and the timeline.

use axum::Json;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::extract::{ApiQuery, Caller, json_value};
use super::{ApiError, AppState, EventTimes, edge};
use crate::model::Event;
use crate::store::{EventInput, Scope};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;

/// `{"events": [...]}`: a batch, and nothing else beside the list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    events: Vec<Value>,
}

/// What `/v1/events` takes: one event, or a batch of up to 1,000. The
/// handler reads the body itself (items are checked one by one); this
/// type only describes it.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Never built: it only describes the body.
pub enum EventsBody {
    One(EventInput),
    Batch(EventBatch),
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Never built: it only describes the body.
pub struct EventBatch {
    /// Up to 1,000 events; each is checked on its own.
    #[schema(max_items = 1000)]
    events: Vec<EventInput>,
}

/// The answer to one event.
#[derive(Serialize, ToSchema)]
pub struct Ingested {
    pub event: Event,
    /// True when an event with the same `client_event_id` was already
    /// recorded: this one was not stored again.
    pub duplicate: bool,
}

/// The answer to a batch: one result per item, in order.
#[derive(Serialize, ToSchema)]
pub struct BatchReport {
    pub accepted: usize,
    pub rejected: usize,
    pub results: Vec<ItemResult>,
}

/// One item of a batch: its id, or why it was refused.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum ItemResult {
    Accepted {
        index: usize,
        id: String,
        duplicate: bool,
    },
    Rejected {
        index: usize,
        error: String,
    },
}

/// The answer to `/v1/events`, by the body's form.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum IngestAnswer {
    One(Ingested),
    Batch(BatchReport),
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
#[utoipa::path(post, path = "/v1/events", tag = "events",
    summary = "Ingest one event, or {\"events\": [...]} (up to 1,000, per-item results); the write scope also serves",
    security(("apiKey" = ["ingest"])),
    request_body(content = inline(EventsBody), description = "One event, or a batch under `events`; an event names its contact by contact_id, email or external_id (one is created for an unknown email or external_id)"),
    responses(
        (status = 200, description = "One event, already recorded under its client_event_id", body = IngestAnswer),
        (status = 201, description = "One event stored, or a batch all stored", body = IngestAnswer),
        (status = 207, description = "A batch with refused items (see `results`)", body = BatchReport),
        (status = 404, description = "The event names a contact_id that does not exist", body = ErrorBody),
        (status = 409, description = "One event whose client_event_id is taken by a different event, or whose email and external_id belong to two different contacts (merge them first)", body = ErrorBody),
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    request: Request,
) -> Result<(StatusCode, Json<IngestAnswer>), ApiError> {
    if !caller.0.allows(Scope::Ingest) && !caller.0.allows(Scope::Write) {
        return Err(ApiError::Forbidden(Scope::Ingest.as_str()));
    }
    let body = json_value(request, &state).await?;
    if !body.as_object().is_some_and(|o| o.contains_key("events")) {
        let input = event_input(&state, body)?;
        let ingested = state.ingest.submit(input).await?;
        let status = if ingested.duplicate {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        return Ok((
            status,
            Json(IngestAnswer::One(Ingested {
                event: ingested.event,
                duplicate: ingested.duplicate,
            })),
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
    // Items that parse are stored together; the others are refused by index.
    let mut parsed = Vec::with_capacity(events.len());
    let mut refused = Vec::new();
    for (index, value) in events.into_iter().enumerate() {
        match event_input(&state, value) {
            Ok(input) => parsed.push((index, input)),
            Err(error) => refused.push((index, error)),
        }
    }
    let (indexes, inputs): (Vec<usize>, Vec<EventInput>) = parsed.into_iter().unzip();
    let stored = state.pipeline.ingest_batch(&inputs).await?;
    let mut outcomes: Vec<(usize, Result<crate::store::Ingested, ApiError>)> = indexes
        .into_iter()
        .zip(stored.into_iter().map(|r| r.map_err(ApiError::from)))
        .chain(
            refused
                .into_iter()
                .map(|(index, error)| (index, Err(error))),
        )
        .collect();
    outcomes.sort_by_key(|(index, _)| *index);
    let mut results = Vec::with_capacity(outcomes.len());
    let (mut accepted, mut rejected) = (0, 0);
    for (index, outcome) in outcomes {
        match outcome {
            Ok(ingested) => {
                accepted += 1;
                results.push(ItemResult::Accepted {
                    index,
                    id: ingested.event.id,
                    duplicate: ingested.duplicate,
                });
            }
            Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail)),
            Err(error) => {
                rejected += 1;
                results.push(ItemResult::Rejected {
                    index,
                    error: error.to_string(),
                });
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
        Json(IngestAnswer::Batch(BatchReport {
            accepted,
            rejected,
            results,
        })),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Most events to answer (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only events before this time (Unix ms): the `next_before` of the
    /// previous page.
    #[serde(default)]
    pub before: Option<i64>,
}

/// A page of the timeline.
#[derive(Serialize, ToSchema)]
pub struct Timeline {
    /// Newest first.
    pub events: Vec<Event>,
    /// The `before` of the next page; null when empty.
    pub next_before: Option<i64>,
}

/// The contact's touchpoints, newest first.
#[utoipa::path(get, path = "/v1/contacts/{id}/timeline", tag = "contacts",
    summary = "The contact's touchpoints, newest first",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact's id"), TimelineQuery),
    responses(
        (status = 200, description = "A page of events", body = Timeline),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TimelineQuery>,
) -> Result<Json<Timeline>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let events = state
        .pipeline
        .store
        .timeline(&id, query.limit.unwrap_or(100), query.before)
        .await?;
    let next_before = events.last().map(|e| e.at);
    Ok(Json(Timeline {
        events,
        next_before,
    }))
}
