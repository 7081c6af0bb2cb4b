//! `/v1/trusted-keys`: the publisher keys whose signed plugin bundles this
//! cluster accepts. Admin only; every change is audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::runtime::signature::PublicKey;
use crate::store::Scope;

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Scope::Admin)?;
    let keys = state.pipeline.store.trusted_keys().await?;
    Ok(Json(json!({
        "signatures": state.pipeline.registry.runtime().trust_policy().map(|p| p.signatures),
        "keys": keys,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    /// `ed25519:<64 hex digits>`, as `nachfass plugin keygen` prints it.
    pub public_key: String,
    pub publisher: String,
}

pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TrustBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Scope::Admin)?;
    let key: PublicKey = body
        .public_key
        .parse()
        .map_err(|e: crate::runtime::signature::SignatureError| ApiError::invalid(e.to_string()))?;
    if body.publisher.trim().is_empty() {
        return Err(ApiError::invalid("publisher must not be empty"));
    }
    let added = state
        .pipeline
        .store
        .trust_key(
            &key.to_string(),
            &body.publisher,
            &caller.0.id,
            state.pipeline.clock.now(),
        )
        .await?;
    super::refresh_trust(&state).await?;
    let status = if added {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({ "public_key": key.to_string(), "publisher": body.publisher })),
    ))
}

pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(key): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::Admin)?;
    let key: PublicKey = key
        .parse()
        .map_err(|e: crate::runtime::signature::SignatureError| ApiError::invalid(e.to_string()))?;
    state
        .pipeline
        .store
        .distrust_key(&key.to_string(), &caller.0.id, state.pipeline.clock.now())
        .await?;
    super::refresh_trust(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}
