//! `/healthz` (the process answers) and `/readyz` (it can serve: the
//! database answers, every migration is applied, every bound plugin is
//! loaded), without a key, for load balancers and orchestrators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use crate::store::BindingKind;

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when ready, 503 with what is missing otherwise. Details name no
/// data, only which check failed.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = &state.pipeline.store;
    let mut problems: Vec<String> = Vec::new();
    match store.migrations_pending().await {
        Ok(0) => {}
        Ok(n) => problems.push(format!("{n} database migrations are not applied")),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database check failed");
            problems.push("the database does not answer".into());
        }
    }
    if problems.is_empty() {
        for kind in [
            BindingKind::Scorer,
            BindingKind::Segment,
            BindingKind::Channel,
        ] {
            match store.bindings(kind).await {
                Ok(bindings) => problems.extend(
                    bindings
                        .iter()
                        .filter(|b| state.pipeline.registry.live(&b.plugin).is_none())
                        .map(|b| {
                            format!("plugin {} of binding {} is not loaded", b.plugin, b.name)
                        }),
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "readiness: bindings unreadable");
                    problems.push("the bindings cannot be read".into());
                    break;
                }
            }
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not_ready", "problems": problems })),
        )
    }
}
