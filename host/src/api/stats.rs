//! Figures for the operator dashboard: overview, segment sizes, plugin
//! calls, a contact's score history; and the dashboard page itself.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::Caller;
use super::{ApiError, AppState};
use crate::store::{BindingKind, MessageCounts, Scope, ScoreEntry};

const DAY: i64 = 24 * 60 * 60 * 1000;

/// The dashboard: one page, built into the binary. It shows nothing until
/// the operator logs in with an API key; every figure comes from the API.
#[utoipa::path(get, path = "/dashboard", tag = "docs",
    summary = "The operator dashboard (log in with an API key)",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub async fn dashboard() -> Response {
    Html(include_str!("../../dashboard/index.html")).into_response()
}

#[utoipa::path(get, path = "/", tag = "docs",
    summary = "Redirects to the dashboard",
    responses((status = 303, description = "To /dashboard", headers(("location" = String)))))]
pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

/// A figure for one day.
#[derive(Serialize, ToSchema)]
pub struct DayCount {
    /// The day's start, Unix ms (UTC).
    pub day: i64,
    pub count: i64,
}

/// The dashboard's overview.
#[derive(Serialize, ToSchema)]
pub struct Overview {
    pub contacts: i64,
    pub events_last_30_days: i64,
    /// The last 30 days that had events, oldest first.
    pub events_per_day: Vec<DayCount>,
    pub active_journeys: usize,
    pub sent_last_30_days: i64,
    /// Opened among delivered messages; null when none was delivered.
    pub open_rate: Option<f64>,
    pub click_rate: Option<f64>,
}

#[utoipa::path(get, path = "/v1/stats/overview", tag = "stats",
    summary = "Dashboard overview: contacts, events per day (30 days), active journeys, sends, open and click rate",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The overview", body = Overview)))]
pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Overview>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let now = state.pipeline.clock.now();
    let since = (now / DAY - 29) * DAY;
    let mut events_per_day = Vec::new();
    let mut total = 0;
    for (day, n) in store.events_per_day(since / DAY).await? {
        total += n;
        events_per_day.push(DayCount {
            day: day * DAY,
            count: n,
        });
    }
    let MessageCounts {
        sent,
        opened,
        clicked,
        bounced,
    } = store.message_counts(since).await?;
    let delivered = (sent - bounced).max(0);
    let rate = |n: i64| (delivered > 0).then(|| n as f64 / delivered as f64);
    let active = store
        .latest_journeys()
        .await?
        .iter()
        .filter(|j| j.active)
        .count();
    Ok(Json(Overview {
        contacts: store.count_contacts().await?,
        events_last_30_days: total,
        events_per_day,
        active_journeys: active,
        sent_last_30_days: sent,
        open_rate: rate(opened),
        click_rate: rate(clicked),
    }))
}

/// A segment's size on one day.
#[derive(Serialize, ToSchema)]
pub struct DaySize {
    /// The day's start, Unix ms (UTC).
    pub day: i64,
    pub size: i64,
}

/// One segment's figures.
#[derive(Serialize, ToSchema)]
pub struct SegmentStats {
    pub name: String,
    pub plugin: String,
    pub members: i64,
    /// The last 30 days, oldest first.
    pub size_per_day: Vec<DaySize>,
}

#[derive(Serialize, ToSchema)]
pub struct SegmentsStats {
    pub segments: Vec<SegmentStats>,
}

/// Each segment's members, and how many of today's members had joined by
/// each of the last 30 days.
#[utoipa::path(get, path = "/v1/stats/segments", tag = "stats",
    summary = "Segments with members and size per day (30 days)",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The segments", body = SegmentsStats)))]
pub async fn segments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SegmentsStats>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let today = state.pipeline.clock.now() / DAY;
    let mut segments = Vec::new();
    for def in store.bindings(BindingKind::Segment).await? {
        let joined = store.segment_joins_per_day(&def.name).await?;
        let members: i64 = joined.iter().map(|(_, n)| n).sum();
        let size_per_day: Vec<DaySize> = (today - 29..=today)
            .map(|day| {
                let size: i64 = joined
                    .iter()
                    .filter(|(d, _)| *d <= day)
                    .map(|(_, n)| n)
                    .sum();
                DaySize {
                    day: day * DAY,
                    size,
                }
            })
            .collect();
        segments.push(SegmentStats {
            name: def.name,
            plugin: def.plugin,
            members,
            size_per_day,
        });
    }
    Ok(Json(SegmentsStats { segments }))
}

/// Calls of one plugin version since this node started.
#[derive(Serialize, ToSchema)]
pub struct PluginStats {
    pub plugin: String,
    pub version: String,
    /// The WIT world it implements.
    pub world: String,
    pub calls: u64,
    /// Errors the plugin returned.
    pub errors: u64,
    /// Traps and limits hit.
    pub traps: u64,
    /// Null before the first call.
    pub mean_latency_us: Option<f64>,
}

#[derive(Serialize, ToSchema)]
pub struct PluginsStats {
    pub plugins: Vec<PluginStats>,
}

#[utoipa::path(get, path = "/v1/stats/plugins", tag = "stats",
    summary = "Calls, errors, traps and mean latency per plugin version",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "Per plugin version", body = PluginsStats)))]
pub async fn plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PluginsStats>, ApiError> {
    caller.require(Scope::Read)?;
    let plugins: Vec<PluginStats> = state
        .pipeline
        .registry
        .all_versions()
        .iter()
        .map(|plugin| {
            let stats = plugin.stats();
            let calls = stats.calls.load(Ordering::Relaxed);
            let busy = stats.busy_micros.load(Ordering::Relaxed);
            PluginStats {
                plugin: plugin.manifest().name.clone(),
                version: plugin.manifest().version.clone(),
                world: plugin.manifest().world.to_string(),
                calls,
                errors: stats.plugin_errors.load(Ordering::Relaxed),
                traps: stats.runtime_errors.load(Ordering::Relaxed),
                mean_latency_us: (calls > 0).then(|| busy as f64 / calls as f64),
            }
        })
        .collect();
    Ok(Json(PluginsStats { plugins }))
}

/// A contact's score changes.
#[derive(Serialize, ToSchema)]
pub struct ScoreHistory {
    /// Newest first.
    pub history: Vec<ScoreEntry>,
}

#[utoipa::path(get, path = "/v1/contacts/{id}/scores", tag = "contacts",
    summary = "The contact's score history with reasons, newest first",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The history", body = ScoreHistory),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn scores(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ScoreHistory>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let mut history = state.pipeline.store.score_history(&id).await?;
    history.reverse();
    Ok(Json(ScoreHistory { history }))
}
