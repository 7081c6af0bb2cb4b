//! `/v1/plugins` and `/v1/bindings`: upload, list, activate, roll back and
//! bind plugins while the server runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};

use super::error::ErrorBody;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::plugins::{Plugins, PluginsError, Review};
use crate::runtime::capabilities::CapabilityDiff;
use crate::runtime::manifest::Manifest;
use crate::runtime::registry::PluginSummary;
use crate::runtime::registry::{Pin, RegistryError};
use crate::runtime::{Limits, LoadError, World};
use crate::store::tasks::TaskProgress;
use crate::store::tasks::{RESCORE, SEGMENT_REBUILD};
use crate::store::tracking::AuditEntry;
use crate::store::{BindingDef, BindingKind, Scope, StoreError};

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        match error {
            RegistryError::Load(LoadError::Io(e)) => ApiError::Internal(e.to_string()),
            RegistryError::Load(e) => ApiError::invalid(e.to_string()),
            e @ (RegistryError::UnknownPlugin(_) | RegistryError::UnknownVersion { .. }) => {
                ApiError::NotFound(e.to_string())
            }
            e => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<PluginsError> for ApiError {
    fn from(error: PluginsError) -> Self {
        let message = error.to_string();
        match error {
            PluginsError::Load(LoadError::Io(e)) => ApiError::Internal(e.to_string()),
            PluginsError::Load(e) => ApiError::invalid(e.to_string()),
            PluginsError::Registry(e) => e.into(),
            // The store's messages name what is missing and what exists.
            PluginsError::Store(StoreError::NotFound(why)) => ApiError::NotFound(why),
            PluginsError::Store(e) => e.into(),
            // The details say what to approve: the client sends them back.
            PluginsError::NeedsApproval { review, .. } => ApiError::ConflictWith {
                code: "needs_approval",
                message,
                details: json!(review),
            },
            PluginsError::ApprovalMismatch {
                review, approved, ..
            } => ApiError::ConflictWith {
                code: "approval_mismatch",
                message,
                details: json!({ "review": review, "approved": approved }),
            },
            PluginsError::Invalid(why) => ApiError::invalid(why),
            PluginsError::Conflict(why) => ApiError::Conflict(why),
        }
    }
}

/// An installed plugin and its versions waiting for review.
#[derive(Serialize, ToSchema)]
pub struct PluginListed {
    #[serde(flatten)]
    pub summary: PluginSummary,
    /// Versions that wait for an admin to approve what they ask for beyond
    /// the live version.
    pub reviews: Vec<Review>,
}

/// The installed plugins.
#[derive(Serialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginListed>,
}

