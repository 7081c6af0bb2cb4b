//! `/v1/journeys`, ready-made journeys, a contact's runs, messages and
//! consents, and the scheduler's queue.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::consent::ConsentRequest;
use crate::journeys::definition::{Purpose, Trigger};
use crate::journeys::{JourneyDef, JourneyError, Saved, ready_made};
use crate::model::Message;
use crate::model::status::ConsentStatus;
use crate::model::status::OutboxStatus;
use crate::render::Rendered;
use crate::store::{Consent, OutboxEntry, Scope, StoreError};

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

/// A journey in the list: its latest version.
#[derive(Serialize, ToSchema)]
pub struct JourneySummary {
    pub name: String,
    pub version: i64,
    /// Whether it takes new entries.
    pub active: bool,
    pub description: String,
    /// `marketing` or `transactional`.
    #[schema(value_type = String)]
    pub purpose: Purpose,
    /// What enrols a contact (see the README's journey definitions).
    pub trigger: Trigger,
    /// Runs by status.
    pub runs: BTreeMap<String, i64>,
}

#[derive(Serialize, ToSchema)]
pub struct JourneyList {
    pub journeys: Vec<JourneySummary>,
}

#[utoipa::path(get, path = "/v1/journeys", tag = "journeys",
    summary = "Journeys: latest version, trigger and runs by status",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The journeys", body = JourneyList)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<JourneyList>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let mut journeys = Vec::new();
    for latest in store.latest_journeys().await? {
        let def = state
            .journeys
            .definition(&latest.name, latest.version)
            .await?;
        journeys.push(JourneySummary {
            runs: store.run_counts(&latest.name).await?,
            name: latest.name,
            version: latest.version,
            active: latest.active,
            description: def.description.clone(),
            purpose: def.purpose,
            trigger: def.trigger.clone(),
        });
    }
    Ok(Json(JourneyList { journeys }))
}

/// What saving a definition did.
#[derive(Serialize, ToSchema)]
pub struct SavedVersion {
    pub name: String,
    pub version: i64,
    /// False when the definition equals the latest version.
    pub created: bool,
}

impl From<Saved> for SavedVersion {
    fn from(saved: Saved) -> Self {
        SavedVersion {
            name: saved.name,
            version: saved.version,
            created: saved.created,
        }
    }
}

/// Saves a definition (the body) as the journey's next version. The name
/// in the body must match the path.
#[utoipa::path(put, path = "/v1/journeys/{name}", tag = "journeys",
    summary = "Save a journey definition as its next version (validated)",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The journey; the definition must name the same")),
    request_body(content = JourneyDef, description = "A journey definition: name, description, purpose (marketing | transactional), trigger, re_entry, goals, send_window, steps; see the README"),
    responses(
        (status = 200, description = "Equal to the latest version: nothing saved", body = SavedVersion),
        (status = 201, description = "Saved as a new version", body = SavedVersion),
    ))]
pub async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<SavedVersion>), ApiError> {
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

/// The verdict on a definition.
#[derive(Serialize, ToSchema)]
pub struct Validation {
    pub valid: bool,
    /// Every problem a save would report; empty when valid.
    pub problems: Vec<String>,
}

/// Checks a definition without saving it: every problem saving would
/// report, for an editor that validates as the operator types.
#[utoipa::path(post, path = "/v1/journeys/{name}/validate", tag = "journeys",
    summary = "Check a definition without saving it (every problem a save would report)",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The journey the definition is for")),
    request_body(content = JourneyDef, description = "A journey definition, as for PUT /v1/journeys/{name}"),
    responses((status = 200, description = "The verdict (also for an invalid definition)", body = Validation)))]
pub async fn check(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Validation>, ApiError> {
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
    Ok(Json(Validation {
        valid: problems.is_empty(),
        problems,
    }))
}

/// Saves a definition: 201 for a new version, 200 when it equals the
/// latest.
async fn saved(
    state: &AppState,
    def: &JourneyDef,
) -> Result<(StatusCode, Json<SavedVersion>), ApiError> {
    let saved = state.journeys.save_def(def).await?;
    let status = if saved.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(saved.into())))
}

