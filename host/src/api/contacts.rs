//! `/v1/contacts`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::model::Contact;
use crate::store::{ContactFilter, ContactInput, MergeReport, Scope};

/// Creates a contact, or updates the one with the same email or external id.
#[utoipa::path(post, path = "/v1/contacts", tag = "contacts",
    summary = "Create a contact, or update the one with the same email or external_id",
    security(("apiKey" = ["write"])),
    request_body = ContactInput,
    responses(
        (status = 200, description = "The contact with that email or external_id, updated", body = Contact),
        (status = 201, description = "A new contact", body = Contact),
        (status = 409, description = "The email and the external_id belong to two different contacts", body = ErrorBody),
    ))]
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ContactInput>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    caller.require(Scope::Write)?;
    let record = state.pipeline.upsert_contact(&input).await?;
    let status = if record.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(record.contact)))
}

#[utoipa::path(get, path = "/v1/contacts/{id}", tag = "contacts",
    summary = "One contact",
    security(("apiKey" = ["read"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 200, description = "The contact", body = Contact),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Contact>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(state.pipeline.store.contact(&id).await?))
}

#[utoipa::path(delete, path = "/v1/contacts/{id}", tag = "contacts",
    summary = "Delete a contact and its events",
    security(("apiKey" = ["write"])),
    params(("id" = String, Path, description = "The contact's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such contact", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Write)?;
    if state.pipeline.store.delete_contact(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("contact {id} does not exist")))
    }
}

/// A page of contacts.
#[derive(Serialize, ToSchema)]
pub struct ContactPage {
    pub contacts: Vec<Contact>,
    /// The `after` of the next page (the last id here); null when empty.
    pub next_after: Option<String>,
}

/// Contacts in id order with filters: `?stage=`, `?segment=`,
/// `?min_score=`, `?limit=`; `?after=<last id>` for the next page.
#[utoipa::path(get, path = "/v1/contacts", tag = "contacts",
    summary = "Contacts in id order, filtered (all filters combine)",
    security(("apiKey" = ["read"])),
    params(ContactFilter),
    responses((status = 200, description = "A page of contacts", body = ContactPage)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<ContactFilter>,
) -> Result<Json<ContactPage>, ApiError> {
    caller.require(Scope::Read)?;
    let contacts = state.pipeline.store.list_contacts(&filter).await?;
    let next_after = contacts.last().map(|c| c.id.clone());
    Ok(Json(ContactPage {
        contacts,
        next_after,
    }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The contact to merge into this one; it is deleted afterwards.
    pub from: String,
}

/// Merges another contact into this one and reports what moved.
#[utoipa::path(post, path = "/v1/contacts/{id}/merge", tag = "contacts",
    summary = "Merge another contact into this one: events, scores, segments and messages move, the other is deleted",
    security(("apiKey" = ["write"])),
    params(("id" = String, Path, description = "The contact that stays")),
    request_body = MergeBody,
    responses(
        (status = 200, description = "What moved", body = MergeReport),
        (status = 404, description = "Either contact does not exist", body = ErrorBody),
    ))]
pub async fn merge(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MergeBody>,
) -> Result<Json<MergeReport>, ApiError> {
    caller.require(Scope::Write)?;
    let report = state.pipeline.merge(&id, &body.from).await?;
    Ok(Json(report))
}

/// Changes a contact by id; given fields replace, attributes merge.
#[utoipa::path(patch, path = "/v1/contacts/{id}", tag = "contacts",
    summary = "Change a contact: given fields replace (email too), attributes merge",
    security(("apiKey" = ["write"])),
    params(("id" = String, Path, description = "The contact's id")),
    request_body = ContactInput,
    responses(
        (status = 200, description = "The changed contact", body = Contact),
        (status = 404, description = "No such contact", body = ErrorBody),
        (status = 409, description = "Another contact has that email or external_id", body = ErrorBody),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ContactInput>,
) -> Result<Json<Contact>, ApiError> {
    caller.require(Scope::Write)?;
    let contact = state.pipeline.update_contact(&id, &patch).await?;
    // Rectification is a data-protection action: logged with the fields
    // changed, not their values.
    let mut fields: Vec<&str> = [
        ("email", patch.email.is_some()),
        ("external_id", patch.external_id.is_some()),
        ("phone", patch.phone.is_some()),
        ("timezone", patch.timezone.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    fields.extend(patch.attributes.keys().map(String::as_str));
    let now = state.pipeline.clock.now();
    state
        .pipeline
        .store
        .audit(
            &caller.0.id,
            "rectified",
            Some(&id),
            &json!({ "fields": fields }),
            now,
        )
        .await?;
    Ok(Json(contact))
}
