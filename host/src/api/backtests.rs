//! `/v1/plugins/{name}/backtests`, `/v1/backtests/{id}` and
//! `/v1/contacts/{id}/replay`: what a plugin version would do, computed
//! from the stored history without changing anything live.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

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
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(json!(state.pipeline.store.backtest(&id).await?)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayQuery {
    /// The scorer binding to replay.
    binding: String,
    /// An installed version; default the one serving the binding.
    #[serde(default)]
    version: Option<String>,
}

/// One contact's events replayed through a scorer binding, step by step,
/// beside what live scoring stored.
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