/// A saved version, in a journey's list of versions.
#[derive(Serialize, ToSchema)]
pub struct VersionEntry {
    pub version: i64,
    pub created_at: i64,
}

/// A journey with its latest definition.
#[derive(Serialize, ToSchema)]
pub struct JourneyView {
    pub name: String,
    pub version: i64,
    pub active: bool,
    /// The latest definition (see the README's journey definitions).
    pub definition: JourneyDef,
    /// Newest first.
    pub versions: Vec<VersionEntry>,
    /// Runs by status.
    pub runs: BTreeMap<String, i64>,
}

#[utoipa::path(get, path = "/v1/journeys/{name}", tag = "journeys",
    summary = "A journey: latest definition, versions, runs by status",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The journey")),
    responses(
        (status = 200, description = "The journey", body = JourneyView),
        (status = 404, description = "No such journey", body = ErrorBody),
    ))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<JourneyView>, ApiError> {
    caller.require(Scope::Read)?;
    let store = &state.pipeline.store;
    let versions = store.journey_versions(&name).await?;
    let Some(latest) = versions.first() else {
        return Err(ApiError::NotFound(format!("journey {name} does not exist")));
    };
    let def = state.journeys.definition(&name, latest.version).await?;
    let (version, active) = (latest.version, latest.active);
    let versions = versions
        .iter()
        .map(|v| VersionEntry {
            version: v.version,
            created_at: v.created_at,
        })
        .collect();
    Ok(Json(JourneyView {
        runs: store.run_counts(&name).await?,
        name,
        version,
        active,
        definition: (*def).clone(),
        versions,
    }))
}

/// One saved version of a journey.
#[derive(Serialize, ToSchema)]
pub struct JourneyVersionView {
    pub name: String,
    pub version: i64,
    pub definition: JourneyDef,
}

#[utoipa::path(get, path = "/v1/journeys/{name}/versions/{version}", tag = "journeys",
    summary = "One saved version of a journey",
    security(("apiKey" = ["read"])),
    params(
        ("name" = String, Path, description = "The journey"),
        ("version" = String, Path, description = "The version number: 1, 2, …"),
    ),
    responses(
        (status = 200, description = "The version", body = JourneyVersionView),
        (status = 404, description = "No such journey or version", body = ErrorBody),
    ))]
