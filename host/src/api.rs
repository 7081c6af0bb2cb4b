//! The REST API under `/v1`: `fn app(state) -> Router`.

mod backtests;
mod client;
pub mod connections;
mod contacts;
pub mod edge;
mod error;
mod events;
mod extract;
mod health;
mod journeys;
mod kpis;
mod mailbox;
pub mod openapi;
mod plugins;
mod privacy;
mod segments;
mod stats;
mod tracking;
mod trust;

use std::net::IpAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use tower_http::trace::TraceLayer;

pub use error::ApiError;

use std::sync::Arc;

use crate::ingest::Pipeline;
use crate::journeys::Journeys;
use crate::policy::Policy;

/// Largest request body: a batch of 1,000 events fits comfortably.
pub const MAX_BODY_BYTES: usize = 4 << 20;

/// What a plugin upload may carry besides the component itself (the
/// runtime's size limit decides about the component, with a precise error).
pub const UPLOAD_OVERHEAD_BYTES: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub pipeline: Pipeline,
    /// The plugins directory this node imports from; uploads are stored in
    /// the database (the cluster's truth), not here.
    pub plugins_dir: Option<PathBuf>,
    pub journeys: Arc<Journeys>,
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`);
    /// from any other peer the header is ignored.
    pub trusted_proxies: Arc<Vec<IpAddr>>,
    /// The event times `/v1/events` accepts.
    pub event_times: EventTimes,
    /// The demo mailbox, only while `nachfass demo` serves.
    pub mailbox: Option<Arc<crate::mailbox::Mailbox>>,
    /// Which OCI registries plugins may be installed from, and how.
    pub oci: OciSettings,
}

/// Installing plugins from OCI registries.
#[derive(Clone, Debug, Default)]
pub struct OciSettings {
    /// Registries (`host[:port]`) a plugin may be pulled from; empty: none.
    pub allowed: crate::oci::AllowedRegistries,
    pub client: crate::oci::OciClient,
}

/// The range of event times accepted over the API: from `oldest` (Unix
/// ms) to `ahead` ms after now. A time outside is a client bug (seconds
/// sent as milliseconds, a zero date) that would corrupt `last_seen_at`
/// and hide the event from the timeline.
#[derive(Clone, Copy, Debug)]
pub struct EventTimes {
    pub oldest: i64,
    pub ahead: i64,
}

/// 2000-01-01T00:00:00Z.
pub const DEFAULT_OLDEST_EVENT_MS: i64 = 946_684_800_000;

/// One day.
pub const DEFAULT_EVENT_AHEAD_MS: i64 = 24 * 60 * 60 * 1000;

impl Default for EventTimes {
    fn default() -> Self {
        EventTimes {
            oldest: DEFAULT_OLDEST_EVENT_MS,
            ahead: DEFAULT_EVENT_AHEAD_MS,
        }
    }
}

impl AppState {
    /// State with journeys under the default policy.
    pub fn new(pipeline: Pipeline, plugins_dir: Option<PathBuf>) -> AppState {
        let journeys = Journeys::new(pipeline.clone(), Policy::default());
        AppState::with_journeys(journeys, plugins_dir)
    }

    pub fn with_journeys(journeys: Arc<Journeys>, plugins_dir: Option<PathBuf>) -> AppState {
        AppState {
            pipeline: journeys.pipeline.clone(),
            plugins_dir,
            journeys,
            trusted_proxies: Arc::default(),
            event_times: EventTimes::default(),
            mailbox: None,
            oci: OciSettings::default(),
        }
    }

    /// Adds the demo mailbox (`nachfass demo`).
    pub fn with_mailbox(mut self, mailbox: Arc<crate::mailbox::Mailbox>) -> AppState {
        self.mailbox = Some(mailbox);
        self
    }
}

/// Makes this node's runtime follow the trusted keys in the database at once.
async fn refresh_trust(state: &AppState) -> Result<(), ApiError> {
    Ok(state
        .pipeline
        .store
        .reload_trust(state.pipeline.registry.runtime())
        .await?)
}

/// The body limit of plugin uploads: the component size limit, plus room
/// for a multipart form's manifest and boundaries.
pub(crate) fn max_upload_bytes(state: &AppState) -> usize {
    state
        .pipeline
        .registry
        .runtime()
        .limits()
        .max_component_bytes
        .saturating_add(UPLOAD_OVERHEAD_BYTES)
}

pub fn app(state: AppState) -> Router {
    crate::metrics::install();
    let max_upload = max_upload_bytes(&state);
    Router::new()
        .route("/v1/contacts", get(contacts::list).post(contacts::upsert))
        .route("/v1/contacts/{id}/merge", post(contacts::merge))
        .route(
            "/v1/contacts/{id}",
            get(contacts::get)
                .patch(contacts::update)
                .delete(contacts::delete),
        )
        .route("/v1/contacts/{id}/timeline", get(events::timeline))
        .route("/v1/events", post(events::ingest))
        // Components may be up to the runtime's size limit (32 MiB by
        // default); the runtime refuses larger ones with a precise error.
        .route(
            "/v1/plugins",
            get(plugins::list)
                .merge(post(plugins::upload).layer(DefaultBodyLimit::max(max_upload))),
        )
        .route("/v1/plugins/pull", post(plugins::pull))
        .route("/v1/plugins/{name}/activate", post(plugins::activate))
        .route("/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route(
            "/v1/plugins/{name}/versions/{version}/approve",
            post(plugins::approve),
        )
        .route(
            "/v1/bindings",
            get(plugins::list_bindings).post(plugins::create_binding),
        )
        .route(
            "/v1/bindings/{name}",
            delete(plugins::delete_binding).put(plugins::update_binding),
        )
        .route("/v1/bindings/{name}/resume", post(plugins::resume_binding))
        .route(
            "/v1/plugins/{name}/backtests",
            get(backtests::list).post(backtests::create),
        )
        .route("/v1/backtests/{id}", get(backtests::show))
        .route("/v1/contacts/{id}/replay", get(backtests::contact))
        .route("/v1/plugin-tasks", get(plugins::list_tasks))
        .route("/v1/plugin-tasks/{id}", get(plugins::show_task))
        .route("/v1/plugin-audit", get(plugins::audit))
        .route("/v1/trusted-keys", get(trust::list).post(trust::add))
        .route("/v1/trusted-keys/{key}", delete(trust::remove))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/api-docs", get(openapi::reference))
        .route("/v1/segments/{name}", get(segments::show))
        .route("/v1/segments/{name}/members", get(segments::members))
        .route("/v1/journeys", get(journeys::list))
        .route(
            "/v1/journeys/{name}",
            get(journeys::show).put(journeys::save),
        )
        .route(
            "/v1/journeys/{name}/versions/{version}",
            get(journeys::version),
        )
        .route("/v1/journeys/{name}/stop", post(journeys::stop))
        .route("/v1/journeys/{name}/start", post(journeys::start))
        .route("/v1/journeys/{name}/enroll", post(journeys::enroll))
        .route("/v1/journeys/{name}/preview", post(journeys::preview))
        .route("/v1/journeys/{name}/validate", post(journeys::check))
        .route("/v1/journeys/{name}/kpis", get(kpis::journey))
        .route("/v1/journeys/{name}/ab/promote", post(kpis::promote))
        .route("/metrics", get(kpis::metrics))
        .route("/", get(stats::root))
        .route("/dashboard", get(stats::dashboard))
        .route("/v1/stats/overview", get(stats::overview))
        .route("/v1/stats/segments", get(stats::segments))
        .route("/v1/stats/plugins", get(stats::plugins))
        .route("/v1/contacts/{id}/scores", get(stats::scores))
        .route("/v1/journey-templates", get(journeys::templates))
        .route(
            "/v1/journey-templates/{template}/install",
            post(journeys::install),
        )
        .route("/v1/contacts/{id}/journeys", get(journeys::contact_runs))
        .route(
            "/v1/contacts/{id}/messages",
            get(journeys::contact_messages),
        )
        .route(
            "/v1/contacts/{id}/consents",
            get(journeys::consents).put(journeys::set_consent),
        )
        .route("/v1/scheduler", get(journeys::scheduler))
        .route("/v1/contacts/{id}/export", get(privacy::export))
        .route("/v1/contacts/{id}/erase", post(privacy::erase))
        .route("/v1/contacts/{id}/object", post(privacy::object))
        .route("/v1/contacts/{id}/audit", get(privacy::audit))
        .route("/v1/callbacks/{binding}", post(tracking::callback))
        .route("/t/o/{token}", get(tracking::open))
        .route("/t/c/{token}", get(tracking::click))
        .route(
            "/u/{token}",
            get(tracking::unsubscribe).post(tracking::unsubscribe),
        )
        .route(
            "/c/{token}",
            get(tracking::confirm_page).post(tracking::confirm),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route(
            "/v1/demo/mailbox",
            get(mailbox::list).post(mailbox::deliver),
        )
        .route(
            "/v1/contacts/{id}/consents/request",
            post(journeys::request_consent),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            edge::scope_first,
        ))
        .route_layer(axum::middleware::from_fn(edge::refuse_nul))
        .route_layer(axum::middleware::from_fn(kpis::track))
        .layer(axum::middleware::from_fn(edge::error_shape))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
