//! Figures for the operator dashboard: overview, segment sizes, plugin
//! calls, a contact's score history; and the dashboard page itself.

use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde_json::{Value, json};
use sqlx::Row;

use super::extract::Caller;
use super::{ApiError, AppState};
use crate::store::{BindingKind, Scope};

const DAY: i64 = 24 * 60 * 60 * 1000;

/// The dashboard: one page, built into the binary. It shows nothing until
/// the operator logs in with an API key; every figure comes from the API.
pub async fn dashboard() -> Response {
    Html(include_str!("../../dashboard/index.html")).into_response()
}

pub async fn root() -> Redirect {
    Redirect::to("/dashboard")
}

fn internal(e: sqlx::Error) -> ApiError {
    ApiError::Internal(e.to_string())
}

pub async fn overview(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let now = state.pipeline.clock.now();
    let since = (now / DAY - 29) * DAY;
    let days = sqlx::query(
        "SELECT day, CAST(SUM(events) AS BIGINT) AS n FROM event_days WHERE day >= $1 GROUP BY day ORDER BY day",
    )
    .bind(since / DAY)
    .fetch_all(store.pool())
    .await
    .map_err(internal)?;
    let mut events_per_day = Vec::new();
    let mut total = 0;
    for row in &days {
        let (day, n): (i64, i64) = (
            row.try_get("day").map_err(internal)?,
            row.try_get("n").map_err(internal)?,
        );
        total += n;
        events_per_day.push(json!({ "day": day * DAY, "count": n }));
    }
    let messages = sqlx::query(
        "SELECT COUNT(CASE WHEN status = 'delivered' THEN 1 END) AS sent, \
                COUNT(CASE WHEN opens > 0 THEN 1 END) AS opened, \
                COUNT(CASE WHEN clicks > 0 THEN 1 END) AS clicked, \
                COUNT(CASE WHEN bounce IS NOT NULL THEN 1 END) AS bounced \
         FROM outbox WHERE created_at >= $1",
    )
    .bind(since)
    .fetch_one(store.pool())
    .await
    .map_err(internal)?;
    let count = |name: &str| messages.try_get::<i64, _>(name).map_err(internal);
    let (sent, opened, clicked, bounced) = (
        count("sent")?,
        count("opened")?,
        count("clicked")?,
        count("bounced")?,
    );
    let delivered = (sent - bounced).max(0);
    let rate = |n: i64| (delivered > 0).then(|| n as f64 / delivered as f64);
    let active = store
        .latest_journeys()
        .await?
        .iter()
        .filter(|j| j.active)
        .count();
    Ok(Json(json!({
        "contacts": store.count_contacts().await?,
        "events_last_30_days": total,
        "events_per_day": events_per_day,
        "active_journeys": active,
        "sent_last_30_days": sent,
        "open_rate": rate(opened),
        "click_rate": rate(clicked),
    })))
}

/// Each segment's members, and how many of today's members had joined by
/// each of the last 30 days.
pub async fn segments(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let today = state.pipeline.clock.now() / DAY;
    let mut segments = Vec::new();
    for def in store.bindings(BindingKind::Segment).await? {
        let rows = sqlx::query(
            "SELECT since / 86400000 AS day, COUNT(*) AS n FROM segment_members WHERE segment = $1 GROUP BY since / 86400000 ORDER BY day",
        )
        .bind(def.name.clone())
        .fetch_all(store.pool())
        .await
        .map_err(internal)?;
        let joined: Vec<(i64, i64)> = rows
            .iter()
            .map(|r| Ok((r.try_get("day")?, r.try_get("n")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(internal)?;
        let members: i64 = joined.iter().map(|(_, n)| n).sum();
        let size_per_day: Vec<Value> = (today - 29..=today)
            .map(|day| {
                let size: i64 = joined
                    .iter()
                    .filter(|(d, _)| *d <= day)
                    .map(|(_, n)| n)
                    .sum();
                json!({ "day": day * DAY, "size": size })
            })
            .collect();
        segments.push(json!({ "name": def.name, "plugin": def.plugin, "members": members, "size_per_day": size_per_day }));
    }
    Ok(Json(json!({ "segments": segments })))
}

pub async fn plugins(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let plugins: Vec<Value> = state
        .pipeline
        .registry
        .all_versions()
        .iter()
        .map(|plugin| {
            let stats = plugin.stats();
            let calls = stats.calls.load(Ordering::Relaxed);
            let busy = stats.busy_micros.load(Ordering::Relaxed);
            json!({
                "plugin": plugin.manifest().name,
                "version": plugin.manifest().version,
                "world": plugin.manifest().world,
                "calls": calls,
                "errors": stats.plugin_errors.load(Ordering::Relaxed),
                "traps": stats.runtime_errors.load(Ordering::Relaxed),
                "mean_latency_us": (calls > 0).then(|| busy as f64 / calls as f64),
            })
        })
        .collect();
    Ok(Json(json!({ "plugins": plugins })))
}

pub async fn scores(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let mut history = state.pipeline.store.score_history(&id).await?;
    history.reverse();
    Ok(Json(json!({ "history": history })))
}
