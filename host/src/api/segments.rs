//! `/v1/segments`: size, members and rebuild progress.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::Instrument;

use super::extract::{ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::segments::{RebuildProgress, rebuild};
use crate::store::{BindingKind, Scope};

/// Rebuild progress per segment, shared by the handlers and the tasks.
pub type Rebuilds = Arc<Mutex<HashMap<String, RebuildProgress>>>;

/// Starts rebuilding `segment` in the background; the latest progress is
/// kept in `state.rebuilds`.
pub fn start_rebuild(state: &AppState, segment: &str) {
    let (pipeline, rebuilds, segment) = (
        state.pipeline.clone(),
        state.rebuilds.clone(),
        segment.to_owned(),
    );
    let now = pipeline.clock.now();
    let span = tracing::info_span!("segment_rebuild", %segment);
    let task = async move {
        let publish = |progress: &RebuildProgress| {
            rebuilds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(segment.clone(), progress.clone());
        };
        if let Err(e) = rebuild(&pipeline, &segment, now, publish).await {
            tracing::error!(%segment, error = %e, "segment rebuild failed");
            let failed = RebuildProgress {
                done: true,
                error: Some(e.to_string()),
                ..Default::default()
            };
            rebuilds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(segment.clone(), failed);
        }
    };
    tokio::spawn(task.instrument(span));
}

/// Rebuilds every segment served by `plugin`, after its live version changed.
pub async fn rebuild_segments_of(state: &AppState, plugin: &str) -> Result<(), ApiError> {
    for def in state.pipeline.store.bindings(BindingKind::Segment).await? {
        if def.plugin == plugin {
            start_rebuild(state, &def.name);
        }
    }
    Ok(())
}

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
    let rebuild = state
        .rebuilds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&name)
        .cloned();
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