#[utoipa::path(get, path = "/v1/plugins", tag = "plugins",
    summary = "Installed plugins: versions (each with its sha256), the live and the previous one",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The plugins", body = PluginList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PluginList>, ApiError> {
    caller.require(Scope::Read)?;
    let reviews = plugins(&state).reviews().await?;
    let plugins = state
        .pipeline
        .registry
        .list()
        .into_iter()
        .map(|summary| {
            let reviews = reviews
                .iter()
                .filter(|(name, _)| *name == summary.name)
                .map(|(_, review)| review.clone())
                .collect();
            PluginListed { summary, reviews }
        })
        .collect();
    Ok(Json(PluginList { plugins }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Make the new version live at once (default) or keep it for later.
    #[serde(default = "yes")]
    pub activate: bool,
}

fn yes() -> bool {
    true
}

/// Uploads a component: either the body alone, built by `nachfass plugin
/// build` (manifest embedded), or `multipart/form-data` with a `component`
/// part and a `manifest` part (the JSON of a `.manifest.json` sidecar), for
/// components built by other toolchains. It is compiled, type-checked
/// against its world, stored in the database and only then made live, on
/// every node.
#[utoipa::path(post, path = "/v1/plugins", tag = "plugins",
    summary = "Upload a component built by `nachfass plugin build` (or multipart: `component` and `manifest` parts)",
    security(("apiKey" = ["admin"])),
    params(UploadQuery),
    // Any content type is accepted; octet-stream lets clients (and API
    // fuzzers) send the bytes as they are.
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The component; or multipart/form-data with a `component` part and a `manifest` part (its `.manifest.json`)"),
    responses(
        (status = 200, description = "This exact version was installed already", body = Installed),
        (status = 201, description = "Installed (and live unless ?activate=false)", body = Installed),
        (status = 202, description = "Installed, not live: it asks for capabilities beyond the live version (`review`); approve them to make it live", body = Installed),
        (status = 409, description = "The version exists with other content", body = ErrorBody),
        (status = 413, description = "Over the component size limit (`details.limit_bytes`)", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<Installed>), ApiError> {
    caller.require(Scope::Admin)?;
    let limit = super::max_upload_bytes(&state);
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (bytes, sidecar) = if multipart {
        let form = Multipart::from_request(request, &state)
            .await
            .map_err(|e| upload_rejected(limit, e.status(), e.body_text()))?;
        component_and_manifest(form, limit).await?
    } else {
        let body = Bytes::from_request(request, &state)
            .await
            .map_err(|e| upload_rejected(limit, e.status(), e.body_text()))?;
        (body.to_vec(), None)
    };
    install_component(&state, bytes, sidecar, query.activate, &caller.0.id).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    /// `registry/repository:tag` of a registry the server allows.
    pub reference: String,
    /// Make the new version live at once (default) or keep it for later.
    #[serde(default = "yes")]
    pub activate: bool,
}

/// Installs a plugin from an OCI registry: the same checks as an upload
/// (size, manifest, world, signature and trust), after the registry itself
/// was checked against the server's allow-list.
#[utoipa::path(post, path = "/v1/plugins/pull", tag = "plugins",
    summary = "Install a plugin from an allowed OCI registry; checked like an upload",
    security(("apiKey" = ["admin"])),
    request_body = PullBody,
    responses(
        (status = 200, description = "This exact version was installed already", body = Installed),
        (status = 201, description = "Installed (and live unless activate is false)", body = Installed),
        (status = 202, description = "Installed, not live: it asks for capabilities beyond the live version (`review`); approve them to make it live", body = Installed),
        (status = 409, description = "The version exists with other content", body = ErrorBody),
        (status = 502, description = "The registry failed", body = ErrorBody),
    ))]
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PullBody>,
) -> Result<(StatusCode, Json<Installed>), ApiError> {
    caller.require(Scope::Admin)?;
    let bad = |e: crate::oci::OciError| ApiError::invalid(e.to_string());
    let reference = crate::oci::parse_reference(&body.reference).map_err(bad)?;
    state.oci.allowed.check(&reference).map_err(bad)?;
    let limit = state
        .pipeline
        .registry
        .runtime()
        .limits()
        .max_component_bytes;
    let bytes = state
        .oci
        .client
        .pull(&reference, limit)
        .await
        .map_err(|e| match e {
            crate::oci::OciError::Registry(detail) => ApiError::BadGateway(detail),
            e => bad(e),
        })?;
    let (status, Json(mut answer)) =
        install_component(&state, bytes, None, body.activate, &caller.0.id).await?;
    answer.reference = Some(reference.to_string());
    Ok((status, Json(answer)))
}