pub async fn version(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<JourneyVersionView>, ApiError> {
    caller.require(Scope::Read)?;
    let version: i64 = version.parse().map_err(|_| {
        ApiError::invalid(format!("version `{version}` is not a number: use 1, 2, …"))
    })?;
    let def = state.journeys.definition(&name, version).await?;
    Ok(Json(JourneyVersionView {
        name,
        version,
        definition: (*def).clone(),
    }))
}

/// Whether a journey takes new entries.
#[derive(Serialize, ToSchema)]
pub struct Activity {
    pub name: String,
    pub active: bool,
}

async fn set_active(
    state: &AppState,
    name: &str,
    active: bool,
) -> Result<Json<Activity>, ApiError> {
    if !state.journeys.set_active(name, active).await? {
        return Err(ApiError::NotFound(format!("journey {name} does not exist")));
    }
    Ok(Json(Activity {
        name: name.to_owned(),
        active,
    }))
}

/// No new entries; running runs go on to their end.
#[utoipa::path(post, path = "/v1/journeys/{name}/stop", tag = "journeys",
    summary = "Take no new entries; running runs go on",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The journey")),
    responses(
        (status = 200, description = "Stopped", body = Activity),
        (status = 404, description = "No such journey", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Activity>, ApiError> {
    caller.require(Scope::Admin)?;
    set_active(&state, &name, false).await
}

#[utoipa::path(post, path = "/v1/journeys/{name}/start", tag = "journeys",
    summary = "Take new entries again",
    security(("apiKey" = ["admin"])),
    params(("name" = String, Path, description = "The journey")),
    responses(
        (status = 200, description = "Started", body = Activity),
        (status = 404, description = "No such journey", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Activity>, ApiError> {
    caller.require(Scope::Admin)?;
    set_active(&state, &name, true).await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    contact_id: String,
}

/// The run an enrolment started, or why none.
#[derive(Serialize, ToSchema)]
pub struct Enrolled {
    /// Null when not enrolled.
    pub run_id: Option<String>,
    /// Why not, when not enrolled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

#[utoipa::path(post, path = "/v1/journeys/{name}/enroll", tag = "journeys",
    summary = "Enrol a contact by hand (re-entry policy applies)",
    security(("apiKey" = ["write"])),
    params(("name" = String, Path, description = "The journey")),
    request_body = EnrollRequest,
    responses(
        (status = 200, description = "Not enrolled: an open run, or the re-entry policy forbids another", body = Enrolled),
        (status = 201, description = "Enrolled", body = Enrolled),
        (status = 404, description = "No such journey or contact", body = ErrorBody),
    ))]
pub async fn enroll(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<EnrollRequest>,
) -> Result<(StatusCode, Json<Enrolled>), ApiError> {
    caller.require(Scope::Write)?;
    match state.journeys.enroll(&name, &request.contact_id).await? {
        Some(run) => Ok((
            StatusCode::CREATED,
            Json(Enrolled {
                run_id: Some(run),
                reason: None,
            }),
        )),
        None => Ok((
            StatusCode::OK,
            Json(Enrolled {
                run_id: None,
                reason: Some(
                    "not enrolled: the contact has an open run or the re-entry policy forbids another",
                ),
            }),
        )),
    }
}

/// A ready-made journey.
#[derive(Serialize, ToSchema)]
pub struct Template {
    pub name: &'static str,
    pub description: String,
    pub definition: JourneyDef,
}

#[derive(Serialize, ToSchema)]
pub struct Templates {
    pub templates: Vec<Template>,
}

#[utoipa::path(get, path = "/v1/journey-templates", tag = "journeys",
    summary = "Ready-made journeys to install and adapt",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The templates", body = Templates)))]
pub async fn templates(caller: Caller) -> Result<Json<Templates>, ApiError> {
    caller.require(Scope::Read)?;
    let templates = ready_made::all()
        .into_iter()
        .map(|r| Template {
            name: r.name,
            description: r.description,
            definition: r.definition,
        })
        .collect();
    Ok(Json(Templates { templates }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The channel binding its sends go through.
    binding: String,
    /// Saved under this name; the template's name otherwise.
    #[serde(default)]
    name: Option<String>,
}

#[utoipa::path(post, path = "/v1/journey-templates/{template}/install", tag = "journeys",
    summary = "Install a ready-made journey, sending through a channel binding",
    security(("apiKey" = ["admin"])),
    params(("template" = String, Path, description = "The ready-made journey")),
    request_body = InstallRequest,
    responses(
        (status = 200, description = "Equal to the journey's latest version: nothing saved", body = SavedVersion),
        (status = 201, description = "Saved as a new version", body = SavedVersion),
        (status = 404, description = "No such ready-made journey", body = ErrorBody),
    ))]
pub async fn install(
    State(state): State<AppState>,
    caller: Caller,
    Path(template): Path<String>,
    ApiJson(request): ApiJson<InstallRequest>,
) -> Result<(StatusCode, Json<SavedVersion>), ApiError> {
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

/// A contact's journey runs.
#[derive(Serialize, ToSchema)]
pub struct Runs {
    /// Newest first.
    pub runs: Vec<crate::store::Run>,
}

#[utoipa::path(get, path = "/v1/contacts/{id}/journeys", tag = "contacts",
    summary = "The contact's journey runs, newest first",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The runs", body = Runs),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn contact_runs(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Runs>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let runs = state.pipeline.store.contact_runs(&id).await?;
    Ok(Json(Runs { runs }))
}

/// A contact's messages.
#[derive(Serialize, ToSchema)]
pub struct Messages {
    /// Newest first.
    pub messages: Vec<MessageView>,
}

/// A queued or sent message: the outbox entry with its rendered `message`
/// (tracking tokens redacted unless the key is an admin's).
#[derive(Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    /// Also the email's Message-ID: the same on every retry.
    pub idempotency_key: String,
    pub run_id: String,
    pub journey: String,
    pub step: String,
    pub variant: Option<String>,
    pub contact_id: String,
    pub binding: String,
    pub channel: String,
    pub purpose: Purpose,
    /// The rendered message; null if it cannot be read back.
    pub message: Option<Message>,
    pub status: OutboxStatus,
    /// The provider's id for the message, once delivered.
    pub provider_id: Option<String>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub sent_at: Option<i64>,
}

impl MessageView {
    fn new(entry: OutboxEntry, message: Option<Message>) -> MessageView {
        MessageView {
            id: entry.id,
            idempotency_key: entry.idempotency_key,
            run_id: entry.run_id,
            journey: entry.journey,
            step: entry.step,
            variant: entry.variant,
            contact_id: entry.contact_id,
            binding: entry.binding,
            channel: entry.channel,
            purpose: entry.purpose,
            message,
            status: entry.status,
            provider_id: entry.provider_id,
            last_error: entry.last_error,
            created_at: entry.created_at,
            sent_at: entry.sent_at,
        }
    }
}

#[utoipa::path(get, path = "/v1/contacts/{id}/messages", tag = "contacts",
    summary = "The contact's queued and sent messages, newest first",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The messages", body = Messages),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn contact_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Messages>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let entries = state.pipeline.store.contact_outbox(&id).await?;
    // Working tracking, unsubscribe and confirmation tokens are for the
    // recipient (and an admin); other keys see them redacted.
    let tracking = if caller.0.allows(Scope::Admin) {
        None
    } else {
        Some(state.journeys.tracking())
    };
    let messages = entries
        .into_iter()
        .map(|e| {
            let message = match &tracking {
                Some(tracking) => tracking.redact(&e.message),
                None => e.message.clone(),
            };
            let message = serde_json::from_str(&message).ok();
            MessageView::new(e, message)
        })
        .collect();
    Ok(Json(Messages { messages }))
}

/// A contact's consents and suppressions.
#[derive(Serialize, ToSchema)]
pub struct Consents {
    /// Per channel and purpose: status, source and proof.
    pub consents: Vec<Consent>,
    /// Addresses suppressed (unsubscribed, bounced, objected); absent in
    /// the answer to a change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suppressions: Option<Vec<crate::policy::Suppression>>,
}

#[utoipa::path(get, path = "/v1/contacts/{id}/consents", tag = "contacts",
    summary = "The contact's consents and suppressions",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "Consents and suppressions", body = Consents),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn consents(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Consents>, ApiError> {
    caller.require(Scope::Read)?;
    state.pipeline.store.contact(&id).await?;
    let store = &state.pipeline.store;
    Ok(Json(Consents {
        consents: store.consents(&id).await?,
        suppressions: Some(store.suppressions(&id).await?),
    }))
}

/// A consent as sent and stored: `store::Consent` with its schema (the
/// store does not depend on the API's documentation).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentInput {
    /// The channel kind consented to (`email`, `sms`).
    pub channel: String,
    /// `marketing` (default) or `transactional`.
    #[serde(default = "marketing")]
    #[schema(default = "marketing", pattern = "^(marketing|transactional)$")]
    pub purpose: String,
    /// `granted`, `pending` (awaiting confirmation) or `withdrawn`.
    #[schema(pattern = "^(granted|pending|withdrawn)$")]
    pub status: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub text_version: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Set by the server, Unix ms.
    #[serde(default)]
    pub updated_at: i64,
}

fn marketing() -> String {
    "marketing".to_owned()
}

impl TryFrom<ConsentInput> for Consent {
    type Error = StoreError;

    /// Checks the status (one an operator may set: not `expired`) and the
    /// purpose, naming the field that was wrong.
    fn try_from(input: ConsentInput) -> Result<Self, StoreError> {
        let status = input
            .status
            .parse::<ConsentStatus>()
            .ok()
            .filter(|s| *s != ConsentStatus::Expired)
            .ok_or_else(|| {
                StoreError::Invalid(format!(
                    "consent status `{}` must be granted, pending or withdrawn",
                    input.status
                ))
            })?;
        let purpose = input
            .purpose
            .parse::<Purpose>()
            .map_err(|e| StoreError::Invalid(format!("consent {e}")))?;
        Ok(Consent {
            channel: input.channel,
            purpose,
            status,
            source: input.source,
            text_version: input.text_version,
            ip: input.ip,
            user_agent: input.user_agent,
            updated_at: input.updated_at,
        })
    }
}

/// Records a consent (or its withdrawal) with its source and proof.
#[utoipa::path(put, path = "/v1/contacts/{id}/consents", tag = "contacts",
    summary = "Record a consent or its withdrawal, with source and proof",
    security(("apiKey" = ["write"])),
    params(("id" = String, Path, description = "The contact's id")),
    request_body = ConsentInput,
    responses(
        (status = 200, description = "The contact's consents now", body = Consents),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn set_consent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(consent): ApiJson<ConsentInput>,
) -> Result<Json<Consents>, ApiError> {
    caller.require(Scope::Write)?;
    let consent = Consent::try_from(consent)?;
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
    Ok(Json(Consents {
        consents: state.pipeline.store.consents(&id).await?,
        suppressions: None,
    }))
}

/// The scheduler's queue.
#[derive(Serialize, ToSchema)]
pub struct SchedulerView {
    /// Jobs due, scheduled, leased and failed.
    #[schema(value_type = Object)]
    pub jobs: crate::store::QueueCounts,
    /// How late the oldest due job is, ms.
    pub lag_ms: i64,
}

#[utoipa::path(get, path = "/v1/scheduler", tag = "journeys",
    summary = "Jobs due, scheduled, leased and failed, and the lag of the oldest due job",
    security(("apiKey" = ["read"])),
    responses((status = 200, description = "The queue", body = SchedulerView)))]
