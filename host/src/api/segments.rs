//! `/v1/segments`: size, members and rebuild progress.

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::store::tasks::SEGMENT_REBUILD;
use crate::store::{BindingKind, Scope};

/// The segment's binding, or 404.
async fn segment(state: &AppState, name: &str) -> Result<crate::store::BindingDef, ApiError> {
    state
        .pipeline
        .store
        .bindings(BindingKind::Segment)
        .await?
        .into_iter()
        .find(|b| b.name == name)
        .ok_or_else(|| ApiError::NotFound(format!("segment {name} does not exist")))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let def = segment(&state, &name).await?;
    let size = state.pipeline.store.segment_size(&name).await?;
    // Any node reads the progress: it is kept with the durable task.
    let rebuild = state
        .pipeline
        .store
        .latest_task(SEGMENT_REBUILD, &name)
        .await?;
    Ok(Json(
        json!({ "name": def.name, "plugin": def.plugin, "config": def.config, "size": size, "rebuild": rebuild }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembersQuery {
    #[serde(default)]
    pub after: Option<String>,
    #[serde(default)]
    pub limit: Option<u32>,
}

pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<MembersQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    segment(&state, &name).await?;
    let members = state
        .pipeline
        .store
        .segment_members(&name, query.after.as_deref(), query.limit.unwrap_or(100))
        .await?;
    let next = members.last().cloned();
    Ok(Json(json!({ "members": members, "next_after": next })))
}
