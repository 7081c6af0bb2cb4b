//! `/v1/segments`: size, members and rebuild progress.

use axum::Json;
use axum::extract::{Path, State};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::store::tasks::SEGMENT_REBUILD;
use crate::store::tasks::TaskProgress;
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

/// A segment: its binding, size and latest rebuild.
#[derive(Serialize, ToSchema)]
pub struct Segment {
    pub name: String,
    /// The segment-rule plugin.
    pub plugin: String,
    pub config: BTreeMap<String, String>,
    /// Members now.
    pub size: i64,
    /// The latest rebuild, null when there was none.
    pub rebuild: Option<TaskProgress>,
}

#[utoipa::path(get, path = "/v1/segments/{name}", tag = "segments",
    summary = "Segment size and rebuild progress",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The segment (its binding's name)")),
    responses(
        (status = 200, description = "The segment", body = Segment),
        (status = 404, description = "No such segment", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Segment>, ApiError> {
    caller.require(Scope::Read)?;
    let def = segment(&state, &name).await?;
    // Any node reads the progress: it is kept with the durable task. Read
    // before the size: a rebuild commits each page's members with its
    // progress, so the size then includes at least what the progress shows
    // (a finished rebuild's size is complete).
    let rebuild = state
        .pipeline
        .store
        .latest_task(SEGMENT_REBUILD, &name)
        .await?;
    let size = state.pipeline.store.segment_size(&name).await?;
    Ok(Json(Segment {
        name: def.name,
        plugin: def.plugin,
        config: def.config,
        size,
        rebuild,
    }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// Cursor: the last id of the previous page.
    #[serde(default)]
    pub after: Option<String>,
    /// Most ids to answer (default 100).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A page of member ids.
#[derive(Serialize, ToSchema)]
pub struct Members {
    /// Contact ids in order.
    pub members: Vec<String>,
    /// The `after` of the next page; null when empty.
    pub next_after: Option<String>,
}

#[utoipa::path(get, path = "/v1/segments/{name}/members", tag = "segments",
    summary = "Member contact ids, a page at a time",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The segment"), MembersQuery),
    responses(
        (status = 200, description = "A page of members", body = Members),
        (status = 404, description = "No such segment", body = ErrorBody),
    ))]
pub async fn members(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<MembersQuery>,
) -> Result<Json<Members>, ApiError> {
    caller.require(Scope::Read)?;
    segment(&state, &name).await?;
    let members = state
        .pipeline
        .store
        .segment_members(&name, query.after.as_deref(), query.limit.unwrap_or(100))
        .await?;
    let next_after = members.last().cloned();
    Ok(Json(Members {
        members,
        next_after,
    }))
}
