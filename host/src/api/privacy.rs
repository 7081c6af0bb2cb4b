//! `/v1/contacts/{id}/export`, `…/erase`, `…/object`, `…/audit`: the
//! contact's data-protection rights, each recorded in the audit log.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::privacy;
use crate::store::Scope;

pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        privacy::export(&state.pipeline, &id, &caller.0.id).await?,
    ))
}

pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let erased = privacy::erase(&state.pipeline, &id, &caller.0.id).await?;
    Ok(Json(json!(erased)))
}

pub async fn object(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Write)?;
    privacy::object(&state.pipeline, &id, &caller.0.id).await?;
    Ok(Json(json!({ "contact_id": id, "objected": true })))
}

pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        json!({ "entries": state.pipeline.store.audit_entries(&id).await? }),
    ))
}