pub async fn scheduler(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SchedulerView>, ApiError> {
    caller.require(Scope::Read)?;
    let now = state.pipeline.clock.now();
    let counts = state.pipeline.store.queue_counts(now).await?;
    let lag = match state.pipeline.store.next_due().await? {
        Some(due) if due < now => now - due,
        _ => 0,
    };
    Ok(Json(SchedulerView {
        jobs: counts,
        lag_ms: lag,
    }))
}

/// A double opt-in request, pending.
#[derive(Serialize, ToSchema)]
pub struct ConsentRequested {
    pub request_id: String,
    /// Always `pending`.
    pub status: &'static str,
}

/// Starts a double opt-in: the consent is pending until the contact clicks
/// the link in the confirmation message.
#[utoipa::path(post, path = "/v1/contacts/{id}/consents/request", tag = "contacts",
    summary = "Double opt-in: pending consent and a confirmation message with a signed link (reminder after a day, expiry after a week)",
    security(("apiKey" = ["write"])),
    params(("id" = String, Path, description = "The contact's id")),
    request_body = ConsentRequest,
    responses(
        (status = 201, description = "Requested", body = ConsentRequested),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn request_consent(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(asked): ApiJson<ConsentRequest>,
) -> Result<(StatusCode, Json<ConsentRequested>), ApiError> {
    caller.require(Scope::Write)?;
    let request = crate::consent::request(&state.journeys, &id, &asked, &caller.0.id).await?;
    Ok((
        StatusCode::CREATED,
        Json(ConsentRequested {
            request_id: request,
            status: "pending",
        }),
    ))
}

#[derive(Debug, Deserialize, ToSchema)]
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
#[utoipa::path(post, path = "/v1/journeys/{name}/preview", tag = "journeys",
    summary = "Render a send step (and variant) for one contact, as it would go out",
    security(("apiKey" = ["read"])),
    params(("name" = String, Path, description = "The journey")),
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "The rendered message", body = Rendered),
        (status = 404, description = "No such journey or contact", body = ErrorBody),
    ))]
pub async fn preview(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(request): ApiJson<PreviewRequest>,
) -> Result<Json<Rendered>, ApiError> {
    caller.require(Scope::Read)?;
    let asked = crate::journeys::preview::Preview {
        journey: &name,
        step: &request.step,
        variant: request.variant.as_deref(),
        contact_id: &request.contact_id,
        event_id: request.event_id.as_deref(),
    };
    Ok(Json(state.journeys.preview(asked).await?))
}
