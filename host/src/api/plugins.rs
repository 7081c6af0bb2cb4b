//! `/v1/plugins` and `/v1/bindings`: upload, list, activate, roll back and
//! bind plugins while the server runs.

use std::path::Path as FsPath;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiBytes, ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::runtime::manifest::{Manifest, ManifestError};
use crate::runtime::registry::{Activation, RegistryError};
use crate::runtime::{LoadError, World};
use crate::store::{BindingDef, BindingKind, Scope};

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

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(json!({ "plugins": state.pipeline.registry.list() })))
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

/// Uploads a component built by `nachfass plugin build` (manifest embedded)
/// as the request body. It is compiled, type-checked against its world and
/// only then installed; it is also written to the plugins directory so a
/// restart finds it.
pub async fn upload(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadQuery>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    install_component(&state, body.to_vec(), query.activate).await
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
    let (status, Json(mut answer)) = install_component(&state, bytes, body.activate).await?;
    answer["reference"] = json!(reference.to_string());
    Ok((status, Json(answer)))
}

/// Installs a component with its manifest embedded: compiled, type-checked
/// against its world and its signature checked before it is registered;
/// also written to the plugins directory so a restart finds it.
async fn install_component(
    state: &AppState,
    bytes: Vec<u8>,
    activate: bool,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let manifest = match crate::runtime::manifest::read_section(
        &bytes,
        crate::runtime::manifest::SECTION_NAME,
    ) {
        Ok(Some(json)) => {
            Manifest::from_json(json).map_err(|e| ApiError::invalid(e.to_string()))?
        }
        Ok(None) => return Err(ApiError::invalid(ManifestError::Missing.to_string())),
        Err(e) => return Err(ApiError::invalid(e.to_string())),
    };
    let activation = if activate {
        Activation::Now
    } else {
        Activation::Later
    };
    let installed = state
        .pipeline
        .registry
        .install(bytes.clone(), manifest.clone(), activation)
        .await?;
    if let Some(dir) = &state.plugins_dir {
        keep_in_plugins_dir(dir, &manifest, &bytes)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    if installed.live && !installed.unchanged {
        super::segments::rebuild_segments_of(state, &manifest.name).await?;
    }
    let status = if installed.unchanged {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(json!({
            "plugin": installed.plugin.id(),
            "world": manifest.world,
            "sha256": installed.plugin.hash(),
            "live": installed.live,
            "signed_by": installed.plugin.signer().map(|s| &s.publisher),
        })),
    ))
}

fn keep_in_plugins_dir(dir: &FsPath, manifest: &Manifest, bytes: &[u8]) -> std::io::Result<()> {
    let path = dir.join(format!("{}-{}.wasm", manifest.name, manifest.version));
    let tmp = dir.join(format!(".{}-{}.upload", manifest.name, manifest.version));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(tmp, path)
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
    let plugin = state.pipeline.registry.activate(&name, &body.version)?;
    super::segments::rebuild_segments_of(&state, &name).await?;
    Ok(Json(json!({ "live": plugin.id() })))
}

pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let plugin = state.pipeline.registry.rollback(&name)?;
    super::segments::rebuild_segments_of(&state, &name).await?;
    Ok(Json(json!({ "live": plugin.id() })))
}

pub async fn list_bindings(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(
        json!({ "bindings": state.pipeline.store.all_bindings().await? }),
    ))
}

/// Binds an installed plugin as a scorer or a segment; its world must fit.
pub async fn create_binding(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(def): ApiJson<BindingDef>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    let plugin = state.pipeline.registry.live(&def.plugin).ok_or_else(|| {
        ApiError::invalid(format!(
            "no plugin named `{}` is installed; upload it first",
            def.plugin
        ))
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
    let missing: Vec<&str> = plugin
        .manifest()
        .config
        .iter()
        .filter(|key| key.required && !def.config.contains_key(&key.key))
        .map(|key| key.key.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(ApiError::invalid(format!(
            "plugin `{}` needs configuration: {}",
            def.plugin,
            missing.join(", ")
        )));
    }
    state
        .pipeline
        .store
        .create_binding(&def, state.pipeline.clock.now())
        .await?;
    if def.kind == BindingKind::Segment {
        super::segments::start_rebuild(&state, &def.name);
    }
    Ok((StatusCode::CREATED, Json(json!(def))))
}

pub async fn delete_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    if state.pipeline.store.delete_binding(&name).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("binding {name} does not exist")))
    }
}
