//! `/v1/contacts`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::store::{ContactInput, Scope};

/// Creates a contact, or updates the one with the same email or external id.
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ContactInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Write)?;
    let record = state.pipeline.upsert_contact(&input).await?;
    let status = if record.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(record.contact))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(json!(state.pipeline.store.contact(&id).await?)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Write)?;
    if state.pipeline.store.delete_contact(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("contact {id} does not exist")))
    }
}
