//! The one error type at the HTTP edge and its JSON shape:
//! `{"error": {"code", "message", "details"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::store::StoreError;

/// Every error answer: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable code, a message for people, and details
/// that depend on the code (`problems` of an invalid journey, the
/// `limit_bytes` of an upload), else null.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(example = "invalid")]
    pub code: &'static str,
    pub message: String,
    #[schema(value_type = Object, nullable)]
    pub details: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or malformed API key: send `Authorization: Bearer <key>`")]
    Unauthorized,
    #[error("this key lacks the `{0}` scope")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    Invalid { message: String, details: Value },
    #[error("{0}")]
    Conflict(String),
    /// A conflict with what the client needs to resolve it in `details`
    /// (a capability review: what needs approval).
    #[error("{message}")]
    ConflictWith {
        code: &'static str,
        message: String,
        details: Value,
    },
    #[error("request body too large")]
    TooLarge,
    #[error("the upload is over the limit of {limit} bytes")]
    UploadTooLarge { limit: usize },
    /// A server this one relies on (an OCI registry) failed.
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    Timeout(String),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            message: message.into(),
            details: Value::Null,
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Invalid { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::ConflictWith { code, .. } => (StatusCode::CONFLICT, code),
            ApiError::TooLarge | ApiError::UploadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::NotFound(format!("{what} does not exist")),
            StoreError::Invalid(message) => ApiError::invalid(message),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            // A concurrent request deleted what this one refers to (a
            // contact deleted while an event for it was stored), or wrote
            // the same unique value first: the client's race, not ours.
            StoreError::Database(sqlx::Error::Database(e)) if e.is_foreign_key_violation() || e.message().contains("FOREIGN KEY constraint failed") => {
                ApiError::Conflict(
                    "something this request refers to was deleted meanwhile; check it and try again"
                        .into(),
                )
            }
            StoreError::Database(sqlx::Error::Database(e)) if e.is_unique_violation() || e.message().contains("UNIQUE constraint failed") => {
                ApiError::Conflict(
                    "a concurrent request stored the same thing first; check it and try again"
                        .into(),
                )
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let details = match &self {
            ApiError::Internal(detail) => {
                // The detail goes to the log, never to the client.
                tracing::error!(%detail, "request failed");
                Value::Null
            }
            ApiError::Invalid { details, .. } | ApiError::ConflictWith { details, .. } => {
                details.clone()
            }
            ApiError::UploadTooLarge { limit } => json!({ "limit_bytes": limit }),
            _ => Value::Null,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: self.to_string(),
                details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::REQUEST_TIMEOUT {
            // The rest of a stalled body may still come: do not read it.
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
        }
        response
    }
}
