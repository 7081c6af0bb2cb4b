//! `/v1/plugins` and `/v1/bindings`: upload, list, activate, roll back and
//! bind plugins while the server runs.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::plugins::{Plugins, PluginsError, Review};
use crate::runtime::capabilities::CapabilityDiff;
use crate::runtime::manifest::Manifest;
use crate::runtime::registry::{Pin, RegistryError};
use crate::runtime::{Limits, LoadError, World};
use crate::store::tasks::{RESCORE, SEGMENT_REBUILD};
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

/// Installed plugins; each with `reviews`: the versions that wait for an
/// admin to approve what they ask for beyond the live version.
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let reviews = plugins(&state).reviews().await?;
    let listed: Vec<Value> = state
        .pipeline
        .registry
        .list()
        .into_iter()
        .map(|summary| {
            let mine: Vec<&Review> = reviews
                .iter()
                .filter(|(name, _)| *name == summary.name)
                .map(|(_, review)| review)
                .collect();
            let mut shown = json!(summary);
            shown["reviews"] = json!(mine);
            shown
        })
        .collect();
    Ok(Json(json!({ "plugins": listed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
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
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

#[derive(Deserialize)]
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
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PullBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    answer["reference"] = json!(reference.to_string());
    Ok((status, Json(answer)))
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
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    let mut answer = json!({
        "plugin": installed.plugin.id(),
        "world": manifest.world,
        "sha256": installed.plugin.hash(),
        "live": installed.live,
        "signed_by": installed.plugin.signer().map(|s| &s.publisher),
        "review": installed.review,
    });
    if let Some(review) = &installed.review {
        answer["message"] = json!(format!(
            "installed, not live: {} asks for more than the live {}: {}. Approve exactly `review.needs_approval` with POST /v1/plugins/{}/versions/{}/approve",
            installed.plugin.id(),
            review.against,
            review.needs_approval,
            manifest.name,
            manifest.version
        ));
    }
    Ok((status, Json(answer)))
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateBody {
    pub version: String,
}

pub async fn activate(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ActivateBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    // Segments and scorers of the plugin are rebuilt and re-scored by
    // durable jobs the activation queued.
    let plugin = plugins(&state)
        .activate(&name, &body.version, &caller.0.id)
        .await?;
    Ok(Json(json!({ "live": plugin.id() })))
}

/// An admin approves what a version asks for beyond the live one and makes
/// it live on every node. The body is the review's `needs_approval`,
/// exactly: approving anything else (more, less, or against a live version
/// that changed meanwhile) is refused, so what goes live is what was seen.
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
    ApiJson(approved): ApiJson<CapabilityDiff>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let plugin = plugins(&state)
        .approve(&name, &version, &approved, &caller.0.id)
        .await?;
    Ok(Json(json!({ "live": plugin.id(), "approved": approved })))
}

pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    // The previous version was live before: it needs no review.
    let plugin = plugins(&state).rollback(&name, &caller.0.id, "").await?;
    Ok(Json(json!({ "live": plugin.id() })))
}

/// Every binding, with the plugin version it runs on this node.
pub async fn list_bindings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let registry = &state.pipeline.registry;
    let bindings: Vec<Value> = state
        .pipeline
        .store
        .all_bindings()
        .await?
        .into_iter()
        .map(|def| {
            let runs = registry
                .resolve(&def.plugin, def.version.as_deref())
                .map(|p| p.id().to_owned());
            let mut shown = json!(def);
            shown["runs"] = json!(runs);
            shown
        })
        .collect();
    Ok(Json(json!({ "bindings": bindings })))
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

/// Binds an installed plugin as a scorer or a segment; its world must fit.
pub async fn create_binding(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(def): ApiJson<BindingDef>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    check_binding(&state, &def)?;
    let now = state.pipeline.clock.now();
    state.pipeline.store.create_binding(&def, now).await?;
    let mut answer = json!(def);
    if let Some(task) = queue_consequences(&state, &def, "created", now).await? {
        answer["task"] = json!(task);
    }
    Ok((StatusCode::CREATED, Json(answer)))
}

/// Changes a binding (plugin, pin, configuration, limits, allow-list);
/// the segment is rebuilt or the scorer re-scores every contact.
pub async fn update_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(def): ApiJson<BindingDef>,
) -> Result<Json<Value>, ApiError> {
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
    let mut answer = json!(def);
    if let Some(task) = queue_consequences(&state, &def, "changed", now).await? {
        answer["task"] = json!(task);
    }
    Ok(Json(answer))
}

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

/// The newest plugin tasks (segment rebuilds, re-scores) with progress.
pub async fn list_tasks(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(
        json!({ "tasks": state.pipeline.store.recent_tasks(100).await? }),
    ))
}

/// One task's progress, from any node.
pub async fn show_task(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(json!(state.pipeline.store.task(&id).await?)))
}

/// Plugin and binding changes from the audit log, oldest first.
pub async fn audit(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(
        json!({ "entries": state.pipeline.store.plugin_audit().await? }),
    ))
}

/// An operator resumes a binding the circuit breaker paused.
pub async fn resume_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let store = &state.pipeline.store;
    let was_paused = store
        .resume_binding(&name, state.pipeline.clock.now())
        .await?;
    state.pipeline.registry.breakers().reset(&name);
    Ok(Json(json!({ "binding": name, "resumed": was_paused })))
}
