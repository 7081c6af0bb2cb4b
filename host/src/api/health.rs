//! `/healthz` (the process answers) and `/readyz` (it can serve: the
//! database answers, every migration is applied, every bound plugin is
//! loaded), without a key, for load balancers and orchestrators.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::store::BindingKind;

/// Whether the node can serve; `problems` only when not.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok` (healthz), `ready` or `not_ready` (readyz).
    pub status: &'static str,
    /// What is missing, when not ready: no data, only which check failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
}

#[utoipa::path(get, path = "/healthz", tag = "health",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        problems: None,
    })
}

/// 200 when ready, 503 with what is missing otherwise. Details name no
/// data, only which check failed.
#[utoipa::path(get, path = "/readyz", tag = "health",
    summary = "Readiness: database reachable, migrations applied, every bound plugin loaded",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready, with the problems", body = Health),
    ))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
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
        (
            StatusCode::OK,
            Json(Health {
                status: "ready",
                problems: None,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "not_ready",
                problems: Some(problems),
            }),
        )
    }
}
