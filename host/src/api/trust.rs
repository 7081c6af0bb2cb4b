//! `/v1/trusted-keys`: the publisher keys whose signed plugin bundles this
//! cluster accepts. Admin only; every change is audited.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{ApiJson, Caller};
use super::{ApiError, AppState};
use crate::runtime::signature::{PublicKey, SignaturePolicy};
use crate::store::{Scope, TrustedKey};

/// The trusted keys and the signature policy.
#[derive(Serialize, ToSchema)]
pub struct TrustedKeys {
    /// The signature policy (`--signatures`): whether unsigned bundles are
    /// accepted; null when the runtime has none.
    pub signatures: Option<SignaturePolicy>,
    pub keys: Vec<TrustedKey>,
}

#[utoipa::path(get, path = "/v1/trusted-keys", tag = "plugins",
    summary = "Publisher keys whose signed plugin bundles are accepted, and the signature policy",
    security(("apiKey" = ["admin"])),
    responses((status = 200, description = "The keys", body = TrustedKeys)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TrustedKeys>, ApiError> {
    caller.require(Scope::Admin)?;
    let keys = state.pipeline.store.trusted_keys().await?;
    let signatures = state
        .pipeline
        .registry
        .runtime()
        .trust_policy()
        .map(|p| p.signatures);
    Ok(Json(TrustedKeys { signatures, keys }))
}

#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustBody {
    /// `ed25519:<64 hex digits>`, as `nachfass plugin keygen` prints it.
    #[schema(pattern = "^ed25519:[0-9a-f]{64}$")]
    pub public_key: String,
    pub publisher: String,
}

#[utoipa::path(post, path = "/v1/trusted-keys", tag = "plugins",
    summary = "Trust a publisher's key; audited",
    security(("apiKey" = ["admin"])),
    request_body = TrustBody,
    responses(
        (status = 200, description = "Already trusted", body = TrustBody),
        (status = 201, description = "Now trusted", body = TrustBody),
    ))]
pub async fn add(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TrustBody>,
) -> Result<(StatusCode, Json<TrustBody>), ApiError> {
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
        Json(TrustBody {
            public_key: key.to_string(),
            publisher: body.publisher,
        }),
    ))
}

#[utoipa::path(delete, path = "/v1/trusted-keys/{key}", tag = "plugins",
    summary = "Stop trusting a key (installed versions stay); audited",
    security(("apiKey" = ["admin"])),
    params(("key" = String, Path, description = "`ed25519:<64 hex digits>`")),
    responses(
        (status = 204, description = "No longer trusted"),
        (status = 404, description = "The key is not trusted", body = ErrorBody),
    ))]
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
