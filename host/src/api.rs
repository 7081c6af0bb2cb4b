//! The REST API under `/v1`: `fn app(state) -> Router`.

mod contacts;
mod error;
mod events;
mod extract;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use crate::ingest::Pipeline;

/// Largest request body: a batch of 1,000 events fits comfortably.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
}

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/contacts", post(contacts::upsert))
        .route(
            "/v1/contacts/{id}",
            get(contacts::get).delete(contacts::delete),
        )
        .route("/v1/contacts/{id}/timeline", get(events::timeline))
        .route("/v1/events", post(events::ingest))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