/// An installed plugin version.
#[derive(Serialize, ToSchema)]
pub struct Installed {
    /// `name@version`.
    pub plugin: String,
    pub world: World,
    /// Of the component's bytes.
    pub sha256: String,
    /// Whether this version is now the live one.
    pub live: bool,
    /// The publisher of the trusted key that signed it; null if unsigned.
    pub signed_by: Option<String>,
    /// What it asks for beyond the live version, when held for approval;
    /// null otherwise.
    pub review: Option<Review>,
    /// What to do next, when held for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The OCI reference it was pulled from (pull only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Installs a component with its manifest (embedded, or given beside it):
/// compiled, type-checked against its world and its signature checked,
/// then stored in the database and made live on every node.
async fn install_component(
    state: &AppState,
    bytes: Vec<u8>,
    sidecar: Option<Vec<u8>>,
    activate: bool,
    actor: &str,
) -> Result<(StatusCode, Json<Installed>), ApiError> {
    let embedded = match crate::runtime::manifest::read_section(
        &bytes,
        crate::runtime::manifest::SECTION_NAME,
    ) {
        Ok(found) => found,
        Err(e) => return Err(ApiError::invalid(e.to_string())),
    };
    let manifest = match (embedded, sidecar) {
        (_, Some(json)) => Manifest::from_json(&json)
            .map_err(|e| ApiError::invalid(format!("the `manifest` part: {e}")))?,
        (Some(json), None) => {
            Manifest::from_json(json).map_err(|e| ApiError::invalid(e.to_string()))?
        }
        (None, None) => {
            return Err(ApiError::invalid(format!(
                "no manifest: the component has no `{}` section. Build it with `nachfass plugin build`, or send it as multipart/form-data with a `component` part and a `manifest` part holding its `.manifest.json`",
                crate::runtime::manifest::SECTION_NAME
            )));
        }
    };
    let installed = plugins(state)
        .upload(bytes, manifest.clone(), activate, actor)
        .await?;
    // Held for review: installed (202 Accepted), live once an admin
    // approves what it asks for.
    let status = if installed.unchanged {
        StatusCode::OK
    } else if activate && installed.review.is_some() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let message = installed.review.as_ref().map(|review| {
        format!(
            "installed, not live: {} asks for more than the live {}: {}. Approve exactly `review.needs_approval` with POST /v1/plugins/{}/versions/{}/approve",
            installed.plugin.id(),
            review.against,
            review.needs_approval,
            manifest.name,
            manifest.version
        )
    });
    Ok((
        status,
        Json(Installed {
            plugin: installed.plugin.id().to_owned(),
            world: manifest.world,
            sha256: installed.plugin.hash().to_owned(),
            live: installed.live,
            signed_by: installed.plugin.signer().map(|s| s.publisher.clone()),
            review: installed.review,
            message,
            reference: None,
        }),
    ))
}

/// A body the server would not take: over the upload limit (413 naming
/// the limit), or a form it cannot read.
fn upload_rejected(limit: usize, status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::UploadTooLarge { limit }
    } else {
        ApiError::invalid(format!("the upload cannot be read: {text}"))
    }
}

/// The `component` and optional `manifest` parts of an upload form.
async fn component_and_manifest(
    mut form: Multipart,
    limit: usize,
) -> Result<(Vec<u8>, Option<Vec<u8>>), ApiError> {
    let (mut component, mut manifest) = (None, None);
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| upload_rejected(limit, e.status(), e.body_text()))?
    {
        let name = field.name().unwrap_or_default().to_owned();
        let data = field
            .bytes()
            .await
            .map_err(|e| upload_rejected(limit, e.status(), e.body_text()))?;
        match name.as_str() {
            "component" => component = Some(data.to_vec()),
            "manifest" => manifest = Some(data.to_vec()),
            other => {
                return Err(ApiError::invalid(format!(
                    "unknown form part `{other}`: send `component` and `manifest`"
                )));
            }
        }
    }
    let component = component.ok_or_else(|| {
        ApiError::invalid("the form has no `component` part with the component's bytes")
    })?;
    Ok((component, manifest))
}

/// The cluster's plugins as this node sees them.
pub(super) fn plugins(state: &AppState) -> Plugins {
    let pipeline = &state.pipeline;
    Plugins::new(
        pipeline.store.clone(),
        pipeline.registry.clone(),
        pipeline.clock.clone(),
    )
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    /// An installed version of the plugin.
    pub version: String,
}

/// The version now live.
#[derive(Serialize, ToSchema)]
pub struct Live {
    /// `name@version`.
    pub live: String,
}

#[utoipa::path(post, path = "/v1/plugins/{name}/activate", tag = "plugins",
    summary = "Make an installed version live (its segments are rebuilt, its scorers re-score, as durable tasks); 409 needs_approval when it asks for capabilities the live one lacks",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The plugin")),
    request_body = ActivateBody,
    responses(
        (status = 200, description = "Live", body = Live),
        (status = 404, description = "No such plugin or version", body = ErrorBody),
        (status = 409, description = "`needs_approval`: it asks for capabilities the live version lacks (`details` says which; approve them), or it cannot be made live", body = ErrorBody),
    ))]
pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Json<Live>, ApiError> {
    caller.require(Scope::Admin)?;
    // Segments and scorers of the plugin are rebuilt and re-scored by
    // durable jobs the activation queued.
    let plugin = plugins(&state)
        .activate(&name, &body.version, &caller.0.id)
        .await?;
    Ok(Json(Live {
        live: plugin.id().to_owned(),
    }))
}

/// The version an approval made live, and what was approved.
#[derive(Serialize, ToSchema)]
pub struct Approved {
    /// `name@version`.
    pub live: String,
    pub approved: CapabilityDiff,
}

/// An admin approves what a version asks for beyond the live one and makes
/// it live on every node. The body is the review's `needs_approval`,
/// exactly: approving anything else (more, less, or against a live version
/// that changed meanwhile) is refused, so what goes live is what was seen.
#[utoipa::path(post, path = "/v1/plugins/{name}/versions/{version}/approve", tag = "plugins",
    summary = "Approve exactly what a version asks for beyond the live one (its review's needs_approval) and make it live",
    security(("apiKey" = ["admin"])),
    params(
        ("name" = String, Path, description = "The plugin"),
        ("version" = String, Path, description = "The installed version held for review"),
    ),
    request_body = CapabilityDiff,
    responses(
        (status = 200, description = "Approved and live", body = Approved),
        (status = 404, description = "No such plugin or version", body = ErrorBody),
        (status = 409, description = "`approval_mismatch`: not exactly what the version asks for beyond the live one (`details` has both)", body = ErrorBody),
    ))]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    ApiJson(approved): ApiJson<CapabilityDiff>,
) -> Result<Json<Approved>, ApiError> {
    caller.require(Scope::Admin)?;
    let plugin = plugins(&state)
        .approve(&name, &version, &approved, &caller.0.id)
        .await?;
    Ok(Json(Approved {
        live: plugin.id().to_owned(),
        approved,
    }))
}

#[utoipa::path(post, path = "/v1/plugins/{name}/rollback", tag = "plugins",
    summary = "Return to the version live before the last activation",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The plugin")),
    responses(
        (status = 200, description = "Live again", body = Live),
        (status = 404, description = "No such plugin", body = ErrorBody),
        (status = 409, description = "There is no earlier version to return to", body = ErrorBody),
    ))]
pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Live>, ApiError> {
    caller.require(Scope::Admin)?;
    // The previous version was live before: it needs no review.
    let plugin = plugins(&state).rollback(&name, &caller.0.id, "").await?;
    Ok(Json(Live {
        live: plugin.id().to_owned(),
    }))
}

