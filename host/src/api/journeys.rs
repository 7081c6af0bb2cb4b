//! `/v1/journeys`, ready-made journeys, a contact's runs, messages and
//! consents, and the scheduler's queue.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::journeys::{JourneyDef, JourneyError, ready_made};
use crate::store::{Consent, Scope};

impl From<JourneyError> for ApiError {
    fn from(error: JourneyError) -> Self {
        match error {
            JourneyError::Invalid(problems) => ApiError::Invalid {
                message: format!(
                    "the journey definition is not valid: {}",
                    problems.join("; ")
                ),
                details: json!({ "problems": problems }),
            },
            JourneyError::Store(e) => e.into(),
        }
    }
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let mut journeys = Vec::new();
    for latest in store.latest_journeys().await? {
        let def = state
            .journeys
            .definition(&latest.name, latest.version)
            .await?;
        journeys.push(json!({
            "name": latest.name,
            "version": latest.version,
            "active": latest.active,
            "description": def.description,
            "purpose": def.purpose,
            "trigger": def.trigger,
            "runs": store.run_counts(&latest.name).await?,
        }));
    }
    Ok(Json(json!({ "journeys": journeys })))
}

/// Saves a definition (the body) as the journey's next version. The name
/// in the body must match the path.
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    let def =
        JourneyDef::from_json(&body).map_err(|e| ApiError::from(JourneyError::Invalid(vec![e])))?;
    if def.name != name {
        return Err(ApiError::invalid(format!(
            "the definition is named `{}` but the path says `{name}`",
            def.name
        )));
    }
    saved(&state, &def).await
}

/// Checks a definition without saving it: every problem saving would
/// report, for an editor that validates as the operator types.
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let problems = match JourneyDef::from_json(&body) {
        Err(e) => vec![e],
        Ok(def) => {
            let mut problems =
                crate::journeys::validate::validate(&def, &state.journeys.known().await?)
                    .err()
                    .unwrap_or_default();
            if def.name != name {
                problems.insert(
                    0,
                    format!(
                        "the definition is named `{}` but the path says `{name}`",
                        def.name
                    ),
                );
            }
            problems
        }
    };
    Ok(Json(
        json!({ "valid": problems.is_empty(), "problems": problems }),
    ))
}

/// Saves a definition: 201 for a new version, 200 when it equals the
/// latest.
async fn saved(state: &AppState, def: &JourneyDef) -> Result<(StatusCode, Json<Value>), ApiError> {
    let saved = state.journeys.save_def(def).await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(saved))))
}

pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let versions = store.journey_versions(&name).await?;
    let Some(latest) = versions.first() else {
        return Err(ApiError::NotFound(format!("journey {name} does not exist")));
    };
    let def = state.journeys.definition(&name, latest.version).await?;
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "version": v.version, "created_at": v.created_at }))
        .collect();
    Ok(Json(json!({
        "name": name,
        "version": latest.version,
        "active": latest.active,
        "definition": *def,
        "versions": versions,
        "runs": store.run_counts(&name).await?,
    })))
}

pub async fn version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let version: i64 = version.parse().map_err(|_| {
        ApiError::invalid(format!("version `{version}` is not a number: use 1, 2, …"))
    })?;
    let def = state.journeys.definition(&name, version).await?;
    Ok(Json(
        json!({ "name": name, "version": version, "definition": *def }),
    ))
}

async fn set_active(state: &AppState, name: &str, active: bool) -> Result<Json<Value>, ApiError> {
    let now = state.pipeline.clock.now();
    if !state
        .pipeline
        .store
        .set_journey_active(name, active, now)
        .await?
    {
        return Err(ApiError::NotFound(format!("journey {name} does not exist")));
    }
    state.journeys.forget_active();
    state.pipeline.store.refresh_routing().await?;
    Ok(Json(json!({ "name": name, "active": active })))
}

/// No new entries; running runs go on to their end.
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    set_active(&state, &name, false).await
}

pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    set_active(&state, &name, true).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    contact_id: String,
}

pub async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Write)?;
    match state.journeys.enroll(&name, &request.contact_id).await? {
        Some(run) => Ok((StatusCode::CREATED, Json(json!({ "run_id": run })))),
        None => Ok((
            StatusCode::OK,
            Json(json!({
                "run_id": null,
                "reason": "not enrolled: the contact has an open run or the re-entry policy forbids another"
            })),
        )),
    }
}

