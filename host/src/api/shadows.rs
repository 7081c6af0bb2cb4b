//! `/v1/bindings/{name}/shadow`: a candidate version beside a binding's
//! live one on live traffic, recorded and never applied; its report;
//! promote or discard.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::error::ErrorBody;
use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::shadow::{self, ShadowError, ShadowReport, ShadowRequest};
use crate::store::{Scope, ShadowRow};

impl From<ShadowError> for ApiError {
    fn from(error: ShadowError) -> Self {
        match error {
            ShadowError::NotFound(why) => ApiError::NotFound(why),
            ShadowError::Invalid(why) => ApiError::invalid(why),
            ShadowError::Conflict(why) => ApiError::Conflict(why),
            ShadowError::Store(e) => e.into(),
            ShadowError::Plugins(e) => e.into(),
        }
    }
}

/// An admin puts an installed version in shadow for a scorer or segment
/// binding, on every node.
#[utoipa::path(post, path = "/v1/bindings/{name}/shadow", tag = "plugins",
    summary = "Run an installed version in shadow beside a scorer or segment binding's live version: its answers are recorded, never applied",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The binding")),
    request_body = ShadowRequest,
    responses(
        (status = 201, description = "The shadow, running", body = ShadowRow),
        (status = 404, description = "No such binding or version", body = ErrorBody),
        (status = 409, description = "The binding has a shadow running already", body = ErrorBody),
        (status = 422, description = "A channel binding, a version of another world or plugin, or the version serving the binding already", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<ShadowRequest>,
) -> Result<(StatusCode, Json<ShadowRow>), ApiError> {
    caller.require(Scope::Admin)?;
    let row = shadow::start(&state.pipeline, &name, &request, &caller.0.id).await?;
    Ok((StatusCode::CREATED, Json(row)))
}

/// The report of the binding's running shadow, or of its last one.
#[utoipa::path(get, path = "/v1/bindings/{name}/shadow", tag = "plugins",
    summary = "The shadow's report: agreement, disagreements with samples, latency and instructions of both versions",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The binding")),
    responses(
        (status = 200, description = "The report of the running shadow, or of the last one", body = ShadowReport),
        (status = 404, description = "No such binding, or it never had a shadow", body = ErrorBody),
    ))]
pub async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(shadow::report_of(&state.pipeline, &name).await?))
}

/// Ends the shadow without changing what is live.
#[utoipa::path(delete, path = "/v1/bindings/{name}/shadow", tag = "plugins",
    summary = "Discard the binding's shadow; its report stays readable",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The binding")),
    responses(
        (status = 200, description = "The final report", body = ShadowReport),
        (status = 404, description = "No shadow running for the binding", body = ErrorBody),
    ))]
pub async fn discard(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(shadow::discard(&state.pipeline, &name).await?))
}

/// Makes the candidate live everywhere (an activation) and ends the shadow.
#[utoipa::path(post, path = "/v1/bindings/{name}/shadow/promote", tag = "plugins",
    summary = "Make the shadow's version live on every node (an activation, with its capability review) and end the shadow",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The binding")),
    responses(
        (status = 200, description = "The final report; the shadow's status is `promoted`", body = ShadowReport),
        (status = 404, description = "No shadow running for the binding", body = ErrorBody),
        (status = 409, description = "The binding's pin excludes the version, or it needs an approval (`needs_approval`)", body = ErrorBody),
    ))]
pub async fn promote(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<ShadowReport>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        shadow::promote(&state.pipeline, &name, &caller.0.id).await?,
    ))
}