/// A binding as listed: its definition and what runs it here.
#[derive(Serialize, ToSchema)]
pub struct BindingView {
    #[serde(flatten)]
    pub def: BindingDef,
    /// `name@version` of the plugin version serving it on this node; null
    /// when none fits.
    pub runs: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Bindings {
    pub bindings: Vec<BindingView>,
}

/// Every binding, with the plugin version it runs on this node.
#[utoipa::path(get, path = "/v1/bindings", tag = "plugins",
    summary = "Scorer, segment and channel bindings",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The bindings", body = Bindings)))]
pub async fn list_bindings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Bindings>, ApiError> {
    caller.require(Scope::Read)?;
    let registry = &state.pipeline.registry;
    let bindings: Vec<BindingView> = state
        .pipeline
        .store
        .all_bindings()
        .await?
        .into_iter()
        .map(|def| {
            let runs = registry
                .resolve(&def.plugin, def.version.as_deref())
                .map(|p| p.id().to_owned());
            BindingView { def, runs }
        })
        .collect();
    Ok(Json(Bindings { bindings }))
}

/// Checks a binding before it is stored: the plugin (at its pin) is
/// installed and of the right world, the configuration fits its manifest,
/// the limits fit the server's maxima.
fn check_binding(state: &AppState, def: &BindingDef) -> Result<(), ApiError> {
    let registry = &state.pipeline.registry;
    if let Some(pin) = &def.version {
        Pin::parse(pin).map_err(ApiError::invalid)?;
    }
    let plugin = registry
        .resolve(&def.plugin, def.version.as_deref())
        .ok_or_else(|| {
            let installed = registry
                .list()
                .into_iter()
                .find(|p| p.name == def.plugin)
                .map(|p| p.versions.join(", "));
            ApiError::invalid(match (installed, &def.version) {
                (Some(versions), Some(pin)) => format!(
                    "no installed version of `{}` fits `{pin}`; installed: {versions}",
                    def.plugin
                ),
                _ => format!(
                    "no plugin named `{}` is installed; upload it first",
                    def.plugin
                ),
            })
        })?;
    let wanted = match def.kind {
        BindingKind::Scorer => World::Scorer,
        BindingKind::Segment => World::SegmentRule,
        BindingKind::Channel => World::Channel,
    };
    if plugin.manifest().world != wanted {
        return Err(ApiError::invalid(format!(
            "plugin `{}` is a {}; a {:?} binding needs a {wanted}",
            def.plugin,
            plugin.manifest().world,
            def.kind
        )));
    }
    plugin
        .manifest()
        .check_config(def.config.keys().map(String::as_str))
        .map_err(|why| ApiError::invalid(format!("binding `{}`: {why}", def.name)))?;
    Limits::for_world(wanted)
        .with_overrides(&plugin.manifest().limits)
        .with_overrides(&def.limits)
        .check_within(registry.runtime().limits())
        .map_err(|why| ApiError::invalid(format!("binding `{}` limits: {why}", def.name)))
}

/// Queues what a new or changed binding needs: a segment is built over
/// every contact, a scorer scores every existing profile; durable jobs,
/// resumed after a crash, by any node. Returns the task's id.
async fn queue_consequences(
    state: &AppState,
    def: &BindingDef,
    reason: &str,
    now: i64,
) -> Result<Option<String>, ApiError> {
    let kind = match def.kind {
        BindingKind::Segment => SEGMENT_REBUILD,
        BindingKind::Scorer => RESCORE,
        BindingKind::Channel => return Ok(None),
    };
    let store = &state.pipeline.store;
    let id = store.enqueue_task(kind, &def.name, reason, now).await?;
    store
        .audit(
            "operator",
            &format!("binding.{reason}"),
            None,
            &json!({ "binding": def.name, "plugin": def.plugin, "version": def.version }),
            now,
        )
        .await?;
    Ok(Some(id))
}

/// A stored binding and the task it queued.
#[derive(Serialize, ToSchema)]
pub struct BindingSaved {
    #[serde(flatten)]
    pub def: BindingDef,
    /// The segment rebuild or re-score queued (see `/v1/plugin-tasks/{id}`);
    /// absent for a channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
}

/// Binds an installed plugin as a scorer or a segment; its world must fit.
#[utoipa::path(post, path = "/v1/bindings", tag = "plugins",
    summary = "Bind a plugin as a scorer, a segment or a channel (a segment is rebuilt, a scorer re-scores every contact, as a durable task)",
    security(("apiKey" = ["admin"])),
    request_body = BindingDef,
    responses(
        (status = 201, description = "Bound", body = BindingSaved),
        (status = 409, description = "A binding of that name exists", body = ErrorBody),
    ))]
pub async fn create_binding(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(def): ApiJson<BindingDef>,
) -> Result<(StatusCode, Json<BindingSaved>), ApiError> {
    caller.require(Scope::Admin)?;
    check_binding(&state, &def)?;
    let now = state.pipeline.clock.now();
    state.pipeline.store.create_binding(&def, now).await?;
    let task = queue_consequences(&state, &def, "created", now).await?;
    Ok((StatusCode::CREATED, Json(BindingSaved { def, task })))
}

