//! `/v1/journeys/{name}/kpis`, A/B promotion and `/metrics`.

use axum::Json;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::store::Scope;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Range {
    /// Unix ms, inclusive; the beginning of time by default.
    #[serde(default)]
    from: Option<i64>,
    /// Unix ms, exclusive; now by default.
    #[serde(default)]
    to: Option<i64>,
}

pub async fn journey(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let (_, def) = state.journeys.latest(&name).await?;
    let to = range.to.unwrap_or_else(|| state.pipeline.clock.now() + 1);
    let from = range.from.unwrap_or(0);
    if from >= to {
        return Err(ApiError::invalid("`from` must be before `to`"));
    }
    let kpis = crate::kpis::journey_kpis(store, &def, from, to).await?;
    let ab: Vec<Value> = crate::ab::results(&def, &kpis.by_step)
        .into_iter()
        .map(|(result, _)| json!(result))
        .collect();
    let promotions: Vec<Value> = store
        .audit_by_action("ab.promoted", 50)
        .await?
        .into_iter()
        .filter(|e| e.detail["journey"] == name.as_str())
        .map(|e| json!(e))
        .collect();
    Ok(Json(
        json!({ "kpis": kpis, "ab_tests": ab, "promotions": promotions }),
    ))
}

/// Promotes significant winners of the journey's auto-promoting A/B tests.
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let promoted = crate::ab::promote_winners(&state.journeys, &name, &caller.0.id).await?;
    let promoted: Vec<Value> = promoted
        .into_iter()
        .map(|(step, variant)| json!({ "step": step, "variant": variant }))
        .collect();
    Ok(Json(json!({ "promoted": promoted })))
}

/// Prometheus text format; needs a key with the `read` scope.
pub async fn metrics(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    caller.require(Scope::Read)?;
    let text = crate::metrics::render(&state.pipeline).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Counts every request by its route pattern, method and status.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().to_string();
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    crate::metrics::http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