pub async fn templates(State(_): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let all: Vec<Value> = ready_made::all()
        .into_iter()
        .map(
            |r| json!({ "name": r.name, "description": r.description, "definition": r.definition }),
        )
        .collect();
    Ok(Json(json!({ "templates": all })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The channel binding its sends go through.
    binding: String,
    /// Saved under this name; the template's name otherwise.
    #[serde(default)]
    name: Option<String>,
}

pub async fn install(
    State(state): State<AppState>,
    caller: Caller,
    Path(template): Path<String>,
    ApiJson(request): ApiJson<InstallRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    let def = ready_made::adapt(&template, &request.binding, request.name.as_deref()).ok_or_else(
        || {
            ApiError::NotFound(format!(
                "ready-made journey {template} does not exist; GET /v1/journey-templates lists them"
            ))
        },
    )?;
    saved(&state, &def).await
}

pub async fn contact_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let runs = state.pipeline.store.contact_runs(&id).await?;
    Ok(Json(json!({ "runs": runs })))
}

pub async fn contact_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let entries = state.pipeline.store.contact_outbox(&id).await?;
    // Working tracking, unsubscribe and confirmation tokens are for the
    // recipient (and an admin); other keys see them redacted.
    let tracking = if caller.0.allows(Scope::Admin) {
        None
    } else {
        Some(state.journeys.tracking().await?)
    };
    let messages: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let message = match &tracking {
                Some(tracking) => tracking.redact(&e.message),
                None => e.message.clone(),
            };
            let message: Value = serde_json::from_str(&message).unwrap_or(Value::Null);
            let mut entry = json!(e);
            entry["message"] = message;
            entry
        })
        .collect();
    Ok(Json(json!({ "messages": messages })))
}

pub async fn consents(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let store = &state.pipeline.store;
    Ok(Json(json!({
        "consents": store.consents(&id).await?,
        "suppressions": store.suppressions(&id).await?,
    })))
}

/// Records a consent (or its withdrawal) with its source and proof.
pub async fn set_consent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(consent): ApiJson<Consent>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Write)?;
    let now = state.pipeline.clock.now();
    state.pipeline.store.set_consent(&id, &consent, now).await?;
    state
        .pipeline
        .store
        .audit(
            &caller.0.id,
            &format!("consent.{}", consent.status),
            Some(&id),
            &json!(consent),
            now,
        )
        .await?;
    Ok(Json(
        json!({ "consents": state.pipeline.store.consents(&id).await? }),
    ))
}

pub async fn scheduler(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let now = state.pipeline.clock.now();
    let counts = state.pipeline.store.queue_counts(now).await?;
    let lag = match state.pipeline.store.next_due().await? {
        Some(due) if due < now => now - due,
        _ => 0,
    };
    Ok(Json(json!({ "jobs": counts, "lag_ms": lag })))
}

/// Starts a double opt-in: the consent is pending until the contact clicks
/// the link in the confirmation message.
pub async fn request_consent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(asked): ApiJson<crate::consent::ConsentRequest>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Write)?;
    let request = crate::consent::request(&state.journeys, &id, &asked, &caller.0.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "request_id": request, "status": "pending" })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    contact_id: String,
    /// A send step of the journey's latest version.
    step: String,
    #[serde(default)]
    variant: Option<String>,
    /// The touchpoint to render as `event`; none by default.
    #[serde(default)]
    event_id: Option<String>,
}

/// Renders a send step for one contact, as it would go out (before
/// tracking links are added).
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let (_, def) = state.journeys.latest(&name).await?;
    let Some((
        _,
        crate::journeys::definition::Step::Send {
            template, variants, ..
        },
    )) = def.step(&request.step)
    else {
        return Err(ApiError::invalid(format!(
            "journey {name} has no send step `{}`",
            request.step
        )));
    };
    let template = match &request.variant {
        Some(wanted) => variants
            .iter()
            .find(|v| &v.name == wanted)
            .map(|v| &v.template)
            .ok_or_else(|| {
                ApiError::invalid(format!("step `{}` has no variant `{wanted}`", request.step))
            })?,
        None => template
            .as_ref()
            .or(variants.first().map(|v| &v.template))
            .ok_or_else(|| ApiError::invalid("the step has no template"))?,
    };
    let mut contact = store.contact(&request.contact_id).await?;
    contact.segments = store.memberships(&contact.id).await?;
    let event = match &request.event_id {
        Some(id) => {
            let mut conn = store
                .pool()
                .acquire()
                .await
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            crate::store::journeys::event_in(&mut conn, id)
                .await?
                .filter(|e| e.contact_id == contact.id)
        }
        None => None,
    };
    let context = crate::render::RenderContext {
        contact: &contact,
        event: event.as_ref(),
        journey: crate::render::JourneyContext {
            name: &name,
            step: &request.step,
            variant: request.variant.as_deref(),
        },
    };
    let rendered = crate::render::render(template, &context).map_err(ApiError::invalid)?;
    Ok(Json(json!(rendered)))
}