/// Changes a binding (plugin, pin, configuration, limits, allow-list);
/// the segment is rebuilt or the scorer re-scores every contact.
#[utoipa::path(put, path = "/v1/bindings/{name}", tag = "plugins",
    summary = "Change a binding (plugin, version pin, configuration, limits); its segment is rebuilt or its scorer re-scores every contact",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The binding; the body must name the same")),
    request_body = BindingDef,
    responses(
        (status = 200, description = "Changed", body = BindingSaved),
        (status = 404, description = "No such binding", body = ErrorBody),
    ))]
pub async fn update_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(def): ApiJson<BindingDef>,
) -> Result<Json<BindingSaved>, ApiError> {
    caller.require(Scope::Admin)?;
    if def.name != name {
        return Err(ApiError::invalid(format!(
            "the body names binding `{}`, the path `{name}`; a binding cannot be renamed",
            def.name
        )));
    }
    check_binding(&state, &def)?;
    let now = state.pipeline.clock.now();
    state.pipeline.store.update_binding(&def).await?;
    let task = queue_consequences(&state, &def, "changed", now).await?;
    Ok(Json(BindingSaved { def, task }))
}

#[utoipa::path(delete, path = "/v1/bindings/{name}", tag = "plugins",
    summary = "Remove a binding",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The binding")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such binding", body = ErrorBody),
    ))]
pub async fn delete_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    let store = &state.pipeline.store;
    if store.delete_binding(&name).await? {
        let detail = json!({ "binding": name });
        store
            .audit(
                "operator",
                "binding.deleted",
                None,
                &detail,
                state.pipeline.clock.now(),
            )
            .await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("binding {name} does not exist")))
    }
}

/// The newest tasks.
#[derive(Serialize, ToSchema)]
pub struct Tasks {
    /// Newest first, at most 100.
    pub tasks: Vec<TaskProgress>,
}

/// The newest plugin tasks (segment rebuilds, re-scores) with progress.
#[utoipa::path(get, path = "/v1/plugin-tasks", tag = "plugins",
    summary = "Segment rebuilds and re-scores that plugin and binding changes queued, newest first, with progress",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The tasks", body = Tasks)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Tasks>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(Tasks {
        tasks: state.pipeline.store.recent_tasks(100).await?,
    }))
}

/// One task's progress, from any node.
#[utoipa::path(get, path = "/v1/plugin-tasks/{id}", tag = "plugins",
    summary = "One rebuild or re-score with its progress",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task", body = TaskProgress),
        (status = 404, description = "No such task", body = ErrorBody),
    ))]
pub async fn show_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TaskProgress>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(state.pipeline.store.task(&id).await?))
}

/// Audit entries.
#[derive(Serialize, ToSchema)]
pub struct PluginAudit {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
}

/// Plugin and binding changes from the audit log, oldest first.
#[utoipa::path(get, path = "/v1/plugin-audit", tag = "plugins",
    summary = "Uploads, activations, rollbacks and breaker events from the audit log",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The entries", body = PluginAudit)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PluginAudit>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(PluginAudit {
        entries: state.pipeline.store.plugin_audit().await?,
    }))
}

/// Whether a resume changed anything.
#[derive(Serialize, ToSchema)]
pub struct Resumed {
    pub binding: String,
    /// False when the binding was not paused.
    pub resumed: bool,
}

/// An operator resumes a binding the circuit breaker paused.
#[utoipa::path(post, path = "/v1/bindings/{name}/resume", tag = "plugins",
    summary = "Resume a binding the circuit breaker paused",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The binding")),
    responses(
        (status = 200, description = "Resumed (or was not paused)", body = Resumed),
        (status = 404, description = "No such binding", body = ErrorBody),
    ))]
pub async fn resume_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Resumed>, ApiError> {
    caller.require(Scope::Admin)?;
    let store = &state.pipeline.store;
    let was_paused = store
        .resume_binding(&name, state.pipeline.clock.now())
        .await?;
    state.pipeline.registry.breakers().reset(&name);
    Ok(Json(Resumed {
        binding: name,
        resumed: was_paused,
    }))
}
