//! `/v1/journeys/{name}/kpis`, A/B promotion and `/metrics`.

use axum::Json;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::ab::AbResult;
use crate::kpis::JourneyKpis;
use crate::store::Scope;
use crate::store::tracking::AuditEntry;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Range {
    /// Unix ms, inclusive; the beginning of time by default.
    #[serde(default)]
    from: Option<i64>,
    /// Unix ms, exclusive; now by default.
    #[serde(default)]
    to: Option<i64>,
}

/// A journey's figures.
#[derive(Serialize, ToSchema)]
pub struct Kpis {
    pub kpis: JourneyKpis,
    /// Each A/B test of the latest version.
    pub ab_tests: Vec<AbResult>,
    /// The latest automatic promotions of A/B winners (audit entries).
    pub promotions: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/v1/journeys/{name}/kpis", tag = "journeys",
    summary = "KPIs per step, variant and channel, A/B results and promotions",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The journey"), Range),
    responses(
        (status = 200, description = "The figures", body = Kpis),
        (status = 404, description = "No such journey", body = ErrorBody),
    ))]
pub async fn journey(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(range): ApiQuery<Range>,
) -> Result<Json<Kpis>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let (_, def) = state.journeys.latest(&name).await?;
    let to = range.to.unwrap_or_else(|| state.pipeline.clock.now() + 1);
    let from = range.from.unwrap_or(0);
    if from >= to {
        return Err(ApiError::invalid("`from` must be before `to`"));
    }
    let kpis = crate::kpis::journey_kpis(store, &def, from, to).await?;
    let ab_tests: Vec<AbResult> = crate::ab::results(&def, &kpis.by_step)
        .into_iter()
        .map(|(result, _)| result)
        .collect();
    let promotions: Vec<AuditEntry> = store
        .audit_by_action("ab.promoted", 50)
        .await?
        .into_iter()
        .filter(|e| e.detail["journey"] == name.as_str())
        .collect();
    Ok(Json(Kpis {
        kpis,
        ab_tests,
        promotions,
    }))
}

/// A winner made the only variant of its step.
#[derive(Serialize, ToSchema)]
pub struct Promotion {
    pub step: String,
    pub variant: String,
}

#[derive(Serialize, ToSchema)]
pub struct Promoted {
    /// Empty when no test had a significant winner.
    pub promoted: Vec<Promotion>,
}

/// Promotes significant winners of the journey's auto-promoting A/B tests.
#[utoipa::path(post, path = "/v1/journeys/{name}/ab/promote", tag = "journeys",
    summary = "Promote significant winners of auto-promoting A/B tests (new version)",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The journey")),
    responses(
        (status = 200, description = "What was promoted", body = Promoted),
        (status = 404, description = "No such journey", body = ErrorBody),
    ))]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Promoted>, ApiError> {
    caller.require(Scope::Admin)?;
    let promoted = crate::ab::promote_winners(&state.journeys, &name, &caller.0.id).await?;
    let promoted = promoted
        .into_iter()
        .map(|(step, variant)| Promotion { step, variant })
        .collect();
    Ok(Json(Promoted { promoted }))
}

/// Prometheus text format; needs a key with the `read` scope.
#[utoipa::path(get, path = "/metrics", tag = "stats",
    summary = "Prometheus metrics (text format)",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String)))]
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
