//! Extractors: JSON bodies with our error shape, and the API key.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ApiError, AppState, edge};
use crate::store::{ApiKey, Scope};

/// A JSON body; malformed JSON, unknown fields, wrong types and NUL
/// characters in text become a 422 that says what was wrong (and where).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let value = json_value(req, state).await?;
        if let Some(place) = edge::nul_path(&value) {
            return Err(edge::nul_error(&place));
        }
        from_json(value).map(ApiJson)
    }
}

/// The body as a JSON document, NUL characters not yet checked: for
/// bodies (a batch) that report them per item.
pub async fn json_value<S: Send + Sync>(req: Request, state: &S) -> Result<Value, ApiError> {
    match axum::Json::<Value>::from_request(req, state).await {
        Ok(axum::Json(value)) => Ok(value),
        Err(JsonRejection::BytesRejection(rejection)) => Err(body_error(&rejection)),
        Err(rejection) => Err(ApiError::invalid(rejection.body_text())),
    }
}

/// `T` from a JSON document, with the path to what did not fit.
pub fn from_json<T: DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::invalid(format!("Failed to deserialize the JSON body: {inner}"))
        } else {
            ApiError::invalid(format!(
                "Failed to deserialize the JSON body: {path}: {inner}"
            ))
        }
    })
}

/// The raw body, with our error shape for a body too large or too slow.
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(ApiBytes)
            .map_err(|rejection| body_error(&rejection))
    }
}

fn body_error(rejection: &BytesRejection) -> ApiError {
    if let BytesRejection::FailedToBufferBody(failed) = rejection
        && edge::timed_out(failed)
    {
        return ApiError::Timeout(failed.body_text());
    }
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge,
        _ => ApiError::invalid(rejection.body_text()),
    }
}

/// The caller's API key, from `Authorization: Bearer <key>`.
pub struct Caller(pub ApiKey);

impl Caller {
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.0.allows(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(scope.as_str()))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Already checked by `edge::scope_first` before the body was read.
        if let Some(key) = parts.extensions.get::<ApiKey>() {
            return Ok(Caller(key.clone()));
        }
        let secret = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let key = state
            .pipeline
            .store
            .api_key(secret)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        Ok(Caller(key))
    }
}

/// Query parameters; unknown or malformed ones become a 422 in our error
/// shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| ApiQuery(value))
            .map_err(|rejection| ApiError::invalid(rejection.body_text()))
    }
}
