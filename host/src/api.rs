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
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

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
    /// Single events are stored in groups (group commit).
    pub ingest: crate::ingest::IngestQueue,
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
            ingest: crate::ingest::IngestQueue::new(journeys.pipeline.clone()),
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

/// Every route, with its documentation: `routes!` registers each handler
/// under the method and path of its `#[utoipa::path]` and adds that
/// operation to the OpenAPI document, so the two cannot drift apart. Add
/// routes only here, and only through `routes!`.
pub(crate) fn routes(max_upload: usize) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(contacts::list, contacts::upsert))
        .routes(routes!(contacts::merge))
        .routes(routes!(contacts::get, contacts::update, contacts::delete))
        .routes(routes!(events::timeline))
        .routes(routes!(events::ingest))
        .routes(routes!(plugins::list))
        // Components may be up to the runtime's size limit (32 MiB by
        // default); the runtime refuses larger ones with a precise error.
        .routes(routes!(plugins::upload).layer(DefaultBodyLimit::max(max_upload)))
        .routes(routes!(plugins::pull))
        .routes(routes!(plugins::activate))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::approve))
        .routes(routes!(plugins::list_bindings, plugins::create_binding))
        .routes(routes!(plugins::delete_binding, plugins::update_binding))
        .routes(routes!(plugins::resume_binding))
        .routes(routes!(backtests::list, backtests::create))
        .routes(routes!(backtests::show))
        .routes(routes!(backtests::contact))
        .routes(routes!(plugins::list_tasks))
        .routes(routes!(plugins::show_task))
        .routes(routes!(plugins::audit))
        .routes(routes!(trust::list, trust::add))
        .routes(routes!(trust::remove))
        .routes(routes!(openapi::serve))
        .routes(routes!(openapi::reference))
        .routes(routes!(segments::show))
        .routes(routes!(segments::members))
        .routes(routes!(journeys::list))
        .routes(routes!(journeys::show, journeys::save))
        .routes(routes!(journeys::version))
        .routes(routes!(journeys::stop))
        .routes(routes!(journeys::start))
        .routes(routes!(journeys::enroll))
        .routes(routes!(journeys::preview))
        .routes(routes!(journeys::check))
        .routes(routes!(kpis::journey))
        .routes(routes!(kpis::promote))
        .routes(routes!(kpis::metrics))
        .routes(routes!(stats::root))
        .routes(routes!(stats::dashboard))
        .routes(routes!(stats::overview))
        .routes(routes!(stats::segments))
        .routes(routes!(stats::plugins))
        .routes(routes!(stats::scores))
        .routes(routes!(journeys::templates))
        .routes(routes!(journeys::install))
        .routes(routes!(journeys::contact_runs))
        .routes(routes!(journeys::contact_messages))
        .routes(routes!(journeys::consents, journeys::set_consent))
        .routes(routes!(journeys::scheduler))
        .routes(routes!(privacy::export))
        .routes(routes!(privacy::erase))
        .routes(routes!(privacy::object))
        .routes(routes!(privacy::audit))
        .routes(routes!(tracking::callback))
        .routes(routes!(tracking::open))
        .routes(routes!(tracking::click))
        .routes(routes!(tracking::unsubscribe))
        .routes(routes!(tracking::confirm_page, tracking::confirm))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(mailbox::list, mailbox::deliver))
        .routes(routes!(journeys::request_consent))
}

pub fn app(state: AppState) -> Router {
    crate::metrics::install();
    let (router, _) = routes(max_upload_bytes(&state)).split_for_parts();
    router
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
