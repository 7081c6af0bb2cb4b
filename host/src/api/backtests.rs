//! `/v1/plugins/{name}/backtests`, `/v1/backtests/{id}` and
//! `/v1/contacts/{id}/replay`: what a plugin version would do, computed
//! from the stored history without changing anything live.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::IntoParams;

use super::error::ErrorBody;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::backtest::{self, BacktestRequest};
use crate::replay::{self, ReplayError};
use crate::store::Scope;

impl From<ReplayError> for ApiError {
    fn from(error: ReplayError) -> Self {
        match error {
            ReplayError::NotFound(why) => ApiError::NotFound(why),
            ReplayError::Invalid(why) => ApiError::invalid(why),
            ReplayError::Store(e) => e.into(),
        }
    }
}

/// An admin queues a backtest of an installed version; 202 with its id.
#[utoipa::path(post, path = "/v1/plugins/{name}/backtests", tag = "plugins",
    summary = "Backtest an installed version against the stored history, beside the live one (nothing live changes)",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The plugin")),
    request_body(content = Object, description = "`version` (installed, not necessarily live), optional `bindings`, `from`/`to` (Unix ms), `goal_events` and `window_days`; see the README"),
    responses(
        (status = 202, description = "Queued: the backtest with its id and progress", body = Object),
        (status = 404, description = "No such plugin, version or binding", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<BacktestRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    let id = backtest::start(&state.pipeline, &name, request).await?;
    let row = state.pipeline.store.backtest(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(row))))
}

/// The plugin's backtests, newest first.
#[utoipa::path(get, path = "/v1/plugins/{name}/backtests", tag = "plugins",
    summary = "The plugin's backtests, newest first",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The plugin")),
    responses((status = 200, description = "`backtests`: each with progress and, when done, its report", body = Object)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(
        json!({ "backtests": state.pipeline.store.backtests(&name, 100).await? }),
    ))
}

/// One backtest: progress, and the report when done. Any node answers.
#[utoipa::path(get, path = "/v1/backtests/{id}", tag = "plugins",
    summary = "One backtest: progress, and the report when done",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The backtest")),
    responses(
        (status = 200, description = "The backtest", body = Object),
        (status = 404, description = "No such backtest", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(json!(state.pipeline.store.backtest(&id).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// The scorer binding to replay.
    binding: String,
    /// An installed version; default the one serving the binding.
    #[serde(default)]
    version: Option<String>,
}

/// One contact's events replayed through a scorer binding, step by step,
/// beside what live scoring stored.
#[utoipa::path(get, path = "/v1/contacts/{id}/replay", tag = "contacts",
    summary = "Replay a contact's events through a scorer binding's version, step by step, beside the stored scores",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact"), ReplayQuery),
    responses(
        (status = 200, description = "Each step with its delta, reasons, score and stage, and whether the replay equals the stored history", body = Object),
        (status = 404, description = "No such contact or binding", body = ErrorBody),
    ))]
pub async fn contact(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<ReplayQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let replay = replay::replay_contact(
        &state.pipeline,
        &id,
        &query.binding,
        query.version.as_deref(),
    )
    .await?;
    Ok(Json(json!(replay)))
}
