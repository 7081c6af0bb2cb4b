//! `/v1/contacts/{id}/export`, `…/erase`, `…/object`, `…/audit`: the
//! contact's data-protection rights, each recorded in the audit log.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::Caller;
use super::{ApiError, AppState};
use crate::privacy::{self, Erased};
use crate::store::Scope;
use crate::store::tracking::AuditEntry;

#[utoipa::path(get, path = "/v1/contacts/{id}/export", tag = "contacts",
    summary = "Everything stored about the contact, as one JSON document (access request; audited)",
    security(("apiKey" = ["admin"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The contact, events, scores, segments, runs, messages, consents and audit entries", body = Object),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        privacy::export(&state.pipeline, &id, &caller.0.id).await?,
    ))
}

#[utoipa::path(post, path = "/v1/contacts/{id}/erase", tag = "contacts",
    summary = "Erase the contact: personal data and events deleted, a salted hash of each address kept (audited)",
    security(("apiKey" = ["admin"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "What was erased", body = Erased),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Erased>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(
        privacy::erase(&state.pipeline, &id, &caller.0.id).await?,
    ))
}

/// The answer to an objection.
#[derive(Serialize, ToSchema)]
pub struct Objected {
    pub contact_id: String,
    /// Always true.
    pub objected: bool,
}

#[utoipa::path(post, path = "/v1/contacts/{id}/object", tag = "contacts",
    summary = "The contact objects to marketing: suppressed, marketing journeys ended (audited)",
    security(("apiKey" = ["write"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "Recorded", body = Objected),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn object(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Objected>, ApiError> {
    caller.require(Scope::Write)?;
    privacy::object(&state.pipeline, &id, &caller.0.id).await?;
    Ok(Json(Objected {
        contact_id: id,
        objected: true,
    }))
}

/// The audit log of one contact.
#[derive(Serialize, ToSchema)]
pub struct AuditLog {
    /// Oldest first.
    pub entries: Vec<AuditEntry>,
}

#[utoipa::path(get, path = "/v1/contacts/{id}/audit", tag = "contacts",
    summary = "The audit log of the contact's data-protection actions",
    security(("apiKey" = ["admin"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses((status = 200, description = "The entries", body = AuditLog)))]
pub async fn audit(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<AuditLog>, ApiError> {
    caller.require(Scope::Admin)?;
    Ok(Json(AuditLog {
        entries: state.pipeline.store.audit_entries(&id).await?,
    }))
}
