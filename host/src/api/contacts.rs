//! `/v1/contacts`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, ApiQuery, Caller};
use super::{ApiError, AppState};
use crate::store::{ContactFilter, ContactInput, Scope};

/// Creates a contact, or updates the one with the same email or external id.
pub async fn upsert(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<ContactInput>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Write)?;
    let record = state.pipeline.upsert_contact(&input).await?;
    let status = if record.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(record.contact))))
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    Ok(Json(json!(state.pipeline.store.contact(&id).await?)))
}

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

/// Contacts in id order with filters: `?stage=`, `?segment=`,
/// `?min_score=`, `?limit=`; `?after=<last id>` for the next page.
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<ContactFilter>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Read)?;
    let contacts = state.pipeline.store.list_contacts(&filter).await?;
    let next = contacts.last().map(|c| c.id.clone());
    Ok(Json(json!({ "contacts": contacts, "next_after": next })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeBody {
    /// The contact to merge into this one; it is deleted afterwards.
    pub from: String,
}

/// Merges another contact into this one and reports what moved.
pub async fn merge(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MergeBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Write)?;
    let report = state.pipeline.merge(&id, &body.from).await?;
    Ok(Json(json!(report)))
}

/// Changes a contact by id; given fields replace, attributes merge.
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<ContactInput>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!(contact)))
}
